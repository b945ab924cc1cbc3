"""FeatureExtractorEvaluator on synthetic features of known structure, and each metric by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.analysis.evaluation import (
    FeatureExtractorEvaluator,
    autocorrelation,
    blocked_splits,
    fisher_ratio,
    labels_per_row,
    linear_cka,
    mean_row_cosine,
    prepare,
    roughness,
    temporal_smoothness,
)
from napari_flow_features.errors import BadInputError


def table(x: np.ndarray, **attrs) -> pd.DataFrame:
    df = pd.DataFrame(x, columns=[f"f{c:04d}" for c in range(x.shape[1])])
    df.insert(0, "frame", np.arange(len(x)))
    df.attrs = attrs
    return df


def two_clusters(n=200, c=16, seed=0):
    """Labels in runs of 20 frames; each label's features sit around its own centre."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n // 20) % 2, 20)
    centres = rng.normal(0, 1, (2, c)) * 6
    return centres[labels] + rng.normal(0, 1, (n, c)), labels


def metric(result: pd.DataFrame, name: str) -> float:
    return float(result.set_index("metric").loc[name, "value"])


def test_separated_clusters_score_high_and_shuffled_labels_score_chance():
    x, labels = two_clusters()
    ev = FeatureExtractorEvaluator(gap=2)
    good = ev.evaluate(table(x), labels)
    assert metric(good, "probe_accuracy") > 0.95 and metric(good, "knn_accuracy") > 0.95
    assert metric(good, "probe_macro_f1") > 0.95 and metric(good, "silhouette") > 0.5
    assert metric(good, "davies_bouldin") < 1 and metric(good, "fisher_ratio") > 5
    assert metric(good, "chance_accuracy") == 0.5
    # Labels unrelated to the features (drawn independently of the cluster): chance.
    noise = np.random.default_rng(1).normal(0, 1, (400, 16))
    shuffled = np.repeat(np.random.default_rng(2).integers(0, 2, 40), 10)
    bad = ev.evaluate(table(noise), shuffled)
    assert abs(metric(bad, "probe_accuracy") - 0.5) < 0.12
    assert abs(metric(bad, "silhouette")) < 0.05 and metric(bad, "fisher_ratio") < 0.05
    assert set(good.columns) == {"metric", "family", "value", "description"}


def test_smooth_sequence_is_more_consistent_than_its_rows_shuffled():
    t = np.arange(300)[:, None]
    x = np.sin(t / 15 + np.arange(8)) + 2  # slow, positive
    shuffled = x[np.random.default_rng(0).permutation(300)]
    ev = FeatureExtractorEvaluator()
    smooth, rough = ev.evaluate(table(x)), ev.evaluate(table(shuffled))
    assert metric(smooth, "temporal_smoothness") > metric(rough, "temporal_smoothness")
    assert metric(smooth, "autocorrelation") > 0.99 > 0.2 > metric(rough, "autocorrelation")
    assert metric(smooth, "roughness") < 0.01 and 0.8 < metric(rough, "roughness") < 1.2


def test_metrics_against_hand_computed_values():
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    # cosines of consecutive rows: 1/sqrt2, 1/sqrt2, 1
    assert temporal_smoothness(x) == pytest.approx((2 / np.sqrt(2) + 1) / 3)
    # channel 0: [1,1,0,0] lag-1 pairs (1,1),(1,0),(0,0): corr of [1,1,0] with [1,0,0] = 0.5
    # channel 1: [0,1,1,2] pairs: corr of [0,1,1] with [1,1,2] = 0.5
    assert autocorrelation(x, 1) == pytest.approx(0.5)
    # steps² ch0: 0,1,0 → mean 1/3, var 0.25 → (1/3)/0.5; ch1: 1,0,1 → 2/3, var 0.5 → (2/3)/1
    assert roughness(x) == pytest.approx(((1 / 3) / 0.5 + (2 / 3) / 1.0) / 2)
    # Fisher: labels [a,a,b,b]; means (1,.5), (0,1.5), all (.5,1): S_B = 2*(.25+.25)*2 = 2,
    # S_W = (0+.25+.25) + (0+.25+.25) = 1
    assert fisher_ratio(x, np.array([0, 0, 1, 1])) == pytest.approx(2.0)
    assert mean_row_cosine(x, x * 3) == pytest.approx(1.0)
    assert mean_row_cosine(x, -x) == pytest.approx(-1.0)
    # CKA by hand for 1-D features: squared Pearson correlation.
    a = np.array([[1.0], [2.0], [4.0]])
    b = np.array([[1.0], [3.0], [2.0]])
    assert linear_cka(a, b) == pytest.approx(np.corrcoef(a[:, 0], b[:, 0])[0, 1] ** 2)


