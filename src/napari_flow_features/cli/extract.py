"""``flow-features extract``: per-frame I3D features of one source, or of many videos on Dask.

One source with ``-o FILE`` runs the single-video form
(:func:`~napari_flow_features.extract.to_file.extract_to_file`); several sources, a folder, a glob,
``--manifest`` or ``--output-dir`` run the batch
(:func:`~napari_flow_features.extract.batch.extract_many`, docs/batch.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..config import AUTO_MAX_SIDE
from ..errors import BadInputError
from ._cluster import add_cluster_arguments, run_on_cluster
from ._common import (
    NON_NEGATIVE_INT,
    POINTS_FORMATS,
    POSITIVE_INT,
    console,
    defaults_of,
    extractor_for,
    max_side_option,
    parse_roi,
)

logger = logging.getLogger(__name__)

# Command-line options that are batch settings, and the extractor config fields they set.
_OPTIONS = ("post_encoder", "interpolation", "interpolate_missing", "flow_method",
            "start", "stop", "points_format", "keypoints", "individuals", "min_confidence",
            "max_gap", "points", "keep_flow", "keep_flow_dtype", "flow_cache", "predict")  # fmt: skip
_CONFIG_OPTIONS = ("endpoint", "clip_length", "stride", "runtime", "windowing", "chunk_length",
                   "stream", "fusion", "precision")  # fmt: skip
_SINGLE_ONLY = ("output", "keep_flow", "flow_cache", "points")


def add_landmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The landmark options of ``extract`` (pose-tracker formats, keypoints, confidence, gaps).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument(
        "--points-format",
        choices=POINTS_FORMATS,
        default="auto",
        help="format of --points (default: auto-detected from the file)",
    )
    parser.add_argument(
        "--keypoints", help="comma-separated keypoints to use (default: all), e.g. snout,left_ear"
    )
    parser.add_argument("--individuals", help="comma-separated individuals to use (default: all)")
    parser.add_argument(
        "--min-confidence",
        type=float,
        help="points below this confidence/likelihood count as missing (default: keep all); "
        "points a person placed (SLEAP user instances) are never masked",
    )
    parser.add_argument(
        "--max-gap",
        type=int,
        help="fill gaps of at most this many missing frames linearly (default: no filling)",
    )
    parser.add_argument(
        "--accept-length-mismatch",
        action="store_true",
        help="use tracks whose length differs from the video's by more than 1%% of its frames "
        "(or 10 frames): they start with the video; its frames after them get NaN rows",
    )


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The many-video options of ``extract``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``extract`` parser.
    """
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
    group.add_argument(
        "--workers", dest="cluster_workers", type=POSITIVE_INT,
        help="worker processes of the LocalCluster on this machine (default: one per 4 cores), "
        "each with an equal share of the cores",
    )  # fmt: skip
    group.add_argument(
        "--task-frames", type=NON_NEGATIVE_INT, default=None,
        help="split long videos across Dask workers: tasks of about N frames, joined into one "
        "table equal to one run's (resumable per task). Default with -o: no split, or 1800 frames "
        "(1 min at 30 fps) when a cluster option (--workers, --scheduler, --scheduler-file) is "
        "given; with --output-dir, when the cluster has more workers than videos to run: tasks "
        "that give every worker work (600 to 1800 frames); 0: never split (docs/batch.md)",
    )  # fmt: skip


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``extract`` sub-command.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-commands.

    Returns
    -------
    argparse.ArgumentParser
        The sub-command's parser.
    """
    p: argparse.ArgumentParser = sub.add_parser(
        "extract", help="per-frame I3D features of a video or flow file, or of many videos "
        "(--output-dir, docs/batch.md)",
    )  # fmt: skip
    p.add_argument("sources", nargs="*", metavar="source",
                   help="video (flow is computed) or flow (.npy, .npz, .flo folder); for a batch: "
                        "videos, globs or folders")  # fmt: skip
    p.add_argument("--post-encoder", choices=("none", "gap", "point"), default="gap")
    p.add_argument("--points", help="landmarks for point: our table (frame, x, y[, track_id]) or "
                   "pose-tracker output (DeepLabCut .h5/.csv, SLEAP .slp/.h5, Lightning Pose .csv)")  # fmt: skip
    p.add_argument("--interpolation", choices=("bilinear", "nearest"), default="bilinear")
    p.add_argument("--interpolate-missing", action="store_true",
                   help="fill landmark gaps linearly between keyframes")  # fmt: skip
    add_landmark_arguments(p)
    p.add_argument("--flow-method", default="dis",
                   choices=("dis", "farneback", "tvl1", "tvl1-skimage"),
                   help="flow method for a video source (DIS: fastest, see docs/performance.md)")  # fmt: skip
    p.add_argument("--max-side", type=max_side_option, default=None,
                   help="resize frames so the longest side is at most this before flow and encoder; "
                        f"auto: {AUTO_MAX_SIDE} px for a video (0.25x the pixels of 640x480), a flow "
                        "file's own size; 0: the video's size")  # fmt: skip
    p.add_argument("--roi", help="x,y,w,h: only this region of the frame (video pixels)")
    p.add_argument("--start", type=int, help="first frame (default 0)")
    p.add_argument("--stop", type=int, help="frame after the last (default: the video's end)")
    p.add_argument("--keep-flow", help="also write the flow to this .npy (streamed)")
    p.add_argument("--keep-flow-dtype", choices=("float16", "uint8", "float32"), default="float16",
                   help="stored flow type: float16, uint8 quantised like DeepMind, or float32")  # fmt: skip
    p.add_argument("--flow-cache",
                   help="folder keeping the last video's flow (up to 2 GB) so the next run with "
                        "the same video, method and selection skips it")  # fmt: skip
    p.add_argument("--runtime", choices=("auto", "tensorflow", "openvino", "torch"),
                   help="inference runtime (default auto: PyTorch on a CUDA GPU when both are "
                        "there, else OpenVINO when installed)")  # fmt: skip
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16", "int8"),
                   help="encoder precision (default float32): mixed_bfloat16 on CPUs with native "
                        "bf16; int8 (OpenVINO + NNCF, the [int8] extra) calibrated on this video's "
                        "first chunk, marked in the table (docs/performance.md)")  # fmt: skip
    p.add_argument("--windowing", choices=("chunked", "sliding"),
                   help="chunked (default, seamless) or the seed's sliding windows")  # fmt: skip
    p.add_argument("--chunk-length", type=int, help="frames per encoder pass in chunked mode")
    p.add_argument("--config", help="settings YAML file (see docs/configuration.md)")
    p.add_argument("--endpoint", help="encoder end point (e.g. Mixed_4f)")
    p.add_argument("--clip-length", type=POSITIVE_INT, help="frames per clip (sliding windowing)")
    p.add_argument("--stride", type=POSITIVE_INT, help="frames between clips (sliding windowing)")
    p.add_argument("--weights", choices=("pretrained", "random"),
                   help="pretrained (default: DeepMind's flow_imagenet / rgb_imagenet, downloaded "
                        "and cached on first use) or random (every output is marked)")  # fmt: skip
    # None, not 0: a seed from --config must not be overridden by an option nobody gave.
    p.add_argument("--seed", type=int, default=None, help="seed for random weights (default 0)")
    p.add_argument("--checkpoint", help="DeepMind checkpoint prefix (weights fetch prints it); "
                   "the flow one for two-stream")  # fmt: skip
    p.add_argument("--rgb-checkpoint", help="two-stream: the RGB checkpoint prefix")
    p.add_argument("--stream", choices=("flow", "rgb", "two-stream"),
                   help="I3D stream (default flow): rgb needs no optical flow; two-stream runs "
                        "both (docs/streams.md)")  # fmt: skip
    p.add_argument("--fusion", choices=("concat", "average"),
                   help="two-stream: concatenate (flow_f..., rgb_f... columns, default) or average")  # fmt: skip
    p.add_argument("--predict", action="store_true",
                   help="add each window's top-5 Kinetics classes (Logits end point, DeepMind "
                        "weights; frames at least 193 px: use --max-side 224 or more)")  # fmt: skip
    p.add_argument("--registry-dir", help="take the model from this registry")
    p.add_argument("--model-name", default="i3d-flow")
    p.add_argument("--version", help="registry version (default: newest)")
    p.add_argument("--output", "-o", help="features .parquet, .csv or .npz (one source)")
    add_batch_arguments(p)
    p.set_defaults(func=run, extract_defaults=defaults_of(p))
    return p


def run(args: argparse.Namespace) -> int:
    """One source with ``-o``: the single-video form; otherwise the batch.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status: 0, or 3 when some videos of a batch failed.
    """
    if is_batch(args):
        return run_batch(args, args.extract_defaults)
    if not args.output:
        raise BadInputError("Give -o FILE for one source, or --output-dir DIR for a batch")
    args.source = args.sources[0]
    task_frames = split_task_frames(args)
    if task_frames and args.task_frames is None:  # implied by a cluster option, as in a batch
        from ..extract.split import split_obstacles

        obstacles = split_obstacles(settings_from_args(args, args.extract_defaults))
        if obstacles:
            console.status("runs as one task in this process, as a split cannot: "
                           + "; ".join(obstacles))  # fmt: skip
            task_frames = 0
    if task_frames:
        return run_split(args, args.extract_defaults, task_frames)
    return run_single(args, args.extract_defaults)


def split_task_frames(args: argparse.Namespace) -> int:
    """Frames per task when the single-video form runs split across workers, else 0.

    Split when ``--task-frames N`` (N > 0) is given, or when a cluster is asked for
    (``--workers``, ``--scheduler``, ``--scheduler-file``) with :data:`DEFAULT_TASK_FRAMES`
    (then settings a split cannot honour run the video as one task in this process, said);
    ``--task-frames 0`` never splits.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        Frames per task, or 0 for one run in this process.
    """
    from ..extract.split import DEFAULT_TASK_FRAMES

    if args.task_frames is not None:
        return int(args.task_frames)
    cluster = args.cluster_workers or args.scheduler or args.scheduler_file
    return DEFAULT_TASK_FRAMES if cluster else 0


def run_split(args: argparse.Namespace, defaults: dict[str, Any], task_frames: int) -> int:
    """One source into ``args.output`` as tasks on Dask workers, joined into one table.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line, with ``source`` set.
    defaults : dict
        The parser's defaults.
    task_frames : int
        Frames per task.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..extract.batch import close_client
    from ..extract.split import extract_split, plan_split
    from ._cluster import cluster_client

    settings = settings_from_args(args, defaults)
    plan_split(args.source, args.output, settings, task_frames)  # every input checked first
    client = cluster_client(args)
    bar = console.bar("I3D features", "frame")
    try:
        done = extract_split(
            args.source, args.output, settings, task_frames=task_frames, client=client,
            force=args.force, retries=args.retries, log=console.status,
            video_progress=lambda event: bar(event["done"], event["total"]),
        )  # fmt: skip
    finally:
        bar.close()
        if client is not None:
            close_client(client)
    _print_single(args, done, settings)
    split = done.metadata["split"]
    console.result(f"split into {len(split['tasks'])} tasks of about {split['task_frames']} frames")
    return 0


