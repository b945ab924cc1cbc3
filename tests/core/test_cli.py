"""The flow-features command: help, sample, demo, import hygiene, packaging."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.cli import main
from napari_flow_features.io.tables import read_table
from napari_flow_features.io.video import VideoArray
from napari_flow_features.sample import make_whisker_sample

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("sample", "demo", "flow", "sequences", "weights", "model", "extract"):
        assert command in out


def test_sample_writes_video_landmarks_and_ground_truth(tmp_path, capsys):
    assert main(["sample", "--output", str(tmp_path)]) == 0
    video = VideoArray(tmp_path / "whisker.mp4")
    truth = make_whisker_sample()
    assert video.shape == truth.video.shape
    assert np.abs(video[10].astype(int) - truth.video[10]).mean() < 2
    table = read_table(tmp_path / "whisker_landmarks.csv")
    assert list(table.columns) == ["frame", "landmark", "x", "y"]
    np.testing.assert_allclose(table[["y", "x"]].to_numpy(), truth.landmarks[:, 1:])
    with np.load(tmp_path / "whisker_ground_truth.npz", allow_pickle=False) as gt:
        np.testing.assert_array_equal(gt["flow"], truth.ground_truth_flow)
    assert "whisker.mp4" in capsys.readouterr().out


def test_demo_writes_the_sample_and_its_flow(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "demo") in out
    assert (tmp_path / "demo" / "sample" / "whisker.mp4").is_file()
    flow = np.load(tmp_path / "demo" / "flow" / "whisker_dis.npy")
    assert flow.shape == (95, 240, 320, 2)
    error = float(out.split("endpoint error vs ground truth: ")[1].split(" px")[0])
    assert error < 1.0  # DIS follows the whisker to within a pixel
    gap = read_table(tmp_path / "demo" / "features" / "whisker_gap.parquet")
    point = read_table(tmp_path / "demo" / "features" / "whisker_point.parquet")
    assert gap.shape == (96, 1 + 832) and point.shape == (96, 4 + 832)
    assert point.attrs["post_encoder"] == "point" and not point["f0000"].isna().any()
    heat = np.load(tmp_path / "demo" / "features" / "whisker_heatmap_l2.npy")
    assert heat.shape == (96, 15, 20)
    # Figures, and the report with the swing direction as labels: motion features tell it apart.
    report = json.loads((tmp_path / "demo" / "evaluation" / "metrics.json").read_text())
    assert report["metrics"]["probe_accuracy"] > report["metrics"]["chance_accuracy"] + 0.3
    assert (tmp_path / "demo" / "evaluation" / "report.html").is_file()
    figures = list((tmp_path / "demo" / "figures").rglob("*"))
    assert (
        sum(p.suffix == ".gif" for p in figures) == 3
        and sum(p.suffix == ".png" for p in figures) > 8
    )


def test_errors_exit_2_with_message(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["sample", "--output", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2
    assert "flow-features: error:" in err and "file" in err


def test_console_script_runs():
    exe = Path(sys.executable).with_name("flow-features")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "demo" in result.stdout


def test_package_import_is_light():
    """The package and its napari adapters import no TensorFlow, Keras, OpenCV, PyAV or Qt."""
    code = (
        "import sys, napari_flow_features, napari_flow_features.napari._reader, "
        "napari_flow_features.napari._writer, napari_flow_features.napari._sample_data\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'cv2', 'av', 'qtpy', 'PyQt6', 'napari') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_validates_with_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-flow-features")
    manifest.validate_imports()
    assert {r.command.split(".")[-1] for r in manifest.contributions.readers} == {
        "get_video_reader",
        "get_flow_reader",
        "get_table_reader",
    }


def test_wheel_ships_the_manifest(tmp_path):
    """The symlinked napari.yaml is copied into the wheel and named by the entry point."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("napari_flow_features-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        manifest = zf.read("napari_flow_features/napari.yaml").decode()
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        entry_text = zf.read(entry_points).decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "napari-flow-features = napari_flow_features:napari.yaml" in entry_text
    assert "flow-features = napari_flow_features.cli:entry" in entry_text


def test_flow_command_for_a_video_and_a_folder(tmp_path, capsys):
    from napari_flow_features.io.video import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    frames = make_whisker_sample(n_frames=6, height=60, width=80).video
    write_video(videos / "w.mp4", frames, crf=5)
    out = tmp_path / "w.npy"
    assert main(["flow", str(videos / "w.mp4"), "-o", str(out), "--method", "dis"]) == 0
    assert np.load(out).shape == (5, 60, 80, 2)
    assert main(["flow", "--input-dir", str(videos), "--output-dir", str(tmp_path / "f"),
                 "--max-side", "40", "--workers", "1"]) == 0  # fmt: skip
    assert np.load(tmp_path / "f" / "w.npy").shape == (5, 30, 40, 2)
    capsys.readouterr()
    assert main(["flow", "--input-dir", str(videos), "--output-dir", str(tmp_path / "f"),
                 "--max-side", "40"]) == 0  # fmt: skip
    assert "skipped" in capsys.readouterr().out
    assert main(["flow", str(videos / "w.mp4")]) == 2  # no output given
    assert "VIDEO -o OUT.npy" in capsys.readouterr().err


