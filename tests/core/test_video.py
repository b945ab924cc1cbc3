"""The lazy video reader: frame-exact random access, laziness, indexing, bad files."""

from __future__ import annotations

import pickle
import shutil

import av
import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.io.video import VideoArray, open_video, write_video


def sequential_decode(path: str) -> list[np.ndarray]:
    """Reference: plain PyAV decoding from the start; the decoder outputs presentation order."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(video=0)]


def test_bframe_file_really_reorders(bframe_video):
    path, _ = bframe_video
    with av.open(path) as container:
        pts = [p.pts for p in container.demux(video=0) if p.pts is not None]
    assert pts != sorted(pts), "test video should have B-frames (decode order differs)"


def test_random_access_matches_sequential_decoding(bframe_video):
    path, source = bframe_video
    reference = sequential_decode(path)
    video = VideoArray(path, cache_frames=1)
    assert video.shape == source.shape
    assert video.color == "grey"
    order = np.random.default_rng(1).permutation(len(reference))
    for i in order:
        np.testing.assert_array_equal(video[int(i)], reference[int(i)], err_msg=f"frame {i}")
    # Near-lossless encode: each decoded frame is the source frame, not a neighbour.
    for i in (0, 17, 45, 89):
        errors = [np.abs(video[i].astype(int) - source[j]).mean() for j in range(len(source))]
        assert int(np.argmin(errors)) == i


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mov"])
def test_other_containers_with_bframes_are_frame_exact(tmp_path, suffix):
    """AVI keeps no presentation timestamps: frames must be counted, not looked up by pts."""
    from conftest import moving_pattern

    source = moving_pattern(40)
    path = tmp_path / f"clip{suffix}"
    write_video(path, source, fps=25, bframes=3, gop=10, crf=8)
    reference = sequential_decode(path)
    assert len(reference) == 40
    video = VideoArray(path, cache_frames=1)
    assert len(video) == 40
    for i in np.random.default_rng(2).permutation(40):
        np.testing.assert_array_equal(video[int(i)], reference[int(i)], err_msg=f"frame {i}")
    errors = [np.abs(video[13].astype(int) - source[j]).mean() for j in range(40)]
    assert int(np.argmin(errors)) == 13


def test_backward_jumps_and_repeated_reads(bframe_video):
    path, _ = bframe_video
    reference = sequential_decode(path)
    video = VideoArray(path, cache_frames=2)
    for i in (80, 3, 79, 11, 11, 0, 89, 88):
        np.testing.assert_array_equal(video[i], reference[i])


def test_opening_a_long_video_decodes_almost_nothing(long_video):
    video = VideoArray(long_video)
    assert len(video) == 1500
    assert video.decoded_frames <= 3
    video[1200]
    assert video.decoded_frames <= 3 + 60 + 8  # at most one GOP to reach a frame


def test_forward_reads_continue_decoding_instead_of_seeking(long_video):
    video = VideoArray(long_video, cache_frames=4, forward_decode_limit=48)
    video[500]
    before = video.decoded_frames
    for i in range(501, 521):
        video[i]
    assert video.decoded_frames - before == 20  # exactly one decode per new frame


def test_cache_serves_repeats_without_decoding(bframe_video):
    video = VideoArray(bframe_video[0], cache_frames=8)
    video[40]
    before = video.decoded_frames
    for _ in range(5):
        video[40]
    assert video.decoded_frames == before


def test_indexing_like_numpy(bframe_video):
    path, _ = bframe_video
    video = VideoArray(path)
    full = np.stack([video[i] for i in range(len(video))])
    np.testing.assert_array_equal(video[2:20:3], full[2:20:3])
    np.testing.assert_array_equal(video[[5, 1, 5]], full[[5, 1, 5]])
    np.testing.assert_array_equal(video[-1], full[-1])
    np.testing.assert_array_equal(video[3, 10:20, ::2], full[3, 10:20, ::2])
    np.testing.assert_array_equal(video[..., 7], full[..., 7])
    np.testing.assert_array_equal(np.asarray(video), full)
    assert video.dtype == np.uint8 and video.ndim == 3
    with pytest.raises(IndexError):
        video[len(video)]


def test_rgb_video_and_forced_modes(tmp_path):
    rgb = np.zeros((6, 32, 48, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[:, :, :24, 2] = 150
    path = tmp_path / "colour.mkv"
    write_video(path, rgb, crf=0)
    video = VideoArray(path)
    assert video.color == "rgb" and video.shape == (6, 32, 48, 3)
    assert abs(int(video[2][5, 30, 0]) - 200) <= 4 and video[2][5, 30, 2] < 10
    grey = VideoArray(path, color="grey")  # the seed's spelling, an alias of colour=
    assert grey.shape == (6, 32, 48) and grey.colour == grey.color == "grey"
    assert open_video(path, colour="grey").shape == (6, 32, 48)
    with pytest.raises(BadInputError, match="disagree"):
        open_video(path, colour="rgb", color="grey")
    with pytest.raises(BadInputError, match="colour must be"):
        open_video(path, colour="sepia")


def test_metadata_and_pickle(bframe_video):
    video = VideoArray(bframe_video[0])
    assert video.fps == pytest.approx(25)
    clone = pickle.loads(pickle.dumps(video))
    np.testing.assert_array_equal(clone[30], video[30])


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        VideoArray(tmp_path / "nope.mp4")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(BadInputError, match=r"notes\.mp4"):
        VideoArray(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(BadInputError, match="empty"):
        VideoArray(path)


def test_truncated_video(bframe_video, tmp_path):
    data = open(bframe_video[0], "rb").read()
    for name, cut in (("head.mp4", len(data) // 3), ("tail.mp4", len(data) - 400)):
        path = tmp_path / name
        path.write_bytes(data[:cut])
        with pytest.raises(BadInputError, match=name.replace(".", r"\.")):
            VideoArray(path)


def test_faststart_truncated_video_is_caught(tmp_path):
    """moov before mdat: the index survives truncation, so the packet positions must be checked."""
    frames = np.random.default_rng(0).integers(0, 255, (30, 64, 64), dtype=np.uint8)
    src = tmp_path / "fast.mp4"
    with av.open(str(src), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    data = src.read_bytes()
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadInputError, match=r"(Truncated|Corrupt)"):
        VideoArray(cut)


def test_write_video_is_atomic(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(BadInputError):
        write_video(path, np.zeros((3, 8, 8), np.float32))
    assert list(tmp_path.iterdir()) == []
    bad = np.zeros((3, 16, 16), np.uint8)
    with pytest.raises(Exception):  # noqa: B017 - the codec's own error type
        write_video(path, bad, codec="no-such-codec")
    assert list(tmp_path.iterdir()) == []


def test_folder_is_not_a_video(tmp_path):
    shutil.copytree(tmp_path, tmp_path / "sub.mp4")
    with pytest.raises(BadInputError, match="folder"):
        VideoArray(tmp_path / "sub.mp4")


def test_open_is_lazy_and_the_seek_index_is_cached(tmp_path, monkeypatch):
    """Opening reads no index; the first random access builds it and caches it on disk; the next
    open of the same file reuses it; a changed file gets a new one."""
    monkeypatch.setenv("NAPARI_FLOW_FEATURES_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (120, 32, 48), dtype=np.uint8)
    path = write_video(tmp_path / "v.mp4", frames, bframes=2, gop=12)
    video = VideoArray(path)
    assert video.count_source == "container" and len(video) == 120
    assert video.index_from_cache is None and video.decoded_frames <= 2  # no index yet
    sequential = np.stack(list(video.iter_frames(0, 20)))
    assert video.index_from_cache is None  # reading in order needs no index
    later = video[110]  # far ahead: a seek, which needs the index
    assert video.index_from_cache is False  # built by the jump, then saved
    again = VideoArray(path)
    np.testing.assert_array_equal(again[110], later)
    assert again.index_from_cache is True
    np.testing.assert_array_equal(again[:20], sequential)
    changed = write_video(tmp_path / "v.mp4", frames[::-1], bframes=2, gop=12)
    fresh = VideoArray(changed)
    np.testing.assert_array_equal(fresh[110], sequential_decode(str(changed))[110])
    assert fresh.index_from_cache is False  # the old entry no longer matches
