"""Options and the progress display shared by the many-video forms of ``extract`` and ``flow``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ._common import EXIT_SOME_FAILED, console


def add_cluster_arguments(group: Any) -> None:
    """``--force``, ``--retries``, ``--scheduler``, ``--scheduler-file`` (extract and flow).

    Parameters
    ----------
    group : argparse._ArgumentGroup or argparse.ArgumentParser
        Where the options go.
    """
    group.add_argument("--force", action="store_true", help="redo videos already done")
    group.add_argument("--retries", type=int, default=2,
                       help="times a video is retried when its Dask worker dies (2)")  # fmt: skip
    group.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786) "
                       "instead of a LocalCluster on this machine")  # fmt: skip
    group.add_argument("--scheduler-file", help="scheduler file of a running Dask cluster "
                       "(dask scheduler --scheduler-file, dask-jobqueue, dask-mpi)")  # fmt: skip


def cluster_client(args: argparse.Namespace, local: bool = True) -> Any:
    """The client the options ask for: a running cluster, ``--workers`` locally, or ``None``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of :func:`add_cluster_arguments`.
    local : bool, default True
        Start the LocalCluster ``--workers`` asks for now; ``False``: leave it to the run, which
        starts it only when some video needs work (a batch).

    Returns
    -------
    distributed.Client or None
        ``None``: the run starts the default LocalCluster itself, when some work needs it.

    Raises
    ------
    BadInputError
        A negative ``--retries``, ``--workers`` with a running cluster, or a scheduler that
        cannot be reached.
    """
    from ..extract.batch import connect, local_client

    if args.retries < 0:
        raise BadInputError(f"--retries must be 0 or more, got {args.retries}")
    remote = args.scheduler or args.scheduler_file
    workers = getattr(args, "cluster_workers", None)  # extract's --workers
    if remote and workers:
        raise BadInputError("--workers sizes a LocalCluster; a running cluster has its own workers")
    if remote:
        return connect(args.scheduler, args.scheduler_file)
    if workers and local:
        return local_client(workers=workers)
    return None


def run_on_cluster(run: Callable[..., Any], args: argparse.Namespace) -> int:
    """Run a batch under one progress bar across videos and print its summary.

    Parameters
    ----------
    run : callable
        ``run(client, progress, log, video_progress)`` returning the batch index (a DataFrame
        with ``source``, ``status``, ``error``); ``client`` is ``None`` for a LocalCluster.
    args : argparse.Namespace
        The parsed options of :func:`add_cluster_arguments` and ``--output-dir``.

    Returns
    -------
    int
        0 when every video is done or skipped, 3 when some failed.
    """
    from ..extract.batch import close_client

    client = cluster_client(args, local=False)  # a LocalCluster starts when work needs it
    bar: Any = None
    done_before = 0

    def progress(done: int, total: int, record: dict[str, Any] | None) -> None:
        nonlocal bar, done_before
        if bar is None:  # at the first skipped video, or when the work starts
            bar = console.tqdm(total=total, desc="videos", unit="video")
        bar.update(done - done_before)
        done_before = done
        if record is not None and record["status"] == "failed":
            console.warning(f"  failed: {record['source']}: {record['error']}")

    running: dict[str, str] = {}

    def video_progress(event: dict[str, Any]) -> None:
        # Per-video progress from the workers beside the bar: "session3 45%, session4 10%".
        name = Path(event["output"]).stem
        if event["done"] >= event["total"]:
            running.pop(name, None)
        else:
            running[name] = f"{name} {100 * event['done'] // max(event['total'], 1)}%"
        if bar is not None:
            bar.set_postfix_str(", ".join(list(running.values())[-3:]))

    try:
        # The run says the dashboard's link (when there is work) and how it cuts the videos.
        index = run(client, progress, console.status, video_progress)
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            close_client(client)
    counts = index["status"].value_counts()
    console.result(f"{len(index)} videos: {counts.get('done', 0)} done, {counts.get('skipped', 0)} "
                   f"skipped, {counts.get('failed', 0)} failed; index: "
                   f"{Path(args.output_dir) / '_index' / 'index.csv'}")  # fmt: skip
    failed = index[index["status"] == "failed"]
    for row in failed.itertuples():
        console.warning(f"  FAILED {row.source}: {row.error}", stdout=True)
    return EXIT_SOME_FAILED if len(failed) else 0
