"""Run model work in a child process of our own, so TensorFlow never loads in the calling process.

The napari process must not import TensorFlow (its LLVM symbols clash with Mesa's: a process with a
napari canvas and TensorFlow segfaults or aborts at exit). :class:`ModelWorker` starts a child,
``sys.executable`` running :mod:`._worker_main` (not a ``multiprocessing`` "spawn" child, which
re-imports the caller's ``__main__``: an unguarded napari script would re-run there and open a second
viewer), sends it extraction jobs over a socket, and relays progress. The child keeps extractors
warm between jobs, keyed by their configuration. Cancel is cooperative (the child checks between
batches); a child that does not answer within ``cancel_grace`` seconds is killed. A child that dies
becomes a :class:`WorkerCrashedError` naming the exit code, its cause where it can be known (a
signal, an import error, memory) and the worker's log file; the next job starts a fresh child.

This module imports nothing heavy; the child imports TensorFlow.
"""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..errors import CancelledError

#: The parent's messages to the child (:mod:`._worker_main`): a job is ``JOB`` followed by the
#: pickled job.
JOB, CANCEL, STOP = b"J", b"cancel", b"stop"
#: Extractors kept warm in the child (least recently used are dropped).
WARM_MODELS = 2
#: Worker logs kept in :func:`worker_log_dir` (the oldest are removed when a child starts).
KEPT_LOGS = 10
#: Lines of the log's end quoted in the message of a child that exited with an error.
QUOTED_LOG_LINES = 6


class WorkerCrashedError(Exception):
    """The model worker process died while running a job."""


class WorkerError(Exception):
    """A job failed inside the worker; the message is the child's error text."""


def job_settings(job: dict) -> Any:
    """The run's :class:`~napari_flow_features.config.ExtractionSettings` of a worker job.

    A job gives ``settings`` (``ExtractionSettings.to_dict()``, what the extraction dock sends) or,
    the older form, ``extractor`` (config fields) and ``options`` (option shortcuts); ``points``
    (in-memory landmarks) travel beside them, not in the settings.
    """
    from ..config import ExtractionSettings

    if "settings" in job:
        return ExtractionSettings.from_dict(job["settings"], "the job's settings")
    options = {k: v for k, v in job.get("options", {}).items() if k != "points"}
    settings = ExtractionSettings(extractor=_config_key(job.get("extractor") or {}))
    return settings.replace(**options) if options else settings


def _model_key(settings: Any) -> Any:
    """The warm-model cache key: the encoder's fields that make the model (run fields at default)."""
    from ..config import ExtractorConfig
    from .plan import RUN_FIELDS

    defaults = ExtractorConfig()
    return settings.extractor.replace(**{k: getattr(defaults, k) for k in RUN_FIELDS})


def _config_key(config: Any) -> Any:
    """The warm-model cache key of a job's extractor config.

    The config is a mapping of fields or an ``ExtractorConfig``; the key is the validated, immutable config itself, so equal configurations (one
    spelled out in full, one sparse) share one model.
    """
    from ..config import ExtractorConfig

    if isinstance(config, ExtractorConfig):
        return config
    return ExtractorConfig.from_dict(config, "the job's extractor settings")


def _forward_warnings(replies: Any, seen: set[str]) -> None:
    """Send the child's Python warnings to the parent, each text once per job (``seen``).

    The text is the warning's message alone (with its category unless it is a ``UserWarning``):
    napari shows it as a notification.
    """
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        text = (
            str(message) if issubclass(category, UserWarning) else f"{category.__name__}: {message}"
        )
        if text not in seen:
            seen.add(text)
            replies.put(("warning", text))

    warnings.showwarning = show


#: Stem of the worker's owner-tagged temporary folder in ``$TMPDIR`` (``io._atomic.make_work_dir``).
WORKER_DIR_STEM = "flow-features-worker"


def _exit_with_parent(parent_pid: int, root: str, poll: float = 0.5) -> None:
    """End the child, and remove the parent's temporary folder, once the parent is gone.

    A parent killed with SIGKILL (or by the out-of-memory killer) cannot stop its child; without
    this the model process, holding TensorFlow and a model in memory, would outlive napari. A
    child whose parent died is re-parented, so ``os.getppid()`` changes.
    """
    import os
    import shutil
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent_pid:
                shutil.rmtree(root, ignore_errors=True)
                os._exit(0)

    threading.Thread(target=watch, name="flow-features-parent-watch", daemon=True).start()


