"""The Compute optical flow dock widget in a real viewer: run, progress, cancel, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_flow_features.napari._qt import flow_widget as _flow_widget
from napari_flow_features.napari._qt.flow_widget import FlowWidget

PLUGIN = "napari-flow-features"


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_flow_widget, "show_error", seen.append)
    return seen


def wait(qtbot, worker, timeout=60_000):
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


def test_widget_is_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compute optical flow")
    assert isinstance(widget, FlowWidget)


def test_flow_on_the_sample_adds_aligned_layers(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    video = viewer.layers["whisker video"]
    video.scale = (1, 0.5, 0.5)  # a calibrated video: flow must follow its transform
    widget = FlowWidget(viewer)
    assert widget.video.value is video
    widget.method.value = "dis"
    widget.resize.value = "longest side (px)"
    assert not widget.max_side.native.isHidden()  # shown for a side of one's own
    widget.max_side.value = 160  # 240x320 -> 120x160: flow pixels are 2 video pixels
    widget.output.value = str(tmp_path / "flow.npy")
    worker = widget.run()
    wait(qtbot, worker)
    assert errors == []
    colour = viewer.layers["flow: whisker video"]
    vectors = viewer.layers["flow vectors: whisker video"]
    assert colour.data.shape == (95, 120, 160, 3)
    assert colour.metadata["flow"].shape == (95, 120, 160, 2)
    assert colour.metadata["flow_method"] == "dis"
    np.testing.assert_allclose(colour.scale, [1, 1.0, 1.0])
    np.testing.assert_allclose(colour.translate, [0, 0.25, 0.25])
    np.testing.assert_allclose(vectors.scale, colour.scale)
    assert np.load(tmp_path / "flow.npy").shape == (95, 120, 160, 2)
    # The whisker moves: the flow at the bar is clearly non-zero.
    gt = video.metadata["ground_truth_flow"][10, ::2, ::2]
    bar = np.hypot(gt[..., 0], gt[..., 1]) > 1
    flow = np.asarray(colour.metadata["flow"][10])
    assert np.hypot(flow[..., 0], flow[..., 1])[bar].mean() > 0.5
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_cancel_stops_and_leaves_no_file(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = FlowWidget(viewer)
    widget.method.value = "tvl1-skimage"  # slow: ~0.5 s per pair
    widget.workers.value = 1
    widget.output.value = str(tmp_path / "slow.npy")
    worker = widget.run()
    qtbot.waitUntil(
        lambda: widget._progress is not None and widget._progress.n >= 1, timeout=30_000
    )
    widget.cancel()
    wait(qtbot, worker, timeout=30_000)
    assert "cancelled" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["whisker video", "whisker base"]
    assert list(tmp_path.iterdir()) == []
    assert errors == []


def test_bad_input_is_a_notification(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((1, 32, 32), np.uint8), name="one frame")
    widget = FlowWidget(viewer)
    assert widget.run() is None
    assert len(errors) == 1 and "at least 2 frames" in errors[0]
    viewer.layers.clear()
    assert widget.run() is None
    assert "add a video layer" in errors[1]


def test_a_16_bit_layer_gives_the_flow_of_its_8_bit_picture(
    make_napari_viewer, qtbot, tmp_path, errors
):
    """Issue 17: a uint16 layer was clipped to 255 and gave all-zero flow; it goes through the
    same bit-depth rule (flow/frames.py) as the API."""
    yy, xx = np.mgrid[0:48, 0:64].astype(float)
    frames8 = np.stack(
        [
            np.rint(
                127 + 60 * np.sin((xx - 1.5 * t) / 4) * np.cos(yy / 5) + 40 * np.sin((xx + yy) / 7)
            )
            for t in range(5)
        ]
    ).astype(np.uint8)
    viewer = make_napari_viewer()
    flows = {}
    for name, data in (("eight", frames8), ("sixteen", frames8.astype(np.uint16) * 257)):
        viewer.add_image(data, name=name)
        widget = FlowWidget(viewer)
        widget.video.value = viewer.layers[name]
        widget.method.value = "dis"
        widget.output.value = str(tmp_path / f"{name}.npy")
        wait(qtbot, widget.run())
        flows[name] = np.asarray(viewer.layers[f"flow: {name}"].metadata["flow"])
    assert errors == []
    assert np.hypot(flows["eight"][..., 0], flows["eight"][..., 1]).mean() > 0.5
    epe = np.hypot(*(flows["sixteen"] - flows["eight"]).transpose(3, 0, 1, 2)).mean()
    assert epe < 0.05


def test_the_default_flow_is_the_one_extraction_computes(make_napari_viewer, qtbot, tmp_path,
                                                         errors):  # fmt: skip
    """Defaults: DIS at 256 px on the longest side, as the extraction dock and the command line, so
    features from the flow layer are the video layer's; the flow layer still covers the video."""
    import json

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")  # 240x320
    widget = FlowWidget(viewer)
    assert (widget.method.value, widget.resize.value) == ("dis", "auto")
    assert widget.max_side.native.isHidden()  # only for a side of one's own
    widget.output.value = str(tmp_path / "flow.npy")
    wait(qtbot, widget.run())
    assert errors == []
    colour = viewer.layers["flow: whisker video"]
    assert colour.metadata["flow"].shape == (95, 192, 256, 2)
    np.testing.assert_allclose(colour.scale, [1, 1.25, 1.25])  # 320 / 256 video px per flow px
    side = json.loads((tmp_path / "flow.npy.json").read_text())
    assert side["flow_shape"] == [192, 256] and side["flow_method"] == "dis"
    assert viewer.layers.index(colour) > viewer.layers.index(viewer.layers["whisker video"])
    assert colour.visible


def test_temporary_flow_goes_with_its_layer(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A flow computed to a temporary file: the file goes when its layer is removed."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (6, 32, 40), np.uint8), name="v")
    widget = FlowWidget(viewer)
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    flow = viewer.layers["flow: v"]
    path = Path(flow.metadata["path"])
    assert path.is_file() and path.parent.parent == tmp_path
    assert flow.blending == "minimum"
    viewer.layers.remove(flow)
    assert not path.parent.exists()
