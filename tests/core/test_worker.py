"""The model worker process: results, warm models, progress, cancel, hangs and crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from conftest import moving_pattern

from napari_flow_features.errors import CancelledError
from napari_flow_features.extract.pipeline import extract_features
from napari_flow_features.extract.worker import ModelWorker, WorkerCrashedError, WorkerError
from napari_flow_features.io.video import write_video
from napari_flow_features.model.extractor import DynamicFeatureExtractor

CONFIG = {"endpoint": "Mixed_3c", "clip_length": 8, "stride": 4, "batch_size": 1}


def flow(n=23, seed=0):
    return np.random.default_rng(seed).normal(0, 4, (n, 32, 32, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def worker():
    with ModelWorker(cancel_grace=3.0) as w:
        yield w


def test_result_matches_in_process_and_model_stays_warm(worker):
    seen = []
    reply = worker.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}},
                       progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    local = extract_features(flow(), DynamicFeatureExtractor(**CONFIG), post_encoder="gap").table
    np.testing.assert_allclose(reply["table"].iloc[:, 1:].to_numpy(float),
                               local.iloc[:, 1:].to_numpy(float), rtol=1e-5, atol=1e-6)  # fmt: skip
    assert seen[-1] == (24, 24) and not reply["warm"]  # frames encoded
    pid = worker.pid
    again = worker.run(
        {"extractor": CONFIG, "source": flow(seed=1), "options": {"post_encoder": "gap"}}
    )
    assert again["warm"] and worker.pid == pid


def test_job_errors_come_back_as_text(worker):
    with pytest.raises(WorkerError, match="needs landmarks"):
        worker.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "point"}})
    assert worker.pid is not None  # the child survives a failed job


def test_cooperative_cancel(worker):
    event = threading.Event()

    def progress(done, total):
        event.set()  # cancel after the first batch

    seen = []
    with pytest.raises(CancelledError):  # ~100 windows: far longer than the parent takes to react
        worker.run({"extractor": CONFIG, "source": flow(n=400), "options": {"post_encoder": "gap"}},
                   progress=lambda d, t: (seen.append(d), progress(d, t)), cancel=event)  # fmt: skip
    assert seen and max(seen) < 99  # stopped between batches, long before the end
    pid = worker.pid
    assert pid is not None  # cooperative: the same child goes on
    worker.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
    assert worker.pid == pid


def test_a_frozen_worker_is_terminated_on_cancel():
    with ModelWorker(cancel_grace=1.0) as w:
        w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
        pid = w.pid
        os.kill(pid, signal.SIGSTOP)  # a hung child cannot answer
        with pytest.raises(CancelledError, match="terminated"):
            w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}},
                  cancel=lambda: True)  # fmt: skip
        assert w.pid is None
        reply = w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
        assert len(reply["table"]) == 24 and w.pid not in (None, pid)


def test_a_killed_worker_is_a_clear_error_and_the_next_run_starts_fresh():
    with ModelWorker() as w:
        w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
        pid = w.pid
        cache = w.temp_root
        assert os.path.isdir(cache)

        def kill_soon(done, total):
            os.kill(pid, signal.SIGKILL)

        with pytest.raises(WorkerCrashedError, match="stopped unexpectedly"):
            w.run({"extractor": CONFIG, "source": flow(n=60), "options": {"post_encoder": "gap"}},
                  progress=kill_soon)  # fmt: skip
        assert not os.path.exists(cache)  # the dead child's flow cache went with it
        reply = w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
        assert len(reply["table"]) == 24 and w.pid != pid
    assert w.temp_root is None


def test_the_worker_reuses_a_videos_flow(worker, tmp_path):
    from napari_flow_features.io.video import write_video

    frames = (np.random.default_rng(0).random((10, 32, 48)) * 255).astype(np.uint8)
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=10)
    job = {"extractor": CONFIG, "source": str(path),
           "options": {"post_encoder": "gap", "flow_method": "dis"}}  # fmt: skip
    assert worker.run(job)["metadata"]["flow_reused"] is False
    job["options"]["post_encoder"] = "none"  # another post-encoder on the same video
    assert worker.run(job)["metadata"]["flow_reused"] is True


def test_the_worker_module_does_not_import_tensorflow():
    code = ("import sys, napari_flow_features.extract.worker, napari_flow_features.extract.pipeline\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_startup_phases_warnings_and_no_files_left(tmp_path, monkeypatch):
    """A fresh worker reports its start-up phases; a warning in the child reaches the caller;
    every job's temporary files go when the job ends (kept maps only until released) and the
    worker's folder goes with the worker."""
    import tempfile
    import warnings

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    statuses: list[str] = []
    with ModelWorker(cancel_grace=3.0) as w:
        w.start()  # in the background: the caller goes on at once
        assert w.pid is not None
        root = w.temp_root
        assert os.path.dirname(root) == str(tmp_path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # A landmark outside the frame: the pipeline warns (in the child).
            outside = pd.DataFrame({"frame": [0, 1], "x": [5.0, 500.0], "y": [5.0, 5.0]})
            w.run({"extractor": CONFIG, "source": flow(),
                   "options": {"post_encoder": "point", "points": outside}},
                  status=statuses.append)  # fmt: skip
        assert statuses[:2] == ["importing TensorFlow", "model process ready"]
        assert any(s.startswith("building the model (random weights)") for s in statuses)
        assert "outside the 32x32 frame" in " ".join(str(c.message) for c in caught)
        assert os.listdir(root) == ["flow-cache"]  # the job's folder went with the job
        reply = w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "none"}})
        assert reply["maps_path"].startswith(root) and os.path.exists(reply["maps_path"])
        w.release(reply["maps_path"])
        assert os.listdir(root) == ["flow-cache"]
        with pytest.raises(CancelledError):
            w.run({"extractor": CONFIG, "source": flow(n=400), "options": {"post_encoder": "none"}},
                  progress=lambda d, t: None, cancel=lambda: True)  # fmt: skip
        assert os.listdir(root) == ["flow-cache"]  # a cancelled job's partial maps are gone
        os.kill(w.pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
        assert not os.path.exists(root)
        w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}})
    assert os.listdir(tmp_path) == []


