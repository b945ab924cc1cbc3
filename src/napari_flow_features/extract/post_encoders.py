"""Post-encoders and the per-frame row mapping (DESIGN.md), as small pure NumPy functions.

- Frame t takes the window whose centre ``s + (L - 1) / 2`` is nearest (ties: the earlier window);
  inside it the time position ``tau = (t - s + 0.5) * T' / L - 0.5`` is linearly interpolated,
  clamped to ``[0, T' - 1]``, over the window's T' feature-map time steps.
- ``gap``: the mean over all spatial positions.
- ``point``: the feature map sampled at a landmark, align-corners=False:
  ``u = (x + 0.5) * W' / W - 0.5``, ``v = (y + 0.5) * H' / H - 0.5`` with W, H the size fed to the
  network (x, y scaled to it); ``bilinear`` blends the 4 neighbours with border clamping, ``nearest``
  takes ``floor(u + 0.5)``, ``floor(v + 0.5)`` clamped. A point outside the frame (beyond the outer
  pixel edges, ``x < -0.5`` or ``x > W - 0.5``) or NaN gives NaN features, never a clamped value.
- ``none``: the feature map passes through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError

POST_ENCODERS = ("none", "gap", "point")
INTERPOLATIONS = ("bilinear", "nearest")


@dataclass(frozen=True)
class FrameAssignment:
    """For each frame: the window it takes its row from and its time position in that window.

    Attributes
    ----------
    window : numpy.ndarray
        ``(T,)`` int: the window index of each frame.
    tau : numpy.ndarray
        ``(T,)`` float: each frame's time position in its window's T' steps, clamped.
    """

    window: np.ndarray  #: (T,) int window index
    tau: np.ndarray  #: (T,) float time position in the window's T' steps, clamped


def assign_frames(
    window_starts: list[int], n_frames: int, length: int, t_steps: int
) -> FrameAssignment:
    """Apply DESIGN.md's row rule: which window and time step each frame takes its row from.

    Parameters
    ----------
    window_starts : list of int
        First frame of each window, in order.
    n_frames : int
        Frames to assign.
    length : int
        Window (clip) length L in frames.
    t_steps : int
        Time steps T' of each window's feature map.

    Returns
    -------
    FrameAssignment
        The nearest-centred window of each frame (ties: the earlier) and its time position.

    Raises
    ------
    BadInputError
        ``t_steps`` is less than 1.
    """
    if t_steps < 1:
        raise BadInputError(f"Feature maps need at least one time step, got {t_steps}")
    starts = np.asarray(window_starts, dtype=np.float64)
    t = np.arange(n_frames, dtype=np.float64)
    centres = starts + (length - 1) / 2.0
    window = np.argmin(np.abs(t[:, None] - centres[None, :]), axis=1)  # first minimum: earlier
    tau = (t - starts[window] + 0.5) * t_steps / length - 0.5
    return FrameAssignment(window=window, tau=np.clip(tau, 0.0, t_steps - 1))


def interpolate_time(maps: np.ndarray, tau: float) -> np.ndarray:
    """Interpolate feature maps linearly in time.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(T', ...)`` one window's feature maps.
    tau : float
        Time position in ``[0, T' - 1]``.

    Returns
    -------
    numpy.ndarray
        ``maps[tau]``, linear between the two nearest steps (``maps[tau]`` itself at a whole step).
    """
    lo = int(np.floor(tau))
    hi = min(lo + 1, maps.shape[0] - 1)
    w = tau - lo
    return maps[lo] if w == 0 or hi == lo else (1 - w) * maps[lo] + w * maps[hi]


def gap(feature_map: np.ndarray) -> np.ndarray:
    """Global Average Pooling: the mean over all spatial positions.

    Parameters
    ----------
    feature_map : array_like
        ``(..., H', W', C)``.

    Returns
    -------
    numpy.ndarray
        ``(..., C)``.
    """
    return np.asarray(feature_map).mean(axis=(-3, -2))


def point_to_cell(
    x: float, y: float, in_hw: tuple[int, int], map_hw: tuple[int, int]
) -> tuple[float, float]:
    """Map a pixel to feature-map coordinates (align-corners=False).

    Parameters
    ----------
    x, y : float
        Pixel position in the frame fed to the network.
    in_hw : tuple of int
        ``(H, W)`` of that frame.
    map_hw : tuple of int
        ``(H', W')`` of the feature map.

    Returns
    -------
    tuple of float
        ``(u, v)``: ``u = (x + 0.5) * W' / W - 0.5``, ``v = (y + 0.5) * H' / H - 0.5``.
    """
    (h, w), (mh, mw) = in_hw, map_hw
    return (x + 0.5) * mw / w - 0.5, (y + 0.5) * mh / h - 0.5


def inside_frame(x: float, y: float, in_hw: tuple[int, int]) -> bool:
    """Tell whether a point lies within the frame's outer pixel edges (and is not NaN).

    Parameters
    ----------
    x, y : float
        Pixel position.
    in_hw : tuple of int
        ``(H, W)`` of the frame.

    Returns
    -------
    bool
        ``-0.5 <= x <= W - 0.5`` and ``-0.5 <= y <= H - 0.5``, both finite.
    """
    h, w = in_hw
    return bool(np.isfinite(x) and np.isfinite(y) and -0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5)


def sample_point(
    feature_map: np.ndarray,
    x: float,
    y: float,
    in_hw: tuple[int, int],
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Sample a feature map at a landmark (the ``point`` post-encoder).

    Parameters
    ----------
    feature_map : array_like
        ``(H', W', C)``.
    x, y : float
        Pixel position in the frame fed to the network.
    in_hw : tuple of int
        ``(H, W)`` of that frame.
    interpolation : {"bilinear", "nearest"}, default "bilinear"
        ``bilinear`` blends the 4 neighbours with border clamping; ``nearest`` takes the closest cell.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float32; all NaN when the point is outside the frame or NaN.

    Raises
    ------
    BadInputError
        ``interpolation`` is neither ``bilinear`` nor ``nearest``.
    """
    if interpolation not in INTERPOLATIONS:
        raise BadInputError(f"interpolation must be bilinear or nearest, not {interpolation!r}")
    fmap = np.asarray(feature_map)
    mh, mw, c = fmap.shape
    if not inside_frame(x, y, in_hw):
        return np.full(c, np.nan, dtype=np.float32)
    u, v = point_to_cell(x, y, in_hw, (mh, mw))
    if interpolation == "nearest":
        j = int(np.clip(np.floor(u + 0.5), 0, mw - 1))
        i = int(np.clip(np.floor(v + 0.5), 0, mh - 1))
        return fmap[i, j].astype(np.float32)
    u, v = float(np.clip(u, 0, mw - 1)), float(np.clip(v, 0, mh - 1))
    j0, i0 = int(np.floor(u)), int(np.floor(v))
    j1, i1 = min(j0 + 1, mw - 1), min(i0 + 1, mh - 1)
    a, b = u - j0, v - i0
    top = (1 - a) * fmap[i0, j0] + a * fmap[i0, j1]
    bottom = (1 - a) * fmap[i1, j0] + a * fmap[i1, j1]
    return ((1 - b) * top + b * bottom).astype(np.float32)
