"""Flow visualisation: the Middlebury colour wheel (Baker et al., 2011) and arrow grids.

Hue gives the direction and saturation the speed, so one image shows both; a magnitude map alone
would hide which way things move, which is what motion features are about. Colours are normalised by
one fixed speed for a whole sequence so the same colour means the same motion in every frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io._lazy import LazyArray


def _colour_wheel() -> np.ndarray:
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    ramps = [
        (ry, (255, 0, 0), (0, 1, 0)),
        (yg, (255, 255, 0), (-1, 0, 0)),
        (gc, (0, 255, 0), (0, 0, 1)),
        (cb, (0, 255, 255), (0, -1, 0)),
        (bm, (0, 0, 255), (1, 0, 0)),
        (mr, (255, 0, 255), (0, 0, -1)),
    ]
    rows = []
    for n, start, step in ramps:
        k = np.floor(255.0 * np.arange(n) / n)[:, None]
        rows.append(np.asarray(start, float)[None, :] + k * np.asarray(step, float)[None, :])
    return np.concatenate(rows)  # (55, 3) in 0..255


COLOUR_WHEEL = _colour_wheel()


def flow_to_colour(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour flow on the Middlebury colour wheel: hue is direction, saturation speed.

    Parameters
    ----------
    flow : numpy.ndarray
        ``(..., H, W, 2)`` flow ``(dx, dy)`` in pixels per frame.
    max_magnitude : float, optional
        Speeds at or above this are fully saturated (default: the largest in ``flow``).

    Returns
    -------
    numpy.ndarray
        ``(..., H, W, 3)`` uint8 RGB; NaN flow is drawn black.
    """
    flow = np.asarray(flow, dtype=np.float32)
    u, v = flow[..., 0], flow[..., 1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(bad, 0, u), np.where(bad, 0, v)
    mag = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(mag.max()) if mag.size else 0.0
    scale = max(float(max_magnitude), 1e-6)
    rad = np.minimum(mag / scale, 1.0)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    ncols = len(COLOUR_WHEEL)
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int32)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = (1 - f) * COLOUR_WHEEL[k0] / 255.0 + f * COLOUR_WHEEL[k1] / 255.0
    col = 1 - rad[..., None] * (1 - col)
    col[bad] = 0
    return np.round(col * 255).astype(np.uint8)


def robust_max_magnitude(flow: Any, samples: int = 8, percentile: float = 99.0) -> float:
    """Estimate a speed to normalise colours by, from a few evenly spaced frames (no full pass).

    Parameters
    ----------
    flow : array_like
        ``(T, H, W, 2)`` sequence (NumPy or lazy) or one ``(H, W, 2)`` field.
    samples : int, default 8
        Frames read, spread evenly over the sequence.
    percentile : float, default 99.0
        Percentile of the sampled finite speeds; robust to a few outliers.

    Returns
    -------
    float
        The speed in pixels per frame (1.0 when no finite flow was sampled).
    """
    if flow.ndim == 3:
        picks = [np.asarray(flow)]
    else:
        n = flow.shape[0]
        picks = [
            np.asarray(flow[int(i)]) for i in np.unique(np.linspace(0, n - 1, min(samples, n)))
        ]
    mags = np.concatenate([np.hypot(p[..., 0], p[..., 1]).ravel() for p in picks])
    mags = mags[np.isfinite(mags)]
    return float(np.percentile(mags, percentile)) if mags.size else 1.0


class LazyFlowColour(LazyArray):
    """Colour-coded view of a flow sequence, computed frame by frame on access.

    Parameters
    ----------
    flow : array_like
        ``(T, H, W, 2)`` flow sequence (NumPy or lazy).
    max_magnitude : float, optional
        The speed drawn fully saturated in every frame (default: :func:`robust_max_magnitude`).

    Raises
    ------
    ValueError
        ``flow`` is not 4-D.
    """

    def __init__(self, flow: Any, max_magnitude: float | None = None) -> None:
        if flow.ndim != 4:
            raise ValueError("LazyFlowColour takes a (T, H, W, 2) sequence")
        self.flow = flow
        self.max_magnitude = (
            robust_max_magnitude(flow) if max_magnitude is None else float(max_magnitude)
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """``(T, H, W, 3)``."""
        return (*self.flow.shape[:-1], 3)

    @property
    def dtype(self) -> np.dtype:
        """Always ``uint8``."""
        return np.dtype(np.uint8)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        spatial = key[1:3]
        channel = key[3:]
        sub = self.flow[(key[0], *spatial)]
        return flow_to_colour(sub, self.max_magnitude)[(Ellipsis, *channel)]


def vector_grid_step(
    shape: tuple[int, ...], step: int | None = None, max_vectors: int = 100_000
) -> int:
    """Choose the grid step for arrows over a flow field.

    Parameters
    ----------
    shape : tuple of int
        ``(T, H, W, 2)`` or ``(H, W, 2)``.
    step : int, optional
        Wanted step in pixels (default: 1/16 of the short side, at least 4 px).
    max_vectors : int, default 100000
        The step grows until at most this many arrows remain over all frames.

    Returns
    -------
    int
        The step in pixels.
    """
    n_frames = 1 if len(shape) == 3 else shape[0]
    h, w = shape[-3], shape[-2]
    step = int(step or max(4, min(h, w) // 16))
    while n_frames * ((h + step - 1) // step) * ((w + step - 1) // step) > max_vectors:
        step += 1
    return step


def flow_vectors(flow: Any, step: int | None = None, max_vectors: int = 100_000) -> np.ndarray:
    """Sample flow as arrows on a regular grid for a napari Vectors layer.

    Frames are read one at a time, so a lazy sequence is never loaded whole.

    Parameters
    ----------
    flow : array_like
        ``(T, H, W, 2)`` sequence or one ``(H, W, 2)`` field.
    step, max_vectors
        The grid, as :func:`vector_grid_step` chooses it.

    Returns
    -------
    numpy.ndarray
        ``(N, 2, D)`` float32: position then projection, with ``D = 3`` (t, y, x) for a sequence
        and ``D = 2`` for one field.
    """
    single = flow.ndim == 3
    n_frames = 1 if single else flow.shape[0]
    h, w = flow.shape[-3], flow.shape[-2]
    step = vector_grid_step(flow.shape, step, max_vectors)
    off = step // 2
    ys, xs = np.mgrid[off:h:step, off:w:step]
    blocks = []
    for t in range(n_frames):
        f = np.asarray(flow if single else flow[t])[off::step, off::step]
        dx, dy = f[..., 0].ravel(), f[..., 1].ravel()
        pos = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float32)
        proj = np.stack([dy, dx], 1).astype(np.float32)
        if not single:
            pos = np.concatenate([np.full((len(pos), 1), t, np.float32), pos], 1)
            proj = np.concatenate([np.zeros((len(proj), 1), np.float32), proj], 1)
        blocks.append(np.stack([pos, proj], 1))
    return np.concatenate(blocks) if blocks else np.zeros((0, 2, 2 if single else 3), np.float32)
