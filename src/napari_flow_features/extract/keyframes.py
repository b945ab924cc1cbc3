"""Landmarks from a few clicks: fill the frames between clicked keyframes.

``linear``: straight lines in time between keyframes. ``flow``: carry each keyframe's point along
the optical flow, forward from the keyframe before and backward from the keyframe after (the
backward step inverts ``flow[t]`` by fixed-point iteration, so only forward flow is needed), and
blend the two tracks by distance: at ``t`` between keyframes ``a`` and ``b`` the forward track
weighs ``(b - t) / (b - a)``. Each track starts exact at its keyframe, so the blend is exact at both
keyframes and drift is at most that of half a track. Frames before the first and after the last
keyframe stay missing.

Pure NumPy/SciPy/pandas (no Qt, no TensorFlow).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import map_coordinates

from ..errors import BadInputError
from .landmarks import landmark_key

FILL_METHODS = ("linear", "flow")


def _flow_at(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear (dx, dy) of one flow field ``(H, W, 2)`` at ``xy`` (2,), clamped at the border."""
    coords = np.array([[xy[1]], [xy[0]]])
    return np.array(
        [map_coordinates(field[..., c], coords, order=1, mode="nearest")[0] for c in (0, 1)]
    )


def _forward(flow: Any, first: int, start_xy: np.ndarray, a: int, b: int) -> np.ndarray:
    """Track from frame ``a`` to ``b``: ``p[t+1] = p[t] + flow[t](p[t])``; rows a..b."""
    out = np.empty((b - a + 1, 2))
    out[0] = start_xy
    for i, t in enumerate(range(a, b)):
        field = np.asarray(flow[t - first], dtype=np.float64)
        out[i + 1] = out[i] + _flow_at(field, out[i])
    return out


def _backward(
    flow: Any, first: int, end_xy: np.ndarray, a: int, b: int, iterations: int = 5
) -> np.ndarray:
    """Track from frame ``b`` back to ``a``: ``p[t]`` solves ``p[t] + flow[t](p[t]) = p[t+1]``."""
    out = np.empty((b - a + 1, 2))
    out[-1] = end_xy
    for i in range(b - a - 1, -1, -1):
        field = np.asarray(flow[a + i - first], dtype=np.float64)
        p = out[i + 1] - _flow_at(field, out[i + 1])
        for _ in range(iterations - 1):
            p = out[i + 1] - _flow_at(field, p)
        out[i] = p
    return out


