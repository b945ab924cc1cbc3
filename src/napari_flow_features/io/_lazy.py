"""The array protocol shared by the lazy arrays (video, .flo folders, flow colours)."""

from __future__ import annotations

from typing import Any

import numpy as np


class LazyArray:
    """Subclasses give ``shape``, ``dtype`` and ``__getitem__``; this adds the rest napari and
    NumPy expect (``ndim``, ``size``, ``len``, ``np.asarray``, which reads everything).
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]  # type: ignore[index]  # subclasses define __getitem__
        return out if dtype is None else out.astype(dtype)
