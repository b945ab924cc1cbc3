"""Evaluate feature tables of one or several videos against labels, into a report folder.

The library side of ``flow-features evaluate``: labels read and checked, several tables joined
with their video (so cross-validation splits by video), the report written by
:func:`~napari_flow_features.analysis.report.write_evaluation_report`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BadInputError

logger = logging.getLogger(__name__)


def read_labels(path: str | os.PathLike[str]) -> Any:
    """A labels table (``frame,label`` or ``start_frame,end_frame,label``) from CSV or Parquet.

    Parameters
    ----------
    path : str or PathLike
        The labels file; a ``video`` column (file stem) may assign rows to feature tables.

    Returns
    -------
    pandas.DataFrame
        The labels, with their frame columns checked.

    Raises
    ------
    BadInputError
        The file is missing, unreadable, or lacks the frame columns.
    """
    import pandas as pd

    from ..io.tables import check_columns

    source = Path(path)
    if not source.is_file():
        raise BadInputError(f"Labels file not found: {source}")
    try:
        if source.suffix.lower() == ".parquet":
            labels = pd.read_parquet(source)
        else:
            labels = pd.read_csv(source)
    except Exception as exc:  # pandas raises many types for bad files
        raise BadInputError(f"Cannot read labels ({type(exc).__name__}: {exc}): {source}") from exc
    frames = [c for c in ("frame", "start_frame", "end_frame") if c in labels.columns]
    check_columns(labels, frames, [], source, 2 if source.suffix.lower() == ".csv" else None)
    return labels


def report_metrics(paths: dict[str, Path]) -> dict[str, float]:
    """The metrics a written evaluation report holds (its ``metrics.json``).

    Parameters
    ----------
    paths : dict
        The report's paths by kind, as ``write_evaluation_report`` returns them.

    Returns
    -------
    dict
        Metric name → value.
    """
    metrics: dict[str, float] = json.loads(Path(paths["json"]).read_text())["metrics"]
    return metrics


def evaluate_feature_tables(
    features: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    compare: str | os.PathLike[str] | None = None,
    groups_column: str | None = None,
    splits: int = 5,
    gap: int | None = None,
    lag: int = 1,
) -> dict[str, Path]:
    """Consistency, stability and discriminability of feature tables, written as a report.

    Parameters
    ----------
    features : sequence of path
        One table, or one per video (rows keep their video in a ``video`` column, named by the
        file stem, and cross-validation splits by it).
    output : path
        The report folder.
    labels : path, optional
        Labels (:func:`read_labels`); with several tables, a ``video`` column assigns them.
    compare : path, optional
        Another table of the same video (stability: CKA, cosine); one ``features`` table only.
    groups_column : str, optional
        Column naming the video of each row (default ``video`` for several tables).
    splits : int
        Cross-validation folds.
    gap : int, optional
        Frames left out around a test block (default: the clip length).
    lag : int
        Autocorrelation lag in frames.

    Returns
    -------
    dict
        The report's paths by kind (``json``, ``md``, ``html``, figures).
    """
    import pandas as pd

    from ..io.tables import read_table
    from .evaluation import FeatureExtractorEvaluator, feature_matrix, labels_per_row
    from .report import write_evaluation_report

    paths = [str(p) for p in features]
    tables = [read_table(path) for path in paths]
    label_table = read_labels(labels) if labels else None
    row_labels: Any = label_table
    if len(tables) == 1:
        joined = tables[0]
    else:  # one table per video: rows keep their video, splits go by video
        if compare:
            raise BadInputError("--compare compares two tables of one video; give one FEATURES")
        stems = [Path(p).stem for p in paths]
        if len(set(stems)) < len(stems):
            raise BadInputError(f"Feature tables need distinct file names: {stems}")
        joined = pd.concat([t.assign(video=s) for t, s in zip(tables, stems, strict=True)],
                           ignore_index=True)  # fmt: skip
        joined.attrs = dict(tables[0].attrs)
        if label_table is not None:  # per video when the labels have a video column
            per_video = []
            for table, stem in zip(tables, stems, strict=True):
                mine = (
                    label_table[label_table["video"] == stem]
                    if "video" in label_table
                    else label_table
                )
                per_video.append(labels_per_row(mine, feature_matrix(table)[1]))
            row_labels = pd.concat([pd.Series(v, dtype=object) for v in per_video]).to_numpy()
    groups_column = groups_column or ("video" if len(tables) > 1 else None)
    groups = None
    if groups_column:
        if groups_column not in joined:
            raise BadInputError(f"No column {groups_column!r} in {', '.join(paths)}")
        groups = joined[groups_column].to_numpy()
    other = read_table(compare) if compare else None
    evaluator = FeatureExtractorEvaluator(n_splits=splits, gap=gap, lag=lag)
    names = ", ".join(Path(p).name for p in paths)
    logger.info("evaluating %d rows of %s", len(joined), names)
    return write_evaluation_report(
        joined, output, row_labels, groups, other, evaluator,
        title=f"Feature evaluation: {names}",
    )  # fmt: skip
