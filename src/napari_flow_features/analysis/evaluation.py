"""How good are the features? Consistency over time, stability across runs, discriminability.

``FeatureExtractorEvaluator().evaluate(features, labels)`` returns a tidy table (one metric a row).
Features are a feature table (DESIGN.md columns; rows with NaN features are dropped and counted) or a
``(frames, channels)`` array. Rows are taken in time order within each sequence: a sequence is a
``groups`` value (e.g. the video) and, in a multi-landmark table, a landmark.

Cross-validation never lets neighbouring frames sit on both sides of a split: with ``groups`` (two or
more videos) folds are whole videos; otherwise folds are contiguous blocks of frames and the training
set also drops ``gap`` frames on each side of the test block (by default one clip length, the span
over which windows share input).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError

#: metric → (family, what it says), the rows of the tidy table in this order
METRICS: dict[str, tuple[str, str]] = {
    "rows": ("data", "rows with finite features used"),
    "dropped_rows": ("data", "rows dropped for NaN features (missing landmarks)"),
    "channels": ("data", "feature channels"),
    "temporal_smoothness": ("consistency", "mean cosine similarity of consecutive frames (1 = same)"),
    "autocorrelation": ("consistency", "lag-k autocorrelation averaged over channels"),
    "roughness": ("consistency", "mean squared step / (2 x variance), over channels (noise = 1)"),
    "cka": ("stability", "linear CKA between two tables of the same video (1 = same up to rotation and scale)"),
    "mean_cosine": ("stability", "mean cosine similarity of matching rows of two tables"),
    "chance_accuracy": ("discriminability", "accuracy of always answering the most frequent label"),
    "probe_accuracy": ("discriminability", "linear probe (logistic regression) accuracy, cross-validated"),
    "probe_macro_f1": ("discriminability", "linear probe macro-F1, cross-validated"),
    "knn_accuracy": ("discriminability", "k-nearest-neighbour accuracy, cross-validated"),
    "silhouette": ("discriminability", "silhouette of the label clusters (-1..1, higher = separated)"),
    "calinski_harabasz": ("discriminability", "between / within dispersion ratio (higher = separated)"),
    "davies_bouldin": ("discriminability", "mean cluster similarity (lower = separated)"),
    "fisher_ratio": ("discriminability", "trace of between-class over within-class scatter"),
}  # fmt: skip


# -- input -------------------------------------------------------------------------------------
@dataclass
class FeatureData:
    """Rows in time order within sequences, after dropping NaN rows."""

    x: np.ndarray  # (n, C) float64
    frames: np.ndarray  # (n,) frame numbers (row numbers for an array)
    sequences: np.ndarray  # (n,) sequence id: group and landmark
    groups: np.ndarray | None  # (n,) the caller's groups, for cross-validation
    labels: np.ndarray | None  # (n,) None where a row has no label
    dropped: int


def feature_matrix(features: Any) -> tuple[np.ndarray, pd.DataFrame]:
    """The feature values and the keys of their rows.

    Parameters
    ----------
    features : pandas.DataFrame or array_like
        A feature table (DESIGN.md columns ``frame``, landmark identity, ``f0000`` …) or a
        ``(frames, channels)`` array.

    Returns
    -------
    x : numpy.ndarray
        ``(n, C)`` float64 features.
    keys : pandas.DataFrame
        ``frame`` (row numbers for an array) and, when the table names landmarks, their label as
        ``landmark``.

    Raises
    ------
    BadInputError
        For a table without feature columns or an array that is not 2-D.
    """
    if isinstance(features, pd.DataFrame):
        from ..io.landmark_key import landmark_ids, landmark_key
        from ..io.tables import feature_columns

        cols = feature_columns(features)
        if not cols:
            raise BadInputError("The table has no feature columns (f0000, f0001, …)")
        keys = pd.DataFrame(
            {
                "frame": features["frame"].to_numpy()
                if "frame" in features
                else np.arange(len(features))
            }
        )
        if landmark_key(features) is not None:  # landmark, or individual + keypoint
            keys["landmark"] = np.array([str(i) for i in landmark_ids(features)], dtype=object)
        return features[cols].to_numpy(np.float64), keys
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise BadInputError(f"Features must be a (frames, channels) array, got shape {x.shape}")
    return x, pd.DataFrame({"frame": np.arange(len(x))})


def labels_per_row(labels: Any, keys: pd.DataFrame) -> np.ndarray:
    """One label per feature row.

    Parameters
    ----------
    labels : sequence or pandas.DataFrame
        A sequence as long as the table; or a table of per-frame labels (``frame``, ``label``) or
        of per-clip labels (``start_frame``, ``end_frame`` inclusive, ``label``).
    keys : pandas.DataFrame
        The row keys of :func:`feature_matrix` (its ``frame`` column is used).

    Returns
    -------
    numpy.ndarray
        Object array of one label per row; None where a frame has no label.

    Raises
    ------
    BadInputError
        For a sequence of the wrong length or a labels table without the columns it needs.
    """
    if not isinstance(labels, pd.DataFrame):
        out = np.asarray(labels, dtype=object)
        if out.shape != (len(keys),):
            raise BadInputError(f"Got {out.size} labels for {len(keys)} feature rows")
        return out
    if "label" not in labels:
        raise BadInputError("A labels table needs a 'label' column")
    by_frame: dict[int, Any] = {}
    if {"start_frame", "end_frame"} <= set(labels.columns):
        for start, end, label in labels[["start_frame", "end_frame", "label"]].itertuples(False):
            if end < start:
                raise BadInputError(f"Clip label {label!r} ends ({end}) before it starts ({start})")
            by_frame.update(dict.fromkeys(range(int(start), int(end) + 1), label))
    elif "frame" in labels:
        by_frame = dict(zip(labels["frame"].astype(int), labels["label"], strict=True))
    else:
        raise BadInputError(
            "A labels table needs 'frame' and 'label' (per frame) or 'start_frame', 'end_frame' "
            "and 'label' (per clip)"
        )
    return np.array([by_frame.get(int(f)) for f in keys["frame"]], dtype=object)


def prepare(features: Any, labels: Any = None, groups: Any = None) -> FeatureData:
    """Features, labels and groups aligned row by row, NaN rows dropped, time-sorted per sequence.

    Parameters
    ----------
    features : pandas.DataFrame or array_like
        As for :func:`feature_matrix`.
    labels : sequence or pandas.DataFrame, optional
        As for :func:`labels_per_row`.
    groups : sequence, optional
        One value per row (e.g. the video); rows of different groups are different sequences.

    Returns
    -------
    FeatureData
        The rows in time order within each sequence, and how many were dropped.

    Raises
    ------
    BadInputError
        When fewer than 2 rows have finite features, or ``groups`` has the wrong length.
    """
    x, keys = feature_matrix(features)
    n = len(x)
    lab = None if labels is None else labels_per_row(labels, keys)
    grp = None
    if groups is not None:
        grp = np.asarray(groups, dtype=object)
        if grp.shape != (n,):
            raise BadInputError(f"Got {grp.size} group values for {n} feature rows")
    seq = keys["landmark"].to_numpy() if "landmark" in keys else np.zeros(n, dtype=object)
    if grp is not None:
        seq = np.array([f"{g}\x00{s}" for g, s in zip(grp, seq, strict=True)], dtype=object)
    keep = np.isfinite(x).all(axis=1)
    order = np.lexsort((keys["frame"].to_numpy()[keep], pd.factorize(seq[keep])[0]))
    idx = np.flatnonzero(keep)[order]
    if idx.size < 2:
        raise BadInputError(f"Need at least 2 rows with finite features; got {idx.size}")
    return FeatureData(
        x=x[idx],
        frames=keys["frame"].to_numpy()[idx],
        sequences=pd.factorize(seq[idx])[0],
        groups=None if grp is None else grp[idx],
        labels=None if lab is None else lab[idx],
        dropped=int(n - idx.size),
    )


# -- consistency -------------------------------------------------------------------------------
def _consecutive_pairs(sequences: np.ndarray) -> np.ndarray:
    """Indices i whose next row i+1 belongs to the same sequence."""
    return np.flatnonzero(sequences[1:] == sequences[:-1])


def _lagged_pairs(sequences: np.ndarray, lag: int) -> np.ndarray:
    return (
        np.flatnonzero(sequences[lag:] == sequences[:-lag])
        if lag < len(sequences)
        else np.array([], int)
    )


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of ``a`` with row i of ``b`` (0 where a row is all zeros).

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(n, C)`` matrices.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` cosines.
    """
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(axis=1), norms, out=np.zeros(len(a)), where=norms > 0)


