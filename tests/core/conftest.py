"""Fixtures for the headless tests (this pytest process may import TensorFlow; no viewer here)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile

import numpy as np
import pytest

from napari_flow_features.io.video import write_video

# Tests never reach the internet: the default weights are random unless a test asks for the
# pretrained ones (against its own server on 127.0.0.1), any other download goes to a closed local
# port, and the weights cache is a fresh folder. Set before anything runs, so worker children and
# CLI subprocesses inherit it.
os.environ["NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS"] = "random"
os.environ["NAPARI_FLOW_FEATURES_WEIGHTS_URL"] = "http://127.0.0.1:9/no-internet-in-tests"
_CACHE = tempfile.mkdtemp(prefix="nff-test-weights-")
os.environ["NAPARI_FLOW_FEATURES_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


def moving_pattern(n_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames that differ from each other everywhere (a drifting gradient plus a frame-number block)."""
    frames = np.empty((n_frames, height, width), np.uint8)
    xx = np.arange(width)[None, :]
    yy = np.arange(height)[:, None]
    for t in range(n_frames):
        frames[t] = (xx * 3 + yy * 2 + t * 5) % 256
        frames[t, 4:12, 4:12] = (t * 7) % 256
    return frames


@pytest.fixture(scope="session")
def bframe_video(tmp_path_factory) -> tuple[str, np.ndarray]:
    """An H.264 file with B-frames and short GOPs (decode order ≠ display order)."""
    frames = moving_pattern(90)
    path = tmp_path_factory.mktemp("video") / "bframes.mp4"
    write_video(path, frames, fps=25, bframes=3, gop=12, crf=8)
    return str(path), frames


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> str:
    """A long (1,500 frame) small video for laziness checks."""
    frames = moving_pattern(1500, 32, 32)
    path = tmp_path_factory.mktemp("video") / "long.mp4"
    write_video(path, frames, fps=30, gop=60)
    return str(path)


@contextlib.contextmanager
def mounted_tmpfs(folder, size: str = "200k", read_only: bool = False):
    """A real small file system at ``folder`` (tmpfs), unmounted afterwards.

    ``read_only``: remounted read-only after creation, so not even root can write to it. Skips the
    test, with the reason, where mounting is not permitted (not root, no CAP_SYS_ADMIN).
    """
    import subprocess
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
