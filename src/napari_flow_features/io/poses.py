"""Pose-tracker files (DeepLabCut, SLEAP, Lightning Pose, NWB) as a long landmark table.

One door, :func:`read_tracks`; the format parsers are movement's (``movement.io.load_dataset``,
an optional dependency: ``pip install 'napari-flow-features[poses]'``). :func:`detect_format` needs
no movement, so a pose file without it gets an error naming the extra to install.

The table: ``frame, individual, keypoint, x, y, confidence``, one row per frame, individual and
keypoint (in the file's order; NaN where the tracker lost the point), with ``attrs`` recording
``n_frames`` (the tracked video's length; a SLEAP ``.slp`` project only knows its last predicted
frame: ``tracked_frames``), ``source_software`` and ``source_file``.
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
        try:
            import h5py

            with h5py.File(path, "r") as f:
                keys = set(f.keys())
        except OSError as exc:
            raise BadInputError(f"Not a readable HDF5 file ({exc}): {path}") from exc
        if "tracks" in keys:
            return "SLEAP"
        if "df_with_missing" in keys:
            return "DeepLabCut"
        if "keypoints" in keys:  # DeepLabCut's CollectedData_<scorer>.h5
            raise _labelled_data_error(path)
        raise BadInputError(
            f"HDF5 file with datasets {sorted(keys)[:6]} is neither DeepLabCut output "
            f"('df_with_missing') nor a SLEAP analysis file ('tracks'): {path}"
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


def _check_dlc_index(path: Path) -> None:
    """DeepLabCut .h5 files written for training are indexed by image path, not frame."""
    try:
        index = pd.read_hdf(path, key="df_with_missing").index
    except Exception:  # movement reports an unreadable file with its own message
        return
    if isinstance(index, pd.MultiIndex) or (len(index) and not _integer_like(index)):
        raise _labelled_data_error(path)


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
        One row per frame, individual and keypoint (see the module docstring for ``attrs``).

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
        from movement.io import load_dataset
    except ImportError as exc:
        raise BadInputError(
            f"Reading {fmt} files needs the optional 'movement' package: {EXTRA_HINT} "
            f"(or convert the tracks to a frame,x,y[,track_id] CSV): {path}"
        ) from exc
    if fmt == "DeepLabCut" and path.suffix.lower() in (".h5", ".hdf5"):
        _check_dlc_index(path)
    try:
        with _quiet_movement():
            ds = load_dataset(path, source_software=fmt, fps=fps)
    except BadInputError:
        raise
    except Exception as exc:  # movement raises ValueError, OSError, KeyError… for bad files
        raise BadInputError(
            f"Cannot read {path.name} as {fmt} tracks ({type(exc).__name__}: {exc}); "
            f"if it is another format, pass it explicitly (one of {', '.join(POSE_FORMATS)})"
        ) from exc
    # A SLEAP project (.slp) ends at its last predicted frame, not at the video's end; every other
    # format has a row per video frame, so its length is the video's.
    exact = not (fmt == "SLEAP" and path.suffix.lower() == ".slp")
    return tracks_table(ds, source_software=fmt, source_file=str(path), exact_length=exact)


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
