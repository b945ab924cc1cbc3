"""Optical flow on synthetic videos with known motion: accuracy, signs, streaming, errors."""

from __future__ import annotations

import contextlib
import json
import os
import threading

import cv2
import numpy as np
import pytest

from napari_flow_features.errors import BadInputError, CancelledError
from napari_flow_features.flow import compute as compute_mod
from napari_flow_features.flow.compute import OpticalFlowComputer, resized_shape
from napari_flow_features.io.video import write_video
from napari_flow_features.sample import _texture, make_whisker_sample

H, W = 96, 128
#: OpenCV's TV-L1 runs where the ``tvl1`` extra (the contrib wheel) is installed; the test
#: environment has the plain wheel only (one cv2, docs/flow.md), so there it is skipped, by name.
OPENCV_TVL1 = pytest.param(
    "tvl1",
    marks=pytest.mark.skipif(
        not hasattr(cv2, "optflow"),
        reason="OpenCV's TV-L1 needs the tvl1 extra (opencv-contrib-python-headless)",
    ),
)
METHODS = ["farneback", "dis", OPENCV_TVL1, "tvl1-skimage"]
# Mean endpoint error bounds (px), set from measurement with ~2-3x headroom (see docs/flow.md).
TRANSLATION_EPE = {"farneback": 0.08, "dis": 0.15, "tvl1": 0.2, "tvl1-skimage": 0.15}
ROTATION_EPE = {"farneback": 0.15, "dis": 0.25, "tvl1": 0.25, "tvl1-skimage": 0.2}


def texture(h=H + 32, w=W + 32, seed=0):
    return _texture((h, w), np.random.default_rng(seed), sigma=2.0) * 200 + 20


def fourier_shift(img, dx, dy):
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (kx * dx + ky * dy))))


def translating_video(dx=1.3, dy=-0.7, n=4):
    """Frame t is the texture shifted by t*(dx, dy): true flow is (dx, dy) everywhere."""
    tex = texture()
    frames = [fourier_shift(tex, dx * t, dy * t)[16:-16, 16:-16] for t in range(n)]
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def rotating_video(deg=1.5, n=3):
    """Frame t is the texture rotated by t*deg about the centre (+angle turns +x towards +y)."""
    tex = texture(H, W, seed=3)
    c = ((W - 1) / 2, (H - 1) / 2)
    frames = []
    for t in range(n):
        m = cv2.getRotationMatrix2D(c, -deg * t, 1.0)  # OpenCV: positive = counter-clockwise
        frames.append(cv2.warpAffine(tex.astype(np.float32), m, (W, H), flags=cv2.INTER_CUBIC))
    yy, xx = np.mgrid[0:H, 0:W]
    th = np.deg2rad(deg)
    rx, ry = xx - c[0], yy - c[1]
    gt = np.stack(
        [np.cos(th) * rx - np.sin(th) * ry - rx, np.sin(th) * rx + np.cos(th) * ry - ry], -1
    )
    return np.clip(np.round(frames), 0, 255).astype(np.uint8), gt


def interior_epe(flow, gt, margin=12):
    d = (flow - gt)[..., margin:-margin, margin:-margin, :]
    return float(np.hypot(d[..., 0], d[..., 1]).mean())


@pytest.mark.parametrize("method", METHODS)
def test_translation_accuracy(method):
    video = translating_video()
    flow = OpticalFlowComputer(method, workers=1).compute(video)
    assert flow.shape == (3, H, W, 2) and flow.dtype == np.float32
    gt = np.broadcast_to(np.array([1.3, -0.7], np.float32), flow.shape)
    assert interior_epe(flow, gt) < TRANSLATION_EPE[method]
    assert flow[..., 0].mean() > 1.0 and flow[..., 1].mean() < -0.4  # right is +dx, up is -dy


@pytest.mark.parametrize("method", METHODS)
def test_rotation_accuracy(method):
    video, gt = rotating_video()
    flow = OpticalFlowComputer(method, workers=1).compute(video)
    assert interior_epe(flow, np.broadcast_to(gt, flow.shape)) < ROTATION_EPE[method]


def test_warping_next_frame_back_reproduces_the_frame():
    video = translating_video(dx=2.4, dy=1.1, n=2)
    flow = OpticalFlowComputer("farneback", workers=1).compute(video)[0]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    warped = cv2.remap(video[1], xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR)
    inner = (slice(8, -8), slice(8, -8))
    err_flow = np.abs(warped[inner].astype(float) - video[0][inner]).mean()
    err_none = np.abs(video[1][inner].astype(float) - video[0][inner]).mean()
    assert err_flow < 0.25 * err_none


