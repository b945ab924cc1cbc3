"""Optical-flow files: Middlebury ``.flo``, ``.npy``/``.npz`` arrays and folders of ``.flo`` files.

Flow follows DESIGN.md: float32, ``[..., 0]`` = dx, ``[..., 1]`` = dy, pixels per frame. A sequence is
``(T, H, W, 2)``; a single field ``(H, W, 2)``.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, CorruptFileError
from ._atomic import atomic_write_path, verify_sidecar
from ._lazy import LazyArray

FLO_MAGIC = np.float32(202021.25)
FLOW_EXTENSIONS = (".flo", ".npy", ".npz")
_MAX_SIDE = 1 << 15


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read one Middlebury ``.flo`` field as ``(H, W, 2)`` float32."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Flow file not found: {path}")
    with open(path, "rb") as fh:
        header = fh.read(12)
        if len(header) < 12:
            raise CorruptFileError(
                f"Truncated .flo file (header is {len(header)} of 12 bytes): {path}"
            )
        magic = np.frombuffer(header[:4], "<f4")[0]
        if magic != FLO_MAGIC:
            raise CorruptFileError(
                f"Not a Middlebury .flo file: magic number {magic!r}, expected 202021.25: {path}"
            )
        w, h = (int(v) for v in np.frombuffer(header[4:12], "<i4"))
        if not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE):
            raise CorruptFileError(f"Corrupt .flo header: width {w}, height {h}: {path}")
        expected = h * w * 2 * 4
        data = fh.read(expected + 1)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise CorruptFileError(
            f"Corrupt .flo file: data is {what} ({len(data)} bytes for {w}x{h}, "
            f"expected {expected}): {path}"
        )
    return np.frombuffer(data, "<f4").reshape(h, w, 2).astype(np.float32)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> Path:
    """Write one ``(H, W, 2)`` field as Middlebury ``.flo`` (atomic)."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise BadInputError(f".flo holds one (H, W, 2) flow field; got shape {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        raise BadInputError(f"Flow must be floating point; got {flow.dtype}")
    h, w = flow.shape[:2]
    path = Path(path)
    with atomic_write_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(np.array([FLO_MAGIC], "<f4").tobytes())
        fh.write(np.array([w, h], "<i4").tobytes())
        fh.write(np.ascontiguousarray(flow, dtype="<f4").tobytes())
    return path


def validate_flow_array(arr: Any, source: str | os.PathLike = "array") -> None:
    """Raise :class:`BadInputError` unless ``arr`` is float ``(H, W, 2)`` or ``(T, H, W, 2)``."""
    dtype = np.dtype(arr.dtype)
    if dtype.kind == "O":
        raise BadInputError(f"Flow must be a numeric array, not an object array: {source}")
    if not np.issubdtype(dtype, np.floating):
        raise BadInputError(
            f"Flow must be floating point (pixels per frame); got {dtype}: {source}"
        )
    shape = tuple(arr.shape)
    if len(shape) not in (3, 4) or shape[-1] != 2:
        raise BadInputError(
            f"Flow must have shape (H, W, 2) or (T, H, W, 2) with dx, dy last; got {shape}: {source}"
        )
    if 0 in shape:
        raise BadInputError(f"Flow is empty (shape {shape}): {source}")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "object" in str(exc).lower():
            raise BadInputError(
                f"Refusing an object (pickled) array; expected a numeric array: {path}"
            ) from exc
        raise CorruptFileError(f"Corrupt .npy file ({exc}): {path}") from exc
    except (OSError, EOFError) as exc:
        raise CorruptFileError(f"Corrupt or truncated .npy file ({exc}): {path}") from exc


def read_npy(path: str | os.PathLike, what: str = "Array", verify: bool = True) -> np.ndarray:
    """A numeric ``.npy`` array, memory-mapped, never unpickled.

    A ``<file>.json`` sidecar beside it (``extract --post-encoder none`` writes one for its
    feature maps) is checked like a flow's (:func:`read_flow_sidecar`).

    Parameters
    ----------
    path
        The ``.npy`` file.
    what
        What the array is, for messages ("Activations file not found: …").
    verify
        Check the SHA-256 its sidecar records (``False``: the size only).

    Returns
    -------
    numpy.ndarray
        A read-only memory map.

    Raises
    ------
    BadInputError
        A missing, corrupt, object, text or empty array (the message starts with ``what``);
        :class:`~napari_flow_features.errors.MismatchedMetadataError` when its sidecar was
        written for other data.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{what} file not found: {path}")
    arr = _load_npy(path)
    read_flow_sidecar(path, verify)
    if arr.dtype.kind not in "biuf":
        raise BadInputError(f"{what} must be numbers, not {arr.dtype}: {path}")
    if arr.size == 0:
        raise BadInputError(f"{what} is empty (shape {arr.shape}): {path}")
    return arr


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            key = "flow" if "flow" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                what = "no arrays" if not keys else f"arrays {keys} but none named 'flow'"
                raise BadInputError(
                    f".npz must hold one array or one named 'flow'; it holds {what}: {path}"
                )
            try:
                return npz[key]
            except ValueError as exc:
                if "pickle" in str(exc) or "object" in str(exc):
                    raise BadInputError(
                        f"Refusing an object (pickled) array {key!r}; flow must be a float array: "
                        f"{path}"
                    ) from exc
                raise CorruptFileError(f"Corrupt array {key!r} in .npz ({exc}): {path}") from exc
    except BadInputError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(f"Corrupt .npz file ({type(exc).__name__}: {exc}): {path}") from exc


def _natural_key(p: Path) -> list[int | str]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


class FloFolder(LazyArray):
    """A folder of ``.flo`` files as a lazy ``(T, H, W, 2)`` float32 array (natural sort order).

    Parameters
    ----------
    folder
        The folder; its ``*.flo`` files are the frames, in natural order (``2.flo`` before
        ``10.flo``). Only the first is read on opening.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.files = sorted(self.folder.glob("*.flo"), key=_natural_key)
        if not self.files:
            raise BadInputError(f"No .flo files in folder: {self.folder}")
        first = read_flo(self.files[0])
        self._frame_shape = first.shape
        self.shape = (len(self.files), *self._frame_shape)

    def _field(self, i: int) -> np.ndarray:
        f = read_flo(self.files[i])
        if f.shape != self._frame_shape:
            raise BadInputError(
                f"Flow fields differ in size: {self.files[i].name} is {f.shape[:2]}, "
                f"{self.files[0].name} is {self._frame_shape[:2]} (folder {self.folder})"
            )
        return f

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read the fields ``key`` selects (only those files are read)."""
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            return self._field(int(first) % len(self))[rest]
        idx = range(len(self))[first] if isinstance(first, slice) else np.asarray(first).ravel()
        out = (
            np.stack([self._field(int(i)) for i in idx])
            if len(idx)
            else np.empty((0, *self._frame_shape), np.float32)
        )
        return out[(slice(None), *rest)]


def read_flow(path: str | os.PathLike, verify: bool = True) -> Any:
    """Open flow lazily, checked.

    ``.flo`` → ``(H, W, 2)``; ``.npy`` (memory-mapped), ``.npz`` → as stored; a folder of
    ``.flo`` files → ``(T, H, W, 2)``. Bad files raise :class:`BadInputError`.

    A ``<file>.json`` sidecar that records the flow's SHA-256 is checked against the file
    (``verify=False``: its size only, for very large files read often).

    Parameters
    ----------
    path
        The flow file or folder.
    verify
        Check the SHA-256 a sidecar records (``False``: the size only).

    Returns
    -------
    array-like
        The flow, float32 pixels per frame (uint8 kept flow decoded on reading).
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"Flow file not found: {path}")
    if path.is_dir():
        return FloFolder(path)
    suffix = path.suffix.lower()
    if suffix == ".flo":
        return read_flo(path)
    if suffix == ".npy":
        arr = _load_npy(path)
        if arr.dtype == np.uint8:
            read_flow_sidecar(path, verify)  # a valid sidecar written for this file
            flow = QuantisedFlow(arr, _quantisation_bound(path))
            validate_flow_array(flow, path)
            return flow
    elif suffix == ".npz":
        arr = _load_npz(path)
    else:
        raise BadInputError(
            f"Unknown flow file type {suffix!r} (expected .flo, .npy, .npz): {path}"
        )
    validate_flow_array(arr, path)
    read_flow_sidecar(path, verify)
    return arr


