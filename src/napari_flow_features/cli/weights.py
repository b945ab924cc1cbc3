"""``flow-features weights fetch``: DeepMind's published I3D checkpoints, verified and cached."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import CHECKPOINTS, console


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``weights`` sub-command and its ``fetch`` action.

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
        "weights", help="DeepMind's published I3D checkpoints"
    )
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = wsub.add_parser(
        "fetch",
        help="download and verify a kinetics-i3d checkpoint",
        description="Downloads into --dest or the cache ($NAPARI_FLOW_FEATURES_CACHE, default "
        "~/.cache/napari-flow-features/checkpoints/NAME); a verified copy is reused.",
    )
    fetch.add_argument("name", choices=CHECKPOINTS)
    fetch.add_argument("--dest", help="folder for the files (default: the cache)")
    fetch.add_argument(
        "--url", help="base URL holding NAME/<files> (default: $NAPARI_FLOW_FEATURES_WEIGHTS_URL "
        "or the kinetics-i3d repository)",
    )  # fmt: skip
    fetch.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Download (or reuse) and verify a checkpoint, one progress bar per file.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..model.weights import fetch_checkpoint

    bars: dict[str, Any] = {}
    done_so_far: dict[str, int] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        if name not in bars:
            bars[name] = console.tqdm(total=total, desc=name, unit="B", unit_scale=True)
            done_so_far[name] = 0
        bars[name].update(done - done_so_far[name])
        done_so_far[name] = done

    try:
        prefix = fetch_checkpoint(args.name, args.dest, base_url=args.url, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    console.result(f"verified checkpoint: {prefix}")
    console.result(f"use it with: weights: {{source: deepmind, checkpoint: {prefix}}}")
    return 0
