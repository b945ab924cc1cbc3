"""Pose-tracker files (DeepLabCut, SLEAP, Lightning Pose, NWB) as a long landmark table.

One door, :func:`read_tracks`, behind which each format has one reader:

- DeepLabCut and Lightning Pose (``.h5`` under any pandas key: ``df_with_missing`` for
  ``analyze_videos`` and ``…_el_filtered.h5``, ``tracks`` for the stitched multi-animal
  ``…_el.h5``; ``.csv``): read here with pandas, not with movement. movement 0.15 reshapes the
  columns to individuals x body parts, which fails on (or, on a cut, silently scrambles) every
  multi-animal project with unique body parts (DLC's ``single`` individual; movement issue #977)
  and only opens the ``df_with_missing`` key. Reading the pandas frame directly keeps exactly the
  (individual, body part) pairs the file has, in its order.
- SLEAP projects (``.slp``): read here with sleap-io (installed with movement), as movement does
  (user-labelled instance over predicted, first video), but keeping which points a person placed:
  movement gives them NaN confidence, which ``min_confidence`` would mask.
- SLEAP analysis ``.h5`` and NWB: movement's ``load_dataset``.

movement and sleap-io are the optional extra ``pip install 'napari-flow-features[poses]'``;
:func:`detect_format` needs neither, so a pose file without them gets an error naming the extra.

The table: ``frame, individual, keypoint, x, y, confidence``, one row per frame, individual and
keypoint (in the file's order; NaN where the tracker lost the point), and for SLEAP a
``user_labelled`` column: a point a person placed or corrected has confidence ``+inf``
(:data:`USER_CONFIDENCE`, so no threshold masks it). ``attrs`` record ``n_frames`` (the tracked
video's length: for a ``.slp``, the frame count of the video it names when that can be read,
otherwise only ``tracked_frames``, its last labelled frame + 1), ``source_software``,
``source_file`` and, where the file names it, ``video_file``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError

#: What ``points_format`` / ``--points-format`` accept: ``table`` is our own ``frame, x, y`` table.
POINTS_FORMATS = ("auto", "table", "DeepLabCut", "SLEAP", "LightningPose", "NWB")
POSE_FORMATS = POINTS_FORMATS[2:]
EXTRA_HINT = "pip install 'napari-flow-features[poses]'"
#: The confidence of a point a person placed (a SLEAP user instance): no threshold masks it.
USER_CONFIDENCE = float("inf")
#: movement's name for the one animal of a single-animal DeepLabCut file.
DLC_SINGLE_INDIVIDUAL = "individual_0"
#: movement's name for the animal of a SLEAP project without tracks.
SLEAP_UNTRACKED_INDIVIDUAL = "id_0"
_DLC_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _labelled_data_error(path: Path) -> BadInputError:
    return BadInputError(
        f"{path.name} is a DeepLabCut labelled-data file (manual labels indexed by image path, "
        "used to train a network), not tracks of a video. Pass the tracking output that "
        "DeepLabCut's analyze_videos writes next to the video (<video>DLC_<scorer>….h5 or .csv), "
        f"or our own frame,x,y table: {path}"
    )


def _csv_head(path: Path, n: int = 5) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _ in range(n):
            line = fh.readline()
            if not line:
                break
            rows.append([c.strip().strip('"') for c in line.rstrip("\r\n").split(",")])
    return rows


def detect_format(path: str | os.PathLike) -> str:
    """Tell which software wrote a landmark file, from its suffix and first bytes.

    Needs no movement, so a pose file without it still gets an error naming the extra to install.

    Parameters
    ----------
    path : str or os.PathLike
        A landmark file.

    Returns
    -------
    str
        ``"table"`` (our ``frame, x, y`` table), ``"DeepLabCut"``, ``"SLEAP"`` or ``"NWB"``.
        Lightning Pose CSVs are DeepLabCut-style and detected as such (pass ``"LightningPose"``
        to :func:`read_tracks` to say so).

    Raises
    ------
    BadInputError
        The file is missing, empty, unreadable, a DeepLabCut labelled-data (training) file, or of
        no known format.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Landmark file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "table"
    if suffix == ".slp":
        return "SLEAP"
    if suffix == ".nwb":
        return "NWB"
    if suffix in (".h5", ".hdf5"):
        return _detect_hdf5(path)
    if suffix in (".pickle", ".pkl"):
        raise BadInputError(
            f"{path.name} is a pickle; DeepLabCut's pickles (…_full, …_assemblies, …_el.pickle) "
            "are intermediate results. Pass what DeepLabCut writes for analysis: the .h5 or .csv "
            "of analyze_videos, or for multi-animal projects the stitched …_el.h5 "
            f"(stitch_tracklets) or …_el_filtered.h5/.csv: {path}"
        )
    if suffix == ".csv":
        head = _csv_head(path)
        if not head:
            raise BadInputError(f"Empty file: {path}")
        if head[0] and head[0][0].lower() == "scorer":
            levels = next(
                (i for i, row in enumerate(head) if row and row[0].lower() == "coords"), None
            )
            data = head[levels + 1] if levels is not None and levels + 1 < len(head) else []
            if any(
                c.startswith("labeled-data") or c.lower().endswith(_IMAGE_SUFFIXES)
                for c in data[:3]
            ):
                raise _labelled_data_error(path)
            return "DeepLabCut"
        if "frame" in head[0]:
            return "table"
        raise BadInputError(
            f"Not a landmark table (no 'frame' column: {head[0][:6]}) nor DeepLabCut/Lightning "
            f"Pose output (those start with a 'scorer' row): {path}"
        )
    raise BadInputError(
        f"Unknown landmark file type {suffix!r}: expected our .csv/.parquet table, DeepLabCut "
        f".h5/.csv, SLEAP .slp/analysis .h5, Lightning Pose .csv or .nwb: {path}"
    )


