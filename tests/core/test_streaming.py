"""Streaming extraction: chunked inference equals one pass, seamless rows, bounded work, cleanup."""

from __future__ import annotations

import itertools
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError, CancelledError
from napari_flow_features.extract.pipeline import extract_features
from napari_flow_features.extract.streaming import plan_chunks, select_frames
from napari_flow_features.flow.compute import OpticalFlowComputer
from napari_flow_features.io.flow_files import read_flow
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.sample import make_whisker_sample


def smooth_flow(n: int, h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1.5, (n, 1, 1, 2)).cumsum(axis=0) * 0.3
    grid = rng.normal(0, 2, (1, h, w, 2))
    return (steps + grid).astype(np.float32)


def test_chunk_plan_covers_every_frame_once_with_margins():
    spans = plan_chunks(n_padded=600, need_lo=0, need_hi=600, length=256, margin=48)
    kept = [(s.keep_lo, s.keep_hi) for s in spans]
    assert kept[0][0] == 0 and kept[-1][1] == 600
    assert all(a[1] == b[0] for a, b in itertools.pairwise(kept))  # contiguous, no overlap
    for s in spans:
        assert s.hi - s.lo == 256 and s.lo % 8 == 0
        assert s.keep_lo == 0 or s.keep_lo - s.lo >= 48  # margin before an inner cut
        assert s.keep_hi == 600 or s.hi - s.keep_hi >= 48
    # A few frames in the middle: one short pass with margins around them.
    (one,) = plan_chunks(600, 304, 320, 16 + 96, 48)
    assert (one.lo, one.hi, one.keep_lo, one.keep_hi) == (256, 368, 304, 320)


def test_chunked_rows_equal_one_pass_over_the_whole_sequence():
    flow = smooth_flow(299)  # 300 frames: three chunks of 104 frames
    chunked = DynamicFeatureExtractor(endpoint="Mixed_4f", chunk_length=104, runtime="tensorflow")
    whole = DynamicFeatureExtractor(endpoint="Mixed_4f", chunk_length=304, runtime="tensorflow")
    a = extract_features(flow, chunked, post_encoder="gap")
    b = extract_features(flow, whole, post_encoder="gap")
    assert len(a.metadata["chunks"]) > 2 and len(b.metadata["chunks"]) == 1
    fa, fb = (r.table.filter(like="f0").to_numpy() for r in (a, b))
    assert np.linalg.norm(fa - fb) / np.linalg.norm(fb) < 1e-5
    assert list(a.table["frame"]) == list(range(300))


def test_rows_do_not_jump_where_windows_hand_over():
    """On the sample, the sliding windows' sawtooth is gone: no frame-to-frame change at a window
    switch is larger than the largest change elsewhere, and each frame is encoded about once."""
    video = make_whisker_sample().video
    ext = DynamicFeatureExtractor(endpoint="Mixed_4f", runtime="tensorflow")
    res = extract_features(video, ext, post_encoder="gap")
    feats = res.table.filter(like="f0").to_numpy()
    step = np.linalg.norm(np.diff(feats, axis=0), axis=1)  # step[i]: frame i -> i + 1
    switches = np.arange(11, 95, 8)  # sliding L=16, S=8: frames 11|12, 19|20, ... change window
    inside = np.setdiff1d(np.arange(len(step)), switches)
    assert step[switches].max() <= step[inside].max()
    assert res.metadata["windowing"] == "chunked"
    assert res.metadata["encoder_frames_per_output_frame"] <= 1.1
    sliding = extract_features(video, ext, post_encoder="gap", windowing="sliding")
    old = np.linalg.norm(np.diff(sliding.table.filter(like="f0").to_numpy(), axis=0), axis=1)
    assert old[switches].max() > old[np.setdiff1d(np.arange(len(old)), switches)].max()
    assert sliding.metadata["encoder_frames_per_output_frame"] >= 1.8  # 11 windows of 16


