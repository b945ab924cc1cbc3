"""GUI test process: a napari viewer per test; TensorFlow and Keras must never be imported."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
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

FORBIDDEN = ("tensorflow", "keras")


def pytest_sessionfinish(session, exitstatus):
    """Fail the whole run if anything pulled TensorFlow into the process that drew canvases."""
    loaded = [m for m in FORBIDDEN if m in sys.modules]
    if loaded:
        print(f"\nERROR: {loaded} imported in the napari test process", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="module", autouse=True)
def close_worker():
    """The model worker process a test module started goes with the module."""
    yield
    from napari_flow_features.napari._qt import extract_widget as _extract_widget

    if _extract_widget._WORKER is not None:
        _extract_widget._WORKER.close()
        _extract_widget._WORKER = None


@pytest.fixture
def small_video(tmp_path) -> str:
    frames = np.zeros((12, 40, 56), np.uint8)
    for t in range(12):
        frames[t, 10:20, 5 + 2 * t : 15 + 2 * t] = 220
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=20)
    return str(path)
