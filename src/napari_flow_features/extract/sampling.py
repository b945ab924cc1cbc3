"""The post-encoder sampling stage: each wanted frame's map becomes its rows.

``none`` writes a row naming the frame's map and time position; ``gap`` averages the map; ``point``
samples it at each landmark of the frame (video pixels → the work frame → the map, DESIGN.md's
align-corners=False rule). Optionally each frame's map is also reduced over channels into an
activation heatmap.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from .outputs import Rows
from .plan import RunPlan
from .post_encoders import gap, inside_frame, sample_point


class RowSampler:
    """Turns frame maps into rows for the plan's post-encoder.

    Parameters
    ----------
    plan : RunPlan
        The post-encoder, interpolation, landmarks, selection and heatmap choice.
    rows : Rows
        Where the rows go.
    """

    def __init__(self, plan: RunPlan, rows: Rows) -> None:
        self.plan, self.rows = plan, rows
        s = plan.settings
        self.post, self.interpolation, self.heat_how = s.post_encoder, s.interpolation, s.heatmap
        self.heat: np.ndarray | None = None
        self.outside: list[tuple] = []  #: (frame, landmark, x, y) of positions outside the frame

    def frame(self, t: int, fmap: np.ndarray, extra: dict, labels: dict | None) -> None:
        """Rows of frame ``t`` (relative to the range) from its map ``(H', W', C)``.

        ``labels``: the frame's window's Kinetics predictions, on every row of the frame.
        """
        frame = int(t) + self.plan.sel.start + self.plan.source.frame_offset  # a video frame
        if self.heat_how is not None:
            if self.heat is None:
                self.heat = np.full((self.plan.sel.n_frames, *fmap.shape[:2]), np.nan, np.float32)
            self.heat[t] = reduce_channels(fmap, self.heat_how)
        if self.post == "none":
            self.rows.add({"frame": frame, **extra, **(labels or {})})
        elif self.post == "gap":
            self.rows.add({"frame": frame, **(labels or {})}, gap(fmap))
        else:
            self._points(t, frame, fmap, labels)

    def _points(self, t: int, frame: int, fmap: np.ndarray, labels: dict | None) -> None:
        landmarks, sel, to_flow = self.plan.landmarks, self.plan.sel, self.plan.source.to_flow
        origin = self.plan.source.origin
        assert landmarks is not None  # a point plan has them
        dropped = getattr(landmarks, "outside_at", None)  # beyond the border rule's margin
        for k in range(len(landmarks.ids)):
            fields = landmarks.row_fields(k, t)
            x, y = float(landmarks.xy[k, t, 0]), float(landmarks.xy[k, t, 1])
            vx, vy = x - origin[0], y - origin[1]  # flow kept from a region starts there
            if to_flow is not None:  # flow computed at another size than the video's
                vx, vy = (vx + 0.5) * to_flow[1] - 0.5, (vy + 0.5) * to_flow[0] - 0.5
            wx, wy = sel.to_work(np.asarray(vx), np.asarray(vy))
            fx, fy = float(wx), float(wy)
            if (dropped is not None and dropped[k, t]) or (
                np.isfinite(fx) and not inside_frame(fx, fy, sel.work_hw)
            ):
                self.outside.append((frame, landmarks.ids[k], x, y))
            feat = sample_point(fmap, fx, fy, sel.work_hw, self.interpolation)
            self.rows.add({"frame": frame, **fields, **(labels or {})}, feat)

    def counts(self) -> dict:
        """Counts that describe the rows written (missing landmark rows, outside the frame)."""
        if self.post != "point":
            return {"missing_landmark_rows": 0, "outside_frame_rows": 0}
        return {
            "missing_landmark_rows": self.rows.nan_rows - len(self.outside),
            "outside_frame_rows": len(self.outside),
        }


def reduce_channels(fmap: np.ndarray, how: str | int) -> np.ndarray:
    """``(H', W', C)`` → ``(H', W')``: the channel mean, the L2 norm over channels, or one channel.

    Parameters
    ----------
    fmap : numpy.ndarray
        A feature map ``(H', W', C)``.
    how : str or int
        ``mean``, ``l2`` or a channel number.

    Returns
    -------
    numpy.ndarray
        ``(H', W')``.

    Raises
    ------
    BadInputError
        ``how`` is none of these, or a channel the map does not have.
    """
    if how == "mean":
        return fmap.mean(axis=-1)
    if how == "l2":
        return np.sqrt((fmap.astype(np.float64) ** 2).sum(axis=-1)).astype(np.float32)
    try:
        channel = int(how)
    except (TypeError, ValueError):
        raise BadInputError(
            f"heatmap must be 'mean', 'l2' or a channel number, not {how!r}"
        ) from None
    if not 0 <= channel < fmap.shape[-1]:
        raise BadInputError(
            f"Channel {channel} does not exist: the map has {fmap.shape[-1]} channels"
        )
    return fmap[..., channel]