def test_streaming_from_a_video_equals_flow_computed_first():
    video = make_whisker_sample().video[:40]
    ext = DynamicFeatureExtractor(endpoint="Mixed_3c", runtime="tensorflow", chunk_length=104)
    streamed = extract_features(
        video, ext, post_encoder="gap", flow_method="dis", max_side=None
    ).table
    flow = OpticalFlowComputer("dis").compute(video)
    stored = extract_features(flow, ext, post_encoder="gap").table
    np.testing.assert_array_equal(
        streamed.filter(like="f0").to_numpy(), stored.filter(like="f0").to_numpy()
    )


def test_current_frame_runs_one_short_pass_and_only_its_flow():
    video = np.repeat(make_whisker_sample().video, 3, axis=0)  # 288 frames
    ext = DynamicFeatureExtractor(endpoint="Mixed_3c", runtime="tensorflow", chunk_length=128)
    fields = []
    one = extract_features(
        video, ext, post_encoder="gap", frames=[150], flow_progress=lambda d, t: fields.append(t)
    )
    (chunk,) = one.metadata["chunks"]
    assert chunk[1] - chunk[0] <= 16 + 96 and fields[-1] <= 112
    full = extract_features(video, ext, post_encoder="gap")
    np.testing.assert_allclose(
        one.table.filter(like="f0").to_numpy()[0],
        full.table.filter(like="f0").to_numpy()[150],
        rtol=1e-4, atol=1e-6,
    )  # fmt: skip


def test_frame_range_roi_and_max_side():
    sample = make_whisker_sample()
    video = sample.video  # (96, 240, 320)
    ext = DynamicFeatureExtractor(endpoint="Mixed_3c", runtime="tensorflow")
    x0, y0 = 40, 60
    roi = (x0, y0, 160, 120)
    pts = np.array([[t, 120.0, 100.0] for t in range(96)])  # (t, y, x) in video pixels
    res = extract_features(video, ext, post_encoder="point", points=pts, start=10, stop=50, roi=roi)
    assert list(res.table["frame"]) == list(range(10, 50))
    assert res.metadata["roi_xywh"] == list(roi) and res.metadata["work_shape"] == [120, 160]
    cropped = np.ascontiguousarray(video[10:50, y0 : y0 + 120, x0 : x0 + 160])
    shifted = np.array([[t, 120.0 - y0, 100.0 - x0] for t in range(40)])
    ref = extract_features(cropped, ext, post_encoder="point", points=shifted)
    np.testing.assert_allclose(
        res.table.filter(like="f0").to_numpy(), ref.table.filter(like="f0").to_numpy(), atol=1e-6
    )
    assert res.table["x"].iloc[0] == 100.0  # rows keep video coordinates
    small = extract_features(video, ext, post_encoder="gap", max_side=160)
    assert small.metadata["work_shape"] == [120, 160]
    with pytest.raises(BadInputError, match="not inside"):
        select_frames(96, (240, 320), roi=(300, 0, 64, 64))
    with pytest.raises(BadInputError, match="stop must be after start"):
        extract_features(video, ext, post_encoder="gap", start=50, stop=20)
    with pytest.raises(BadInputError, match="stop frame 200 must be after start 50 and at most 96"):
        extract_features(video, ext, post_encoder="gap", start=50, stop=200)
    with pytest.raises(BadInputError, match="max_side 64 applies when flow is computed"):
        extract_features(np.zeros((5, 8, 8, 2), np.float32), ext, post_encoder="gap", max_side=64)


