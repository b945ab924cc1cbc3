"""Pose-tracker files (written by movement's own save functions, or by hand) → the landmark table."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
from movement.io import load_poses, save_poses

from napari_flow_features.errors import BadInputError
from napari_flow_features.io.poses import detect_format, read_tracks

T, INDIVIDUALS, KEYPOINTS = 12, ["mouse1", "mouse2"], ["snout", "left_ear", "tail_base"]


def known_tracks(n_frames: int = T, n_ind: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(T, I, K, 2) positions on a 64x48 frame (smooth, distinct per landmark) and (T, I, K)
    confidences."""
    t = np.arange(n_frames)[:, None, None]
    i = np.arange(n_ind)[None, :, None]
    k = np.arange(3)[None, None, :]
    x = 8.0 + 12 * k + 20 * i + 0.5 * t + 0.25
    y = 6.0 + 9 * k + 4 * i + 2 * np.sin(t / 3.0)
    conf = 0.5 + 0.4 * np.cos(t + k + i)
    return np.stack([x, y], axis=-1), conf


def movement_dataset(pos: np.ndarray, conf: np.ndarray, individuals=INDIVIDUALS):
    # movement's order: position (time, space, keypoints, individuals)
    return load_poses.from_numpy(
        pos.transpose(0, 3, 2, 1),
        conf.transpose(0, 2, 1),
        individual_names=list(individuals),
        keypoint_names=KEYPOINTS,
    )


def assert_table_matches(table, pos, conf, individuals=INDIVIDUALS, tol=1e-5):
    n_t, n_i, n_k, _ = pos.shape
    assert list(table.columns) == ["frame", "individual", "keypoint", "x", "y", "confidence"]
    assert len(table) == n_t * n_i * n_k and table.attrs["n_frames"] == n_t
    first = table[table["frame"] == 0]
    assert first["individual"].tolist() == np.repeat(individuals, n_k).tolist()
    assert first["keypoint"].tolist() == KEYPOINTS * n_i
    np.testing.assert_allclose(table["x"].to_numpy(), pos[..., 0].ravel(), atol=tol)
    np.testing.assert_allclose(table["y"].to_numpy(), pos[..., 1].ravel(), atol=tol)
    np.testing.assert_allclose(table["confidence"].to_numpy(), conf.ravel(), atol=tol)


@pytest.mark.parametrize(
    ("name", "fmt"), [("tracks.h5", "DeepLabCut"), ("tracks.csv", "DeepLabCut")]
)
def test_deeplabcut_files_written_by_movement_read_back_exactly(tmp_path, name, fmt):
    pos, conf = known_tracks()
    path = tmp_path / name
    save_poses.to_dlc_file(movement_dataset(pos, conf), path, split_individuals=False)
    assert detect_format(path) == fmt
    table = read_tracks(path)
    assert_table_matches(table, pos, conf)
    assert table.attrs["source_software"] == fmt


def test_sleap_analysis_file_written_by_movement_reads_back_exactly(tmp_path):
    pos, conf = known_tracks()
    path = tmp_path / "tracks.analysis.h5"
    save_poses.to_sleap_analysis_file(movement_dataset(pos, conf), path)
    assert detect_format(path) == "SLEAP"
    assert_table_matches(read_tracks(path), pos, conf)


def test_lightning_pose_csv_reads_with_the_explicit_format(tmp_path):
    pos, conf = known_tracks(n_ind=1)
    save_poses.to_lp_file(movement_dataset(pos, conf, ["individual_0"]), tmp_path / "lp.csv")
    (path,) = tmp_path.glob("lp*.csv")  # movement appends the individual's name
    assert detect_format(path) == "DeepLabCut"  # same layout; auto reads it the same way
    table = read_tracks(path, "LightningPose")
    assert table.attrs["source_software"] == "LightningPose"
    assert_table_matches(table, pos, conf, ["individual_0"])


def test_hand_made_multi_animal_deeplabcut_csv(tmp_path):
    pos, conf = known_tracks(n_frames=4)
    header = [
        ["scorer"] + ["DLC_resnet50"] * 18,
        ["individuals"] + [i for i in INDIVIDUALS for _ in range(9)],
        ["bodyparts"] + [k for _ in INDIVIDUALS for k in KEYPOINTS for _ in range(3)],
        ["coords"] + ["x", "y", "likelihood"] * 6,
    ]
    lines = [",".join(row) for row in header]
    for t in range(4):
        values = [
            f"{v:.6f}"
            for i in range(2)
            for k in range(3)
            for v in (pos[t, i, k, 0], pos[t, i, k, 1], conf[t, i, k])
        ]
        lines.append(",".join([str(t), *values]))
    path = tmp_path / "videoDLC_resnet50_shuffle1_100000_el.csv"
    path.write_text("\n".join(lines) + "\n")
    assert_table_matches(read_tracks(path), pos, conf)


