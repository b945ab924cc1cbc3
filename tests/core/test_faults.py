"""Fault injection (issue 17, docs/reliability.md): a disk that fills, signals mid-write, corrupt and
hostile inputs. Each case must end in a named error (a subclass of ``BadInputError`` or
``OutOfSpaceError``) with nothing incomplete at a final path and no temporary left behind.

The full-disk cases run twice when possible: on a small tmpfs mounted by the test (needs root, as in
CI) and in a child process whose file-size limit (``RLIMIT_FSIZE``) is small (any Linux user).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.errors import (
    BadInputError,
    CorruptFileError,
    OutOfSpaceError,
    UnsafePathError,
)

TESTS = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "napari_flow_features.cli"]
NAMED = (BadInputError, OutOfSpaceError)
SMALL_FS = 128 * 1024  # bytes: every writer below produces more


# -- the writers, each asked to write more than the small file system holds ---------------------
def _big_table(rows: int = 3000, cols: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = {"frame": np.arange(rows)}
    data.update({f"f{c:04d}": rng.normal(size=rows) for c in range(cols)})
    return pd.DataFrame(data)


def _tiny_model():
    import keras

    inputs = keras.Input((512,))
    return keras.Model(inputs, keras.layers.Dense(512)(inputs))  # 1 MB of weights


def write_csv(folder: Path, url: str) -> None:
    from napari_flow_features.io.tables import write_table

    write_table(_big_table(), folder / "table.csv", {"endpoint": "Mixed_4f"})


def write_parquet(folder: Path, url: str) -> None:
    from napari_flow_features.io.tables import write_table

    write_table(_big_table(), folder / "table.parquet", {"endpoint": "Mixed_4f"})


def write_sidecar(folder: Path, url: str) -> None:
    """The CSV fits, its metadata does not."""
    from napari_flow_features.io.tables import write_table

    write_table(_big_table(10, 2), folder / "small.csv", {"note": "x" * (2 * SMALL_FS)})


def write_figure(folder: Path, url: str) -> None:
    from napari_flow_features.analysis.visualization import _figure, save_figure

    fig = _figure(8, 8)
    fig.add_subplot().imshow(np.random.default_rng(0).random((800, 800)), interpolation="none")
    save_figure(fig, folder / "figure.png", dpi=100)


def write_registry(folder: Path, url: str) -> None:
    from napari_flow_features.model.registry import ModelSerializer

    ModelSerializer(_tiny_model(), "tiny").save_model(folder / "registry", version="v1")


def write_weights(folder: Path, url: str) -> None:
    from napari_flow_features.model.weights import fetch_checkpoint

    fetch_checkpoint("flow_imagenet", folder / "cache" / "flow_imagenet", base_url=url)


def write_flo(folder: Path, url: str) -> None:
    from napari_flow_features.io.flow_files import write_flo

    write_flo(folder / "field.flo", np.ones((200, 200, 2), np.float32))


def write_npy(folder: Path, url: str) -> None:
    from napari_flow_features.io.flow_files import write_flow_npy

    write_flow_npy(folder / "flow.npy", np.ones((4, 100, 100, 2), np.float32))


def write_streamed_csv(folder: Path, url: str) -> None:
    from napari_flow_features.io.table_stream import TableStreamWriter

    table = _big_table()
    with TableStreamWriter(folder / "streamed.csv") as out:
        for start in range(0, len(table), 500):
            out.write(table.iloc[start : start + 500])
        out.close({"endpoint": "Mixed_4f"})


def write_streamed_parquet(folder: Path, url: str) -> None:
    from napari_flow_features.io.table_stream import TableStreamWriter

    table = _big_table()
    with TableStreamWriter(folder / "streamed.parquet") as out:
        for start in range(0, len(table), 500):
            out.write(table.iloc[start : start + 500])
        out.close({"endpoint": "Mixed_4f"})


def write_report_json(folder: Path, url: str) -> None:
    from napari_flow_features.io.json_files import write_json

    write_json(folder / "report.json", {"values": [0.125] * 50_000})


WRITERS = {
    f.__name__: f
    for f in (
        write_csv,
        write_parquet,
        write_sidecar,
        write_figure,
        write_registry,
        write_weights,
        write_flo,
        write_npy,
        write_report_json,
        write_streamed_csv,
        write_streamed_parquet,
    )
}


def leftovers(folder: Path) -> list[str]:
    """Files anywhere under ``folder`` and temporaries of any kind (folders we made to hold an
    output may stay, empty)."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files]
        found += [os.path.join(root, d) for d in dirs if ".partial" in d]
    return sorted(os.path.relpath(p, folder) for p in found)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An HTTP server on 127.0.0.1 with flow_imagenet/<files> of 1 MB each."""
    root = tmp_path_factory.mktemp("served")
    (root / "flow_imagenet").mkdir()
    for name in ("checkpoint", "model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        (root / "flow_imagenet" / name).write_bytes(os.urandom(1 << 20))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: int = SMALL_FS):
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE variant covers this user")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); RLIMIT_FSIZE covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_full_tmpfs(writer, tmp_path, served):
    with small_tmpfs(tmp_path / "fs") as fs:
        with pytest.raises(OutOfSpaceError, match=r"No space left on device") as info:
            WRITERS[writer](fs, served)
        assert str(fs) in str(info.value)  # names where
        assert leftovers(fs) == []


def test_full_tmpfs_keeps_the_older_table_and_its_metadata(tmp_path):
    """Issue 17 point 3: a failed CSV write over an older table left the new sidecar beside the old
    CSV, and the old data was read back with the new run's metadata."""
    from napari_flow_features.io.tables import read_table, write_table

    with small_tmpfs(tmp_path / "fs") as fs:
        write_table(_big_table(20, 2), fs / "table.csv", {"run": "old"})
        with pytest.raises(OutOfSpaceError):
            write_table(_big_table(), fs / "table.csv", {"run": "new"})
        old = read_table(fs / "table.csv")
        assert old.attrs["run"] == "old" and len(old) == 20
        assert leftovers(fs) == ["table.csv", "table.csv.json"]


LIMITED_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_faults as t
from napari_flow_features.errors import (
    BadInputError,
    CorruptFileError,
    OutOfSpaceError,
    UnsafePathError,
)
results = {{}}
for name in sys.argv[2:]:
    folder = Path(sys.argv[1]) / name
    folder.mkdir()
    try:
        t.WRITERS[name](folder, {url!r})
        results[name] = ["no error", "", t.leftovers(folder)]
    except (BadInputError, OutOfSpaceError) as exc:
        results[name] = [type(exc).__name__, str(exc), t.leftovers(folder)]
    except BaseException as exc:
        results[name] = ["unnamed " + type(exc).__name__, str(exc), t.leftovers(folder)]
