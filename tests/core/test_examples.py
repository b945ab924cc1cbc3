"""Every ``examples/*.py`` runs as a user would run it, and writes the files its docstring promises.

The scripts run in subprocesses (two at a time: most of each is importing TensorFlow) with random
weights (``NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS=random``), each into its own output folder; then one
test per script checks what it wrote. A new example needs a checker here (a test says so).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from test_example_read_feature_table import check_read_feature_table

from napari_flow_features import ModelSerializer, open_video, read_flow, read_table

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))

pytestmark = pytest.mark.skipif(not SCRIPTS, reason="needs the source tree (examples/)")


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c[0] == "f" and c[1:].isdigit()]


# -- what each example promises ------------------------------------------------------------------


def check_seed_api(out: Path, stdout: str) -> None:
    for name in ("whisker", "whisker_reversed"):
        assert open_video(out / "videos" / f"{name}.mp4").shape == (24, 64, 64)
        flow = read_flow(out / "flow" / f"{name}.npy")
        assert flow.shape == (23, 64, 64, 2) and flow.dtype == np.float32
        assert np.isfinite(flow).all() and np.abs(flow).max() > 0.5  # the whisker moves
    assert read_flow(out / "whisker_flow.npy").shape == (23, 64, 64, 2)
    assert "sequence batch (4, 16, 64, 64, 2)" in stdout  # 2 files x 2 windows of 16 at stride 8
    assert "feature maps (2, 8, 8, 8, 480)" in stdout  # Mixed_3c: time / 2, space / 8, 480 ch

    versions = ModelSerializer.list_available_versions(out / "models", "whisker-i3d")
    assert len(versions) == 2
    meta = ModelSerializer.read_metadata(out / "models", "whisker-i3d", versions[0])
    assert meta["endpoint"] == "Mixed_3c" and meta["author"] == "seed_api.py"
    assert "latest reproduces the features: True" in stdout

    figures = out / "figures"
    for name in ("layer", "evolution", "heatmap", "activation_3d", "comparative"):
        image = iio.imread(figures / f"{name}.png")
        assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 10, name
    gif = iio.imread(figures / "evolution.gif", index=None)
    assert gif.shape[0] == 8  # one frame per Mixed_3c time step of a 16-frame clip

    for name in ("whisker", "whisker_reversed"):
        table = read_table(out / "features" / f"{name}_gap.parquet")
        assert list(table["frame"]) == list(range(24))
        assert len(feature_columns(table)) == 480
        assert table.attrs["endpoint"] == "Mixed_3c" and table.attrs["random_weights"]
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv").set_index("metric")["value"]
    assert metrics["rows"] == 48 and metrics["channels"] == 480
    assert 0 <= metrics["probe_accuracy"] <= 1 and metrics["chance_accuracy"] == 0.5


def check_extract_gap_features(out: Path, stdout: str) -> None:
    table = read_table(out / "features.parquet")
    assert list(table["frame"]) == list(range(40))
    columns = feature_columns(table)
    assert len(columns) == 832  # Mixed_4f
    assert np.isfinite(table[columns].to_numpy()).all()
    assert table.attrs["post_encoder"] == "gap" and table.attrs["flow_method"] == "dis"
    assert table.attrs["random_weights"]  # the test's weights, and the table says so
    csv = read_table(out / "features.csv")
    np.testing.assert_allclose(csv[columns].to_numpy(), table[columns].to_numpy(), rtol=1e-6)
    assert "40 frames x 832 features" in stdout and "RANDOM WEIGHTS" in stdout


def check_landmark_features(out: Path, stdout: str) -> None:
    tracks = pd.read_csv(out / "landmarks.csv")
    table = read_table(out / "landmark_features.parquet")
    assert len(table) == 80 and set(table["landmark"]) == {"whisker base", "background"}
    for name, rows in table.groupby("landmark"):
        track = tracks[tracks["track_id"] == name].sort_values("frame")
        rows = rows.sort_values("frame")
        assert list(rows["frame"]) == list(range(40))
        np.testing.assert_allclose(rows[["x", "y"]].to_numpy(), track[["x", "y"]].to_numpy())
    columns = feature_columns(table)
    assert len(columns) == 832 and np.isfinite(table[columns].to_numpy()).all()
    assert table.attrs["post_encoder"] == "point"
    assert "whisker base: features change by" in stdout


def check_compare_flow_methods(out: Path, stdout: str) -> None:
    errors = pd.read_csv(out / "flow_errors.csv").set_index("method")
    assert list(errors.index) == ["farneback", "dis", "tvl1-skimage"]
    assert (errors["error_moving_px"] < 1.0).all() and (errors["error_still_px"] < 1.0).all()
    assert (errors["seconds"] > 0).all()
    image = iio.imread(out / "flow_speed.png")
    assert image.shape[1] > image.shape[0] > 200  # four panels side by side


CHECKS: dict[str, Callable[[Path, str], None]] = {
    "seed_api": check_seed_api,
    "extract_gap_features": check_extract_gap_features,
    "landmark_features": check_landmark_features,
    "compare_flow_methods": check_compare_flow_methods,
    "read_feature_table": check_read_feature_table,
}


# -- running them --------------------------------------------------------------------------------


def run_example(script: Path, out: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS": "random"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess, float]]:
    """Every example, run once (two at a time), each into a fresh folder."""
    base = tmp_path_factory.mktemp("examples")
    outs = {s.stem: base / s.stem for s in SCRIPTS}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s.stem: pool.submit(run_example, s, outs[s.stem]) for s in SCRIPTS}
        return {name: (outs[name], *f.result()) for name, f in futures.items()}


def test_every_example_is_checked_and_introduces_itself():
    assert sorted(CHECKS) == sorted(s.stem for s in SCRIPTS), "add a checker for a new example"
    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        doc = ast.get_docstring(tree)
        assert doc, f"{script.name}: the gallery shows its docstring"
        title, blank, *body = doc.splitlines()
        assert title.strip() and not blank.strip() and body, (
            f"{script.name}: title line, blank, text"
        )
        for node in ast.walk(tree):  # the public API only: no private-looking module paths
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("napari_flow_features."), script.name
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("napari_flow_features.") for a in node.names)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_and_writes_what_it_promises(runs, name):
    out, done, seconds = runs[name]
    assert done.returncode == 0, f"{name} failed after {seconds:.0f} s:\n{done.stderr[-3000:]}"
    CHECKS[name](out, done.stdout)
