"""Pose-tracker files (written by movement's own save functions, or by hand) → the landmark table."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pandas as pd
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
    assert list(table.columns)[:6] == ["frame", "individual", "keypoint", "x", "y", "confidence"]
    if table.attrs["source_software"] == "SLEAP":  # every point here was predicted
        assert list(table.columns)[6:] == ["user_labelled"] and not table["user_labelled"].any()
    else:
        assert len(table.columns) == 6
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
    dlc, analysis = tmp_path / "tracks.h5", tmp_path / "tracks.analysis.h5"
    save_poses.to_dlc_file(movement_dataset(pos, conf), dlc, split_individuals=False)
    save_poses.to_sleap_analysis_file(movement_dataset(pos, conf), analysis)
    monkeypatch.setitem(sys.modules, "movement.io", None)  # as if movement were not installed
    monkeypatch.setitem(sys.modules, "sleap_io", None)
    with pytest.raises(BadInputError, match=r"napari-flow-features\[poses\]"):
        read_tracks(analysis)
    assert_table_matches(read_tracks(dlc), pos, conf)  # DeepLabCut files need only pandas


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
    skeleton = sio.Skeleton(list(KEYPOINTS))  # (sleap-io turns the list into Nodes)
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


# -- multi-animal DeepLabCut, as DLC writes it (pandas, DLC's column layout) ----------------------
SCORER = "DLC_dlcrnetms5_multi_mouseApr12shuffle1_5"


def dlc_multi_animal_frame(n_frames: int, seed: int = 0) -> pd.DataFrame:
    """DLC's multi-animal layout: 2 animals x 3 body parts, then the unique body parts of the
    ``single`` individual (arena corners), with NaN where a point was lost."""
    rng = np.random.default_rng(seed)
    columns = [(SCORER, ind, bp, c) for ind in INDIVIDUALS for bp in KEYPOINTS
               for c in ("x", "y", "likelihood")]  # fmt: skip
    columns += [(SCORER, "single", bp, c) for bp in ("corner1", "corner2")
                for c in ("x", "y", "likelihood")]  # fmt: skip
    index = pd.MultiIndex.from_tuples(
        columns, names=["scorer", "individuals", "bodyparts", "coords"]
    )
    values = rng.uniform(0, 600, (n_frames, len(columns)))
    values[:, 2::3] = rng.uniform(0, 1, (n_frames, len(columns) // 3))
    values[rng.uniform(size=values.shape) < 0.15] = np.nan
    return pd.DataFrame(values, columns=index)


def assert_matches_pandas(table: pd.DataFrame, frame: pd.DataFrame) -> None:
    """Every (individual, body part) of the pandas frame, value by value, in the file's order."""
    pairs = list(dict.fromkeys((i, b) for _, i, b, _ in frame.columns))
    assert len(table) == len(frame) * len(pairs)
    assert table.attrs["n_frames"] == len(frame)
    for n, (ind, bp) in enumerate(pairs):
        rows = table.iloc[n :: len(pairs)]
        assert (rows["individual"] == ind).all() and (rows["keypoint"] == bp).all()
        np.testing.assert_array_equal(rows["frame"], frame.index.to_numpy())
        for ours, theirs in (("x", "x"), ("y", "y"), ("confidence", "likelihood")):
            np.testing.assert_array_equal(rows[ours].to_numpy(), frame[(SCORER, ind, bp, theirs)])


@pytest.mark.parametrize(
    ("name", "key"),
    [("videoDLC_el.h5", "tracks"), ("videoDLC_el_filtered.h5", "df_with_missing"),
     ("videoDLC_el_filtered.csv", None)],
)  # fmt: skip
def test_multi_animal_deeplabcut_with_unique_body_parts_reads_exactly(tmp_path, name, key):
    frame = dlc_multi_animal_frame(40)
    path = tmp_path / name
    if key:  # DeepLabCut's own calls: stitch_tracklets (key tracks) and filterpredictions
        frame.to_hdf(path, key=key, format="table", mode="w")
    else:
        frame.to_csv(path)
    assert detect_format(path) == "DeepLabCut"
    table = read_tracks(path)
    back = pd.read_hdf(path, key) if key else frame  # pandas' own reading of the file
    assert_matches_pandas(table, back)
    assert list(dict.fromkeys(zip(table["individual"], table["keypoint"], strict=True)))[-2:] == [
        ("single", "corner1"), ("single", "corner2")]  # fmt: skip
    # a 20-row cut keeps 20 frames, not 11 scrambled ones (movement issue #977)
    cut = tmp_path / f"cut_{name}"
    if key:
        frame.iloc[:20].to_hdf(cut, key=key, format="table", mode="w")
    else:
        frame.iloc[:20].to_csv(cut)
    assert_matches_pandas(read_tracks(cut), frame.iloc[:20])


def test_deeplabcut_tables_under_any_pandas_key_are_detected_by_content(tmp_path):
    frame = dlc_multi_animal_frame(5)
    fixed = tmp_path / "montblanc_tracks.h5"
    frame.to_hdf(fixed, key="df", mode="w")  # pandas' fixed format, another key (DLC's test data)
    assert detect_format(fixed) == "DeepLabCut"
    assert_matches_pandas(read_tracks(fixed), frame)
    pickle = tmp_path / "videoDLC_el.pickle"
    pickle.write_bytes(b"\x80\x04N.")
    with pytest.raises(BadInputError, match=r"intermediate.*_el\.h5"):
        detect_format(pickle)


