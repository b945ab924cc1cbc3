"""Per-frame feature tables of flow files on disk (global average pooling), one table per file.

The library side of ``flow-features model test``: an encoder (the config's, or a registry model's)
run over every flow file of a folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def use_encoder_of(extractor: Any, model: Any) -> None:
    """Make ``extractor`` run ``model``'s encoder: a classifier's nested encoder, else the model.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        Changed in place: its model, and its compiled call dropped so the new model is used.
    model : keras.Model
        A classifier from ``model train`` (the encoder is its second layer) or an encoder.
    """
    extractor.model = model.layers[1] if isinstance(model.layers[1], type(model)) else model
    extractor._call = None


def table_stem(path: Path) -> str:
    """The name a flow file's outputs are called by (a file's stem, a ``.flo`` folder's name).

    Parameters
    ----------
    path : Path
        A flow file or a folder of ``.flo`` files.

    Returns
    -------
    str
        The stem.
    """
    return path.stem if path.is_file() else path.name


def write_gap_tables(
    extractor: Any,
    data_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    file_format: str = "parquet",
    limit: int | None = None,
    progress_for: Callable[[Path], Progress | None] | None = None,
) -> Iterator[tuple[Path, Path, Any]]:
    """Write ``<stem>_features.<format>`` for every flow file of ``data_dir``, one at a time.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        The encoder (see :func:`use_encoder_of` for a registry model).
    data_dir : str or PathLike
        Folder of flow files (``.npy``, ``.npz``, ``.flo`` folders), in natural order.
    output_dir : str or PathLike
        Folder for the tables (created).
    file_format : str
        ``"parquet"`` or ``"csv"``.
    limit : int, optional
        Only the first ``limit`` files.
    progress_for : callable, optional
        ``progress_for(flow_file)`` returns that file's ``progress(done, total)`` callback.

    Yields
    ------
    flow_file : Path
        The flow file.
    table_path : Path
        Its written table.
    table : pandas.DataFrame
        The table (``frame``, ``f0000``...; metadata in ``attrs``).
    """
    from ..flow.sequences import _open_sequence, find_flow_files
    from ..io._atomic import ensure_output_dir
    from ..io.tables import write_table
    from .per_frame import gap_feature_table

    files = find_flow_files(data_dir)
    if limit is not None:
        files = files[:limit]
    out = ensure_output_dir(output_dir)
    for path in files:
        logger.info("encoding %s", path)
        progress = progress_for(path) if progress_for is not None else None
        table = gap_feature_table(extractor, _open_sequence(path), str(path), progress=progress)
        target = write_table(table, out / f"{table_stem(path)}_features.{file_format}")
        yield path, target, table