def test_cluster_indices_against_hand_computed_values():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    result = FeatureExtractorEvaluator(gap=0).evaluate(x, ["a", "a", "b", "b"])
    # silhouette: a(i) = 1 inside each pair; b(i) = 10.5 for the outer points, 9.5 for the inner
    assert metric(result, "silhouette") == pytest.approx((2 - 1 / 10.5 - 1 / 9.5) / 2)
    # Calinski-Harabasz: B = 2*5² + 2*5² = 100 over k-1 = 1; W = 4 * 0.5² = 1 over n-k = 2
    assert metric(result, "calinski_harabasz") == pytest.approx(200.0)
    # Davies-Bouldin: spreads 0.5 and 0.5, centroids 10 apart
    assert metric(result, "davies_bouldin") == pytest.approx(0.1)
    assert metric(result, "fisher_ratio") == pytest.approx(100.0)


def test_cka_is_one_for_identical_rotated_and_scaled_tables():
    x, _ = two_clusters()
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(16, 16)))[0]
    ev = FeatureExtractorEvaluator()
    assert ev.stability(table(x), table(x)) == pytest.approx({"cka": 1.0, "mean_cosine": 1.0})
    assert linear_cka(x, 5 * x @ rotation) == pytest.approx(1.0)
    other = np.random.default_rng(4).normal(size=x.shape)
    assert ev.stability(table(x), table(other))["cka"] < 0.2
    # Matched on frame: the second table shifted by one row still matches frame by frame.
    shifted = table(x).iloc[5:]
    assert ev.stability(table(x), shifted)["cka"] == pytest.approx(1.0)
    result = ev.evaluate(table(x), other=table(x))
    assert metric(result, "cka") == pytest.approx(1.0)


def test_splits_keep_neighbours_apart():
    splits = blocked_splits(100, n_splits=4, gap=5)
    tests = np.concatenate([t for _, t in splits])
    assert sorted(tests.tolist()) == list(range(100))  # every row tested once
    for train, test in splits:
        lo, hi = test.min(), test.max()
        assert np.all((train < lo - 5 + 1) | (train > hi + 5 - 1))
        assert not set(train) & set(range(lo - 5, hi + 6))
    groups = np.repeat(["a", "b", "c"], [30, 30, 40])
    for train, test in blocked_splits(100, 5, 5, groups):
        assert not set(groups[train]) & set(groups[test])


def test_a_smooth_label_free_table_stays_near_chance():
    """Why the gap: with neighbours on both sides of a split, 1-NN would copy the neighbour label."""
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(400, 4)), axis=0)  # smooth, label-free features
    labels = np.repeat(rng.integers(0, 2, 40), 10)
    honest = FeatureExtractorEvaluator(gap=20, k_neighbors=1).evaluate(table(walk), labels)
    assert metric(honest, "knn_accuracy") < 0.7  # near chance, not near 1