def _detect_hdf5(path: Path) -> str:
    """Tell a SLEAP analysis file from a pandas-written (DeepLabCut) one by what it holds.

    A SLEAP analysis file has a numeric ``tracks`` dataset; DeepLabCut writes a pandas frame
    (an HDF5 group with a ``pandas_type`` attribute) under ``df_with_missing`` (``analyze_videos``,
    ``…_el_filtered.h5``), ``tracks`` (the stitched multi-animal ``…_el.h5``) or any other key.
    """
    try:
        import h5py

        with h5py.File(path, "r") as f:
            keys = sorted(f.keys())
            sleap = isinstance(f.get("tracks"), h5py.Dataset)
            frames = [
                k for k in keys if isinstance(f[k], h5py.Group) and "pandas_type" in f[k].attrs
            ]
    except OSError as exc:
        raise BadInputError(f"Not a readable HDF5 file ({exc}): {path}") from exc
    if sleap or {"frames", "instances", "points", "metadata"} <= set(keys):
        return "SLEAP"  # an analysis file, or a project saved under .h5 (SLEAP's old habit)
    if "keypoints" in frames:  # DeepLabCut's CollectedData_<scorer>.h5
        raise _labelled_data_error(path)
    if frames:
        return "DeepLabCut"
    raise BadInputError(
        f"HDF5 file with datasets {keys[:6]} is neither DeepLabCut output (a pandas table, "
        f"e.g. 'df_with_missing' or 'tracks') nor a SLEAP analysis file (a 'tracks' array): {path}"
    )


def _integer_like(index: pd.Index) -> bool:
    if pd.api.types.is_integer_dtype(index):
        return True
    return pd.to_numeric(pd.Series(index), errors="coerce").notna().all()


@contextlib.contextmanager
def _quiet_movement() -> Iterator[None]:
    """Movement logs every load at INFO through loguru; keep the user's console for our messages."""
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - loguru comes with movement
        yield
        return
    logger.disable("movement")
    try:
        yield
    finally:
        logger.enable("movement")