print(json.dumps(results))
"""


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (SMALL_FS, SMALL_FS))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead of a kill


def test_file_size_limit_in_a_child(tmp_path, served):
    """Every writer in a child process that may not write a file larger than 128 KB."""
    script = LIMITED_CHILD.format(tests=str(TESTS), url=served)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *sorted(WRITERS)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (kind, message, left) in results.items():
        assert kind == "OutOfSpaceError", (name, kind, message)
        assert "File size limit exceeded" in message or "No space" in message, (name, message)
        assert left == [], (name, left)


# -- extract's streamed outputs on a full disk -----------------------------------------------------
# One child process (TensorFlow imported once) runs `flow-features extract` (cli.main) once per
# output, each time with a file-size limit (RLIMIT_FSIZE, any user) below that output's size and
# above the others': the table streamed by TableStreamWriter, the none post-encoder's maps, the kept
# flow, the flow cache's entry.
EXTRACT_FULL_CHILD = """
import contextlib, io, json, resource, signal, sys
from pathlib import Path
from napari_flow_features.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
root, video = Path(sys.argv[1]), sys.argv[2]
common = ["extract", video, "--endpoint", "Mixed_3c", "--runtime", "tensorflow",
          "--weights", "random", "--flow-method", "dis"]
cases = json.loads(sys.argv[3])
results = {}
for name, (limit, args) in cases.items():
    out = root / name
    out.mkdir()
    argv = common + [a.replace("OUT", str(out)) for a in args]
    err = io.StringIO()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        with contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException as exc:
        code = "raised " + type(exc).__name__ + ": " + str(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    results[name] = [code, err.getvalue()[-2000:]]
print(json.dumps(results))
"""
EXTRACT_FULL_CASES = {  # name: (file-size limit in bytes, arguments), the output named last
    "table": (32_000, ["--post-encoder", "gap", "-o", "OUT/features.csv", "OUT/features.csv"]),
    "maps": (64_000, ["--post-encoder", "none", "-o", "OUT/features.csv",
                      "OUT/features_maps.npy"]),
    "kept flow": (160_000, ["--post-encoder", "gap", "-o", "OUT/features.npz", "--keep-flow",
                            "OUT/flow.npy", "OUT/flow.npy"]),
    "flow cache": (160_000, ["--post-encoder", "gap", "-o", "OUT/features.npz", "--flow-cache",
                             "OUT/cache", "OUT/cache"]),
}  # fmt: skip


def test_extract_outputs_on_a_full_disk(tmp_path):
    """Each streamed output of ``extract`` meeting a full disk: exit code 2 with a message naming
    the full disk and the output, nothing at any final path, no temporary left (the work folder in
    $TMPDIR included)."""
    from napari_flow_features.io.video import write_video
    from napari_flow_features.sample import make_whisker_sample

    video = write_video(tmp_path / "v.mp4", make_whisker_sample(24, 64, 80).video)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    cases = {name: (limit, args[:-1]) for name, (limit, args) in EXTRACT_FULL_CASES.items()}
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT_FULL_CHILD, str(tmp_path), str(video), json.dumps(cases)],
        capture_output=True, text=True, timeout=400,
        env={**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (code, err) in results.items():
        out = tmp_path / name
        named = EXTRACT_FULL_CASES[name][1][-1].replace("OUT", str(out))
        assert code == 2, (name, code, err)
        assert re.search(r"error: (No space left on device|File size limit exceeded)", err), err
        assert named in err, (name, named, err)  # names the output that did not fit
        assert leftovers(out) == [], (name, leftovers(out))  # nothing final, no temporary
    assert not [p for p in scratch.iterdir() if p.name.startswith(".flow-features")]


# -- signals mid-write --------------------------------------------------------------------------
def _temporaries(folder: Path) -> list[str]:
    found = []
    for _root, dirs, files in os.walk(folder):
        found += [n for n in dirs + files if ".partial-" in n]
    return found


def _signal_mid_write(cmd: list[str], watch: Path, sig: int, timeout: float = 240) -> tuple:
    """Run ``cmd`` in its own process group; send ``sig`` as soon as a temporary appears under
    ``watch``. Returns (exit code, whether a write was in progress, the process group)."""
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    caught = False
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if watch.exists() and _temporaries(watch):
            if sig == signal.SIGKILL:
                os.kill(proc.pid, sig)  # the parent only: its children must notice alone
            else:
                os.killpg(proc.pid, sig)  # Ctrl-C and `kill` of a job reach the whole group
            caught = True
            break
        time.sleep(0.0005)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.stderr.close()
    _signal_mid_write.stderr = err.decode(errors="replace")[-3000:]
    return proc.returncode, caught, proc.pid


def _group_gone(pgid: int, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# Exit codes of a run stopped mid-write: 130 after Ctrl-C, 143 after SIGTERM (or, should the signal
# land after main() restored the default handlers, death by it, which a shell reports the same way);
# -9 after SIGKILL. Never 0: the signal is sent while a write is in progress, before the last one.
EXPECTED_EXIT = {
    signal.SIGINT: (130, -signal.SIGINT),
    signal.SIGTERM: (143, -signal.SIGTERM),
    signal.SIGKILL: (-signal.SIGKILL,),
}


def _check_run(cmd, watch, check_complete, sig, attempts=4):
    """Signal a run mid-write: the interrupted exit code, no traceback, every file at a final path
    complete, and (unless SIGKILL, whose temporaries the next run removes) no temporary left."""
    for _ in range(attempts):  # a run may finish a write before the poll sees its temporary
        code, caught, pgid = _signal_mid_write(cmd, watch, sig)
        assert _group_gone(pgid), "a process of the run survived"
        if caught:
            assert code in EXPECTED_EXIT[sig], (code, _signal_mid_write.stderr)
            assert "Traceback" not in _signal_mid_write.stderr, _signal_mid_write.stderr
            check_complete(watch)
            if sig != signal.SIGKILL:
                assert _temporaries(watch) == [], "a partial output was left"
            return
        assert code == 0
    pytest.fail(f"no write was seen in progress in {attempts} runs of {cmd}")


def _complete_images(folder: Path) -> None:
    import imageio.v3 as iio

    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            if path.suffix in (".png", ".gif"):
                assert iio.imread(path, index=None).size  # decodes to the end
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".md", ".html"):
                text = path.read_text()
                assert text.rstrip().endswith("</html>") if path.suffix == ".html" else text


def _rerun_is_clean(cmd, watch):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _temporaries(watch) == []  # the killed run's temporaries were removed


@pytest.fixture(scope="module")
def activations(tmp_path_factory):
    root = tmp_path_factory.mktemp("acts")
    path = root / "maps.npy"
    np.save(path, np.random.default_rng(1).random((1, 4, 6, 6, 8)).astype(np.float32))
    return path


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def test_visualize_signalled_mid_write(activations, tmp_path):
    """Ctrl-C, SIGTERM and SIGKILL while a figure is being written; then a rerun."""
    out = tmp_path / "figures"
    cmd = [*CLI, "visualize", str(activations), "--kind", "heatmap", "--features", "0,1,2",
           "--clip-length", "8", "-o", str(out)]  # fmt: skip
    for sig in SIGNALS:
        _check_run(cmd, out, _complete_images, sig)
    _rerun_is_clean(cmd, out)
    assert len(list(out.glob("*.png"))) == 3
    _complete_images(out)


@pytest.fixture(scope="module")
def labelled_table(tmp_path_factory):
    from napari_flow_features.io.tables import write_table

    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(2)
    n = 120
    labels = np.repeat(["a", "b"], n // 2)
    table = pd.DataFrame({"frame": np.arange(n)})
    for c in range(12):
        table[f"f{c:04d}"] = rng.normal(size=n) + (labels == "a") * (c % 3)
    write_table(table, root / "features.parquet", {"clip_length": 8})
    pd.DataFrame({"frame": np.arange(n), "label": labels}).to_csv(root / "labels.csv", index=False)
    return root


def test_evaluate_signalled_mid_write(labelled_table, tmp_path):
    """Ctrl-C, SIGTERM and SIGKILL while the report is being written; then a rerun."""
    out = tmp_path / "report"
    cmd = [*CLI, "evaluate", str(labelled_table / "features.parquet"), "--labels",
           str(labelled_table / "labels.csv"), "--splits", "3", "-o", str(out)]  # fmt: skip
    for sig in SIGNALS:
        _check_run(cmd, out, _complete_images, sig)
    _rerun_is_clean(cmd, out)
    assert json.loads((out / "metrics.json").read_text())["metrics"]


def _complete_registry(reg: Path) -> None:
    from napari_flow_features.io._atomic import sha256_file

    for meta_path in reg.glob("motion/*/metadata.json"):
        if meta_path.parent.name.startswith("."):
            continue
        meta = json.loads(meta_path.read_text())
        assert sha256_file(meta_path.parent / "model.keras") == meta["weights_sha256"]
    for report in reg.glob("*.json"):
        json.loads(report.read_text())


def test_model_train_signalled_mid_write(tmp_path):
    """One run per signal, each stopped while the registry writes a version; one rerun."""
    from test_training import make_motion_set

    data = make_motion_set(tmp_path / "data", per_class=2)
    reg = tmp_path / "reg"
    cmd = [*CLI, "model", "train", "--data-dir", str(data), "--output-dir", str(reg),
           "--endpoint", "Mixed_3c", "--clip-length", "8", "--epochs", "1",
           "--val-fraction", "0.5", "--model-name", "motion"]  # fmt: skip
    for sig in SIGNALS:
        _check_run(cmd, reg, _complete_registry, sig)
    _rerun_is_clean(cmd, reg)
    _complete_registry(reg)
    from napari_flow_features.model.registry import ModelSerializer

    assert ModelSerializer.list_available_versions(reg, "motion")


# -- SIGKILL of flow, extract (each post-encoder) and demo at several points ---------------------
# A SIGKILL cannot be caught: whatever the run was doing, every file at a final path must already
# be complete, no process of the run may survive, and the next run must succeed and remove the
# dead run's temporaries (owner-tagged: pid and start time). The kill point is chosen from the
# run's own progress output, not by sleeping, and confirmed afterwards from what the dead run left:
# during the optical flow, during the encoder (flow complete, nothing written yet), during writing.
# Runs go in parallel, each in its own folders, to keep the suite short on 2 cores.
FLOW_BAR = r"{desc}:\s+\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)"


class _Run:
    """One command-line run, its merged output read as it comes, SIGKILLed (the parent only:
    children must notice alone) the first time ``when(run)`` holds."""

    def __init__(self, name: str, cmd: list[str], folders: list[Path], tmpdir: Path, when=None):
        self.name, self.cmd, self.folders, self.tmpdir, self.when = name, cmd, folders, tmpdir, when
        self.output, self.killed_after, self.started = "", None, time.monotonic()
        for folder in [*folders, tmpdir]:
            folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 16):
            self.output += chunk.decode(errors="replace")

    def running(self) -> bool:
        """Kill the run if its moment has come; whether it still runs."""
        if self.proc.poll() is not None:
            return False
        if self.when is not None and self.killed_after is None and self.when(self):
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed_after = self.output
        return True

    def finish(self) -> None:
        """Wait for the end; record what is left: surviving processes, temporaries, outputs."""
        try:
            self.proc.wait(timeout=0 if self.proc.poll() is not None else 300)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.output += "\n[timed out]"
        self.seconds = time.monotonic() - self.started
        self.reader.join(timeout=30)
        self.proc.stdout.close()
        self.group_gone = _group_gone(self.proc.pid)
        self.work_dirs = _work_dirs(self.tmpdir)
        self.debris = [t for f in self.folders for t in _temporaries(f)]
        self.kept_rows = _rows_written(self.folders[0])
        self.outputs = _complete_outputs(self.folders[0])


def _work_dirs(tmpdir: Path) -> list[str]:
    return [p.name for p in tmpdir.iterdir() if p.name.startswith(".flow-features.partial-")]


def _rows_written(folder: Path) -> dict[str, tuple[int, int]]:
    """For each flow temporary under ``folder`` (its blocks are reserved up front, unwritten rows
    read as zeros): (rows written, rows in all)."""
    found = {}
    for path in folder.rglob(".*.partial-*.npy"):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):  # killed before the header
            continue
        flat = np.asarray(arr).reshape(len(arr), -1)
        found[str(path.relative_to(folder))] = (int(np.any(flat != 0, axis=1).sum()), len(arr))
    return found


def _flow_progress(desc: str, lo: float, hi: float):
    """Kill while the flow bar ``desc`` shows a fraction in ``(lo, hi)``: mid-flow."""

    def when(run: _Run) -> bool:
        found = re.findall(FLOW_BAR.format(desc=re.escape(desc)), run.output)
        return bool(found) and lo < int(found[-1][0]) / int(found[-1][1]) < hi

    return when


def _printed(text: str):
    """Kill once the run has printed ``text``."""
    return lambda run: text in run.output


def _flow_kept_nothing_written(run: _Run) -> bool:
    """The encoder phase: the kept flow's last row is written (the flow is complete; the bar's
    last step may not be printed yet) and no result is being written."""
    if "writing results" in run.output:
        return False
    for path in run.folders[1].glob(".*.partial-*.npy"):
        with contextlib.suppress(OSError, ValueError):  # header not yet on disk
            return bool(np.any(np.load(path, mmap_mode="r", allow_pickle=False)[-1] != 0))
    return False


def _complete_outputs(folder: Path) -> list[str]:
    """Every file at a final path under ``folder`` is complete: tables, flow, feature maps and
    their sidecars load and pass their checksums, videos and images decode to the end. Returns
    the files checked."""
    from napari_flow_features.io.flow_files import read_flow, read_npy
    from napari_flow_features.io.tables import read_table
    from napari_flow_features.io.video import VideoArray

    _complete_images(folder)
    checked = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(folder).parts):
            continue
        if path.suffix in (".csv", ".parquet"):
            assert len(read_table(path).columns), path
        elif path.suffix == ".npy":
            side = path.with_name(path.name + ".json")
            meta = json.loads(side.read_text()) if side.is_file() else {}
            array = read_flow(path) if "flow_shape" in meta else read_npy(path)
            assert np.isfinite(np.asarray(array[-1], np.float32)).all(), path  # read to the end
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                assert all(npz[key].size for key in npz.files), path
        elif path.suffix == ".mp4":
            video = VideoArray(path)
            assert np.asarray(video[len(video) - 1]).size, path
        checked.append(str(path.relative_to(folder)))
    return checked


@pytest.fixture(scope="module")
def sigkilled(tmp_path_factory):
    """Runs of flow, extract (gap, point, none) and demo SIGKILLed at chosen points, all in
    parallel, each followed by a rerun in the same folders. Returns {name: (killed, rerun)}."""
    from napari_flow_features.sample import make_whisker_sample, save_whisker_sample

    root = tmp_path_factory.mktemp("sigkill")
    sample = save_whisker_sample(root / "sample", make_whisker_sample())  # 96 x 240 x 320
    video, points = sample["video"], sample["landmarks"]

    def flow_run(name: str, when=None) -> _Run:
        out = root / name
        # One thread: a flow phase long enough to see its bar move, also on a fast machine.
        cmd = [*CLI, "flow", video, "-o", str(out / "flow.npy"), "--method", "farneback",
               "--workers", "1"]  # fmt: skip
        return _Run(name, cmd, [out], root / f"{name}_tmp", when)

    def extract_run(name: str, post: str, when=None, stop: int = 40) -> _Run:
        out = root / name
        table = out / ("features.parquet" if post == "point" else "features.csv")
        cmd = [*CLI, "extract", video, "--post-encoder", post, "-o", str(table),
               "--flow-method", "farneback", "--max-side", "128", "--stop", str(stop),
               "--endpoint", "Mixed_3c", "--runtime", "tensorflow", "--weights", "random",
               "--keep-flow", str(out / "kept" / "flow.npy"), "--flow-cache", str(out / "cache"),
               *(["--points", points] if post == "point" else [])]  # fmt: skip
        return _Run(name, cmd, [out, out / "kept", out / "cache"], root / f"{name}_tmp", when)

    def demo_run(name: str, when=None) -> _Run:
        out = root / "demo"
        return _Run(name, [*CLI, "demo", "-o", str(out)], [out], root / "demo_tmp", when)

    killed = [
        flow_run("flow, early", _flow_progress("whisker.mp4", 0, 0.5)),
        flow_run("flow, late", _flow_progress("whisker.mp4", 0.5, 1)),
        # (extract's flow bar appears once the first block is done: 0/N is mid-flow already)
        # (and all 96 frames: time to kill before the flow is complete, also on a fast machine)
        extract_run("extract gap, during flow", "gap", _flow_progress("optical flow", -1, 1), 96),
        extract_run("extract point, during the encoder", "point", _flow_kept_nothing_written),
        extract_run("extract none, during writing", "none", _printed("writing results")),
        demo_run("demo, during flow", _flow_progress("optical flow (DIS)", -1, 1)),
    ]
    # After each kill: the rerun (in the demo's folder, first one more kill, in its encoder).
    follow = {run.name: lambda run: _Run(run.name + ", rerun", run.cmd, run.folders, run.tmpdir)
              for run in killed}  # fmt: skip
    follow["demo, during flow"] = lambda run: demo_run(
        "demo, during the encoder", _printed("I3D features (gap)")
    )
    follow["demo, during the encoder"] = lambda run: demo_run("demo, rerun")
    runs, pending = {}, list(killed)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        for run in [r for r in pending if not r.running()]:
            pending.remove(run)
            run.finish()
            runs[run.name] = run
            if run.name in follow:
                pending.append(follow[run.name](run))
        time.sleep(0.002)
    for run in pending:  # only after a timeout
        run.finish()
        runs[run.name] = run
    print({name: round(run.seconds, 1) for name, run in runs.items()})  # seconds per run (-s)
    return runs


def _check_killed(run: _Run) -> None:
    assert run.killed_after is not None, f"{run.name}: never killed\n{run.output[-3000:]}"
    assert run.proc.returncode == -signal.SIGKILL, (run.name, run.proc.returncode)
    assert run.group_gone, f"{run.name}: a process of the run survived"
    assert run.debris or run.work_dirs, f"{run.name}: killed mid-write, yet no temporary left"


def _check_rerun(run: _Run, expected: list[str]) -> None:
    assert run.proc.returncode == 0, f"{run.name}\n{run.output[-3000:]}"
    assert run.group_gone
    assert run.debris == [] and run.work_dirs == [], (run.name, run.debris, run.work_dirs)
    missing = [name for name in expected if name not in run.outputs]
    assert not missing, (run.name, missing, run.outputs)


def test_flow_sigkilled_mid_flow(sigkilled):
    """``flow`` killed early and late in its flow: no flow at the final path (the temporary holds
    part of the rows), no process left; the rerun writes it and removes the dead run's file."""
    for name in ("flow, early", "flow, late"):
        run = sigkilled[name]
        _check_killed(run)
        assert run.outputs == [], (name, run.outputs)  # neither the flow nor its sidecar
        ((done, total),) = run.kept_rows.values()
        assert 0 < done < total, (name, done, total)
        _check_rerun(sigkilled[name + ", rerun"], ["flow.npy", "flow.npy.json"])


