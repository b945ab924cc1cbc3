"""Training on a tiny synthetic two-class set (leftward vs rightward motion), and the model CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_flow_features.cli import main
from napari_flow_features.errors import BadInputError
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.model.registry import ModelSerializer
from napari_flow_features.model.training import (
    TrainingSettings,
    find_labelled_files,
    split_by_file,
    train_classifier,
)


def make_motion_set(root, per_class=6, seed=0):
    """Noisy flow drifting left (dx = -3 px/frame) or right (+3): 15 fields of 32x32 per file."""
    rng = np.random.default_rng(seed)
    for name, dx in (("left", -3.0), ("right", 3.0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            flow = rng.normal(0, 1.0, (15, 32, 32, 2)).astype(np.float32)
            flow[..., 0] += dx
            np.save(root / name / f"{name}{i}.npy", flow)
    return root


def test_split_is_by_file_and_stratified():
    labels = [0] * 6 + [1] * 6
    train, val = split_by_file(labels, 0.25, seed=0)
    assert not set(train) & set(val) and sorted(train + val) == list(range(12))
    assert sum(labels[i] == 0 for i in val) == 2 and sum(labels[i] == 1 for i in val) == 2
    assert split_by_file(labels, 0.25, seed=0) == (train, val)  # reproducible


def test_training_beats_chance_and_checkpoints_through_the_registry(tmp_path):
    data = make_motion_set(tmp_path / "data")
    extractor = DynamicFeatureExtractor(endpoint="Mixed_3c", clip_length=8, stride=4)
    settings = TrainingSettings(epochs=4, batch_size=4)
    _, report = train_classifier(
        extractor, data, settings, verbose=0, registry=(tmp_path / "reg", "motion")
    )
    assert report["classes"] == ["left", "right"]
    assert report["train_windows"] == 24 and report["val_windows"] == 12  # 4 windows per file
    assert not set(report["train_files"]) & set(report["val_files"])
    assert max(report["history"]["val_accuracy"]) >= 0.9  # chance is 0.5
    versions = ModelSerializer.list_available_versions(tmp_path / "reg", "motion")
    assert versions == report["registry_versions"] and versions


def test_label_csv_and_bad_data(tmp_path):
    data = make_motion_set(tmp_path / "data", per_class=2)
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        w.writerow(["data/left/left0.npy", "L"])
        w.writerow(["data/right/right0.npy", "R"])
    files, _, classes = find_labelled_files(tmp_path / "labels.csv")
    assert classes == ["L", "R"] and files[0].name == "left0.npy"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "only").mkdir()
    with pytest.raises(BadInputError, match="at least 2 classes"):
        find_labelled_files(tmp_path / "one")
    (tmp_path / "bad.csv").write_text("path,class\nx,y\n")
    with pytest.raises(BadInputError, match="'file' and 'label'"):
        find_labelled_files(tmp_path / "bad.csv")
    assert data.is_dir()


def test_model_cli_implement_train_evaluate(tmp_path, capsys):
    data = make_motion_set(tmp_path / "data")
    reg = tmp_path / "reg"
    assert main(["model", "implement", "--output-dir", str(reg), "--endpoint", "Mixed_3c",
                 "--model-name", "enc"]) == 0  # fmt: skip
    assert ModelSerializer.list_available_versions(reg, "enc")
    assert main(["model", "train", "--data-dir", str(data), "--output-dir", str(reg),
                 "--endpoint", "Mixed_3c", "--clip-length", "8", "--epochs", "8",
                 "--model-name", "motion"]) == 0  # fmt: skip
    report = json.loads((reg / "motion_training_report.json").read_text())
    assert report["final_version"] in ModelSerializer.list_available_versions(reg, "motion")
    capsys.readouterr()
    assert main(["model", "evaluate", "--data-dir", str(data), "--output-dir", str(reg),
                 "--endpoint", "Mixed_3c", "--model-name", "motion"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    accuracy = float(out.split("accuracy ")[1].split(" ")[0])
    assert accuracy >= 0.9
    # The encoder's own features, evaluated with splits by file: left and right drift separate.
    final = report["final_version"]
    metrics = json.loads((reg / f"motion_{final}_evaluation" / "metrics.json").read_text())
    assert metrics["metrics"]["probe_accuracy"] >= 0.9 and metrics["metrics"]["rows"] == 12 * 16
    assert metrics["metrics"]["channels"] == 480  # Mixed_3c; the file column is no feature
    saved = json.loads((reg / f"motion_{final}_evaluation.json").read_text())
    assert saved["encoder_features"]["probe_accuracy"] == metrics["metrics"]["probe_accuracy"]
    assert main(["model", "evaluate", "--data-dir", str(data), "--output-dir", str(reg),
                 "--model-name", "enc"]) == 2  # fmt: skip
    assert "not a trained classifier" in capsys.readouterr().err


def test_model_cli_save_format_and_export(tmp_path, capsys):
    import numpy as np
    import tensorflow as tf

    reg = tmp_path / "reg"
    assert main(["model", "implement", "--output-dir", str(reg), "--endpoint", "Mixed_3c",
                 "--model-name", "enc", "--save-format", "h5"]) == 0  # fmt: skip
    (version,) = ModelSerializer.list_available_versions(reg, "enc")
    assert ModelSerializer.read_metadata(reg, "enc", version)["format"] == "h5"
    export = tmp_path / "served"
    assert main(["model", "export", "--output-dir", str(reg), "--model-name", "enc",
                 "--export-dir", str(export), "--endpoints", "Mixed_3b,Mixed_3c"]) == 0  # fmt: skip
    assert f"exported enc version {version}" in capsys.readouterr().out
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    clip = np.random.default_rng(0).uniform(-1, 1, (1, 8, 32, 32, 2)).astype(np.float32)
    outputs = serve(flow=tf.constant(clip))
    assert sorted(outputs) == ["Mixed_3b", "Mixed_3c"]
    model, _, _ = ModelSerializer.load_model(reg, "enc", version)
    np.testing.assert_allclose(outputs["Mixed_3c"].numpy(), model(clip).numpy(), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    assert outputs["Mixed_3b"].shape[-1] == 256
    assert main(["model", "export", "--output-dir", str(reg), "--model-name", "enc",
                 "--export-dir", str(tmp_path / "bad"), "--endpoints", "Mixed_9z"]) == 2  # fmt: skip
    assert "Mixed_9z" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_model_test_writes_per_frame_tables(tmp_path, capsys):
    from napari_flow_features.io.tables import read_table

    data = make_motion_set(tmp_path / "data", per_class=1)
    flows = tmp_path / "flows"
    flows.mkdir()
    for f in sorted(data.glob("*/*.npy")):
        (flows / f.name).write_bytes(f.read_bytes())
    reg = tmp_path / "reg"
    assert main(["model", "train", "--data-dir", str(tmp_path / "data"), "--output-dir", str(reg),
                 "--endpoint", "Mixed_3c", "--clip-length", "8", "--epochs", "1",
                 "--model-name", "motion", "--val-fraction", "0"]) == 0  # fmt: skip
    assert main(["model", "test", "--data-dir", str(flows), "--output-dir", str(tmp_path / "out"),
                 "--registry-dir", str(reg), "--model-name", "motion", "--endpoint", "Mixed_3c",
                 "--clip-length", "8", "--num-samples", "1", "--format", "csv"]) == 0  # fmt: skip
    (table_path,) = (tmp_path / "out").glob("*_features.csv")
    table = read_table(table_path)
    assert len(table) == 16 and table.columns[0] == "frame" and table.shape[1] == 1 + 480
    assert table.attrs["post_encoder"] == "gap" and table.attrs["registry_version"]
    assert np.isfinite(table.drop(columns="frame").to_numpy()).all()
    # --num-samples also writes every figure kind for each sequence tested.
    (figures,) = (tmp_path / "out" / "figures").iterdir()
    names = sorted(p.name.split("_", 1)[1] for p in figures.iterdir())
    assert "channels.png" in names and "comparative.png" in names and "evolution.png" in names
    for kind in ("heatmap", "3d", "animation"):
        assert sum(n.startswith(kind) for n in names) == 3  # features 0, 1, 2


def test_gap_table_rows_follow_the_window_rule():
    """With a model whose Mixed_3c output is known, rows equal the hand-mapped window values."""
    from napari_flow_features.extract.per_frame import gap_feature_table
    from napari_flow_features.extract.post_encoders import assign_frames

    ext = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", clip_length=8, stride=4, batch_size=3)
    flow = np.random.default_rng(3).normal(0, 5, (19, 16, 16, 2)).astype(np.float32)  # 20 frames
    table = gap_feature_table(ext, flow, "x")
    windows = ext.windows(20)
    maps = ext.extract_features(np.stack([ext.preprocess_window(flow, w) for w in windows]))
    pooled = maps.mean(axis=(2, 3))  # (N, T', C)
    a = assign_frames([w.start for w in windows], 20, 8, pooled.shape[1])
    for t in (0, 5, 11, 19):
        k, tau = a.window[t], a.tau[t]
        lo = int(np.floor(tau))
        hi = min(lo + 1, pooled.shape[1] - 1)
        expected = (1 - (tau - lo)) * pooled[k, lo] + (tau - lo) * pooled[k, hi]
        np.testing.assert_allclose(
            table.iloc[t, 1:].to_numpy(float), expected, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("epochs", 2.0), ("batch_size", True), ("seed", -1), ("learning_rate", 0.0),
     ("learning_rate", float("nan")), ("val_fraction", 1.0), ("val_fraction", -0.1),
     ("dropout", 1.0)],
)  # fmt: skip
def test_training_settings_name_the_value_out_of_range(field, value):
    with pytest.raises(BadInputError, match=rf"^{field} must be"):
        TrainingSettings(**{field: value})
    edge = {"epochs": 1, "batch_size": 1, "seed": 0, "val_fraction": 0.0, "dropout": 0.0}
    assert TrainingSettings(**edge).val_fraction == 0.0  # the lowest allowed values pass