def test_pool_gives_the_same_flow_as_in_process():
    video = translating_video(n=7)
    one = OpticalFlowComputer("farneback", workers=1, chunk_size=2).compute(video)
    two = OpticalFlowComputer("farneback", workers=2, chunk_size=2).compute(video)
    np.testing.assert_array_equal(one, two)


def test_sample_whisker_motion():
    """Flow on the swinging bar follows the true rotation; the static background stays still."""
    sample = make_whisker_sample(n_frames=12)
    flow = OpticalFlowComputer("dis", preset="medium").compute(sample.video)
    gt = sample.ground_truth_flow
    speed = np.hypot(gt[..., 0], gt[..., 1])
    bar = speed > 1.0
    cos = (flow[..., 0] * gt[..., 0] + flow[..., 1] * gt[..., 1])[bar] / (
        np.hypot(flow[..., 0], flow[..., 1])[bar] * speed[bar] + 1e-6
    )
    assert cos.mean() > 0.8
    assert np.hypot(flow[..., 0], flow[..., 1])[bar].mean() > 1.0
    far = np.ones_like(bar)
    far[:, 60:180, :] = False  # rows the bar never reaches (±20° about y=120)
    assert np.hypot(flow[..., 0], flow[..., 1])[far].mean() < 0.1


def test_resize_before_flow():
    video = translating_video(dx=2.0, dy=0.0, n=3)
    computer = OpticalFlowComputer("farneback", max_side=64, workers=1)
    spec = computer.spec_for(video)
    assert spec.flow_shape == (48, 64) and spec.scale_yx == (2.0, 2.0)
    flow = computer.compute(video)
    assert flow.shape == (2, 48, 64, 2)
    assert abs(float(flow[:, 8:-8, 8:-8, 0].mean()) - 1.0) < 0.1  # 2 px at full size = 1 px here
    assert resized_shape((240, 320), scale=0.5) == (120, 160)
    with pytest.raises(BadInputError, match="not both"):
        resized_shape((240, 320), max_side=100, scale=0.5)


def test_streams_to_npy_with_progress_and_sidecar(tmp_path):
    video = translating_video(n=6)
    seen = []
    out = tmp_path / "flow.npy"
    flow = OpticalFlowComputer("farneback", workers=1, chunk_size=2).compute(
        video, out, progress=lambda d, t: seen.append((d, t))
    )
    assert isinstance(flow, np.memmap) and flow.shape == (5, H, W, 2)
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    meta = json.loads((tmp_path / "flow.npy.json").read_text())
    assert meta["flow_method"] == "farneback" and meta["n_frames"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npy", "flow.npy.json"]


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_leaves_nothing_behind(tmp_path, workers):
    video = translating_video(n=12)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(CancelledError):
        OpticalFlowComputer("farneback", workers=workers, chunk_size=1).compute(
            video, tmp_path / "flow.npy", cancel=cancel
        )
    assert list(tmp_path.iterdir()) == []


def test_cancel_with_event(tmp_path):
    event = threading.Event()
    event.set()
    with pytest.raises(CancelledError):
        OpticalFlowComputer("dis").compute(translating_video(), tmp_path / "f.npy", cancel=event)
    assert list(tmp_path.iterdir()) == []


def test_compute_file_and_directory(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", translating_video(n=4), crf=5)
    write_video(videos / "b.avi", translating_video(dx=-1, dy=0.5, n=5), crf=5)
    (videos / "notes.txt").write_text("ignored")
    out = tmp_path / "flow"
    computer = OpticalFlowComputer("dis")
    statuses = []
    paths = computer.compute_directory(videos, out, on_file=lambda p, s: statuses.append(s))
    assert [p.name for p in paths] == ["a.npy", "b.npy"] and statuses == ["computed"] * 2
    assert np.load(paths[1]).shape == (4, H, W, 2)
    # Second run: complete outputs are skipped; partial leftovers removed; a wrong one redone.
    # A leftover of a run that died (its owner process is gone) is removed; a live run's would stay.
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "import sys; from napari_flow_features.io._atomic import "
                    "partial_path; partial_path(sys.argv[1]).write_bytes(b'half')",
                    str(out / "a.npy")], check=True)  # fmt: skip
    assert list(out.glob(".a.partial*"))
    np.save(paths[1], np.zeros((2, H, W, 2), np.float32))
    statuses.clear()
    computer.compute_directory(videos, out, on_file=lambda p, s: statuses.append(s))
    assert statuses == ["skipped", "computed"]
    assert not list(out.glob(".*partial*"))
    assert np.load(paths[1]).shape == (4, H, W, 2)
    # A different method is not "complete".
    assert not OpticalFlowComputer("farneback").is_complete(videos / "a.mp4", paths[0])