# -- SLEAP projects: proofread (user-labelled) points, the video they name -----------------------
def slp_labels(tmp_path, video_name: str, user_frames=(1,), predicted=True, n_frames=5):
    """A SLEAP project written by sleap-io: predicted instances of 2 tracks on every frame, and a
    user-labelled (proofread) instance of mouse1 on ``user_frames`` (its ``tail_base`` not placed
    on the first of them)."""
    import sleap_io as sio

    pos, conf = known_tracks(n_frames=n_frames)
    skeleton = sio.Skeleton(list(KEYPOINTS))  # (sleap-io turns the list into Nodes)
    video = sio.Video(filename=str(tmp_path / video_name), open_backend=False)
    tracks = [sio.Track(name) for name in INDIVIDUALS]
    frames = []
    for t in range(n_frames):
        instances: list = []
        if predicted:
            instances += [sio.PredictedInstance.from_numpy(pos[t, i], skeleton=skeleton,
                                                          point_scores=conf[t, i], score=1.0,
                                                          track=track)
                          for i, track in enumerate(tracks)]  # fmt: skip
        if t in user_frames:
            placed = pos[t, 0] + 1.5
            if t == user_frames[0]:
                placed[2] = np.nan
            instances.append(sio.Instance.from_numpy(placed, skeleton=skeleton, track=tracks[0]))
        if instances:
            frames.append(sio.LabeledFrame(video=video, frame_idx=t, instances=instances))
    path = tmp_path / "labels.slp"
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton],
                            tracks=tracks), str(path))  # fmt: skip
    return path


def test_proofread_sleap_points_keep_their_position_and_are_never_masked(tmp_path):
    import sleap_io as sio

    from napari_flow_features.extract.landmarks import landmarks_from_points

    path = slp_labels(tmp_path, "video.mp4", user_frames=(1, 3))
    table = read_tracks(path)
    labels = sio.load_slp(str(path), open_videos=False)  # sleap-io's own reading
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            j = INDIVIDUALS.index(inst.track.name)
            rows = table[(table["frame"] == lf.frame_idx) & (table["individual"] == INDIVIDUALS[j])]
            user = lf.user_instances and any(u.track is inst.track for u in lf.user_instances)
            if type(inst).__name__ == "PredictedInstance" and not user:
                arr = inst.numpy(scores=True)
                np.testing.assert_array_equal(rows[["x", "y"]].to_numpy(), arr[:, :2])
                np.testing.assert_array_equal(rows["confidence"].to_numpy(), arr[:, 2])
                assert not rows["user_labelled"].any()
            elif type(inst).__name__ == "Instance":
                xy = inst.numpy()
                np.testing.assert_array_equal(rows[["x", "y"]].to_numpy(), xy)
                placed = np.isfinite(xy).all(axis=1)
                assert rows["user_labelled"].tolist() == placed.tolist()
                assert (rows["confidence"].to_numpy()[placed] == np.inf).all()
    assert int(table["user_labelled"].sum()) == 2 + 3
    # --min-confidence masks low predicted points, never the ones a person placed
    lm = landmarks_from_points(table, 5, min_confidence=0.99)
    k = lm.ids.index("mouse1/snout")
    assert np.isfinite(lm.xy[k, [1, 3]]).all() and lm.user_labelled[k, [1, 3]].all()
    assert lm.row_fields(k, 1)["user_labelled"] is True
    assert lm.metadata()["user_labelled_positions"] == 5
    # a project of user instances only works with a threshold
    only = read_tracks(slp_labels(tmp_path, "video.mp4", user_frames=(0, 2), predicted=False))
    lm = landmarks_from_points(only, 5, min_confidence=0.5)
    assert lm.masked == 0 and int(np.isfinite(lm.xy).all(axis=-1).sum()) == 2 + 3


def test_a_sleap_project_is_checked_against_the_video_it_names(tmp_path):
    import argparse
    import warnings

    from napari_flow_features.extract.landmarks import landmarks_from_args
    from napari_flow_features.io.video import write_video

    frames = np.zeros((9, 48, 64, 3), np.uint8)
    write_video(tmp_path / "session1.avi", frames, fps=10)
    path = slp_labels(tmp_path, "session1.avi")  # predictions on frames 0..4 of a 9-frame video
    table = read_tracks(path)
    assert table.attrs["n_frames"] == 9 and table.attrs["tracked_frames"] == 5

    def args(video, **kw):
        return argparse.Namespace(points=str(path), post_encoder="point", source=str(video), **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert landmarks_from_args(args(tmp_path / "session1.avi")).xy.shape == (6, 9, 2)
    write_video(tmp_path / "session2.avi", frames, fps=10)  # same length, another name
    with pytest.warns(UserWarning, match=r"made on the video 'session1\.avi', not on 'session2"):
        lm = landmarks_from_args(args(tmp_path / "session2.avi"))
    assert any("session1.avi" in n for n in lm.metadata()["landmark_warnings"])
    write_video(tmp_path / "long.avi", np.zeros((30, 48, 64, 3), np.uint8), fps=10)
    with pytest.raises(BadInputError, match=r"tracks have 9 frames but the video has 30.*"
                       r"--accept-length-mismatch"):  # fmt: skip
        landmarks_from_args(args(tmp_path / "long.avi"))
    with pytest.warns(UserWarning, match=r"last 21 frames have no tracked positions"):
        lm = landmarks_from_args(args(tmp_path / "long.avi", accept_length_mismatch=True))
    assert lm.beyond_tracks == 6 * 21
