"""Feature tables: CSV/Parquet round trips with metadata, points conversion, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.errors import BadInputError, MismatchedMetadataError
from napari_flow_features.io import _atomic
from napari_flow_features.io.tables import (
    points_to_table,
    read_table,
    sidecar_path,
    table_to_points,
    write_table,
)


def feature_table(n=6, c=4):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "frame": np.arange(n),
            "landmark": 0,
            "x": rng.uniform(0, 50, n),
            "y": rng.uniform(0, 40, n),
        }
    )
    for k in range(c):
        df[f"f{k:04d}"] = rng.normal(size=n).astype(np.float32)
    df.loc[2, ["f0000", "f0001"]] = np.nan  # a missing landmark row stays NaN
    df.attrs = {"model": "i3d-flow", "clip_length": 16, "big": np.zeros((100, 100))}
    return df


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_values_and_metadata(tmp_path, suffix):
    df = feature_table()
    path = write_table(df, tmp_path / f"features{suffix}")
    back = read_table(path)
    assert list(back.columns) == list(df.columns)
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), df[["x", "y"]].to_numpy())
    np.testing.assert_allclose(back["f0002"].to_numpy(), df["f0002"].to_numpy(), rtol=1e-6)
    assert np.isnan(back.loc[2, "f0000"])
    assert back.attrs["model"] == "i3d-flow" and back.attrs["clip_length"] == 16
    assert back.attrs["omitted_from_metadata"] == ["big"]  # too large for JSON, said so
    if suffix == ".csv":
        assert json.loads(sidecar_path(path).read_text())["model"] == "i3d-flow"


def test_points_table_round_trip():
    data = np.array([[0, 10.5, 20.25], [1, 11.0, 21.0], [1, 30.0, 5.0]])
    features = pd.DataFrame({"track_id": [0, 0, 1], "f0000": [0.1, 0.2, 0.3]})
    table = points_to_table(data, features, {"source": "v.mp4"})
    assert list(table.columns) == ["frame", "landmark", "x", "y", "f0000"]
    assert table["x"].tolist() == [20.25, 21.0, 5.0]
    back_data, back_features = table_to_points(table)
    np.testing.assert_array_equal(back_data, data)
    assert back_features["track_id"].tolist() == [0, 0, 1]


def test_points_need_three_columns():
    with pytest.raises(BadInputError, match=r"\(t, y, x\)"):
        points_to_table(np.zeros((3, 2)))


def test_gap_table_without_xy_uses_frame_centre():
    df = pd.DataFrame({"frame": [0, 1], "f0000": [1.0, 2.0]})
    df.attrs = {"frame_shape": [41, 61]}
    data, _ = table_to_points(df)
    np.testing.assert_array_equal(data[:, 1:], [[20, 30], [20, 30]])
    df.attrs = {}
    with pytest.raises(BadInputError, match="'x', 'y'"):
        table_to_points(df)


def test_bad_tables(tmp_path):
    with pytest.raises(BadInputError, match="'frame'"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    with pytest.raises(BadInputError, match=r"\.xlsx"):
        write_table(feature_table(), tmp_path / "t.xlsx")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BadInputError, match=r"no 'frame' column.*other\.csv"):
        read_table(tmp_path / "other.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(BadInputError, match=r"broken\.parquet"):
        read_table(tmp_path / "broken.parquet")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    df = feature_table()
    final = tmp_path / "features.parquet"

    def explode(*args, **kwargs):
        raise OSError("disk full")

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", explode)
    with pytest.raises(OSError, match="disk full"):
        write_table(df, final)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    final = tmp_path / "keep.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError), _atomic.atomic_write_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_missing_output_folder(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        write_table(feature_table(), tmp_path / "nope" / "t.csv")


# -- sidecars a user or a tool edited (issue 21 fault probe) ---------------------------------------
def _gap_table(tmp_path, channels=4):
    """A Global Average Pooling table (no x, y) saved as CSV with the metadata a run records."""
    values = np.arange(5, dtype=np.float32)[:, None] * np.arange(1, channels + 1)
    df = pd.DataFrame(values, columns=[f"f{k:04d}" for k in range(channels)])
    df.insert(0, "frame", np.arange(5))
    meta = {"endpoint": "Mixed_5c", "channels": channels, "frame_shape": [41, 61],
            "post_encoder": "gap", "stop_frame": 5, "landmark_key": None,
            "loaded_model": {"source": "random", "endpoint": "Mixed_5c", "channels": channels}}  # fmt: skip
    return write_table(df, tmp_path / "gap.csv", meta)


def _edit_sidecar(path, **changes):
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


def test_table_reader_names_a_null_frame_shape(tmp_path):
    """A sidecar whose ``frame_shape`` is null: the napari reader raises an error naming the
    field (it raised a TypeError), and reads the table once the field is back."""
    from napari_flow_features.napari._reader import read_table_layer

    path = _gap_table(tmp_path)
    ((data, _kwargs, kind),) = read_table_layer(str(path))
    assert kind == "points"
    np.testing.assert_array_equal(data[:, 1:], np.tile([20.0, 30.0], (5, 1)))  # frame centre
    _edit_sidecar(path, frame_shape=None)
    with pytest.raises(BadInputError, match="'frame_shape' is null"):
        read_table_layer(str(path))


def test_table_reader_tolerates_or_names_every_null_field(tmp_path):
    """Every field of a run's sidecar set to null in turn: the reader opens the table or raises a
    :class:`BadInputError` (napari shows its message), never another exception."""
    from napari_flow_features.napari._reader import read_table_layer

    path = _gap_table(tmp_path)
    original = json.loads(sidecar_path(path).read_text())
    outcomes = {}
    for key in original:
        sidecar_path(path).write_text(json.dumps({**original, key: None}))
        try:
            read_table_layer(str(path))
            outcomes[key] = "read"
        except BadInputError:
            outcomes[key] = "named"
    assert outcomes["frame_shape"] == "named"
    assert outcomes["channels"] == outcomes["endpoint"] == "read"  # unknown is not a contradiction


def test_sidecar_channels_contradicting_the_table_is_an_error(tmp_path):
    """A sidecar that says 1024 channels beside a table of 832 feature columns does not load
    silently: the error names both numbers and the sidecar."""
    path = _gap_table(tmp_path, channels=832)
    assert read_table(path).attrs["channels"] == 832
    _edit_sidecar(path, channels=1024)
    with pytest.raises(MismatchedMetadataError, match=r"1024 channels.*832 feature columns.*gap"):
        read_table(path)


def test_sidecar_endpoint_contradicting_the_loaded_model_is_an_error(tmp_path):
    path = _gap_table(tmp_path)
    _edit_sidecar(path, endpoint="Mixed_4f")
    with pytest.raises(MismatchedMetadataError, match=r"'Mixed_4f'.*'Mixed_5c'"):
        read_table(path)


def test_parquet_metadata_contradicting_the_table_is_an_error(tmp_path):
    df = pd.DataFrame({"frame": [0, 1], "f0000": [1.0, 2.0], "f0001": [3.0, 4.0]})
    path = write_table(df, tmp_path / "t.parquet", {"channels": 3})
    with pytest.raises(MismatchedMetadataError, match=r"3 channels.*2 feature columns"):
        read_table(path)
    write_table(df, tmp_path / "t.parquet", {"channels": 2})
    assert read_table(path).attrs["channels"] == 2
