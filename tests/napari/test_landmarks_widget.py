"""Landmarks in the extraction dock: tracks files, other plugins' Points layers, keyframe filling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from movement.io import load_poses, save_poses
from movement.napari.convert import ds_to_napari_layers

from napari_flow_features.extract.landmarks import landmarks_from_points
from napari_flow_features.napari._qt import extract_widget as _extract_widget
from napari_flow_features.napari._qt.extract_widget import ExtractWidget, points_table
from napari_flow_features.napari._qt.plots_widget import layer_series
from napari_flow_features.sample import make_whisker_sample

PLUGIN = "napari-flow-features"
N = 96  # frames of the sample


@pytest.fixture
def notes(monkeypatch):
    seen: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr(_extract_widget, "show_error", seen["error"].append)
    monkeypatch.setattr(_extract_widget, "show_warning", seen["warning"].append)
    return seen


def two_animals(n=N):
    """movement dataset: 2 individuals x 2 keypoints on the sample's frame, known positions."""
    t = np.arange(n)[:, None, None]
    k = np.arange(2)[None, :, None]
    i = np.arange(2)[None, None, :]
    x = 60.0 + 30 * k + 80 * i + 0.2 * t
    y = 50.0 + 25 * k + 40 * i + 0 * t
    pos = np.stack([x, y], axis=1)  # time, space, keypoints, individuals
    conf = np.broadcast_to(0.5 + 0.1 * k + 0.2 * i + 0 * t, (n, 2, 2)).copy()
    return load_poses.from_numpy(pos, conf, individual_names=["m1", "m2"],
                                 keypoint_names=["snout", "ear"])  # fmt: skip


def test_deeplabcut_and_movement_layers_give_the_same_landmarks(make_napari_viewer):
    viewer = make_napari_viewer()
    ds = two_animals(10)
    tracks, _, props = ds_to_napari_layers(ds)  # what movement's napari loader adds
    movement_layer = viewer.add_points(tracks[:, 1:], features=props, name="movement")
    # napari-deeplabcut: label = body part, id = individual, likelihood, valid
    dlc_feats = pd.DataFrame({"label": props["keypoint"], "id": props["individual"],
                              "likelihood": props["confidence"], "valid": True})  # fmt: skip
    dlc_layer = viewer.add_points(tracks[:, 1:], features=dlc_feats, name="dlc")
    a = landmarks_from_points(points_table(movement_layer), 10, min_confidence=0.65)
    b = landmarks_from_points(points_table(dlc_layer), 10, min_confidence=0.65)
    assert a.ids == b.ids == ["m1/snout", "m1/ear", "m2/snout", "m2/ear"]
    np.testing.assert_array_equal(a.xy, b.xy)
    assert a.masked == b.masked == 20  # m1/snout (0.5) and m1/ear (0.6) on 10 frames
    np.testing.assert_allclose(a.xy[3, 4], ds.position.values[4, :, 1, 1])
    # the plots dock groups both layers' points the same way
    for layer in (movement_layer, dlc_layer):
        layer.features["f0000"] = np.arange(len(layer.data), dtype=float)
    names = [[name for name, _ in layer_series(layer)] for layer in (movement_layer, dlc_layer)]
    assert names[0] == names[1] == ["m1/snout", "m1/ear", "m2/snout", "m2/ear"]


def test_load_tracks_adds_a_points_layer_checked_against_the_video(
    make_napari_viewer, tmp_path, notes
):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    ds = two_animals()
    ds["position"][5, :, 0, 0] = np.nan  # m1/snout lost at frame 5
    path = tmp_path / "whiskerDLC_resnet50.h5"
    save_poses.to_dlc_file(ds, path, split_individuals=False)
    layer = widget.load_tracks(str(path))
    assert layer.name == "tracks: whiskerDLC_resnet50" and len(layer.data) == 4 * N - 1
    assert list(layer.features.columns) == ["individual", "keypoint", "confidence"]
    assert widget.points.value is layer and widget.post_encoder.value == "Spatial Point Extraction"
    assert not widget.load_tracks_button.native.isHidden()
    widget.max_gap.value = 1
    lm = widget.landmarks(layer, viewer.layers["whisker video"])
    assert lm.filled == 1 and lm.ids[0] == "m1/snout"
    np.testing.assert_allclose(lm.xy[0, 5], ds.position.values[[4, 6], :, 0, 0].mean(axis=0))
    # a track file of another video: the run does not start and the error names both lengths
    short = tmp_path / "short.h5"
    save_poses.to_dlc_file(two_animals(N - 6), short, split_individuals=False)
    widget.load_tracks(str(short))
    assert widget.run() is None
    assert notes["error"] and "tracks have 90 frames but the video has 96" in notes["error"][-1]