def _child_main(
    requests: Any, replies: Any, cancel: Any, root: str, parent_pid: int | None = None
) -> None:
    """The child's loop: build or reuse an extractor, run the job, reply. Runs until ``None``.

    ``root`` (the parent's folder) holds ``flow-cache`` (the last video's flow, kept between jobs)
    and one ``job-N`` folder per job for the job's temporary files (the parent removes it).
    """
    import os
    from collections import OrderedDict

    if parent_pid is not None:
        _exit_with_parent(parent_pid, root)
    warned: set[str] = set()
    _forward_warnings(replies, warned)
    replies.put(("status", "importing TensorFlow"))
    from .._tf_env import import_tensorflow_quietly

    import_tensorflow_quietly()
    from ..errors import BadInputError
    from ..errors import CancelledError as Cancelled
    from ..model.extractor import DynamicFeatureExtractor
    from .pipeline import extract_features

    replies.put(("status", "model process ready"))
    flow_cache = os.path.join(root, "flow-cache")
    os.makedirs(flow_cache, exist_ok=True)
    warm: OrderedDict[Any, Any] = OrderedDict()
    while True:
        job = requests.get()
        if job is None:
            return
        # Every temporary file of this job (the pipeline's work folder, maps) goes under job_dir.
        job_dir = os.path.join(root, f"job-{job.get('job_id', 0)}")
        os.makedirs(job_dir, exist_ok=True)
        tempfile.tempdir = job_dir
        warned.clear()
        # Re-adding a filter resets Python's once-per-place memory: each job warns afresh.
        warnings.simplefilter("default", UserWarning)
        try:
            settings = job_settings(job)
            if settings.flow_cache is None:
                settings = settings.replace(flow_cache=flow_cache)
            key = _model_key(settings)
            was_warm = key in warm
            if was_warm:
                warm.move_to_end(key)
            else:
                replies.put(("status", _building_text(key)))
                warm[key] = DynamicFeatureExtractor(config=key)
                while len(warm) > WARM_MODELS:
                    warm.popitem(last=False)
            replies.put(("status", "running"))
            result = extract_features(
                job["source"],
                warm[key],
                settings,
                points=job.get("points", job.get("options", {}).get("points")),
                progress=lambda done, total: replies.put(("progress", done, total)),
                # Flow is its own phase with its own bar: it runs ahead of the encoder.
                flow_progress=lambda done, total: replies.put(("flow", done, total)),
                # The pipeline's phases (flow, compiling, the time estimate) as status events.
                status=lambda text: replies.put(("status", str(text))),
                cancel=cancel.is_set,
            )
            maps = result.feature_maps
            replies.put(
                (
                    "result",
                    {
                        "table": result.table,
                        "attrs": dict(result.table.attrs),
                        "metadata": result.metadata,
                        "maps_path": str(maps.filename) if maps is not None else None,
                        "heatmap": result.heatmap,
                        "warm": was_warm,
                    },
                )
            )
        except Cancelled:
            replies.put(("cancelled",))
        except BadInputError as exc:
            replies.put(("error", str(exc)))
        except Exception as exc:  # every failure goes back to the caller as text
            replies.put(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            tempfile.tempdir = None


def _building_text(config: Any) -> str:
    """What the child is doing while it builds the extractor of ``config`` (an ExtractorConfig)."""
    what = {"random": "building the model (random weights)",
            "pretrained": "loading DeepMind's pretrained weights (downloaded on first use)",
            "deepmind": "loading the DeepMind checkpoint",
            "registry": "loading the model from the registry"}.get(config.weights.source,
                                                                   "building the model")  # fmt: skip
    return f"{what}, end point {config.endpoint}"


class ModelWorker:
    """A model worker process that outlives single jobs (the model stays warm between runs).

    Temporary files live in one folder the parent owns (:attr:`temp_root`): the child's flow cache
    and one folder per job. A job's folder is removed when the job ends, unless its reply points
    into it (the none post-encoder's maps: :meth:`release` removes them); the whole folder goes when
    the child stops (close, crash, kill) and at interpreter exit.

    The child is ``sys.executable`` running :mod:`._worker_main` (it never imports the caller's
    ``__main__``); its stdout and stderr go to a log file (:attr:`log_path`).

    Parameters
    ----------
    cancel_grace : float
        Seconds a cancelled child has to stop before it is killed.
    poll : float
        Seconds between checks for cancel and a dead child while waiting for replies.
    log_dir : str or PathLike, optional
        Where the child's log files go; default :func:`worker_log_dir` (the last
        :data:`KEPT_LOGS` are kept).

    >>> worker = ModelWorker()
    >>> reply = worker.run({"extractor": {"endpoint": "Mixed_4f"}, "source": "mouse.mp4",
    ...                     "options": {"post_encoder": "gap"}})  # doctest: +SKIP
    >>> reply["table"]  # doctest: +SKIP
    """

    def __init__(
        self,
        cancel_grace: float = 5.0,
        poll: float = 0.05,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        self.cancel_grace = float(cancel_grace)
        self.poll = float(poll)
        #: Where the child's log files go (default :func:`worker_log_dir`).
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._root: str | None = None
        self._log_path: Path | None = None
        self._jobs = 0
        self._lock = threading.Lock()
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when no child runs."""
        return self._proc.pid if self._alive() else None  # type: ignore[union-attr]

    @property
    def temp_root(self) -> str | None:
        """The folder of the running child's temporary files (None when no child runs)."""
        return self._root

    @property
    def log_path(self) -> Path | None:
        """The log file (stdout and stderr) of the current or last child; None before the first."""
        return self._log_path

    def start(self) -> None:
        """Start the child now, so the first job does not wait for TensorFlow.

        Start the child now (it imports TensorFlow in the background), so the first job does
        not wait for it. Returns at once; a running child is kept.
        """
        with self._lock:
            self._ensure_child()

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ensure_child(self) -> None:
        if self._alive():
            return
        if self._proc is not None:  # died between jobs: drop its socket and files first
            self._terminate()
        # Owned here, so it goes with the child however the child ends (even killed); tagged with
        # this process's pid and start time, so after a SIGKILL of both the next start removes it.
        from ..io._atomic import make_work_dir

        root = str(make_work_dir(stem=WORKER_DIR_STEM))
        ours, theirs = socket.socketpair()
        try:
            log_path = _new_log_path(self.log_dir)
            with open(log_path, "ab") as log:  # the child writes through its own descriptor
                log.write(f"napari-flow-features model worker, started {time.ctime()} by process "
                          f"{os.getpid()} ({sys.executable})\n".encode())  # fmt: skip
                log.flush()
                proc = subprocess.Popen(
                    _child_command(theirs.fileno(), root), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),), env=_child_env(),
                )  # fmt: skip
        except BaseException:  # keep no half-made child
            ours.close()
            shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self._proc, self._root, self._log_path = proc, root, log_path
        self._conn = Connection(ours.detach())

    def run(
        self,
        job: dict,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
        status: Callable[[str], None] | None = None,
        flow_progress: Callable[[int, int], None] | None = None,
    ) -> dict:
        """Run one job and return the child's reply.

        Run one job and return the child's reply (``table``, ``metadata``, ``maps_path``,
        ``heatmap``, ``warm``). ``progress(done, total)`` counts frames encoded,
        ``flow_progress(done, total)`` flow fields computed, ``status(text)`` hears the phases;
        the child's warnings are issued again here (``warnings.warn``).

        Raises :class:`CancelledError` when cancelled, :class:`WorkerError` with the child's message
        when the job fails, and :class:`WorkerCrashedError` when the child dies.
        """
        steps = self.iter_run(job, cancel)
        try:
            while True:
                event = next(steps)
                if event[0] == "status":
                    if status is not None:
                        status(event[1])
                elif event[0] == "warning":
                    warnings.warn(event[1], WorkerWarning, stacklevel=2)
                elif event[0] == "flow":
                    if flow_progress is not None:
                        flow_progress(event[1], event[2])
                elif progress is not None:
                    progress(*event)
        except StopIteration as stop:
            return stop.value

    def iter_run(
        self, job: dict, cancel: threading.Event | Callable[[], bool] | None = None
    ) -> Generator[tuple, None, dict]:
        """Run one job as a generator of its events.

        Generator form of :meth:`run`: yields ``(done, total)`` frames encoded,
        ``("flow", done, total)`` flow fields computed, ``("status", text)`` for the phases and
        ``("warning", text)`` for the child's warnings; returns the
        reply. Closing it before the end kills the child (its late replies must not reach the
        next job).
        """
        is_cancelled = (
            (lambda: False) if cancel is None
            else cancel.is_set if isinstance(cancel, threading.Event) else cancel
        )  # fmt: skip
        with self._lock:
            if not self._alive():
                yield ("status", "starting the model process")
            self._ensure_child()
            self._jobs += 1
            assert self._root is not None  # _ensure_child made the temporary folder
            job_dir = os.path.join(self._root, f"job-{self._jobs}")
            # Pickled here, so a job that cannot be sent fails alone (the warm child goes on).
            message = JOB + pickle.dumps({**job, "job_id": self._jobs}, pickle.HIGHEST_PROTOCOL)
            finished = keep_job_dir = False
            try:
                self._send(message)
                cancel_sent_at: float | None = None
                while True:
                    # Cancel is checked on every pass: a stream of progress messages must not hide it.
                    if cancel_sent_at is None and is_cancelled():
                        self._send(CANCEL)
                        cancel_sent_at = time.monotonic()
                    elif (
                        cancel_sent_at is not None
                        and time.monotonic() - cancel_sent_at > self.cancel_grace
                    ):
                        self._terminate()
                        raise CancelledError(
                            f"Feature extraction cancelled (the worker did not stop within "
                            f"{self.cancel_grace:g} s and was terminated)"
                        )
                    reply = self._receive()
                    if reply is None:
                        continue
                    kind = reply[0]
                    if kind == "progress":
                        yield reply[1], reply[2]
                    elif kind in ("status", "warning"):
                        yield kind, reply[1]
                    elif kind == "flow":
                        yield reply
                    elif kind == "result":
                        finished = True
                        maps = reply[1].get("maps_path")
                        keep_job_dir = bool(maps) and _inside(maps, job_dir)
                        return reply[1]
                    else:
                        finished = True
                        if kind == "cancelled":
                            raise CancelledError("Feature extraction cancelled")
                        raise WorkerError(reply[1])
            finally:
                if not finished and self._proc is not None:
                    self._terminate()
                if not keep_job_dir:  # cancelled, failed or nothing to keep: no files stay
                    shutil.rmtree(job_dir, ignore_errors=True)

    def _send(self, data: bytes) -> None:
        """Send a pickled message to the child; a child that is gone is a :class:`WorkerCrashedError`."""
        assert self._conn is not None
        try:
            self._conn.send_bytes(data)
        except OSError:
            raise self._crashed() from None

    def _receive(self) -> Any:
        """The child's next reply, or None when none came within :attr:`poll` seconds.

        Raises :class:`WorkerCrashedError` when the child has died (its socket closed).
        """
        assert self._conn is not None and self._proc is not None
        try:
            if self._conn.poll(self.poll):
                return self._conn.recv()
        except (EOFError, OSError):
            raise self._crashed() from None
        if self._proc.poll() is not None:  # exited without closing the socket first (rare)
            raise self._crashed()
        return None

    def _crashed(self) -> WorkerCrashedError:
        """Collect the dead child (its exit code), clean up, and say what happened."""
        assert self._proc is not None
        try:
            code: int | None = self._proc.wait(5)
        except subprocess.TimeoutExpired:  # the socket closed, yet it runs: it is not answering
            code = None
        log_path = self._log_path
        self._terminate()
        return WorkerCrashedError(_crash_message(code, log_path))

    def release(self, maps_path: str | os.PathLike) -> None:
        """Remove a finished job's kept files.

        Remove a finished job's kept files (the folder of ``maps_path`` inside
        :attr:`temp_root`); a path elsewhere is left alone.
        """
        if self._root is None or not _inside(maps_path, self._root):
            return
        relative = os.path.relpath(os.path.abspath(maps_path), os.path.abspath(self._root))
        shutil.rmtree(os.path.join(self._root, relative.split(os.sep)[0]), ignore_errors=True)

    def _terminate(self) -> None:
        """Kill the child, close its socket and remove its temporary folder."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:  # in uninterruptible sleep: the kill lands later
                pass
            self._proc = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def close(self) -> None:
        """Stop the child (politely, then by force) and remove its temporary files."""
        with self._lock:
            if self._alive() and self._conn is not None:
                try:
                    self._conn.send_bytes(STOP)
                    self._proc.wait(self.cancel_grace)  # type: ignore[union-attr]
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self._proc is not None or self._conn is not None or self._root is not None:
                self._terminate()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerWarning(UserWarning):
    """A warning the model worker process issued during a job (its text is the child's)."""


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


#: The child's first lines: make this package importable as the parent has it (a notebook or a
#: script may have put it on ``sys.path`` by hand), then run the worker's entry point.
_BOOTSTRAP = (
    "import sys; r = sys.argv[1]; r in sys.path or sys.path.insert(0, r); "
    "from napari_flow_features.extract._worker_main import _run; _run(sys.argv[2:])"
)


def _child_command(fd: int, root: str) -> list[str]:
    """The child's command line: this Python, our entry point, the socket, the folder, our pid."""
    package_root = str(Path(__file__).resolve().parents[2])
    return [sys.executable, "-c", _BOOTSTRAP, package_root, str(fd), root, str(os.getpid())]


def _child_env() -> dict[str, str]:
    """The environment the child starts with.

    TensorFlow's CUDA probing is silenced on a machine without an NVIDIA device (the variable must
    be set before TensorFlow loads in the child), and a crash in native code (SIGSEGV, SIGABRT)
    writes the Python stack to the worker's log.
    """
    from .._tf_env import has_nvidia_device

    env = dict(os.environ)
    if not has_nvidia_device() and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


def worker_log_dir() -> Path:
    """The folder of the model worker's log files (the user's log folder, ``platformdirs``).

    Returns
    -------
    Path
        ``<user log dir>/napari-flow-features/worker`` (on Linux
        ``~/.local/state/napari-flow-features/log/worker``).
    """
    import platformdirs

    return Path(platformdirs.user_log_dir("napari-flow-features", appauthor=False)) / "worker"


_log_counter = iter(range(1, 1 << 62))


def _new_log_path(folder: Path | None) -> Path:
    """A new log file's path in ``folder``, after removing the oldest logs beyond :data:`KEPT_LOGS`.

    A folder that cannot be made (a read-only home) falls back to one in the temporary folder.
    """
    if folder is None:
        folder = worker_log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "napari-flow-features-worker-logs"
        folder.mkdir(parents=True, exist_ok=True)
    logs = sorted(folder.glob("worker-*.log"), key=_mtime)
    for old in logs[: max(0, len(logs) - (KEPT_LOGS - 1))]:
        old.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return folder / f"worker-{stamp}-{os.getpid()}-{next(_log_counter)}.log"


def _mtime(path: Path) -> float:
    """A file's modification time; 0 for one that went meanwhile (another worker's pruning)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _log_tail(path: Path | None, lines: int = QUOTED_LOG_LINES) -> list[str]:
    """The last non-blank lines of the worker's log (none when it cannot be read)."""
    if path is None:
        return []
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


#: What a signal that ended the child usually means.
_SIGNAL_CAUSES = {
    signal.SIGKILL: "killed by another program, or by the system's out-of-memory killer when "
    "memory ran out",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGABRT: "aborted by native code",
    signal.SIGTERM: "terminated by another program",
}


def _crash_message(code: int | None, log_path: Path | None) -> str:
    """What to tell the user when the child died with exit status ``code``.

    The cause where it can be known: the signal's name (negative codes), a ``MemoryError`` or the
    error the log ends with (an import that failed, say, quoted with the log's last lines).
    """
    tail: list[str] = []
    if code is None:
        cause = "it closed its connection and did not exit"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        known = _SIGNAL_CAUSES.get(-code)  # type: ignore[call-overload]
        cause = f"{name}: {known}" if known else name
    else:
        tail = _log_tail(log_path)
        errors = [line for line in tail if not line.startswith((" ", "\t"))]
        if any("MemoryError" in line for line in tail):
            cause = "it ran out of memory (MemoryError)"
        elif errors and code != 0:
            cause = errors[-1].strip()
        else:
            cause = "it exited"
    text = f"The model worker process stopped unexpectedly (exit code {code}, {cause})."
    if tail and code:
        text += "\nThe end of its log:\n" + "\n".join(f"    {line}" for line in tail)
    if log_path is not None:
        text += f"\nIts log: {log_path}"
    return text + "\nThe next run starts a fresh worker."
