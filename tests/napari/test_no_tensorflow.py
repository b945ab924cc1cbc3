"""Guard: every widget and the sample in a viewer, and still no TensorFlow or Keras loaded."""

from __future__ import annotations

import sys

from npe2 import PluginManager

PLUGIN = "napari-flow-features"


def test_widgets_and_sample_do_not_import_tensorflow(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    manifest = PluginManager.instance().get_manifest(PLUGIN)
    for widget in manifest.contributions.widgets or []:
        viewer.window.add_plugin_dock_widget(PLUGIN, widget.display_name)
    viewer.screenshot(canvas_only=True)
    assert "tensorflow" not in sys.modules
    assert "keras" not in sys.modules
