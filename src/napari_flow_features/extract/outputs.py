"""Where a run's results go: streamed ``.npy`` files with sidecars, and the result rows.

Every file is written to an owner-tagged temporary and made visible with its sidecar when
complete (docs/reliability.md); rows are kept, or handed to a sink in blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from ..config import KEEP_FLOW_DTYPES
from ..errors import BadInputError, CancelledError
from ..io._atomic import HASH_KEY, atomic_write_with_sidecar
from ..io.npy_stream import NpyWriter, npy_nbytes


class NpyWithSidecar:
    """A ``.npy`` streamed in order beside its JSON sidecar ``<final>.json``.

    Both are written to owner-tagged temporaries (the data with buffered writes, its blocks
    reserved up front, its SHA-256 computed while writing); :meth:`commit` makes them visible
    together with the hash recorded in the sidecar, :meth:`discard` removes both temporaries and
    leaves the final paths as they were (docs/reliability.md).
    """

    def __init__(
        self,
        final: Path,
        shape: tuple[int, ...],
        dtype: Any,
        metadata: dict[str, Any],
        partials: list[Path],
        header_shape: tuple[int, ...] | None = None,
    ) -> None:
        from ..io.tables import jsonable_metadata

        self.final = final
        self._stack = contextlib.ExitStack()
        nbytes = npy_nbytes(header_shape or shape, dtype)
        try:
            tmp, self.meta = self._stack.enter_context(
                atomic_write_with_sidecar(
                    final,
                    final.with_name(final.name + ".json"),
                    jsonable_metadata(metadata),
                    nbytes,
                )
            )
            partials.append(tmp)
            self.writer = self._stack.enter_context(
                NpyWriter(tmp, shape, dtype, False, header_shape=header_shape, label=final)
            )
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def write(self, first: int, rows: np.ndarray) -> None:
        """Write ``rows`` starting at row ``first`` (the next unwritten one)."""
        self.writer[first : first + len(rows)] = rows

    @property
    def complete(self) -> bool:
        """Every row is written."""
        return self.writer.rows == self.writer.shape[0]

    def commit(self, **extra: Any) -> Path:
        """Make the data and its sidecar visible together; returns the final path.

        Checks every row was written and records the data's hash (and ``extra`` fields) in the
        sidecar first.
        """
        self.meta.update(extra)
        self.meta[HASH_KEY] = self.writer.sha256
        self._stack.close()
        return self.final

    def discard(self, exc: BaseException | None = None) -> None:
        """Remove both temporaries (after ``exc``, or a cancel); the final paths are untouched."""
        exc = exc or CancelledError("discarded")
        tb: TracebackType | None = exc.__traceback__
        with contextlib.suppress(Exception):  # already ending with an error: keep that one
            self._stack.__exit__(type(exc), exc, tb)


class FlowWriter(NpyWithSidecar):
    """Raw flow written in order, made visible with its hashed sidecar when complete.

    Stored as ``float32``, ``float16``, or ``uint8`` quantised as DeepMind did
    (``[-bound, bound]`` → 0..255).
    """

    def __init__(
        self,
        final: Path,
        shape: tuple[int, ...],
        dtype: str,
        bound: float,
        spec: dict[str, Any],
        partials: list[Path],
    ) -> None:
        if dtype not in KEEP_FLOW_DTYPES:
            raise BadInputError(f"keep-flow dtype must be one of {', '.join(KEEP_FLOW_DTYPES)}")
        self.dtype, self.bound = dtype, float(bound)
        meta = {**spec, "flow_encoding": dtype}
        if dtype == "uint8":
            meta["flow_quantisation_bound"] = self.bound
        super().__init__(final, shape, dtype, meta, partials)

    def __call__(self, first: int, raw: np.ndarray) -> None:
        """Write raw flow fields ``first, first + 1, …`` (encoded to the file's dtype)."""
        if self.dtype == "uint8":
            q = (np.clip(raw, -self.bound, self.bound) + self.bound) * (255.0 / (2 * self.bound))
            raw = np.round(q).astype(np.uint8)
        self.write(first, raw)


class Rows:
    """Result rows, kept or handed to a sink in blocks of ``block`` rows."""

    def __init__(
        self,
        sink: Callable[[pd.DataFrame], None] | None,
        block: int = 2048,
        names: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.sink, self.block = sink, block
        self.names = names or (lambda count: [f"f{c:04d}" for c in range(count)])
        self.rows: list[dict] = []
        self.feats: list[np.ndarray] = []
        self.parts: list[pd.DataFrame] = []
        self.count = 0
        self.nan_rows = 0

    def add(self, row: dict, feat: np.ndarray | None = None) -> None:
        """Add one row: its fields and, for gap and point, its feature vector."""
        self.rows.append(row)
        if feat is not None:
            self.feats.append(feat)
            self.nan_rows += bool(np.isnan(feat[0]))
        if len(self.rows) >= self.block:
            self.flush()

    def flush(self) -> None:
        """Turn the rows added since the last flush into a table block (to the sink)."""
        if not self.rows:
            return
        part = pd.DataFrame(self.rows)
        if self.feats:
            mat = np.stack(self.feats).astype(np.float32)
            cols = pd.DataFrame(mat, columns=self.names(mat.shape[1]))
            part = pd.concat([part, cols], axis=1)
        self.count += len(part)
        self.rows, self.feats = [], []
        if self.sink is not None:
            self.sink(part)
        else:
            self.parts.append(part)

    def table(self) -> pd.DataFrame:
        """The rows kept (all of them without a sink), as one table."""
        self.flush()
        if not self.parts:
            return pd.DataFrame({"frame": pd.Series([], dtype=int)})
        return pd.concat(self.parts, ignore_index=True)


class MapsWriter:
    """The ``none`` post-encoder's feature maps, streamed into a ``.npy`` opened on first write.

    Chunked windowing writes ``[1, steps, H', W', C]`` one step at a time; sliding windowing
    ``[windows, T', H', W', C]`` one window at a time. The sidecar records ``about``.
    """

    def __init__(
        self, final: Path, about: dict[str, Any], partials: list[Path], chunked: bool
    ) -> None:
        self.final, self.about, self.partials, self.chunked = final, about, partials, chunked
        self._file: NpyWithSidecar | None = None

    def write(self, row: int, block: np.ndarray, shape: tuple[int, ...]) -> None:
        """Write ``block`` at ``row`` of a file of ``shape`` (opened on the first write)."""
        if self._file is None:
            about = {**self.about, "shape": list(shape)}
            rows_shape = shape[1:] if self.chunked else shape  # (1, S, ...): rows are steps
            self._file = NpyWithSidecar(
                self.final, rows_shape, np.float32, about, self.partials, header_shape=shape
            )
        self._file.write(row, block)

    def commit(self, **extra: Any) -> Any:
        """Make the maps visible; returns them as a read-only memory map (None if none came)."""
        if self._file is None:
            return None
        self._file.commit(**extra)
        self._file = None
        return np.load(self.final, mmap_mode="r", allow_pickle=False)

    def discard(self, exc: BaseException) -> None:
        """Remove the temporaries (the run ended early)."""
        if self._file is not None:
            self._file.discard(exc)
            self._file = None