EXTRACT_OUTPUTS = {
    "gap": ["features.csv", "features.csv.json"],
    "point": ["features.parquet"],
    "none": ["features.csv", "features.csv.json", "features_maps.npy", "features_maps.npy.json"],
}


@pytest.mark.parametrize(
    "name",
    ["extract gap, during flow", "extract point, during the encoder",
     "extract none, during writing"],
)  # fmt: skip
def test_extract_sigkilled(sigkilled, name):
    """``extract`` (table, kept flow, flow cache; maps for none) killed during the flow, the
    encoder or the writing: what is at a final path is complete and passes its checksum, nothing
    else is; no process left; the rerun succeeds and removes the dead run's temporaries, also its
    work folder in $TMPDIR."""
    run = sigkilled[name]
    _check_killed(run)
    assert run.work_dirs, "the dead run's work folder is owner-tagged, so the next run finds it"
    kept = {k: v for k, v in run.kept_rows.items() if k.startswith("kept")}
    if "during flow" in name:
        ((done, total),) = kept.values()
        assert done < total and run.outputs == [], (kept, run.outputs)
    elif "encoder" in name:
        ((done, total),) = kept.values()
        assert done == total and run.outputs == [], (kept, run.outputs)
        assert not [d for d in run.debris if "features" in d]  # no rows were being written
    else:
        assert "writing results" in run.killed_after
    post = name.split()[1].rstrip(",")
    expected = EXTRACT_OUTPUTS[post] + ["kept/flow.npy", "kept/flow.npy.json"]
    _check_rerun(sigkilled[name + ", rerun"], expected)
    assert len([o for o in sigkilled[name + ", rerun"].outputs if o.startswith("cache/")]) == 2