def read_tracks(
    path: str | os.PathLike, source_software: str | None = "auto", fps: float | None = None
) -> pd.DataFrame:
    """Read a pose-tracker file as the long table ``frame, individual, keypoint, x, y, confidence``.

    Parameters
    ----------
    path : str or os.PathLike
        The tracker's output file.
    source_software : str or None, default "auto"
        ``None``/``"auto"`` (detected by :func:`detect_format`) or one of ``DeepLabCut``,
        ``SLEAP``, ``LightningPose``, ``NWB``.
    fps : float, optional
        Recorded in ``attrs``, not used: rows are indexed by frame number.

    Returns
    -------
    pandas.DataFrame
        One row per frame, individual and keypoint (see the module docstring for the columns and
        ``attrs``).

    Raises
    ------
    BadInputError
        The file is missing, our own table, of an unknown format, unreadable as that format, or
        needs the optional ``movement`` package that is not installed.
    """
    path = Path(path)
    fmt = detect_format(path) if source_software in (None, "auto") else source_software
    if fmt == "table":
        raise BadInputError(
            f"{path.name} is a frame,x,y landmark table, not a pose-tracker file: read it with "
            "read_table or pass it as points directly"
        )
    if fmt not in POSE_FORMATS:
        raise BadInputError(
            f"Unknown pose format {fmt!r}; choose one of {', '.join(POINTS_FORMATS)}"
        )
    if not path.is_file():
        raise BadInputError(f"Landmark file not found: {path}")
    try:
        if fmt in ("DeepLabCut", "LightningPose"):
            table = _read_dlc(path, fmt)
        elif fmt == "SLEAP" and _is_sleap_project(path):
            table = _read_slp(path)
        else:
            table = _read_with_movement(path, fmt, fps)
    except BadInputError:
        raise
    except ImportError as exc:
        raise BadInputError(
            f"Reading {fmt} files needs the optional 'movement' package: {EXTRA_HINT} "
            f"(or convert the tracks to a frame,x,y[,track_id] CSV): {path}"
        ) from exc
    except Exception as exc:  # the readers raise ValueError, OSError, KeyError… for bad files
        raise BadInputError(
            f"Cannot read {path.name} as {fmt} tracks ({type(exc).__name__}: {exc}); "
            f"if it is another format, pass it explicitly (one of {', '.join(POSE_FORMATS)})"
        ) from exc
    if fps:
        table.attrs["fps"] = float(fps)
    return table


def _is_sleap_project(path: Path) -> bool:
    """A SLEAP project (labels) file: ``.slp``, or the same layout saved as ``.h5``."""
    if path.suffix.lower() == ".slp":
        return True
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {"frames", "instances", "points", "metadata"} <= set(f.keys())
    except OSError:
        return False


def _read_with_movement(path: Path, fmt: str, fps: float | None) -> pd.DataFrame:
    """SLEAP analysis ``.h5`` and NWB: movement's reader, then the long table."""
    from movement.io import load_dataset

    with _quiet_movement():
        ds = load_dataset(path, source_software=fmt, fps=fps)
    table = tracks_table(ds, source_software=fmt, source_file=str(path))
    if fmt == "SLEAP":
        _mark_sleap_analysis_user_points(table, path)
    return table


def _mark_sleap_analysis_user_points(table: pd.DataFrame, path: Path) -> None:
    """A SLEAP analysis file scores predicted points only: a position without score was placed.

    SLEAP's exporter leaves ``point_scores`` NaN for user-labelled instances; they get
    :data:`USER_CONFIDENCE` and ``user_labelled``. Without ``point_scores`` nothing is known.
    """
    import h5py

    with h5py.File(path, "r") as f:
        scored = "point_scores" in f
        video = f["video_path"][()] if "video_path" in f else None
    if isinstance(video, bytes):
        video = video.decode("utf-8", "replace")
    if video:
        table.attrs["video_file"] = str(video)
    placed = np.zeros(len(table), bool)
    if scored:
        placed = (table["x"].notna() & table["y"].notna() & table["confidence"].isna()).to_numpy()
    table.loc[placed, "confidence"] = USER_CONFIDENCE
    table["user_labelled"] = placed