def _weights_of(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any] | None:
    """The extractor's ``weights`` setting the options ask for (None: none given)."""
    if args.checkpoint:
        return {"source": "deepmind", "checkpoint": args.checkpoint,
                "rgb_checkpoint": args.rgb_checkpoint}  # fmt: skip
    if args.registry_dir:
        return {"source": "registry", "registry_dir": args.registry_dir,
                "model_name": args.model_name, "version": args.version}  # fmt: skip
    weights: dict[str, Any] = {}
    if _given(args, defaults, "seed"):
        weights = {"source": "random", "seed": args.seed}
    if args.weights:
        weights["source"] = args.weights
    return weights or None


def run_single(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    """Features of ``args.source`` into ``args.output``, every input checked before any work.

    The settings are built as for a batch (:func:`settings_from_args`: ``--config``, then every
    option given); the source, its selection and its landmarks are checked before the model is
    built.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line, with ``source`` set.
    defaults : dict
        The parser's defaults.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..extract.plan import check_asked_options, plan_source
    from ..extract.split import parts_dir
    from ..extract.split_batch import drop_stale_parts
    from ..extract.to_file import check_output_path, extract_to_file

    output = check_output_path(args.output)
    settings = settings_from_args(args, defaults)
    checked = plan_source(args.source, settings)  # read and checked before the model is built
    check_asked_options(settings, asked_options(args, defaults), checked.source.kind)
    console.status("building the I3D model ...")
    extractor = extractor_for(settings.extractor)
    flow_bar = console.bar("optical flow", "field")
    bar = console.bar("I3D features", "frame")
    try:
        done = extract_to_file(
            args.source, extractor, output, settings, points=checked.landmarks, progress=bar,
            flow_progress=flow_bar, status=lambda text: console.status(f"  {text}"),
        )  # fmt: skip
    finally:
        flow_bar.close()
        bar.close()
    drop_stale_parts(parts_dir(output))  # of a killed split run of this output
    _print_single(args, done, settings)
    return 0


def _print_single(args: argparse.Namespace, done: Any, settings: Any) -> None:
    meta = done.metadata
    if meta.get("random_weights"):
        console.warning(f"WARNING: {meta['weights_note']}")
    console.result(f"wrote {done.output}: {done.rows} rows, post-encoder {settings.post_encoder}, end "
                   f"point {meta['endpoint']}, {meta['windowing']} ({meta['n_windows']} encoder "
                   f"passes, {meta['encoder_frames_per_output_frame']:.2f} per frame), runtime "
                   f"{meta.get('runtime_used', '?')} on {meta.get('runtime_device', '?')}"
                   f"{'' if meta.get('precision', 'float32') == 'float32' else ' in ' + meta['precision']}, "
                   f"{meta['frames_per_second']} frames/s")  # fmt: skip
    if done.maps_path is not None:
        console.result(f"feature maps: {done.maps_path} {done.maps_shape}")
    if settings.keep_flow is not None:
        console.result(f"flow kept: {settings.keep_flow} ({settings.keep_flow_dtype})")
    for pred in meta.get("predictions", [])[:3]:
        best = ", ".join(f"{n} {p:.2f}" for n, p in zip(pred["labels"], pred["probs"], strict=True))
        console.result(f"Kinetics, window at frame {pred['start_frame']}: {best}")
    if settings.post_encoder == "point":
        console.result(f"landmark rows without a point: {meta['missing_landmark_rows']}; outside "
                       f"the frame: {meta['outside_frame_rows']}; positions interpolated: "
                       f"{meta['interpolated_landmark_positions']}")  # fmt: skip


def is_batch(args: argparse.Namespace) -> bool:
    """Whether ``extract`` was asked for many videos (else the single-video form runs).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    bool
        True for several sources, a glob, ``--output-dir`` or ``--manifest``.
    """
    import glob

    if len(args.sources) == 1 and glob.has_magic(args.sources[0]):
        return not Path(args.sources[0]).exists()  # a pattern, not a file named with brackets
    return bool(args.output_dir or args.manifest or len(args.sources) != 1)


def _given(args: argparse.Namespace, parser_defaults: dict[str, Any], name: str) -> bool:
    value = getattr(args, name, None)
    return value is not None and value != parser_defaults.get(name)


def settings_from_args(args: argparse.Namespace, defaults: dict[str, Any]) -> Any:
    """The run's settings: the ``--config`` YAML, then every option given with a non-default value.

    The single-video form and the batch build their settings here, the same way: a settings file
    saved by the napari dock (``extraction:`` section) or a plain extractor config, then the
    options the command line gives.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.
    defaults : dict
        The parser's defaults (options equal to them count as not given).

    Returns
    -------
    ExtractionSettings
        The extractor fields and the ``extraction:`` section of the YAML, overridden by the
        options.
    """
    from ..config import ExtractionSettings
    from ..extract.plan import check_asked_fields

    options = {name: getattr(args, name) for name in _OPTIONS if _given(args, defaults, name)}
    if args.roi is not None:
        options["roi"] = parse_roi(args.roi)
    if args.max_side is not None:  # given: auto, a side, or 0 for the video's own size
        options["max_side"] = args.max_side or None
    if getattr(args, "accept_length_mismatch", False):
        options["allow_length_mismatch"] = True
    extractor: dict[str, Any] = {
        n: getattr(args, n) for n in _CONFIG_OPTIONS if _given(args, defaults, n)
    }
    weights = _weights_of(args, defaults)
    if weights is not None:
        extractor["weights"] = weights
    if args.predict and not args.endpoint:
        extractor["endpoint"] = "Logits"  # the Kinetics classifier's output
    settings = ExtractionSettings.from_yaml(args.config, extractor=extractor, **options)
    check_asked_fields(settings.extractor, extractor)  # e.g. --clip-length under chunked
    return settings


def asked_options(args: argparse.Namespace, defaults: dict[str, Any]) -> set[str]:
    """The options the command line gives (a flag with a value other than its default).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.
    defaults : dict
        The parser's defaults.

    Returns
    -------
    set of str
        Setting and encoder field names.
    """
    names = {n for n in (*_OPTIONS, *_CONFIG_OPTIONS) if _given(args, defaults, n)}
    if getattr(args, "accept_length_mismatch", False):
        names.add("allow_length_mismatch")
    return names


def run_batch(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    """Run the batch.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.
    defaults : dict
        The parser's defaults.

    Returns
    -------
    int
        0 when every video is done or skipped, 3 when some failed.
    """
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

    def run_videos(client: Any, progress: Any, log: Any, video_progress: Any) -> Any:
        index = extract_many(
            args.sources, args.output_dir, settings, client=client, force=args.force,
            retries=args.retries, progress=progress, manifest=args.manifest, log=log,
            video_progress=video_progress, task_frames=args.task_frames,
            workers=args.cluster_workers,
        )  # fmt: skip
        _warn_random_weights(index)
        return index

    return run_on_cluster(run_videos, args)


def _warn_random_weights(index: Any) -> None:
    """Say once, as the single-video form does, when the batch's tables have random weights."""
    from ..extract.tasks import footer_metadata

    # The batch's settings are one model's (a manifest row's may differ: rare): one table tells.
    written = index.loc[index["status"].isin(["done", "skipped"]), "output"]
    meta = (footer_metadata(written.iloc[0]) or ({}, 0))[0] if len(written) else {}
    if meta.get("random_weights"):
        console.warning(f"WARNING: {meta['weights_note']}")