def test_positions_outside_the_frame_become_a_notification(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    points = viewer.add_points(np.array([[0, 10.0, 10.0], [1, 10.0, 500.0]]), name="clicks")
    widget.landmarks(points, viewer.layers["whisker video"])
    assert len(notes["warning"]) == 1
    assert notes["warning"][0].startswith(
        "clicks: 1 landmark position lies more than 16.0 px (half a feature cell) outside the "
        "320x240 frame: their rows are NaN (first: frame 1"
    )


def test_fill_between_keyframes_linear_and_along_the_flow(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    sample = make_whisker_sample(n_frames=41, height=96, width=128, period=60.0,
                                 amplitude_deg=25.0, thickness=9.0, landmark_radius=45.0)  # fmt: skip
    viewer.add_image(sample.video, name="video", metadata={"source_type": "video"})
    keys = viewer.add_points(sample.landmarks[[0, 20, 40]], name="keys",
                             features=pd.DataFrame({"track_id": [1, 1, 1]}))  # fmt: skip
    widget = ExtractWidget(viewer)
    widget.source.value = viewer.layers["video"]
    widget.post_encoder.value = "Spatial Point Extraction"
    widget.points.value = keys
    truth = sample.landmarks[:, [2, 1]]

    widget.fill_method.value = "linearly"
    linear = widget.fill_keyframes()
    assert linear.name == "filled: keys" and len(linear.data) == 41
    assert linear.features["keyframe"].sum() == 3 and (linear.features["track_id"] == 1).all()
    err_linear = np.linalg.norm(linear.data[:, [2, 1]] - truth, axis=1)

    widget.fill_method.value = "along the optical flow"
    assert widget.fill_keyframes() is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert notes["error"] == []
    flow = viewer.layers["filled: keys"]
    assert flow is not linear and len(flow.data) == 41
    err_flow = np.linalg.norm(flow.data[:, [2, 1]] - truth, axis=1)
    assert err_flow[[10, 30]].mean() < err_linear[[10, 30]].mean() / 3
    # the filled layer is a landmark layer like any other: it runs as extraction input
    lm = widget.landmarks(flow, viewer.layers["video"])
    assert lm.ids == [1] and np.isfinite(lm.xy).all()


def test_extraction_at_tracked_landmarks_puts_features_on_every_point(
    make_napari_viewer, qtbot, tmp_path, notes
):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")
    widget = ExtractWidget(viewer)
    widget.endpoint.value, widget.clip_length.value, widget.stride.value = "Mixed_3c", 8, 8
    widget.replace.value = True  # results under the names 'features: <source>'
    path = tmp_path / "whiskerDLC_resnet50.csv"
    save_poses.to_dlc_file(two_animals(), path, split_individuals=False)
    layer = widget.load_tracks(str(path))
    assert widget.run(current_frame=False) is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=180_000)
    assert notes["error"] == []
    image = viewer.layers["features: whisker video"]
    assert image.data.shape[:2] == (4, N)  # one (T, C) plane per landmark
    assert image.metadata["landmarks"] == ["m1/snout", "m1/ear", "m2/snout", "m2/ear"]
    cols = [c for c in layer.features.columns if c.startswith("f0")]
    assert cols and np.isfinite(layer.features[cols].to_numpy()).all()
    # each point carries its own landmark's row: m2/ear at frame 7 is plane 3, row 7
    i = np.flatnonzero((layer.features["individual"] == "m2").to_numpy()
                       & (layer.features["keypoint"] == "ear").to_numpy()
                       & (np.rint(layer.data[:, 0]) == 7))[0]  # fmt: skip
    np.testing.assert_allclose(layer.features.loc[i, cols].to_numpy(float), image.data[3, 7])