def test_demo_sigkilled_during_flow_and_encoder(sigkilled):
    """``demo`` killed in its optical flow, then in its encoder (same folder); the rerun
    completes everything and leaves no temporary."""
    flow_kill, encoder_kill = sigkilled["demo, during flow"], sigkilled["demo, during the encoder"]
    for run in (flow_kill, encoder_kill):
        _check_killed(run)
    assert not [o for o in flow_kill.outputs if o.startswith("flow/")]  # flow not yet complete
    assert "flow/whisker_dis.npy" in encoder_kill.outputs
    assert not [o for o in encoder_kill.outputs if o.startswith("features/")]
    _check_rerun(sigkilled["demo, rerun"], [
        "flow/whisker_dis.npy", "flow/whisker_dis.npy.json", "features/whisker_gap.parquet",
        "features/whisker_point.parquet", "evaluation/report.html",
    ])  # fmt: skip


# -- corrupt and hostile inputs of every kind the readers accept --------------------------------
def _csv(tmp: Path, text: str, name: str = "t.csv", sidecar: object = None) -> Path:
    path = tmp / name
    path.write_text(text)
    if sidecar is not None:
        side = tmp / (name + ".json")
        if isinstance(sidecar, bytes):
            side.write_bytes(sidecar)
        else:
            side.write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    return path