def test_hand_made_sleap_analysis_h5(tmp_path):
    pos, conf = known_tracks(n_frames=5)
    path = tmp_path / "labels.v001.analysis.h5"
    with h5py.File(path, "w") as f:
        # SLEAP's layout: tracks (n_tracks, 2, n_nodes, n_frames), point_scores (tracks, nodes, frames)
        f["tracks"] = pos.transpose(1, 3, 2, 0)
        f["point_scores"] = conf.transpose(1, 2, 0)
        f["node_names"] = np.array([k.encode() for k in KEYPOINTS])
        f["track_names"] = np.array([i.encode() for i in INDIVIDUALS])
    assert detect_format(path) == "SLEAP"
    assert_table_matches(read_tracks(path), pos, conf)


@pytest.mark.parametrize("index_columns", [1, 3])
def test_deeplabcut_labelled_data_csv_is_refused_with_what_to_pass(tmp_path, index_columns):
    # CollectedData_<scorer>.csv: rows are images, indexed by path (one column, or three in new DLC)
    pad = [""] * (index_columns - 1)
    rows = [
        ["scorer", *pad, "me", "me"],
        ["bodyparts", *pad, "snout", "snout"],
        ["coords", *pad, "x", "y"],
    ]
    image = ["labeled-data/video1/img001.png"] if index_columns == 1 else [
        "labeled-data", "video1", "img001.png"]  # fmt: skip
    rows.append([*image, "10.5", "20.5"])
    path = tmp_path / "CollectedData_me.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(BadInputError, match=r"labelled-data file.*analyze_videos"):
        read_tracks(path)


def test_a_pose_file_without_movement_names_the_extra(tmp_path, monkeypatch):
    pos, conf = known_tracks(n_frames=3)
    path = tmp_path / "tracks.h5"
    save_poses.to_dlc_file(movement_dataset(pos, conf), path, split_individuals=False)
    monkeypatch.setitem(sys.modules, "movement.io", None)  # as if movement were not installed
    with pytest.raises(BadInputError, match=r"napari-flow-features\[poses\]"):
        read_tracks(path)


def test_unknown_files_are_named(tmp_path):
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(BadInputError, match="no 'frame' column"):
        detect_format(other)
    with pytest.raises(BadInputError, match="not found"):
        read_tracks(tmp_path / "missing.h5")
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as f:
        f["images"] = np.zeros(3)
    with pytest.raises(BadInputError, match="neither DeepLabCut"):
        read_tracks(h5)
    with pytest.raises(BadInputError, match=r"Cannot read other\.h5 as SLEAP"):
        read_tracks(h5, "SLEAP")


def test_sleap_project_file_reads_and_only_bounds_the_video_length(tmp_path):
    import sleap_io as sio

    from napari_flow_features.extract.landmarks import landmarks_from_points

    pos, conf = known_tracks(n_frames=4)
    skeleton = sio.Skeleton(KEYPOINTS)
    video = sio.Video(filename=str(tmp_path / "video.mp4"), open_backend=False)
    tracks = [sio.Track(name) for name in INDIVIDUALS]
    frames = [
        sio.LabeledFrame(video=video, frame_idx=t, instances=[
            sio.PredictedInstance.from_numpy(pos[t, i], skeleton=skeleton,
                                             point_scores=conf[t, i], score=1.0, track=track)
            for i, track in enumerate(tracks)])
        for t in range(4)
    ]  # fmt: skip
    path = tmp_path / "predictions.slp"
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton],
                            tracks=tracks), str(path))  # fmt: skip
    assert detect_format(path) == "SLEAP"
    table = read_tracks(path)
    assert table.attrs["tracked_frames"] == 4 and "n_frames" not in table.attrs
    np.testing.assert_allclose(table["x"].to_numpy(), pos[..., 0].ravel(), atol=1e-4)
    np.testing.assert_allclose(table["y"].to_numpy(), pos[..., 1].ravel(), atol=1e-4)
    np.testing.assert_allclose(table["confidence"].to_numpy(), conf.ravel(), atol=1e-5)
    # predictions end before the video does: fine; frames past the video's end: an error
    assert landmarks_from_points(table, 10).xy.shape == (6, 10, 2)
    with pytest.raises(BadInputError, match=r"reach frame 3 .*video has 3 frames"):
        landmarks_from_points(table, 3)