# -- DeepLabCut / Lightning Pose: pandas frames, read here (movement issue #977) -----------------
def _dlc_frame(path: Path) -> pd.DataFrame:
    """The DeepLabCut-layout frame of an ``.h5`` (any single pandas key) or ``.csv``, as written."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        with pd.HDFStore(path, mode="r") as store:
            keys = [k.lstrip("/") for k in store.keys()]
        preferred = [k for k in ("df_with_missing", "tracks") if k in keys]
        if not preferred and len(keys) != 1:
            raise BadInputError(
                f"{path.name} holds several tables {keys[:6]} and none is DeepLabCut's "
                "'df_with_missing' or 'tracks'"
            )
        key = (preferred or keys)[0]
        frame = pd.read_hdf(path, key=key)
        if not isinstance(frame, pd.DataFrame):
            raise BadInputError(f"{path.name}: the table {key!r} is not a DeepLabCut frame")
        return frame
    head = _csv_head(path, 5)
    n_levels = sum(1 for row in head[:4] if row and row[0].lower() in _DLC_LEVELS)
    # As movement does: no index_col, so that an empty first data row ("0,,,,") stays a row.
    frame = pd.read_csv(path, header=list(range(n_levels)))
    names = [str(c).lower() for c in frame.columns[0]]
    frame = frame.set_index(frame.columns[0])
    frame.index.name = None
    frame.columns = pd.MultiIndex.from_tuples(list(frame.columns), names=names)
    return frame


def _dlc_landmarks(frame: pd.DataFrame, path: Path) -> list[tuple[str, str]]:
    """The file's (individual, body part) pairs in column order, checked for x and y."""
    names = list(frame.columns.names)
    if not isinstance(frame.columns, pd.MultiIndex) or not {"bodyparts", "coords"} <= set(names):
        raise BadInputError(
            f"{path.name} has no DeepLabCut column levels (scorer, [individuals,] bodyparts, "
            f"coords); its column levels are {names}"
        )
    individuals = (
        frame.columns.get_level_values("individuals").astype(str)
        if "individuals" in names
        else pd.Index([DLC_SINGLE_INDIVIDUAL] * frame.shape[1])
    )
    parts = frame.columns.get_level_values("bodyparts").astype(str)
    coords = frame.columns.get_level_values("coords").astype(str)
    pairs = list(dict.fromkeys(zip(individuals, parts, strict=True)))
    have = set(zip(individuals, parts, coords, strict=True))
    lacking = [f"{i}/{p}" for i, p in pairs if (i, p, "x") not in have or (i, p, "y") not in have]
    if lacking:
        raise BadInputError(f"{path.name}: no x and y columns for {', '.join(lacking[:5])}")
    return pairs


def _dlc_column(frame: pd.DataFrame, individual: str, part: str, coord: str) -> np.ndarray:
    """One coordinate column of one landmark (NaN when the file has none, e.g. no likelihood)."""
    names = list(frame.columns.names)
    level_values = {"individuals": individual, "bodyparts": part, "coords": coord}
    mask = np.ones(frame.shape[1], bool)
    for name, value in level_values.items():
        if name in names:
            mask &= frame.columns.get_level_values(name).astype(str) == value
    hits = np.flatnonzero(mask)
    if len(hits) == 0:
        return np.full(len(frame), np.nan)
    if len(hits) > 1:
        raise BadInputError(
            f"Several columns (scorers) for {individual}/{part} {coord}; keep one scorer per file"
        )
    return pd.to_numeric(frame.iloc[:, hits[0]], errors="coerce").to_numpy(np.float64)