def flow_sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON metadata beside a flow file: ``<file>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_flow_sidecar(path: str | os.PathLike, verify: bool = True) -> dict[str, Any] | None:
    """The metadata beside flow (or feature-map) file ``path``, checked.

    The sidecar ``<file>.json`` must be a JSON object with fields of the right types and, when
    it records the data's SHA-256
    (:func:`~napari_flow_features.io._atomic.atomic_write_with_sidecar`), be written for this
    very file.

    Parameters
    ----------
    path
        The data file.
    verify
        Check the recorded SHA-256 (``False``: the size only).

    Returns
    -------
    dict or None
        The metadata; None when there is no sidecar.

    Raises
    ------
    CorruptFileError
        Not JSON, not an object, a field of the wrong type.
    MismatchedMetadataError
        Written for other data (a changed file, or a run that ended between the two renames).
    """
    import json

    side = flow_sidecar_path(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Flow metadata is not valid JSON ({exc}): {side}") from exc
    if not isinstance(meta, dict):
        raise CorruptFileError(
            f"Flow metadata must be a JSON object of fields, not {type(meta).__name__}: {side}"
        )
    from .tables import check_table_metadata

    check_table_metadata(meta, side)
    verify_sidecar(path, meta, side, full=verify)
    return meta


class QuantisedFlow(LazyArray):
    """Flow kept as uint8 (``extract --keep-flow --keep-flow-dtype uint8``), decoded on read.

    ``q`` in 0..255 stands for ``q / 255 * 2 * bound - bound`` px (DeepMind's quantisation).

    Parameters
    ----------
    codes
        The stored uint8 array.
    bound
        The quantisation bound in pixels (the sidecar's ``flow_quantisation_bound``).
    """

    dtype = np.dtype(np.float32)

    def __init__(self, codes: np.ndarray, bound: float) -> None:
        self.codes, self.bound = codes, float(bound)
        self.shape = tuple(codes.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Decode the fields ``key`` selects to float32 pixels per frame."""
        q = np.asarray(self.codes[key], np.float32)
        return q * np.float32(2 * self.bound / 255) - np.float32(self.bound)


def _quantisation_bound(path: Path) -> float:
    """The bound a uint8 flow file was quantised with (its JSON sidecar says so)."""
    side = path.with_name(path.name + ".json")
    try:
        spec = json.loads(side.read_text())
        bound = float(spec["flow_quantisation_bound"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(
            f"Flow must be floating point (pixels per frame); got uint8 without the sidecar "
            f"{side.name} (flow_quantisation_bound) that a --keep-flow uint8 file has: {path}"
        ) from exc
    if not bound > 0:
        raise BadInputError(f"flow_quantisation_bound must be positive in {side}")
    return bound


def write_flow_npy(path: str | os.PathLike, flow: Any) -> Path:
    """Write a flow field or sequence as float32 ``.npy``.

    Atomic; streamed frame by frame with buffered writes, free space checked first.

    Parameters
    ----------
    path
        The ``.npy`` to write.
    flow
        ``(H, W, 2)`` or ``(T, H, W, 2)`` float flow (any array-like, read frame by frame).

    Returns
    -------
    Path
        ``path``.
    """
    from .npy_stream import NpyWriter

    validate_flow_array(flow, path)
    path = Path(path)
    shape = tuple(int(n) for n in flow.shape)
    with NpyWriter(path, shape, np.float32) as out:
        if len(shape) == 4:
            for t in range(shape[0]):
                out.write(np.asarray(flow[t], np.float32)[None])
        else:
            out.write(np.asarray(flow, np.float32))
    return path
