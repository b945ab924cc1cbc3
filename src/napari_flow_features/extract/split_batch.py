"""A batch's long videos across idle workers: each one cut into tasks, joined into its table.

:func:`~napari_flow_features.extract.batch.extract_many` runs one Dask task per video, so a
study of three one-hour recordings on a 32-core node would keep three workers busy. When the
cluster has more workers than videos to run (or ``task_frames`` is given), :func:`split_videos`
cuts every long video into the tasks of :mod:`~napari_flow_features.extract.split` and
:class:`SplitVideo` runs them among the other videos' tasks, then joins its parts into the
video's table. The table is the one :func:`~napari_flow_features.extract.batch.extract_video`
would write: the same rows (see :func:`~napari_flow_features.extract.split.plan_tasks`), a
``source`` column and the batch record, so a rerun skips it. The parts wait in
``_parts/<video>/`` beside the tables (a killed run resumes with the tasks that had not
finished) and are removed once joined.

Pure (no Qt). TensorFlow loads only in the workers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from .split import (
    BATCH_PARTS_DIR,
    DEFAULT_TASK_FRAMES,
    TaskJob,
    _join,
    plan_split,
    plan_tasks,
    record_task,
    reusable_parts,
    run_task,
    split_obstacles,
)


def batch_task_frames(task_frames: int | None, workers: int, videos: int) -> int:
    """Frames per task for a batch's videos, or 0 to run each video as one task.

    Parameters
    ----------
    task_frames : int or None
        What was asked: ``None`` (automatic), 0 (never split) or frames per task.
    workers : int
        The cluster's workers.
    videos : int
        The videos that will run (not those skipped).

    Returns
    -------
    int
        ``task_frames`` when given; automatically
        :data:`~napari_flow_features.extract.split.DEFAULT_TASK_FRAMES` when there are more
        workers than videos, else 0.
    """
    if task_frames is not None:
        return int(task_frames)
    return DEFAULT_TASK_FRAMES if workers > videos else 0


def parts_folder(output: str) -> Path:
    """Where a batch video's parts wait: ``_parts/<table stem>/`` beside its table.

    Parameters
    ----------
    output : str
        The video's table.

    Returns
    -------
    Path
        The folder.
    """
    path = Path(output)
    return path.parent / BATCH_PARTS_DIR / path.stem


def split_videos(
    jobs: list[Any], task_frames: int, explicit: bool, log: Callable[[str], None] | None = None
) -> dict[str, list[TaskJob]]:
    """Plan the tasks of every job's video that is long enough to make more than one.

    Parameters
    ----------
    jobs : list of Job
        The batch's videos to run.
    task_frames : int
        Frames per task (0: none is split).
    explicit : bool
        Whether the user asked for the split (then settings a split cannot honour are an
        error); an automatic split leaves such a video whole and says why through ``log``.
    log : callable, optional
        Hears which videos are split and which are left whole.

    Returns
    -------
    dict
        Output → its tasks, for the videos that are split.

    Raises
    ------
    BadInputError
        ``explicit`` and a video's settings that a split cannot honour.
    """
    if not task_frames:
        return {}
    planned: dict[str, list[TaskJob]] = {}
    for job in jobs:
        if _task_count(job, task_frames) < 2:
            continue  # short, or a bad source: its one task says what is wrong
        obstacles = split_obstacles(job.settings)
        if obstacles:
            if explicit:
                raise BadInputError(f"{job.source}: a split run cannot: {'; '.join(obstacles)}")
            if log is not None:
                log(f"{Path(job.source).name}: runs as one task, as a split cannot: "
                    f"{'; '.join(obstacles)}")  # fmt: skip
            continue
        planned[job.output] = plan_split(job.source, job.output, job.settings, task_frames,
                                         parts_folder(job.output))  # fmt: skip
    return planned


def _task_count(job: Any, task_frames: int) -> int:
    """How many tasks the job's video would make (0 when its source cannot be read)."""
    from .plan import plan_source

    try:
        checked = plan_source(job.source, job.settings)
    except BadInputError:
        return 0
    sel = checked.sel
    return len(plan_tasks(checked.source.n_frames, task_frames, sel.start, sel.stop))


def check_split_jobs(jobs: list[Any]) -> None:
    """Refuse, before any work, a batch asked to split whose settings a split cannot honour.

    Parameters
    ----------
    jobs : list of Job
        The batch's videos.

    Raises
    ------
    BadInputError
        The first video whose settings a split cannot honour, named.
    """
    from .split import check_splittable

    for job in jobs:
        try:
            check_splittable(job.settings)
        except BadInputError as exc:
            raise BadInputError(f"{job.source}: {exc}") from exc


class SplitVideo:
    """One batch video run as tasks: submits them, hears each result, joins the table at the end.

    Parameters
    ----------
    job : Job
        The batch's job for the video.
    tasks : list of TaskJob
        Its tasks (:func:`split_videos`).
    task_frames : int
        The frames per task asked for (recorded in the table's ``split``).
    force : bool
        Run every task again, even those whose part is there.
    """

    def __init__(self, job: Any, tasks: list[TaskJob], task_frames: int, force: bool) -> None:
        from .tasks import _stat

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
        self.made[part] = max(self.made.get(part, 0), made)
        return {"source": self.job.source, "output": self.job.output,
                "done": sum(self.made.values()), "total": self.total}  # fmt: skip

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
        if kept:
            tail = f" ({kept} of {len(self.tasks)} tasks' parts are kept in {folder}: a rerun " \
                   "runs only the others)"  # fmt: skip
        else:
            tail = ""
            _remove_empty(folder)
        return "; ".join(parts) + tail

    def _finish(self) -> dict:
        """Join the parts into the video's table, or name what failed."""
        from .tasks import _message, _record, batch_record

        seconds = time.perf_counter() - self.t0
        if self.failed or self.whole is None or self.stat is None:
            return _record(self.job, "failed", seconds=seconds, error=self.failure())
        try:
            joined = _join(self.tasks, self.job.output, self.whole, self.task_frames, seconds,
                           source_column=self.job.source,
                           extra=batch_record(self.job, self.stat))  # fmt: skip
        except Exception as exc:
            return _record(self.job, "failed", seconds=seconds, error=_message(exc))
        return _record(self.job, "done", rows=joined.rows, seconds=seconds, stat=self.stat)


def _remove_empty(folder: Path) -> None:
    """Remove a video's parts folder, and the batch's ``_parts/``, when nothing is in them."""
    for path in (folder, folder.parent):
        if path is folder.parent and path.name != BATCH_PARTS_DIR:
            return
        try:
            path.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty
            return


def drop_stale_parts(folder: Path) -> None:
    """Remove the parts a killed split run left for an output now written whole.

    Parameters
    ----------
    folder : Path
        The output's parts folder (:func:`parts_folder`, or ``split.parts_dir`` for ``-o``).
    """
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        _remove_empty(folder)
