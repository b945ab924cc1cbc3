"""Flow colour coding and arrow grids."""

from __future__ import annotations

import numpy as np

from napari_flow_features.flow.colour import (
    COLOUR_WHEEL,
    LazyFlowColour,
    flow_to_colour,
    flow_vectors,
)


def test_wheel_has_55_middlebury_colours():
    assert COLOUR_WHEEL.shape == (55, 3)
    np.testing.assert_array_equal(COLOUR_WHEEL[0], [255, 0, 0])  # first ramp starts red
    np.testing.assert_array_equal(COLOUR_WHEEL[15], [255, 255, 0])  # then yellow


def test_directions_and_speed():
    flow = np.zeros((1, 5, 2), np.float32)
    flow[0, 1] = [4, 0]  # right
    flow[0, 2] = [-4, 0]  # left
    flow[0, 3] = [2, 0]  # right, half speed
    flow[0, 4] = [np.nan, 0]
    rgb = flow_to_colour(flow, max_magnitude=4)
    np.testing.assert_array_equal(rgb[0, 0], [255, 255, 255])  # still = white
    # Middlebury: right is red, left is cyan.
    np.testing.assert_array_equal(rgb[0, 1], [255, 0, 0])
    assert rgb[0, 2, 0] == 0 and rgb[0, 2, 1] > 150 and rgb[0, 2, 2] == 255
    # Half the speed: halfway between white and the full colour.
    np.testing.assert_allclose(rgb[0, 3].astype(float), [255, 127.5, 127.5], atol=1)
    np.testing.assert_array_equal(rgb[0, 4], [0, 0, 0])


def test_lazy_colour_matches_eager():
    seq = np.random.default_rng(0).normal(0, 3, (6, 8, 10, 2)).astype(np.float32)
    lazy = LazyFlowColour(seq, max_magnitude=5.0)
    assert lazy.shape == (6, 8, 10, 3)
    np.testing.assert_array_equal(lazy[2], flow_to_colour(seq[2], 5.0))
    np.testing.assert_array_equal(lazy[1:4, 2:5, :, 0], flow_to_colour(seq[1:4, 2:5], 5.0)[..., 0])


def test_vectors_grid():
    seq = np.zeros((3, 32, 48, 2), np.float32)
    seq[..., 0] = 2.0  # dx
    seq[1, ..., 1] = -1.0  # dy at t=1
    vec = flow_vectors(seq, step=8)
    assert vec.shape == (3 * 4 * 6, 2, 3)
    first = vec[0]
    np.testing.assert_array_equal(first[0], [0, 4, 4])  # (t, y, x) at the first cell centre
    np.testing.assert_array_equal(first[1], [0, 0, 2])  # (0, dy, dx)
    assert np.all(vec[vec[:, 0, 0] == 1][:, 1, 1] == -1)
    assert len(flow_vectors(seq, step=2, max_vectors=100)) <= 100
    single = flow_vectors(seq[0], step=16)
    assert single.shape == (2 * 3, 2, 2)
