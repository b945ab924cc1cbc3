"""``flow-features sample``: write the synthetic whisker sample."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import console


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sample`` sub-command.

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
        "sample", help="write the synthetic whisker sample (.mp4 + landmark .csv)"
    )
    p.add_argument("--output", "-o", required=True, help="folder to write to")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the sample and print its files.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..sample import save_whisker_sample

    paths = save_whisker_sample(args.output)
    for role, path in paths.items():
        console.result(f"{role:>13}: {path}")
    return 0
