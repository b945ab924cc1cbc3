"""What every Dask task of the batch and the split shares.

A job, its settings' digest, its index record, progress events to the client, and the extractor
a worker process keeps.

Pure (no Qt); imports neither TensorFlow nor Dask until a task runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..config import ExtractionSettings, ExtractorConfig
from ..errors import BadInputError

BATCH_META_KEY = "batch"  #: key of the batch record in each table's metadata


def settings_digest(settings: ExtractionSettings) -> str:
    """Return the SHA-256 of everything that decides a video's rows.

    That is the settings with the extractor configuration resolved (stream and channels filled
    in), the landmark file's size and modification time, and the package version.

    Parameters
    ----------
    settings
        The batch's (or a manifest row's) settings.

    Returns
    -------
    str
        A hex digest; a finished table with the same digest need not run again.
    """
    from .. import __version__

    data = settings.to_dict()
    data["extractor"] = settings.extractor.resolved().to_dict()
    if settings.points is not None:
        data["points_stat"] = _stat(settings.points)
    data["package_version"] = __version__
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _stat(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


@dataclass(frozen=True)
class Job:
    """One video of a batch: where it comes from, where its table goes, how it is extracted."""

    source: str
    output: str
    #: Extraction settings; a flow job's ``OpticalFlowComputer`` arguments.
    settings: ExtractionSettings | dict[str, Any]
    settings_hash: str


#: Per process (one Dask worker): the extractor of the last configuration, built once.
_EXTRACTORS: dict[ExtractorConfig, Any] = {}


def _extractor_for(config: ExtractorConfig) -> Any:
    key = config  # immutable and hashable: equal configurations share one model
    if key not in _EXTRACTORS:
        from .._tf_env import import_tensorflow_quietly
        from ..model.extractor import DynamicFeatureExtractor

        import_tensorflow_quietly()  # without the CPU-only start-up noise in every worker's log

        _EXTRACTORS.clear()  # one model at a time: a worker's memory holds one
        _EXTRACTORS[key] = DynamicFeatureExtractor(config=config)
    return _EXTRACTORS[key]


def batch_record(job: Job, stat: tuple[int, int]) -> dict[str, Any]:
    """The record a batch's table carries in its metadata, which :func:`is_done` reads back.

    Parameters
    ----------
    job : Job
        The video's job (its settings are :class:`ExtractionSettings`).
    stat : tuple of int
        The source's size and modification time (ns) when the run started.

    Returns
    -------
    dict
        ``{BATCH_META_KEY: {settings_hash, source_size, source_mtime_ns, settings}}``.
    """
    settings = job.settings
    assert isinstance(settings, ExtractionSettings)
    return {BATCH_META_KEY: {"settings_hash": job.settings_hash, "source_size": stat[0],
                             "source_mtime_ns": stat[1], "settings": settings.to_dict()}}  # fmt: skip


def _record(job: Job, status: str, rows: int | None = None, seconds: float = 0.0,
            stat: tuple[int, int] | None = None, error: str = "") -> dict:  # fmt: skip
    size, mtime = stat if stat is not None else _stat(job.source) or (None, None)
    return {
        "source": job.source,
        "output": job.output,
        "status": status,
        "rows": rows,
        "seconds": round(float(seconds), 3),
        "settings_hash": job.settings_hash,
        "source_size": size,
        "source_mtime_ns": mtime,
        "error": error,
    }


#: Dask event topic of per-video progress (frames encoded), sent by the workers.
PROGRESS_TOPIC = "napari-flow-features-progress"


class WorkerProgress:
    """A task's progress, sent to the Dask client as events (at most every ``every`` seconds).

    The flow (fields computed, from its own thread) and the encoder (frames encoded, once per
    pass) report separately: the event is the mean of their shares (the encoder's alone for a
    flow file), as frames of the largest total heard, and never goes back. The flow runs a pass
    ahead, so neither alone says how far the task is.

    Parameters
    ----------
    worker : distributed.Worker
        The worker running the task.
    job : Job
        The task (its ``output`` names it in the events).
    every : float, default 0.5
        Seconds between events (the last one always goes).
    """

    def __init__(self, worker: Any, job: Job, every: float = 0.5) -> None:
        self.worker, self.job, self.every = worker, job, every
        self.shares = {"encoder": 0.0}
        self.best, self.size, self.last = 0.0, 1, 0.0
        self.lock = threading.Lock()

    def encoder(self, done: int, total: int) -> None:
        """Hear the encoder: frames encoded of ``total``."""
        self._hear("encoder", done, total)

    def flow(self, done: int, total: int) -> None:
        """Hear the flow: fields computed of ``total``."""
        self._hear("flow", done, total)

    def _hear(self, which: str, done: int, total: int) -> None:
        with self.lock:
            self.shares[which] = done / max(total, 1)
            self.size = max(self.size, int(total))
            share = 1.0 if self.shares["encoder"] >= 1 else sum(self.shares.values()) / 2
            self.best = max(self.best, share if "flow" in self.shares else self.shares["encoder"])
            now = time.monotonic()
            if self.best < 1 and now - self.last < self.every:
                return
            self.last = now
            event = {"output": self.job.output, "source": self.job.source,
                     "done": round(self.best * self.size), "total": self.size}  # fmt: skip
        self.worker.log_event(PROGRESS_TOPIC, event)


def _worker_progress(job: Job, every: float = 0.5) -> WorkerProgress | None:
    """The task's :class:`WorkerProgress`; ``None`` outside a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return WorkerProgress(worker, job, every)


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, BadInputError) and text:
        return text  # already a sentence naming the problem
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: ``progress(done, total, record)`` of a batch: each finished video (record None: work starts).
Progress = Callable[[int, int, dict | None], None]


