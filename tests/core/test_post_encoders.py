"""Post-encoders and the per-frame row rule against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.post_encoders import (
    assign_frames,
    gap,
    inside_frame,
    interpolate_time,
    point_to_cell,
    sample_point,
)


def test_nearest_window_centre_and_tau():
    # 40 frames, L=16, S=8: starts 0, 8, 16, 24; centres 7.5, 15.5, 23.5, 31.5. T' = 2.
    a = assign_frames([0, 8, 16, 24], 40, 16, 2)
    assert a.window[0] == 0 and a.window[11] == 0 and a.window[12] == 1  # |11-7.5|<|11-15.5|
    assert a.window[39] == 3
    # t=11 in window 0: tau = (11 - 0 + 0.5) * 2/16 - 0.5 = 0.9375
    assert a.tau[11] == pytest.approx(0.9375)
    # t=12 in window 1 (s=8): tau = (4.5) * 2/16 - 0.5 = 0.0625
    assert a.tau[12] == pytest.approx(0.0625)
    assert a.tau[0] == 0.0 and a.tau[39] == 1.0  # clamped: (0.5/8 - 0.5) < 0, (15.5/8 - 0.5) > 1


def test_tie_goes_to_the_earlier_window():
    # L=4, starts 0 and 2: centres 1.5 and 3.5; frame 2.5 does not exist, frame 2 → |0.5| vs |1.5|.
    a = assign_frames([0, 1], 5, 4, 4)  # centres 1.5, 2.5: frame 2 is 0.5 from both
    assert a.window[2] == 0


def test_short_video_uses_the_one_window():
    a = assign_frames([0], 5, 16, 2)
    assert (a.window == 0).all()
    np.testing.assert_allclose(a.tau, np.clip((np.arange(5) + 0.5) * 2 / 16 - 0.5, 0, 1))


def test_interpolate_time():
    maps = np.arange(3, dtype=float)[:, None] * np.ones((3, 4))
    np.testing.assert_allclose(interpolate_time(maps, 0.25), 0.25)
    np.testing.assert_allclose(interpolate_time(maps, 2.0), 2.0)
    np.testing.assert_allclose(interpolate_time(maps, 1.5), 1.5)


def test_gap_is_the_spatial_mean():
    fmap = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(gap(fmap), fmap.mean(axis=(1, 2)))
    assert gap(fmap).shape == (2, 5)


def ramp_map(mh=4, mw=5):
    """Channel 0 = column index, channel 1 = row index: samples reveal (u, v)."""
    rows, cols = np.mgrid[0:mh, 0:mw].astype(np.float32)
    return np.stack([cols, rows], axis=-1)


def test_align_corners_false_mapping():
    # A 64x80 frame onto a 4x5 map: a cell is 16 px; pixel centre 7.5 is cell centre 0.
    assert point_to_cell(7.5, 7.5, (64, 80), (4, 5)) == (0.0, 0.0)
    assert point_to_cell(23.5, 55.5, (64, 80), (4, 5)) == (1.0, 3.0)
    assert point_to_cell(-0.5, -0.5, (64, 80), (4, 5)) == (-0.5, -0.5)


def test_bilinear_at_fractional_positions_and_borders():
    fmap = ramp_map()
    # x=15.5 → u=0.5; y=31.5 → v=1.5: halfway between cells.
    np.testing.assert_allclose(sample_point(fmap, 15.5, 31.5, (64, 80)), [0.5, 1.5])
    # x=11.5 → u=0.25
    np.testing.assert_allclose(sample_point(fmap, 11.5, 7.5, (64, 80))[0], 0.25)
    # Border: x=0 → u=-0.47 → clamped to 0; y=63.9 → v=3.49 → clamped to 3.
    np.testing.assert_allclose(sample_point(fmap, 0.0, 63.4, (64, 80)), [0.0, 3.0])
    # A non-ramp check: bilinear of 4 known corners.
    f = np.zeros((2, 2, 1), np.float32)
    f[..., 0] = [[1, 2], [3, 4]]
    # 2x2 map on a 4x4 frame: x=2 → u=(2.5)*2/4-0.5=0.75; y=1 → v=0.25
    expected = (1 - 0.25) * ((1 - 0.75) * 1 + 0.75 * 2) + 0.25 * ((1 - 0.75) * 3 + 0.75 * 4)
    assert sample_point(f, 2.0, 1.0, (4, 4))[0] == pytest.approx(expected)


def test_nearest_rounds_half_up_and_clamps():
    fmap = ramp_map()
    # u = 0.5 exactly (x=15.5): floor(1.0) = 1
    assert sample_point(fmap, 15.5, 7.5, (64, 80), "nearest")[0] == 1
    assert sample_point(fmap, 15.4, 7.5, (64, 80), "nearest")[0] == 0
    assert sample_point(fmap, 79.4, 63.4, (64, 80), "nearest").tolist() == [4, 3]


def test_resize_aware_mapping():
    """A point at the same place in a full-size and a half-size frame samples the same cell."""
    fmap = ramp_map()
    full = sample_point(fmap, 40.0, 20.0, (64, 80))
    half = sample_point(fmap, (40.0 + 0.5) / 2 - 0.5, (20.0 + 0.5) / 2 - 0.5, (32, 40))
    np.testing.assert_allclose(full, half, atol=1e-6)


def test_outside_or_nan_points_give_nan():
    fmap = ramp_map()
    assert not inside_frame(-0.6, 10, (64, 80)) and inside_frame(-0.5, 10, (64, 80))
    assert np.isnan(sample_point(fmap, 80.0, 10.0, (64, 80))).all()
    assert np.isnan(sample_point(fmap, 10.0, np.nan, (64, 80), "nearest")).all()
    with pytest.raises(BadInputError, match="bilinear or nearest"):
        sample_point(fmap, 1, 1, (64, 80), "cubic")