def _written_csv(tmp: Path) -> Path:
    from napari_flow_features.io.tables import write_table

    return write_table(pd.DataFrame({"frame": [0, 1], "x": [1.0, 2.0], "y": [3.0, 4.0]}),
                       tmp / "t.csv", {"endpoint": "Mixed_4f"})  # fmt: skip


def _parquet(tmp: Path, df: pd.DataFrame | None = None, meta: bytes | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = (
        pd.DataFrame({"frame": np.arange(50), "f0000": np.linspace(0, 1, 50)}) if df is None else df
    )
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({b"napari_flow_features": meta})
    path = tmp / "t.parquet"
    pq.write_table(table, path, write_page_checksum=True)
    return path


def _flip_byte(path: Path, where: float = 0.5) -> Path:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


def _flo(tmp: Path, header: bytes, body: bytes = b"", name: str = "f.flo") -> Path:
    path = tmp / name
    path.write_bytes(header + body)
    return path


FLO_MAGIC = np.array([202021.25], "<f4").tobytes()


def _flo_folder(tmp: Path, sizes) -> Path:
    from napari_flow_features.io.flow_files import write_flo

    folder = tmp / "flows"
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        write_flo(folder / f"{i:03d}.flo", np.zeros((h, w, 2), np.float32))
    return folder


def _npy(tmp: Path, arr, name: str = "f.npy", **kw) -> Path:
    path = tmp / name
    np.save(path, arr, **kw)
    return path


def _npz(tmp: Path, **arrays) -> Path:
    path = tmp / "f.npz"
    np.savez(path, **arrays)
    return path


def _with_flow_sidecar(path: Path, meta) -> Path:
    (path.parent / (path.name + ".json")).write_text(
        meta if isinstance(meta, str) else json.dumps(meta)
    )
    return path


def _read_table(path):
    from napari_flow_features.io.tables import read_table

    return lambda: read_table(path)


def _read_flow(path):
    from napari_flow_features.io.flow_files import read_flow

    def read():
        arr = read_flow(path)
        return np.asarray(arr[:])  # a lazy folder reads its fields here

    return read


def _landmarks(path_or_df):
    from napari_flow_features.extract.landmarks import landmarks_from_points

    return lambda: landmarks_from_points(path_or_df, 10)


GOOD = "frame,x,y\n0,1.5,2.5\n1,1.6,2.6\n"
FLOW = np.zeros((3, 4, 5, 2), np.float32)

TABLE_CASES = {
    "csv frame not a number": lambda t: _read_table(_csv(t, "frame,x,y\n0,1,2\nabc,1,2\n")),
    "csv frame fractional": lambda t: _read_table(_csv(t, "frame,x,y\n0.5,1,2\n")),
    "csv frame empty": lambda t: _read_table(_csv(t, "frame,x,y\n,1,2\n")),
    "csv x not a number": lambda t: _read_table(_csv(t, "frame,x,y\n0,1,2\n1,oops,2\n")),
    "csv feature not a number": lambda t: _read_table(_csv(t, "frame,f0000\n0,0.1\n1,n/a?\n")),
    "csv no frame column": lambda t: _read_table(_csv(t, "time,x,y\n0,1,2\n")),
    "csv empty file": lambda t: _read_table(_csv(t, "")),
    "csv binary garbage": lambda t: _read_table(
        (t / "t.csv", (t / "t.csv").write_bytes(os.urandom(4096)))[0]
    ),
    "csv is a folder": lambda t: _read_table((t / "d.csv", (t / "d.csv").mkdir())[0]),
    "csv missing": lambda t: _read_table(t / "none.csv"),
    "sidecar not json": lambda t: _read_table(_csv(t, GOOD, sidecar="{not json")),
    "sidecar a list": lambda t: _read_table(_csv(t, GOOD, sidecar=[1, 2])),
    "sidecar a number": lambda t: _read_table(_csv(t, GOOD, sidecar="42")),
    "sidecar frame_shape text": lambda t: _read_table(
        _csv(t, GOOD, sidecar={"frame_shape": "big"})
    ),
    "sidecar frame_shape negative": lambda t: _read_table(
        _csv(t, GOOD, sidecar={"frame_shape": [-4, 5]})
    ),
    "sidecar landmark_key number": lambda t: _read_table(
        _csv(t, GOOD, sidecar={"landmark_key": 3})
    ),
    "sidecar clip_length text": lambda t: _read_table(_csv(t, GOOD, sidecar={"clip_length": "16"})),
    "sidecar hash not hex": lambda t: _read_table(_csv(t, GOOD, sidecar={"data_sha256": "zz"})),
    "sidecar hash of other data": lambda t: _read_table(
        _csv(t, GOOD, sidecar={"data_sha256": "0" * 64})
    ),
    "sidecar bytes wrong": lambda t: _read_table(
        _csv(t, GOOD, sidecar={"data_sha256": "0" * 64, "data_bytes": 1})
    ),
    "sidecar not utf-8": lambda t: _read_table(_csv(t, GOOD, sidecar=b'{"a": "\xff\xfe"}')),
    "csv edited after writing": lambda t: _read_table(
        (p := _written_csv(t), p.write_text(p.read_text().replace("1.0", "7.0")))[0]
    ),
    "csv replaced by an older one": lambda t: _read_table(
        (p := _written_csv(t), p.write_text("frame,x,y\n5,1,1\n"))[0]
    ),
    "parquet truncated": lambda t: _read_table(_truncate(_parquet(t))),
    "parquet flipped byte": lambda t: _read_table(_flip_byte(_parquet(t), 0.3)),
    "parquet garbage": lambda t: _read_table(
        (t / "t.parquet", (t / "t.parquet").write_bytes(os.urandom(2048)))[0]
    ),
    "parquet metadata not json": lambda t: _read_table(_parquet(t, meta=b"{oops")),
    "parquet metadata a list": lambda t: _read_table(_parquet(t, meta=b"[1, 2]")),
    "parquet metadata wrong type": lambda t: _read_table(
        _parquet(t, meta=json.dumps({"frame_shape": {"h": 3}}).encode())
    ),
    "parquet no frame column": lambda t: _read_table(_parquet(t, pd.DataFrame({"x": [1.0]}))),
    "parquet x is text": lambda t: _read_table(
        _parquet(t, pd.DataFrame({"frame": [0, 1], "x": ["a", "b"], "y": [1.0, 2.0]}))
    ),
    "parquet frame is bool": lambda t: _read_table(_parquet(t, pd.DataFrame({"frame": [True]}))),
    "table suffix unknown": lambda t: _read_table(_csv(t, GOOD, name="t.xlsx")),
    "landmark csv x not a number": lambda t: _landmarks(_csv(t, "frame,x,y\n0,left,2\n")),
    "landmark frame not a number": lambda t: _landmarks(
        pd.DataFrame({"frame": ["zero"], "x": [1.0], "y": [2.0]})
    ),
    "landmark y not a number": lambda t: _landmarks(
        pd.DataFrame({"frame": [0], "x": [1.0], "y": [object()]})
    ),
    "landmark table no x": lambda t: _landmarks(_csv(t, "frame,y\n0,2\n")),
}

FLOW_CASES = {
    "flo header truncated": lambda t: _read_flow(_flo(t, FLO_MAGIC[:3])),
    "flo bad magic": lambda t: _read_flow(_flo(t, b"PIEH" + np.array([2, 2], "<i4").tobytes())),
    "flo huge size": lambda t: _read_flow(
        _flo(t, FLO_MAGIC + np.array([1 << 30, 2], "<i4").tobytes())
    ),
    "flo negative size": lambda t: _read_flow(
        _flo(t, FLO_MAGIC + np.array([-1, 2], "<i4").tobytes())
    ),
    "flo data truncated": lambda t: _read_flow(
        _flo(t, FLO_MAGIC + np.array([4, 4], "<i4").tobytes(), b"\0" * 40)
    ),
    "flo data too long": lambda t: _read_flow(
        _flo(t, FLO_MAGIC + np.array([1, 1], "<i4").tobytes(), b"\0" * 12)
    ),
    "flo folder empty": lambda t: _read_flow((t / "empty", (t / "empty").mkdir())[0]),
    "flo folder mixed sizes": lambda t: _read_flow(_flo_folder(t, [(4, 5), (4, 5), (6, 5)])),
    "flo folder with a corrupt file": lambda t: _read_flow(
        (f := _flo_folder(t, [(4, 5), (4, 5)]), _truncate(f / "001.flo"))[0]
    ),
    "npy object array": lambda t: _read_flow(
        _npy(t, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    ),
    "npy integer flow": lambda t: _read_flow(_npy(t, FLOW.astype(np.int32))),
    "npy wrong last axis": lambda t: _read_flow(_npy(t, np.zeros((3, 4, 5, 3), np.float32))),
    "npy one dimension": lambda t: _read_flow(_npy(t, np.zeros(10, np.float32))),
    "npy zero frames": lambda t: _read_flow(_npy(t, np.zeros((0, 4, 5, 2), np.float32))),
    "npy zero width": lambda t: _read_flow(_npy(t, np.zeros((3, 4, 0, 2), np.float32))),
    "npy truncated": lambda t: _read_flow(_truncate(_npy(t, FLOW), 0.7)),
    "npy header only": lambda t: _read_flow(_truncate(_npy(t, FLOW), 0.2)),
    "npy garbage": lambda t: _read_flow(
        (t / "g.npy", (t / "g.npy").write_bytes(os.urandom(1000)))[0]
    ),
    "npz no flow among several": lambda t: _read_flow(_npz(t, a=FLOW, b=FLOW)),
    "npz empty": lambda t: _read_flow(_npz(t)),
    "npz pickled object": lambda t: _read_flow(_npz(t, flow=np.array([None, 1], dtype=object))),
    "npz corrupt zip": lambda t: _read_flow(_flip_byte(_npz(t, flow=FLOW), 0.05)),
    "npz truncated": lambda t: _read_flow(_truncate(_npz(t, flow=FLOW))),
    "npz flow is text": lambda t: _read_flow(_npz(t, flow=np.array(["a", "b"]))),
    "flow sidecar not json": lambda t: _read_flow(_with_flow_sidecar(_npy(t, FLOW), "{")),
    "flow sidecar a list": lambda t: _read_flow(_with_flow_sidecar(_npy(t, FLOW), "[]")),
    "flow sidecar of other data": lambda t: _read_flow(
        _with_flow_sidecar(_npy(t, FLOW), {"data_sha256": "a" * 64})
    ),
    "flow suffix unknown": lambda t: _read_flow(_npy(t, FLOW, name="f.npy.bak")),
    "flow missing": lambda t: _read_flow(t / "nothing.npy"),
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry with one good version ``good/v1`` of a tiny model, copied per case."""
    from napari_flow_features.model.registry import ModelSerializer

    root = tmp_path_factory.mktemp("registry")
    ModelSerializer(_tiny_model(), "good").save_model(root / "reg", version="v1")
    return root / "reg"


def _load(reg: Path, name: str, version: str | None = None):
    from napari_flow_features.model.registry import ModelSerializer

    if version is None:
        return lambda: ModelSerializer.load_latest_model(reg, name)
    return lambda: ModelSerializer.load_model(reg, name, version)


def _edit_meta(reg: Path, change) -> Path:
    path = reg / "good" / "v1" / "metadata.json"
    meta = json.loads(path.read_text())
    out = change(meta)
    path.write_text(out if isinstance(out, str) else json.dumps(out))
    return reg


REGISTRY_CASES = {
    "name ../elsewhere": lambda r, t: _load(r, "../elsewhere", "v1"),
    "name ..": lambda r, t: _load(r, ".."),
    "name absolute": lambda r, t: _load(r, "/etc", "v1"),
    "name with a space": lambda r, t: _load(r, "my model", "v1"),
    "name with a slash": lambda r, t: _load(r, "good/v1", "v1"),
    "name very long": lambda r, t: _load(r, "m" * 300, "v1"),
    "name empty": lambda r, t: _load(r, "", "v1"),
    "name not text": lambda r, t: _load(r, 5, "v1"),
    "version ../../x": lambda r, t: _load(r, "good", "../../x"),
    "version ..": lambda r, t: _load(r, "good", ".."),
    "version absolute": lambda r, t: _load(r, "good", "/tmp"),
    "version unicode slash": lambda r, t: _load(r, "good", "v1\u2215..\u2215x"),
    "version missing": lambda r, t: _load(r, "good", "v9"),
    "version a symlink outside": lambda r, t: _load(
        (r, (r / "good" / "v2").symlink_to(t))[0], "good", "v2"
    ),
    "model folder a symlink outside": lambda r, t: _load(
        (r, (r / "evil").symlink_to(t))[0], "evil", "v1"
    ),
    "metadata not json": lambda r, t: _load(_edit_meta(r, lambda m: "{oops"), "good", "v1"),
    "metadata not json (latest)": lambda r, t: _load(_edit_meta(r, lambda m: "{oops"), "good"),
    "metadata a list": lambda r, t: _load(_edit_meta(r, lambda m: [m]), "good", "v1"),
    "metadata without checksum": lambda r, t: _load(
        _edit_meta(r, lambda m: {k: v for k, v in m.items() if k != "weights_sha256"}), "good"
    ),
    "metadata checksum a number": lambda r, t: _load(
        _edit_meta(r, lambda m: {**m, "weights_sha256": 7}), "good", "v1"
    ),
    "metadata weights_file ../..": lambda r, t: _load(
        _edit_meta(r, lambda m: {**m, "weights_file": "../../../outside/model.keras"}), "good", "v1"
    ),
    "metadata weights_file absolute": lambda r, t: _load(
        _edit_meta(r, lambda m: {**m, "weights_file": "/etc/passwd"}), "good", "v1"
    ),
    "metadata missing": lambda r, t: _load(
        (r, (r / "good" / "v1" / "metadata.json").unlink())[0], "good", "v1"
    ),
    "model file flipped byte": lambda r, t: _load(
        (r, _flip_byte(r / "good" / "v1" / "model.keras"))[0], "good", "v1"
    ),
    "model file truncated": lambda r, t: _load(
        (r, _truncate(r / "good" / "v1" / "model.keras"))[0], "good", "v1"
    ),
    "model file garbage, checksum matching": lambda r, t: _load(
        _edit_meta(
            (r, (r / "good" / "v1" / "model.keras").write_bytes(b"not a zip"))[0],
            lambda m: {
                **m,
                "weights_sha256": __import__("hashlib").sha256(b"not a zip").hexdigest(),
            },
        ),
        "good",
        "v1",
    ),
    "model folder is a file": lambda r, t: _load((r, (r / "plain").write_text("x"))[0], "plain"),
}


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted(
        (os.path.relpath(os.path.join(root, f), folder), os.lstat(os.path.join(root, f)).st_size)
        for root, _dirs, files in os.walk(folder)
        for f in files
    )


@pytest.mark.parametrize("case", sorted(TABLE_CASES) + sorted(FLOW_CASES))
def test_corrupt_input_is_a_named_error(case, tmp_path):
    read = {**TABLE_CASES, **FLOW_CASES}[case](tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(NAMED) as info:
        read()
    assert str(info.value)  # a message, not a bare exception
    assert _snapshot(tmp_path) == before  # a reader writes nothing
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_hostile_registry_entry_is_a_named_error(case, registry, tmp_path):
    import shutil

    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    outside = tmp_path / "outside"
    outside.mkdir()
    # A complete version outside the registry: a load that escaped would succeed with it.
    for f in ("model.keras", "metadata.json"):
        shutil.copy(registry / "good" / "v1" / f, outside / f)
    read = REGISTRY_CASES[case](reg, outside)
    before = _snapshot(tmp_path)
    with pytest.raises(NAMED) as info:
        read()
    message = str(info.value)
    assert "No saved versions" not in message  # the old misleading report of corrupt metadata
    if any(w in case for w in ("..", "outside", "absolute", "slash")):
        assert isinstance(info.value, UnsafePathError), message
    if "metadata" in case and "weights_file" not in case:
        assert isinstance(info.value, CorruptFileError) and "metadata" in message, message
    assert _snapshot(tmp_path) == before and _temporaries(tmp_path) == []


HOSTILE_NAMES = {
    "unicode": "Mäuse_ß_東京_🐭",
    "spaces": "my  whisker run ",
    "leading dash": "-o",
    "dots": "a..b",
    "newline": "line\nbreak",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_hostile_but_valid_names_round_trip(name, suffix, tmp_path):
    from napari_flow_features.io.tables import read_table, write_table

    path = tmp_path / (HOSTILE_NAMES[name] + suffix)
    write_table(pd.DataFrame({"frame": [0, 1], "f0000": [0.5, 1.0]}), path, {"endpoint": "E"})
    back = read_table(path)
    assert back["f0000"].tolist() == [0.5, 1.0] and back.attrs["endpoint"] == "E"
    assert _temporaries(tmp_path) == []


BAD_OUTPUTS = {
    "name ..": lambda t: t / "..",
    "name .": lambda t: t / ".",
    "name too long": lambda t: t / ("x" * 260 + ".csv"),
    "folder is a file": lambda t: (t / "f.csv", (t / "f.csv").write_text("x"))[0] / "t.csv",
    "nested under a file": lambda t: (t / "g", (t / "g").write_text("x"))[0] / "a" / "t.csv",
    "missing folder": lambda t: t / "missing" / "t.csv",
    "final path is a folder": lambda t: (t / "d.csv", (t / "d.csv").mkdir())[0],
    "unknown suffix": lambda t: t / "t.xlsx",
}


@pytest.mark.parametrize("case", sorted(BAD_OUTPUTS))
def test_hostile_output_paths_are_named_errors(case, tmp_path):
    from napari_flow_features.io.tables import write_table

    target = BAD_OUTPUTS[case](tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(BadInputError):
        write_table(pd.DataFrame({"frame": [0]}), target)
    assert _snapshot(tmp_path) == before and _temporaries(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "t.parquet", "--splits", "0", "-o", "r"], "out of range"),
        (["evaluate", "t.parquet", "--lag", "0", "-o", "r"], "out of range"),
        (["evaluate", "t.parquet", "--gap", "-1", "-o", "r"], "out of range"),
        (["visualize", "m.npy", "--clip-length", "0", "-o", "r"], "out of range"),
        (["visualize", "m.npy", "--sample", "-1", "-o", "r"], "out of range"),
        (["model", "train", "--output-dir", "r", "--epochs", "0"], "out of range"),
        (["model", "train", "--output-dir", "r", "--batch-size", "0"], "out of range"),
        (["model", "train", "--output-dir", "r", "--lr", "0"], "out of range"),
        (["model", "train", "--output-dir", "r", "--val-fraction", "1"], "out of range"),
        (["model", "train", "--output-dir", "r", "--clip-length", "0"], "out of range"),
        (["model", "test", "--output-dir", "r", "--num-samples", "0"], "out of range"),
        (["sequences", "load", "--input-dir", "i", "--output-dir", "o", "--stride", "0"], "range"),
        (
            ["sequences", "load", "--input-dir", "i", "--output-dir", "o", "--bound", "nan"],
            "number",
        ),
        (["flow", "v.mp4", "-o", "f.npy", "--workers", "0"], "out of range"),
        (["flow", "v.mp4", "-o", "f.npy", "--max-side", "-1"], "at least 0"),  # 0: full size
        (["extract", "v.mp4", "-o", "f.csv", "--stride", "0"], "out of range"),
        (["extract", "v.mp4", "-o", "f.csv", "--clip-length", "0"], "out of range"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_zero_is_not_unset(argv, message, capsys, tmp_path, monkeypatch):
    from napari_flow_features.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _cli_inputs(t: Path) -> None:
    """Inputs for the command-line cases: one good table and labels, and bad files of each kind."""
    n = 30
    rng = np.random.default_rng(4)
    pd.DataFrame({"frame": np.arange(n), "f0000": rng.normal(size=n), "f0001": rng.normal(size=n)}).to_csv(t / "t.csv", index=False)  # fmt: skip
    pd.DataFrame({"frame": np.arange(n), "label": ["a", "b"] * (n // 2)}).to_csv(t / "labels.csv", index=False)  # fmt: skip
    (t / "labels_text_frame.csv").write_text("frame,label\nfirst,a\n")
    (t / "labels_inf.csv").write_text("start_frame,end_frame,label\n0,inf,a\n")
    (t / "t_text.csv").write_text("frame,f0000\n0,1.5\n1,high\n")
    np.save(t / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (t / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(t / "text.npy", np.array(["a", "b"]))
    np.save(t / "nan.npy", np.full((1, 4, 3, 3, 2), np.nan, np.float32))
    np.save(t / "empty.npy", np.zeros((0, 4, 3, 3, 2), np.float32))
    (t / "afile").write_text("x")


CLI_CASES = {
    "visualize pickled npy": ["visualize", "obj.npy", "-o", "out"],
    "visualize corrupt npy": ["visualize", "bad.npy", "-o", "out"],
    "visualize text npy": ["visualize", "text.npy", "-o", "out"],
    "visualize all-NaN npy": ["visualize", "nan.npy", "-o", "out"],
    "visualize empty npy": ["visualize", "empty.npy", "-o", "out"],
    "visualize missing npy": ["visualize", "none.npy", "-o", "out"],
    "visualize table with text": ["visualize", "t_text.csv", "-o", "out"],
    "visualize output under a file": ["visualize", "t.csv", "-o", "afile/figs"],
    "visualize bad --features": ["visualize", "t.csv", "--features", "a,b", "-o", "out"],
    "evaluate labels frame text": [
        "evaluate",
        "t.csv",
        "--labels",
        "labels_text_frame.csv",
        "-o",
        "out",
    ],
    "evaluate labels end inf": ["evaluate", "t.csv", "--labels", "labels_inf.csv", "-o", "out"],
    "evaluate table with text": ["evaluate", "t_text.csv", "-o", "out"],
    "evaluate output under a file": [
        "evaluate",
        "t.csv",
        "--labels",
        "labels.csv",
        "-o",
        "afile/r",
    ],
    "evaluate missing labels": ["evaluate", "t.csv", "--labels", "none.csv", "-o", "out"],
    "model evaluate name ../elsewhere": [
        "model",
        "evaluate",
        "--output-dir",
        "reg",
        "--data-dir",
        ".",
        "--model-name",
        "../elsewhere",
    ],
    "model evaluate version ../../x": [
        "model",
        "evaluate",
        "--output-dir",
        "reg",
        "--data-dir",
        ".",
        "--version",
        "../../x",
    ],
    "model train output is a file": ["model", "train", "--output-dir", "afile", "--data-dir", "."],
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_is_a_named_error(case, tmp_path, monkeypatch, capsys):
    from napari_flow_features.cli import main

    _cli_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    assert main(CLI_CASES[case]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flow-features: error: ") and "Traceback" not in err, err
    assert _snapshot(tmp_path) == before and _temporaries(tmp_path) == []
    assert not (tmp_path / "out").exists()
