"""``flow-features map``: the behaviour map of a feature table (embedding, clusters, ethogram)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import POSITIVE_INT, console, number

#: Embedding methods and clusterings (the library's, checked equal by a test).
METHODS = ("pca", "umap")
CLUSTERINGS = ("hdbscan", "kmeans")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``map`` sub-command.

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
        "map", help="behaviour map: 2-D embedding and clusters of a feature table",
        description="Embed the rows of a feature table in 2-D (PCA of the standardised "
        "features, or UMAP), cluster them there, and write the table with embed_0, embed_1 and "
        "cluster columns (-1: noise, or a row with missing features). Landmarks share one map.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("table", help="feature table (.parquet or .csv)")
    p.add_argument("--output", "-o", help="mapped table, .csv or .parquet "
                   "(default: <table>_map next to the input, same format)")  # fmt: skip
    p.add_argument("--method", choices=METHODS, default="pca",
                   help="embedding; umap needs the umap extra (pip install umap-learn)")  # fmt: skip
    p.add_argument("--clusters", choices=CLUSTERINGS, default="hdbscan", help="clustering")
    p.add_argument("--k", type=POSITIVE_INT, default=4, help="k-means clusters")
    p.add_argument("--min-cluster-size", type=number(int, 2),
                   help="HDBSCAN's smallest cluster (default: 2 %% of the rows, at least 5)")  # fmt: skip
    p.add_argument("--neighbors", type=number(int, 2), default=15, help="UMAP's n_neighbors")
    p.add_argument("--seed", type=int, default=0, help="random state (k-means, UMAP)")
    p.add_argument("--figure", help="also save the map figure (.png, .svg, .pdf)")
    p.set_defaults(func=run)
    return p


def default_output(table: str | Path) -> Path:
    """``<folder>/<stem>_map<suffix>``: the mapped table's default path.

    Parameters
    ----------
    table : str or Path
        The input table.

    Returns
    -------
    Path
        Beside the input, in its format.
    """
    path = Path(table)
    return path.with_name(f"{path.stem}_map{path.suffix}")


def run(args: argparse.Namespace) -> int:
    """Write the mapped table (and figure) and print what the map found.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from ..analysis.behaviour_map import MapSettings, behaviour_map
    from ..io.tables import read_table, write_table

    settings = MapSettings(method=args.method, clusters=args.clusters, k=args.k,
                           min_cluster_size=args.min_cluster_size, n_neighbors=args.neighbors,
                           seed=args.seed)  # fmt: skip
    table = read_table(args.table)
    console.status(f"mapping {len(table)} rows: {args.method.upper()}, {args.clusters}")
    mapped = behaviour_map(table, settings)
    out = write_table(mapped, args.output or default_output(args.table))
    meta = mapped.attrs["behaviour_map"]
    ratio = meta.get("explained_variance_ratio")
    explained = f" (PCA explains {100 * sum(ratio):.0f} %)" if ratio else ""
    console.result(f"{meta['n_clusters']} clusters{explained}; {meta['noise_rows']} noise rows, "
                   f"{meta['missing_rows']} rows with missing features (cluster -1)")  # fmt: skip
    console.result(f"wrote table: {out}")
    if args.figure:
        from ..analysis.figures import behaviour_map_figure

        behaviour_map_figure(mapped, args.figure)
        console.result(f"wrote figure: {args.figure}")
    return 0
