"""Write a feature table block by block (bounded memory on hour-long videos), atomically.

Rows go to a hidden temporary file beside the output; ``close(metadata)`` adds the run metadata the
same way :func:`~napari_flow_features.io.tables.write_table` does (Parquet: the file's key-value
metadata, pages with checksums; CSV: the JSON sidecar with the table's SHA-256, the two made visible
together by ``io/_atomic.py``'s ``atomic_write_with_sidecar``) so
:func:`~napari_flow_features.io.tables.read_table` reads the result like any other table and refuses
a CSV and sidecar that do not belong together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import BadInputError
from ._atomic import (
    _translate,
    atomic_write_with_sidecar,
    check_output_folder,
    check_output_name,
    fsync_dir,
    partial_path,
)
from .tables import PARQUET_META_KEY, TABLE_EXTENSIONS, jsonable_metadata, sidecar_path


class TableStreamWriter:
    """Write a feature table in blocks to a temporary file, then move it into place.

    ``write(block)`` appends rows; ``close(metadata)`` makes the table appear at ``path``;
    ``discard()`` (or an exception inside ``with``) removes the temporary file.

    Parameters
    ----------
    path : str or os.PathLike
        The final ``.csv`` or ``.parquet`` table.

    Raises
    ------
    BadInputError
        The suffix is not a table format, or the output folder or name is unusable.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in TABLE_EXTENSIONS:
            raise BadInputError(
                f"Feature tables are saved as .csv or .parquet, not {self.suffix!r}: {self.path}"
            )
        check_output_folder(self.path.parent)  # missing, a file, or not writable: named
        check_output_name(self.path)
        self.tmp = partial_path(self.path)
        self.rows = 0
        self._writer: Any = None
        self._columns: list[str] | None = None

    def write(self, block: pd.DataFrame) -> None:
        """Append rows.

        Parameters
        ----------
        block : pandas.DataFrame
            Rows with the same columns as the first block (reordered to match if needed).

        Raises
        ------
        OutOfSpaceError
            The disk is full (the message names the table).
        """
        try:
            self._write(block)
        except OSError as exc:
            raise _translate(exc, self.path) from exc

    def _write(self, block: pd.DataFrame) -> None:
        if self._columns is None:
            self._columns = list(block.columns)
        elif list(block.columns) != self._columns:
            block = block.reindex(columns=self._columns)
        if self.suffix == ".csv":
            block.to_csv(self.tmp, mode="a", header=self.rows == 0, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(block, preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, table.schema, write_page_checksum=True)
            self._writer.write_table(table.cast(self._writer.schema))
        self.rows += len(block)

    def close(self, metadata: dict | None = None) -> Path:
        """Finish the file with the run's metadata and rename it into place.

        Parameters
        ----------
        metadata : dict, optional
            Run metadata, stored as :func:`~napari_flow_features.io.tables.write_table` stores it.

        Returns
        -------
        pathlib.Path
            The final path.

        Raises
        ------
        BadInputError
            No rows were written.
        OutOfSpaceError
            The disk filled while finishing the file.
        """
        meta = jsonable_metadata(metadata or {})
        if self.rows == 0:
            raise BadInputError(f"No rows to write to {self.path}")
        if self.suffix == ".csv":
            with atomic_write_with_sidecar(self.path, sidecar_path(self.path), meta) as (tmp, _):
                os.replace(self.tmp, tmp)  # the rows become the pair's data (same folder)
            return self.path
        try:
            self._writer.add_key_value_metadata({PARQUET_META_KEY: json.dumps(meta).encode()})
            self._writer.close()
            self._writer = None
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _translate(exc, self.path) from exc
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; nothing appears at ``path``."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> TableStreamWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is not None:
            self.discard()
