"""Regenerate the documentation's screenshots from a real napari window.

    python docs/make_screenshots.py            # writes docs/images/*.png
    python docs/make_screenshots.py OUT_DIR    # somewhere else (the test suite does this)

Needs a display (under CI: Xvfb, e.g. ``xvfb-run -a -s "-screen 0 1280x800x24" python ...``).
It opens the sample, computes optical flow, runs a small I3D extraction at the landmark (through
the model worker process, as a user would) and shoots: each dock widget, and the window with the
results, and the Feature plots dock's behaviour map of the extracted features. PNGs are palette-quantised so the set stays a few hundred KB. ``make screenshots`` runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The dock runs with random weights (offline, reproducible) unless the caller chose otherwise.
os.environ.setdefault("NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS", "random")
PLUGIN = "napari-flow-features"
DOCKS = {
    "flow_widget.png": "Compute optical flow",
    "extract_widget.png": "I3D feature extraction",
    "plots_widget.png": "Feature plots",
}
RESULTS = "results.png"
MAP = "behaviour_map.png"
WINDOW = (1280, 800)


def _save(image, path: Path, width: int | None = None) -> Path:
    """An RGB(A) array as a small palette PNG (optionally scaled down to ``width`` pixels)."""
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    if width is not None and picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)),
                                 Image.Resampling.LANCZOS)  # fmt: skip
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _grab(widget) -> object:
    """A Qt widget's pixels as an RGBA array."""
    import numpy as np
    from qtpy.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return rows[:, : image.width()].copy()


def _grab_form(widget) -> object:
    """A dock's whole form at its natural height (the dock shows part of it in a scroll area)."""
    from qtpy.QtWidgets import QScrollArea

    scroll = widget.native.findChild(QScrollArea)
    if scroll is None:
        return _grab(widget.native)
    body = scroll.widget()
    scroll.setWidgetResizable(False)
    try:
        body.resize(max(body.width(), body.sizeHint().width()), body.sizeHint().height())
        return _grab(body)
    finally:
        scroll.setWidgetResizable(True)


def make_screenshots(out_dir: str | Path, timeout_s: float = 300.0) -> list[Path]:
    """Open the sample, run flow and a small extraction, and write the screenshots; returns
    the files written."""
    import time

    from qtpy.QtWidgets import QApplication

    import napari
    from napari_flow_features.napari._qt import extract_widget as _extract_widget

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def wait(done, what: str) -> None:
        end = time.monotonic() + timeout_s
        while not done():
            app.processEvents()
            if time.monotonic() > end:
                raise TimeoutError(f"{what} did not finish within {timeout_s:g} s")
            time.sleep(0.02)

    viewer = napari.Viewer(show=True, title="napari-flow-features")
    app = QApplication.instance()
    written: list[Path] = []
    try:
        viewer.window.resize(*WINDOW)
        viewer.open_sample(PLUGIN, "whisker")
        widgets = {file: viewer.window.add_plugin_dock_widget(PLUGIN, name)
                   for file, name in DOCKS.items()}  # fmt: skip
        flow = widgets["flow_widget.png"][1]
        extract = widgets["extract_widget.png"][1]
        plots = widgets["plots_widget.png"][1]
        viewer.dims.set_current_step(0, 40)
        flow.run()
        wait(lambda: flow._worker is None, "optical flow")
        extract.endpoint.value = "Mixed_3c"  # small and quick; the picture is the same
        extract.clip_length.value = 8
        extract.stride.value = 8
        extract.post_encoder.value = "Spatial Point Extraction"
        extract.run(current_frame=False)
        wait(lambda: extract._worker is None, "feature extraction")
        features = next(layer for layer in viewer.layers if layer.name.startswith("features:"))
        plots.source.value = features
        plots.features.value = "0,1,2"
        for _ in range(5):
            app.processEvents()
        for file, (_dock, widget) in widgets.items():
            written.append(_save(_grab_form(widget), out / file))
        plots.map_clusters.value = "kmeans"
        plots.map_k.value = 4
        plots.mode.value = "behaviour map"
        wait(lambda: plots.mapped() is not None and plots.status.value == "", "behaviour map")
        viewer.dims.set_current_step(0, 60)
        for _ in range(5):
            app.processEvents()
        written.append(_save(_grab_form(plots), out / MAP))
        viewer.window.remove_dock_widget(widgets["flow_widget.png"][0])  # room for the others
        viewer.layers.selection.active = features
        for _ in range(5):
            app.processEvents()
        shot = viewer.screenshot(canvas_only=False, flash=False)
        written.append(_save(shot, out / RESULTS, width=1100))
    finally:
        viewer.close()
        _extract_widget._close_worker()
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "images"
    for path in make_screenshots(target):
        print(f"{path} ({path.stat().st_size // 1024} KB)")
