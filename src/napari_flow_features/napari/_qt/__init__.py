"""The Qt side of the plugin: the dock widgets and their scrolling forms.

Everything that imports Qt, magicgui or superqt lives here (napari-animation keeps its Qt in
``_qt/`` the same way); what converts results into layers and puts them in a viewer is pure and
sits one level up (``_convert.py``, ``_results.py``), tested without a window.
"""
