"""``flow-features flow``: dense optical flow of a video, or of a folder of videos on Dask."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ._cluster import add_cluster_arguments, run_on_cluster
from ._common import add_flow_options, console, flow_computer, flow_max_side

logger = logging.getLogger(__name__)

USAGE = "Use either VIDEO -o OUT.npy or --input-dir DIR --output-dir DIR"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``flow`` sub-command.

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
        "flow",
        help="compute dense optical flow for a video or a folder of videos",
        description="Writes (T-1, H, W, 2) float32 .npy flow (dx, dy in px/frame) plus a JSON "
        "sidecar. The defaults are extract's (DIS, 256 px longest side), so extract FLOW.npy gives "
        "the rows extract VIDEO gives. A folder run skips videos whose flow is already complete.",
    )
    p.add_argument("video", nargs="?", help="a video file")
    p.add_argument("-o", "--output", help="output .npy for VIDEO")
    p.add_argument("--input-dir", help="folder of videos")
    p.add_argument("--output-dir", help="folder for <video stem>.npy outputs")
    add_cluster_arguments(p.add_argument_group("many videos (--input-dir, docs/batch.md)"))
    add_flow_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compute the flow of one video (``VIDEO -o OUT``) or of a folder (``--input-dir``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status: 0, or 3 when some videos of a folder failed.
    """
    computer = flow_computer(args)
    if args.input_dir:
        if args.video or not args.output_dir:
            raise BadInputError(USAGE)
        return run_folder(args)  # on Dask: skip what is done, keep going (docs/batch.md)
    if not args.video or not args.output:
        raise BadInputError(USAGE)
    logger.info("flow of %s with %s (preset %s, max side %s, scale %s, workers %s)", args.video,
                args.method, args.preset, args.max_side, args.scale, args.workers)  # fmt: skip
    started = time.perf_counter()
    bar = console.bar(Path(args.video).name)
    try:
        flow = computer.compute(args.video, args.output, progress=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    logger.info("%d flow fields in %.2f s (%.1f fields/s)", len(flow), seconds,
                len(flow) / max(seconds, 1e-9))  # fmt: skip
    console.result(f"wrote {args.output}: flow {tuple(flow.shape)} float32 (dx, dy px/frame), "
                   f"{args.method}")  # fmt: skip
    return 0


def run_folder(args: argparse.Namespace) -> int:
    """``flow --input-dir DIR --output-dir DIR`` on Dask: skip what is done, keep going, index.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        0 when every video is done or skipped, 3 when some failed.
    """
    from ..extract.batch import flow_many

    if not Path(args.input_dir).is_dir():
        raise BadInputError(f"Input folder not found: {args.input_dir}")
    settings = {"method": args.method, "preset": args.preset, "max_side": flow_max_side(args),
                "scale": args.scale, "workers": args.workers}  # fmt: skip

    def run_batch(client: Any, progress: Any, log: Any, video_progress: Any) -> Any:
        return flow_many([args.input_dir], args.output_dir, settings, client=client,
                         force=args.force, retries=args.retries, progress=progress, log=log)  # fmt: skip

    return run_on_cluster(run_batch, args)
