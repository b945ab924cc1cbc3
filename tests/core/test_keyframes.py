"""Filling between clicked keyframes: linear, and along the optical flow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.keyframes import fill_keyframe_table, fill_keyframes
from napari_flow_features.flow.compute import compute_flow
from napari_flow_features.sample import make_whisker_sample


def test_linear_fill_is_exact_on_linear_motion():
    t = np.arange(31.0)
    truth = np.stack([5 + 1.5 * t, 40 - 0.75 * t], axis=1)  # (x, y)
    keys = np.array([[f, truth[f, 1], truth[f, 0]] for f in (3, 10, 30)])
    filled = fill_keyframes(keys, 40, "linear")
    np.testing.assert_allclose(filled[3:31], truth[3:31], atol=1e-12)
    assert np.isnan(filled[:3]).all() and np.isnan(filled[31:]).all()  # outside the keyframes


def test_flow_fill_is_exact_on_a_known_uniform_motion():
    # 2 px/frame right, accelerating down by 0.1 px/frame each frame: a curved, non-linear path
    n = 21
    dy = 0.1 * np.arange(n - 1)
    flow = np.zeros((n - 1, 40, 60, 2))
    flow[..., 0] = 2.0
    flow[..., 1] = dy[:, None, None]
    y = 5 + np.concatenate([[0], np.cumsum(dy)])
    truth = np.stack([3 + 2.0 * np.arange(n), y], axis=1)
    keys = np.array([[0, truth[0, 1], truth[0, 0]], [20, truth[20, 1], truth[20, 0]]])
    np.testing.assert_allclose(fill_keyframes(keys, n, "flow", flow=flow), truth, atol=1e-9)
    assert np.abs(fill_keyframes(keys, n, "linear") - truth).max() > 4


@pytest.fixture(scope="module")
def swinging():
    sample = make_whisker_sample(n_frames=41, height=96, width=128, period=60.0,
                                 amplitude_deg=25.0, thickness=9.0, landmark_radius=45.0)  # fmt: skip
    return sample, compute_flow(sample.video, "dis")


def test_flow_fill_beats_linear_on_non_linear_motion(swinging):
    sample, flow = swinging
    truth = sample.landmarks[:, [2, 1]]
    keys = sample.landmarks[::20]  # frames 0, 20, 40
    err = {
        m: np.linalg.norm(fill_keyframes(keys, 41, m, flow=flow) - truth, axis=1)
        for m in ("linear", "flow")
    }
    mid = [10, 30]  # 10 frames from a keyframe
    assert err["linear"][mid].mean() > 5  # the swing is far from straight
    assert err["flow"][mid].mean() < err["linear"][mid].mean() / 3
    assert err["flow"][[0, 20, 40]].max() == 0  # keyframes are kept exactly


def test_table_fill_keeps_each_landmark_and_marks_keyframes(swinging):
    sample, flow = swinging
    keys = sample.landmarks[[0, 20]]
    # a napari-deeplabcut-shaped layer: label (body part) and id (individual)
    table = pd.DataFrame({"frame": np.r_[keys[:, 0], [5, 15]], "x": np.r_[keys[:, 2], [10, 20]],
                          "y": np.r_[keys[:, 1], [30, 50]], "label": ["base"] * 2 + ["tip"] * 2,
                          "id": ["m1"] * 4})  # fmt: skip
    out = fill_keyframe_table(table, 41, "flow", flow=flow)
    assert list(out.columns) == ["frame", "x", "y", "id", "label", "keyframe"]
    base = out[out["label"] == "base"]
    assert base["frame"].tolist() == list(range(21)) and base["keyframe"].sum() == 2
    tip = out[out["label"] == "tip"]
    assert tip["frame"].tolist() == list(range(5, 16))


def test_bad_keyframes_are_named():
    with pytest.raises(BadInputError, match="at least 2 keyframes"):
        fill_keyframes(np.array([[0, 1.0, 1.0], [0, 2.0, 2.0]]), 5)
    with pytest.raises(BadInputError, match="frame 7 but the video has 5 frames"):
        fill_keyframes(np.array([[0, 1.0, 1.0], [7, 2.0, 2.0]]), 5)
    with pytest.raises(BadInputError, match="needs the flow"):
        fill_keyframes(np.array([[0, 1.0, 1.0], [4, 2.0, 2.0]]), 5, "flow")
    with pytest.raises(BadInputError, match="tip: Filling between keyframes needs at least 2"):
        fill_keyframe_table(pd.DataFrame({"frame": [0, 3, 1], "x": 1.0, "y": 1.0,
                                          "label": ["base", "base", "tip"]}), 5)  # fmt: skip
