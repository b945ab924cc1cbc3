"""Frames of any bit depth as the 8-bit grey images OpenCV's flow methods take.

The rule (docs/flow.md, "Bit depth"), the same in the API, the CLI and napari:

- ``uint8``: unchanged.
- ``bool``: False → 0, True → 255.
- any other integer type (``uint16``, ``int16``, ``int32``, …): scaled by the **dtype's range**,
  ``(v - min) / (max - min) * 255`` with ``min, max`` of the dtype (``uint16``: ``v / 257``, so an
  8-bit stack stored as 16 bits, ``v * 257``, gives back exactly its 8-bit values). The rule looks
  at no pixel, so every frame of a stack is scaled the same way and brightness stays constant,
  which the flow methods assume.
- floating point: values in ``[0, 1]`` are scaled by 255, values in ``[0, 255]`` are taken as they
  are (8-bit intensities stored as floats), anything else by the frame's own finite min..max
  (NaN → the minimum).
- a ``value_range=(lo, hi)`` given by the caller overrides all of these: ``(v - lo) / (hi - lo) *
  255``, clipped. Use it, through :func:`stack_value_range` or :class:`NormalisedFrames`, when the
  data uses only part of its type (a 12-bit camera writing ``uint16``: the dtype rule would leave it
  16 grey levels), or with napari's contrast limits.

Rounding is to the nearest level (``np.rint``), never truncation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BadInputError


def to_uint8(frame: Any, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Convert a frame of any bit depth to uint8 by the rule in this module's docstring.

    Parameters
    ----------
    frame : array_like
        Numbers of any dtype and shape.
    value_range : tuple of float, optional
        ``(lo, hi)`` mapped to 0 and 255 (default: chosen from the dtype and values).

    Returns
    -------
    numpy.ndarray
        uint8, the same shape (``frame`` itself when it already is uint8 and no range is given).

    Raises
    ------
    BadInputError
        The frame does not hold numbers, or ``value_range`` is not two finite numbers lo < hi.
    """
    frame = np.asarray(frame)
    kind = frame.dtype.kind
    if kind not in "buif":
        raise BadInputError(f"Frames must be numbers, not {frame.dtype}")
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            raise BadInputError(
                f"Intensity range must be two finite numbers lo < hi, not {value_range}"
            )
        return _scale(frame, lo, hi)
    if frame.dtype == np.uint8:
        return frame
    if kind == "b":
        return frame.astype(np.uint8) * np.uint8(255)
    if kind in "iu":
        info = np.iinfo(frame.dtype)
        return _scale(frame, float(info.min), float(info.max))
    finite = frame[np.isfinite(frame)]
    if finite.size == 0:
        return np.zeros(frame.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0 and hi <= 1:
        return _scale(frame, 0.0, 1.0)
    if lo >= 0 and hi <= 255:
        return _scale(frame, 0.0, 255.0)
    return _scale(frame, lo, hi) if hi > lo else np.zeros(frame.shape, np.uint8)


def _scale(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
    values = np.nan_to_num(frame.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
    out = np.rint((values - lo) * (255.0 / (hi - lo)))
    return np.clip(out, 0, 255).astype(np.uint8)


def stack_value_range(frames: Any, samples: int = 16) -> tuple[float, float]:
    """Measure one intensity range for a whole stack from a few of its frames.

    Parameters
    ----------
    frames : array_like
        A frame stack (a lazy array is read only at the sampled frames).
    samples : int, default 16
        Frames read, spread evenly over the stack.

    Returns
    -------
    tuple of float
        The finite ``(min, max)`` of those frames; ``(lo, lo + 1)`` for constant frames and
        ``(0, 1)`` when nothing is finite.

    Raises
    ------
    BadInputError
        The stack has no frames.
    """
    n = len(frames)
    if n == 0:
        raise BadInputError("No frames")
    lo, hi = np.inf, -np.inf
    for i in np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int)):
        frame = np.asarray(frames[int(i)])
        finite = frame[np.isfinite(frame)] if frame.dtype.kind == "f" else frame
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if not np.isfinite(lo) or hi <= lo:
        return (lo, lo + 1.0) if np.isfinite(lo) else (0.0, 1.0)
    return lo, hi


class NormalisedFrames:
    """A lazy view of a frame stack as uint8 with one intensity range for every frame.

    Indexing returns uint8 frames; ``len``, ``shape`` and ``ndim`` are the stack's.

    Parameters
    ----------
    frames : array_like
        A frame stack of any dtype (NumPy or lazy).
    value_range : tuple of float, optional
        ``(lo, hi)`` mapped to 0 and 255 (default: measured by :func:`stack_value_range`).
    """

    def __init__(self, frames: Any, value_range: tuple[float, float] | None = None) -> None:
        self.frames = frames
        self.value_range = value_range if value_range is not None else stack_value_range(frames)

    @property
    def shape(self) -> tuple[int, ...]:
        """The stack's shape."""
        return tuple(self.frames.shape)

    @property
    def ndim(self) -> int:
        """The stack's number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """Always ``uint8``."""
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: Any) -> np.ndarray:
        return to_uint8(self.frames[key], self.value_range)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = to_uint8(np.asarray(self.frames), self.value_range)
        return out if dtype is None else out.astype(dtype)


def rgb_frame(frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """Prepare one frame for the I3D RGB stream.

    Parameters
    ----------
    frame : array_like
        ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` of any bit depth (converted by :func:`to_uint8`).
    size : tuple of int, optional
        ``(H, W)`` to resize to with area interpolation (the rule the flow stream's frames follow).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, contiguous; grey is repeated to three channels.

    Raises
    ------
    BadInputError
        The frame is neither grey nor RGB.
    """
    import cv2

    frame = to_uint8(frame)
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    elif frame.ndim != 3 or frame.shape[-1] != 3:
        raise BadInputError(f"Frames must be grey (H, W) or RGB (H, W, 3); got {frame.shape}")
    if size is not None and frame.shape[:2] != tuple(size):
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(frame)


def rgb_to_i3d(frames: np.ndarray) -> np.ndarray:
    """Scale uint8 RGB frames to DeepMind's kinetics-i3d RGB input.

    Parameters
    ----------
    frames : numpy.ndarray
        uint8 frames ``(..., 3)``.

    Returns
    -------
    numpy.ndarray
        float32 ``x / 127.5 - 1`` in ``[-1, 1]`` (0 → -1, 255 → 1).
    """
    return np.asarray(frames, np.float32) / np.float32(127.5) - np.float32(1.0)
