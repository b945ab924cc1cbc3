"""An evaluation report on disk: metrics as JSON, Markdown and HTML, with its figures."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io.landmark_key import landmark_ids
from .evaluation import (
    FeatureExtractorEvaluator,
    consecutive_cosines,
    feature_matrix,
    labels_per_row,
    prepare,
)
from .visualization import FeatureVisualization, _figure, save_figure


def _label_spans(frames: np.ndarray, labels: np.ndarray) -> list[tuple[float, float, Any]]:
    """(first, last, label) runs of equal labels over consecutive rows."""
    spans: list[tuple[float, float, Any]] = []
    for f, lab in zip(frames, labels, strict=True):
        if spans and spans[-1][2] == lab and f - spans[-1][1] <= 1:
            spans[-1] = (spans[-1][0], f, lab)
        else:
            spans.append((f, f, lab))
    return spans


def _first_only(features: pd.DataFrame, labels: Any, keep: np.ndarray) -> tuple[pd.DataFrame, Any]:
    """The rows ``keep`` of the table and of per-row labels (a labels table matches by frame)."""
    if labels is not None and not isinstance(labels, pd.DataFrame):
        labels = np.asarray(labels, dtype=object)[keep]
    return features[keep], labels


def evaluation_figures(
    features: pd.DataFrame,
    labels: Any,
    out: Path,
    evaluator: FeatureExtractorEvaluator,
    groups: Any = None,
) -> dict[str, Path]:
    """The report's figures, written into ``out``.

    Principal components over time (label runs shaded), consecutive-frame similarity, and with
    labels a PCA scatter by label and the linear probe's confusion matrix. Time-series figures
    show the first group (video) and the first landmark; the metrics use all rows.

    Parameters
    ----------
    features : pandas.DataFrame
        The feature table.
    labels : sequence or pandas.DataFrame or None
        As for :meth:`FeatureExtractorEvaluator.evaluate`.
    out : pathlib.Path
        An existing folder.
    evaluator : FeatureExtractorEvaluator
        The evaluator that produced the metrics (its probe predictions make the confusion matrix).
    groups : sequence, optional
        One value per row (e.g. the video).

    Returns
    -------
    dict of str to pathlib.Path
        The files by figure title.
    """
    figures: dict[str, Path] = {}
    vis = FeatureVisualization()
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        features, labels = _first_only(features, labels, groups == groups[0])
    ids = np.array(landmark_ids(features), dtype=object)
    if len(set(ids)) > 1:
        features, labels = _first_only(features, labels, ids == ids[0])
    frames, scores, ratio = vis.principal_components(features, 3)
    _, keys = feature_matrix(features)
    lab = None if labels is None else labels_per_row(labels, keys)

    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    if lab is not None:
        names = [v for v in pd.unique(lab) if v is not None]
        shade = {v: f"C{i % 10}" for i, v in enumerate(names)}
        for lo, hi, v in _label_spans(frames, lab):
            if v is not None:
                ax.axvspan(lo - 0.5, hi + 0.5, color=shade[v], alpha=0.12, lw=0)
        for v in names:
            ax.plot([], [], color=shade[v], alpha=0.4, lw=8, label=f"label {v}")
    for k in range(scores.shape[1]):
        ax.plot(frames, scores[:, k], color=f"C{k % 10}" if lab is None else "k",
                ls=("-", "--", ":")[k % 3], label=f"PC{k + 1} ({100 * ratio[k]:.0f} % var.)")  # fmt: skip
    ax.set_xlabel("frame")
    ax.set_ylabel("component score")
    ax.set_title("Principal components of the features over time")
    # Outside the axes, so it hides no data (constrained layout makes room for it).
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)
    figures["Principal components over time"] = save_figure(fig, out / "pca_over_time.png")

    data = prepare(features)
    fig = _figure(9, 3.0)
    ax = fig.add_subplot()
    i, cos = consecutive_cosines(data.x, data.sequences)
    ax.plot(data.frames[i + 1], cos, lw=1)
    ax.set_xlabel("frame")
    ax.set_ylabel("cosine similarity")
    ax.set_ylim(min(0.0, float(cos.min(initial=0))), 1.02)
    ax.set_title("Similarity of each frame's features with the previous frame's")
    ax.grid(alpha=0.3)
    figures["Consecutive-frame similarity"] = save_figure(fig, out / "consistency.png")

    if lab is not None and scores.shape[1] >= 2:
        fig = _figure(5.5, 4.5)
        ax = fig.add_subplot()
        for j, v in enumerate(v for v in pd.unique(lab) if v is not None):
            rows = np.array([x == v for x in lab])
            ax.scatter(scores[rows, 0], scores[rows, 1], s=10, color=f"C{j % 10}", label=str(v))
        ax.set_xlabel("PC1 (score)")
        ax.set_ylabel("PC2 (score)")
        ax.set_title("Frames in the first two components, by label")
        ax.legend(fontsize=8, title="label", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)  # fmt: skip
        figures["Frames by label"] = save_figure(fig, out / "pca_by_label.png")
    predictions = evaluator.last_predictions
    if lab is not None and predictions is not None and len(predictions):
        from sklearn.metrics import ConfusionMatrixDisplay

        fig = _figure(5, 4.5)
        ax = fig.add_subplot()
        ConfusionMatrixDisplay.from_predictions(
            predictions["label"].astype(str), predictions["predicted"].astype(str), ax=ax,
            cmap="Blues", colorbar=True,
        )  # fmt: skip
        # A figure title: an axes title runs over the colour bar beside the matrix.
        fig.suptitle("Linear probe (cross-validated):\nframes per label")
        figures["Linear probe confusion matrix"] = save_figure(fig, out / "confusion.png")
    return figures


def write_evaluation_report(
    features: pd.DataFrame,
    output_dir: str | os.PathLike,
    labels: Any = None,
    groups: Any = None,
    other: pd.DataFrame | None = None,
    evaluator: FeatureExtractorEvaluator | None = None,
    title: str = "Feature evaluation",
) -> dict[str, Path]:
    """Evaluate ``features`` and write the metrics as JSON, Markdown and HTML with their figures.

    Every file is written atomically. A run with random weights says so at the top of the report.

    Parameters
    ----------
    features : pandas.DataFrame
        A feature table (its ``attrs`` describe the run in the report).
    output_dir : str or os.PathLike
        Created if missing; receives ``metrics.json``, ``report.md``, ``report.html`` and PNGs.
    labels : sequence or pandas.DataFrame, optional
        Per-row labels, or a table of per-frame or per-clip labels.
    groups : sequence, optional
        One value per row (e.g. the video): folds are whole groups.
    other : pandas.DataFrame, optional
        Another table of the same video, for the stability metrics.
    evaluator : FeatureExtractorEvaluator, optional
        Its settings (splits, gap, lag, k); default ``FeatureExtractorEvaluator()``.
    title : str
        The report's heading.

    Returns
    -------
    dict of str to pathlib.Path
        ``json``, ``markdown``, ``html`` and ``figure: <title>`` for each figure.

    Examples
    --------
    >>> paths = write_evaluation_report(table, "report", labels=labels)  # doctest: +SKIP
    >>> paths["html"]  # doctest: +SKIP
    PosixPath('report/report.html')
    """
    from ..io._atomic import atomic_write_path, ensure_output_dir
    from ..io.tables import jsonable_metadata

    out = ensure_output_dir(output_dir)
    evaluator = evaluator or FeatureExtractorEvaluator()
    metrics = evaluator.evaluate(features, labels, groups, other)
    figures = evaluation_figures(features, labels, out, evaluator, groups)
    run = jsonable_metadata(dict(getattr(features, "attrs", {}) or {}))
    notes = {
        "random_weights": random_weights(run),
        "validation": validation_scheme(evaluator, features, labels, groups, metrics),
    }
    payload = {
        "title": title,
        **notes,
        "metrics": {r.metric: r.value for r in metrics.itertuples()},
        "families": {r.metric: r.family for r in metrics.itertuples()},
        "descriptions": {r.metric: r.description for r in metrics.itertuples()},
        "settings": metrics.attrs,
        "features_metadata": run,
        "figures": {k: p.name for k, p in figures.items()},
    }
    paths = {
        "json": out / "metrics.json",
        "markdown": out / "report.md",
        "html": out / "report.html",
    }
    texts = {
        "json": json.dumps(payload, indent=2, default=str),
        "markdown": _markdown(title, metrics, run, figures, notes),
        "html": _html(title, metrics, run, figures, notes),
    }
    for kind, path in paths.items():
        with atomic_write_path(path) as tmp:
            Path(tmp).write_text(texts[kind], encoding="utf-8")
    return {**paths, **{f"figure: {k}": p for k, p in figures.items()}}


RANDOM_WEIGHTS_WARNING = (
    "These features come from an I3D encoder with random (untrained) weights. They show what the "
    "pipeline does, not what learned motion features can tell apart: read the metrics as a "
    "baseline. For real features load DeepMind's weights (`flow-features weights fetch "
    "flow_imagenet`) or a trained model from the registry."
)


def random_weights(run: dict) -> bool:
    """Whether the run's metadata says the encoder had random weights.

    Parameters
    ----------
    run : dict
        A table's or run's metadata.

    Returns
    -------
    bool
        True when ``random_weights`` is set or ``weights`` (or ``weights.source``) is ``random``.
    """
    if run.get("random_weights"):  # set by the extractor (any stream)
        return True
    weights = run.get("weights")
    source = weights.get("source") if isinstance(weights, dict) else weights
    return str(source).lower() == "random"


def validation_scheme(
    evaluator: FeatureExtractorEvaluator,
    features: Any,
    labels: Any,
    groups: Any,
    metrics: pd.DataFrame,
) -> str:
    """How the metrics were computed, in words: the folds, the gap, the lag, the classifiers.

    Parameters
    ----------
    evaluator : FeatureExtractorEvaluator
        The evaluator used.
    features : pandas.DataFrame or array_like
        The features evaluated (their ``attrs["clip_length"]`` is the default gap).
    labels : sequence or pandas.DataFrame or None
        The labels, if any.
    groups : sequence or None
        The groups, if any.
    metrics : pandas.DataFrame
        The evaluator's tidy table.

    Returns
    -------
    str
        A paragraph for the report.
    """
    lag = f"Autocorrelation at a lag of {evaluator.lag} frame{'s' if evaluator.lag != 1 else ''}"
    if labels is None:
        return f"{lag}; no labels, so no cross-validation."
    rows = int(metrics.set_index("metric").loc["rows", "value"]) if len(metrics) else 0
    if groups is not None and len(pd.unique(np.asarray(groups, dtype=object))) > 1:
        n_groups = len(pd.unique(np.asarray(groups, dtype=object)))
        folds = (
            f"{min(evaluator.n_splits, n_groups)}-fold cross-validation over whole videos "
            f"(grouped by video, {n_groups} videos): no video is on both sides of a split"
        )
    else:
        gap = evaluator.gap
        if gap is None:
            attrs = getattr(features, "attrs", {}) or {}
            gap = int(attrs.get("clip_length", 16))
        k = max(2, min(evaluator.n_splits, rows // 2))
        folds = (
            f"{k}-fold blocked cross-validation: each fold tests one contiguous block of frames; "
            f"the {gap} frames on each side of the test block are left out of training (the gap, "
            "one clip length, so no training window shares input with a tested frame)"
        )
    return (
        f"{folds}. The linear probe (logistic regression on standardised features) and the "
        f"k-nearest-neighbour classifier (k = {evaluator.k_neighbors}) are scored on the held-out "
        f"frames of every fold; chance is the share of the most frequent label. {lag}."
    )


def _run_value(value: Any) -> str:
    """A run setting for a table cell: dicts without their empty entries."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
    return str(value)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() and abs(value) < 1e9 else f"{value:.4g}"


