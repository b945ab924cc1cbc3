"""The plugin in a real viewer: sample data, readers, writers, and bad files as errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.io.flow_files import read_flo, write_flo, write_flow_npy
from napari_flow_features.io.tables import read_table
from napari_flow_features.io.video import VideoArray

PLUGIN = "napari-flow-features"


def test_sample_opens_with_video_and_landmarks(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "whisker")
    video, points = viewer.layers["whisker video"], viewer.layers["whisker base"]
    assert video.data.shape == (96, 240, 320)
    assert points.data.shape == (96, 3)
    assert list(points.features["track_id"].unique()) == [0]
    assert video.metadata["ground_truth_flow"].shape == (95, 240, 320, 2)
    viewer.dims.set_current_step(0, 40)
    shot = viewer.screenshot(canvas_only=True)
    assert shot.shape[-1] == 4 and shot[..., :3].std() > 5  # something real was drawn


def test_open_video_lazily_through_the_plugin(make_napari_viewer, small_video):
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(small_video, plugin=PLUGIN)
    assert isinstance(layer.data, VideoArray)
    assert layer.data.shape == (12, 40, 56)
    assert layer.metadata["fps"] == pytest.approx(20) and layer.metadata["n_frames"] == 12
    viewer.dims.set_current_step(0, 7)
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].max() > 100  # the bright block is on screen
    assert layer.data.decoded_frames < 12


def test_points_with_features_save_and_reopen_equal(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.array([[0, 10.0, 12.5], [1, 11.0, 13.0], [2, 12.5, 14.0]])
    features = pd.DataFrame({"track_id": [0, 0, 0], "f0000": [0.5, -1.0, 2.0]})
    layer = viewer.add_points(data, features=features, name="paw", metadata={"model": "m1"})
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"paw{suffix}"
        written = layer.save(str(path), plugin=PLUGIN)
        assert written == [str(path)]
        table = read_table(path)
        assert list(table.columns) == ["frame", "landmark", "x", "y", "f0000"]
        assert table.attrs["model"] == "m1"
        (back,) = viewer.open(str(path), plugin=PLUGIN)
        np.testing.assert_allclose(back.data, data)
        pd.testing.assert_frame_equal(
            back.features[["track_id", "f0000"]].reset_index(drop=True),
            features,
            check_dtype=False,
        )


def test_flow_files_open_as_colour_and_arrows(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    seq = np.zeros((4, 32, 48, 2), np.float32)
    seq[..., 0] = 3.0
    npy = write_flow_npy(tmp_path / "seq.npy", seq)
    colour, vectors = viewer.open(str(npy), plugin=PLUGIN)
    assert colour.rgb and colour.data.shape == (4, 32, 48, 3)
    assert colour.metadata["flow"].shape == (4, 32, 48, 2)
    assert vectors.data.shape[1:] == (2, 3)
    np.testing.assert_allclose(vectors.data[:, 1, 2], 3.0)  # dx in the arrows' x component
    flo = write_flo(tmp_path / "one.flo", seq[0])
    layers = viewer.open(str(flo), plugin=PLUGIN)
    assert layers[0].data.shape == (32, 48, 3)
    folder = tmp_path / "flos"
    folder.mkdir()
    for i in range(3):
        write_flo(folder / f"{i}.flo", seq[i])
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert layers[0].data.shape == (3, 32, 48, 3)


def test_image_and_flow_writers(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), name="img")
    img.save(str(tmp_path / "img.npy"), plugin=PLUGIN)
    np.testing.assert_array_equal(np.load(tmp_path / "img.npy"), img.data)
    img.save(str(tmp_path / "img.tif"), plugin=PLUGIN)
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "img.tif"), img.data)

    field = np.random.default_rng(0).normal(size=(8, 9, 2)).astype(np.float32)
    colour, _ = viewer.open(str(write_flo(tmp_path / "f.flo", field)), plugin=PLUGIN)
    colour.save(str(tmp_path / "again.flo"), plugin=PLUGIN)
    assert read_flo(tmp_path / "again.flo").tobytes() == field.tobytes()
    colour.save(str(tmp_path / "raw.npy"), plugin=PLUGIN)
    np.testing.assert_array_equal(np.load(tmp_path / "raw.npy"), field)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("text.mp4", b"not a video at all\n" * 10, "text.mp4"),
        ("empty.avi", b"", "empty"),
        ("bad.flo", b"\x00" * 40, "magic"),
        ("obj.npy", None, "object"),
        ("shape.npy", np.zeros((3, 4, 5), np.float32), r"\(H, W, 2\)"),
    ],
)
def test_bad_files_raise_clear_errors_and_viewer_survives(
    make_napari_viewer, tmp_path, small_video, name, content, message
):
    viewer = make_napari_viewer()
    path = tmp_path / name
    if content is None:
        np.save(path, np.array([object()], dtype=object), allow_pickle=True)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content)
    with pytest.raises(Exception, match=message) as info:
        viewer.open(str(path), plugin=PLUGIN)
    assert name in str(info.value) or message in str(info.value)
    assert len(viewer.layers) == 0
    viewer.open(small_video, plugin=PLUGIN)  # still works afterwards
    assert len(viewer.layers) == 1


def test_napari_points_csv_opens_with_our_reader(make_napari_viewer, tmp_path):
    """A CSV napari's own Points writer made opens through this plugin as the same points."""
    viewer = make_napari_viewer()
    data = np.array([[0, 10.0, 12.5], [3, 11.0, 13.0]])
    layer = viewer.add_points(data, features=pd.DataFrame({"kind": ["a", "b"]}), name="clicks")
    path = tmp_path / "clicks.csv"
    assert layer.save(str(path), plugin="napari") == [str(path)]
    assert pd.read_csv(path).columns[:4].tolist() == ["index", "axis-0", "axis-1", "axis-2"]
    (back,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(back.data, data)
    assert back.features["kind"].tolist() == ["a", "b"]
    two_d = viewer.add_points(np.array([[1.0, 2.0]]), name="flat")
    two_d.save(str(tmp_path / "flat.csv"), plugin="napari")
    (flat,) = viewer.open(str(tmp_path / "flat.csv"), plugin=PLUGIN)
    np.testing.assert_allclose(flat.data, [[1.0, 2.0]])


def test_our_writer_is_the_default_for_our_points(make_napari_viewer, tmp_path):
    """Once the plugin is in use, File ▸ Save (no plugin chosen) writes our landmark layers as
    feature tables and plain Points layers as napari's CSV, and the save dialog lists ours first."""
    from napari.plugins import _npe2

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "whisker")  # activates the plugin
    landmarks = viewer.layers["whisker base"]
    ext_str, writers = _npe2.file_extensions_string_for_layers([landmarks])
    assert writers[0].command == f"{PLUGIN}.write_points_table"
    assert ext_str.startswith("Flow Features Feature table")
    viewer.layers.selection = {landmarks}
    assert viewer.layers.save(str(tmp_path / "base.csv"), selected=True) == [
        str(tmp_path / "base.csv")
    ]
    table = read_table(tmp_path / "base.csv")
    assert table.columns[:4].tolist() == ["frame", "landmark", "x", "y"]
    assert table.attrs["landmark"] == "whisker base"
    plain = viewer.add_points(np.array([[1.0, 2.0, 3.0]]), name="plain")
    viewer.layers.selection = {plain}
    viewer.layers.save(str(tmp_path / "plain.csv"), selected=True)
    assert pd.read_csv(tmp_path / "plain.csv").columns[:2].tolist() == ["index", "axis-0"]


