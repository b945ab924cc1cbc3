"""Values pinned at borders, thresholds and sizes the strides do not divide (issue 21, point 3).

Every expected value comes from ``pinned_reference`` (DESIGN.md's formulas written again) or from
the test's own arithmetic, never from the code under test. The maps here scale differently along
x and y, so swapping the two scale factors fails; the confidence threshold is tried 1 ulp either
side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pinned_reference import at_time, bilinear, nearest, rescale, resized_hw

from napari_flow_features.cli import build_parser
from napari_flow_features.extract.landmarks import landmarks_from_args
from napari_flow_features.extract.post_encoders import (
    gap,
    inside_frame,
    interpolate_time,
    sample_point,
)
from napari_flow_features.extract.streaming import select_frames

# (frame H, W) → (map H', W'): a 200x120 frame at strides 16 and 32, and a strongly anisotropic one.
CASES = [((120, 200), (8, 13)), ((120, 200), (4, 7)), ((30, 200), (8, 4))]


def random_map(map_hw: tuple[int, int], channels: int = 3, seed: int = 0) -> np.ndarray:
    """Distinct values in every cell, so a sample names the cell (and blend) it came from."""
    return np.random.default_rng(seed).normal(size=(*map_hw, channels)).astype(np.float32)


@pytest.mark.parametrize(("in_hw", "map_hw"), CASES)
def test_cell_centres_give_the_cell_exactly(in_hw, map_hw):
    """Pixel ``x = (j + 0.5) * W / W' - 0.5`` is cell j's centre: both interpolations return it."""
    (h, w), (mh, mw) = in_hw, map_hw
    fmap = random_map(map_hw)
    for i in range(mh):
        for j in range(mw):
            x, y = (j + 0.5) * w / mw - 0.5, (i + 0.5) * h / mh - 0.5
            np.testing.assert_allclose(sample_point(fmap, x, y, in_hw), fmap[i, j], atol=1e-5)
            np.testing.assert_array_equal(sample_point(fmap, x, y, in_hw, "nearest"), fmap[i, j])


@pytest.mark.parametrize(("in_hw", "map_hw"), CASES)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_samples_equal_the_reference_inside_and_on_the_borders(in_hw, map_hw, interpolation):
    h, w = in_hw
    fmap = random_map(map_hw, seed=1)
    rng = np.random.default_rng(2)
    xs, ys = rng.uniform(-0.5, w - 0.5, 40), rng.uniform(-0.5, h - 0.5, 40)
    points = list(zip(xs.tolist(), ys.tolist(), strict=True))
    # The outer pixel edges and the corners: u and v clamp to the first or last cell.
    edges_x, edges_y = (-0.5, 0.0, w / 2, w - 1.0, w - 0.5), (-0.5, 0.0, h / 2, h - 1.0, h - 0.5)
    points += [(x, y) for x in edges_x for y in edges_y]
    reference = bilinear if interpolation == "bilinear" else nearest
    for x, y in points:
        got = sample_point(fmap, x, y, in_hw, interpolation)
        np.testing.assert_allclose(got, reference(fmap, x, y, in_hw), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("in_hw", "map_hw"), CASES)
def test_border_pixels_clamp_and_beyond_them_is_nan(in_hw, map_hw):
    (h, w), (mh, mw) = in_hw, map_hw
    fmap = random_map(map_hw, seed=3)
    for how in ("bilinear", "nearest"):
        # x = -0.5 is u = -0.5 → column 0; x = W - 0.5 is u = W' - 0.5 → column W' - 1.
        np.testing.assert_allclose(sample_point(fmap, -0.5, -0.5, in_hw, how), fmap[0, 0])
        np.testing.assert_allclose(
            sample_point(fmap, w - 0.5, h - 0.5, in_hw, how), fmap[mh - 1, mw - 1]
        )
        np.testing.assert_allclose(sample_point(fmap, w - 0.5, -0.5, in_hw, how), fmap[0, mw - 1])
        for x, y in ((-0.5 - 1e-9, 0.0), (w - 0.5 + 1e-9, 0.0), (0.0, -0.5 - 1e-9),
                     (0.0, h - 0.5 + 1e-9)):  # fmt: skip
            assert not inside_frame(x, y, in_hw)
            assert np.isnan(sample_point(fmap, x, y, in_hw, how)).all()
    assert inside_frame(-0.5, h - 0.5, in_hw) and inside_frame(w - 0.5, -0.5, in_hw)


def test_nearest_rounds_halves_up_along_each_axis():
    """A 200x30 frame on a 4x8 map: 50 px per column, 3.75 px per row (u, v exactly .5)."""
    fmap = random_map((8, 4), seed=4)
    for i in range(7):
        for j in range(3):
            x, y = 50.0 * (j + 1) - 0.5, 3.75 * (i + 1) - 0.5  # u = j + 0.5, v = i + 0.5
            np.testing.assert_array_equal(
                sample_point(fmap, x, y, (30, 200), "nearest"), fmap[i + 1, j + 1]
            )
            below = sample_point(
                fmap, np.nextafter(x, -1), np.nextafter(y, -1), (30, 200), "nearest"
            )
            np.testing.assert_array_equal(below, fmap[i, j])


def test_gap_is_the_mean_of_every_cell_of_an_anisotropic_map():
    fmap = random_map((8, 13), channels=5, seed=5)
    total = np.zeros(5)
    for i in range(8):
        for j in range(13):
            total += fmap[i, j]
    np.testing.assert_allclose(gap(fmap), total / (8 * 13), rtol=1e-5)
    np.testing.assert_allclose(gap(fmap[None, None])[0, 0], total / (8 * 13), rtol=1e-5)


def test_time_interpolation_of_random_maps():
    maps = np.random.default_rng(6).normal(size=(5, 3, 4, 2))
    for tau in (0.0, 0.3, 1.75, 3.5, 4.0):
        np.testing.assert_allclose(interpolate_time(maps, tau), at_time(maps, tau), rtol=1e-12)
    np.testing.assert_allclose(interpolate_time(maps, 2.25), 0.75 * maps[2] + 0.25 * maps[3])


def test_video_pixels_map_to_the_resized_region_by_pixel_centres():
    """A 300x190 region resized to 256 wide is 162 high: x and y scale by 256/300 and 162/190."""
    sel = select_frames(20, (200, 320), roi=(12, 8, 300, 190), max_side=256)
    assert sel.work_hw == resized_hw((190, 300), 256) == (162, 256)
    # The region's outer pixel edges land on the work frame's outer pixel edges.
    x, y = sel.to_work(np.array([12 - 0.5, 12 + 300 - 0.5]), np.array([8 - 0.5, 8 + 190 - 0.5]))
    np.testing.assert_allclose(x, [-0.5, 255.5])
    np.testing.assert_allclose(y, [-0.5, 161.5])
    for vx, vy in ((40.0, 30.0), (250.3, 170.9), (12.0, 197.0)):
        expected = rescale(vx - 12, vy - 8, (190, 300), (162, 256))
        np.testing.assert_allclose(sel.to_work(np.asarray(vx), np.asarray(vy)), expected)


# -- the --min-confidence threshold: "points below it count as missing" (docs/landmarks.md) ------
THRESHOLD = 0.6
BELOW, ABOVE = np.nextafter(THRESHOLD, 0.0), np.nextafter(THRESHOLD, 1.0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_confidence_exactly_at_the_threshold_is_kept_one_ulp_below_is_missing(tmp_path, suffix):
    confidence = [THRESHOLD, BELOW, ABOVE, THRESHOLD, 1.0, BELOW]
    table = pd.DataFrame({
        "frame": np.arange(6), "landmark": "snout", "x": np.arange(6) + 10.0,
        "y": np.arange(6) + 20.0, "confidence": confidence,
    })  # fmt: skip
    path = tmp_path / f"points{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    argv = ["extract", "video.mp4", "-o", str(tmp_path / "f.parquet"), "--post-encoder", "point",
            "--points", str(path), "--min-confidence", repr(THRESHOLD)]  # fmt: skip
    args = build_parser().parse_args(argv)
    args.source = args.sources[0]
    landmarks = landmarks_from_args(args, source=np.zeros((6, 32, 32), np.uint8))
    kept = np.array([c >= THRESHOLD for c in confidence])
    assert kept.tolist() == [True, False, True, True, True, False]
    xy = landmarks.xy[0]
    assert np.isfinite(xy).all(axis=1).tolist() == kept.tolist()
    np.testing.assert_array_equal(xy[kept], table[["x", "y"]].to_numpy()[kept])
    assert landmarks.masked == 2 and landmarks.metadata()["low_confidence_positions"] == 2
    # The tracker's confidence is kept exactly (the reason a row is missing stays visible).
    assert landmarks.confidence is not None
    assert landmarks.confidence[0].tolist() == confidence
    assert landmarks.metadata()["landmark_min_confidence"] == THRESHOLD
