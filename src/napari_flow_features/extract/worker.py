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

import json
import multiprocessing as mp
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from ..errors import CancelledError

#: Extractors kept warm in the child (least recently used are dropped).
WARM_MODELS = 2


class WorkerCrashedError(Exception):
    """The model worker process died while running a job."""


class WorkerError(Exception):
    """A job failed inside the worker; the message is the child's error text."""


def _config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _child_main(requests: Any, replies: Any, cancel: Any, flow_cache: str) -> None:
    """The child's loop: build or reuse an extractor, run the job, reply. Runs until ``None``.
    ``flow_cache`` (the parent's folder) keeps the last video's flow between jobs."""
    from collections import OrderedDict

    from ..errors import BadInputError
    from ..errors import CancelledError as Cancelled
    from ..model.extractor import DynamicFeatureExtractor
    from .pipeline import extract_features

    warm: OrderedDict[str, Any] = OrderedDict()
    while True:
        job = requests.get()
        if job is None:
            return
        try:
            key = _config_key(job["extractor"])
            was_warm = key in warm
            if was_warm:
                warm.move_to_end(key)
            else:
                warm[key] = DynamicFeatureExtractor(**job["extractor"])
                while len(warm) > WARM_MODELS:
                    warm.popitem(last=False)
            result = extract_features(
                job["source"],
                warm[key],
                progress=lambda done, total: replies.put(("progress", done, total)),
                cancel=cancel.is_set,
                **{"flow_cache": flow_cache, **job.get("options", {})},
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


class ModelWorker:
    """A model worker process that outlives single jobs (the model stays warm between runs).

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
        self._flow_cache: str | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when no child runs."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def _ensure_child(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._requests = self._ctx.Queue()
        self._replies = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        # Owned here, so it goes with the child however the child ends (even killed).
        self._flow_cache = tempfile.mkdtemp(prefix="flow-features-flow-cache-")
        proc = self._ctx.Process(
            target=_child_main,
            args=(self._requests, self._replies, self._cancel, self._flow_cache),
            name="flow-features-model-worker",
            daemon=True,
        )
        try:
            proc.start()  # may raise (e.g. inside a spawn child's bootstrap): keep no half-made child
        except BaseException:
            shutil.rmtree(self._flow_cache, ignore_errors=True)
            self._flow_cache = None
            raise
        self._proc = proc

    def run(
        self,
        job: dict,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
    ) -> dict:
        """Run one job and return the child's reply (``table``, ``metadata``, ``maps_path``,
        ``heatmap``, ``warm``).

        Raises :class:`CancelledError` when cancelled, :class:`WorkerError` with the child's message
        when the job fails, and :class:`WorkerCrashedError` when the child dies.
        """
        steps = self.iter_run(job, cancel)
        try:
            while True:
                done, total = next(steps)
                if progress is not None:
                    progress(done, total)
        except StopIteration as stop:
            return stop.value

    def iter_run(
        self, job: dict, cancel: threading.Event | Callable[[], bool] | None = None
    ) -> Generator[tuple[int, int], None, dict]:
        """Generator form of :meth:`run`: yields ``(done, total)`` windows, returns the reply.
        Closing it before the end kills the child (its late replies must not reach the next job)."""
        is_cancelled = (
            (lambda: False) if cancel is None
            else cancel.is_set if isinstance(cancel, threading.Event) else cancel
        )  # fmt: skip
        with self._lock:
            self._ensure_child()
            self._cancel.clear()
            self._requests.put(job)
            cancel_sent_at: float | None = None
            finished = False
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
                        if kind == "result":
                            finished = True
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

    def _terminate(self) -> None:
        """Kill the child and abandon its queues: a job still in the request pipe would otherwise
        keep the queue's feeder thread (and so Python's exit) waiting forever."""
        for q in (self._requests, self._replies):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._requests = self._replies = None
        if self._proc is not None and self._proc.pid is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = None
        if self._flow_cache is not None:
            shutil.rmtree(self._flow_cache, ignore_errors=True)
            self._flow_cache = None

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                self._requests.put(None)
                self._proc.join(self.cancel_grace)
            if self._proc is not None or self._requests is not None:
                self._terminate()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
