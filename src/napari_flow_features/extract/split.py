"""One long video across Dask workers: tasks of a few thousand frames, joined into one table.

:func:`plan_tasks` cuts a run's frame range into spans of about ``task_frames`` frames on the
encoder's 8-frame grid (its total time stride, counted from the range's start). Each task runs
:func:`~napari_flow_features.extract.pipeline.extract_features` over its span widened by
:data:`LEAD` frames before and :data:`TAIL` after (clipped at the range's ends), with ``frames``
set to its own span. Chunked windowing is fully convolutional in time, so a task's rows equal the
rows of one run over the whole range (see :data:`LEAD` for why these widths are enough); each task
computes its own flow, from the widened start on.

:func:`extract_split` runs the tasks on a Dask cluster, each writing its rows to a part
(``<output>.parts/task-00003-<lo>-<hi>.parquet``, an owner-tagged temporary renamed into place when
complete, recording the settings hash and the source's size and modification time), so a run that
is killed resumes with the tasks that had not finished. The parts are then joined in order into the
one output table (written atomically) and removed.

Pure (no Qt). TensorFlow loads only in the process that runs a task (a Dask worker).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import CHUNK_MARGIN, ExtractionSettings
from ..errors import BadInputError

#: Frames per task when a split is asked for without a length: one minute at 30 frames/s.
DEFAULT_TASK_FRAMES = 1800
#: The grid tasks are cut on: the encoder's total time stride (every end point's steps align).
GRID = 8
#: Frames a task reads before its first row. A frame's row interpolates between two feature-map
#: steps that start at most ``GRID`` frames before it (the cut is on the grid), and a step is exact
#: when it is ``CHUNK_MARGIN`` frames from the start of what an encoder pass reads (the rule that
#: makes chunked windowing seamless): ``CHUNK_MARGIN + GRID``, itself on the grid.
LEAD = CHUNK_MARGIN + GRID
#: Frames a task reads after its last row: the steps of its last rows end at most ``GRID`` frames
#: after it, ``CHUNK_MARGIN`` more keep them exact, and the task's last frame takes the edge-padded
#: flow field (not the field to the next frame), so one more grid step keeps it out of reach.
TAIL = CHUNK_MARGIN + 2 * GRID
#: Key of a part's record (settings hash, source size and mtime, its frames) in its metadata.
PART_META_KEY = "split_task"
#: The folder beside a batch's tables that holds its split videos' parts, one folder per video
#: (its leading ``_`` keeps it out of ``pandas.read_parquet(output_dir)``, as the index's).
BATCH_PARTS_DIR = "_parts"
#: The file beside a batch video's parts that records their task length (a rerun cuts alike).
SPLIT_PLAN_FILE = "split.json"
#: End points that pool whole clips run sliding windows, which a split does not cut.
_CLIP_POOLING = ("Logits", "Predictions")


@dataclass(frozen=True)
class Task:
    """One task of a split run.

    Attributes
    ----------
    index : int
        Its place in the run (rows are joined in this order).
    lo, hi : int
        Its rows: frames ``lo .. hi - 1`` (video frame numbers).
    start, stop : int
        The frames it reads: ``lo - LEAD .. hi + TAIL - 1``, clipped to the run's range.
    """

    index: int
    lo: int
    hi: int
    start: int
    stop: int

    @property
    def rows_frames(self) -> int:
        """Frames that get rows."""
        return self.hi - self.lo

    def settings(self, settings: ExtractionSettings) -> ExtractionSettings:
        """The settings this task runs: its widened range, rows for its own frames.

        Parameters
        ----------
        settings : ExtractionSettings
            The whole run's settings.

        Returns
        -------
        ExtractionSettings
            ``settings`` with ``start``, ``stop`` and ``frames`` set for this task.
        """
        return settings.replace(
            start=self.start, stop=self.stop, frames=tuple(range(self.lo, self.hi))
        )


def plan_tasks(
    n_frames: int, task_frames: int, start: int | None = None, stop: int | None = None
) -> list[Task]:
    """Cut frames ``start .. stop - 1`` into tasks of about ``task_frames`` frames on the grid.

    Parameters
    ----------
    n_frames : int
        The source's frame count.
    task_frames : int
        Frames of rows per task (rounded up to a multiple of 8; the tasks share the range evenly).
    start, stop : int, optional
        The run's range (default: the whole source).

    Returns
    -------
    list of Task
        The tasks in order; their rows tile the range, every cut is a multiple of 8 frames from
        ``start``.

    Raises
    ------
    BadInputError
        ``task_frames`` is not a positive whole number, or the range is not inside the source.
    """
    if isinstance(task_frames, bool) or int(task_frames) != task_frames or task_frames < 1:
        raise BadInputError(f"task_frames must be a whole number ≥ 1, got {task_frames!r}")
    first = 0 if start is None else int(start)
    last = n_frames if stop is None else int(stop)
    if not 0 <= first < last <= n_frames:
        raise BadInputError(
            f"frames {first}..{last - 1} are not a range of the source's frames 0..{n_frames - 1}"
        )
    step = -(-int(task_frames) // GRID) * GRID
    n = last - first
    count = -(-n // step)
    cuts = sorted({first + round(i * n / count / GRID) * GRID for i in range(count)} | {last})
    cuts = [c for c in cuts if c <= last]
    return [
        Task(i, lo, hi, max(first, lo - LEAD), min(last, hi + TAIL))
        for i, (lo, hi) in enumerate(itertools.pairwise(cuts))
    ]


def check_splittable(settings: ExtractionSettings) -> None:
    """Refuse the options a split run cannot honour, each named with what to do instead.

    Parameters
    ----------
    settings : ExtractionSettings
        The run's settings.

    Raises
    ------
    BadInputError
        Sliding windows (or an end point that pools whole clips), a frame subset, kept flow, the
        flow cache, the ``none`` post-encoder's maps, a heatmap or Kinetics predictions.
    """
    problems = split_obstacles(settings)
    if problems:
        raise BadInputError(
            "A split run cannot: " + "; ".join(problems) + ". Or run it as one task "
            "(--task-frames 0)."
        )


def split_obstacles(settings: ExtractionSettings) -> list[str]:
    """What in ``settings`` a split run cannot honour, each said with what to do instead.

    Parameters
    ----------
    settings : ExtractionSettings
        The run's settings.

    Returns
    -------
    list of str
        Empty when the run can be split.
    """
    cfg = settings.extractor
    problems = []
    if cfg.windowing != "chunked" or cfg.endpoint in _CLIP_POOLING:
        problems.append(
            f"sliding windows (windowing {cfg.windowing}, end point {cfg.endpoint}) are not cut "
            "into tasks: use chunked windowing and a per-step end point"
        )
    if settings.frames is not None:
        problems.append("frames (a subset of rows) already runs only what those frames need")
    if settings.keep_flow is not None:
        problems.append("keep_flow writes one flow file, which tasks on workers do not make")
    if settings.flow_cache is not None:
        problems.append("flow_cache keeps one whole video's flow; each task computes its own")
    if settings.post_encoder == "none":
        problems.append("the none post-encoder writes one feature-map file, not per-frame rows")
    if settings.heatmap is not None:
        problems.append("heatmap is returned in memory, a split run writes a table")
    if settings.predict:
        problems.append("Kinetics predictions need the Logits end point's sliding windows")
    return problems


# -- one task (on a worker) -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskJob:
    """What a worker needs to run one task: paths and settings, never frames.

    Attributes
    ----------
    source : str
        The video or flow file.
    part : str
        The task's part file (``.parquet``).
    settings : ExtractionSettings
        The whole run's settings.
    settings_hash : str
        Their digest (:func:`~napari_flow_features.extract.batch.settings_digest`).
    task : Task
        The task.
    """

    source: str
    part: str
    settings: ExtractionSettings
    settings_hash: str
    task: Task

    def record(self, stat: tuple[int, int]) -> dict[str, Any]:
        """The record a finished part carries: what made it, to tell whether it can be reused.

        Parameters
        ----------
        stat : tuple of int
            The source's size and modification time (ns).

        Returns
        -------
        dict
            Settings hash, source size and mtime, the task's rows and range.
        """
        t = self.task
        return {"settings_hash": self.settings_hash, "source_size": stat[0],
                "source_mtime_ns": stat[1], "lo": t.lo, "hi": t.hi, "start": t.start,
                "stop": t.stop}  # fmt: skip


def run_task(job: TaskJob) -> dict[str, Any]:
    """Run one task into its part (a Dask task that never raises for a bad input).

    Parameters
    ----------
    job : TaskJob
        The task.

    Returns
    -------
    dict
        ``{"rows": n, "seconds": s}``, or ``{"error": message}`` when the task could not run (a
        worker that dies is left to Dask's retries).
    """
    from .tasks import _message

    t0 = time.perf_counter()
    try:
        rows = _extract_part(job)
    except Exception as exc:
        return {"error": _message(exc)}
    return {"rows": rows, "seconds": round(time.perf_counter() - t0, 3)}


def _extract_part(job: TaskJob) -> int:
    from ..io.table_stream import TableStreamWriter
    from .pipeline import extract_features
    from .tasks import Job, _extractor_for, _stat, _worker_progress

    stat = _stat(job.source)
    if stat is None:
        raise BadInputError(f"Source not found: {job.source}")
    settings = job.task.settings(job.settings)
    extractor = _extractor_for(settings.extractor)
    progress = _worker_progress(Job(job.source, job.part, settings, job.settings_hash))
    writer = TableStreamWriter(job.part)
    try:
        result = extract_features(
            job.source, extractor, settings, row_sink=writer.write,
            progress=progress.encoder if progress is not None else None,
            flow_progress=progress.flow if progress is not None else None,
        )  # fmt: skip
        writer.close({**result.metadata, PART_META_KEY: job.record(stat)})
    except BaseException:
        writer.discard()
        raise
    return writer.rows


def whole_record(source: str, settings: ExtractionSettings) -> dict[str, Any]:
    """The plan's record of the whole range, as one run would write it (run on a worker).

    Parameters
    ----------
    source : str
        The video or flow file.
    settings : ExtractionSettings
        The whole run's settings.

    Returns
    -------
    dict
        :meth:`~napari_flow_features.extract.plan.RunPlan.record` of the unsplit run.
    """
    from .plan import plan_run
    from .tasks import _extractor_for

    return plan_run(source, _extractor_for(settings.extractor), settings).record()


def record_task(source: str, settings: ExtractionSettings) -> dict[str, Any]:
    """:func:`whole_record` as a Dask task that never raises for a bad input.

    Parameters
    ----------
    source : str
        The video or flow file.
    settings : ExtractionSettings
        The whole run's settings.

    Returns
    -------
    dict
        ``{"record": ...}``, or ``{"error": message}`` (once: Dask's retries are for dead
        workers, not for an input that fails the same way every time).
    """
    from .tasks import _message

    try:
        return {"record": whole_record(source, settings)}
    except Exception as exc:
        return {"error": _message(exc)}


def part_done(job: TaskJob) -> dict[str, Any] | None:
    """A finished part's metadata when it can be reused (same settings, source and task).

    Parameters
    ----------
    job : TaskJob
        The task.

    Returns
    -------
    dict or None
        The part's metadata, or ``None`` when the task must run.
    """
    from .tasks import _stat, footer_metadata

    found = footer_metadata(job.part)
    meta = found[0] if found is not None else None
    stat = _stat(job.source)
    if meta is None or stat is None or meta.get(PART_META_KEY) != job.record(stat):
        return None
    return meta


# -- the run (on the client) ----------------------------------------------------------------------


@dataclass(frozen=True)
class SplitResult:
    """What :func:`extract_split` wrote.

    Attributes
    ----------
    output : Path
        The feature table.
    rows : int
        Rows written.
    metadata : dict
        The joined metadata (``split`` says how the run was cut).
    maps_path, maps_shape : None
        No feature maps (kept for the single-video form's summary).
    """

    output: Path
    rows: int
    metadata: dict[str, Any]
    maps_path: Path | None = None
    maps_shape: tuple[int, ...] | None = None


def parts_dir(output: str | os.PathLike) -> Path:
    """The folder of a split run's parts: ``<output>.parts`` beside the output.

    Parameters
    ----------
    output : str or PathLike
        The feature table.

    Returns
    -------
    Path
        The parts folder.
    """
    output = Path(output)
    return output.with_name(output.name + ".parts")


def plan_split(
    source: str | os.PathLike, output: str | os.PathLike, settings: ExtractionSettings,
    task_frames: int = DEFAULT_TASK_FRAMES, parts: str | os.PathLike | None = None,
) -> list[TaskJob]:  # fmt: skip
    """Check a split run and name its tasks' parts (no model is built, nothing is written).

    Parameters
    ----------
    source : str or PathLike
        A video or a flow file.
    output : str or PathLike
        The feature table (``.parquet``, ``.csv`` or ``.npz``).
    settings : ExtractionSettings
        The run's settings.
    task_frames : int, default DEFAULT_TASK_FRAMES
        Frames of rows per task.
    parts : str or PathLike, optional
        The folder of the tasks' parts (default :func:`parts_dir`; a batch keeps them under
        ``_parts/`` so that reading its folder as a dataset never picks them up).

    Returns
    -------
    list of TaskJob
        The tasks, in order.

    Raises
    ------
    BadInputError
        A bad output path, an option a split cannot honour, or a bad source or range.
    """
    from .plan import plan_source
    from .tasks import settings_digest
    from .to_file import check_output_path

    check_output_path(output)
    check_splittable(settings)
    checked = plan_source(source, settings)  # the source, range and landmarks, checked now
    sel = checked.source.n_frames, checked.sel.start, checked.sel.stop
    tasks = plan_tasks(sel[0], task_frames, sel[1], sel[2])
    digest = settings_digest(settings)
    folder = parts_dir(output) if parts is None else Path(parts)
    return [TaskJob(str(source), str(folder / f"task-{t.index:05d}-{t.lo}-{t.hi}.parquet"),
                    settings, digest, t) for t in tasks]  # fmt: skip


def extract_split(
    source: str | os.PathLike,
    output: str | os.PathLike,
    settings: ExtractionSettings,
    *,
    run: Any = None,
    **run_options: Any,
) -> SplitResult:
    """Extract one long source on a Dask cluster as tasks, joined into one table.

    Rows equal one run over the whole range (see :func:`plan_tasks`). A task whose part is
    already there with the same settings hash and source size and mtime is not run again (unless
    ``force``); a task whose worker dies is retried ``retries`` times. When every part is there,
    they are joined in order into ``output`` (atomically) and removed.

    Parameters
    ----------
    source : str or PathLike
        A video or a flow file.
    output : str or PathLike
        The feature table: ``.parquet``, ``.csv`` or ``.npz``.
    settings : ExtractionSettings
        The run's settings (:func:`check_splittable` lists what a split refuses).
    run : BatchRun, optional
        How it runs, as a batch does (:class:`~napari_flow_features.extract.batch.BatchRun`):
        ``client`` (default: a new LocalCluster of ``workers``, closed at the end), ``force``,
        ``retries``, ``log`` (the dashboard link and how the run is cut), ``video_progress``
        (``{"done", "total", ...}``: frames whose rows are made, across tasks) and
        ``task_frames`` (default :data:`DEFAULT_TASK_FRAMES`).
    **run_options
        Fields of ``run`` (a thin ``run.replace(...)``).

    Returns
    -------
    SplitResult
        The table, its row count and the joined metadata.

    Raises
    ------
    BadInputError
        A bad input (before anything runs), or tasks that failed (named; finished parts are
        kept for the next run).
    """
    from .cluster import close_client, local_client
    from .tasks import BatchRun, Job

    run = (run or BatchRun()).replace(**run_options)
    if run.progress is not None:
        raise TypeError("extract_split reports frames through video_progress(event), not progress")
    if run.task_frames == 0:
        raise BadInputError("task_frames 0 is no split: extract in one process (extract_to_file)")
    task_frames = run.task_frames or DEFAULT_TASK_FRAMES
    jobs = plan_split(source, output, settings, task_frames)
    video = SplitVideo(Job(str(source), str(output), settings, jobs[0].settings_hash), jobs,
                       task_frames, run.force, batch=False)  # fmt: skip
    if run.log is not None:
        run.log(video.describe().split(": ", 1)[1])
    client = local_client(workers=run.workers) if run.client is None else run.client
    try:
        if run.log is not None and getattr(client, "dashboard_link", None):
            run.log(f"Dask dashboard: {client.dashboard_link}")
        _run_video(client, video, run)
    finally:
        if run.client is None:
            close_client(client)
    if video.result is None:
        raise BadInputError(video.failure())
    return video.result


def _run_video(client: Any, video: SplitVideo, run: Any) -> None:
    """Run a split video's tasks on ``client``, its progress to ``run.video_progress``."""
    from distributed import as_completed

    from .tasks import PROGRESS_TOPIC

    parts = set(video.parts())
    lock, told = threading.Lock(), [-1]

    def tell(event: dict[str, Any]) -> None:
        # From Dask's event thread and from this one: one at a time, never backwards.
        with lock:
            if run.video_progress is not None and event["done"] >= told[0]:
                told[0] = event["done"]
                run.video_progress(event)

    def heard(event: Any) -> None:
        if event[1].get("output") in parts:
            tell(video.progress(event[1]))

    if run.video_progress is not None:
        tell(video.snapshot())
        client.subscribe_topic(PROGRESS_TOPIC, heard)
    futures = video.submit(client, run.retries)
    try:
        for future in as_completed(futures):
            video.hear(future)
            tell(video.snapshot())
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if run.video_progress is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(PROGRESS_TOPIC)
        video.tidy()


def reusable_parts(
    jobs: list[TaskJob], force: bool = False
) -> tuple[dict[int, dict[str, Any]], list[TaskJob]]:
    """Make the parts folder, clear a killed run's temporaries, and sort done from to-do.

    Parameters
    ----------
    jobs : list of TaskJob
        A split run's tasks (:func:`plan_split`).
    force : bool, default False
        Run every task again.

    Returns
    -------
    done : dict
        Task index → the metadata of its finished part (:func:`part_done`).
    todo : list of TaskJob
        The tasks to run.
    """
    from ..io._atomic import remove_stale_partials

    folder = Path(jobs[0].part).parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)  # temporaries of a killed earlier run
    done = {j.task.index: meta for j in jobs if not force and (meta := part_done(j)) is not None}
    return done, [j for j in jobs if j.task.index not in done]


