"""RGB and two-stream extraction (docs/streams.md): preprocessing, frame alignment, fusion, errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import moving_pattern
from pinned_reference import at_time

from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.pipeline import extract_features
from napari_flow_features.extract.post_encoders import gap, interpolate_time
from napari_flow_features.flow.frames import rgb_frame, rgb_to_i3d
from napari_flow_features.io.tables import feature_columns
from napari_flow_features.model.extractor import DynamicFeatureExtractor, load_config

SMALL = {"endpoint": "Mixed_3b", "runtime": "tensorflow"}


def colour_video(n: int = 20, h: int = 32, w: int = 48) -> np.ndarray:
    grey = moving_pattern(n, h, w)
    return np.stack([grey, 255 - grey, (grey // 2 + 60).astype(np.uint8)], axis=-1)


@pytest.fixture(scope="module")
def streams():
    return {s: DynamicFeatureExtractor(stream=s, **SMALL) for s in ("flow", "rgb", "two-stream")}


def test_rgb_preprocessing_hand_values():
    grey = np.array([[0, 51], [255, 128]], np.uint8)
    frame = rgb_frame(grey)
    assert frame.shape == (2, 2, 3) and (frame == grey[..., None]).all()  # grey repeated
    np.testing.assert_array_equal(
        rgb_to_i3d(frame)[..., 0], np.array([[-1.0, -0.6], [1.0, 0.003921628]], np.float32)
    )
    # Resized like the flow stream's frames: area interpolation, so a 2x2 block becomes its mean.
    big = np.kron(np.array([[10, 30], [50, 70]], np.uint8), np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(rgb_frame(big, (2, 2))[..., 1], [[10, 30], [50, 70]])
    with pytest.raises(BadInputError, match=r"\(H, W, 3\)"):
        rgb_frame(np.zeros((4, 4, 2), np.uint8))


def test_rgb_rows_are_the_encoder_over_the_scaled_frames(streams):
    """Row t of the RGB stream = the map of one pass over frames scaled to [-1, 1] (no flow, no
    padding: 16 frames, 16 rows), interpolated at tau = (t + 0.5) / 2 - 0.5."""
    video = colour_video(16)
    seen = []
    result = extract_features(
        video,
        streams["rgb"],
        post_encoder="gap",
        max_side=None,
        flow_progress=lambda d, t: seen.append(d),
    )
    assert seen == [] and result.metadata["flow_method"] is None  # no optical flow at all
    assert result.metadata["stream"] == "rgb" and result.metadata["padded_frames"] == []
    clip = video.astype(np.float32) / 127.5 - 1.0  # by hand
    maps = np.asarray(streams["rgb"].model(clip[None]))[0]  # (8, 4, 6, 256)
    assert maps.shape[0] == 8
    for t in (0, 5, 15):
        tau = min(max((t + 0.5) / 2 - 0.5, 0), 7)
        expected = gap(interpolate_time(maps, tau))
        np.testing.assert_allclose(
            result.table.loc[t, feature_columns(result.table)].to_numpy(float),
            expected,
            rtol=1e-4,
            atol=1e-5,
        )


@pytest.mark.parametrize("windowing", ["chunked", "sliding"])
def test_two_stream_columns_equal_the_single_stream_runs(streams, windowing):
    video = colour_video(20)
    points = np.array([[t, 14.0 + t * 0.5, 20.0 + t] for t in range(20)])
    runs, fields = {}, {}
    for s, ext in streams.items():
        counts: list[int] = []
        window = {"clip_length": 8, "stride": 4} if windowing == "sliding" else {}
        runs[s] = extract_features(
            video, ext, post_encoder="point", points=points, max_side=None, windowing=windowing,
            flow_progress=lambda d, t, c=counts: c.append(t), **window,
        ).table  # fmt: skip
        fields[s] = counts
    assert fields["two-stream"][-1] == 19 and fields["rgb"] == []  # flow computed once, 19 fields
    both = runs["two-stream"]
    cols = feature_columns(both)
    assert cols[0] == "flow_f0000" and cols[-1] == "rgb_f0255" and len(cols) == 512
    for s in ("flow", "rgb"):
        mine = [c for c in cols if c.startswith(s)]
        np.testing.assert_allclose(
            both[mine].to_numpy(), runs[s][feature_columns(runs[s])].to_numpy(), atol=1e-5
        )
    assert (both["frame"].to_numpy() == np.arange(20)).all()


def frame_maps(video: np.ndarray, extractor, path) -> np.ndarray:
    """Each frame's ``(H', W', C)`` map from the none post-encoder: its window's maps at ``tau``."""
    table = extract_features(
        video, extractor, post_encoder="none", max_side=None, maps_path=path
    ).table
    maps = np.load(path, allow_pickle=False)
    return np.stack([
        at_time(maps[int(w)], float(tau))
        for w, tau in zip(table["window"], table["tau"], strict=True)
    ])  # fmt: skip


def test_two_stream_average_and_heatmap(streams, tmp_path):
    """Average fusion is the mean of the streams; its heatmap is the fused map reduced over
    channels, computed here from each stream's own maps (36x44 frames: 5x6 cells of 7.2x7.3 px)."""
    video = colour_video(16, 36, 44)
    avg = DynamicFeatureExtractor(stream="two-stream", fusion="average", **SMALL)
    fused = sum(frame_maps(video, streams[s], tmp_path / f"{s}.npy") for s in ("flow", "rgb")) / 2
    assert fused.shape == (16, 5, 6, 256)
    reductions = {
        "mean": fused.mean(axis=-1),
        "l2": np.sqrt((fused**2).sum(axis=-1)),
        7: fused[..., 7],
    }
    for how, expected in reductions.items():
        result = extract_features(video, avg, post_encoder="gap", max_side=None, heatmap=how)
        assert result.heatmap is not None and result.heatmap.shape == (16, 5, 6)
        np.testing.assert_allclose(
            result.heatmap, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()
        )
        assert result.metadata["heatmap"] == str(how)
        np.testing.assert_allclose(result.metadata["heatmap_cell_px"], [36 / 5, 44 / 6])
    table = result.table
    single = {
        s: extract_features(video, streams[s], post_encoder="gap", max_side=None).table
        for s in streams
    }
    assert feature_columns(table)[:2] == ["f0000", "f0001"] and len(feature_columns(table)) == 256
    expected = (
        single["flow"].filter(like="f0").to_numpy() + single["rgb"].filter(like="f0").to_numpy()
    ) / 2
    np.testing.assert_allclose(table[feature_columns(table)].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(
        table[feature_columns(table)].to_numpy(), fused.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6
    )
    meta = avg.describe()
    assert meta["channels"] == 256 and meta["loaded_model"]["rgb"]["source"] == "random"
    assert streams["two-stream"].describe()["channels"] == 512


def test_stream_mismatches_are_clear_errors(streams, tmp_path):
    flow = np.zeros((9, 32, 48, 2), np.float32)
    for s in ("rgb", "two-stream"):
        with pytest.raises(BadInputError, match=f"The {s} stream .* needs the video.s frames"):
            extract_features(flow, streams[s], post_encoder="gap")
    with pytest.raises(
        BadInputError, match=r"rgb stream \(3 input channels\) but in_channels is 2"
    ):
        load_config(stream="rgb", in_channels=2)
    with pytest.raises(BadInputError, match="stream must be one of"):
        load_config(stream="depth")
    assert load_config(in_channels=3)["stream"] == "rgb"
    assert load_config()["stream"] == "flow" and load_config()["in_channels"] == 2
    with pytest.raises(BadInputError, match="rgb_checkpoint"):
        load_config(stream="two-stream", weights={"source": "deepmind", "checkpoint": "x"})
    with pytest.raises(BadInputError, match="keep_flow keeps optical flow"):
        extract_features(
            colour_video(16), streams["rgb"], post_encoder="gap", keep_flow=tmp_path / "f.npy"
        )
    # The registry knows a model's stream: a flow model asked for as RGB names both.
    small = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", runtime="tensorflow")
    small.save_model_with_serializer(tmp_path / "reg", {"model_name": "m"})
    with pytest.raises(
        BadInputError, match=r"is a flow model: it takes 2 input channels.*rgb stream"
    ):
        DynamicFeatureExtractor(
            stream="rgb",
            weights={
                "source": "registry",
                "registry_dir": str(tmp_path / "reg"),
                "model_name": "m",
            },
        )
    logits = DynamicFeatureExtractor(stream="rgb", endpoint="Logits", runtime="tensorflow")
    with pytest.raises(BadInputError, match="at least 193 px"):
        extract_features(colour_video(16), logits, post_encoder="gap", max_side=None)


def test_extract_cli_two_stream(tmp_path, capsys):
    from napari_flow_features.cli import main
    from napari_flow_features.io.tables import read_table

    assert main(["sample", "--output", str(tmp_path)]) == 0
    out = tmp_path / "f.csv"
    assert main(["extract", str(tmp_path / "whisker.mp4"), "--stream", "two-stream",
                 "--endpoint", "Mixed_3b", "--max-side", "64", "--runtime", "tensorflow",
                 "-o", str(out)]) == 0  # fmt: skip
    table = read_table(out)
    assert len(table) == 96 and table.attrs["stream"] == "two-stream"
    assert feature_columns(table)[255:257] == ["flow_f0255", "rgb_f0000"]
    assert main(["extract", str(tmp_path / "whisker.mp4"), "--stream", "rgb", "--keep-flow",
                 str(tmp_path / "k.npy"), "-o", str(out)]) == 2  # fmt: skip
    assert "the rgb stream computes none" in capsys.readouterr().err


def test_two_stream_reuses_the_flow_cache(streams, tmp_path):
    video = colour_video(20)
    first = extract_features(video, streams["two-stream"], post_encoder="gap", max_side=None,
                             flow_cache=tmp_path / "cache")  # fmt: skip
    again = extract_features(video, streams["two-stream"], post_encoder="gap", max_side=None,
                             flow_cache=tmp_path / "cache")  # fmt: skip
    assert first.metadata.get("flow_cached") and again.metadata["flow_reused"]
    cols = feature_columns(first.table)
    np.testing.assert_allclose(
        again.table[cols].to_numpy(), first.table[cols].to_numpy(), atol=1e-6
    )
