"""Import TensorFlow without its start-up noise on machines without a GPU.

On a CPU-only machine TensorFlow's CUDA probing prints lines such as ``failed call to cuInit:
UNKNOWN ERROR (303)`` and ``Could not find cuda drivers``; they are written by C++ straight to file
descriptor 2, before TensorFlow's own log level applies, and they look like failures to a newcomer.
:func:`import_tensorflow_quietly` imports TensorFlow and Keras and runs one tiny op (the CUDA probe
happens there) with file descriptor 2 captured, then writes back every captured line that is not one
of these known start-up messages. Machines with an NVIDIA device keep every line.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator

logger = logging.getLogger(__name__)

#: Start-up lines of a CPU-only TensorFlow that say nothing is wrong.
BENIGN_STARTUP = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|Could not find cuda drivers"
    r"|failed call to cuInit|oneDNN custom operations|cpu_feature_guard\.cc"
    r"|To enable the following instructions|rebuild TensorFlow with the appropriate compiler"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|TF-TRT Warning"
)


def has_nvidia_device() -> bool:
    """Whether the machine shows an NVIDIA GPU (Linux device nodes, or WSL's GPU bridge)."""
    if sys.platform == "darwin":
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def cpu_only_environment() -> None:
    """Tell CUDA there is no device before TensorFlow loads, on a machine without an NVIDIA device.

    Sets ``CUDA_VISIBLE_DEVICES=""`` unless the user set it; changes nothing on a GPU machine.
    """
    if not has_nvidia_device():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@contextlib.contextmanager
def _captured_stderr_fd() -> Iterator[list[str]]:
    """Capture what is written to file descriptor 2 (C++ included); the lines land in the list."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def no_uname_child() -> None:
    """Fill ``platform.uname().processor`` without the ``uname -p`` child Python would start.

    On Linux Python resolves that field by running ``uname -p`` in a child process the first time
    anything reads the whole ``uname()`` (h5py does when Keras imports it). ``uname -p`` says
    ``unknown`` (read as ``""``) on most Linux systems, and we start no child process for it
    (docs/performance.md, "No telemetry, no network, no child process").
    """
    if sys.platform.startswith("linux"):
        import platform

        info = platform.uname()
        if "processor" not in vars(info):  # not read yet (a cached_property)
            vars(info)["processor"] = ""


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras (and probe the devices) without the CPU-only start-up noise.

    Anything else they write to stderr is logged as a warning (shown on stderr, as before, when
    logging is not configured); the dropped lines are logged at DEBUG level.
    """
    no_uname_child()
    if "tensorflow" in sys.modules or has_nvidia_device():
        import keras
        import tensorflow  # noqa: F401

        return
    cpu_only_environment()
    started = time.perf_counter()
    with _captured_stderr_fd() as lines:
        import keras  # noqa: F401
        import tensorflow as tf

        tf.zeros(1) + 1  # the CUDA probe runs at the first op
    logger.info("TensorFlow imported in %.1f s", time.perf_counter() - started)
    kept = []
    for line in lines:
        if not line.strip():
            continue
        if BENIGN_STARTUP.search(line):
            logger.debug("dropped a CPU-only start-up line: %s", line)
        else:
            kept.append(line)
    if kept:
        logger.warning("\n".join(kept))