def test_bad_inputs(tmp_path):
    with pytest.raises(BadInputError, match="at least 2 frames"):
        OpticalFlowComputer("dis").compute(np.zeros((1, 16, 16), np.uint8))
    with pytest.raises(BadInputError, match="different sizes"):
        OpticalFlowComputer("dis").compute(
            [np.zeros((16, 16), np.uint8), np.zeros((16, 20), np.uint8)]
        )
    with pytest.raises(BadInputError, match="Unknown flow method 'lucas'"):
        OpticalFlowComputer("lucas")
    with pytest.raises(BadInputError, match="preset"):
        OpticalFlowComputer("dis", preset="slow")
    with pytest.raises(BadInputError, match=r"\(T, H, W\)"):
        OpticalFlowComputer("dis").compute(np.zeros((16, 16), np.uint8))
    text = tmp_path / "fake.mp4"
    text.write_text("hello")
    with pytest.raises(BadInputError, match=r"fake\.mp4"):
        OpticalFlowComputer("dis").compute_file(text, tmp_path / "out.npy")
    with pytest.raises(BadInputError, match=r"\.npy"):
        OpticalFlowComputer("dis").compute(translating_video(), tmp_path / "out.flo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.mp4"]


def test_read_only_output_folder(tmp_path):
    """A folder the process really cannot write to: by its permission bits for a user, and for
    root (who ignores them, as CI runs) a file system mounted read-only. Nothing is written."""
    from conftest import mounted_tmpfs

    video = translating_video()
    locked = tmp_path / "locked"
    if os.geteuid() != 0:
        locked.mkdir()
        locked.chmod(0o555)
        context: contextlib.AbstractContextManager = contextlib.nullcontext(locked)
    else:
        context = mounted_tmpfs(locked, "1m", read_only=True)
    with context:
        with pytest.raises(OSError):
            (locked / "probe").write_bytes(b"")  # the premise: a real refusal, root included
        with pytest.raises(BadInputError, match="read-only"):
            OpticalFlowComputer("dis").compute(video, locked / "flow.npy")
        assert list(locked.iterdir()) == []
    locked.chmod(0o755)


def test_tvl1_without_contrib_names_the_extra(monkeypatch):
    monkeypatch.delattr(cv2, "optflow", raising=False)  # also where contrib is not installed
    monkeypatch.setattr(compute_mod, "_THREAD_KERNELS", threading.local())
    with pytest.raises(BadInputError, match=r"napari-flow-features\[tvl1\]"):
        OpticalFlowComputer("tvl1")


def test_unguarded_script_with_farneback_runs(tmp_path):
    """A plain script without ``if __name__ == "__main__":`` (spawn pools re-ran such scripts and
    died with BrokenProcessPool): it runs once, on threads, and starts no child process."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import multiprocessing, numpy as np\n"
        "from napari_flow_features.flow.compute import OpticalFlowComputer\n"
        "print('run', flush=True)\n"
        "rng = np.random.default_rng(0)\n"
        "base = (rng.random((48, 64)) * 255).astype(np.uint8)\n"
        "video = np.stack([np.roll(base, i, axis=1) for i in range(6)])\n"
        "flow = OpticalFlowComputer('farneback', workers=2, chunk_size=1).compute(video)\n"
        "print('shape', flow.shape, 'children', len(multiprocessing.active_children()))\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("run") == 1  # not re-executed in children
    assert "shape (5, 48, 64, 2) children 0" in done.stdout


def test_dis_flow_of_a_pair_does_not_depend_on_what_was_computed_before():
    """One DIS object's result depends on its earlier calls: the kernel makes one per pair, so a
    frame's flow is the same in any chunk, thread or warm process (issue 21's equal rows)."""
    from napari_flow_features.flow.compute import iter_flow_blocks

    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 255, (60, 80), np.uint8), (0, 0), 2)
    frames = np.stack([np.roll(base, (t, 2 * t), (0, 1)) for t in range(12)])

    def flow(workers, first=0):
        blocks = ((f, frames[f : min(f + 5, 12)]) for f in range(first, 11, 4))
        return np.concatenate(
            [b for _, b in iter_flow_blocks(blocks, "dis", "medium", None, workers)]
        )

    once = flow(1)
    np.testing.assert_array_equal(flow(1), once)  # the same thread's kernel, called again
    np.testing.assert_array_equal(flow(2), once)  # other threads
    np.testing.assert_array_equal(flow(1, first=4), once[4:])  # a later start
