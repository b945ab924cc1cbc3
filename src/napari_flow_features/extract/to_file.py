"""One video's (or flow file's) features streamed straight into a table file.

The library side of ``flow-features extract SOURCE -o FILE``: rows go to a Parquet or CSV file
block by block as the encoder produces them (bounded memory on hour-long videos), or into an
``.npz`` of ``frame`` and ``features``; the file appears at its path only when complete.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ExtractionSettings
from ..errors import BadInputError

logger = logging.getLogger(__name__)

#: The suffixes an extraction can be written to.
OUTPUT_SUFFIXES = (".parquet", ".csv", ".npz")


@dataclass(frozen=True)
class FileExtraction:
    """What :func:`extract_to_file` wrote.

    Attributes
    ----------
    output : Path
        The feature file.
    rows : int
        Rows written.
    metadata : dict
        The run's metadata (end point, windowing, weights, counts, speed...).
    maps_path : Path or None
        The feature maps ``.npy`` (post-encoder ``none``).
    maps_shape : tuple or None
        Their shape.
    """

    output: Path
    rows: int
    metadata: dict[str, Any]
    maps_path: Path | None
    maps_shape: tuple[int, ...] | None


def check_output_path(output: str | os.PathLike[str]) -> Path:
    """An extraction's output: a ``.parquet``, ``.csv`` or ``.npz`` in an existing folder.

    Parameters
    ----------
    output : str or PathLike
        The feature file to write.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    BadInputError
        The suffix is not one of :data:`OUTPUT_SUFFIXES`, or the folder does not exist.
    """
    path = Path(output)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise BadInputError(f"--output must end in .parquet, .csv or .npz, not {path.suffix!r}")
    if not path.parent.is_dir():
        raise BadInputError(f"Output folder does not exist: {path.parent}")
    return path


def maps_path_for(output: str | os.PathLike[str], post_encoder: str) -> Path | None:
    """Where post-encoder ``none`` writes its feature maps: ``<output stem>_maps.npy``.

    Parameters
    ----------
    output : str or PathLike
        The feature file.
    post_encoder : str
        ``none``, ``gap`` or ``point``.

    Returns
    -------
    Path or None
        The maps path, ``None`` for the other post-encoders.
    """
    path = Path(output)
    return path.with_name(path.stem + "_maps.npy") if post_encoder == "none" else None


def extract_to_file(
    source: Any,
    extractor: Any,
    output: str | os.PathLike[str],
    settings: ExtractionSettings | None = None,
    **kwargs: Any,
) -> FileExtraction:
    """Run :func:`~napari_flow_features.extract.pipeline.extract_features` into ``output``.

    Parquet and CSV are written as the rows arrive and removed if the run fails or is
    cancelled; ``.npz`` holds ``frame`` and ``features`` (float32), written at the end.

    Parameters
    ----------
    source : path or array_like
        A video (flow is computed) or flow (``.npy``, ``.npz``, ``.flo`` folder).
    extractor : DynamicFeatureExtractor
        The encoder.
    output : str or PathLike
        The feature file (:func:`check_output_path`).
    settings : ExtractionSettings, optional
        The run's settings; post-encoder ``none`` also writes the maps (:func:`maps_path_for`).
    **kwargs
        The hooks of ``extract_features`` (points, progress, flow_progress, status, cancel) and
        option shortcuts (``post_encoder="none"``, ``start=10``...).

    Returns
    -------
    FileExtraction
        The file, its row count and the run's metadata.
    """
    from ..io.table_stream import TableStreamWriter
    from .pipeline import extract_features
    from .plan import run_settings

    output = check_output_path(output)
    hooks = {k: kwargs.pop(k) for k in list(kwargs) if k in _HOOKS}
    settings = run_settings(extractor, settings)
    if kwargs:
        settings = settings.replace(**kwargs)
    maps_path = maps_path_for(output, settings.post_encoder)
    if maps_path is not None:
        settings = settings.replace(maps_path=str(maps_path))
    sink = None if output.suffix.lower() == ".npz" else TableStreamWriter(output)
    try:
        result = extract_features(
            source, extractor, settings, row_sink=sink.write if sink is not None else None,
            **hooks,
        )  # fmt: skip
        meta = result.metadata
        if sink is not None:
            sink.close(meta)
            rows = sink.rows
        else:
            rows = _write_npz(output, result.table, meta)
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    logger.info("wrote %s: %d rows", output, rows)
    maps_shape = tuple(result.feature_maps.shape) if maps_path is not None else None
    return FileExtraction(output, rows, meta, maps_path, maps_shape)


def _write_npz(output: Path, table: Any, meta: dict[str, Any]) -> int:
    """``frame``, ``features`` (float32), every other column and the metadata, atomically.

    Landmark identity (``landmark`` or ``individual``/``keypoint``), ``x``, ``y`` and the rest
    travel as arrays of their own (text as fixed-width Unicode, readable without pickle), and
    ``metadata`` as one JSON text: a point table's rows keep their landmark.
    """
    import json

    import numpy as np

    from ..io._atomic import atomic_write_path
    from ..io.tables import feature_columns, jsonable_metadata

    cols = feature_columns(table)
    arrays: dict[str, Any] = {
        "frame": table["frame"].to_numpy(),
        "features": table[cols].to_numpy(np.float32) if cols else np.zeros((len(table), 0)),
        "feature_names": np.asarray(cols, dtype=str),
        "metadata": np.asarray(json.dumps(jsonable_metadata(meta))),
    }
    for name in table.columns:
        if name in cols or name in arrays:
            continue
        values = table[name].to_numpy()
        arrays[name] = values.astype(str) if values.dtype == object else values
    with atomic_write_path(output) as tmp:
        np.savez(tmp, **arrays)
    return len(table)


#: Keywords of :func:`extract_to_file` that are hooks of the run, not settings.
_HOOKS = ("points", "progress", "flow_progress", "status", "cancel")
