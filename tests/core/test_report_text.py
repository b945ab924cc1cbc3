"""The evaluation report says how it validated, and warns when the weights were random."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from napari_flow_features.analysis.evaluation import FeatureExtractorEvaluator
from napari_flow_features.analysis.report import write_evaluation_report


def table(weights: dict, n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    lab = np.repeat(["still", "moving"], n // 2)
    x = rng.normal(size=(n, 6)) + (lab == "moving")[:, None]
    df = pd.DataFrame(x, columns=[f"f{c:04d}" for c in range(6)])
    df.insert(0, "frame", np.arange(n))
    df.attrs = {"weights": weights, "clip_length": 8, "endpoint": "Mixed_4f"}
    return df, lab


def test_random_weights_warned_and_scheme_stated(tmp_path):
    df, lab = table({"source": "random", "seed": 0})
    paths = write_evaluation_report(df, tmp_path, lab, evaluator=FeatureExtractorEvaluator(lag=2))
    md = paths["markdown"].read_text()
    head = md.split("## How it was validated")[0]
    assert "**Warning: random weights.**" in head  # before any table: the first thing read
    scheme = md.split("## How it was validated")[1].split("|")[0]
    assert "5-fold blocked cross-validation" in scheme
    assert "the 8 frames on each side of the test block" in scheme  # gap = the clip length
    assert "lag of 2 frames" in scheme
    html = paths["html"].read_text()
    assert 'class="warning"' in html and "How it was validated" in html
    saved = json.loads(paths["json"].read_text())
    assert saved["random_weights"] is True and "blocked" in saved["validation"]


def test_trained_weights_no_warning_and_grouped_folds(tmp_path):
    df, lab = table({"source": "deepmind", "checkpoint": "flow_imagenet"})
    groups = np.repeat(["video a", "video b", "video c", "video d"], 20)
    paths = write_evaluation_report(df, tmp_path, lab, groups=groups)
    md = paths["markdown"].read_text()
    assert "random weights" not in md.lower()
    assert "4-fold cross-validation over whole videos" in md
    assert "lag of 1 frame." in md
