"""``flow-features cache info|clear`` on a fake home (subprocess: HOME, XDG_CACHE_HOME, TMPDIR)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_flow_features.io._atomic import make_work_dir

SRC = str(Path(__file__).resolve().parents[2] / "src")
MB = 2**20


@pytest.fixture
def home(tmp_path):
    """A home with weights, two runtimes, a video index, Keras's and OpenVINO's files."""
    home = tmp_path / "home"
    cache = home / ".cache" / "napari-flow-features"
    root = cache / "checkpoints"
    files = {
        root / "flow_imagenet" / "model.ckpt.data-00000-of-00001": 3 * MB,
        cache / "runtimes" / "a" / "model.bin": 2 * MB,
        cache / "runtimes" / "b" / "model.bin": 1 * MB,
        cache / "video-index" / "v.npz": MB // 2,
        root / "runtimes" / "old" / "model.bin": MB // 4,  # where earlier versions kept them
        home / ".keras" / "keras.json": 10,
        home / "intel" / "openvino_telemetry": 1,
    }
    for path, size in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    (tmp_path / "tmp").mkdir()
    return home


def cache_cmd(home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NAPARI_FLOW_FEATURES_CACHE"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               TMPDIR=str(home.parent / "tmp"), PYTHONPATH=SRC)  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "napari_flow_features.cli", "cache", *args],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def sizes(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if " MB " in line}


def test_info_lists_every_location_with_its_size(home):
    out = cache_cmd(home, "info")
    got = sizes(out)
    assert got["weights"] == "3.0" and got["runtimes"] == "3.0" and got["video-index"] == "0.5"
    assert got["legacy"] == "0.2"  # an earlier version's compiled models, listed to clear
    assert got["total"] == "6.8"  # Keras's and OpenVINO's files are not counted as removable
    assert str(home / ".keras" / "keras.json") in out and str(home / "intel") in out
    assert "uninstall leaves" in out


def test_clear_runtimes_removes_only_them(home):
    out = cache_cmd(home, "clear", "--runtimes")
    cache = home / ".cache" / "napari-flow-features"
    assert f"removed {cache / 'runtimes'} (3.0 MB)" in out
    assert f"removed {cache / 'checkpoints' / 'runtimes'} (0.2 MB)" in out  # the legacy folder
    assert not (cache / "runtimes").exists() and (cache / "checkpoints" / "flow_imagenet").is_dir()
    assert "nothing to remove" in cache_cmd(home, "clear", "--runtimes")


def test_clear_all_keeps_shared_files_and_live_runs(home):
    tmp = home.parent / "tmp"
    live = make_work_dir(tmp)  # this test process is alive: its run's folder must stay
    code = (
        "import sys; from napari_flow_features.io._atomic import make_work_dir as m; m(sys.argv[1])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp)], check=True, env={**os.environ, "PYTHONPATH": SRC}
    )
    (stale,) = [p for p in tmp.iterdir() if p != live]
    out = cache_cmd(home, "clear", "--all")
    assert not (home / ".cache" / "napari-flow-features").exists()
    assert f"removed {stale}" in out and not stale.exists() and live.is_dir()
    assert (home / ".keras" / "keras.json").is_file() and (home / "intel").is_dir()
    assert sizes(cache_cmd(home, "info"))["total"] == "0.0"


def test_clear_needs_a_choice(home):
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-m", "napari_flow_features.cli", "cache", "clear"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "one of the arguments --runtimes --weights --all" in done.stderr