class SplitVideo:
    """One video run as tasks: submits them, hears each result, joins the table at the end.

    The same for ``extract VIDEO -o OUT`` (:func:`extract_split`) and a batch's long video
    (:mod:`~napari_flow_features.extract.split_batch`), whose table also gets a ``source`` column
    and the batch record.

    Parameters
    ----------
    job : Job
        The video, its table and settings.
    tasks : list of TaskJob
        Its tasks (:func:`plan_split`).
    task_frames : int
        The frames per task asked for (recorded in the table's ``split``).
    force : bool
        Run every task again, even those whose part is there.
    batch : bool, default True
        Write the table as a batch does (``source`` column, batch record).
    """

    def __init__(
        self, job: Any, tasks: list[TaskJob], task_frames: int, force: bool, batch: bool = True
    ) -> None:
        from .tasks import _stat

        self.batch = batch
        self.result: SplitResult | None = None
        self.job = job
        self.tasks = tasks
        self.task_frames = task_frames
        self.stat = _stat(job.source)
        done, self.todo = reusable_parts(tasks, force)
        self.rows = {t.part: t.task.rows_frames for t in tasks}
        self.total = sum(self.rows.values())
        self.made = {t.part: t.task.rows_frames for t in tasks if t.task.index in done}
        self.failed: list[tuple[TaskJob, str]] = []
        self.whole: dict[str, Any] | None = None
        self.plan_error: str | None = None
        self.futures: dict[Any, TaskJob | None] = {}
        self.t0 = time.perf_counter()
        # Progress events arrive on Dask's event thread, results on the caller's.
        self.lock = threading.RLock()

    def describe(self) -> str:
        """How the video is cut and what a rerun reuses, for the log.

        Returns
        -------
        str
            ``"<video>: N tasks of about M frames; D done before, T to run"``.
        """
        done = len(self.tasks) - len(self.todo)
        return (f"{Path(self.job.source).name}: {len(self.tasks)} tasks of about "
                f"{self.tasks[0].task.rows_frames} frames; {done} done before, "
                f"{len(self.todo)} to run")  # fmt: skip

    def submit(self, client: Any, retries: int) -> list[Any]:
        """Submit the tasks still to run and the plan's record of the whole video.

        Parameters
        ----------
        client : distributed.Client
            The cluster.
        retries : int
            Retries of a task whose worker died.

        Returns
        -------
        list of Future
            Each is handed back to :meth:`hear` when it finishes.
        """
        self.t0 = time.perf_counter()
        stem = f"{Path(self.job.output).stem}-{self.job.settings_hash[:12]}-{time.monotonic_ns()}"
        whole = client.submit(record_task, self.job.source, self.job.settings, pure=False,
                              retries=retries, key=f"split-record-{stem}")  # fmt: skip
        self.futures = {whole: None}
        for t in self.todo:
            future = client.submit(run_task, t, retries=retries, pure=False,
                                   key=f"split-{t.task.index}-{stem}")  # fmt: skip
            self.futures[future] = t
        return list(self.futures)

    def parts(self) -> list[str]:
        """The parts this video's tasks write (their progress events name them)."""
        return [t.part for t in self.tasks]

    def progress(self, event: dict[str, Any]) -> dict[str, Any]:
        """One task's progress event as the whole video's.

        Parameters
        ----------
        event : dict
            A task's event: ``output`` (its part) and ``done``.

        Returns
        -------
        dict
            ``source``, ``output`` (the video's table), ``done`` and ``total`` frames.
        """
        # A task reads its margins too: its share of its run, in its own rows. Events may arrive
        # after their task's result: a count never goes back.
        part = event["output"]
        rows = self.rows[part]
        made = round(rows * int(event["done"]) / max(int(event["total"]), 1))
        with self.lock:
            self.made[part] = max(self.made.get(part, 0), min(made, rows))
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The video's progress now: rows made (finished tasks whole, running ones their share).

        Returns
        -------
        dict
            ``source``, ``output`` (the video's table), ``done`` and ``total`` frames.
        """
        with self.lock:
            done = sum(self.made.values())
        return {"source": self.job.source, "output": self.job.output, "done": done,
                "total": self.total}  # fmt: skip

    def hear(self, future: Any) -> dict | None:
        """Take one finished future; the video's index record once all of them are in.

        Parameters
        ----------
        future : Future
            One of :meth:`submit`'s futures, finished.

        Returns
        -------
        dict or None
            The batch index record (done, or failed naming the tasks), or ``None`` while
            some futures are still running.
        """
        from .tasks import _message

        task = self.futures.pop(future)
        try:
            result = future.result()
        except Exception as exc:  # its worker died retries + 1 times, or similar
            result = {"error": _message(exc)}
        if task is None:
            self.whole = result.get("record")
            self.plan_error = result.get("error")
        else:
            with self.lock:
                self.made[task.part] = task.task.rows_frames
            if "error" in result:
                self.failed.append((task, result["error"]))
        return None if self.futures else self._finish()

    def failure(self) -> str:
        """What went wrong, each message once with the tasks it came from; what is kept.

        Returns
        -------
        str
            The index's error for the video.
        """
        by_message: dict[str, list[str]] = {}
        for task, message in self.failed:
            t = task.task
            by_message.setdefault(message, []).append(f"{t.index} (frames {t.lo}..{t.hi - 1})")
        parts = [self.plan_error] if self.plan_error else []
        for message, tasks in by_message.items():
            if message != self.plan_error:
                parts.append(f"task {', '.join(tasks)}: {message}")
        if not parts:
            parts = ["the source changed or is gone while it ran"]
        folder = Path(self.tasks[0].part).parent
        kept = sum(Path(t.part).is_file() for t in self.tasks)
        tail = f" ({kept} of {len(self.tasks)} tasks' parts are kept in {folder}: a rerun " \
               "runs only the others)" if kept else ""  # fmt: skip
        return "; ".join(parts) + tail

    def _finish(self) -> dict:
        """Join the parts into the video's table (:attr:`result`), or name what failed."""
        from .tasks import _message, _record, batch_record

        seconds = time.perf_counter() - self.t0
        if self.failed or self.whole is None or self.stat is None:
            return _record(self.job, "failed", seconds=seconds, error=self.failure())
        extra = batch_record(self.job, self.stat) if self.batch else None
        try:
            self.result = _join(self.tasks, self.job.output, self.whole, self.task_frames, seconds,
                                source_column=self.job.source if self.batch else None,
                                extra=extra)  # fmt: skip
        except Exception as exc:  # a part gone or a full disk: this video fails, not the batch
            return _record(self.job, "failed", seconds=seconds, error=_message(exc))
        return _record(self.job, "done", rows=self.result.rows, seconds=seconds, stat=self.stat)

    def tidy(self) -> None:
        """Remove the parts folder if nothing is in it (a run stopped before any part)."""
        _remove_empty(Path(self.tasks[0].part).parent)


def _remove_empty(folder: Path) -> None:
    """Remove a video's parts folder, and the batch's ``_parts/``, when nothing is in them.

    A folder with no part left holds nothing a rerun can use: its task length goes with it.
    """
    if folder.is_dir() and not any(folder.glob("task-*")):
        (folder / SPLIT_PLAN_FILE).unlink(missing_ok=True)
    for path in (folder, folder.parent):
        if path is folder.parent and path.name != BATCH_PARTS_DIR:
            return
        try:
            path.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty
            return


def _join(jobs: list[TaskJob], output: str | os.PathLike, whole: dict[str, Any],
          task_frames: int, seconds: float, *, source_column: str | None = None,
          extra: dict[str, Any] | None = None) -> SplitResult:  # fmt: skip
    """Join the parts in order into ``output`` (atomically), then remove them.

    ``source_column`` (a batch's table) becomes a first ``source`` column; ``extra`` is added to
    the joined metadata (a batch's record).
    """
    metas = []
    for job in jobs:
        meta = part_done(job)
        if meta is None:  # changed or removed while the run went on
            raise BadInputError(f"Part {job.part} is missing or no longer matches; run again")
        metas.append(meta)
    meta = {**joined_metadata(metas, jobs, whole, task_frames, seconds), **(extra or {})}
    output = Path(output)
    rows = _write_joined([j.part for j in jobs], output, meta, source_column)
    folder = Path(jobs[0].part).parent
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # a batch's _parts/, once its last video is joined
        if folder.parent.name == BATCH_PARTS_DIR:
            folder.parent.rmdir()
    return SplitResult(output, rows, meta)


def joined_metadata(metas: Sequence[dict[str, Any]], jobs: Sequence[TaskJob],
                    whole: dict[str, Any], task_frames: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    """The joined table's metadata: the plan's record of the whole range, the passes run, sums.

    Parameters
    ----------
    metas : sequence of dict
        Each part's metadata, in order.
    jobs : sequence of TaskJob
        The tasks, in order.
    whole : dict
        :func:`whole_record` (what one run over the range would record).
    task_frames : int
        The frames per task asked for.
    seconds : float
        Wall time of the whole split run.

    Returns
    -------
    dict
        The model and flow description (as every part records it), ``whole``, the encoder passes
        the tasks ran (``chunks`` in the range's frames), row counts and encoder time summed, and
        ``split``: the task length and each task's ``[lo, hi, start, stop]``.
    """
    start = int(whole["start_frame"])
    chunks = [[lo + m["start_frame"] - start, hi + m["start_frame"] - start]
              for m in metas for lo, hi in m["chunks"]]  # fmt: skip
    rows = sum(j.task.rows_frames for j in jobs)
    summed = {k: sum(int(m.get(k, 0)) for m in metas)
              for k in ("missing_landmark_rows", "outside_frame_rows")}  # fmt: skip
    per_part = set(metas[0]) - set(whole) - {PART_META_KEY}
    return {
        **{k: metas[0][k] for k in per_part},
        **whole,
        **summed,
        "chunks": chunks,
        "n_windows": len(chunks),
        "chunk_length": max(hi - lo for lo, hi in chunks),
        "encoder_frames_per_output_frame": sum(hi - lo for lo, hi in chunks) / max(1, rows),
        "flow_reused": False,
        "seconds": round(seconds, 3),
        "encoder_seconds": round(sum(float(m.get("encoder_seconds", 0)) for m in metas), 3),
        "frames_per_second": round(rows / seconds, 3) if seconds else None,
        "split": {"task_frames": int(task_frames), "lead": LEAD, "tail": TAIL,
                  "tasks": [[j.task.lo, j.task.hi, j.task.start, j.task.stop] for j in jobs]},
    }  # fmt: skip


def _write_joined(
    parts: list[str], output: Path, meta: dict[str, Any], source_column: str | None = None
) -> int:
    """Stream the parts into ``output`` (Parquet or CSV), or write an ``.npz``; the row count."""
    import numpy as np
    import pyarrow.parquet as pq

    from ..io._atomic import atomic_write_path
    from ..io.table_stream import TableStreamWriter
    from ..io.tables import feature_columns

    if output.suffix.lower() == ".npz":
        table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        cols = feature_columns(table)
        values = table[cols].to_numpy(np.float32) if cols else np.zeros((len(table), 0))
        with atomic_write_path(output) as tmp:
            np.savez(tmp, frame=table["frame"].to_numpy(), features=values)
        return len(table)
    writer = TableStreamWriter(output)
    try:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=4096):
                block = batch.to_pandas()
                if source_column is not None:
                    block.insert(0, "source", source_column)
                writer.write(block)
        writer.close(meta)
    except BaseException:
        writer.discard()
        raise
    return writer.rows
