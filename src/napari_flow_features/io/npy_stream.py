"""``NpyWriter``: write a large ``.npy`` array block by block with ordinary buffered I/O.

No memory map, so a disk that fills raises an error (``OutOfSpaceError``) instead of killing the
process with SIGBUS. The size is known from the shape, so the free space is checked and the file's
blocks reserved (``posix_fallocate``) before the first block is computed; the file is written under
a temporary name and renamed into place only when every row has been written
(``io/_atomic.py``'s discipline).

>>> with NpyWriter("flow.npy", (T - 1, H, W, 2), np.float32) as out:   # doctest: +SKIP
...     for block in blocks:                                            # (n, H, W, 2) each
...         out.write(block)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from ..errors import BadInputError
from ._atomic import _translate, atomic_write_path, check_free_space, preallocate


def npy_nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    """Size in bytes of a ``.npy`` file of this shape and dtype (header included).

    Parameters
    ----------
    shape
        The array's shape.
    dtype
        Anything :class:`numpy.dtype` accepts.

    Returns
    -------
    int
        The file's size: header plus data.
    """
    header = _header(shape, np.dtype(dtype))
    return len(header) + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header (format 1.0, or 2.0 when 1.0 cannot hold it) of a C-order array."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # a header too long for format 1.0
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


class NpyWriter:
    """A ``.npy`` file of a known shape written in order along axis 0, atomically.

    ``write(block)`` (or ``writer[a:b] = block`` with ``a`` the next unwritten row) appends
    ``block`` (shape ``(n, *shape[1:])``); leaving the ``with`` block renames the file into place
    if exactly ``shape[0]`` rows were written, and otherwise (an error, a cancel, too few rows)
    removes it. The file's size is checked against the free space and reserved
    (``posix_fallocate``) before anything is written, so a full disk is an
    :class:`~napari_flow_features.errors.OutOfSpaceError` before any work, never a SIGBUS.

    Parameters
    ----------
    path
        Where the array goes (``.npy``).
    shape
        The rows' layout: ``shape[0]`` rows of ``shape[1:]`` each, written in order.
    dtype
        The stored type; blocks are converted to it.
    atomic
        ``True``: write under an owner-tagged temporary name beside ``path`` and rename it when
        complete. ``False``: write straight to ``path``, for a path that is already a temporary
        (the data path :func:`~napari_flow_features.io._atomic.atomic_write_with_sidecar`
        yields; it renames); ``path`` is removed if the block fails.
    header_shape
        The array's shape as stored, when it differs from ``shape`` but holds the same bytes:
        e.g. ``(1, S, ...)`` feature maps written as ``S`` rows of ``(...)``. Default ``shape``.
    label
        The path messages name (a full disk, a wrong block); default ``path``. With
        ``atomic=False`` give the final path the temporary ``path`` stands for.

    Attributes
    ----------
    rows : int
        Rows written so far.
    nbytes : int
        The complete file's size in bytes.

    Examples
    --------
    >>> with NpyWriter("flow.npy", (T - 1, H, W, 2), np.float32) as out:  # doctest: +SKIP
    ...     for block in blocks:
    ...         out.write(block)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, ...],
        dtype: Any,
        atomic: bool = True,
        header_shape: tuple[int, ...] | None = None,
        label: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.label = Path(label) if label is not None else self.path
        self.atomic = atomic
        self._digest = hashlib.sha256()
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        if not self.shape or any(n < 0 for n in self.shape):
            raise BadInputError(f"Cannot write an array of shape {self.shape}: {self.label}")
        self.header_shape = (
            self.shape if header_shape is None else tuple(int(n) for n in header_shape)
        )
        if np.prod(self.header_shape, dtype=np.int64) != np.prod(self.shape, dtype=np.int64):
            raise BadInputError(
                f"Stored shape {self.header_shape} does not hold rows of shape {self.shape}: "
                f"{self.label}"
            )
        self.nbytes = npy_nbytes(self.header_shape, self.dtype)
        self.rows = 0
        self._ctx: Any = None
        self._fh: IO[bytes] | None = None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of what has been written so far (the whole file once complete)."""
        return self._digest.hexdigest()

    def __enter__(self) -> NpyWriter:
        """Check the free space, open the temporary, reserve its size and write the header."""
        if self.atomic:
            self._ctx = atomic_write_path(self.path, expected_bytes=self.nbytes)
        else:
            check_free_space(self.label, self.nbytes)
            self._ctx = _direct(self.path)
        tmp = self._ctx.__enter__()
        try:
            self._fh = open(tmp, "wb")
            preallocate(self._fh.fileno(), self.nbytes, self.label)
            header = _header(self.header_shape, self.dtype)
            self._digest.update(header)
            self._fh.write(header)
        except BaseException as exc:
            self._close()
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, block: Any) -> None:
        """Append rows.

        Parameters
        ----------
        block
            Array-like of shape ``(n, *shape[1:])``, converted to the writer's dtype.

        Raises
        ------
        BadInputError
            The block's shape does not fit the rows still to write.
        OutOfSpaceError
            The disk, a quota or the file-size limit is full.
        """
        if self._fh is None:
            raise BadInputError(f"The writer is not open (use it in a with block): {self.label}")
        arr = np.ascontiguousarray(block, dtype=self.dtype)
        if arr.shape[1:] != self.shape[1:] or self.rows + len(arr) > self.shape[0]:
            raise BadInputError(
                f"Block of shape {arr.shape} does not fit rows {self.rows}.. of {self.shape}: "
                f"{self.label}"
            )
        data = arr.tobytes()
        self._digest.update(data)
        try:
            self._fh.write(data)
        except OSError as exc:
            raise _translate(exc, self.label) from exc
        self.rows += len(arr)

    def __setitem__(self, key: slice, value: Any) -> None:
        """``writer[a:b] = rows``: :meth:`write`, for code that fills an array in order.

        ``a`` must be the next unwritten row (rows come in order).
        """
        start = key.start or 0
        if start != self.rows:
            raise BadInputError(
                f"Rows must be written in order: next is {self.rows}, got {start}: {self.label}"
            )
        self.write(value)

    def _close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Rename the complete file into place, or remove it after an error or too few rows."""
        if exc is None:
            try:
                if self.rows != self.shape[0]:
                    raise BadInputError(
                        f"Only {self.rows} of {self.shape[0]} rows were written: {self.label}"
                    )
                self._close()
            except BaseException as err:
                self._close()
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
            return self._ctx.__exit__(None, None, None)
        self._close()
        return self._ctx.__exit__(kind, exc, tb)


@contextlib.contextmanager
def _direct(path: Path) -> Iterator[Path]:
    """Write to ``path`` itself (already a temporary); remove it on failure."""
    try:
        yield path
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
