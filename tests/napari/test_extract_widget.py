"""The I3D feature extraction widget: a real extraction on the sample through the worker process."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_flow_features.errors import CancelledError
from napari_flow_features.napari._qt import extract_widget as _extract_widget
from napari_flow_features.napari._qt.extract_widget import ExtractWidget

PLUGIN = "napari-flow-features"


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_extract_widget, "show_error", seen.append)
    return seen


def wait(qtbot, widget, timeout=180_000):
    """Until the widget's run has finished (its state, not a signal that may already have fired)."""
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


def pixel_edges(layer) -> np.ndarray:
    """World (min, max) of a layer's outer pixel edges (napari's extent spans pixel centres)."""
    half = 0.5 * np.asarray(layer.scale)
    return np.asarray(layer.extent.world) + np.stack([-half, half])


def small_run(widget):
    widget.replace.value = True  # results under the names 'features: <source>' etc.
    widget.endpoint.value = "Mixed_3c"
    widget.clip_length.value = 8
    widget.stride.value = 8


def test_point_extraction_on_the_sample(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    small_run(widget)
    widget.post_encoder.value = "Spatial Point Extraction"
    assert not widget.points.native.isHidden()  # shown only for Spatial Point Extraction
    assert widget.points.value is viewer.layers["whisker base"]
    assert widget.run(current_frame=False) is not None
    viewer.layers.selection.active = viewer.layers["whisker video"]  # selection changes mid-run
    wait(qtbot, widget)
    assert errors == []
    # Optical flow and the encoder each had a bar (frames/s, time left) that ran to its end.
    flow_done, flow_total = widget.phase_progress["flow"]
    assert flow_done == flow_total and flow_total in (95, 96)
    assert widget.phase_progress["encoder"] == (96, 96)
    assert widget._progress is None and widget._flow_progress is None  # closed, not left behind
    features = viewer.layers["features: whisker video"]
    assert features.data.shape == (96, 480) and np.isfinite(features.data).all()
    # Shown beside the video (a box the video's size), not over it; contrast fits the values.
    (_, top, _), (_, bottom, right) = pixel_edges(viewer.layers["whisker video"])
    (f_top, f_left), (f_bottom, _) = pixel_edges(features)
    assert f_left > right and f_top == pytest.approx(top) and f_bottom == pytest.approx(bottom)
    assert features.contrast_limits == [float(features.data.min()), float(features.data.max())]
    assert (
        features.metadata["post_encoder"] == "point" and features.metadata["endpoint"] == "Mixed_3c"
    )
    points = viewer.layers["whisker base"]
    assert points.features.shape == (96, 2 + 480) and np.isfinite(points.features["f0000"]).all()
    assert points.features["frame"].tolist() == list(range(96))
    # The dock resizes as the command line does (max_side auto: 320x240 -> 256x192): 8-px cells of
    # the resized frame are 10 video pixels, and the heatmap still sits over the video.
    assert features.metadata["max_side"] == 256 and features.metadata["work_shape"] == [192, 256]
    heat = viewer.layers["heatmap: whisker video"]
    assert heat.data.shape == (96, 24, 32) and heat.blending == "additive"
    np.testing.assert_allclose(heat.scale, [1, 10, 10])
    np.testing.assert_allclose(heat.translate, [0, 4.5, 4.5])
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_gap_current_frame_then_all(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    small_run(widget)
    widget.post_encoder.value = "Global Average Pooling"
    assert widget.points.native.isHidden()
    viewer.dims.set_current_step(0, 30)
    assert widget.run(current_frame=True) is not None
    wait(qtbot, widget)
    features = viewer.layers["features: whisker video"]
    finite_rows = np.flatnonzero(np.isfinite(features.data).all(axis=1))
    assert finite_rows.tolist() == [30]  # only the current frame, written at once
    gap_points = viewer.layers["features points: whisker video"]
    assert len(gap_points.data) == 96 and np.isfinite(gap_points.features["f0000"]).sum() == 1
    assert widget.run(current_frame=False) is not None
    wait(qtbot, widget)
    assert np.isfinite(viewer.layers["features: whisker video"].data).all()
    assert errors == []
    assert "tensorflow" not in sys.modules


def test_errors_are_notifications(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    widget = ExtractWidget(viewer)
    assert widget.run() is None and "add a video or flow layer" in errors[-1]
    viewer.add_image(np.zeros((10, 32, 32), np.uint8), name="clip")
    widget.post_encoder.value = "Spatial Point Extraction"
    assert widget.run() is None and "needs a Points layer" in errors[-1]


def test_cancel_and_a_killed_worker_keep_the_viewer_usable(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    small_run(widget)
    widget.windowing.value = "sliding windows"
    widget.stride.value = 1  # many windows, so there is time to cancel between batches
    progress: list[tuple[int, int]] = []
    worker = widget.run(current_frame=False)
    worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: len(progress) >= 1, timeout=180_000)
    widget.cancel()
    wait(qtbot, widget, timeout=60_000)
    assert widget.status.value == "cancelled" and errors == []
    assert "features: whisker video" not in viewer.layers
    assert widget.run_all.enabled and not widget.cancel_button.enabled

    import os
    import signal

    widget.stride.value = 8
    progress.clear()
    worker = widget.run(current_frame=False)
    worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: len(progress) >= 1, timeout=180_000)
    os.kill(_extract_widget.model_worker().pid, signal.SIGKILL)
    wait(qtbot, widget, timeout=60_000)
    assert len(errors) == 1 and "stopped unexpectedly" in errors[0]

    assert widget.run(current_frame=False) is not None  # a fresh child takes over
    wait(qtbot, widget)
    assert len(errors) == 1
    assert np.isfinite(viewer.layers["features: whisker video"].data).all()
    assert "tensorflow" not in sys.modules


def test_none_gives_an_activation_volume_whose_mean_is_gap(make_napari_viewer, qtbot, errors):
    from napari_flow_features.napari._qt.plots_widget import FeaturePlotsWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    small_run(widget)
    widget.resize.value = "full size"  # 8-px cells of the video itself
    widget.post_encoder.value = "Global Average Pooling"
    assert widget.run(current_frame=False) is not None
    wait(qtbot, widget)
    pooled = np.array(viewer.layers["features: whisker video"].data)
    widget.post_encoder.value = "None"
    assert widget.run(current_frame=False) is not None
    wait(qtbot, widget)
    assert errors == []
    volume = viewer.layers["activations: whisker video"]
    assert volume.data.shape == (480, 96, 30, 40)  # channels, frames, cells
    assert volume.metadata["flow_reused"] is True  # the GAP run's flow, kept by the worker
    np.testing.assert_allclose(volume.scale, [1, 1, 8, 8])
    np.testing.assert_allclose(volume.translate, [0, 0, 3.5, 3.5])
    for t in (0, 40, 95):  # Global Average Pooling is the spatial mean of the none output
        np.testing.assert_allclose(volume.data[:, t].mean(axis=(1, 2)), pooled[t], rtol=1e-4,
                                   atol=1e-6)  # fmt: skip
    assert volume.data[7].shape == (96, 30, 40)  # one channel's volume, what the 3-D view reads
    viewer.dims.ndisplay = 3
    viewer.dims.set_current_step(0, 7)
    shot = viewer.screenshot(canvas_only=True)
    assert shot.std() > 0
    viewer.dims.ndisplay = 2
    # The plots widget follows the frame axis behind the channel slider.
    plots = FeaturePlotsWidget(viewer)
    plots.source.value = viewer.layers["features: whisker video"]
    assert plots.frame_axis == 1
    viewer.dims.set_current_step(1, 33)
    assert plots._cursor.get_xdata()[0] == 33
    assert "tensorflow" not in sys.modules


def test_current_frame_behind_a_channel_slider(make_napari_viewer, qtbot, errors, monkeypatch):
    """With an activation volume (C, T, H', W') in the viewer, axis 0 is channels, not frames."""
    jobs: list[dict] = []

    class Recorder:  # stands in for the worker process: records the job, replies nothing
        def start(self):
            pass

        def iter_run(self, job, cancel=None):
            jobs.append(job)
            raise CancelledError("recorded")
            yield  # a generator, as the real one

    monkeypatch.setattr(_extract_widget, "model_worker", Recorder)
    viewer = make_napari_viewer()
    video = viewer.add_image(np.zeros((20, 32, 48), np.uint8), name="clip")
    viewer.add_image(np.zeros((6, 20, 4, 6), np.float32), name="activations: clip")
    viewer.dims.set_current_step(0, 4)  # channel 4
    viewer.dims.set_current_step(1, 13)  # frame 13
    widget = ExtractWidget(viewer)
    widget.source.value = video
    assert widget.run(current_frame=True) is not None
    wait(qtbot, widget)
    assert jobs[0]["settings"]["frames"] == [13] and widget.status.value == "cancelled"


def test_worker_warnings_become_notifications(make_napari_viewer, qtbot, errors, monkeypatch):
    """A warning the pipeline issues in the worker (a landmark outside the frame) reaches napari's
    notifications, and the start-up steps reach the progress bar's description."""
    warned: list[str] = []
    monkeypatch.setattr(_extract_widget, "show_warning", warned.append)
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    outside = viewer.add_points(np.array([[3, 10.0, 10.0], [4, 10.0, 5000.0]]), name="outside")
    widget = ExtractWidget(viewer)
    small_run(widget)
    widget.post_encoder.value = "Spatial Point Extraction"
    widget.points.value = outside
    descriptions: list[str] = []
    worker = widget.run(current_frame=False)
    worker.yielded.connect(lambda e: descriptions.append(str(widget._progress.desc)))
    wait(qtbot, widget)
    assert errors == []
    assert any("outside the 320x240 frame" in w for w in warned), warned
    assert any("running" in d for d in descriptions), descriptions


def test_save_settings_writes_the_yaml_extract_config_reads(make_napari_viewer, tmp_path):
    from napari_flow_features.config import ExtractorConfig
    from napari_flow_features.extract.batch import BatchSettings

    widget = ExtractWidget(make_napari_viewer())
    widget.endpoint.value = "Mixed_4f"
    widget.windowing.value = next(
        k for k, v in _extract_widget.WINDOWING_CHOICES.items() if v == "sliding"
    )
    widget.clip_length.value = 32
    widget.stride.value = 4
    widget.seed.value = 7
    widget.flow_method.value = "farneback"
    widget.post_encoder.value = "Spatial Point Extraction"
    widget.interpolation.value = next(
        k for k, v in _extract_widget.INTERPOLATION_CHOICES.items() if v == "nearest"
    )
    widget.min_confidence.value = 0.5
    path = widget.save_settings(str(tmp_path / "study.yaml"))
    settings = BatchSettings.from_yaml(path)
    assert settings == widget.batch_settings()
    assert settings.extractor == ExtractorConfig.from_dict({
        "endpoint": "Mixed_4f", "clip_length": 32, "stride": 4, "windowing": "sliding",
        "runtime": "auto", "stream": "flow", "weights": {"source": "random", "seed": 7},
    })  # fmt: skip
    assert (settings.post_encoder, settings.interpolation, settings.flow_method) == (
        "point", "nearest", "farneback")  # fmt: skip
    assert settings.min_confidence == 0.5 and settings.max_gap is None
    # The dock, the command line and the batch resize alike (issue 21: one default everywhere).
    assert settings.max_side == "auto"
    widget.resize.value = "full size"
    assert widget.batch_settings().max_side is None
    widget.resize.value, widget.max_side.value = "longest side (px)", 320
    assert widget.batch_settings().max_side == 320
    assert "tensorflow" not in sys.modules


def test_rgb_stream_runs_in_the_worker(make_napari_viewer, qtbot, errors):
    """The RGB stream (no optical flow) through the worker: TensorFlow stays out of this process."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    small_run(widget)
    widget.post_encoder.value = "Global Average Pooling"
    assert not widget.flow_method.native.isHidden()
    widget.stream.value = "rgb"
    assert widget.flow_method.native.isHidden()  # the RGB stream computes no flow
    assert widget.extractor_config()["stream"] == "rgb"
    assert widget.run(current_frame=False) is not None
    wait(qtbot, widget)
    assert errors == []
    # No optical flow for the RGB stream: only the encoder's bar, run to its end.
    assert widget.phase_progress == {"encoder": (96, 96)}
    assert widget._progress is None and widget._flow_progress is None  # closed, not left behind
    features = viewer.layers["features: whisker video"]
    assert features.data.shape == (96, 480) and np.isfinite(features.data).all()
    assert features.metadata["stream"] == "rgb" and features.metadata["flow_method"] is None
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_model_choice_defaults_to_pretrained(make_napari_viewer, monkeypatch):
    """Pretrained by default; the test conftest's NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS=random (what
    an offline CI sets) selects random weights instead."""
    viewer = make_napari_viewer()
    assert ExtractWidget(viewer).weights.value == "random weights"
    monkeypatch.delenv("NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS")
    widget = ExtractWidget(viewer)
    assert widget.weights.value == "DeepMind pretrained"
    assert widget.extractor_config()["weights"] == {"source": "pretrained"}
    widget.stream.value = "two-stream"
    widget.weights.value = "DeepMind checkpoint"
    assert not widget.rgb_checkpoint.native.isHidden() and widget.seed.native.isHidden()


def test_kinetics_predictions_of_the_current_frame(make_napari_viewer, qtbot, errors, tmp_path):
    """--predict from the dock: the worker runs the Logits network (TensorFlow stays in the worker;
    the DeepMind-layout checkpoint of random values is written by another process too)."""
    import subprocess
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "core"
    prefix = tmp_path / "rgb" / "model.ckpt"
    prefix.parent.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(core)!r}); from test_predictions import "
            f"write_scaled_checkpoint; write_scaled_checkpoint({str(prefix)!r}, 'rgb_imagenet', 2)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    viewer = make_napari_viewer()
    frames = np.stack([np.roll(np.tile(np.arange(224, dtype=np.uint8), (224, 1)), 3 * t, 1)
                       for t in range(16)])  # fmt: skip
    viewer.add_image(frames, name="clip")
    widget = ExtractWidget(viewer)
    widget.replace.value = True
    widget.stream.value = "rgb"
    widget.weights.value = "DeepMind checkpoint"
    widget.checkpoint.value = str(prefix) + ".index"
    widget.predict.value = True
    assert widget.extractor_config()["endpoint"] == "Logits"
    assert widget.run(current_frame=False) is not None
    wait(qtbot, widget)
    assert errors == []
    meta = viewer.layers["features: clip"].metadata
    best = meta["predictions"][0]["labels"][0]
    viewer.dims.set_current_step(0, 5)
    assert widget.predictions.value.startswith(f"Kinetics, frame 5: {best} ")
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_region_and_max_side_runs_sit_over_the_video(make_napari_viewer, qtbot, errors, tmp_path):
    """A Shapes rectangle as the region and frames resized before flow and encoder: the heatmap's
    cells cover exactly the rectangle, in video pixels, and the kept flow is written."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    video = viewer.layers["whisker video"]
    widget = ExtractWidget(viewer)
    small_run(widget)
    viewer.add_shapes([np.array([[40.0, 60.0], [40.0, 220.0], [200.0, 220.0], [200.0, 60.0]])],
                      shape_type="rectangle", name="box")  # fmt: skip
    widget.roi.value = viewer.layers["box"]
    assert _extract_widget.roi_from_shapes(viewer.layers["box"], video) == (60, 40, 161, 161)
    widget.resize.value, widget.max_side.value = "longest side (px)", 96
    widget.heatmap.value = next(
        k for k, v in _extract_widget.HEATMAP_CHOICES.items() if v == "mean"
    )
    widget.keep_flow.value = str(tmp_path / "kept.npy")
    assert widget.run(current_frame=False) is not None
    wait(qtbot, widget)
    assert errors == []
    heat = viewer.layers["heatmap: whisker video"]
    assert heat.metadata["roi_xywh"] == [60, 40, 161, 161] and heat.metadata["work_shape"] == [
        96,
        96,
    ]
    # The heatmap's cells cover the rectangle's pixels exactly (pixel edges at ±0.5).
    for axis, start, size in ((1, 40, 161), (2, 60, 161)):
        first_edge = heat.translate[axis] - heat.scale[axis] / 2
        last_edge = first_edge + heat.data.shape[axis] * heat.scale[axis]
        assert np.isclose(first_edge, start - 0.5) and np.isclose(last_edge, start + size - 0.5)
    assert (tmp_path / "kept.npy").is_file()
    assert "tensorflow" not in sys.modules
