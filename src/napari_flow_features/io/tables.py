"""Feature tables (DESIGN.md): CSV or Parquet, with run metadata kept beside or inside the file.

Columns: ``frame``, then the landmark identity (``landmark``, or ``individual`` + ``keypoint``), ``x``,
``y`` when points are involved, then features. Metadata travels in ``DataFrame.attrs``; CSV keeps it
in a JSON sidecar ``<file>.json`` that records the CSV's SHA-256 (the two are made visible together
and checked against each other on read, see ``io/_atomic.py`` and docs/reliability.md), Parquet in
the file's schema metadata under ``napari_flow_features`` (a streamed table: the file's key-value
metadata; one file, with page checksums). Reading checks the numbers: ``frame`` holds whole numbers,
``x``, ``y``, ``confidence`` and the feature columns numbers (NaN allowed), and the metadata fields
this package reads have their types.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError, CorruptFileError, MismatchedMetadataError
from ._atomic import atomic_write_path, verify_sidecar, write_with_sidecar

TABLE_EXTENSIONS = (".csv", ".parquet")
PARQUET_META_KEY = b"napari_flow_features"
_MAX_INLINE_ARRAY = 4096


def sidecar_path(path: str | os.PathLike) -> Path:
    """Name the JSON metadata sidecar that goes with a CSV table.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV table.

    Returns
    -------
    pathlib.Path
        ``<table>.csv.json`` beside the table.
    """
    path = Path(path)
    return path.with_name(path.name + ".json")


def jsonable_metadata(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Reduce metadata to what JSON holds.

    Parameters
    ----------
    meta : dict or None
        Run metadata, possibly holding arrays, paths and other objects.

    Returns
    -------
    dict
        Small arrays become lists, large ones (e.g. a ground-truth flow field) are dropped and
        named under ``omitted_from_metadata``, paths become strings, other objects their ``str``.
    """
    out: dict[str, Any] = {}
    omitted: list[str] = []
    for key, value in (meta or {}).items():
        converted = _jsonable(value)
        if converted is _OMIT:
            omitted.append(str(key))
        else:
            out[str(key)] = converted
    if omitted:
        out["omitted_from_metadata"] = omitted
    return out


_OMIT = object()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= _MAX_INLINE_ARRAY else _OMIT
    if isinstance(value, (os.PathLike,)):
        return os.fspath(value)
    if isinstance(value, dict):
        return {
            str(k): v for k, v in ((k, _jsonable(v)) for k, v in value.items()) if v is not _OMIT
        }
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return _OMIT if any(v is _OMIT for v in items) else items
    if hasattr(value, "shape"):  # lazy arrays
        return _OMIT
    return str(value)