def test_sequences_commands(tmp_path, capsys):
    from napari_flow_features.io.video import write_video

    video = tmp_path / "w.mp4"
    write_video(video, make_whisker_sample(n_frames=20, height=48, width=64).video, crf=5)
    out = tmp_path / "seq"
    assert main(["sequences", "compute", "--video-path", str(video), "--output-dir", str(out),
                 "--method", "dis", "--sequence-length", "8", "--stride", "4"]) == 0  # fmt: skip
    windows = np.load(out / "w_sequences.npy")
    assert windows.shape == (4, 8, 48, 64, 2)  # starts 0, 4, 8, 12
    assert np.abs(windows).max() <= 1.0
    out2 = tmp_path / "seq2"
    assert main(["sequences", "load", "--input-dir", str(out), "--output-dir", str(out2),
                 "--quantize"]) == 0  # fmt: skip
    assert "2 windows of 16 frames" in capsys.readouterr().out  # 20 frames: starts 0 and 4
    assert np.load(out2 / "w_sequences.npy").shape == (2, 16, 48, 64, 2)


def test_evaluate_and_visualize_commands(tmp_path, capsys):
    """Labels that follow the features' structure score high; every figure kind is written."""
    from napari_flow_features.io.tables import write_table

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12) % 2, 10)
    values = rng.normal(0, 1, (120, 6)) + 4 * labels[:, None]
    table = pd.DataFrame(values, columns=[f"f{c:04d}" for c in range(6)])
    table.insert(0, "frame", np.arange(120))
    features = write_table(table, tmp_path / "feat.parquet", {"clip_length": 4})
    pd.DataFrame({"frame": np.arange(120), "label": np.where(labels, "run", "rest")}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    report = tmp_path / "report"
    assert main(["evaluate", str(features), "--labels", str(tmp_path / "labels.csv"),
                 "--compare", str(features), "--output", str(report)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "probe_accuracy: 1" in out and "cka: 1" in out
    payload = json.loads((report / "metrics.json").read_text())
    assert payload["metrics"]["probe_accuracy"] == 1.0 and payload["metrics"]["cka"] == 1.0
    html = (report / "report.html").read_text()
    for name in payload["figures"].values():
        assert (report / name).is_file() and f'src="{name}"' in html
    assert "confusion.png" in payload["figures"].values()
    assert "| discriminability | probe_accuracy | 1 |" in (report / "report.md").read_text()

    maps = rng.normal(size=(2, 4, 3, 5, 8)).astype(np.float32)
    np.save(tmp_path / "maps.npy", maps)
    flow = np.zeros((15, 12, 20, 2), np.float32)
    np.save(tmp_path / "flow.npy", flow)
    figs = tmp_path / "figs"
    assert main(["visualize", str(tmp_path / "maps.npy"), "--kind", "all", "--features", "1,7",
                 "--flow", str(tmp_path / "flow.npy"), "--output", str(figs)]) == 0  # fmt: skip
    written = sorted(p.name for p in figs.iterdir())
    assert len(written) == 3 + 3 * 2 and "maps_animation_f0007.gif" in written
    assert main(["visualize", str(features), "--kind", "all", "--output", str(figs)]) == 0
    tables = sorted(p.name for p in figs.glob("feat_*"))
    assert tables == ["feat_comparative.png", "feat_evolution.png", "feat_heatmap_f0000.png",
                      "feat_heatmap_f0001.png", "feat_heatmap_f0002.png"]  # fmt: skip
    capsys.readouterr()
    assert main(["visualize", str(features), "--kind", "3d", "--output", str(figs)]) == 2
    assert "needs spatial maps" in capsys.readouterr().err
    assert main(["visualize", str(tmp_path / "maps.npy"), "--features", "9",
                 "--output", str(figs)]) == 2  # fmt: skip
    assert "Feature 9 does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(features), "--labels", str(tmp_path / "nope.csv"),
                 "--output", str(report)]) == 2  # fmt: skip
    assert "Labels file not found" in capsys.readouterr().err


def test_evaluate_several_videos_splits_by_video(tmp_path, capsys):
    from napari_flow_features.io.tables import write_table

    rng = np.random.default_rng(1)
    label_rows, paths = [], []
    for video, runs in (("mouse1", 6), ("mouse2", 4)):
        labels = np.repeat(np.arange(runs) % 2, 10)  # mouse1: 60 frames, mouse2: 40
        values = rng.normal(0, 1, (len(labels), 5)) + 5 * labels[:, None]
        table = pd.DataFrame(values, columns=[f"f{c:04d}" for c in range(5)])
        table.insert(0, "frame", np.arange(len(labels)))
        paths.append(str(write_table(table, tmp_path / f"{video}.parquet")))
        label_rows.append(pd.DataFrame({"video": video, "frame": np.arange(len(labels)),
                                        "label": np.where(labels, "groom", "still")}))  # fmt: skip
    labels = pd.concat(label_rows)
    labels = labels[~((labels.video == "mouse2") & (labels.frame >= 30))]  # mouse2 30-39 unlabelled
    labels.to_csv(tmp_path / "labels.csv", index=False)
    report = tmp_path / "report"
    assert main(["evaluate", *paths, "--labels", str(tmp_path / "labels.csv"),
                 "--output", str(report)]) == 0  # fmt: skip
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    assert metrics["rows"] == 100 and metrics["probe_accuracy"] == 1.0
    # labelled: mouse1 30 still + 30 groom, mouse2 20 still + 10 groom → chance 50 / 90
    assert metrics["chance_accuracy"] == pytest.approx(50 / 90)
    capsys.readouterr()
    assert main(["evaluate", *paths, "--compare", paths[0], "--output", str(report)]) == 2
    assert "give one FEATURES" in capsys.readouterr().err
