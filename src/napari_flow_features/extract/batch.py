"""Many videos, one resumable run: one Parquet table per video and an index, on Dask.

:func:`extract_many` expands the sources (paths, globs, folders, or a manifest CSV), names one
output per video, skips the videos already done with the same settings (the output's own metadata
records the settings hash and the source's size and modification time), and runs one Dask task per
remaining video (tasks pass paths, never frames). A failing video is recorded and the others go on;
a worker that dies is survived by Dask's retries, and the skip rule makes every rerun safe. The
index (``_index/index.parquet`` and ``_index/index.csv``, rewritten atomically as videos finish)
records every video's status. The index sits in a folder whose name starts with ``_`` so that
``pandas.read_parquet(output_dir)`` (pyarrow skips such paths) and
``dask.dataframe.read_parquet(output_dir + "/*.parquet")`` read exactly the per-video tables.

Pure (no Qt). TensorFlow loads only in the process that runs a video (a Dask worker, or the caller
for :func:`extract_video`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ExtractionSettings
from ..errors import BadInputError
from .cluster import (  # noqa: F401 (importable from here since the batch had them)
    THREADS_PER_VIDEO,
    close_client,
    connect,
    local_client,
    local_cluster_shape,
)
from .tasks import (  # noqa: F401 (importable from here since the batch had them)
    BATCH_META_KEY,
    PROGRESS_TOPIC,
    BatchRun,
    Job,
    Progress,
    WorkerProgress,
    _extractor_for,
    _message,
    _record,
    _stat,
    _worker_progress,
    batch_record,
    footer_metadata,
    settings_digest,
)

INDEX_DIR = "_index"  #: ``_index/index.parquet`` and ``_index/index.csv``: not part of the dataset
STATUSES = ("done", "skipped", "failed")
INDEX_COLUMNS = ("source", "output", "status", "rows", "seconds", "settings_hash", "source_size",
                 "source_mtime_ns", "error")  # fmt: skip
#: Fields of a manifest row (besides extractor config fields, which override the YAML's).
MANIFEST_COLUMNS = ("video", "points", "output")


#: The settings of a batch are :class:`~napari_flow_features.config.ExtractionSettings`; this
#: module's earlier name for them stays importable.
BatchSettings = ExtractionSettings


# -- which videos ---------------------------------------------------------------------------------


def _video_extensions() -> tuple[str, ...]:
    from ..io.video import VIDEO_EXTENSIONS

    return tuple(VIDEO_EXTENSIONS)


def expand_sources(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """List the videos that paths, glob patterns and folders name.

    Video paths from paths, glob patterns and folders (searched recursively for files with a
    video extension), in a stable order, each once. A path that does not exist, a pattern that
    matches nothing or a folder with no video is an error naming it.
    """
    exts = _video_extensions()
    found: list[Path] = []
    for item in sources:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise BadInputError(f"No file matches {text!r}")
            for match in matches:
                found.extend(_videos_in(match, exts) if match.is_dir() else [match])
        else:
            path = Path(text)
            if path.is_dir():
                videos = _videos_in(path, exts)
                if not videos:
                    raise BadInputError(
                        f"No video ({', '.join(exts)}) in folder {path} or its subfolders"
                    )
                found.extend(videos)
            elif path.is_file():
                found.append(path)
            else:
                raise BadInputError(f"Video not found: {path}")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise BadInputError("No videos to extract")
    return list(unique)


def _videos_in(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
    )


def output_names(videos: Sequence[Path], suffix: str = ".parquet") -> list[str]:
    """Name one output file per video.

    One ``.parquet`` name per video, from its file name; videos with the same name take as
    many of their parent folders as tell them apart (``a__s1__trial.parquet``), then their
    extension. Deterministic: the same list always gives the same names.
    """
    # Same folder and name, another extension: the extension tells them apart.
    same_stem = _clashes([str(p.resolve().with_suffix("")) for p in videos])
    stems = [
        f"{p.stem}_{p.suffix.lstrip('.').lower()}" if str(p.resolve().with_suffix("")) in same_stem
        else p.stem
        for p in videos
    ]  # fmt: skip
    parts = [
        [*list(p.resolve().parent.parts[1:]), stem] for p, stem in zip(videos, stems, strict=True)
    ]
    names = [_name(ps, 1) for ps in parts]
    for depth in range(2, max(len(ps) for ps in parts) + 1):
        clashing = _clashes(names)
        if not clashing:
            break
        names = [
            _name(ps, depth) if n in clashing else n for n, ps in zip(names, parts, strict=True)
        ]
    return [f"{n}{suffix}" for n in names]


def _name(parts: list[str], depth: int) -> str:
    return "__".join(parts[-depth:])


def _clashes(names: list[str]) -> set[str]:
    seen: set[str] = set()
    dup: set[str] = set()
    for n in names:
        key = n.lower()  # case-insensitive file systems
        (dup if key in seen else seen).add(key)
    return {n for n in names if n.lower() in dup}


def read_manifest(
    path: str | os.PathLike, settings: ExtractionSettings
) -> list[tuple[Path, str | None, ExtractionSettings]]:
    """Read a manifest CSV's rows, each with its own settings.

    Rows of a manifest CSV: ``video`` (required), optional ``points`` and ``output``, and any
    extraction setting or extractor config field as a per-row override (an empty cell keeps the
    batch's value). Relative paths are relative to the manifest's folder. Errors name the row
    (numbered as in a spreadsheet: the header is row 1).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Manifest not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise BadInputError(f"Manifest is not a readable CSV ({exc}): {path}") from exc
    if "video" not in table.columns:
        raise BadInputError(
            f"Manifest {path} has no 'video' column (columns: {', '.join(table.columns)}); "
            "one row per video with its path in 'video'"
        )
    if table.empty:
        raise BadInputError(f"Manifest {path} has no rows")
    base = path.parent
    rows = []
    for i, row in enumerate(table.to_dict("records")):
        where = f"manifest {path.name} row {i + 2}"
        video = row.get("video", "").strip()
        if not video:
            raise BadInputError(f"{where}: the 'video' cell is empty")
        video_path = Path(video) if Path(video).is_absolute() else base / video
        if not video_path.is_file():
            raise BadInputError(f"{where}: video not found: {video_path}")
        overrides = {}
        for key, value in row.items():
            if key in ("video", "output") or str(value).strip() == "":
                continue
            if key == "points":
                p = Path(value) if Path(value).is_absolute() else base / value
                if not p.exists():
                    raise BadInputError(f"{where}: points file not found: {p}")
                overrides["points"] = str(p)
                continue
            overrides[key] = _cell(value)
        try:
            row_settings = settings.with_overrides(overrides, where) if overrides else settings
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{where}: {exc}") from exc
        output = row.get("output", "").strip() or None
        if output is not None and not output.lower().endswith(".parquet"):
            raise BadInputError(f"{where}: output must end in .parquet, got {output!r}")
        rows.append((video_path, output, row_settings))
    return rows


def _cell(text: str) -> Any:
    """A manifest cell as YAML reads it (numbers, true/false, null, lists like [0, 0, 32, 32])."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def plan_jobs(
    sources: Sequence[str | os.PathLike] | None,
    output_dir: str | os.PathLike,
    settings: ExtractionSettings,
    manifest: str | os.PathLike | None = None,
) -> list[Job]:
    """Plan a batch: one job per video, each with its output and settings hash.

    The jobs of a batch: sources expanded (or the manifest's rows), one output each in
    ``output_dir`` (named by :func:`output_names` unless the manifest gives one). Two videos
    sent to the same output is an error naming both.
    """
    output_dir = Path(output_dir)
    if manifest is not None:
        if sources:
            raise BadInputError("Give videos or --manifest, not both")
        rows = read_manifest(manifest, settings)
    else:
        rows = [(p, None, settings) for p in expand_sources(sources or [])]
    names = output_names([r[0] for r in rows])
    jobs: list[Job] = []
    taken: dict[str, str] = {}
    hashes: dict[ExtractionSettings, str] = {}
    for (video, output, job_settings), name in zip(rows, names, strict=True):
        out = Path(output) if output else Path(name)
        out = out if out.is_absolute() else output_dir / out
        key = str(out.resolve()).lower()
        if key in taken:
            raise BadInputError(f"{taken[key]} and {video} would both be written to {out}")
        taken[key] = str(video)
        digest = hashes.get(job_settings) or settings_digest(job_settings)
        hashes[job_settings] = digest
        jobs.append(Job(str(video), str(out), job_settings, digest))
    return jobs


# -- one video ------------------------------------------------------------------------------------


def table_batch_record(path: str | os.PathLike) -> dict | None:
    """Read the batch record a finished table carries.

    The batch record a finished table carries (settings hash, source size and mtime, rows),
    read from the Parquet footer only; ``None`` when the file is missing, unreadable or was not
    written by a batch.
    """
    found = footer_metadata(path)
    record = found[0].get(BATCH_META_KEY) if found is not None else None
    if found is None or not isinstance(record, dict):
        return None
    return {**record, "rows": found[1]}


def is_done(job: Job) -> dict | None:
    """Return the table's batch record when the video need not run again, else None.

    The finished table's batch record when ``job``'s output exists with the same settings hash
    and the same source size and modification time (so the video need not run again).
    """
    record = table_batch_record(job.output)
    stat = _stat(job.source)
    if record is None or stat is None:
        return None
    if record.get("settings_hash") != job.settings_hash:
        return None
    if [record.get("source_size"), record.get("source_mtime_ns")] != list(stat):
        return None
    return record


def extract_video(job: Job, progress: WorkerProgress | None = None) -> dict:
    """Extract one video to its Parquet table.

    Extract one video to ``job.output`` (Parquet, written block by block and renamed into place
    when complete, with a ``source`` column and the batch record in its metadata). Returns the
    index record; any error is raised.
    """
    from ..io.table_stream import TableStreamWriter
    from .pipeline import extract_features
    from .plan import plan_source

    t0 = time.perf_counter()
    s = job.settings
    if not isinstance(s, ExtractionSettings):
        raise TypeError(f"An extraction job needs ExtractionSettings, not {type(s).__name__}")
    stat = _stat(job.source)
    if stat is None:
        raise BadInputError(f"Video not found: {job.source}")
    # The source, its selection and its landmarks are checked before the model is built: a bad
    # video fails in milliseconds.
    checked = plan_source(job.source, s)
    extractor = _extractor_for(s.extractor)
    source_name = str(job.source)

    def sink(block: pd.DataFrame) -> None:
        block.insert(0, "source", source_name)
        writer.write(block)

    Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    writer = TableStreamWriter(job.output)
    try:
        result = extract_features(
            job.source,
            extractor,
            s,
            points=checked.landmarks,
            row_sink=sink,
            progress=progress.encoder if progress is not None else None,
            flow_progress=progress.flow if progress is not None else None,
        )
        writer.close({**result.metadata, **batch_record(job, stat)})
    except BaseException:
        writer.discard()
        raise
    return _record(job, "done", rows=writer.rows, seconds=time.perf_counter() - t0, stat=stat)


def run_job(job: Job) -> dict:
    """Run :func:`extract_video` as a Dask task that never raises.

    :func:`extract_video` as a Dask task: a video that cannot be extracted (bad input, a corrupt
    file, any error of the pipeline) is a ``failed`` record with its message, not an exception, so
    the batch goes on; a dying worker process is left to Dask's retries.
    """
    t0 = time.perf_counter()
    try:
        return extract_video(job, progress=_worker_progress(job))
    except Exception as exc:
        return _record(job, "failed", seconds=time.perf_counter() - t0, error=_message(exc))


# -- the batch ------------------------------------------------------------------------------------


def extract_many(
    sources: Sequence[str | os.PathLike] | None,
    output_dir: str | os.PathLike,
    settings: ExtractionSettings | dict | None = None,
    run: BatchRun | None = None,
    *,
    manifest: str | os.PathLike | None = None,
    **run_options: Any,
) -> pd.DataFrame:
    """Extract many videos to one Parquet table each, skipping those already done.

    Extract every video of ``sources`` (paths, globs, folders; or ``manifest``, a CSV) to one
    Parquet table each in ``output_dir``; returns the index (also written to
    ``output_dir/_index/index.parquet`` and ``index.csv``, one row per video: ``source``, ``output``,
    ``status`` done/skipped/failed, ``rows``, ``seconds``, ``settings_hash``, ``source_size``,
    ``source_mtime_ns``, ``error``).

    A video whose output exists with the same settings hash and the same source size and mtime is
    skipped unless ``force``. Videos run as Dask tasks on the cluster of ``run`` (a
    :class:`BatchRun`; ``run_options`` are its fields, e.g. ``client=``, ``force=``,
    ``progress=``, a thin ``run.replace(...)``). Bad sources or settings raise
    :class:`BadInputError` before anything runs; a failing video only marks its row failed.

    When the cluster has more workers than videos to run, long videos are cut into tasks that
    give every worker work (:func:`~napari_flow_features.extract.split_batch.auto_task_frames`),
    run among the others and joined into their tables (equal rows; resumable per task; see
    :mod:`~napari_flow_features.extract.split_batch`). ``task_frames`` N > 0 splits into tasks of
    N frames whatever the workers; 0 never splits.
    """
    from ..io._atomic import ensure_output_dir

    if settings is None:
        settings = ExtractionSettings()
    elif isinstance(settings, dict):
        settings = ExtractionSettings.from_dict(settings)
    run = (run or BatchRun()).replace(**run_options)
    jobs = plan_jobs(sources, output_dir, settings, manifest)
    if run.task_frames:  # asked for: what a split cannot honour is refused before any work
        from .split_batch import check_split_jobs

        check_split_jobs(jobs)
    output_dir = ensure_output_dir(output_dir)  # made once every input is checked
    return _run_batch(jobs, output_dir, _BatchKind("extract", is_done, run_job), run)


@dataclass(frozen=True)
class _BatchKind:
    """What a batch does per video: its name (in Dask task keys), its skip rule and its task."""

    name: str
    done: Callable[[Job], dict | None]
    task: Callable[[Job], dict]


def _run_batch(jobs: list[Job], output_dir: Path, kind: _BatchKind, run: BatchRun) -> pd.DataFrame:
    """Run a batch's jobs on Dask, keeping the index.

    Skip what ``kind.done`` says is done, run the rest as ``kind.task`` on ``run.client``
    (default: a new LocalCluster), keep the index; shared by :func:`extract_many` and
    :func:`flow_many`.
    """
    from ..io._atomic import remove_stale_partials

    for folder in sorted({Path(j.output).parent for j in jobs}):
        remove_stale_partials(folder)  # temporaries of a killed earlier run
    index = _Index(output_dir, jobs)
    todo = _skip_done(jobs, kind.done, run, index)
    index.write()
    if not todo:  # nothing to run: no cluster started
        return index.frame()
    client = local_client(workers=run.workers) if run.client is None else run.client
    units: list[Any] = []
    try:
        if run.log is not None and getattr(client, "dashboard_link", None):
            run.log(f"Dask dashboard: {client.dashboard_link}")
        units = _units(client, todo, kind, run)
        if run.progress is not None:  # the work starts: listeners can show it from now on
            run.progress(index.finished, index.total, None)
        if run.video_progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, _relay(units, run.video_progress))
        _run_on(client, units, run, index)
    finally:
        if run.video_progress is not None:
            with contextlib.suppress(Exception):  # the cluster may be gone already
                client.unsubscribe_topic(PROGRESS_TOPIC)
        index.write()
        if run.client is None:
            close_client(client)
        for folder in sorted({Path(j.output).parent for j in todo}):
            remove_stale_partials(folder)  # of a worker that died mid-video (its task was retried)
        for unit in units:
            unit.tidy()  # a split video stopped before any part: no empty folder left
    return index.frame()


def _skip_done(
    jobs: list[Job], done: Callable[[Job], dict | None], run: BatchRun, index: _Index
) -> list[Job]:
    """Mark the jobs ``done`` finds finished as skipped (unless forced); return the rest."""
    todo: list[Job] = []
    for job in jobs:
        record = None if run.force else done(job)
        if record is None:
            todo.append(job)
            continue
        index.set(_record(job, "skipped", rows=record["rows"]))
        if run.progress is not None:
            run.progress(index.finished, index.total, index.records[job.output])
    return todo


class _WholeVideo:
    """One video run as one task (the batch's usual unit; see ``split.SplitVideo``)."""

    def __init__(self, job: Job, kind: _BatchKind, index: int) -> None:
        self.job, self.kind, self.index = job, kind, index

    def submit(self, client: Any, retries: int) -> list[Any]:
        # pure=False: a rerun of the same job (after --force) runs again rather than reusing a
        # result.
        return [client.submit(self.kind.task, self.job, retries=retries, pure=False,
                              key=f"{self.kind.name}-{self.index}-{_key(self.job)}")]  # fmt: skip

    def parts(self) -> list[str]:
        return [self.job.output]

    def tidy(self) -> None:
        """Nothing to tidy: a video run whole leaves no parts."""

    def progress(self, event: dict) -> dict:
        return event

    def hear(self, future: Any) -> dict:
        try:
            record = future.result()
        except Exception as exc:  # the task's worker died retries + 1 times, or similar
            return _record(self.job, "failed", error=_message(exc))
        if self.kind.name == "extract" and record.get("status") == "done":
            from .split_batch import drop_stale_parts, parts_folder

            drop_stale_parts(parts_folder(self.job.output))  # of a killed split run of it
        return record


def _units(client: Any, todo: list[Job], kind: _BatchKind, run: BatchRun) -> list[Any]:
    """The batch's units of work: each video whole, or (extraction) a long one split in tasks."""
    if kind.name != "extract":
        return [_WholeVideo(job, kind, i) for i, job in enumerate(todo)]
    from .split import SplitVideo
    from .split_batch import batch_task_frames, split_videos

    workers = len(client.nthreads())
    task_frames = batch_task_frames(run.task_frames, workers, len(todo))
    planned = split_videos(todo, task_frames, run.task_frames is not None, run.log, workers)
    units = [SplitVideo(job, planned[job.output][1], planned[job.output][0], run.force)
             if job.output in planned else _WholeVideo(job, kind, i)
             for i, job in enumerate(todo)]  # fmt: skip
    for unit in units:
        if run.log is not None and isinstance(unit, SplitVideo):
            run.log(unit.describe())
    return units


def _relay(units: list[Any], listener: Callable[[dict], None]) -> Callable[[Any], None]:
    """A Dask event handler passing each worker's progress on as its video's progress."""
    owners = {part: unit for unit in units for part in unit.parts()}

    def heard(event: Any) -> None:
        unit = owners.get(event[1].get("output"))
        if unit is not None:
            listener(unit.progress(event[1]))

    return heard


def _run_on(client: Any, units: list[Any], run: BatchRun, index: _Index) -> None:
    from distributed import as_completed

    futures = {future: unit for unit in units for future in unit.submit(client, run.retries)}
    try:
        for future in as_completed(futures):
            record = futures[future].hear(future)
            if record is None:  # a split video with tasks still running
                continue
            index.set(record)
            index.write(throttle=True)
            if run.progress is not None:
                run.progress(index.finished, index.total, record)
    except BaseException:
        client.cancel(list(futures))
        raise


def _flow_computer(settings: ExtractionSettings | dict[str, Any]) -> Any:
    from ..flow.compute import OpticalFlowComputer

    if not isinstance(settings, dict):
        raise TypeError(f"A flow job needs OpticalFlowComputer arguments, not {settings!r}")
    return OpticalFlowComputer(**settings)


def _flow_done(job: Job) -> dict | None:
    """Return the flow file's record when it need not be computed again, else None.

    The flow file's record when it is complete for this computer (the rule of
    ``OpticalFlowComputer.is_complete``: same method, preset, parameters, size and frame count)
    and the video still has the size and modification time recorded beside it.
    """
    try:
        complete = _flow_computer(job.settings).is_complete(job.source, job.output)
    except Exception:  # an unreadable video: not done, its task says why
        return None
    if not complete:
        return None
    stamp = _read_stamp(job.output)
    if stamp is None or stamp.get("settings_hash") != job.settings_hash:
        return None
    if [stamp.get("source_size"), stamp.get("source_mtime_ns")] != list(_stat(job.source) or []):
        return None
    import numpy as np

    return {"rows": int(np.load(job.output, mmap_mode="r", allow_pickle=False).shape[0])}


def _stamp_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(f"_{output.stem}.batch.json")


def _read_stamp(output: str | os.PathLike) -> dict | None:
    try:
        return json.loads(_stamp_path(output).read_text())
    except (OSError, ValueError):
        return None


def run_flow_job(job: Job) -> dict:
    """Compute one video's flow as a Dask task that never raises.

    Flow of one video as a Dask task (``.npy`` + sidecar, written atomically by
    :class:`~napari_flow_features.flow.compute.OpticalFlowComputer`), then a small stamp
    (``_<stem>.batch.json``: settings hash, the video's size and mtime) for the skip rule. A video
    that cannot be read is a ``failed`` record.
    """
    from ..io._atomic import atomic_write_path

    t0 = time.perf_counter()
    try:
        stat = _stat(job.source)
        if stat is None:
            raise BadInputError(f"Video not found: {job.source}")
        flow = _flow_computer(job.settings).compute(job.source, job.output)
        rows = int(flow.shape[0])
        del flow  # the memory map: nothing of the file stays open
        stamp = {"settings_hash": job.settings_hash, "source_size": stat[0],
                 "source_mtime_ns": stat[1], "settings": job.settings}  # fmt: skip
        with atomic_write_path(_stamp_path(job.output)) as tmp:
            tmp.write_text(json.dumps(stamp), encoding="utf-8")
    except Exception as exc:
        return _record(job, "failed", seconds=time.perf_counter() - t0, error=_message(exc))
    return _record(job, "done", rows=rows, seconds=time.perf_counter() - t0, stat=stat)


def flow_many(
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    flow_settings: dict | None = None,
    run: BatchRun | None = None,
    **run_options: Any,
) -> pd.DataFrame:
    """Compute the optical flow of many videos, skipping those already done.

    Optical flow of every video of ``sources`` (paths, globs, folders) as ``<name>.npy`` in
    ``output_dir``, with :func:`extract_many`'s skip rule, keep-going and Dask behaviour; returns
    the index (also ``output_dir/_index/index.parquet`` and ``index.csv``; ``rows`` = flow fields).
    ``flow_settings``: :class:`~napari_flow_features.flow.compute.OpticalFlowComputer` arguments
    (``method``, ``preset``, ``max_side``, ``scale``, ``workers``). ``run`` and ``run_options``:
    how it runs, as for :func:`extract_many` (``task_frames`` does not apply: a flow file is
    written by one task).
    """
    from .. import __version__
    from ..io._atomic import ensure_output_dir

    flow_settings = dict(flow_settings or {})
    _flow_computer(flow_settings)  # bad settings: named before anything runs
    digest = hashlib.sha256(
        json.dumps(
            {
                **{k: v for k, v in flow_settings.items() if k != "workers"},  # same flow
                "package_version": __version__,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    run = (run or BatchRun()).replace(**run_options)
    if run.task_frames or run.video_progress is not None:
        raise BadInputError("A flow batch writes each video's flow in one task: no task_frames, "
                            "no video_progress")  # fmt: skip
    videos = expand_sources(sources)
    output_dir = ensure_output_dir(output_dir)  # made once every input is checked
    jobs = [Job(str(v), str(output_dir / n), flow_settings, digest)
            for v, n in zip(videos, output_names(videos, ".npy"), strict=True)]  # fmt: skip
    return _run_batch(jobs, output_dir, _BatchKind("flow", _flow_done, run_flow_job), run)


def _key(job: Job) -> str:
    return hashlib.sha1(f"{job.source}|{job.output}|{job.settings_hash}".encode()).hexdigest()[:12]


class _Index:
    """The batch index, rewritten atomically (Parquet and CSV) as videos finish."""

    def __init__(self, output_dir: Path, jobs: list[Job]) -> None:
        self.output_dir = output_dir
        # Keyed by output (unique): a manifest may list one video twice, with other settings.
        self.records: dict[str, dict] = {j.output: _record(j, "pending") for j in jobs}
        self.total = len(jobs)
        self.finished = 0
        self._last = 0.0

    def set(self, record: dict) -> None:
        if self.records[record["output"]]["status"] == "pending":
            self.finished += 1
        self.records[record["output"]] = record

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(list(self.records.values()), columns=list(INDEX_COLUMNS))
        frame["rows"] = frame["rows"].astype("Int64")
        for col in ("source_size", "source_mtime_ns"):
            frame[col] = frame[col].astype("Int64")
        return frame

    def write(self, throttle: bool = False) -> None:
        # At most about once a second while running: thousands of videos must not mean
        # thousands of full rewrites in a burst; the last write is never throttled.
        if throttle and time.monotonic() - self._last < 1.0:
            return
        from ..io._atomic import atomic_write_path

        frame = self.frame()
        folder = self.output_dir / INDEX_DIR
        folder.mkdir(exist_ok=True)
        with atomic_write_path(folder / "index.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
        with atomic_write_path(folder / "index.csv") as tmp:
            frame.to_csv(tmp, index=False)
        self._last = time.monotonic()


def read_index(output_dir: str | os.PathLike) -> pd.DataFrame:
    """The index of a batch run in ``output_dir``."""
    path = Path(output_dir) / INDEX_DIR / "index.parquet"
    if not path.is_file():
        raise BadInputError(f"No batch index in {output_dir} (expected {path})")
    return pd.read_parquet(path)