def _read_dlc(path: Path, fmt: str) -> pd.DataFrame:
    """Read a DeepLabCut-layout file (single-, multi-animal, unique body parts) as the long table."""
    frame = _dlc_frame(path)
    index = frame.index
    if isinstance(index, pd.MultiIndex) or (len(index) and not _integer_like(index)):
        raise _labelled_data_error(path)
    if len(frame) == 0:
        raise BadInputError(f"No frames in {path.name}")
    pairs = _dlc_landmarks(frame, path)
    frames = pd.to_numeric(pd.Series(index)).round().to_numpy(np.int64)
    cols = {c: np.stack([_dlc_column(frame, i, p, c) for i, p in pairs], axis=1)
            for c in ("x", "y", "likelihood")}  # fmt: skip
    n_t, n_l = len(frames), len(pairs)
    table = pd.DataFrame(
        {
            "frame": np.repeat(frames, n_l),
            "individual": np.tile([i for i, _ in pairs], n_t),
            "keypoint": np.tile([p for _, p in pairs], n_t),
            "x": cols["x"].reshape(-1),
            "y": cols["y"].reshape(-1),
            "confidence": cols["likelihood"].reshape(-1),
        }
    )
    every_frame = np.array_equal(frames, np.arange(n_t))
    table.attrs = {
        "n_frames" if every_frame else "tracked_frames": int(frames.max()) + 1,
        "source_software": fmt,
        "source_file": str(path),
    }
    return table


# -- SLEAP projects (.slp): sleap-io, keeping which points a person placed -----------------------
def _slp_video_frames(video: Any, path: Path) -> int | None:
    """The frame count of the video a ``.slp`` names, where it can be known.

    From the video itself (at the path the project names, or of that name next to the project),
    else from the shape the project stored; ``None`` when neither is there.
    """
    from .video import VideoArray

    named = Path(str(video.filename))
    for candidate in (named, path.parent / named.name):
        if candidate.is_file():
            try:
                with VideoArray(candidate) as frames:
                    return len(frames)
            except Exception:  # unreadable here: try the next, then the stored shape
                continue
    shape = (getattr(video, "backend_metadata", None) or {}).get("shape")
    return int(shape[0]) if shape else None


