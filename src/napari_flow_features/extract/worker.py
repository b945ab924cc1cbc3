"""Run model work in a spawned child process, so TensorFlow never loads in the calling process.

The napari process must not import TensorFlow (its LLVM symbols clash with Mesa's: a process with a
napari canvas and TensorFlow segfaults or aborts at exit). :class:`ModelWorker` starts a child with
``spawn``, sends it extraction jobs, and relays progress. The child keeps extractors warm between
jobs, keyed by their configuration. Cancel is cooperative (the child checks between batches); a child
that does not answer within ``cancel_grace`` seconds is terminated. A child that dies (e.g. killed
for memory) becomes a :class:`WorkerCrashedError`, and the next job starts a fresh child.

This module imports nothing heavy; the child imports TensorFlow.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Generator
from typing import Any

from ..errors import CancelledError

#: Extractors kept warm in the child (least recently used are dropped).
WARM_MODELS = 2


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


def _forward_warnings(replies: Any) -> None:
    """Send the child's Python warnings to the parent (napari shows them as notifications)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        replies.put(("warning", f"{category.__name__}: {message}"))

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
    _forward_warnings(replies)
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

    >>> worker = ModelWorker()
    >>> reply = worker.run({"extractor": {"endpoint": "Mixed_4f"}, "source": "mouse.mp4",
    ...                     "options": {"post_encoder": "gap"}})  # doctest: +SKIP
    >>> reply["table"]  # doctest: +SKIP
    """

    def __init__(self, cancel_grace: float = 5.0, poll: float = 0.05) -> None:
        self.cancel_grace = float(cancel_grace)
        self.poll = float(poll)
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._requests: Any = None
        self._replies: Any = None
        self._cancel: Any = None
        self._root: str | None = None
        self._jobs = 0
        self._lock = threading.Lock()
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when no child runs."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    @property
    def temp_root(self) -> str | None:
        """The folder of the running child's temporary files (None when no child runs)."""
        return self._root

    def start(self) -> None:
        """Start the child now, so the first job does not wait for TensorFlow.

        Start the child now (it imports TensorFlow in the background), so the first job does
        not wait for it. Returns at once; a running child is kept.
        """
        with self._lock:
            self._ensure_child()

    def _ensure_child(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:  # died between jobs: drop its queues and files first
            self._terminate()
        self._requests = self._ctx.Queue()
        self._replies = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        # Owned here, so it goes with the child however the child ends (even killed); tagged with
        # this process's pid and start time, so after a SIGKILL of both the next start removes it.
        from ..io._atomic import make_work_dir

        self._root = str(make_work_dir(stem=WORKER_DIR_STEM))
        proc = self._ctx.Process(
            target=_child_main,
            args=(self._requests, self._replies, self._cancel, self._root, os.getpid()),
            name="flow-features-model-worker",
            daemon=True,
        )
        try:
            with _child_environment():
                proc.start()  # may raise (e.g. inside a spawn child's bootstrap): keep no half-made child
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            raise
        self._proc = proc

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
            if self._proc is None or not self._proc.is_alive():
                yield ("status", "starting the model process")
            self._ensure_child()
            self._cancel.clear()
            self._jobs += 1
            assert self._root is not None  # _ensure_child made the temporary folder
            job_dir = os.path.join(self._root, f"job-{self._jobs}")
            self._requests.put({**job, "job_id": self._jobs})
            cancel_sent_at: float | None = None
            finished = False
            keep_job_dir = False
            try:
                while True:
                    # Cancel is checked on every pass: a stream of progress messages must not hide it.
                    if cancel_sent_at is None and is_cancelled():
                        self._cancel.set()
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
                    try:
                        reply = self._replies.get(timeout=self.poll)
                    except queue.Empty:
                        reply = None
                    if reply is not None:
                        kind = reply[0]
                        if kind == "progress":
                            yield reply[1], reply[2]
                            continue
                        if kind in ("status", "warning"):
                            yield kind, reply[1]
                            continue
                        if kind == "flow":
                            yield reply
                            continue
                        if kind == "result":
                            finished = True
                            maps = reply[1].get("maps_path")
                            keep_job_dir = bool(maps) and _inside(maps, job_dir)
                            return reply[1]
                        finished = True
                        if kind == "cancelled":
                            raise CancelledError("Feature extraction cancelled")
                        raise WorkerError(reply[1])
                    if not self._proc.is_alive():
                        code = self._proc.exitcode
                        self._terminate()
                        raise WorkerCrashedError(
                            f"The model worker process stopped unexpectedly (exit code {code}"
                            f"{', killed' if code is not None and code < 0 else ''}; out of memory?). "
                            "The next run starts a fresh worker."
                        )
            finally:
                if not finished and self._proc is not None:
                    self._terminate()
                if not keep_job_dir:  # cancelled, failed or nothing to keep: no files stay
                    shutil.rmtree(job_dir, ignore_errors=True)

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
        """Kill the child and abandon its queues.

        Kill the child and abandon its queues: a job still in the request pipe would otherwise
        keep the queue's feeder thread (and so Python's exit) waiting forever.
        """
        for q in (self._requests, self._replies):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._requests = self._replies = None
        if self._proc is not None and self._proc.pid is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def close(self) -> None:
        """Stop the child (politely, then by force) and remove its temporary files."""
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                self._requests.put(None)
                self._proc.join(self.cancel_grace)
            if self._proc is not None or self._requests is not None or self._root is not None:
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


@contextlib.contextmanager
def _child_environment() -> Generator[None, None, None]:
    """The environment the child starts with.

    The environment the child starts with: TensorFlow's CUDA probing silenced on a machine
    without an NVIDIA device (the variable must be set before TensorFlow loads in the child).
    """
    from .._tf_env import has_nvidia_device

    changed = not has_nvidia_device() and "CUDA_VISIBLE_DEVICES" not in os.environ
    if changed:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if changed:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