def fill_keyframes(
    keyframes: Any,
    n_frames: int,
    method: str = "linear",
    flow: Any = None,
    flow_first: int = 0,
) -> np.ndarray:
    """Fill one landmark's positions between its keyframes.

    Parameters
    ----------
    keyframes : array_like
        ``(N, 3)`` rows ``(t, y, x)`` (napari Points order; a frame clicked twice takes its first
        click); at least 2 distinct frames.
    n_frames : int
        The video's frame count.
    method : {"linear", "flow"}, default "linear"
        Straight lines between keyframes, or points carried along the optical flow from both ends
        and blended.
    flow : array_like, optional
        For ``"flow"``: ``flow[t - flow_first]`` is the ``(H, W, 2)`` field from frame ``t`` to
        ``t + 1`` (dx, dy in the keyframes' pixels) for every ``t`` from the first to the last
        keyframe minus one.
    flow_first : int, default 0
        The frame of ``flow[0]``.

    Returns
    -------
    numpy.ndarray
        ``(n_frames, 2)`` positions ``(x, y)``, NaN outside the span the keyframes cover.

    Raises
    ------
    BadInputError
        Unknown method, malformed keyframes, a keyframe outside the video, fewer than 2
        keyframes, or (``"flow"``) no flow or flow that does not cover the keyframes' span.
    """
    if method not in FILL_METHODS:
        raise BadInputError(f"Fill method must be one of {', '.join(FILL_METHODS)}, not {method!r}")
    arr = np.asarray(keyframes, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0:
        raise BadInputError(f"Keyframes must be (t, y, x) rows; got shape {arr.shape}")
    frames = np.round(arr[:, 0]).astype(int)
    if frames.min() < 0 or frames.max() >= n_frames:
        raise BadInputError(
            f"A keyframe is at frame {frames.max() if frames.max() >= n_frames else frames.min()} "
            f"but the video has {n_frames} frames (0..{n_frames - 1})"
        )
    _, first_click = np.unique(frames, return_index=True)
    order = first_click[np.argsort(frames[first_click])]
    keys_t = frames[order]
    keys_xy = arr[order][:, [2, 1]]
    if len(keys_t) < 2:
        raise BadInputError("Filling between keyframes needs at least 2 keyframes of a landmark")
    out = np.full((n_frames, 2), np.nan)
    out[keys_t] = keys_xy
    if method == "flow":
        if flow is None:
            raise BadInputError("Filling along the optical flow needs the flow of the video")
        last_needed = keys_t[-1] - 1 - flow_first
        if flow_first > keys_t[0] or last_needed >= len(flow):
            raise BadInputError(
                f"The flow covers frames {flow_first}..{flow_first + len(flow)} but the keyframes "
                f"span {keys_t[0]}..{keys_t[-1]}"
            )
    for (a, b), (pa, pb) in zip(pairwise(keys_t), pairwise(keys_xy), strict=True):
        w = ((np.arange(a, b + 1) - a) / (b - a))[:, None]
        if method == "linear":
            out[a : b + 1] = (1 - w) * pa + w * pb
        else:
            fwd = _forward(flow, flow_first, pa, a, b)
            bwd = _backward(flow, flow_first, pb, a, b)
            out[a : b + 1] = (1 - w) * fwd + w * bwd
    return out


def fill_keyframe_table(
    points: pd.DataFrame,
    n_frames: int,
    method: str = "linear",
    flow: Any = None,
    flow_first: int = 0,
) -> pd.DataFrame:
    """Fill every landmark of a keyframe table between its keyframes.

    Parameters
    ----------
    points : pandas.DataFrame
        Keyframes: ``frame``, ``x``, ``y`` and the identity columns
        :func:`~napari_flow_features.extract.landmarks.landmark_key` knows.
    n_frames, method, flow, flow_first
        As for :func:`fill_keyframes`.

    Returns
    -------
    pandas.DataFrame
        A long table with the same identity columns, ``frame``, ``x``, ``y`` and ``keyframe``
        (True on the clicked frames) for every frame between each landmark's first and last
        keyframe.

    Raises
    ------
    BadInputError
        Columns are missing, there are no keyframes, or a landmark cannot be filled (the message
        names it).
    """
    missing = {"frame", "x", "y"} - set(points.columns)
    if missing:
        raise BadInputError(f"Keyframes lack columns {sorted(missing)}")
    if len(points) == 0:
        raise BadInputError("No keyframes: click the landmark on a few frames first")
    key = landmark_key(points)
    idents = key.values(points) if key else [()] * len(points)
    parts = []
    for ident in dict.fromkeys(idents):
        rows = points[[i == ident for i in idents]]
        arr = rows[["frame", "y", "x"]].to_numpy(float)
        try:
            xy = fill_keyframes(arr, n_frames, method, flow, flow_first)
        except BadInputError as exc:
            name = "/".join(map(str, ident)) or "the landmark"
            raise BadInputError(f"{name}: {exc}") from None
        t = np.flatnonzero(np.isfinite(xy[:, 0]))
        part = pd.DataFrame({"frame": t, "x": xy[t, 0], "y": xy[t, 1]})
        for col, value in zip(key.source if key else (), ident, strict=True):
            part[col] = value
        part["keyframe"] = np.isin(t, np.round(arr[:, 0]).astype(int))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
