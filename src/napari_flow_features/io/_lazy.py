"""The array protocol shared by the lazy arrays (video, .flo folders, flow colours)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class _ShapedIndexable(Protocol):
    """What a `LazyArray` subclass provides: a shape and NumPy-style indexing."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


class LazyArray:
    """Mixin completing the array protocol napari and NumPy expect of a lazy array.

    Subclasses give ``shape`` and ``dtype`` (as properties or as attributes) and ``__getitem__``;
    this adds ``ndim``, ``size``, ``len`` and ``np.asarray`` (which reads everything). The methods
    type ``self`` as a protocol, so each subclass chooses how it stores its shape.
    """

    @property
    def ndim(self: _ShapedIndexable) -> int:
        """Number of dimensions, ``len(shape)``."""
        return len(self.shape)

    @property
    def size(self: _ShapedIndexable) -> int:
        """Number of elements, the product of ``shape``."""
        return int(np.prod(self.shape))

    def __len__(self: _ShapedIndexable) -> int:
        return self.shape[0]

    def __array__(
        self: _ShapedIndexable, dtype: Any = None, copy: bool | None = None
    ) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)
