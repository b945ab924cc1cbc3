"""The synthetic whisker sample: deterministic, and its ground truth agrees with its pixels."""

from __future__ import annotations

import numpy as np

from napari_flow_features.sample import make_whisker_sample


def test_shapes_and_determinism():
    a, b = make_whisker_sample(), make_whisker_sample()
    assert a.video.shape == (96, 240, 320) and a.video.dtype == np.uint8
    assert (
        a.ground_truth_flow.shape == (95, 240, 320, 2) and a.ground_truth_flow.dtype == np.float32
    )
    assert a.landmarks.shape == (96, 3)
    assert np.array_equal(a.video, b.video)
    assert not np.array_equal(a.video, make_whisker_sample(seed=1).video)


def test_landmark_sits_on_the_bar():
    s = make_whisker_sample()
    for t, y, x in s.landmarks:
        assert s.video[int(t), round(y), round(x)] > 160  # bar is bright, background ≤ 160


def test_ground_truth_moves_the_landmark_to_its_next_position():
    s = make_whisker_sample()
    for t in range(0, 95, 7):
        _, y, x = s.landmarks[t]
        dx, dy = s.ground_truth_flow[t, round(y), round(x)]
        # The flow at the rounded pixel is the rotation of that pixel; compare displacement.
        ny, nx = s.landmarks[t + 1, 1:]
        assert abs((x + dx) - nx) < 0.3 and abs((y + dy) - ny) < 0.3


def test_ground_truth_warp_reproduces_the_frame():
    """Sampling frame t+1 at p + flow[t](p) gives frame t on the bar (brightness constancy)."""
    s = make_whisker_sample()
    t = 5
    gt = s.ground_truth_flow[t]
    ys, xs = np.nonzero(np.hypot(gt[..., 0], gt[..., 1]) > 0)
    ty = np.clip(np.round(ys + gt[ys, xs, 1]).astype(int), 0, 239)
    tx = np.clip(np.round(xs + gt[ys, xs, 0]).astype(int), 0, 319)
    warped = s.video[t + 1, ty, tx].astype(float)
    still = s.video[t + 1, ys, xs].astype(float)
    original = s.video[t, ys, xs].astype(float)
    assert np.abs(warped - original).mean() < 0.5 * np.abs(still - original).mean()


def test_background_is_static_and_direction_labels_follow_the_angle():
    s = make_whisker_sample()
    moving = np.hypot(s.ground_truth_flow[..., 0], s.ground_truth_flow[..., 1]) > 0
    assert moving.mean() < 0.05  # only the bar moves
    d = np.sign(np.diff(s.angles_deg))
    assert np.array_equal(s.swing_direction[:-1], d.astype(np.int8))
    assert set(np.unique(s.swing_direction)) == {-1, 1}