# uint8: half a quantisation step of 40/255 px
@pytest.mark.parametrize("dtype, tol", [("float16", 0.02), ("uint8", 20 / 255 + 1e-5)])
def test_keep_flow_is_written_and_readable(tmp_path, dtype, tol):
    video = make_whisker_sample().video[:30]
    ext = DynamicFeatureExtractor(endpoint="Conv3d_2b_1x1", runtime="tensorflow")
    out = tmp_path / "kept.npy"
    res = extract_features(
        video, ext, post_encoder="gap", keep_flow=out, keep_flow_dtype=dtype, max_side=None
    )
    assert res.metadata["kept_flow"] == str(out)
    stored = np.load(out, allow_pickle=False)
    assert stored.dtype == np.dtype(dtype) and stored.shape == (29, 240, 320, 2)
    flow = np.asarray(read_flow(out), np.float32)  # our reader decodes it
    truth = np.clip(OpticalFlowComputer("dis").compute(video), -20, 20)
    assert np.abs(flow - truth).max() <= tol
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.npy", "kept.npy.json"]


def test_cancel_in_the_middle_leaves_no_files(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # this test's own temp folder
    out = tmp_path / "out"
    out.mkdir()
    video = np.repeat(make_whisker_sample().video, 3, axis=0)
    ext = DynamicFeatureExtractor(endpoint="Mixed_3c", runtime="tensorflow", chunk_length=104)
    stop = threading.Event()

    def progress(done, total):
        if done > 0:
            stop.set()  # after the first chunk

    with pytest.raises(CancelledError):
        extract_features(
            video, ext, post_encoder="none", maps_path=out / "maps.npy", keep_flow=out / "f.npy",
            progress=progress, cancel=stop,
        )  # fmt: skip
    assert list(out.iterdir()) == []  # no maps, no flow, no partial file
    # No temporary folder of ours. TensorFlow's autograph writes the code of a function it traces
    # for the first time in this process to the temporary folder and removes it at exit: run
    # alone, this test is that first trace.
    left = [p for p in scratch.iterdir() if not p.name.startswith("__autograph_generated_file")]
    assert left == []
    assert not [t for t in threading.enumerate() if t.name.startswith(("flow-feed", "flow_"))]


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_cli_extract_ends_cleanly_on_a_signal(tmp_path, sig, code):
    """A cluster's time limit (SIGTERM) or Ctrl-C mid-run: exit code, no output, no temporary
    file, no process left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from napari_flow_features.io.video import write_video

    video = np.repeat(make_whisker_sample().video, 4, axis=0)  # 384 frames
    src = write_video(tmp_path / "long.mp4", video)
    scratch, out = tmp_path / "tmp", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "napari_flow_features.cli", "extract", str(src), "-o",
           str(out / "f.parquet"), "--keep-flow", str(out / "flow.npy"), "--endpoint", "Mixed_3c",
           "--chunk-length", "104", "--runtime", "tensorflow"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(out.glob(".*partial*")):
        time.sleep(0.05)  # the run is writing: kept flow / rows under temporary names
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert list(out.iterdir()) == []
    assert list(scratch.iterdir()) == []
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


# -- outputs with their checksum, owner-tagged work folders (issue 17) ------------------------------
def _flip_byte(path, where: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    path.write_bytes(bytes(data))


def _recorded_hash(path) -> str:
    import json

    return json.loads(path.with_name(path.name + ".json").read_text())["data_sha256"]


def _dead_work_dir(parent) -> str:
    """A work folder made by a process that has ended (as a SIGKILL leaves it)."""
    import subprocess
    import sys

    code = "import sys; from napari_flow_features.io._atomic import make_work_dir; "
    code += "print(make_work_dir(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(parent)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_kept_flow_maps_and_flow_cache_are_checked_on_reading(tmp_path, monkeypatch):
    """--keep-flow, the none post-encoder's maps and the flow cache's entries are written with a
    sidecar recording their SHA-256; a changed byte is refused by the readers, and a changed cache
    entry is computed again instead of being used. A dead run's work folder is removed."""
    from napari_flow_features.errors import MismatchedMetadataError
    from napari_flow_features.io._atomic import sha256_file
    from napari_flow_features.io.flow_files import read_npy

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dead = _dead_work_dir(scratch)
    video = make_whisker_sample(n_frames=12, height=32, width=48).video
    ext = DynamicFeatureExtractor(endpoint="Conv3d_2b_1x1", runtime="tensorflow")
    maps, kept, cache = tmp_path / "maps.npy", tmp_path / "kept.npy", tmp_path / "cache"
    first = extract_features(video, ext, post_encoder="none", maps_path=maps, keep_flow=kept,
                             keep_flow_dtype="float32", flow_cache=cache)  # fmt: skip
    # The dead run's work folder went, this run's too (TensorFlow's autograph files may stay).
    assert not [p for p in scratch.iterdir() if p.name.startswith(".flow-features")]
    (entry,) = cache.glob("*.npy")
    for path in (maps, kept, entry):
        assert _recorded_hash(path) == sha256_file(path), path
    np.testing.assert_array_equal(read_npy(maps), first.feature_maps)
    flow = np.load(entry)
    np.testing.assert_array_equal(read_flow(kept), flow)
    for path, read in ((maps, read_npy), (kept, read_flow)):
        _flip_byte(path)
        with pytest.raises(MismatchedMetadataError, match="do not belong together"):
            read(path)
    # A changed cache entry is not used: the flow is computed again and the entry rewritten.
    _flip_byte(entry)
    again = extract_features(video, ext, post_encoder="gap", flow_cache=cache)
    assert again.metadata["flow_reused"] is False
    assert _recorded_hash(entry) == sha256_file(entry)
    np.testing.assert_array_equal(np.load(entry), flow)
    reused = extract_features(video, ext, post_encoder="gap", flow_cache=cache)
    assert reused.metadata["flow_reused"] is True
    np.testing.assert_array_equal(reused.table.to_numpy(), again.table.to_numpy())
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*")), dead


def test_flow_file_records_its_checksum(tmp_path):
    """``flow`` writes the flow and its sidecar together, the sidecar recording the SHA-256; a
    changed byte is refused on reading and the file is no longer "complete" for a rerun."""
    from napari_flow_features.errors import MismatchedMetadataError
    from napari_flow_features.io._atomic import sha256_file

    video = make_whisker_sample(n_frames=6, height=32, width=48).video
    out = tmp_path / "flow.npy"
    computer = OpticalFlowComputer("dis")
    flow = computer.compute(video, out)
    assert _recorded_hash(out) == sha256_file(out)
    np.testing.assert_array_equal(read_flow(out), flow)
    assert computer.is_complete(video, out)
    _flip_byte(out)
    with pytest.raises(MismatchedMetadataError, match="SHA-256 differs"):
        read_flow(out)
    assert not computer.is_complete(video, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npy", "flow.npy.json"]


def test_work_folders_of_dead_runs_go_live_ones_stay(tmp_path):
    """Work folders carry their owner's pid and start time: a new run removes those of runs that
    have ended and never one of a run still going (a real live process, a real dead one)."""
    import subprocess
    import sys

    from napari_flow_features.io._atomic import make_work_dir, remove_stale_partials

    code = ("import sys, time; from napari_flow_features.io._atomic import make_work_dir; "
            "print(make_work_dir(sys.argv[1]), flush=True); time.sleep(120)")  # fmt: skip
    live = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        live_dir = live.stdout.readline().strip()
        dead_dir = _dead_work_dir(tmp_path)
        (tmp_path / "unrelated").mkdir()  # not ours: never touched
        (Path(dead_dir) / "half.npy").write_bytes(b"x")
        mine = make_work_dir(tmp_path)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert Path(live_dir).name in names and Path(dead_dir).name not in names
        assert mine.name in names and "unrelated" in names
        assert mine.name.startswith(".flow-features.partial-") and mine.stat().st_mode & 0o077 == 0
        assert remove_stale_partials(tmp_path, "flow-features") == []  # both owners are alive
    finally:
        live.kill()
        live.wait()
        live.stdout.close()
    assert remove_stale_partials(tmp_path, "flow-features") == [Path(live_dir)]
