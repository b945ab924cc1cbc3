"""Landmarks for the Spatial Point post-encoder: positions per frame, grouped by landmark identity.

Where the points come from does not matter here: our own ``frame, x, y[, track_id]`` tables, a
napari Points layer (ours, napari-deeplabcut's, movement's), or a pose-tracker file read by
:func:`napari_flow_features.io.poses.read_tracks`. :func:`landmark_key` is the one rule that decides
which columns name a landmark; everything that groups points by landmark calls it.

Pure NumPy/pandas (no Qt, no TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError
from ..io.landmark_key import (  # noqa: F401 (the identity rule, public here too)
    CONFIDENCE_COLUMNS,
    IDENTITY_COLUMNS,
    LandmarkKey,
    confidence_column,
    landmark_ids,
    landmark_key,
    landmark_label,
)


@dataclass
class Landmarks:
    """Landmark positions per frame: ``xy[k, t] = (x, y)`` for landmark ``ids[k]``, NaN if missing.

    Attributes
    ----------
    ids : list
        Each landmark's label (see :func:`landmark_label`).
    xy : numpy.ndarray
        ``(K, T, 2)`` positions in video pixels, NaN where missing.
    filled : int
        Positions filled by interpolation.
    columns : tuple of str
        The identity columns of feature-table rows, e.g. ``("individual", "keypoint")``.
    keys : list of tuple
        Each landmark's values for ``columns``, e.g. ``("mouse1", "snout")`` (default: ``ids``).
    confidence : numpy.ndarray or None
        ``(K, T)`` confidence when the source had one.
    filled_at : numpy.ndarray or None
        ``(K, T)`` bool: positions filled by interpolation, when filling was asked for.
    masked : int
        Positions dropped for confidence below ``min_confidence``.
    options : dict
        The options the landmarks were made with (recorded in table metadata).
    """

    ids: list
    xy: np.ndarray  # (K, T, 2)
    filled: int = 0  # positions filled by interpolation
    columns: tuple[str, ...] = ("landmark",)
    keys: list[tuple] = field(default_factory=list)  # default: one-column keys from ``ids``
    confidence: np.ndarray | None = None  # (K, T)
    filled_at: np.ndarray | None = None  # (K, T) bool
    masked: int = 0  # positions dropped for confidence below min_confidence
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [(i,) for i in self.ids]

    def frames(self, start: int, stop: int) -> Landmarks:
        """Cut the landmarks to a run's frame range.

        Parameters
        ----------
        start, stop : int
            Frames ``start .. stop - 1``.

        Returns
        -------
        Landmarks
            A copy whose frame ``0`` is frame ``start``.
        """

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, start:stop]

        return replace(
            self, xy=self.xy[:, start:stop], confidence=cut(self.confidence),
            filled_at=cut(self.filled_at),
        )  # fmt: skip

    def row_fields(self, k: int, t: int) -> dict:
        """Give the identity and position columns of one landmark's row at one frame.

        Parameters
        ----------
        k : int
            Landmark index.
        t : int
            Frame index.

        Returns
        -------
        dict
            ``landmark`` or ``individual`` + ``keypoint``, ``x``, ``y``, and where known
            ``confidence`` and ``filled``.
        """
        x, y = self.xy[k, t]
        row = dict(zip(self.columns, self.keys[k], strict=True))
        row["x"], row["y"] = x, y
        if self.confidence is not None:
            row["confidence"] = float(self.confidence[k, t])
        if self.filled_at is not None:
            row["filled"] = bool(self.filled_at[k, t])
        return row

    def metadata(self) -> dict:
        """Describe the landmarks for a feature table's metadata.

        Returns
        -------
        dict
            Landmark order, identity columns and keys, filled and masked counts, and the options
            (confidence threshold, gap filling) as ``landmark_<option>``.
        """
        return {
            "landmarks": [str(i) for i in self.ids],
            "landmark_columns": list(self.columns),
            "landmark_keys": [[_plain(v) for v in key] for key in self.keys],
            "interpolated_landmark_positions": int(self.filled),
            "low_confidence_positions": int(self.masked),
            **{f"landmark_{k}": v for k, v in self.options.items()},
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def landmarks_from_points(
    points: Any,
    n_frames: int,
    interpolate_missing: bool = False,
    *,
    min_confidence: float | None = None,
    max_gap: int | None = None,
    keypoints: list[str] | str | None = None,
    individuals: list[str] | str | None = None,
    points_format: str | None = "auto",
    frame_hw: tuple[int, int] | None = None,
) -> Landmarks:
    """Group points by landmark for a video.

    A missing position stays NaN unless it lies in a gap of at most ``max_gap`` frames between two
    known positions, or ``interpolate_missing`` (any gap) is set: then it is filled linearly (as
    movement's ``interpolate_over_time``) and marked in ``filled_at``.

    Parameters
    ----------
    points : array_like, pandas.DataFrame, str, os.PathLike or Landmarks
        An ``(N, 3)`` array of ``(t, y, x)`` rows (single landmark: the first point of each
        frame); a table with ``frame``, ``x``, ``y`` and the identity columns
        :func:`landmark_key` knows (and ``confidence``/``likelihood``); a path to such a table or
        to a pose-tracker file (read with :func:`~napari_flow_features.io.poses.read_tracks`); or
        ready :class:`Landmarks` for this video (returned as they are).
    n_frames : int
        The video's frame count.
    interpolate_missing : bool, default False
        Fill gaps of any length.
    min_confidence : float, optional
        Points with lower confidence count as missing.
    max_gap : int, optional
        Fill gaps of at most this many frames.
    keypoints, individuals : list of str or str, optional
        Keep only these (a comma-separated string is split).
    points_format : str or None, default "auto"
        The format of a points file (see :data:`~napari_flow_features.io.poses.POINTS_FORMATS`).
    frame_hw : tuple of int, optional
        Warn about positions outside a frame of that ``(H, W)`` (their feature rows will be NaN).

    Returns
    -------
    Landmarks
        Positions ``(K, n_frames, 2)`` per landmark.

    Raises
    ------
    BadInputError
        The points do not fit the video (frame count, frames past the end), are empty or all
        missing, are malformed, name unknown keypoints or individuals (the known ones are listed),
        or ``min_confidence`` is given without confidence values.
    """
    n_frames = int(n_frames)
    if isinstance(points, Landmarks):
        if points.xy.shape[1] != n_frames:
            raise BadInputError(
                f"The landmarks were made for {points.xy.shape[1]} frames but the video has "
                f"{n_frames}"
            )
        return points
    source = None
    if isinstance(points, (str, os.PathLike)):
        source = os.fspath(points)
        points = read_landmark_file(points, points_format)
    if isinstance(points, pd.DataFrame):
        table = points
    else:
        arr = np.asarray(points, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 3:
            what = (
                "2-D points (y, x) for a video: add the frame axis"
                if arr.ndim == 2 and arr.shape[1] == 2
                else f"shape {arr.shape}"
            )
            raise BadInputError(f"Points must be (t, y, x) rows; got {what}")
        table = pd.DataFrame({"frame": arr[:, 0], "x": arr[:, 2], "y": arr[:, 1]})
    return _landmarks_from_table(
        table,
        n_frames,
        interpolate_missing=interpolate_missing,
        min_confidence=min_confidence,
        max_gap=max_gap,
        keypoints=_names(keypoints),
        individuals=_names(individuals),
        frame_hw=frame_hw,
        source=source,
    )


def _names(value: list[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    names = [str(v).strip() for v in value if str(v).strip()]
    return names or None


def read_landmark_file(path: str | os.PathLike, points_format: str | None = "auto") -> pd.DataFrame:
    """Read our landmark/feature table or a pose-tracker file as a long landmark table.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    points_format : str or None, default "auto"
        ``"auto"``/``None`` (detected), ``"table"`` or a pose format (see
        :func:`~napari_flow_features.io.poses.read_tracks`).

    Returns
    -------
    pandas.DataFrame
        ``frame``, identity columns, ``x``, ``y`` (and ``confidence`` where the file has one).

    Raises
    ------
    BadInputError
        The file is missing or unreadable as that format.
    """
    from ..io.poses import detect_format, read_tracks

    fmt = detect_format(path) if points_format in (None, "auto") else points_format
    if fmt == "table":
        from ..io.tables import read_table

        return read_table(path)
    return read_tracks(path, fmt)


def _select(table: pd.DataFrame, column: str, names: list[str], what: str) -> pd.DataFrame:
    values = table[column].astype(str)
    known = list(dict.fromkeys(values.tolist()))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError(
            f"Unknown {what} {', '.join(map(repr, unknown))}; the points have: {', '.join(known)}"
        )
    return table[values.isin(names).to_numpy()]


def _landmarks_from_table(
    table: pd.DataFrame,
    n_frames: int,
    *,
    interpolate_missing: bool,
    min_confidence: float | None,
    max_gap: int | None,
    keypoints: list[str] | None,
    individuals: list[str] | None,
    frame_hw: tuple[int, int] | None,
    source: str | None,
) -> Landmarks:
    missing = {"frame", "x", "y"} - set(table.columns)
    if missing:
        raise BadInputError(f"Points table lacks columns {sorted(missing)}")
    from ..io.tables import check_columns

    # A non-number names its column and row (frame numbers are rounded and checked below).
    table = table.copy()
    numeric = [c for c in ("frame", "x", "y", "confidence") if c in table.columns]
    check_columns(table, [], numeric, source or "landmark table")
    where = f": {source}" if source else ""
    file_frames = table.attrs.get("n_frames")
    if file_frames is not None and int(file_frames) != n_frames:
        raise BadInputError(
            f"The tracks have {int(file_frames)} frames but the video has {n_frames}: they belong "
            f"to another video (or a trimmed copy){where}"
        )
    if len(table) == 0:
        raise BadInputError(f"No landmark points: the tracks are empty{where}")
    key = landmark_key(table)
    columns = key.output if key else ("landmark",)
    if keypoints:
        col = next((c for c in ("keypoint", "landmark") if c in columns), None)
        if col is None or key is None:
            raise BadInputError("keypoints were chosen but the points have no landmark names")
        sub = key.source[columns.index(col)]
        table = _select(table, sub, keypoints, "keypoint" + ("s" if len(keypoints) > 1 else ""))
    if individuals:
        if key is None or "individual" not in columns:
            raise BadInputError(
                "individuals were chosen but the points have no individual names (single animal)"
            )
        sub = key.source[columns.index("individual")]
        table = _select(
            table, sub, individuals, "individual" + ("s" if len(individuals) > 1 else "")
        )
    frames_f = table["frame"].to_numpy(float)
    x = table["x"].to_numpy(float)
    y = table["y"].to_numpy(float)
    if not np.all(np.isfinite(frames_f)):
        raise BadInputError(f"Points have a missing or non-numeric frame number{where}")
    frames = np.round(frames_f).astype(np.int64)
    if frames.min() < 0 or frames.max() >= n_frames:
        past = int((frames >= n_frames).sum())
        raise BadInputError(
            f"Landmarks reach frame {frames.max()} ({past} points past the end) but the video has "
            f"{n_frames} frames (0..{n_frames - 1}): the tracks belong to another video"
            + (f" (lowest frame {frames.min()})" if frames.min() < 0 else "")
            + where
        )
    conf_col = confidence_column(table)
    conf = table[conf_col].to_numpy(float) if conf_col else None
    if conf is not None and not np.isfinite(conf).any():
        conf = None  # movement writes NaN confidence for files without one
    if min_confidence is not None and conf is None:
        raise BadInputError(
            f"min_confidence={min_confidence} was given but the points have no confidence values"
        )
    idents = key.values(table) if key else [(0,)] * len(table)
    keys = list(dict.fromkeys(idents))
    index = {ident: k for k, ident in enumerate(keys)}
    rows = np.array([index[i] for i in idents], dtype=np.int64)
    xy = np.full((len(keys), n_frames, 2), np.nan)
    confidence = np.full((len(keys), n_frames), np.nan) if conf is not None else None
    # The first point with a position of each (landmark, frame) wins.
    valid = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    _, first = np.unique(rows[valid] * n_frames + frames[valid], return_index=True)
    take = valid[first]
    xy[rows[take], frames[take], 0] = x[take]
    xy[rows[take], frames[take], 1] = y[take]
    if confidence is not None and conf is not None:
        confidence[rows[take], frames[take]] = conf[take]
    known = np.isfinite(xy).all(axis=-1)
    if not known.any():
        raise BadInputError(f"No landmark positions: every point is missing (NaN){where}")
    masked = 0
    if min_confidence is not None and confidence is not None:  # no confidence was refused above
        low = known & ~(confidence >= float(min_confidence))
        masked = int(low.sum())
        xy[low] = np.nan
    gap_limit = None
    if max_gap is not None:
        if int(max_gap) < 0:
            raise BadInputError(f"max_gap must be 0 or more frames, got {max_gap}")
        gap_limit = int(max_gap)
    if interpolate_missing:
        gap_limit = n_frames
    filled_at = None
    if gap_limit is not None:
        filled_at = fill_gaps(xy, gap_limit)
    is_pose = key is not None and key.output == ("individual", "keypoint")
    if filled_at is None and is_pose:
        filled_at = np.zeros(xy.shape[:2], bool)  # pose tables always say which rows were filled
    options: dict[str, Any] = {}
    if min_confidence is not None:
        options["min_confidence"] = float(min_confidence)
    if gap_limit is not None:
        options["max_gap"] = gap_limit
    for name in ("source_software", "source_file"):
        if table.attrs.get(name):
            options[name] = table.attrs[name]
    lm = Landmarks(
        ids=[landmark_label(k) for k in keys],
        xy=xy,
        filled=int(filled_at.sum()) if filled_at is not None else 0,
        columns=columns,
        keys=keys,
        confidence=confidence,
        filled_at=filled_at,
        masked=masked,
        options=options,
    )
    if frame_hw is not None:
        warn_outside_frame(lm, frame_hw)
    return lm


def fill_gaps(xy: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill short gaps between known positions linearly in time, in place.

    movement's ``interpolate_over_time(max_gap=...)`` rule: leading and trailing runs stay missing.

    Parameters
    ----------
    xy : numpy.ndarray
        ``(K, T, 2)`` positions, NaN where missing; modified in place.
    max_gap : int
        Longest run of missing frames to fill.

    Returns
    -------
    numpy.ndarray
        ``(K, T)`` bool mask of the filled positions.
    """
    filled = np.zeros(xy.shape[:2], bool)
    if max_gap < 1:
        return filled
    for k in range(xy.shape[0]):
        known = np.flatnonzero(np.isfinite(xy[k]).all(axis=-1))
        if len(known) < 2:
            continue
        jumps = np.diff(known)
        for i in np.flatnonzero((jumps > 1) & (jumps - 1 <= max_gap)):
            a, b = known[i], known[i + 1]
            frames = np.arange(a + 1, b)
            w = ((frames - a) / (b - a))[:, None]
            xy[k, frames] = (1 - w) * xy[k, a] + w * xy[k, b]
            filled[k, frames] = True
    return filled


def warn_outside_frame(landmarks: Landmarks, frame_hw: tuple[int, int]) -> int:
    """Warn (once) about positions outside the frame: their feature rows will be NaN.

    The warning names the landmarks and the first such frame.

    Parameters
    ----------
    landmarks : Landmarks
        The positions to check.
    frame_hw : tuple of int
        ``(H, W)`` of the frame in pixels.

    Returns
    -------
    int
        How many positions lie outside.
    """
    h, w = frame_hw
    x, y = landmarks.xy[..., 0], landmarks.xy[..., 1]
    # A pixel centre at 0 covers -0.5..0.5: the frame spans -0.5 .. W-0.5.
    outside = np.isfinite(x) & ((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5))
    n = int(outside.sum())
    if n:
        ks = np.flatnonzero(outside.any(axis=1))
        k0 = ks[0]
        t0 = int(np.flatnonzero(outside[k0])[0])
        names = ", ".join(str(landmarks.ids[k]) for k in ks[:5]) + (" …" if len(ks) > 5 else "")
        warnings.warn(
            f"{n} landmark positions lie outside the {w}x{h} frame ({names}; first: "
            f"{landmarks.ids[k0]} at frame {t0}, x={x[k0, t0]:.1f}, y={y[k0, t0]:.1f}); "
            "their feature rows will be NaN",
            stacklevel=2,
        )
    return n


# -- command line --------------------------------------------------------------------------------
def landmarks_from_args(args: argparse.Namespace, source: Any = None) -> Landmarks | None:
    """Read the landmarks a command line asks for, checked before any flow or model work.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (``points``, ``post_encoder`` and the options of
        :func:`napari_flow_features.cli.extract.add_landmark_arguments`).
    source : object, optional
        The video or flow the landmarks are checked against (default ``args.source``).

    Returns
    -------
    Landmarks or None
        The landmarks; ``None`` without ``--points``.

    Raises
    ------
    BadInputError
        ``--points`` without ``--post-encoder point`` or the reverse, or landmarks that do not fit
        the source (see :func:`landmarks_from_points`).
    """
    points = getattr(args, "points", None)
    post = getattr(args, "post_encoder", None)
    if points is None:
        if post == "point":
            raise BadInputError(
                "--post-encoder point needs landmarks: give --points (a landmark table or tracks)"
            )
        return None
    if post != "point":
        raise BadInputError(
            f"--points is only used by --post-encoder point (got --post-encoder {post}); "
            "add --post-encoder point or leave --points out"
        )
    n_frames = source_frame_count(args.source if source is None else source)
    return landmarks_from_points(
        points,
        n_frames,
        bool(getattr(args, "interpolate_missing", False)),
        min_confidence=getattr(args, "min_confidence", None),
        max_gap=getattr(args, "max_gap", None),
        keypoints=getattr(args, "keypoints", None),
        individuals=getattr(args, "individuals", None),
        points_format=getattr(args, "points_format", "auto"),
    )


def source_frame_count(source: Any) -> int:
    """Count the frames of a video, or of the video a flow sequence belongs to.

    Parameters
    ----------
    source : str, os.PathLike or array_like
        A video file (opened lazily), a flow file or folder, a flow array (float: fields + 1
        frames) or a frame array.

    Returns
    -------
    int
        The frame count.

    Raises
    ------
    BadInputError
        The source is of no known kind, or unreadable.
    """
    from ..io.flow_files import read_flow
    from ..io.video import VIDEO_EXTENSIONS, VideoArray

    if isinstance(source, (str, os.PathLike)):
        if os.fspath(source).lower().endswith(tuple(VIDEO_EXTENSIONS)):
            with VideoArray(source) as video:
                return len(video)
        flow = read_flow(source)
        return int(flow.shape[0]) + 1 if flow.ndim == 4 else 2
    if hasattr(source, "shape"):
        kind = np.dtype(source.dtype).kind
        return int(source.shape[0]) + 1 if kind == "f" else int(source.shape[0])
    raise BadInputError(f"Cannot count the frames of {type(source).__name__}")