def consecutive_cosines(
    x: np.ndarray, sequences: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each row with the next row of the same sequence.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, C)`` features in time order within sequences.
    sequences : numpy.ndarray, optional
        ``(n,)`` sequence id per row; default: one sequence.

    Returns
    -------
    i : numpy.ndarray
        Rows whose next row is in the same sequence.
    cos : numpy.ndarray
        Their cosine with that next row.
    """
    seq = np.zeros(len(x), int) if sequences is None else sequences
    i = _consecutive_pairs(seq)
    return i, row_cosines(x[i], x[i + 1])


def temporal_smoothness(x: np.ndarray, sequences: np.ndarray | None = None) -> float:
    """Mean cosine similarity of each row with the next (zero rows count as dissimilar).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, C)`` features in time order within sequences.
    sequences : numpy.ndarray, optional
        ``(n,)`` sequence id per row; pairs never cross sequences.

    Returns
    -------
    float
        In ``[-1, 1]``; 1 when nothing changes; NaN without pairs.
    """
    i, cos = consecutive_cosines(x, sequences)
    return float(cos.mean()) if len(i) else float("nan")


def autocorrelation(x: np.ndarray, lag: int = 1, sequences: np.ndarray | None = None) -> float:
    """Pearson correlation of each channel with itself ``lag`` rows later, averaged over channels.

    Channels that do not vary are left out; pairs never cross sequences.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, C)`` features in time order within sequences.
    lag : int
        Rows between the two values of a pair (at least 1).
    sequences : numpy.ndarray, optional
        ``(n,)`` sequence id per row.

    Returns
    -------
    float
        In ``[-1, 1]``; NaN with fewer than 2 pairs or no varying channel.
    """
    if lag < 1:
        raise BadInputError(f"lag must be at least 1, got {lag}")
    seq = np.zeros(len(x), int) if sequences is None else sequences
    i = _lagged_pairs(seq, lag)
    if len(i) < 2:
        return float("nan")
    a, b = x[i], x[i + lag]
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    ok = denom > 0
    return float(((a * b).sum(axis=0)[ok] / denom[ok]).mean()) if ok.any() else float("nan")


def roughness(x: np.ndarray, sequences: np.ndarray | None = None) -> float:
    """Mean over channels of ``mean((x[t+1] - x[t])²) / (2 var(x))`` (a von Neumann ratio).

    About 1 for white noise, near 0 for a slowly varying signal.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, C)`` features in time order within sequences.
    sequences : numpy.ndarray, optional
        ``(n,)`` sequence id per row; steps never cross sequences.

    Returns
    -------
    float
        The ratio; NaN without steps or varying channels.
    """
    seq = np.zeros(len(x), int) if sequences is None else sequences
    i = _consecutive_pairs(seq)
    var = x.var(axis=0)
    ok = var > 0
    if not len(i) or not ok.any():
        return float("nan")
    step = ((x[i + 1] - x[i]) ** 2).mean(axis=0)
    return float((step[ok] / (2 * var[ok])).mean())


# -- stability ---------------------------------------------------------------------------------
def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of two matrices with the same rows (Kornblith et al. 2019).

    ``‖BᵀA‖²_F / (‖AᵀA‖_F ‖BᵀB‖_F)`` after centring the columns; the channel counts may differ.

    Parameters
    ----------
    a : numpy.ndarray
        ``(n, C)`` matrix.
    b : numpy.ndarray
        ``(n, C')`` matrix, row i matching row i of ``a``.

    Returns
    -------
    float
        In ``[0, 1]``: 1 when equal up to rotation and isotropic scale; NaN for constant input.

    Raises
    ------
    BadInputError
        When the row counts differ.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape[0] != b.shape[0]:
        raise BadInputError(f"CKA needs the same rows: {a.shape[0]} vs {b.shape[0]}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(np.linalg.norm(b.T @ a) ** 2 / denom) if denom > 0 else float("nan")


def mean_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of row i of ``a`` with row i of ``b`` (same channels).

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(n, C)`` matrices of the same shape.

    Returns
    -------
    float
        The mean cosine.

    Raises
    ------
    BadInputError
        When the shapes differ.
    """
    if a.shape != b.shape:
        raise BadInputError(f"Tables differ in shape: {a.shape} vs {b.shape}")
    return float(row_cosines(a, b).mean())


