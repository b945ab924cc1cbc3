"""The command line as a package: fast help, -v/-q through logging, no print in the library."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.cli import main
from napari_flow_features.errors import BadInputError
from napari_flow_features.io.video import write_video
from napari_flow_features.sample import make_whisker_sample

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "napari_flow_features"
COMMANDS = ("sample", "flow", "sequences", "weights", "model", "extract", "evaluate", "visualize",
            "map", "demo", "cache")  # fmt: skip


def test_help_imports_neither_tensorflow_nor_numpy():
    """``--help`` (top level and every sub-command) stays fast: no TensorFlow, Keras or OpenCV;
    the top level and most sub-commands not even NumPy or pandas.
    """
    code = (
        "import sys, contextlib, io\n"
        "from napari_flow_features.cli import main\n"
        "def run(argv):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code == 0, (argv, exc.code)\n"
        "    assert 'usage: flow-features' in out.getvalue(), argv\n"
        "run(['--help'])\n"
        "light = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pandas', 'tqdm'})\n"
        f"for command in {COMMANDS!r}:\n"
        "    run([command, '--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'cv2'})\n"
        "print(light, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == "[] []", done.stdout + done.stderr


def test_python_dash_m_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "napari_flow_features.cli", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.startswith("flow-features ")


def test_cli_choices_are_the_library_lists():
    """The choices the parser offers without importing the library are the library's own."""
    from napari_flow_features.analysis import behaviour_map
    from napari_flow_features.analysis.figures import FIGURE_KINDS
    from napari_flow_features.cli import _common, visualize
    from napari_flow_features.cli import map as map_command
    from napari_flow_features.flow.compute import DIS_PRESETS, METHODS
    from napari_flow_features.io.poses import POINTS_FORMATS
    from napari_flow_features.model.weights import CHECKPOINTS

    assert _common.FLOW_METHODS == METHODS
    assert _common.DIS_PRESETS == DIS_PRESETS
    assert _common.POINTS_FORMATS == POINTS_FORMATS
    assert _common.CHECKPOINTS == CHECKPOINTS
    assert visualize.FIGURE_KINDS == FIGURE_KINDS
    assert map_command.METHODS == behaviour_map.METHODS
    assert map_command.CLUSTERINGS == behaviour_map.CLUSTERINGS


def _print_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]


def test_library_modules_log_and_never_print():
    """Outside ``cli/`` nothing calls ``print``: library modules log (the CLI prints)."""
    modules = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(modules) > 40 and PACKAGE / "_tf_env.py" in modules
    printing = {str(p.relative_to(PACKAGE)): lines for p in modules if (lines := _print_calls(p))}
    assert printing == {}
    # The check finds a print where there is one.
    assert _print_calls(PACKAGE / "cli" / "_common.py")


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "w.mp4"
    write_video(path, make_whisker_sample(n_frames=6, height=48, width=64).video, crf=5)
    return path


