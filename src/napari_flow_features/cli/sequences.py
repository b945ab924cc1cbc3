"""``flow-features sequences``: cut flow into preprocessed I3D windows (``load``, ``compute``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import POSITIVE_FLOAT, POSITIVE_INT, add_flow_options, console, flow_computer


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sequences`` sub-command and its modes.

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
        "sequences", help="cut flow into preprocessed I3D windows"
    )
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    load = modes.add_parser("load", help="windows from flow files in a folder")
    load.add_argument("--input-dir", required=True, help="folder of .npy/.npz flow or .flo folders")
    compute = modes.add_parser("compute", help="flow from a video, then windows")
    compute.add_argument("--video-path", required=True)
    add_flow_options(compute)
    for m in (load, compute):
        m.add_argument("--output-dir", required=True)
        # One name per concept (docs/configuration.md): the seed's spellings stay as aliases.
        m.add_argument(
            "--clip-length", "--sequence-length", dest="sequence_length", type=POSITIVE_INT,
            default=16, help="frames per window (16)",
        )  # fmt: skip
        m.add_argument("--stride", type=POSITIVE_INT, default=8, help="frames between windows (8)")
        m.add_argument(
            "--flow-bound", "--bound", dest="bound", type=POSITIVE_FLOAT, default=20.0,
            help="clip flow to ±flow-bound px (20)",
        )  # fmt: skip
        m.add_argument(
            "--quantize", action="store_true", help="quantise to 256 levels like DeepMind"
        )
        m.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write ``<stem>_sequences.npy`` windows for each flow file (computed first for a video).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    import numpy as np

    from ..flow.sequences import OpticalFlowSequenceLoader

    out = Path(args.output_dir)
    if args.mode == "compute":
        out.mkdir(parents=True, exist_ok=True)
        video = Path(args.video_path)
        flow_path = out / f"{video.stem}.npy"
        bar = console.bar(video.name)
        try:
            flow_computer(args).compute(video, flow_path, progress=bar)
        finally:
            bar.close()
        console.result(f"wrote {flow_path}")
        sources: list[Path] | Path = [flow_path]
    else:
        sources = Path(args.input_dir)
    loader = OpticalFlowSequenceLoader(
        sources, args.sequence_length, args.stride, bound=args.bound, quantize=args.quantize
    )
    for path in loader.save_sequences(out):
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        console.result(f"wrote {path}: {shape[0]} windows of {shape[1]} frames, "
                       f"{shape[2]}x{shape[3]}")  # fmt: skip
    return 0