def _matched_rows(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rows present and finite in both, matched on frame (and landmark)."""
    xa, ka = feature_matrix(a)
    xb, kb = feature_matrix(b)
    on = [c for c in ("frame", "landmark") if c in ka and c in kb]
    ka = ka.assign(_i=np.arange(len(ka)))
    kb = kb.assign(_j=np.arange(len(kb)))
    both = ka.merge(kb, on=on)
    xa, xb = xa[both["_i"].to_numpy()], xb[both["_j"].to_numpy()]
    ok = np.isfinite(xa).all(axis=1) & np.isfinite(xb).all(axis=1)
    if ok.sum() < 2:
        raise BadInputError("The two tables share fewer than 2 rows with finite features")
    return xa[ok], xb[ok]


# -- discriminability --------------------------------------------------------------------------
def fisher_ratio(x: np.ndarray, labels: np.ndarray) -> float:
    """``tr(S_B) / tr(S_W)``: between-class scatter over within-class scatter.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, C)`` features.
    labels : numpy.ndarray
        ``(n,)`` class per row.

    Returns
    -------
    float
        The ratio; infinite when every class is a single point.
    """
    mu = x.mean(axis=0)
    between = within = 0.0
    for value in pd.unique(labels):
        xs = x[labels == value]
        mk = xs.mean(axis=0)
        between += len(xs) * float(((mk - mu) ** 2).sum())
        within += float(((xs - mk) ** 2).sum())
    return between / within if within > 0 else float("inf")


def blocked_splits(
    n: int, n_splits: int = 5, gap: int = 0, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs that keep neighbouring frames on one side of a split.

    With two or more groups, folds are whole groups (``GroupKFold``); otherwise contiguous blocks,
    with ``gap`` rows on each side of the test block left out of training.

    Parameters
    ----------
    n : int
        Rows.
    n_splits : int
        Folds (fewer when there are fewer groups or rows).
    gap : int
        Rows left out of training on each side of a test block.
    groups : numpy.ndarray, optional
        ``(n,)`` group per row.

    Returns
    -------
    list of tuple of numpy.ndarray
        ``(train, test)`` row indices; folds whose training set would be empty are left out.
    """
    if groups is not None and len(pd.unique(groups)) >= 2:
        from sklearn.model_selection import GroupKFold

        k = min(n_splits, len(pd.unique(groups)))
        return list(GroupKFold(n_splits=k).split(np.zeros(n), groups=groups))
    k = max(2, min(n_splits, n // 2))
    bounds = np.linspace(0, n, k + 1).astype(int)
    out = []
    for lo, hi in itertools.pairwise(bounds):
        test = np.arange(lo, hi)
        train = np.r_[np.arange(0, max(0, lo - gap)), np.arange(min(n, hi + gap), n)]
        if len(test) and len(train):
            out.append((train, test))
    return out


class FeatureExtractorEvaluator:
    """Metrics of a feature table: consistency, stability against another table, discriminability.

    Parameters
    ----------
    n_splits : int
        Cross-validation folds.
    gap : int, optional
        Frames left out of training on each side of a test block; None: the table's clip length
        (``attrs["clip_length"]``), else 16.
    lag : int
        Lag of the autocorrelation, in rows.
    k_neighbors : int
        Neighbours of the kNN classifier.

    Attributes
    ----------
    last_predictions : pandas.DataFrame or None
        ``frame``, ``label``, ``predicted`` of the linear probe in the last evaluation with labels.

    Examples
    --------
    >>> metrics = FeatureExtractorEvaluator().evaluate(table, labels=labels)  # doctest: +SKIP
    >>> metrics.set_index("metric").loc["probe_accuracy", "value"]  # doctest: +SKIP
    0.93
    """

    def __init__(
        self,
        n_splits: int = 5,
        gap: int | None = None,
        lag: int = 1,
        k_neighbors: int = 5,
    ) -> None:
        self.n_splits = n_splits
        self.gap = gap
        self.lag = lag
        self.k_neighbors = k_neighbors
        self.last_predictions: pd.DataFrame | None = None  #: probe predictions of the last run

    def consistency(self, data: FeatureData) -> dict[str, float]:
        """Temporal smoothness, lag-k autocorrelation, roughness.

        Parameters
        ----------
        data : FeatureData
            Rows from :func:`prepare`.

        Returns
        -------
        dict of str to float
            ``temporal_smoothness``, ``autocorrelation``, ``roughness``.
        """
        return {
            "temporal_smoothness": temporal_smoothness(data.x, data.sequences),
            "autocorrelation": autocorrelation(data.x, self.lag, data.sequences),
            "roughness": roughness(data.x, data.sequences),
        }

    def stability(self, features: Any, other: Any) -> dict[str, float]:
        """Linear CKA and mean row cosine between two feature tables of the same video.

        For example windows shifted, another flow method or another model; rows are matched on
        frame and landmark.

        Parameters
        ----------
        features, other : pandas.DataFrame or array_like
            The two tables (or ``(frames, channels)`` arrays).

        Returns
        -------
        dict of str to float
            ``cka`` and ``mean_cosine`` (NaN when the channel counts differ).

        Raises
        ------
        BadInputError
            When the tables share fewer than 2 rows with finite features.
        """
        a, b = _matched_rows(features, other)
        if a.shape[1] != b.shape[1]:
            return {"cka": linear_cka(a, b), "mean_cosine": float("nan")}
        return {"cka": linear_cka(a, b), "mean_cosine": mean_row_cosine(a, b)}

    def discriminability(self, data: FeatureData, gap: int = 16) -> dict[str, float]:
        """Cross-validated linear probe and kNN, and cluster-separation indices of the labels.

        Parameters
        ----------
        data : FeatureData
            Rows from :func:`prepare`, with labels.
        gap : int
            Rows left out of training on each side of a test block (see :func:`blocked_splits`).

        Returns
        -------
        dict of str to float
            ``chance_accuracy``, ``probe_accuracy``, ``probe_macro_f1``, ``knn_accuracy``,
            ``fisher_ratio`` and, when the rows allow, ``silhouette``, ``calinski_harabasz``,
            ``davies_bouldin``.

        Raises
        ------
        BadInputError
            With fewer than two labels, or too few rows for the splits and their gap.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import (
            accuracy_score,
            calinski_harabasz_score,
            davies_bouldin_score,
            f1_score,
            silhouette_score,
        )
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if data.labels is None:
            raise BadInputError("Discriminability needs labels")
        labelled = np.array([v is not None and v == v for v in data.labels])  # v == v: not NaN
        x = data.x[labelled]
        frames = data.frames[labelled]
        groups = None if data.groups is None else data.groups[labelled]
        codes, names = pd.factorize(data.labels[labelled])
        y = np.asarray(codes)
        classes = np.unique(y)
        if len(classes) < 2:
            raise BadInputError("Discriminability needs at least two different labels")
        _, counts = np.unique(y, return_counts=True)
        out = {"chance_accuracy": float(counts.max() / len(y))}
        splits = blocked_splits(len(y), self.n_splits, gap, groups)
        if not splits:  # every block's gap swallowed its training rows
            raise BadInputError(
                f"Too few labelled rows ({len(y)}) to cross-validate in {self.n_splits} blocks with "
                f"{gap} rows left out on each side of a test block: give more frames, several "
                "videos as groups, or a smaller gap (FeatureExtractorEvaluator(gap=...))"
            )
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(self.k_neighbors))
        pred_probe = np.full(len(y), -1)
        pred_knn = np.full(len(y), -1)
        for train, test in splits:
            if len(np.unique(y[train])) < 2:  # a block holding one label only: answer it
                pred_probe[test] = pred_knn[test] = y[train][0]
                continue
            pred_probe[test] = probe.fit(x[train], y[train]).predict(x[test])
            k = min(self.k_neighbors, len(train))
            knn.set_params(kneighborsclassifier__n_neighbors=k)
            pred_knn[test] = knn.fit(x[train], y[train]).predict(x[test])
        scored = pred_probe >= 0
        out["probe_accuracy"] = float(accuracy_score(y[scored], pred_probe[scored]))
        out["probe_macro_f1"] = float(f1_score(y[scored], pred_probe[scored], average="macro"))
        out["knn_accuracy"] = float(accuracy_score(y[scored], pred_knn[scored]))
        self.last_predictions = pd.DataFrame(
            {"frame": frames[scored], "label": names[y[scored]],
             "predicted": names[pred_probe[scored]]}
        )  # fmt: skip
        if len(np.unique(x, axis=0)) > len(classes):
            out["silhouette"] = float(silhouette_score(x, y))
            out["calinski_harabasz"] = float(calinski_harabasz_score(x, y))
            out["davies_bouldin"] = float(davies_bouldin_score(x, y))
        out["fisher_ratio"] = fisher_ratio(x, y)
        return out

    def evaluate(
        self, features: Any, labels: Any = None, groups: Any = None, other: Any = None
    ) -> pd.DataFrame:
        """Every metric that applies, as a tidy table.

        Data counts and consistency always; stability against ``other`` when given;
        discriminability when ``labels`` are given.

        Parameters
        ----------
        features : pandas.DataFrame or array_like
            A feature table or a ``(frames, channels)`` array; rows with NaN features (missing
            landmarks) are dropped and counted.
        labels : sequence or pandas.DataFrame, optional
            Per-row labels, or a table of per-frame or per-clip labels (see
            :func:`labels_per_row`).
        groups : sequence, optional
            One value per row (e.g. the video); with two or more, folds are whole groups.
        other : pandas.DataFrame or array_like, optional
            Another table of the same video, for the stability metrics.

        Returns
        -------
        pandas.DataFrame
            Columns ``metric``, ``family``, ``value``, ``description``; ``attrs`` hold the settings.
        """
        data = prepare(features, labels, groups)
        values: dict[str, float] = {
            "rows": len(data.x),
            "dropped_rows": data.dropped,
            "channels": data.x.shape[1],
        }
        values.update(self.consistency(data))
        if other is not None:
            values.update(self.stability(features, other))
        if labels is not None:
            gap = self.gap
            if gap is None:
                attrs = getattr(features, "attrs", {}) or {}
                gap = int(attrs.get("clip_length", 16))
            values.update(self.discriminability(data, gap))
        rows = [
            {"metric": k, "family": METRICS[k][0], "value": float(v), "description": METRICS[k][1]}
            for k, v in values.items()
        ]
        table = pd.DataFrame(rows)
        table.attrs = {"lag": self.lag, "n_splits": self.n_splits, "k_neighbors": self.k_neighbors}
        return table
