"""TensorFlow starts without CUDA probing noise on a machine with no GPU (the demo, the worker)."""

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