def _flow(capsys, video: Path, out: Path, *global_options: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*global_options, "flow", str(video), "-o", str(out), "--method", "dis"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quiet_default_and_verbose_output_of_flow(tiny_video, tmp_path, capsys):
    # Default: the result line on stdout, the progress bar on stderr, no log records.
    code, out, err = _flow(capsys, tiny_video, tmp_path / "a.npy")
    assert code == 0 and np.load(tmp_path / "a.npy").shape == (5, 48, 64, 2)
    assert out.startswith(f"wrote {tmp_path / 'a.npy'}: flow (5, 48, 64, 2)")
    assert "w.mp4" in err and "5/5" in err  # the bar
    assert "INFO" not in err and "DEBUG" not in err
    # Quiet: nothing at all, the same file.
    code, out, err = _flow(capsys, tiny_video, tmp_path / "q.npy", "-q")
    assert (code, out, err) == (0, "", "")
    np.testing.assert_array_equal(np.load(tmp_path / "q.npy"), np.load(tmp_path / "a.npy"))
    # Verbose: the same output plus INFO records naming their module; -vv adds DEBUG.
    code, out, err = _flow(capsys, tiny_video, tmp_path / "v.npy", "-v")
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'v.npy'}")
    assert "INFO napari_flow_features.cli.flow: flow of" in err and "fields/s" in err
    assert "DEBUG" not in err
    code, out, err = _flow(capsys, tiny_video, tmp_path / "vv.npy", "-vv")
    assert "DEBUG napari_flow_features.cli: command line:" in err and "'method': 'dis'" in err
    # The flags are accepted after the sub-command too, and they exclude each other.
    capsys.readouterr()
    assert main(["flow", str(tiny_video), "-o", str(tmp_path / "s.npy"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    with pytest.raises(SystemExit) as info:
        main(["-q", "flow", str(tiny_video), "-o", str(tmp_path / "x.npy"), "-v"])
    assert info.value.code == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_errors_are_shown_when_quiet(tmp_path, capsys):
    code = main(["-q", "flow", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "f.npy")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("flow-features: error:") and "missing.mp4" in captured.err


def test_logging_is_restored_after_each_run(tiny_video, tmp_path, capsys):
    import logging

    logger = logging.getLogger("napari_flow_features")
    before = (logger.level, list(logger.handlers), logger.propagate)
    _flow(capsys, tiny_video, tmp_path / "a.npy", "-vv")
    assert (logger.level, list(logger.handlers), logger.propagate) == before


def test_quiet_extract_keeps_the_random_weights_warning(tiny_video, tmp_path, capsys):
    out = tmp_path / "f.npz"
    assert main(["-q", "extract", str(tiny_video), "--weights", "random", "--endpoint",
                 "Conv3d_1a_7x7", "--runtime", "tensorflow", "-o", str(out)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    assert [line for line in captured.err.splitlines() if line.strip()] == [
        line for line in captured.err.splitlines() if line.startswith("WARNING: RANDOM WEIGHTS")
    ] and "WARNING: RANDOM WEIGHTS" in captured.err
    with np.load(out, allow_pickle=False) as saved:
        assert saved["frame"].tolist() == list(range(6)) and saved["features"].shape[0] == 6


def test_extract_to_file_checks_the_output_and_leaves_nothing_on_failure(tiny_video, tmp_path):
    from napari_flow_features.extract.to_file import check_output_path, extract_to_file

    with pytest.raises(BadInputError, match=r"must end in \.parquet, \.csv or \.npz"):
        check_output_path(tmp_path / "f.txt")
    with pytest.raises(BadInputError, match="Output folder does not exist"):
        check_output_path(tmp_path / "nope" / "f.csv")
    # A run stopped mid-way (Ctrl-C at the first progress report): no file, no temporary.
    from napari_flow_features.model.extractor import DynamicFeatureExtractor

    extractor = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", weights={"source": "random"},
                                        runtime="tensorflow")  # fmt: skip

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    for name in ("f.parquet", "f.csv", "f.npz"):
        with pytest.raises(KeyboardInterrupt):
            extract_to_file(
                str(tiny_video), extractor, tmp_path / name, post_encoder="gap", progress=interrupt
            )
    assert list(tmp_path.iterdir()) == []
    done = extract_to_file(str(tiny_video), extractor, tmp_path / "f.csv", post_encoder="none")
    assert done.rows == 6 and done.maps_path == tmp_path / "f_maps.npy"
    assert np.load(done.maps_path).shape == done.maps_shape
    assert done.metadata["post_encoder"] == "none"


def test_evaluate_feature_tables_and_labels_from_python(tmp_path):
    from napari_flow_features.analysis.study import (
        evaluate_feature_tables,
        read_labels,
        report_metrics,
    )
    from napari_flow_features.io.tables import write_table

    with pytest.raises(BadInputError, match="Labels file not found"):
        read_labels(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("frame,label\n0,run\n1.5,rest\n")
    with pytest.raises(BadInputError, match="frame"):
        read_labels(tmp_path / "bad.csv")
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(8) % 2, 10)
    table = pd.DataFrame(rng.normal(0, 1, (80, 4)) + 6 * labels[:, None],
                         columns=[f"f{c:04d}" for c in range(4)])  # fmt: skip
    table.insert(0, "frame", np.arange(80))
    path = write_table(table, tmp_path / "t.parquet")
    pd.DataFrame({"frame": np.arange(80), "label": labels}).to_csv(tmp_path / "l.csv", index=False)
    paths = evaluate_feature_tables([path], tmp_path / "report", labels=tmp_path / "l.csv")
    metrics = report_metrics(paths)
    assert metrics["probe_accuracy"] == 1.0 and metrics["rows"] == 80
    assert json.loads(paths["json"].read_text())["metrics"] == metrics


def test_figures_of_a_table_from_python(tmp_path):
    from napari_flow_features.analysis.figures import figures_of_file, marked_layer_name
    from napari_flow_features.io.tables import write_table

    table = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)),
                         columns=["f0000", "f0001", "f0002"])  # fmt: skip
    table.insert(0, "frame", np.arange(20))
    path = write_table(table, tmp_path / "t.csv", {"endpoint": "Mixed_4f", "random_weights": True})
    written = figures_of_file(path, tmp_path / "figs", kind="all", features=[1])
    assert [p.name for p in written] == ["t_evolution.png", "t_heatmap_f0001.png",
                                         "t_comparative.png"]  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in written)
    assert marked_layer_name("Mixed_4f", {"random_weights": True}) == "Mixed_4f [RANDOM WEIGHTS]"
    assert marked_layer_name("Mixed_4f", {"random_weights": False}) == "Mixed_4f"
