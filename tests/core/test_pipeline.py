"""The extraction pipeline end to end with a real Keras I3D."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.errors import BadInputError, CancelledError
from napari_flow_features.extract.pipeline import (
    extract_features,
    extract_frame,
    landmarks_from_points,
)
from napari_flow_features.extract.post_encoders import gap, interpolate_time
from napari_flow_features.model.extractor import DynamicFeatureExtractor


@pytest.fixture(scope="module")
def extractor():
    return DynamicFeatureExtractor(endpoint="Mixed_3c", clip_length=8, stride=4, batch_size=2)


def blob_flow(n=11, h=96, w=128, cy=40, cx=40, dx=4.0):
    """Still flow except a 12x12 patch moving right by dx px/frame, centred at (cy, cx)."""
    flow = np.zeros((n, h, w, 2), np.float32)
    flow[:, cy - 6 : cy + 6, cx - 6 : cx + 6, 0] = dx
    return flow


@pytest.mark.parametrize(
    "windowing, maps_shape",
    [("sliding", (3, 4, 4, 6, 480)), ("chunked", (1, 8, 4, 6, 480))],  # starts 0, 4, 8 | one pass
)
def test_gap_is_the_spatial_mean_of_the_none_maps(extractor, tmp_path, windowing, maps_shape):
    flow = np.random.default_rng(0).normal(0, 4, (15, 32, 48, 2)).astype(np.float32)
    none = extract_features(
        flow, extractor, post_encoder="none", maps_path=tmp_path / "maps.npy", windowing=windowing
    )
    assert (tmp_path / "maps.npy").is_file() and none.feature_maps.shape == maps_shape
    # No partial file left; the maps' sidecar records their SHA-256.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npy", "maps.npy.json"]
    assert list(none.table.columns) == ["frame", "window", "tau"] and len(none.table) == 16
    g = extract_features(flow, extractor, post_encoder="gap", windowing=windowing)
    assert len(g.table) == 16 and g.table.columns[0] == "frame"
    for t in (0, 7, 15):
        row = none.table.iloc[t]
        expected = gap(interpolate_time(np.asarray(none.feature_maps[int(row.window)]), row.tau))
        np.testing.assert_allclose(
            g.table.iloc[t, 1:].to_numpy(float), expected, rtol=1e-5, atol=1e-6
        )


def test_shifting_the_motion_by_32_px_moves_the_point_features(extractor):
    a = blob_flow(cx=40)
    b = blob_flow(cx=72)  # the same motion, 32 px to the right (4 cells at stride 8)
    pts_a = np.array([[t, 40.0, 40.0] for t in range(12)])
    pts_b = np.array([[t, 40.0, 72.0] for t in range(12)])
    fa = (
        extract_features(a, extractor, post_encoder="point", points=pts_a)
        .table.iloc[:, 4:]
        .to_numpy(float)
    )
    fb = (
        extract_features(b, extractor, post_encoder="point", points=pts_b)
        .table.iloc[:, 4:]
        .to_numpy(float)
    )
    np.testing.assert_allclose(fa, fb, rtol=1e-4, atol=1e-6)
    off = (
        extract_features(a, extractor, post_encoder="point", points=pts_b)
        .table.iloc[:, 4:]
        .to_numpy(float)
    )
    assert np.abs(fa - off).max() > 10 * np.abs(fa - fb).max()  # not just equal everywhere


def test_missing_outside_and_interpolated_landmarks(extractor):
    flow = blob_flow()
    pts = np.array([[0, 40, 40], [3, 40, 44], [4, 40, 400.0], [11, 40, 60]])  # 400: outside
    with pytest.warns(UserWarning, match="outside"):
        res = extract_features(flow, extractor, post_encoder="point", points=pts)
    table = res.table
    assert len(table) == 12
    nan_rows = table["f0000"].isna()
    assert nan_rows.sum() == 12 - 3  # frames with no point (8) + the outside one (1)
    assert res.metadata["missing_landmark_rows"] == 8 and res.metadata["outside_frame_rows"] == 1
    filled = extract_features(
        flow, extractor, post_encoder="point", points=pts[[0, 1, 3]], interpolate_missing=True
    )
    assert filled.metadata["interpolated_landmark_positions"] == 12 - 3  # gaps between 0, 3, 11
    assert filled.table.loc[1, "x"] == pytest.approx(40 + 4 / 3)
    assert not filled.table["f0000"].isna().any()


def test_multi_landmark_rows_per_frame_and_landmark(extractor):
    flow = blob_flow()
    df = pd.DataFrame({
        "frame": [t for t in range(12) for _ in (0, 1)],
        "y": [40.0, 70.0] * 12, "x": [40.0, 100.0] * 12,
        "track_id": ["whisker", "nose"] * 12,
    })  # fmt: skip
    table = extract_features(flow, extractor, post_encoder="point", points=df).table
    assert len(table) == 24 and list(table.columns[:4]) == ["frame", "landmark", "x", "y"]
    assert table["landmark"].tolist()[:2] == ["whisker", "nose"]
    landmarks = landmarks_from_points(df, 12)
    assert landmarks.ids == ["whisker", "nose"]


def test_single_frame_runs_only_its_window(extractor):
    from napari_flow_features.sample import make_whisker_sample

    video = make_whisker_sample(n_frames=20, height=64, width=96).video
    full = extract_features(video, extractor, post_encoder="gap", flow_method="dis")
    one = extract_frame(video, extractor, frame=9, flow_method="dis")
    assert len(one.table) == 1 and one.metadata["n_windows"] == 1
    np.testing.assert_allclose(
        one.table.iloc[0, 1:].to_numpy(float),
        full.table.iloc[9, 1:].to_numpy(float),
        rtol=1e-5,
        atol=1e-6,
    )


def test_progress_and_cancel(extractor):
    flow = blob_flow(n=23)
    seen = []
    extract_features(
        flow,
        extractor,
        post_encoder="gap",
        progress=lambda d, t: seen.append((d, t)),
        windowing="sliding",
    )
    # Frames done: 0, then after each batch of 2 windows (5 windows: 3 batches).
    assert seen[0] == (0, 24) and seen[-1] == (24, 24) and len(seen) == 4
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(CancelledError):
        extract_features(flow, extractor, post_encoder="gap", cancel=lambda: True)


def test_bad_inputs(extractor):
    flow = blob_flow()
    with pytest.raises(BadInputError, match="empty"):
        extract_features(flow, extractor, post_encoder="point", points=np.zeros((0, 3)))
    with pytest.raises(BadInputError, match="2-D points"):
        extract_features(flow, extractor, post_encoder="point", points=np.zeros((3, 2)))
    with pytest.raises(BadInputError, match="needs landmarks"):
        extract_features(flow, extractor, post_encoder="point")
    with pytest.raises(BadInputError, match="clip_length must be a whole number"):
        extract_features(flow, extractor, post_encoder="gap", clip_length=0)
    with pytest.raises(BadInputError, match=r"\(H, W, 2\)"):
        extract_features(np.zeros((5, 8, 8, 3), np.float32), extractor, post_encoder="gap")
    bad = flow.copy()
    bad[2, 3, 3, 1] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        extract_features(bad, extractor, post_encoder="gap")
    rgb = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", in_channels=3)
    with pytest.raises(BadInputError, match="3 input channels"):
        extract_features(flow, rgb, post_encoder="gap")
    with pytest.raises(BadInputError, match="post_encoder"):
        extract_features(flow, extractor, post_encoder="max")


def test_extract_cli_on_the_sample(tmp_path, capsys):
    from napari_flow_features.cli import main
    from napari_flow_features.io.tables import read_table

    assert main(["sample", "--output", str(tmp_path)]) == 0
    assert main(["extract", str(tmp_path / "whisker.mp4"), "--post-encoder", "point",
                 "--points", str(tmp_path / "whisker_landmarks.csv"), "--endpoint", "Mixed_3c",
                 "--windowing", "sliding", "--clip-length", "8", "--flow-method", "dis",
                 "-o", str(tmp_path / "f.parquet")]) == 0  # fmt: skip
    table = read_table(tmp_path / "f.parquet")
    assert table.attrs["windowing"] == "sliding" and table.attrs["clip_length"] == 8
    assert len(table) == 96 and list(table.columns[:4]) == ["frame", "landmark", "x", "y"]
    assert table.shape[1] == 4 + 480 and not table["f0000"].isna().any()
    assert table.attrs["post_encoder"] == "point" and table.attrs["flow_method"] == "dis"
    assert "landmark rows without a point: 0" in capsys.readouterr().out
    assert main(["extract", str(tmp_path / "whisker.mp4"), "--post-encoder", "point",
                 "-o", str(tmp_path / "g.csv")]) == 2  # fmt: skip
    assert "needs landmarks" in capsys.readouterr().err
    # A window length under the (default) chunked windowing shapes nothing: named, not recorded.
    assert main(["extract", str(tmp_path / "whisker.mp4"), "--clip-length", "32",
                 "-o", str(tmp_path / "h.csv")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "clip_length 32" in err and "chunked" in err and not (tmp_path / "h.csv").exists()


def test_heatmap_reductions(extractor):
    flow = blob_flow()
    res = extract_features(flow, extractor, post_encoder="none", heatmap="mean")
    assert res.heatmap.shape == (12, 12, 16)  # 96x128 frames, 8 px cells at Mixed_3c
    assert res.metadata["heatmap_cell_px"] == [8.0, 8.0]
    row = res.table.iloc[5]
    fmap = interpolate_time(np.asarray(res.feature_maps[int(row.window)]), row.tau)
    np.testing.assert_allclose(res.heatmap[5], fmap.mean(axis=-1), rtol=1e-5)
    l2 = extract_features(flow, extractor, post_encoder="gap", heatmap="l2", frames=[5]).heatmap
    np.testing.assert_allclose(l2[5], np.linalg.norm(fmap, axis=-1), rtol=1e-4)
    assert np.isnan(l2[0]).all()  # frames not run stay NaN
    ch = extract_features(flow, extractor, post_encoder="gap", heatmap=7, frames=[5]).heatmap
    np.testing.assert_allclose(ch[5], fmap[..., 7], rtol=1e-5)
    with pytest.raises(BadInputError, match="Channel 999"):
        extract_features(flow, extractor, post_encoder="gap", heatmap=999, frames=[5])


@pytest.mark.parametrize("windowing", ["sliding", "chunked"])
def test_known_weights_end_to_end_rows_are_hand_computed(windowing):
    """Conv3d_1a_7x7 with only the centre tap from dx to channel 0: its output is known, so each
    frame's GAP row follows from DESIGN.md's rule by hand."""
    ext = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", clip_length=8, stride=4)
    kernel = np.zeros((7, 7, 7, 2, 64), np.float32)
    kernel[3, 3, 3, 0, 0] = 1.0  # channel 0 = dx at the centre tap
    kernel[3, 3, 3, 1, 1] = 1.0  # channel 1 = dy (negative here: ReLU gives 0)
    ext.model.get_layer("Conv3d_1a_7x7.conv_3d").kernel.assign(kernel)
    bn = ext.model.get_layer("Conv3d_1a_7x7.batch_norm")
    bn.beta.assign(np.zeros(64, np.float32))
    bn.moving_mean.assign(np.zeros(64, np.float32))
    bn.moving_variance.assign(np.ones(64, np.float32))
    ext._call = None
    flow = np.zeros((11, 16, 16, 2), np.float32)  # 12 frames; field f has dx = f px, dy = -1 px
    flow[..., 0] = np.arange(11)[:, None, None]
    flow[..., 1] = -1.0
    table = extract_features(flow, ext, post_encoder="gap", windowing=windowing).table
    scale = 1 / 20 / np.sqrt(1 + 1e-3)  # flow bound, then BatchNorm with variance 1
    # chunked: one pass over 12 frames padded to 16; step k also sits at frame 2k+1 and
    # tau = (t + 0.5) / 2 - 0.5 gives the same blends as the sliding windows below.
    # Windows start at 0 and 4 (L=8, S=4); T' = 4; the output step t' sits at window frame 2t'+1.
    # Frame 5: window 0, tau = 5.5 * 4/8 - 0.5 = 2.25 -> 0.75 * dx(5) + 0.25 * dx(7) = 5.5
    assert table.loc[5, "f0000"] == pytest.approx(5.5 * scale, rel=1e-5)
    # Frame 10: window 1 (s=4), tau = 6.5 * 0.5 - 0.5 = 2.75 -> 0.25 * dx(9) + 0.75 * dx(10) = 9.75
    # (window frame 11 has no flow of its own and repeats field 10)
    assert table.loc[10, "f0000"] == pytest.approx(9.75 * scale, rel=1e-5)
    # Frame 0: tau clamps to 0 -> dx(1) = 1
    assert table.loc[0, "f0000"] == pytest.approx(1 * scale, rel=1e-5)
    assert (table["f0001"] == 0).all() and (table["f0002"] == 0).all()


def test_landmarks_in_video_pixels_on_flow_computed_smaller(extractor, tmp_path):
    """A flow file computed at half size (its sidecar says so) takes landmarks in video pixels."""
    from napari_flow_features.flow.compute import OpticalFlowComputer

    rng = np.random.default_rng(0)
    texture = (rng.random((96, 160)) * 255).astype(np.uint8)
    video = np.stack([np.roll(texture, 2 * t, axis=1) for t in range(10)])
    half = tmp_path / "half.npy"
    OpticalFlowComputer("dis", scale=0.5).compute(video, half)
    full = tmp_path / "full.npy"
    OpticalFlowComputer("dis").compute(video, full)
    edge = np.array([[t, 90.0, 155.0] for t in range(10)])  # inside the video, outside 48 x 80
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "outside the frame" warning
        res = extract_features(half, extractor, post_encoder="point", points=edge)
    assert res.metadata["flow_method"] == "dis" and res.metadata["outside_frame_rows"] == 0
    assert res.metadata["landmarks_scaled_to_flow"] == [0.5, 0.5]
    assert res.table["x"].tolist() == [155.0] * 10  # rows keep the video coordinates
    assert not res.table["f0000"].isna().any()
    # The same points on full-size flow need no scaling.
    assert (
        "landmarks_scaled_to_flow"
        not in extract_features(full, extractor, post_encoder="point", points=edge).metadata
    )


def test_a_run_stopped_after_its_flow_leaves_the_flow_cached(extractor, tmp_path):
    """Cancelled in the encoder once the whole flow is computed: the cache entry is published
    (the rerun skips the flow and gives the uncancelled run's rows); the kept flow, an output of
    a run that did not finish, is not."""
    from napari_flow_features.io.video import write_video

    rng = np.random.default_rng(1)
    texture = (rng.random((48, 64)) * 255).astype(np.uint8)
    path = tmp_path / "v.mp4"
    write_video(path, np.stack([np.roll(texture, 2 * t, axis=1) for t in range(60)]), fps=10)
    cache, kept = tmp_path / "cache", tmp_path / "kept.npy"
    flow_done: list[bool] = []

    def on_flow(done: int, total: int) -> None:
        if done == total:
            flow_done.append(True)

    run = {"post_encoder": "gap", "flow_method": "dis", "windowing": "sliding"}
    with pytest.raises(CancelledError):  # the encoder's later windows see the cancel
        extract_features(path, extractor, flow_cache=cache, keep_flow=kept, **run,
                         flow_progress=on_flow, cancel=lambda: bool(flow_done))  # fmt: skip
    assert flow_done and len(list(cache.glob("*.npy"))) == 1
    assert not kept.exists() and not [p for p in tmp_path.rglob(".*") if ".partial-" in p.name]
    again = extract_features(path, extractor, flow_cache=cache, **run)
    assert again.metadata["flow_reused"] is True
    whole = extract_features(path, extractor, **run)
    np.testing.assert_array_equal(again.table.to_numpy(), whole.table.to_numpy())


def test_flow_cache_keeps_the_last_videos_flow(extractor, tmp_path):
    from napari_flow_features.io.video import write_video

    rng = np.random.default_rng(0)
    texture = (rng.random((48, 64)) * 255).astype(np.uint8)
    path = tmp_path / "v.mp4"
    write_video(path, np.stack([np.roll(texture, 2 * t, axis=1) for t in range(12)]), fps=10)
    cache = tmp_path / "cache"
    first = extract_features(
        path, extractor, post_encoder="gap", flow_method="dis", flow_cache=cache
    )
    assert first.metadata["flow_reused"] is False and len(list(cache.glob("*.npy"))) == 1
    again = extract_features(
        path, extractor, post_encoder="gap", flow_method="dis", flow_cache=cache
    )
    assert again.metadata["flow_reused"] is True
    np.testing.assert_array_equal(again.table.to_numpy(), first.table.to_numpy())
    frame = extract_frame(path, extractor, frame=5, flow_method="dis", flow_cache=cache)
    assert frame.metadata["flow_reused"] is True
    np.testing.assert_allclose(frame.table.iloc[0, 1:].to_numpy(float),
                               first.table.iloc[5, 1:].to_numpy(float), rtol=1e-5)  # fmt: skip
    # Another method is another key; the cache keeps one video's flow at a time.
    other = extract_features(
        path, extractor, post_encoder="gap", flow_method="farneback", flow_cache=cache
    )
    assert other.metadata["flow_reused"] is False and len(list(cache.glob("*.npy"))) == 1
    # A changed file is a new key.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = extract_features(
        path, extractor, post_encoder="gap", flow_method="farneback", flow_cache=cache
    )
    assert changed.metadata["flow_reused"] is False
    # An in-memory video is keyed by its content.
    video = np.stack([np.roll(texture, 2 * t, axis=1) for t in range(12)])
    assert not extract_features(video, extractor, post_encoder="gap", flow_cache=cache).metadata[
        "flow_reused"
    ]
    assert extract_features(video, extractor, post_encoder="gap", flow_cache=cache).metadata[
        "flow_reused"
    ]
    video[3, 0, 0] ^= 1
    assert not extract_features(video, extractor, post_encoder="gap", flow_cache=cache).metadata[
        "flow_reused"
    ]


def test_npz_output_keeps_each_rows_landmark(extractor, tmp_path):
    """A point table written as ``.npz`` keeps who each row is, where, and the run's metadata."""
    import json

    from napari_flow_features.extract.to_file import extract_to_file

    flow = blob_flow()
    t = np.arange(flow.shape[0] + 1)
    points = pd.DataFrame({
        "frame": np.r_[t, t], "x": np.r_[20.0 + t, 60.0 - t], "y": np.r_[30.0 + 0 * t, 40.0 + t],
        "track_id": np.repeat([3, 7], len(t)),
    })  # fmt: skip
    extract_to_file(flow, extractor, tmp_path / "f.npz", post_encoder="point", points=points)
    table = extract_features(flow, extractor, post_encoder="point", points=points).table
    with np.load(tmp_path / "f.npz", allow_pickle=False) as npz:
        assert npz["landmark"].tolist() == table["landmark"].tolist()  # 3, 7 per frame
        np.testing.assert_array_equal(npz["frame"], table["frame"])
        np.testing.assert_array_equal(npz["x"], table["x"])
        cols = [c for c in table.columns if c.startswith("f0")]
        assert npz["feature_names"].tolist() == cols
        np.testing.assert_array_equal(npz["features"], table[cols].to_numpy(np.float32))
        meta = json.loads(str(npz["metadata"]))
    assert meta["post_encoder"] == "point" and meta["landmarks"] == ["3", "7"]
