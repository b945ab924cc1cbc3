"""Clean processes (issue 21): no telemetry, no child process, nothing in the home but our cache.

OpenVINO's converter sends usage telemetry from forked children and writes ``~/intel/`` unless the
user opted out. Each test runs the real command in a subprocess with a fresh home folder, a fresh
cache and no CI variables (``CI=true`` alone would silence OpenVINO's telemetry, hiding the bug).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import moving_pattern

from napari_flow_features.io.video import write_video

pytest.importorskip("openvino")

SRC = str(Path(__file__).resolve().parents[2] / "src")


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """A fresh home and cache; Keras's and matplotlib's own files outside the home."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.pop("NAPARI_FLOW_FEATURES_CACHE", None)
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        # Keras writes ~/.keras/keras.json and imports matplotlib, whose first import in an
        # account runs `fc-list` once to build its font cache: neither is OpenVINO's or ours,
        # so both live outside this home, and the font cache is built before the run.
        KERAS_HOME=str(tmp_path / "keras"),
        MPLCONFIGDIR=str(tmp_path / "mpl"),
        PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    )
    subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"], env=env, check=True, timeout=120
    )
    return env


#: Runs a command line with an audit hook that logs every process it creates (Python's
#: ``subprocess``, ``os.fork``, ``os.posix_spawn``: multiprocessing and the telemetry use these).
AUDITED = """
import json, sys
log = open(sys.argv[1], "a")
def hook(event, args):
    if event in ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec"):
        log.write(json.dumps([event, repr(args)[:300]]) + "\\n")
        log.flush()
sys.addaudithook(hook)
args = sys.argv[2:]
if args[0] == "-c":
    exec(compile(args[1], "<test>", "exec"))
else:
    from napari_flow_features.cli import main
    sys.exit(main(args))
"""


def run_watched(argv: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 300):
    """Run ``argv`` audited, polling its process tree every 2 ms until it ends.

    Returns the processes the audit hook logged and those psutil saw (pid, command line).
    """
    script, log = tmp_path / "audited.py", tmp_path / "processes.jsonl"
    script.write_text(AUDITED)
    cmd = [sys.executable, str(script), str(log), *argv]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watched = psutil.Process(proc.pid)
    seen: set[tuple[int, str]] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen.update((c.pid, _cmdline(c)) for c in watched.children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.002)
    out, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    logged = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return logged, seen


def assert_no_child(logged: list, seen: set) -> None:
    """No process was started (logged by the audit hook, or seen by psutil)."""
    # Not even h5py's `uname -p` any more: _tf_env.no_uname_child fills the field it reads.
    assert logged == [], f"processes started: {logged}"
    # A child seen between fork and exec shows its parent's command line: count pids.
    pids = {pid for pid, _ in seen}
    assert len(pids) <= len(logged), f"psutil saw children the hook did not log: {seen}"


def _cmdline(child: psutil.Process) -> str:
    try:
        return " ".join(child.cmdline()) or child.name()
    except psutil.Error:
        return "?"


def files_under(folder: Path) -> list[Path]:
    """Every file and folder under ``folder``."""
    return sorted(folder.rglob("*"))


def test_fresh_cache_extraction_starts_no_child_and_leaves_home_clean(tmp_path):
    env = fresh_env(tmp_path)
    home = Path(env["HOME"])
    video = tmp_path / "clip.mp4"
    write_video(video, moving_pattern(20, 40, 56), fps=25)
    argv = ["extract", str(video), "-o", str(tmp_path / "f.parquet"), "--endpoint", "Mixed_3c",
            "--runtime", "openvino"]  # fmt: skip
    assert_no_child(*run_watched(argv, env, tmp_path))
    cache = home / ".cache" / "napari-flow-features"
    runtimes = list(cache.rglob("runtimes/*/model.xml"))
    assert len(runtimes) >= 1  # the run converted (fresh cache): the path that forked before
    assert not (home / "intel").exists()
    stray = [p for p in files_under(home) if p != cache and cache not in p.parents]
    stray = [p for p in stray if p not in cache.parents]
    assert stray == [], f"written in the home folder outside our cache: {stray}"
    assert (tmp_path / "f.parquet").is_file()


def test_int8_quantisation_starts_no_child(tmp_path):
    pytest.importorskip("nncf")
    env = fresh_env(tmp_path)
    code = (
        "import numpy as np\n"
        "from napari_flow_features.model.extractor import DynamicFeatureExtractor\n"
        "ext = DynamicFeatureExtractor(endpoint='Mixed_3b', precision='int8')\n"
        "ext.encode(np.ones((1, 8, 32, 32, 2), np.float32))\n"
        "assert ext.describe()['int8_calibration']\n"
    )
    assert_no_child(*run_watched(["-c", code], env, tmp_path))
    assert not (Path(env["HOME"]) / "intel").exists()


def test_openvino_telemetry_stays_importable_for_others():
    """Our opt-out is scoped to OpenVINO's converter and NNCF: the package itself still imports."""
    pytest.importorskip("openvino_telemetry")
    code = (
        "import sys\n"
        "from napari_flow_features.model._openvino import import_openvino\n"
        "import_openvino()\n"
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "assert t.tm.__name__ == 'openvino.tools.ovc.telemetry_stub', t.tm\n"
        "import openvino_telemetry\n"
        "print(openvino_telemetry.Telemetry.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Telemetry"


def test_our_conversion_sends_nothing_after_the_user_imported_openvino_first(tmp_path):
    """A notebook that imported OpenVINO itself keeps its telemetry; our conversion sends none."""
    pytest.importorskip("openvino_telemetry")
    env = fresh_env(tmp_path)
    code = (
        "import openvino, numpy as np\n"  # the user's own import: OpenVINO's telemetry is live
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "assert t.tm.__name__ == 'openvino_telemetry', t.tm\n"
        "import keras\n"
        "from napari_flow_features.model.i3d import build_i3d\n"
        "from napari_flow_features.model.runtime import OpenVINOEncoder\n"
        "model = build_i3d(2, 'Conv3d_2b_1x1')\n"
        'log.write(\'["ours", ""]\\n\'); log.flush()\n'
        "encoder = OpenVINOEncoder(model)\n"
        "encoder(np.ones((1, 8, 16, 16, 2), np.float32))\n"
        "assert encoder.converted\n"
        "assert t.tm.__name__ == 'openvino_telemetry'  # restored for the user\n"
    )
    logged, _ = run_watched(["-c", code], env, tmp_path)
    ours = logged[logged.index(["ours", ""]) + 1 :]
    assert ours == []
