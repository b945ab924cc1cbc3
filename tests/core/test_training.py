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
from napari_flow_features.model.training import find_labelled_files, split_by_file, train_classifier


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
    _, report = train_classifier(
        extractor, data, epochs=4, batch_size=4, verbose=0, registry=(tmp_path / "reg", "motion")
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
                 "--endpoint", "Mixed_3c", "--clip-length", "8", "--epochs", "3",
                 "--model-name", "motion"]) == 0  # fmt: skip
    report = json.loads((reg / "motion_training_report.json").read_text())
    assert report["final_version"] in ModelSerializer.list_available_versions(reg, "motion")
    capsys.readouterr()
    assert main(["model", "evaluate", "--data-dir", str(data), "--output-dir", str(reg),
                 "--endpoint", "Mixed_3c", "--model-name", "motion"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    accuracy = float(out.split("accuracy ")[1].split(" ")[0])
    assert accuracy >= 0.9
    assert main(["model", "evaluate", "--data-dir", str(data), "--output-dir", str(reg),
                 "--model-name", "enc"]) == 2  # fmt: skip
    assert "not a trained classifier" in capsys.readouterr().err
