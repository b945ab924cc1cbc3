"""A batch's long videos across idle workers: each one cut into tasks, joined into its table.

:func:`~napari_flow_features.extract.batch.extract_many` runs one Dask task per video, so a
study of three one-hour recordings on a 32-core node would keep three workers busy. When the
cluster has more workers than videos to run (or ``task_frames`` is given), :func:`split_videos`
cuts every long video into the tasks of :mod:`~napari_flow_features.extract.split` and
:class:`~napari_flow_features.extract.split.SplitVideo` runs them among the other videos'
tasks, then joins its parts into the video's table. The table is the one :func:`~napari_flow_features.extract.batch.extract_video`
would write: the same rows (see :func:`~napari_flow_features.extract.split.plan_tasks`), a
``source`` column and the batch record, so a rerun skips it. The parts wait in
``_parts/<video>/`` beside the tables (a killed run resumes with the tasks that had not
finished) and are removed once joined.

Pure (no Qt). TensorFlow loads only in the workers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from .split import (
    BATCH_PARTS_DIR,
    DEFAULT_TASK_FRAMES,
    GRID,
    SPLIT_PLAN_FILE,
    TaskJob,
    _remove_empty,
    plan_split,
    plan_tasks,
    split_obstacles,
)

#: The shortest task an automatic split makes (its 120 frames of margins cost 20 % there).
MIN_AUTO_TASK_FRAMES = 600


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


def auto_task_frames(frames: Sequence[int], workers: int, longest: int) -> int:
    """The task length of an automatic split: the frames to run shared out over the workers.

    Parameters
    ----------
    frames : sequence of int
        Frames each video to run has (in its range).
    workers : int
        The cluster's workers.
    longest : int
        The longest task (:data:`~napari_flow_features.extract.split.DEFAULT_TASK_FRAMES`).

    Returns
    -------
    int
        ``sum(frames) / workers``, at least :data:`MIN_AUTO_TASK_FRAMES` and at most ``longest``,
        rounded up to the 8-frame grid: one video of 12 000 frames on 16 workers makes 16 tasks
        of 752 frames rather than 7 of about 1 800 with 9 workers idle.
    """
    share = -(-sum(frames) // max(1, workers))
    length = min(longest, max(MIN_AUTO_TASK_FRAMES, share))
    return -(-length // GRID) * GRID


def split_videos(
    jobs: list[Any], task_frames: int, explicit: bool, log: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> dict[str, tuple[int, list[TaskJob]]]:  # fmt: skip
    """Plan the tasks of every job's video that is long enough to make more than one.

    Parameters
    ----------
    jobs : list of Job
        The batch's videos to run.
    task_frames : int
        Frames per task (0: none is split); for an automatic split with ``workers``, the longest
        task (:func:`auto_task_frames`).
    explicit : bool
        Whether the user asked for the split (then settings a split cannot honour are an
        error); an automatic split leaves such a video whole and says why through ``log``.
    log : callable, optional
        Hears which videos are split and which are left whole.
    workers : int, optional
        The cluster's workers, which an automatic split gives work to.

    Returns
    -------
    dict
        Output → its task length and tasks, for the videos that are split.

    Raises
    ------
    BadInputError
        ``explicit`` and a video's settings that a split cannot honour.
    """
    if not task_frames:
        return {}
    ranges = {job.output: _range(job) for job in jobs}
    if not explicit and workers:
        frames = [stop - start for _, start, stop in filter(None, ranges.values())]
        task_frames = auto_task_frames(frames, workers, task_frames)
    planned: dict[str, tuple[int, list[TaskJob]]] = {}
    for job in jobs:
        where = ranges[job.output]
        # A rerun cuts a video as its first run did (the videos left to share out may differ),
        # so the parts it finished fit.
        length = task_frames if explicit else _kept_length(job) or task_frames
        if where is None or len(plan_tasks(where[0], length, where[1], where[2])) < 2:
            continue  # short, or a bad source: its one task says what is wrong
        obstacles = split_obstacles(job.settings)
        if obstacles:
            if explicit:
                raise BadInputError(f"{job.source}: a split run cannot: {'; '.join(obstacles)}")
            if log is not None:
                log(f"{Path(job.source).name}: runs as one task, as a split cannot: "
                    f"{'; '.join(obstacles)}")  # fmt: skip
            continue
        tasks = plan_split(job.source, job.output, job.settings, length,
                           parts_folder(job.output))  # fmt: skip
        _keep_length(job, length)
        planned[job.output] = (length, tasks)
    return planned


def _kept_length(job: Any) -> int | None:
    """The task length a video's earlier split run used (its parts fit it), if any."""
    try:
        plan = json.loads((parts_folder(job.output) / SPLIT_PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    length = plan.get("task_frames") if isinstance(plan, dict) else None
    same = isinstance(plan, dict) and plan.get("settings_hash") == job.settings_hash
    return length if same and isinstance(length, int) and length > 0 else None


def _keep_length(job: Any, length: int) -> None:
    """Record the task length beside the video's parts, for a rerun after a kill."""
    from ..io.json_files import write_json

    folder = parts_folder(job.output)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SPLIT_PLAN_FILE, {"task_frames": length,
                                          "settings_hash": job.settings_hash})  # fmt: skip


def _range(job: Any) -> tuple[int, int, int] | None:
    """The job's video's frame count and range (None when its source cannot be read)."""
    from .plan import plan_source

    try:
        checked = plan_source(job.source, job.settings)
    except BadInputError:
        return None
    return checked.source.n_frames, checked.sel.start, checked.sel.stop


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
