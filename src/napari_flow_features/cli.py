"""The ``flow-features`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import BadInputError, CancelledError


def _cmd_sample(args: argparse.Namespace) -> int:
    from .sample import save_whisker_sample

    paths = save_whisker_sample(args.output)
    for role, path in paths.items():
        print(f"{role:>13}: {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .sample import save_whisker_sample

    out = Path(args.output)
    print(f"Writing the synthetic whisker sample to {out.resolve()} ...")
    paths = save_whisker_sample(out / "sample")
    for role, path in paths.items():
        print(f"{role:>13}: {path}")
    print("Open it in napari: napari " + paths["video"] + " " + paths["landmarks"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flow-features",
        description="Motion features from video: optical flow, an I3D flow encoder, post-encoders.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sample", help="write the synthetic whisker sample (.mp4 + landmark .csv)")
    p.add_argument("--output", "-o", required=True, help="folder to write to")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("demo", help="run the main job on the built-in sample")
    p.add_argument("--output", "-o", default="demo-output", help="folder to write to")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flow-features``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (BadInputError, OSError) as exc:
        print(f"flow-features: error: {exc}", file=sys.stderr)
        return 2
    except (CancelledError, KeyboardInterrupt):
        print("flow-features: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
