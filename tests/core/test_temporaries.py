"""Commands leave the temporary folder as they found it (issue 21): every temporary is
owner-tagged and removed, Dask's scratch space and a settings file's extractor fields included.

Each command runs as a user runs it, in its own process, with ``TMPDIR`` pointed at a fresh
folder that must be empty afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import moving_pattern

from napari_flow_features.config import ExtractionSettings
from napari_flow_features.io.tables import read_table
from napari_flow_features.io.video import write_video


def _run(args: list[str], scratch: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    """``flow-features ARGS`` in a new process whose temporary folder is ``scratch``."""
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "napari_flow_features.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _left(scratch: Path) -> list[str]:
    return sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))


def test_flow_input_dir_leaves_no_dask_scratch_space(tmp_path):
    """``flow --input-dir`` runs on a LocalCluster: its scheduler's and workers' scratch space
    lives in the run's own work folder, removed at the end (no ``dask-scratch-space/``)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    frames = moving_pattern(5, 32, 40)
    write_video(videos / "a.mp4", frames, crf=5)
    scratch, out = tmp_path / "tmp", tmp_path / "flow"
    done = _run(["flow", "--input-dir", str(videos), "--output-dir", str(out), "--method",
                 "dis", "--workers", "1"], scratch)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.load(out / "a.npy").shape == (4, 32, 40, 2)
    assert _left(scratch) == []


def test_extract_batch_leaves_no_dask_scratch_space(tmp_path):
    """The many-video form of ``extract`` (a folder and ``--output-dir``) on a LocalCluster: the
    table is written and the temporary folder is left empty."""
    study = tmp_path / "study"
    study.mkdir()
    write_video(study / "s.mp4", moving_pattern(12, 32, 32), fps=25)
    scratch, out = tmp_path / "tmp", tmp_path / "tables"
    done = _run(["extract", str(study), "--output-dir", str(out), "--endpoint", "Mixed_3c",
                 "--max-side", "32", "--runtime", "tensorflow"], scratch)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_table(out / "s.parquet")["frame"].tolist() == list(range(12))
    assert _left(scratch) == []


def test_extract_config_with_extraction_section_leaves_no_copy(tmp_path):
    """``extract VIDEO -o F --config FILE`` with the dock's settings file (an ``extraction:``
    section): the file's options and encoder fields apply, and no copy of it is left in the
    temporary folder (none is made: the encoder reads the file itself)."""
    video = write_video(tmp_path / "v.mp4", moving_pattern(16, 32, 32), fps=25)
    config = ExtractionSettings(
        extractor={"endpoint": "Mixed_3c", "runtime": "tensorflow"}, max_side=None, start=3
    ).to_yaml(tmp_path / "dock.yaml")
    out = tmp_path / "f.parquet"
    scratch = tmp_path / "tmp"
    done = _run(["extract", str(video), "-o", str(out), "--config", str(config)], scratch)
    assert done.returncode == 0, done.stderr[-2000:]
    table = read_table(out)
    assert table.attrs["endpoint"] == "Mixed_3c"  # the file's encoder field
    assert table["frame"].tolist() == list(range(3, 16))  # the file's extraction: start
    assert _left(scratch) == []


def test_extract_config_killed_mid_run_leaves_only_owner_tagged_temporaries(tmp_path):
    """A run of ``extract --config FILE`` (with an ``extraction:`` section) killed with SIGKILL
    mid-extraction leaves only owner-tagged work folders, which the next run removes: nothing
    untagged (such as a copy of the settings file) stays in the temporary folder for good."""
    import re
    import signal
    import time

    video = write_video(tmp_path / "v.mp4", np.tile(moving_pattern(48, 64, 64), (8, 1, 1)))
    config = ExtractionSettings(
        extractor={"endpoint": "Mixed_3c", "runtime": "tensorflow"}, max_side=None
    ).to_yaml(tmp_path / "dock.yaml")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "napari_flow_features.cli", "extract", str(video), "-o",
           str(tmp_path / "f.parquet"), "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not list(scratch.glob(".flow-features.partial-*")):
        time.sleep(0.05)  # the extraction has started: its work folder exists
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    tagged = re.compile(rf"^\.flow-features\.partial-{proc.pid}-\d+-[0-9a-f]{{6}}-[0-9a-f]{{8}}$")
    left = [p.name for p in scratch.iterdir()]
    assert left and all(tagged.match(name) for name in left), left
    short = write_video(tmp_path / "short.mp4", moving_pattern(10, 32, 32))
    again = _run(["extract", str(short), "-o", str(tmp_path / "g.parquet"), "--config",
                  str(config)], scratch)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert _left(scratch) == []  # the killed run's folder went with the next run