@dataclass(frozen=True)
class BatchRun:
    """How a batch runs, for :func:`extract_many` and :func:`flow_many` (the settings say what).

    Attributes
    ----------
    client : distributed.Client, optional
        The cluster (default: a LocalCluster of the batch's own, sized by
        :func:`local_cluster_shape`, started only when some video needs work, closed at the end).
    force : bool, default False
        Run again the videos that are done.
    retries : int, default 2
        Reruns of a task whose worker died.
    progress : callable, optional
        ``progress(done, total, record)``: each finished video, and once with ``record`` None
        when the videos to run start (after the skipped ones).
    log : callable, optional
        ``log(text)``: the dashboard link and how videos are split.
    video_progress : callable, optional
        ``video_progress({"source", "output", "done", "total"})``: frames encoded in running
        videos (Dask events, about twice a second per video; a split video's summed over its
        tasks).
    task_frames : int, optional
        How long videos are split (extraction only): ``None`` automatically, 0 never, N > 0
        into tasks of N frames
        (:func:`~napari_flow_features.extract.split_batch.batch_task_frames`).
    workers : int, optional
        Worker processes of the batch's own LocalCluster (default: :func:`local_cluster_shape`);
        ignored with a ``client``.
    """

    client: Any = None
    force: bool = False
    retries: int = 2
    progress: Progress | None = None
    log: Callable[[str], None] | None = None
    video_progress: Callable[[dict], None] | None = None
    task_frames: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        for name, least in (("retries", 0), ("task_frames", 0), ("workers", 1)):
            value = getattr(self, name)
            if value is None and name != "retries":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BadInputError(f"{name} must be a whole number ≥ {least}, got {value!r}")

    def replace(self, **changes: Any) -> BatchRun:
        """A copy with ``changes`` (field names; an unknown one is a named error).

        Parameters
        ----------
        **changes
            New values of fields.

        Returns
        -------
        BatchRun
            The copy.
        """
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"Unknown batch option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


def footer_metadata(path: str | os.PathLike) -> tuple[dict[str, Any], int] | None:
    """A Parquet table's run metadata and row count, read from its footer only.

    Parameters
    ----------
    path : str or PathLike
        A table this package wrote (a batch's, or a split run's part).

    Returns
    -------
    tuple or None
        ``(metadata, rows)``; ``None`` when the file is missing, unreadable or carries none.
    """
    import pyarrow.parquet as pq

    from ..io.tables import PARQUET_META_KEY

    try:
        footer = pq.read_metadata(path)
        raw = (footer.metadata or {}).get(PARQUET_META_KEY)
        meta = json.loads(raw) if raw else None
    except (OSError, ValueError, TypeError):
        return None
    return (meta, int(footer.num_rows)) if isinstance(meta, dict) else None