def test_video_jobs_report_flow_and_encoder_progress(worker, tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, moving_pattern(20, 32, 32), fps=25)
    flow_seen, encoded = [], []
    reply = worker.run(
        {"extractor": CONFIG, "source": str(path), "options": {"post_encoder": "gap"}},
        progress=lambda d, t: encoded.append((d, t)),
        flow_progress=lambda d, t: flow_seen.append((d, t)),
    )
    assert len(reply["table"]) == 20
    # Flow runs ahead of the encoder and has its own count (fields of frame pairs), both to the end.
    assert flow_seen and flow_seen[-1][0] == flow_seen[-1][1] >= 19
    assert [d for d, _ in flow_seen] == sorted(d for d, _ in flow_seen)
    assert encoded[-1] == (20, 20)


def test_the_model_process_ends_with_a_killed_parent(tmp_path):
    """SIGKILL of the process that owns the worker (napari killed, or OOM-killed) must not leave the
    model process running: the child notices and ends, removing the temporary folder."""
    import psutil

    script = (
        "import sys, time\n"
        "from napari_flow_features.extract.worker import ModelWorker\n"
        "w = ModelWorker()\n"
        "w.start()\n"
        "print(w.pid, w.temp_root, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    try:
        child_pid, root = parent.stdout.readline().split()
        child = psutil.Process(int(child_pid))
        assert child.is_running() and os.path.isdir(root)
        assert os.path.basename(root).startswith(".flow-features-worker.partial-")
        parent.kill()
        parent.wait(timeout=10)
        _, alive = psutil.wait_procs([child], timeout=15)
        assert alive == [], "the model process outlived its killed parent"
        assert not os.path.exists(root)
    finally:
        parent.kill()


def test_a_child_killed_by_sigkill_names_the_signal_and_its_log(tmp_path):
    """A child killed mid-job (as the out-of-memory killer does) is reported with the signal's
    name, its likely cause and the log file, which exists and holds the child's output."""
    with ModelWorker(log_dir=tmp_path / "logs") as w:
        w.start()
        pid = w.pid

        def kill_soon(done, total):
            os.kill(pid, signal.SIGKILL)

        with pytest.raises(WorkerCrashedError) as caught:
            w.run({"extractor": CONFIG, "source": flow(n=60), "options": {"post_encoder": "gap"}},
                  progress=kill_soon)  # fmt: skip
    message = str(caught.value)
    assert "exit code -9" in message and "SIGKILL" in message and "out-of-memory" in message
    logs = list((tmp_path / "logs").glob("worker-*.log"))
    assert len(logs) == 1 and f"Its log: {logs[0]}" in message
    assert f"by process {os.getpid()}" in logs[0].read_text()


def test_a_child_that_cannot_import_tensorflow_says_so(tmp_path, monkeypatch):
    """A broken TensorFlow install (here a package on PYTHONPATH whose import fails, as a missing
    shared library makes it fail) is reported with the import error from the child's log, not as
    a kill or a lack of memory."""
    fake = tmp_path / "broken" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ImportError('libtensorflow_framework.so.2: cannot open shared object file')\n"
    )
    path = os.pathsep.join(p for p in (str(fake.parent), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    statuses: list[str] = []
    with ModelWorker(log_dir=tmp_path / "logs") as w, pytest.raises(WorkerCrashedError) as caught:
        w.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap"}},
              status=statuses.append)  # fmt: skip
    message = str(caught.value)
    assert "exit code 1, ImportError: libtensorflow_framework.so.2" in message
    assert "out of memory" not in message and "SIGKILL" not in message
    (log,) = (tmp_path / "logs").glob("worker-*.log")
    assert f"Its log: {log}" in message and "Traceback" in log.read_text()
    assert "importing TensorFlow" in statuses  # it got as far as the import


def test_worker_logs_are_bounded(tmp_path):
    """Each child gets a new log; only the newest KEPT_LOGS stay."""
    from napari_flow_features.extract import worker as worker_module

    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(worker_module.KEPT_LOGS + 3):
        old = logs / f"worker-old-{i}.log"
        old.write_text("old")
        os.utime(old, (1000 + i, 1000 + i))
    with ModelWorker(log_dir=logs) as w:
        w.start()
        assert w.log_path is not None and w.log_path.parent == logs
    kept = sorted(p.name for p in logs.glob("worker-*.log"))
    assert len(kept) == worker_module.KEPT_LOGS and w.log_path.name in kept
    assert "worker-old-0.log" not in kept and "worker-old-12.log" in kept  # the oldest went


def test_a_job_that_cannot_be_sent_fails_alone(worker):
    """An unpicklable job is refused in the caller; the warm child goes on."""
    worker.start()
    pid = worker.pid
    import pickle

    with pytest.raises((pickle.PicklingError, AttributeError, TypeError), match=r"(?i)pickle"):
        worker.run({"extractor": CONFIG, "source": flow(), "options": {"post_encoder": "gap",
                    "progress_hook": lambda: None}})  # fmt: skip
    assert worker.pid == pid


def test_an_unguarded_script_runs_its_top_level_once(tmp_path):
    """A script without an ``if __name__ == "__main__":`` guard: the worker must not re-run it (a
    "spawn" child imports the caller's ``__main__`` again, and there starts a worker of its own)."""
    script = tmp_path / "analysis.py"
    script.write_text(
        "import numpy as np\n"
        "from napari_flow_features.extract.worker import ModelWorker\n"
        "print('TOP LEVEL', flush=True)\n"
        "worker = ModelWorker()\n"
        f"reply = worker.run({{'extractor': {CONFIG!r}, 'options': {{'post_encoder': 'gap'}},\n"
        "                     'source': np.zeros((11, 32, 32, 2), np.float32)})\n"
        "print('ROWS', len(reply['table']), flush=True)\n"
        "worker.close()\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["TOP LEVEL", "ROWS 12"], done.stdout + done.stderr
