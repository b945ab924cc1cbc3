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
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
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
        result = extract_features(job.source, extractor, settings, row_sink=writer.write,
                                  progress=progress, flow_progress=progress)  # fmt: skip
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


def part_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """A part's metadata (from its Parquet footer); ``None`` when missing or unreadable.

    Parameters
    ----------
    path : str or PathLike
        The part.

    Returns
    -------
    dict or None
        The run metadata of the task, with its :data:`PART_META_KEY` record.
    """
    import pyarrow.parquet as pq

    from ..io.tables import PARQUET_META_KEY

    try:
        raw = (pq.read_metadata(path).metadata or {}).get(PARQUET_META_KEY)
        meta = json.loads(raw) if raw else None
    except (OSError, ValueError, TypeError):
        return None
    return meta if isinstance(meta, dict) else None


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
    from .tasks import _stat

    meta = part_metadata(job.part)
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
    task_frames: int = DEFAULT_TASK_FRAMES,
    client: Any = None,
    force: bool = False,
    retries: int = 2,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
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
    task_frames : int, default DEFAULT_TASK_FRAMES
        Frames of rows per task.
    client : distributed.Client, optional
        The cluster (default: a new LocalCluster from
        :func:`~napari_flow_features.extract.batch.local_client`, closed at the end).
    force : bool, default False
        Run every task again.
    retries : int, default 2
        Retries of a task whose worker died.
    progress : callable, optional
        ``(done, total)``: frames whose rows are made, across tasks.
    log : callable, optional
        Hears the dashboard link and how the run is cut.

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

    t0 = time.perf_counter()
    jobs = plan_split(source, output, settings, task_frames)
    done, todo = reusable_parts(jobs, force)
    if log is not None:
        log(f"{len(jobs)} tasks of about {jobs[0].task.rows_frames} frames; "
            f"{len(done)} done before, {len(todo)} to run")  # fmt: skip
    own = client is None
    client = local_client() if own else client
    try:
        if log is not None and getattr(client, "dashboard_link", None):
            log(f"Dask dashboard: {client.dashboard_link}")
        record = client.submit(record_task, str(source), settings, pure=False,
                               retries=retries)  # fmt: skip
        _run_tasks(client, jobs, todo, retries, progress)
        planned = record.result()
        if "error" in planned:
            raise BadInputError(planned["error"])
        whole = planned["record"]
    finally:
        if own:
            close_client(client)
    return _join(jobs, output, whole, task_frames, time.perf_counter() - t0)


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


def _run_tasks(client: Any, jobs: list[TaskJob], todo: list[TaskJob], retries: int,
               progress: Callable[[int, int], None] | None) -> None:  # fmt: skip
    """Run ``todo`` on ``client``; progress across every task; failures raised together."""
    from distributed import as_completed

    from .tasks import PROGRESS_TOPIC

    total = sum(j.task.rows_frames for j in jobs)
    running = {j.part: 0 for j in todo}
    before = total - sum(j.task.rows_frames for j in todo)

    rows = {j.part: j.task.rows_frames for j in todo}

    def heard(event: Any) -> None:
        info = event[1]
        if info.get("output") in running and progress is not None:
            # A task reads its margins too: its share of its run, in its own rows. Events may
            # arrive after their task's result: a count never goes back.
            part = info["output"]
            made = round(rows[part] * int(info["done"]) / max(int(info["total"]), 1))
            running[part] = max(running[part], made)
            progress(before + sum(running.values()), total)

    if progress is not None:
        progress(before, total)
        client.subscribe_topic(PROGRESS_TOPIC, heard)
    futures = {client.submit(run_task, j, retries=retries, pure=False,
                             key=f"split-{j.task.index}-{Path(j.part).parent.name}-"
                                 f"{j.settings_hash[:12]}-{time.monotonic_ns()}"): j
               for j in todo}  # fmt: skip
    failed: list[str] = []
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the worker died retries + 1 times, or similar
                result = {"error": f"{type(exc).__name__}: {exc}"}
            if "error" in result:
                failed.append(f"task {job.task.index} (frames {job.task.lo}..{job.task.hi - 1}): "
                              f"{result['error']}")  # fmt: skip
            running[job.part] = job.task.rows_frames
            if progress is not None:
                progress(before + sum(running.values()), total)
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        if progress is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(PROGRESS_TOPIC)
    if failed:
        raise BadInputError(
            f"{len(failed)} of {len(jobs)} tasks failed (the finished ones are kept in "
            f"{Path(jobs[0].part).parent}; a rerun runs only the others): " + "; ".join(failed)
        )


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
