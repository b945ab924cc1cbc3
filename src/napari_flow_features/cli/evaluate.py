"""``flow-features evaluate``: consistency, stability and discriminability of feature tables."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import NON_NEGATIVE_INT, POSITIVE_INT, console, number


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command.

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
        "evaluate", help="consistency, stability and discriminability of features"
    )
    p.add_argument("features", nargs="+",
                   help="feature tables (.parquet or .csv); several = one per video, split by video")  # fmt: skip
    p.add_argument("--labels", help="labels: frame,label or start_frame,end_frame,label (CSV); "
                   "a video column (file stem) assigns rows to tables")  # fmt: skip
    p.add_argument("--compare", help="another table of the same video (stability: CKA, cosine)")
    p.add_argument("--groups-column", help="column naming the video of each row (splits by it)")
    p.add_argument("--splits", type=number(int, 2), default=5, help="cross-validation folds (5)")
    p.add_argument(
        "--gap", type=NON_NEGATIVE_INT, help="frames left out around a test block (clip length)"
    )
    p.add_argument("--lag", type=POSITIVE_INT, default=1, help="autocorrelation lag in frames (1)")
    p.add_argument("--output", "-o", required=True, help="report folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the report and print its metrics and files.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..analysis.study import evaluate_feature_tables, report_metrics

    paths = evaluate_feature_tables(
        args.features, args.output, labels=args.labels, compare=args.compare,
        groups_column=args.groups_column, splits=args.splits, gap=args.gap, lag=args.lag,
    )  # fmt: skip
    for name, value in report_metrics(paths).items():
        console.result(f"{name:>20}: {value:.4g}")
    for kind, path in paths.items():
        console.result(f"wrote {kind}: {path}")
    return 0