def test_video_opens_without_a_reader_choice_once_preferred(make_napari_viewer, small_video,
                                                            monkeypatch):  # fmt: skip
    """napari's own reader also claims videos, so napari asks once ("Choose reader"); ticking
    "Remember this choice" stores what this test sets, and File ▸ Open File(s)… then opens
    videos lazily through the plugin with no question (the README says so)."""
    from napari.errors import MultipleReaderError
    from napari.plugins import _npe2
    from napari.settings import get_settings

    from napari_flow_features.napari._qt.extract_widget import job_source

    viewer = make_napari_viewer()
    # napari's own reader claims videos too (and napari-video, which movement's [poses] extra
    # installs): hence the one question
    assert {"napari", PLUGIN} <= set(_npe2.get_readers(small_video))
    with pytest.raises(MultipleReaderError):  # what the GUI turns into the "Choose reader" dialog
        viewer.open(small_video, plugin=None)
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.mp4": PLUGIN})
    (layer,) = viewer.open(small_video, plugin=None)  # as File ▸ Open File(s)… does
    assert isinstance(layer.data, VideoArray)
    # A video napari's own reader decoded goes to the model worker by its path, not pickled.
    (decoded,) = viewer.open(small_video, plugin="napari")
    assert isinstance(decoded.data, np.ndarray)
    assert job_source(decoded) == str(Path(small_video).resolve())


def test_table_with_a_null_frame_shape_is_a_clear_error_in_napari(make_napari_viewer, tmp_path):
    """A Global Average Pooling table whose sidecar has ``frame_shape: null`` (issue 21's fault
    probe: a TypeError from the reader): napari reports the named problem, adds no layer and
    keeps working; with the field set, the table opens at the frame centre."""
    from napari_flow_features.io.tables import write_table

    viewer = make_napari_viewer()
    table = pd.DataFrame({"frame": [0, 1, 2], "f0000": [1.0, 2.0, 3.0]})
    path = write_table(table, tmp_path / "gap.csv", {"frame_shape": None, "channels": 1})
    with pytest.raises(Exception, match="'frame_shape' is null"):
        viewer.open(str(path), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    write_table(table, tmp_path / "gap.csv", {"frame_shape": [21, 41], "channels": 1})
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_array_equal(layer.data, [[0, 10, 20], [1, 10, 20], [2, 10, 20]])
