"""npe2 contributions: readers, writers, sample data and dock widgets (the only Qt/napari code).

Nothing here imports TensorFlow or Keras: model work runs in a separate worker process.
"""