_RUN_KEYS = ("source", "endpoint", "post_encoder", "interpolation", "clip_length", "stride",
             "flow_method", "model_name", "model_version", "weights")  # fmt: skip


def _markdown(
    title: str, metrics: pd.DataFrame, run: dict, figures: dict[str, Path], notes: dict
) -> str:
    lines = [f"# {title}", ""]
    if notes["random_weights"]:
        lines += [f"> **Warning: random weights.** {RANDOM_WEIGHTS_WARNING}", ""]
    described = [(k, _run_value(run[k])) for k in _RUN_KEYS if k in run]
    if described:
        lines += ["| run | |", "|---|---|", *[f"| {k} | {v} |" for k, v in described], ""]
    lines += ["## How it was validated", "", notes["validation"], ""]
    lines += ["| family | metric | value | meaning |", "|---|---|---|---|"]
    lines += [f"| {r.family} | {r.metric} | {_fmt(r.value)} | {r.description} |"
              for r in metrics.itertuples()]  # fmt: skip
    for name, path in figures.items():
        lines += ["", f"## {name}", "", f"![{name}]({path.name})"]
    return "\n".join(lines) + "\n"


def _html(
    title: str, metrics: pd.DataFrame, run: dict, figures: dict[str, Path], notes: dict
) -> str:
    e = html.escape
    warning = (
        '<p class="warning"><strong>Warning: random weights.</strong> '
        f"{e(RANDOM_WEIGHTS_WARNING)}</p>"
        if notes["random_weights"]
        else ""
    )
    rows = "".join(
        f"<tr><td>{e(r.family)}</td><td>{e(r.metric)}</td><td>{_fmt(r.value)}</td>"
        f"<td>{e(r.description)}</td></tr>"
        for r in metrics.itertuples()
    )
    described = "".join(
        f"<tr><td>{e(k)}</td><td>{e(_run_value(run[k]))}</td></tr>" for k in _RUN_KEYS if k in run
    )
    figs = "".join(
        f'<h2>{e(name)}</h2><img src="{e(path.name)}" alt="{e(name)}">'
        for name, path in figures.items()
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em}"
        "img{max-width:100%}.warning{background:#fff3cd;border:2px solid #d39e00;"
        "padding:.8em 1em;font-size:1.1em}</style></head><body>"
        f"<h1>{e(title)}</h1>{warning}<table>{described}</table>"
        f"<h2>How it was validated</h2><p>{e(notes['validation'])}</p><h2>Metrics</h2>"
        f"<table><tr><th>family</th><th>metric</th><th>value</th><th>meaning</th></tr>{rows}"
        f"</table>{figs}</body></html>\n"
    )
