"""``flow-features extract`` over many videos (docs/batch.md): the command-line face of
:func:`napari_flow_features.extract.batch.extract_many`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BadInputError

#: Exit status when the batch ran but some videos failed (2 is "could not start": bad input).
EXIT_SOME_FAILED = 3

# Command-line options that are batch settings, and the extractor config fields they set.
_OPTIONS = ("post_encoder", "interpolation", "interpolate_missing", "flow_method", "max_side",
            "start", "stop", "points_format", "keypoints", "individuals", "min_confidence",
            "max_gap")  # fmt: skip
_CONFIG_OPTIONS = ("endpoint", "clip_length", "stride", "runtime", "windowing", "chunk_length")
_SINGLE_ONLY = ("output", "keep_flow", "flow_cache", "points")


def add_cluster_arguments(group: Any) -> None:
    """``--force``, ``--retries``, ``--scheduler``, ``--scheduler-file`` (extract and flow)."""
    group.add_argument("--force", action="store_true", help="redo videos already done")
    group.add_argument("--retries", type=int, default=2,
                       help="times a video is retried when its Dask worker dies (2)")  # fmt: skip
    group.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786) "
                       "instead of a LocalCluster on this machine")  # fmt: skip
    group.add_argument("--scheduler-file", help="scheduler file of a running Dask cluster "
                       "(dask scheduler --scheduler-file, dask-jobqueue, dask-mpi)")  # fmt: skip


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The many-video options of ``extract``."""
    group = parser.add_argument_group(
        "many videos (docs/batch.md)",
        "several videos, globs or folders (searched recursively), or --manifest; one Parquet "
        "table per video in --output-dir, an index (_index/index.parquet, index.csv), finished videos "
        "skipped on a rerun; exit status 3 when some videos failed",
    )
    group.add_argument(
        "--output-dir", help="folder for one <video>.parquet per video and the index"
    )
    group.add_argument("--manifest", help="CSV: video[,points][,output][,any setting per row]")
    add_cluster_arguments(group)


def is_batch(args: argparse.Namespace) -> bool:
    """Whether ``extract`` was asked for many videos (else the single-video form runs)."""
    import glob

    if len(args.sources) == 1 and glob.has_magic(args.sources[0]):
        return not Path(args.sources[0]).exists()  # a pattern, not a file named with brackets
    return bool(args.output_dir or args.manifest or len(args.sources) != 1)


def _given(args: argparse.Namespace, parser_defaults: dict, name: str) -> bool:
    value = getattr(args, name, None)
    return value is not None and value != parser_defaults.get(name)


def settings_from_args(args: argparse.Namespace, defaults: dict) -> Any:
    """Batch settings: the ``--config`` YAML (extractor fields and its ``extraction:`` section),
    then every option given on the command line with a value other than its default.
    """
    from ..extract.batch import BatchSettings
    from . import _parse_roi

    options = {name: getattr(args, name) for name in _OPTIONS if _given(args, defaults, name)}
    if args.roi is not None:
        options["roi"] = _parse_roi(args.roi)
    extractor: dict = {n: getattr(args, n) for n in _CONFIG_OPTIONS if _given(args, defaults, n)}
    if args.checkpoint:
        extractor["weights"] = {"source": "deepmind", "checkpoint": args.checkpoint}
    elif args.registry_dir:
        extractor["weights"] = {"source": "registry", "registry_dir": args.registry_dir,
                                "model_name": args.model_name, "version": args.version}  # fmt: skip
    elif _given(args, defaults, "seed"):
        extractor["weights"] = {"source": "random", "seed": args.seed}
    return BatchSettings.from_yaml(args.config, extractor=extractor, **options)


