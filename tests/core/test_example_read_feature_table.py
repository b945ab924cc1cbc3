"""examples/read_feature_table.py reads the tables the package writes (test_examples.py runs it
as a user does, with this file's checker)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.io.tables import write_table

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "read_feature_table.py"
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="needs the source tree (examples/)")


def check_read_feature_table(out: Path, stdout: str) -> None:
    """What the script promises for `python examples/read_feature_table.py OUT` (no --table)."""
    table = pd.read_parquet(out / "whisker_gap.parquet")
    features = [c for c in table.columns if c[0] == "f" and c[1:].isdigit()]
    assert len(table) == 24 and len(features) == 480  # Mixed_3c: 480 channels
    summary = (out / "summary.txt").read_text()
    assert summary.strip() in stdout
    assert "endpoint=Mixed_3c" in summary and "post_encoder=gap" in summary
    assert "weights: random  (RANDOM: these features are untrained)" in summary
    assert "rows: 24; frames 0…23 (24 distinct); 480 feature columns" in summary
    assert "most varying features: f" in summary


def _load_example():
    spec = importlib.util.spec_from_file_location("read_feature_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_example_reads_a_point_table_with_its_settings(tmp_path, suffix):
    """A landmark table (two landmarks, one outside the frame at frame 3) written by the package,
    read with pandas and pyarrow only."""
    rng = np.random.default_rng(0)
    rows = []
    for frame in range(6):
        for landmark in ("snout", "ear"):
            missing = landmark == "ear" and frame == 3
            values = np.full(8, np.nan) if missing else rng.normal(size=8) * (1 + frame)
            rows.append({"frame": frame, "landmark": landmark, "x": 10.0, "y": 5.0}
                        | {f"f{c:04d}": v for c, v in enumerate(values)})  # fmt: skip
    table = pd.DataFrame(rows)
    table.attrs.update(
        endpoint="Mixed_4f", stream="flow", post_encoder="point", interpolation="bilinear",
        weights={"source": "deepmind"}, random_weights=False,
    )  # fmt: skip
    path = write_table(table, tmp_path / f"points{suffix}")
    example = _load_example()
    read, settings = example.read_table_and_settings(path)
    pd.testing.assert_frame_equal(read.reset_index(drop=True), table, check_dtype=False)
    assert settings["endpoint"] == "Mixed_4f" and settings["weights"] == {"source": "deepmind"}
    example.main([str(tmp_path / "out"), "--table", str(path)])
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert summary[0] == (
        "settings: endpoint=Mixed_4f, stream=flow, post_encoder=point, interpolation=bilinear"
    )
    assert summary[1] == "weights: deepmind"
    assert "rows: 12; frames 0…5 (6 distinct); 8 feature columns" in summary
    assert "landmarks (landmark): 2, 6 rows each" in summary
    assert "rows with missing features: 1 (NaN, never a clamped value)" in summary
    # Features grow with the frame here, so the largest mean magnitude is at the last frame.
    assert any(line.endswith("at frame 5") for line in summary)


def test_example_reads_the_settings_of_a_streamed_table(tmp_path):
    """Long runs stream their rows (io/table_stream.py): settings in the file's key-value metadata."""
    from napari_flow_features.io.table_stream import TableStreamWriter

    writer = TableStreamWriter(tmp_path / "streamed.parquet")
    for frame in range(3):
        writer.write(pd.DataFrame({"frame": [frame], "f0000": [float(frame)], "f0001": [1.0]}))
    path = writer.close({"endpoint": "Mixed_5c", "weights": {"source": "random"}})
    table, settings = _load_example().read_table_and_settings(path)
    assert list(table["frame"]) == [0, 1, 2]
    assert settings["endpoint"] == "Mixed_5c" and settings["weights"] == {"source": "random"}