def _slp_arrays(labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Positions ``(T, I, K, 2)``, confidences and user flags ``(T, I, K)`` of the first video.

    movement's rule (``_sleap_labels_to_numpy``, SLEAP's analysis export): in each frame and track
    the last user-labelled instance wins over predicted ones. A placed point keeps its position
    and gets :data:`USER_CONFIDENCE`.
    """
    video = labels.videos[0]
    lfs = [lf for lf in labels.labeled_frames if lf.video == video]
    tracks = list(labels.tracks) or [None]
    names = [t.name for t in labels.tracks] or [SLEAP_UNTRACKED_INDIVIDUAL]
    n_k = len(labels.skeletons[0].nodes)
    n_t = max([0, *(lf.frame_idx for lf in lfs)]) + 1
    pos = np.full((n_t, len(tracks), n_k, 2), np.nan)
    conf = np.full((n_t, len(tracks), n_k), np.nan)
    user = np.zeros((n_t, len(tracks), n_k), bool)
    for lf in lfs:
        for j, track in enumerate(tracks):
            placed = [inst for inst in lf.user_instances if inst.track == track]
            predicted = [inst for inst in lf.predicted_instances if inst.track == track]
            if placed:
                xy = np.asarray(placed[-1].numpy(), np.float64)
                pos[lf.frame_idx, j] = xy
                user[lf.frame_idx, j] = np.isfinite(xy).all(axis=-1)
                conf[lf.frame_idx, j] = np.where(user[lf.frame_idx, j], USER_CONFIDENCE, np.nan)
            elif predicted:
                arr = np.asarray(predicted[-1].numpy(scores=True), np.float64)
                pos[lf.frame_idx, j], conf[lf.frame_idx, j] = arr[:, :2], arr[:, 2]
    return pos, conf, user, names


def _read_slp(path: Path) -> pd.DataFrame:
    """Read a SLEAP project (``.slp``) as the long table, with ``user_labelled``."""
    import sleap_io  # type: ignore[import-untyped]

    labels = sleap_io.load_slp(str(path), open_videos=False)
    if not labels.videos or not labels.skeletons:
        raise BadInputError(f"{path.name} holds no video or no skeleton: no tracks to read")
    pos, conf, user, names = _slp_arrays(labels)
    keypoints = [node.name for node in labels.skeletons[0].nodes]
    n_t, n_i, n_k, _ = pos.shape
    table = pd.DataFrame(
        {
            "frame": np.repeat(np.arange(n_t), n_i * n_k),
            "individual": np.tile(np.repeat(names, n_k), n_t),
            "keypoint": np.tile(keypoints, n_t * n_i),
            "x": pos[..., 0].reshape(-1),
            "y": pos[..., 1].reshape(-1),
            "confidence": conf.reshape(-1),
            "user_labelled": user.reshape(-1),
        }
    )
    video = labels.videos[0]
    table.attrs = {"tracked_frames": n_t, "source_software": "SLEAP", "source_file": str(path),
                   "video_file": str(video.filename)}  # fmt: skip
    n_video = _slp_video_frames(video, path)
    if n_video is not None:
        table.attrs["n_frames"] = n_video
    return table


def tracks_table(
    ds: Any, source_software: str = "", source_file: str = "", exact_length: bool = True
) -> pd.DataFrame:
    """Convert a movement poses dataset to the long landmark table (see :func:`read_tracks`).

    Parameters
    ----------
    ds : xarray.Dataset
        A movement poses dataset (``position`` and optionally ``confidence``).
    source_software, source_file : str, optional
        Recorded in ``attrs``; default: the dataset's own attributes.
    exact_length : bool, default True
        The dataset has a row per video frame, so ``attrs["n_frames"]`` is the video's length
        (otherwise only ``attrs["tracked_frames"]`` is recorded).

    Returns
    -------
    pandas.DataFrame
        ``frame, individual, keypoint, x, y, confidence``, one row per frame, individual and keypoint.

    Raises
    ------
    BadInputError
        The dataset holds bounding boxes rather than poses, or positions that are not 2-D.
    """
    if getattr(ds, "ds_type", "poses") != "poses" or "keypoints" not in ds.dims:
        raise BadInputError("These are bounding-box tracks, not poses: no keypoints to sample at")
    space = [str(s) for s in ds.coords["space"].values]
    if space != ["x", "y"]:
        raise BadInputError(
            f"The tracks are {len(space)}-D ({', '.join(space)}); features need 2-D image positions"
        )
    pos = ds["position"].transpose("time", "individuals", "keypoints", "space").to_numpy()
    n_t, n_i, n_k, _ = pos.shape
    if "confidence" in ds:
        conf = ds["confidence"].transpose("time", "individuals", "keypoints").to_numpy()
    else:
        conf = np.full((n_t, n_i, n_k), np.nan)
    individuals = [str(v) for v in ds.coords["individuals"].values]
    keypoints = [str(v) for v in ds.coords["keypoints"].values]
    table = pd.DataFrame(
        {
            "frame": np.repeat(np.arange(n_t), n_i * n_k),
            "individual": np.tile(np.repeat(individuals, n_k), n_t),
            "keypoint": np.tile(keypoints, n_t * n_i),
            "x": pos[..., 0].reshape(-1).astype(np.float64),
            "y": pos[..., 1].reshape(-1).astype(np.float64),
            "confidence": conf.reshape(-1).astype(np.float64),
        }
    )
    table.attrs = {
        "n_frames" if exact_length else "tracked_frames": int(n_t),
        "source_software": source_software or str(ds.attrs.get("source_software", "")),
        "source_file": source_file or str(ds.attrs.get("source_file", "")),
    }
    if ds.attrs.get("fps"):
        table.attrs["fps"] = float(ds.attrs["fps"])
    return table
