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
from collections.abc import Sequence
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

    The counts (``filled``, ``masked``, ``beyond_tracks``, ``clamped``, ``outside``) describe the
    frames the object holds: :meth:`frames` recomputes them for the cut range.

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
        ``(K, T)`` the tracker's confidence when the source had one (kept where it gave one, also
        for a point it gave no position; ``+inf`` for a point a person placed).
    filled_at : numpy.ndarray or None
        ``(K, T)`` bool: positions filled by interpolation, when filling was asked for.
    masked : int
        Positions dropped for confidence below ``min_confidence``.
    options : dict
        The options the landmarks were made with (recorded in table metadata).
    masked_at : numpy.ndarray or None
        ``(K, T)`` bool: the positions ``masked`` counts.
    user_labelled : numpy.ndarray or None
        ``(K, T)`` bool: points a person placed (SLEAP user instances), when the source says.
    beyond_from : int or None
        The first frame after the end of the tracks (a tolerated length difference): rows from
        there on are NaN and counted as ``beyond_tracks``.
    clamped_at, outside_at : numpy.ndarray or None
        ``(K, T)`` bool: positions moved onto the frame's edge, and positions dropped as too far
        outside it (see :func:`apply_border`).
    notes : list of str
        Warnings about the landmarks (length, video name, border), in video pixels, for the
        metadata and the user.
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
    masked_at: np.ndarray | None = None  # (K, T) bool
    user_labelled: np.ndarray | None = None  # (K, T) bool
    beyond_from: int | None = None
    clamped_at: np.ndarray | None = None  # (K, T) bool
    outside_at: np.ndarray | None = None  # (K, T) bool
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [(i,) for i in self.ids]

    @property
    def beyond_tracks(self) -> int:
        """Rows (landmark x frame) after the end of the tracks: NaN, counted."""
        if self.beyond_from is None:
            return 0
        return len(self.ids) * max(0, self.xy.shape[1] - self.beyond_from)

    def frames(self, start: int, stop: int) -> Landmarks:
        """Cut the landmarks to a run's frame range, with the counts of that range.

        Parameters
        ----------
        start, stop : int
            Frames ``start .. stop - 1``.

        Returns
        -------
        Landmarks
            A copy whose frame ``0`` is frame ``start``; ``filled``, ``masked``,
            ``beyond_tracks`` and the border counts describe only these frames.
        """

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:, start:stop]

        filled_at, masked_at = cut(self.filled_at), cut(self.masked_at)
        beyond = None if self.beyond_from is None else max(0, self.beyond_from - start)
        return replace(
            self, xy=self.xy[:, start:stop], confidence=cut(self.confidence),
            filled_at=filled_at, masked_at=masked_at, user_labelled=cut(self.user_labelled),
            clamped_at=cut(self.clamped_at), outside_at=cut(self.outside_at),
            filled=int(filled_at.sum()) if filled_at is not None else 0,
            masked=int(masked_at.sum()) if masked_at is not None else 0,
            beyond_from=beyond, keys=list(self.keys), notes=list(self.notes),
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
            ``confidence``, ``filled`` and ``user_labelled``.
        """
        x, y = self.xy[k, t]
        row = dict(zip(self.columns, self.keys[k], strict=True))
        row["x"], row["y"] = x, y
        if self.confidence is not None:
            row["confidence"] = float(self.confidence[k, t])
        if self.filled_at is not None:
            row["filled"] = bool(self.filled_at[k, t])
        if self.user_labelled is not None:
            row["user_labelled"] = bool(self.user_labelled[k, t])
        return row

    def metadata(self) -> dict:
        """Describe the landmarks for a feature table's metadata.

        Returns
        -------
        dict
            Landmark order, identity columns and keys, the counts of the frames held (filled,
            masked, beyond the tracks, user-labelled, clamped to and outside the frame), the
            warnings, and the options (confidence threshold, gap filling) as
            ``landmark_<option>``.
        """

        def count(a: np.ndarray | None) -> int:
            return int(a.sum()) if a is not None else 0

        return {
            "landmarks": [str(i) for i in self.ids],
            "landmark_columns": list(self.columns),
            "landmark_keys": [[_plain(v) for v in key] for key in self.keys],
            "interpolated_landmark_positions": int(self.filled),
            "low_confidence_positions": int(self.masked),
            "rows_beyond_tracks": self.beyond_tracks,
            "user_labelled_positions": count(self.user_labelled),
            "clamped_landmark_positions": count(self.clamped_at),
            "outside_landmark_positions": count(self.outside_at),
            "landmark_warnings": list(self.notes),
            **{f"landmark_{k}": v for k, v in self.options.items()},
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class LandmarkOptions:
    """How landmark points are selected and cleaned for a video (the options of the run).

    One object for what :func:`landmarks_from_points` takes as keywords, the command line as
    ``--min-confidence``, ``--max-gap``, ``--keypoints``… (:meth:`from_args`).

    Attributes
    ----------
    interpolate_missing : bool
        Fill gaps of any length.
    min_confidence : float or None
        Points with lower confidence count as missing.
    max_gap : int or None
        Fill gaps of at most this many frames.
    keypoints, individuals : tuple of str or None
        Keep only these (a list or a comma-separated string is accepted and normalised).
    points_format : str or None
        The format of a points file (see :data:`~napari_flow_features.io.poses.POINTS_FORMATS`).
    allow_length_mismatch : bool
        Accept tracks whose length differs from the video's by more than the tolerance of
        :func:`check_track_length`.
    """

    interpolate_missing: bool = False
    min_confidence: float | None = None
    max_gap: int | None = None
    keypoints: tuple[str, ...] | None = None
    individuals: tuple[str, ...] | None = None
    points_format: str | None = "auto"
    allow_length_mismatch: bool = False

    def __post_init__(self) -> None:
        """Normalise the selections: ``"a, b"`` and ``["a", "b"]`` are ``("a", "b")``."""
        object.__setattr__(self, "keypoints", _names(self.keypoints))
        object.__setattr__(self, "individuals", _names(self.individuals))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LandmarkOptions:
        """The options a parsed command line asks for (absent arguments: the defaults).

        Parameters
        ----------
        args : argparse.Namespace
            Parsed arguments with the options of
            :func:`napari_flow_features.cli.extract.add_landmark_arguments`.

        Returns
        -------
        LandmarkOptions
            The options.
        """
        return cls(
            interpolate_missing=bool(getattr(args, "interpolate_missing", False)),
            min_confidence=getattr(args, "min_confidence", None),
            max_gap=getattr(args, "max_gap", None),
            keypoints=getattr(args, "keypoints", None),
            individuals=getattr(args, "individuals", None),
            points_format=getattr(args, "points_format", "auto"),
            allow_length_mismatch=bool(getattr(args, "accept_length_mismatch", False)),
        )


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
    allow_length_mismatch: bool = False,
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
        Apply the border rule for a frame of that ``(H, W)`` in video pixels, with the margin of
        full-resolution features (:func:`apply_border` with ``border_margin(1.0)``; the
        extraction plan applies it itself with the run's scale), and warn.
    allow_length_mismatch : bool, default False
        Accept tracks whose length differs from the video's by more than the tolerance of
        :func:`check_track_length`.

    Returns
    -------
    Landmarks
        Positions ``(K, n_frames, 2)`` per landmark. Warnings (a tolerated length difference,
        border points) are issued as ``UserWarning`` and kept in ``notes``.

    Raises
    ------
    BadInputError
        The points do not fit the video (see :func:`check_track_length`), are empty or all
        missing, are malformed, name no landmark or unknown keypoints or individuals (the known
        ones are listed), ``min_confidence`` is given without confidence values or masks every
        point (the error names the best confidence found).
    """
    options = LandmarkOptions(
        interpolate_missing=interpolate_missing, min_confidence=min_confidence, max_gap=max_gap,
        keypoints=_names(keypoints), individuals=_names(individuals), points_format=points_format,
        allow_length_mismatch=allow_length_mismatch,
    )  # fmt: skip
    lm = _landmarks(points, int(n_frames), options)
    if frame_hw is not None:
        lm, message = apply_border(lm, frame_hw, border_margin(1.0))
        if message:
            warnings.warn(message, stacklevel=2)
    return lm


def _landmarks(points: Any, n_frames: int, options: LandmarkOptions) -> Landmarks:
    """The landmarks of ``points`` for a video of ``n_frames``.

    Ready :class:`Landmarks` are only checked; landmarks made here warn their notes at the caller
    of the public function that called this one.
    """
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
        points = read_landmark_file(points, options.points_format)
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
    lm = _landmarks_from_table(table, n_frames, options, source)
    for note in lm.notes:
        warnings.warn(note, stacklevel=3)
    return lm


def _names(value: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    names = tuple(str(v).strip() for v in value if str(v).strip())
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


def _select(ident: pd.DataFrame, column: str, names: Sequence[str], what: str) -> np.ndarray:
    """Which rows ``names`` keep (by the normalised identity), or an error listing the known."""
    values = ident[column].astype(str)
    known = list(dict.fromkeys(values.tolist()))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError(
            f"Unknown {what} {', '.join(map(repr, unknown))}; the points have: {', '.join(known)}"
        )
    return values.isin(names).to_numpy()


def _selected(
    table: pd.DataFrame, keypoints: Sequence[str] | None, individuals: Sequence[str] | None
) -> tuple[np.ndarray, tuple[str, ...], list[tuple]]:
    """Which rows the selection keeps, the identity columns and each kept row's identity."""
    key = landmark_key(table)
    if key is None:
        if keypoints:
            raise BadInputError("keypoints were chosen but the points have no landmark names")
        if individuals:
            raise BadInputError(
                "individuals were chosen but the points have no individual names (single animal)"
            )
        return np.ones(len(table), bool), ("landmark",), [(0,)] * len(table)
    ident = key.identity(table)
    keep = np.ones(len(table), bool)
    if keypoints:
        col = next((c for c in ("keypoint", "landmark") if c in key.output), None)
        if col is None:
            raise BadInputError("keypoints were chosen but the points have no landmark names")
        keep &= _select(ident, col, keypoints, "keypoint" + ("s" if len(keypoints) > 1 else ""))
    if individuals:
        if "individual" not in key.output:
            raise BadInputError(
                "individuals were chosen but the points have no individual names (single animal)"
            )
        what = "individual" + ("s" if len(individuals) > 1 else "")
        keep &= _select(ident, "individual", individuals, what)
    ident = ident[keep]
    idents = list(zip(*(ident[c].tolist() for c in key.output), strict=True))
    return keep, key.output, idents


def check_track_length(
    n_tracks: int, n_video: int, allow_mismatch: bool = False, where: str = ""
) -> str | None:
    """The length rule for tracks and videos: a small difference at the end is a warning.

    Tracks and video are taken to start together. A difference of at most 1 % of the video's
    frames and at most 10 frames (a decoder counting one frame more or less, a truncated last
    second) is tolerated: frames of the video after the tracks have NaN rows (counted), tracked
    frames after the video's end are left out. A larger difference is an error, unless
    ``allow_mismatch`` (``--accept-length-mismatch``) accepts it with the same warning.

    Parameters
    ----------
    n_tracks : int
        Frames the tracks cover (the file's row count, or its last frame + 1).
    n_video : int
        The video's frame count.
    allow_mismatch : bool, default False
        Accept any difference (with the warning).
    where : str, optional
        Appended to messages (e.g. ``": tracks.h5"``).

    Returns
    -------
    str or None
        The warning naming both lengths; ``None`` when they are equal.

    Raises
    ------
    BadInputError
        The difference is over the tolerance and ``allow_mismatch`` is not set; the message names
        both lengths and the option that accepts it.
    """
    n_tracks, n_video = int(n_tracks), int(n_video)
    diff = abs(n_tracks - n_video)
    if diff == 0:
        return None
    if not allow_mismatch and (diff > 10 or diff > 0.01 * n_video):
        raise BadInputError(
            f"The tracks have {n_tracks} frames but the video has {n_video}: {diff} frames "
            "differ, more than tolerated (1 % of the video's frames, at most 10), so they may "
            "belong to another video or a trimmed copy. If they are this video's tracks and start "
            "with it, accept the difference with --accept-length-mismatch "
            f"(allow_length_mismatch=True){where}"
        )
    if n_tracks < n_video:
        return (
            f"The tracks have {n_tracks} frames and the video {n_video}: the video's last "
            f"{diff} frames have no tracked positions (their rows are NaN, counted as "
            f"rows_beyond_tracks){where}"
        )
    return (
        f"The tracks have {n_tracks} frames and the video {n_video}: the tracks' last {diff} "
        f"frames lie after the video's end and are left out{where}"
    )


def _frames_in_video(
    table: pd.DataFrame, n_frames: int, allow: bool, where: str
) -> tuple[pd.DataFrame, np.ndarray, str | None, int | None]:
    """Frame numbers checked against the video's length (the rule of :func:`check_track_length`).

    Returns the rows inside the video, their frames, the warning and the first frame after the
    tracks (``None`` when the tracks do not end before the video).
    """
    frames_f = table["frame"].to_numpy(float)
    if not np.all(np.isfinite(frames_f)):
        raise BadInputError(f"Points have a missing or non-numeric frame number{where}")
    frames = np.round(frames_f).astype(np.int64)
    if frames.min() < 0:
        raise BadInputError(
            f"Points have negative frame numbers (lowest {frames.min()}): the first frame is 0"
            f"{where}"
        )
    file_frames = table.attrs.get("n_frames")
    n_tracks = int(file_frames) if file_frames is not None else int(frames.max()) + 1
    if file_frames is None and n_tracks <= n_frames:
        return table, frames, None, None  # a table of some frames: nothing is known past them
    if file_frames is not None and frames.max() >= n_tracks:
        n_tracks = int(frames.max()) + 1
    try:
        note = check_track_length(n_tracks, n_frames, allow, where)
    except BadInputError as exc:
        past = int((frames >= n_frames).sum())
        if past:
            raise BadInputError(
                f"Landmarks reach frame {frames.max()} ({past} points past the end) but the video "
                f"has {n_frames} frames (0..{n_frames - 1}). {exc}"
            ) from None
        raise
    inside = frames < n_frames
    beyond = n_tracks if n_tracks < n_frames else None
    return table[inside], frames[inside], note, beyond


def _place(
    rows: np.ndarray, frames: np.ndarray, table: pd.DataFrame, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Positions, confidences and user flags ``(K, T, …)``: the first point with a position wins.

    The tracker's confidence is kept wherever it gave one, also for a point without a position.
    """
    x, y = table["x"].to_numpy(float), table["y"].to_numpy(float)
    xy = np.full((*shape, 2), np.nan)
    valid = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    _, first = np.unique(rows[valid] * shape[1] + frames[valid], return_index=True)
    take = valid[first]
    xy[rows[take], frames[take]] = np.stack([x[take], y[take]], axis=-1)
    conf_col = confidence_column(table)
    conf = table[conf_col].to_numpy(float) if conf_col else None
    confidence = None
    if conf is not None and (~np.isnan(conf)).any():  # movement writes NaN for files without
        confidence = np.full(shape, np.nan)
        scored = np.flatnonzero(~np.isnan(conf))
        _, first = np.unique(rows[scored] * shape[1] + frames[scored], return_index=True)
        confidence[rows[scored[first]], frames[scored[first]]] = conf[scored[first]]
        confidence[rows[take], frames[take]] = conf[take]  # the point whose position is used
    user = None
    if "user_labelled" in table.columns:
        user = np.zeros(shape, bool)
        flags = table["user_labelled"].fillna(False).to_numpy(bool)
        user[rows[take], frames[take]] = flags[take]
    return xy, confidence, user


def _mask_low_confidence(
    xy: np.ndarray, confidence: np.ndarray | None, min_confidence: float | None, where: str
) -> np.ndarray | None:
    """Drop positions whose confidence is below ``min_confidence`` (in place); which were."""
    if min_confidence is None:
        return None
    if confidence is None:
        raise BadInputError(
            f"min_confidence={min_confidence} was given but the points have no confidence values"
        )
    known = np.isfinite(xy).all(axis=-1)
    low = known & ~(confidence >= float(min_confidence))
    if low.sum() == known.sum():
        best = np.nanmax(np.where(known, confidence, np.nan))
        raise BadInputError(
            f"min_confidence={min_confidence} (--min-confidence) masks every one of the "
            f"{int(known.sum())} positions of the chosen landmarks: the best confidence found is "
            f"{best:.4g}. Lower the threshold{where}"
        )
    xy[low] = np.nan
    return low


def _gap_limit(max_gap: int | None, interpolate_missing: bool, n_frames: int) -> int | None:
    if max_gap is not None and int(max_gap) < 0:
        raise BadInputError(f"max_gap must be 0 or more frames, got {max_gap}")
    if interpolate_missing:
        return n_frames
    return None if max_gap is None else int(max_gap)


def _landmarks_from_table(
    table: pd.DataFrame, n_frames: int, options: LandmarkOptions, source: str | None
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
    if len(table) == 0:
        raise BadInputError(f"No landmark points: the tracks are empty{where}")
    table, frames, note, beyond = _frames_in_video(
        table, n_frames, options.allow_length_mismatch, where
    )
    keep, columns, idents = _selected(table, options.keypoints, options.individuals)
    table, frames = table[keep], frames[keep]
    keys = list(dict.fromkeys(idents))
    index = {ident: k for k, ident in enumerate(keys)}
    rows = np.array([index[i] for i in idents], dtype=np.int64)
    xy, confidence, user = _place(rows, frames, table, (len(keys), n_frames))
    if not np.isfinite(xy).all(axis=-1).any():
        raise BadInputError(f"No landmark positions: every point is missing (NaN){where}")
    masked_at = _mask_low_confidence(xy, confidence, options.min_confidence, where)
    gap_limit = _gap_limit(options.max_gap, options.interpolate_missing, n_frames)
    filled_at = fill_gaps(xy, gap_limit) if gap_limit is not None else None
    if filled_at is None and columns == ("individual", "keypoint"):
        filled_at = np.zeros(xy.shape[:2], bool)  # pose tables always say which rows were filled
    recorded: dict[str, Any] = {}
    if options.min_confidence is not None:
        recorded["min_confidence"] = float(options.min_confidence)
    if gap_limit is not None:
        recorded["max_gap"] = gap_limit
    recorded.update({k: table.attrs[k] for k in ("source_software", "source_file", "video_file")
                    if table.attrs.get(k)})  # fmt: skip
    return Landmarks(
        ids=[landmark_label(k) for k in keys], xy=xy,
        filled=int(filled_at.sum()) if filled_at is not None else 0, columns=columns, keys=keys,
        confidence=confidence, filled_at=filled_at,
        masked=int(masked_at.sum()) if masked_at is not None else 0, options=recorded,
        masked_at=masked_at, user_labelled=user, beyond_from=beyond,
        notes=[note] if note else [],
    )  # fmt: skip


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


#: The stride of the encoder's feature map (Mixed_5c) in work pixels: one feature cell.
FEATURE_CELL_PX = 32


def border_margin(video_px_per_work_px: float, cell_px: int = FEATURE_CELL_PX) -> float:
    """Half a feature cell, in video pixels: how far outside the frame a point is still clamped.

    Parameters
    ----------
    video_px_per_work_px : float
        Video pixels per pixel of the frame the encoder sees (``1.0`` at full size; ``2.5`` when a
        640-px video is resized to 256).
    cell_px : int, default 32
        The feature map's stride in work pixels.

    Returns
    -------
    float
        ``cell_px / 2 * video_px_per_work_px``.
    """
    return cell_px / 2.0 * float(video_px_per_work_px)


@dataclass(frozen=True)
class BorderReport:
    """What :func:`classify_border` did to positions near and outside the frame.

    Attributes
    ----------
    xy : numpy.ndarray
        ``(K, T, 2)`` positions: those within the margin clamped onto the frame, those farther
        out NaN.
    clamped : numpy.ndarray
        ``(K, T)`` bool: positions moved onto the frame's edge.
    outside : numpy.ndarray
        ``(K, T)`` bool: positions dropped (NaN) as farther out than the margin.
    max_clamp_px : float
        The largest distance a clamped position was moved, in video pixels.
    examples : list of tuple
        Up to three dropped positions ``(k, t, x, y)`` (the first ones, by landmark then frame).
    """

    xy: np.ndarray
    clamped: np.ndarray
    outside: np.ndarray
    max_clamp_px: float
    examples: list[tuple[int, int, float, float]]

    @property
    def n_clamped(self) -> int:
        """Positions clamped onto the frame."""
        return int(self.clamped.sum())

    @property
    def n_outside(self) -> int:
        """Positions dropped as too far outside."""
        return int(self.outside.sum())


def classify_border(xy: np.ndarray, frame_hw: tuple[int, int], margin_px: float) -> BorderReport:
    """Clamp positions just outside the frame onto it; drop those farther out.

    The frame spans ``-0.5 .. W - 0.5`` by ``-0.5 .. H - 0.5`` (pixel centres at ``0 .. W - 1``:
    the outer pixel edges, the extent the point sampler accepts). A position outside it by at most
    ``margin_px`` (in both axes: the distance is the larger of the two) is moved onto that edge; a
    farther one becomes NaN. Pure: ``xy`` is not modified.

    Parameters
    ----------
    xy : numpy.ndarray
        ``(K, T, 2)`` positions ``(x, y)`` in video pixels, NaN where missing.
    frame_hw : tuple of int
        ``(H, W)`` of the video frame in pixels.
    margin_px : float
        How far outside still counts as on the frame (see :func:`border_margin`).

    Returns
    -------
    BorderReport
        The new positions, which were clamped and which dropped, and examples.
    """
    h, w = frame_hw
    xy = np.asarray(xy, dtype=float)
    lo = np.array([-0.5, -0.5])
    hi = np.array([w - 0.5, h - 0.5])
    known = np.isfinite(xy).all(axis=-1)
    with np.errstate(invalid="ignore"):
        beyond = np.maximum(lo - xy, xy - hi).max(axis=-1)
    off = known & (beyond > 0)
    outside = off & (beyond > margin_px)
    clamped = off & ~outside
    out = np.clip(xy, lo, hi)
    out[~known] = xy[~known]
    out[outside] = np.nan
    ks, ts = np.nonzero(outside)
    examples = [(int(k), int(t), float(xy[k, t, 0]), float(xy[k, t, 1]))
                for k, t in zip(ks[:3], ts[:3], strict=True)]  # fmt: skip
    max_clamp = float(beyond[clamped].max()) if clamped.any() else 0.0
    return BorderReport(out, clamped, outside, max_clamp, examples)


def border_message(
    report: BorderReport, frame_hw: tuple[int, int], ids: list, margin_px: float
) -> str | None:
    """Say what the border rule did, in video pixels; ``None`` when every position was inside.

    Parameters
    ----------
    report : BorderReport
        From :func:`classify_border`.
    frame_hw : tuple of int
        ``(H, W)`` of the video frame.
    ids : list
        The landmarks' labels (``Landmarks.ids``), to name the examples.
    margin_px : float
        The margin the report was made with.

    Returns
    -------
    str or None
        E.g. ``3 landmark positions lie up to 4.2 px outside the 640x480 frame: clamped to its
        edge; 2 lie farther (more than 16.0 px): their rows are NaN (first: frame 12, snout,
        x=700.0, y=12.0)``.
    """
    h, w = frame_hw
    frame = f"the {w}x{h} frame"
    clamped = ""
    if report.n_clamped:
        clamped = (
            f"{report.n_clamped} landmark position{'s lie' if report.n_clamped > 1 else ' lies'} "
            f"up to {report.max_clamp_px:.1f} px outside {frame}: clamped to its edge"
        )
    if not report.n_outside:
        return clamped or None
    k, t, x, y = report.examples[0]
    far = f"more than {margin_px:.1f} px (half a feature cell)"
    dropped = (
        f"{report.n_outside} lie farther ({far})"
        if clamped
        else f"{report.n_outside} landmark position{'s lie' if report.n_outside > 1 else ' lies'} "
        f"{far} outside {frame}"
    )
    dropped += f": their rows are NaN (first: frame {t}, {ids[k]}, x={x:.1f}, y={y:.1f})"
    return f"{clamped}; {dropped}" if clamped else dropped


def apply_border(
    landmarks: Landmarks, frame_hw: tuple[int, int], margin_px: float
) -> tuple[Landmarks, str | None]:
    """Apply :func:`classify_border` to landmarks: clamped and dropped positions, counted.

    Parameters
    ----------
    landmarks : Landmarks
        Positions in video pixels.
    frame_hw : tuple of int
        ``(H, W)`` of the video frame.
    margin_px : float
        See :func:`border_margin`.

    Returns
    -------
    landmarks : Landmarks
        A copy with the new positions, ``clamped_at``/``outside_at`` and the message in ``notes``.
    message : str or None
        :func:`border_message`'s text.
    """
    report = classify_border(landmarks.xy, frame_hw, margin_px)
    message = border_message(report, frame_hw, landmarks.ids, margin_px)
    notes = [*landmarks.notes, message] if message else list(landmarks.notes)
    return replace(landmarks, xy=report.xy, clamped_at=report.clamped,
                   outside_at=report.outside, notes=notes), message  # fmt: skip


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
    source = args.source if source is None else source
    landmarks = _landmarks(points, source_frame_count(source), LandmarkOptions.from_args(args))
    note = video_name_note(landmarks.options.get("video_file"), source)
    if note:
        warnings.warn(note, stacklevel=2)
        landmarks.notes.append(note)
    return landmarks


def video_name_note(tracked_video: str | None, source: Any) -> str | None:
    """Warn when the tracks name another video than the one they are used with.

    A SLEAP project (and analysis file) names the video it was made on; tracks of one camera run
    on another camera's video give wrong features without any error.

    Parameters
    ----------
    tracked_video : str or None
        The video the tracks name (``video_file`` in :func:`~..io.poses.read_tracks`'s attrs).
    source : object
        The video the features are extracted from (a path, or an array: nothing to compare).

    Returns
    -------
    str or None
        The warning, naming both files; ``None`` when the names agree or one is unknown.
    """
    if not tracked_video or not isinstance(source, (str, os.PathLike)):
        return None
    named = os.path.basename(str(tracked_video).replace("\\", "/"))
    used = os.path.basename(os.fspath(source))
    if not named or named == used:
        return None
    return (
        f"The tracks were made on the video {named!r}, not on {used!r}: check that they belong "
        "to this video (the frame counts agree)"
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