def _run_with_bar(run: Any, args: argparse.Namespace) -> int:
    """Connect (or not) to a cluster, run ``run(client, progress, log, video_progress)`` under one bar across
    videos, print the summary; 0 all done or skipped, 3 some failed.
    """
    from tqdm import tqdm

    from ..extract.batch import close_client, connect

    if args.retries < 0:
        raise BadInputError(f"--retries must be 0 or more, got {args.retries}")
    client = None
    if args.scheduler or args.scheduler_file:
        client = connect(args.scheduler, args.scheduler_file)
    bar = None

    def progress(done: int, total: int, record: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="videos", unit="video", dynamic_ncols=True)
        bar.update(done - bar.n)
        if record["status"] == "failed":
            tqdm.write(f"  failed: {record['source']}: {record['error']}", file=sys.stderr)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    running: dict[str, str] = {}

    def video_progress(event: dict) -> None:
        # Per-video progress from the workers beside the bar: "session3 45%, session4 10%".
        name = Path(event["output"]).stem
        if event["done"] >= event["total"]:
            running.pop(name, None)
        else:
            running[name] = f"{name} {100 * event['done'] // max(event['total'], 1)}%"
        if bar is not None:
            bar.set_postfix_str(", ".join(list(running.values())[-3:]))

    try:
        if client is not None:
            log(f"Dask dashboard: {client.dashboard_link}")
        index = run(client, progress, None if client is not None else log, video_progress)
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            close_client(client)
    counts = index["status"].value_counts()
    print(f"{len(index)} videos: {counts.get('done', 0)} done, {counts.get('skipped', 0)} "
          f"skipped, {counts.get('failed', 0)} failed; index: {Path(args.output_dir) / '_index' / 'index.csv'}")  # fmt: skip
    failed = index[index["status"] == "failed"]
    for row in failed.itertuples():
        print(f"  FAILED {row.source}: {row.error}")
    return EXIT_SOME_FAILED if len(failed) else 0


@contextlib.contextmanager
def settings_file_for_one_video(args: argparse.Namespace, defaults: dict) -> Iterator[None]:
    """Let the single-video form read a settings file with an ``extraction:`` section (what the
    dock saves): its options fill the command-line options left at their defaults, and
    ``args.config`` points, for the run, at a temporary copy holding only the extractor fields.
    """
    import tempfile

    import yaml

    try:
        loaded = yaml.safe_load(Path(args.config).read_text()) if args.config else None
    except (OSError, yaml.YAMLError):
        loaded = None  # the usual config reading names the problem
    if not isinstance(loaded, dict) or "extraction" not in loaded:
        yield
        return
    from ..extract.batch import BatchSettings

    settings = BatchSettings.from_yaml(args.config)  # checked whole, errors name the file
    for name, value in settings.to_dict().items():
        if name == "extractor" or _given(args, defaults, name) or not hasattr(args, name):
            continue
        if name == "roi":
            value = None if value is None else ",".join(str(v) for v in value)
        setattr(args, name, value)
    with tempfile.TemporaryDirectory(prefix="flow-features-config-") as folder:
        path = Path(folder) / "extractor.yaml"
        path.write_text(yaml.safe_dump(settings.extractor), encoding="utf-8")
        original, args.config = args.config, str(path)
        try:
            yield
        finally:
            args.config = original


def cmd_extract_batch(args: argparse.Namespace, defaults: dict) -> int:
    """Run the batch; 0 when every video is done or skipped, 3 when some failed."""
    from ..extract.batch import extract_many

    if not args.sources and not args.manifest:
        raise BadInputError("Give a video (or several videos, folders, globs) or --manifest")
    if not args.output_dir:
        raise BadInputError(
            "Many videos need --output-dir DIR (one table per video); one video takes -o FILE"
        )
    for name in _SINGLE_ONLY:
        if getattr(args, name, None):
            flag = "-o/--output" if name == "output" else "--" + name.replace("_", "-")
            hint = " (give each video's landmarks in a --manifest 'points' column)" * (
                name == "points"
            )
            raise BadInputError(f"{flag} is for one video, not a batch{hint}")
    settings = settings_from_args(args, defaults)

    def run(client: Any, progress: Any, log: Any, video_progress: Any) -> Any:
        return extract_many(
            args.sources, args.output_dir, settings, client=client, force=args.force,
            retries=args.retries, progress=progress, manifest=args.manifest, log=log,
            video_progress=video_progress,
        )  # fmt: skip

    return _run_with_bar(run, args)


def cmd_flow_batch(args: argparse.Namespace) -> int:
    """``flow --input-dir DIR --output-dir DIR`` on Dask: skip what is done, keep going, index."""
    from ..extract.batch import flow_many

    if not Path(args.input_dir).is_dir():
        raise BadInputError(f"Input folder not found: {args.input_dir}")
    settings = {"method": args.method, "preset": args.preset, "max_side": args.max_side,
                "scale": args.scale, "workers": args.workers}  # fmt: skip

    def run(client: Any, progress: Any, log: Any, video_progress: Any) -> Any:
        return flow_many([args.input_dir], args.output_dir, settings, client=client,
                         force=args.force, retries=args.retries, progress=progress, log=log)  # fmt: skip

    return _run_with_bar(run, args)
