"""Landmarks for the Spatial Point post-encoder: positions per frame, grouped by landmark identity.

Pure NumPy/pandas (no Qt, no TensorFlow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError


@dataclass
class Landmarks:
    """Landmark positions per frame: ``xy[k, t] = (x, y)`` for landmark ``ids[k]``, NaN if missing."""

    ids: list
    xy: np.ndarray  # (K, T, 2)
    filled: int = 0  # positions filled by interpolation

    def frames(self, start: int, stop: int) -> Landmarks:
        """The same landmarks over frames ``start..stop-1`` only (a run's frame range)."""
        return replace(self, xy=self.xy[:, start:stop])

    def row_fields(self, k: int, t: int) -> dict:
        """The identity and position columns of landmark ``k``'s row at frame ``t``."""
        x, y = self.xy[k, t]
        return {"landmark": self.ids[k], "x": x, "y": y}


def landmarks_from_points(
    points: Any, n_frames: int, interpolate_missing: bool = False
) -> Landmarks:
    """Group ``points`` by landmark: an ``(N, 3)`` array of ``(t, y, x)`` rows (single landmark: the
    first point of each frame), or a table with ``frame``, ``x``, ``y`` and optionally ``track_id``,
    ``label`` or ``landmark`` (one landmark per id). A frame with no point stays NaN unless
    ``interpolate_missing`` fills it linearly between the nearest keyframes before and after."""
    if isinstance(points, (str, os.PathLike)):
        from ..io.tables import read_table

        points = read_table(points)
    if isinstance(points, pd.DataFrame):
        missing = {"frame", "x", "y"} - set(points.columns)
        if missing:
            raise BadInputError(f"Points table lacks columns {sorted(missing)}")
        key = next((k for k in ("track_id", "label", "landmark") if k in points.columns), None)
        t = points["frame"].to_numpy(float)
        y, x = points["y"].to_numpy(float), points["x"].to_numpy(float)
        groups = points[key].to_numpy() if key else np.zeros(len(points), int)
    else:
        arr = np.asarray(points, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 3:
            what = (
                "2-D points (y, x) for a video: add the frame axis"
                if arr.ndim == 2 and arr.shape[1] == 2
                else f"shape {arr.shape}"
            )
            raise BadInputError(f"Points must be (t, y, x) rows; got {what}")
        t, y, x = arr[:, 0], arr[:, 1], arr[:, 2]
        groups = np.zeros(len(arr), int)
    if len(t) == 0:
        raise BadInputError("The Points layer is empty: click a landmark first")
    ids = list(dict.fromkeys(groups.tolist()))
    xy = np.full((len(ids), n_frames, 2), np.nan)
    frames = np.round(t).astype(int)
    for k, ident in enumerate(ids):
        for i in np.flatnonzero(groups == ident):  # first point of a frame wins
            f = frames[i]
            if 0 <= f < n_frames and np.isnan(xy[k, f, 0]):
                xy[k, f] = (x[i], y[i])
    filled = 0
    if interpolate_missing:
        for k in range(len(ids)):
            known = np.flatnonzero(~np.isnan(xy[k, :, 0]))
            if len(known) < 2:
                continue
            gaps = np.arange(known[0], known[-1] + 1)
            gaps = gaps[np.isnan(xy[k, gaps, 0])]
            for c in range(2):
                xy[k, gaps, c] = np.interp(gaps, known, xy[k, known, c])
            filled += len(gaps)
    return Landmarks(ids=ids, xy=xy, filled=filled)
