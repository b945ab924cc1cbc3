"""TensorFlow starts without CUDA probing noise on a machine with no GPU (the demo, the worker,
the command line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_flow_features._tf_env import BENIGN_STARTUP, has_nvidia_device


@pytest.mark.skipif(has_nvidia_device(), reason="a GPU machine keeps every TensorFlow line")
def test_tensorflow_imports_quietly_without_a_gpu():
    code = (
        "from napari_flow_features._tf_env import import_tensorflow_quietly\n"
        "import_tensorflow_quietly()\n"
        "import sys, warnings; print('still talking', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["still talking"], lines  # no cuInit / cuda driver lines; stderr still works


def test_only_known_startup_lines_are_dropped():
    assert BENIGN_STARTUP.search(
        "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)"
    )
    assert not BENIGN_STARTUP.search("ValueError: the flow has the wrong shape")


@pytest.mark.skipif(has_nvidia_device(), reason="a GPU machine keeps every TensorFlow line")
def test_extract_on_the_command_line_prints_no_cuda_noise(tmp_path):
    from conftest import moving_pattern

    from napari_flow_features.io.video import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, moving_pattern(10, 32, 32), fps=25)
    out = tmp_path / "f.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "napari_flow_features.cli", "extract", str(video), "-o", str(out),
         "--weights", "random", "--endpoint", "Conv3d_1a_7x7", "--runtime", "tensorflow"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.exists()
    noise = [line for line in done.stderr.splitlines() if BENIGN_STARTUP.search(line)]
    assert noise == []