def write_table(df: pd.DataFrame, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write a feature table atomically as ``.csv`` (plus JSON sidecar) or ``.parquet``.

    Parameters
    ----------
    df : pandas.DataFrame
        The table (DESIGN.md columns); ``df.attrs`` is stored as metadata.
    path : str or os.PathLike
        The output, ``.csv`` or ``.parquet``.
    metadata : dict, optional
        More metadata, overriding ``df.attrs`` key by key.

    Returns
    -------
    pathlib.Path
        The written table.

    Raises
    ------
    BadInputError
        The suffix is not a table format, or the table has no ``frame`` column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise BadInputError(f"Feature tables are saved as .csv or .parquet, not {suffix!r}: {path}")
    if "frame" not in df.columns:
        raise BadInputError(f"A feature table needs a 'frame' column; got {list(df.columns)[:8]}")
    meta = jsonable_metadata({**df.attrs, **(metadata or {})})
    plain = pd.DataFrame(df)
    plain.attrs = {}
    if suffix == ".csv":
        write_with_sidecar(
            path, sidecar_path(path), lambda tmp: plain.to_csv(tmp, index=False), meta
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(plain, preserve_index=False)
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[PARQUET_META_KEY] = json.dumps(meta).encode()
        table = table.replace_schema_metadata(schema_meta)
        with atomic_write_path(path) as tmp:
            pq.write_table(table, tmp, write_page_checksum=True)
    return path


def _parse_metadata(raw: bytes, where: Path, message: str) -> dict:
    """Parse and check table metadata from JSON bytes.

    ``message`` (with ``{exc}`` and ``{where}``) names the problem when it is not JSON.
    """
    try:
        meta = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(message.format(exc=exc, where=where)) from exc
    return check_table_metadata(meta, where)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (or a hand-made landmark table).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv`` (with or without its JSON sidecar) or ``.parquet`` table.

    Returns
    -------
    pandas.DataFrame
        The table, with its metadata in ``df.attrs``.

    Raises
    ------
    BadInputError
        The file is missing, a folder, of an unknown type or has no ``frame`` column.
    CorruptFileError
        The file is unreadable, a numeric column holds a non-number (the column and row are named)
        or a metadata field has the wrong type.
    MismatchedMetadataError
        A CSV's sidecar was written for other data.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"Expected a table file, got a folder: {path}")
    if not path.is_file():
        raise BadInputError(f"Feature table not found: {path}")
    suffix = path.suffix.lower()
    meta: Any = {}
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
            side = sidecar_path(path)
            if side.is_file():
                meta = _parse_metadata(
                    side.read_bytes(), side,
                    "Metadata sidecar is not valid JSON ({exc}); delete it to read the table "
                    "without metadata: {where}",
                )  # fmt: skip
                verify_sidecar(path, meta, side)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, page_checksum_verification=True)
            raw = (table.schema.metadata or {}).get(PARQUET_META_KEY)
            if raw is None:  # a streamed table keeps it in the file's key-value metadata
                raw = (pq.read_metadata(path).metadata or {}).get(PARQUET_META_KEY)
            if raw:
                meta = _parse_metadata(
                    raw, path,
                    f"Parquet metadata {PARQUET_META_KEY.decode()!r} is not valid JSON "
                    "({exc}): {where}",
                )  # fmt: skip
            df = table.to_pandas()
        else:
            raise BadInputError(f"Unknown table type {suffix!r} (expected .csv, .parquet): {path}")
    except BadInputError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        raise CorruptFileError(f"Cannot read table ({type(exc).__name__}: {exc}): {path}") from exc
    if "frame" not in df.columns:
        raise BadInputError(
            f"Not a feature or landmark table: no 'frame' column (columns: {list(df.columns)[:8]}): {path}"
        )
    check_numeric_columns(df, path, first_line=2 if suffix == ".csv" else None)
    check_metadata_matches_table(df, meta, sidecar_path(path) if suffix == ".csv" else path)
    df.attrs = meta
    return df


def check_metadata_matches_table(df: pd.DataFrame, meta: dict[str, Any], source: Any) -> None:
    """Check that a table's metadata describes its columns and agrees with itself.

    The channel count must equal the number of feature columns, and the end point and channel
    count the metadata records for the run must be those of the model it records as loaded.

    Parameters
    ----------
    df : pandas.DataFrame
        The table as read.
    meta : dict
        Its metadata (checked by :func:`check_table_metadata`).
    source : object
        What the message names as the metadata's file.

    Raises
    ------
    MismatchedMetadataError
        The metadata contradicts the table or itself; the message names both values.
    """
    hint = "the table was edited or the metadata belongs to another table"
    columns = feature_columns(df)
    channels = meta.get("channels")
    if _is_int(channels) and columns and len(columns) != channels:
        raise MismatchedMetadataError(
            f"Table metadata says {channels} channels but the table has {len(columns)} feature "
            f"columns ({columns[0]} … {columns[-1]}): {hint}: {source}"
        )
    loaded = meta.get("loaded_model")
    if not isinstance(loaded, dict):
        return
    for key in ("endpoint", "channels"):
        ran, model = meta.get(key), loaded.get(key)
        if ran is not None and model is not None and ran != model:
            raise MismatchedMetadataError(
                f"Table metadata contradicts itself: {key} is {ran!r} but the loaded model's "
                f"{key} is {model!r}: {hint}: {source}"
            )


_NUMERIC_KEYS = ("x", "y", "confidence")


def check_numeric_columns(
    df: pd.DataFrame, source: Any = "table", first_line: int | None = None
) -> None:
    """Check that a table's key and feature columns hold numbers.

    ``frame`` must hold whole numbers; ``x``, ``y``, ``confidence`` and the feature columns numbers
    or gaps (empty cells, NaN). Text columns of numbers are converted in place.

    Parameters
    ----------
    df : pandas.DataFrame
        The table, converted in place where a column holds numbers as text.
    source : object, default "table"
        What the message names as the table (usually its path).
    first_line : int, optional
        The file line of row 0 (2 for a CSV with a header), to name the line as well as the row.

    Raises
    ------
    CorruptFileError
        A column holds something else; the message names the column, the row and the value.
    """
    numeric = [c for c in _NUMERIC_KEYS if c in df.columns] + feature_columns(df)
    check_columns(df, ["frame"], numeric, source, first_line)


def check_columns(
    df: pd.DataFrame,
    whole: list[str],
    numeric: list[str],
    source: Any = "table",
    first_line: int | None = None,
) -> None:
    """Check that columns hold whole numbers or numbers.

    Parameters
    ----------
    df : pandas.DataFrame
        The table, converted in place where a checked column holds numbers as text.
    whole : list of str
        Columns that must hold finite whole numbers (no gaps).
    numeric : list of str
        Columns that must hold numbers or gaps (NaN).
    source : object, default "table"
        What the message names as the table (usually its path).
    first_line : int, optional
        The file line of row 0, to name the line as well as the row.

    Raises
    ------
    CorruptFileError
        A column is duplicated or holds something else; the message names the column, the row and
        the value.
    """
    for name in [*whole, *numeric]:
        column = df[name]
        if isinstance(column, pd.DataFrame):
            raise CorruptFileError(f"Column {name!r} appears more than once: {source}")
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
            raise CorruptFileError(
                f"Column {name!r} must hold numbers, not {column.dtype}: {source}"
            )
        if pd.api.types.is_integer_dtype(column) or (
            name not in whole and pd.api.types.is_float_dtype(column)
        ):
            continue  # numbers already (NaN is a gap): nothing to check, no copy of wide tables
        values = pd.to_numeric(column, errors="coerce")
        if name in whole:
            finite = np.isfinite(values.to_numpy(float))
            rounded = np.round(np.where(finite, values.to_numpy(float), 0))
            bad = pd.Series(~finite | ~np.isclose(np.where(finite, values, 0), rounded))
            what = "a whole number"
        else:
            bad = values.isna() & column.notna()
            what = "a number"
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            where = f"row {row}" + (f" (line {row + first_line})" if first_line else "")
            raise CorruptFileError(
                f"Column {name!r} {where} holds {column.iloc[row]!r}, not {what} "
                f"({int(bad.sum())} such rows): {source}"
            )
        if column.dtype == object:
            df[name] = values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Metadata fields this package reads back, and what each must be.
_META_TYPES: dict[str, tuple[str, Any]] = {
    "frame_shape": (
        "a list of 2 or 3 positive whole numbers",
        lambda v: isinstance(v, list) and len(v) in (2, 3) and all(_is_int(i) and i > 0 for i in v),
    ),
    "landmark_key": (
        "a column name or a list of column names (text)",
        lambda v: (
            (isinstance(v, str) and v != "")
            or (isinstance(v, list) and v and all(isinstance(i, str) and i for i in v))
        ),
    ),
    "endpoint": ("an end point name (text)", lambda v: isinstance(v, str)),
    "clip_length": ("a whole number ≥ 1", lambda v: _is_int(v) and v >= 1),
    "stride": ("a whole number ≥ 1", lambda v: _is_int(v) and v >= 1),
    "data_sha256": (
        "a 64-digit hex SHA-256",
        lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
    ),
    "data_bytes": ("a whole number ≥ 0", lambda v: _is_int(v) and v >= 0),
    "data_file": ("a file name (text)", lambda v: isinstance(v, str)),
    "channels": ("a whole number ≥ 1", lambda v: _is_int(v) and v >= 1),
    "loaded_model": ("an object of fields", lambda v: isinstance(v, dict)),
}


def check_table_metadata(meta: Any, source: Any = "metadata") -> dict[str, Any]:
    """Check that table metadata is a JSON object whose known fields have the right types.

    Parameters
    ----------
    meta : object
        Parsed metadata (from a sidecar or a Parquet file).
    source : object, default "metadata"
        What the message names as the metadata's file.

    Returns
    -------
    dict
        ``meta`` itself.

    Raises
    ------
    CorruptFileError
        ``meta`` is not an object, or a known field has the wrong type (a hand-edited sidecar, a
        file of another kind); the message names the field.
    """
    if not isinstance(meta, dict):
        raise CorruptFileError(
            f"Table metadata must be a JSON object of fields, not {type(meta).__name__}: {source}"
        )
    for key, (what, ok) in _META_TYPES.items():
        if key in meta and meta[key] is not None and not ok(meta[key]):
            raise CorruptFileError(
                f"Table metadata field {key!r} must be {what}, not {meta[key]!r}: {source}"
            )
    return meta


def feature_columns(table: Any) -> list[str]:
    """List the feature columns of a table.

    Parameters
    ----------
    table : pandas.DataFrame or iterable of str
        A table, or its column names.

    Returns
    -------
    list of str
        ``f0000 … f{C-1}`` (and a two-stream table's ``flow_f…``, ``rgb_f…``; DESIGN.md), in
        table order; keys (``frame``, ``landmark``, ``x``, ``y``) and other columns are not.
    """
    columns = table.columns if isinstance(table, pd.DataFrame) else table
    return [c for c in columns if isinstance(c, str) and _FEATURE_COLUMN.fullmatch(c)]


#: ``f0000`` …, and a two-stream table's ``flow_f0000`` …, ``rgb_f0000`` … (DESIGN.md).
_FEATURE_COLUMN = re.compile(r"(flow_|rgb_)?f\d+")


def points_to_table(
    data: np.ndarray, features: pd.DataFrame | None = None, metadata: dict | None = None
) -> pd.DataFrame:
    """Convert a napari Points layer's ``(t, y, x)`` data and features to a DESIGN.md table.

    The landmark identity comes from the features by :func:`~.landmark_key.landmark_key`
    (``track_id``/``label`` → ``landmark``; ``individual``+``keypoint`` or napari-deeplabcut's
    ``id``+``label`` → ``individual``, ``keypoint``).

    Parameters
    ----------
    data : numpy.ndarray
        ``(N, 3)`` point coordinates ``(t, y, x)``.
    features : pandas.DataFrame, optional
        The layer's features, one row per point.
    metadata : dict, optional
        Becomes the table's ``attrs``.

    Returns
    -------
    pandas.DataFrame
        ``frame``, the identity columns, ``x``, ``y``, then the other features;
        ``attrs["landmark_key"]`` records the original identity column names so
        :func:`table_to_points` gives them back.

    Raises
    ------
    BadInputError
        ``data`` is not ``(N, 3)``, or the features have another number of rows.
    """
    from .landmark_key import landmark_key

    data = np.asarray(data, dtype=float)
    if data.ndim != 2 or data.shape[1] != 3:
        raise BadInputError(
            f"Points must be (t, y, x) rows to save as a feature table; got shape {data.shape}"
        )
    features = pd.DataFrame() if features is None else pd.DataFrame(features).reset_index(drop=True)
    if len(features) not in (0, len(data)):
        raise BadInputError(f"{len(features)} feature rows for {len(data)} points")
    table = pd.DataFrame({"frame": np.round(data[:, 0]).astype(np.int64)})
    key = landmark_key(features)
    if key is not None:
        for source, output in zip(key.source, key.output, strict=True):
            table[output] = features[source].to_numpy()
    table["x"] = data[:, 2]
    table["y"] = data[:, 1]
    drop = {"frame", "x", "y", *(key.source if key else ()), *(key.output if key else ())}
    rest = features.drop(columns=[c for c in features.columns if c in drop])
    table = pd.concat([table, rest], axis=1)
    table.attrs = dict(metadata or {})
    if key is not None:
        table.attrs["landmark_key"] = key.source[0] if len(key.source) == 1 else list(key.source)
    return table


def table_to_points(df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Convert a table back to Points layer data; the inverse of :func:`points_to_table`.

    Parameters
    ----------
    df : pandas.DataFrame
        A feature or landmark table. One without ``x``/``y`` (Global Average Pooling) places its
        points at the frame centre when its metadata records ``frame_shape``.

    Returns
    -------
    data : numpy.ndarray
        ``(N, 3)`` point coordinates ``(t, y, x)``.
    features : pandas.DataFrame
        The remaining columns, identity columns renamed to what they were called on the layer.

    Raises
    ------
    BadInputError
        The table has neither ``x``/``y`` nor a ``frame_shape`` (missing or null).
    """
    if "x" in df.columns and "y" in df.columns:
        y, x = df["y"].to_numpy(float), df["x"].to_numpy(float)
    elif df.attrs.get("frame_shape") is not None:
        h, w = df.attrs["frame_shape"][:2]
        y, x = np.full(len(df), (h - 1) / 2.0), np.full(len(df), (w - 1) / 2.0)
    else:
        given = "is null" if "frame_shape" in df.attrs else "is missing"
        raise BadInputError(
            f"Table has no 'x', 'y' columns and its metadata's 'frame_shape' {given}, so its "
            "rows cannot be placed as points (a Global Average Pooling table needs the frame "
            "size to put each row at the frame centre)"
        )
    data = np.stack([df["frame"].to_numpy(float), y, x], axis=1)
    features = df.drop(columns=[c for c in ("frame", "x", "y") if c in df.columns]).reset_index(
        drop=True
    )
    # The identity columns get the names they had on the layer (our own: track_id).
    original = df.attrs.get("landmark_key", "track_id")
    if "landmark" in features.columns and isinstance(original, str):
        features = features.rename(columns={"landmark": original})
    elif isinstance(original, list) and {"individual", "keypoint"} <= set(features.columns):
        features = features.rename(
            columns=dict(zip(("individual", "keypoint"), original, strict=True))
        )
    return data, features
