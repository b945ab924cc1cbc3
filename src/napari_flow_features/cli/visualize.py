"""``flow-features visualize``: figures of saved activations or of a feature table."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import NON_NEGATIVE_INT, POSITIVE_INT, console, parse_features

#: The figure kinds (the library's ``analysis.figures.FIGURE_KINDS``, checked equal by a test).
FIGURE_KINDS = ("evolution", "heatmap", "3d", "animation", "comparative", "grid")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``visualize`` sub-command.

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
        "visualize", help="figures of activations (.npy) or a feature table"
    )
    p.add_argument("input", help="feature maps .npy [N,T',H',W',C] (extract --post-encoder none) "
                   "or a feature table (.parquet, .csv)")  # fmt: skip
    p.add_argument("--kind", choices=(*FIGURE_KINDS, "all"), default="evolution")
    p.add_argument("--features", default="0,1,2", help="channel numbers, e.g. 0,10,20")
    p.add_argument("--flow", help="flow file for the comparative view's thumbnails")
    p.add_argument(
        "--sample", type=NON_NEGATIVE_INT, default=0, help="which clip of the activations"
    )
    p.add_argument("--clip-length", type=POSITIVE_INT, default=16,
                   help="frames per clip (time axis)")  # fmt: skip
    p.add_argument("--layer-name", help="name shown in titles (default: the end point)")
    p.add_argument("--output", "-o", required=True, help="figures folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the figures and print their paths.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..analysis.figures import figures_of_file

    paths = figures_of_file(
        args.input, args.output, kind=args.kind, features=parse_features(args.features),
        flow=args.flow, sample=args.sample, clip_length=args.clip_length,
        layer_name=args.layer_name,
    )  # fmt: skip
    for path in paths:
        console.result(f"wrote {path}")
    return 0