def test_nan_rows_are_dropped_and_counted_and_labels_come_from_tables():
    x, labels = two_clusters(100)
    x[[3, 50]] = np.nan
    df = table(x)
    per_frame = pd.DataFrame({"frame": np.arange(100), "label": np.where(labels, "left", "right")})
    result = FeatureExtractorEvaluator(gap=2).evaluate(df, per_frame)
    assert metric(result, "dropped_rows") == 2 and metric(result, "rows") == 98
    clips = pd.DataFrame(
        {"start_frame": [0, 20, 40], "end_frame": [19, 39, 59], "label": ["a", "b", "a"]}
    )
    rows = labels_per_row(clips, df[["frame"]])
    assert rows[0] == "a" and rows[25] == "b" and rows[59] == "a" and rows[60] is None
    # Rows without a label take part in consistency, not in the probe.
    result = FeatureExtractorEvaluator(gap=2).evaluate(df, clips)
    assert metric(result, "rows") == 98
    # frames 0-59 are labelled, less the NaN rows 3 and 50; "a" holds 0-19 and 40-59
    assert metric(result, "chance_accuracy") == pytest.approx(38 / 58)


@pytest.mark.parametrize(
    "names",
    [{"landmark": ("nose", "paw")}, {"individual": ("m1", "m1"), "keypoint": ("nose", "paw")}],
)
def test_multi_landmark_tables_are_sequences_of_their_own(names):
    t = np.arange(50)
    a = np.stack([np.sin(t / 5), np.cos(t / 5)], axis=1) + 2
    parts = [table(v).assign(**{c: n[i] for c, n in names.items()}) for i, v in enumerate((a, -a))]
    df = pd.concat(parts)
    df = df.sort_values("frame", kind="stable")  # rows interleave landmarks, as the pipeline writes
    data = prepare(df)
    assert np.all(np.diff(data.sequences) >= 0)  # grouped, then time-ordered within
    # Interleaved rows would flip sign at every step; per landmark the sequence is smooth.
    assert temporal_smoothness(data.x, data.sequences) > 0.9


def test_bad_input_is_named():
    ev = FeatureExtractorEvaluator()
    with pytest.raises(BadInputError, match="no feature columns"):
        ev.evaluate(pd.DataFrame({"frame": [0, 1]}))
    with pytest.raises(BadInputError, match="3 labels for 10"):
        ev.evaluate(np.zeros((10, 2)), labels=[0, 1, 0])
    with pytest.raises(BadInputError, match="two different labels"):
        ev.evaluate(np.random.default_rng(0).normal(size=(10, 2)), labels=[0] * 10)
    with pytest.raises(BadInputError, match="at least 2 rows"):
        ev.evaluate(np.full((5, 3), np.nan))
    with pytest.raises(BadInputError, match="'label' column"):
        ev.evaluate(np.zeros((4, 2)), labels=pd.DataFrame({"frame": [0]}))
    # 24 frames in 3 blocks with 16 frames left out on each side: no block keeps training rows.
    x = np.random.default_rng(0).normal(size=(24, 4))
    with pytest.raises(BadInputError, match=r"Too few labelled rows \(24\).*smaller gap"):
        FeatureExtractorEvaluator(n_splits=3, gap=16).evaluate(x, labels=[0, 1] * 12)


def test_report_for_a_multi_landmark_table(tmp_path):
    from napari_flow_features.analysis.report import write_evaluation_report

    x, labels = two_clusters(100)
    df = pd.concat([table(x).assign(landmark="nose"), table(x + 1).assign(landmark="paw")])
    df = df.sort_values("frame", kind="stable").reset_index(drop=True)
    per_frame = pd.DataFrame({"frame": np.arange(100), "label": labels})
    paths = write_evaluation_report(
        df, tmp_path, per_frame, evaluator=FeatureExtractorEvaluator(gap=2)
    )
    assert paths["html"].is_file() and (tmp_path / "pca_over_time.png").is_file()
    paths = write_evaluation_report(df, tmp_path, np.repeat(labels, 2),
                                    evaluator=FeatureExtractorEvaluator(gap=2))  # fmt: skip
    assert (tmp_path / "confusion.png").is_file()
