"""A new user's whole click path in a real napari window, checking after each step what they see.

Open the sample, compute flow, extract features at the landmark, open the plot dock, save the
table, reopen it; then close the viewer. The docks are opened as napari's Plugins menu opens them.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import pytest

from napari_flow_features.io.tables import read_table
from napari_flow_features.napari._qt import extract_widget as _extract_widget
from napari_flow_features.napari._results import in_view

PLUGIN = "napari-flow-features"
DOCKS = ("Compute optical flow", "I3D feature extraction", "Feature plots")


def canvas(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


def changed_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of canvas pixels that differ visibly between two screenshots."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float((np.abs(a[:h, :w] - b[:h, :w]).sum(-1) > 30).mean())


@pytest.fixture
def own_temp(tmp_path, monkeypatch):
    """An empty temp folder for this test (the model worker's child inherits it)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    _extract_widget._close_worker()  # a worker from an earlier test lives in another temp folder
    yield folder
    _extract_widget._close_worker()


def test_a_new_users_click_path(make_napari_viewer, qtbot, own_temp, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    shown = []
    # 1. File ▸ Open Sample ▸ Synthetic whisker video (Flow Features)
    viewer.open_sample(PLUGIN, "whisker")
    video, landmarks = viewer.layers["whisker video"], viewer.layers["whisker base"]
    assert in_view(viewer, video)

    # 2. Plugins ▸ Flow Features ▸ each dock: all three fit an 800-px-high screen.
    widgets = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in DOCKS}
    qtbot.wait(50)
    assert viewer.window._qt_window.minimumSizeHint().height() <= 800
    flow_dock, extract, plots = (widgets[name] for name in DOCKS)
    assert _extract_widget.model_worker().pid is not None  # started when the dock opened

    # 3. Compute optical flow: the video stays visible under the flow colours.
    viewer.dims.set_current_step(0, 40)
    video_alone = canvas(viewer)
    flow_dock.run()
    qtbot.waitUntil(lambda: flow_dock._worker is None, timeout=120_000)
    flow_layer = viewer.layers["flow: whisker video"]
    assert flow_layer.visible and flow_layer.blending == "minimum"
    assert changed_share(canvas(viewer), video_alone) < 0.1  # colours only where it moves
    names = [layer.name for layer in viewer.layers]
    assert names[-1] == "whisker base"  # the landmarks stay on top of the flow

    # 4. I3D feature extraction at the landmark (a small model, so the test is quick).
    extract.endpoint.value = "Mixed_3c"
    extract.clip_length.value = 8
    extract.stride.value = 8
    extract.post_encoder.value = "Spatial Point Extraction"
    assert extract.points.value is landmarks and extract.replace.value is False
    worker = extract.run(current_frame=False)
    statuses: list[str] = []
    worker.yielded.connect(lambda e: statuses.append(e[1]) if e[0] == "status" else None)
    qtbot.waitUntil(lambda: extract._worker is None, timeout=240_000)
    assert "running" in statuses and extract.status.value.startswith("done")
    # The dock's random weights (the test conftest's offline default) are in every result's name.
    features = viewer.layers["features: whisker video (point, Mixed_3c, RANDOM WEIGHTS)"]
    heat = viewer.layers["heatmap: whisker video (point, Mixed_3c, RANDOM WEIGHTS)"]
    order = [layer.name for layer in viewer.layers]
    for layer in (features, heat):  # visible, above the flow, inside the camera's view
        assert layer.visible
        assert order.index(layer.name) > order.index("flow: whisker video")
        assert in_view(viewer, layer)
    with_heat = canvas(viewer)
    heat.visible = False
    without_heat = canvas(viewer)
    heat.visible = True
    # The heatmap shows on the video (additive: it brightens what it covers).
    assert changed_share(with_heat, without_heat) > 0.01 and with_heat.sum() > without_heat.sum()
    shown.append(features.name)

    # The same settings again, one frame: the warm worker starts at once.
    started = time.perf_counter()
    worker = extract.run(current_frame=True)
    first: list[float] = []
    worker.yielded.connect(
        lambda e: (
            first.append(time.perf_counter() - started) if e == ("status", "running") else None
        )
    )
    qtbot.waitUntil(lambda: extract._worker is None, timeout=60_000)
    assert first and first[0] < 1.0, first
    print(f"\nsecond run on the same settings started after {first[0]:.3f} s")
    assert viewer.layers[features.name] is features  # its own layer updated in place

    # 5. Feature plots: the new features are there to plot.
    plots.source.value = features
    assert len(plots.lines()) == 3 and plots.status.value == ""

    # 6. Save the landmarks with their features (File ▸ Save Selected Layers…, default writer).
    viewer.layers.selection = {landmarks}
    path = tmp_path / "whisker_base.csv"
    assert viewer.layers.save(str(path), selected=True) == [str(path)]
    table = read_table(path)
    assert table.columns[:4].tolist() == ["frame", "landmark", "x", "y"]
    assert np.isfinite(table["f0000"]).all() and len(table) == 96

    # 7. Reopen it (File ▸ Open with Plugin ▸ Open File(s)… ▸ Flow Features).
    (back,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(back.data, landmarks.data)
    np.testing.assert_allclose(back.features["f0000"], landmarks.features["f0000"], rtol=1e-6)
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules

    # 8. Close napari: the worker and every temporary file go.
    viewer.close()
    qtbot.waitUntil(lambda: _extract_widget._WORKER is None, timeout=20_000)
    qtbot.wait(100)
    assert sorted(p.name for p in own_temp.iterdir()) == []
