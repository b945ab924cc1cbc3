"""Landmarks from tables, Points-layer features and pose files: identity, confidence, gaps, checks."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from movement.filtering import interpolate_over_time
from movement.io import load_poses, save_poses

from napari_flow_features.cli import main
from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.landmarks import (
    LandmarkOptions,
    Landmarks,
    apply_border,
    border_margin,
    border_message,
    check_track_length,
    classify_border,
    landmark_key,
    landmarks_from_args,
    landmarks_from_points,
)
from napari_flow_features.io.tables import read_table, write_table
from napari_flow_features.io.video import write_video

KEYPOINTS = ["snout", "left_ear"]


def pose_table(n_frames=20, individuals=("m1", "m2"), seed=0) -> pd.DataFrame:
    """A long pose table (as read_tracks returns) with known positions and confidences."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_frames):
        for i, ind in enumerate(individuals):
            for k, kp in enumerate(KEYPOINTS):
                rows.append((t, ind, kp, 10.0 + t + 5 * k, 8.0 + 3 * i + k, rng.uniform()))
    table = pd.DataFrame(rows, columns=["frame", "individual", "keypoint", "x", "y", "confidence"])
    table.attrs["n_frames"] = n_frames
    return table


def test_one_rule_names_landmarks_for_every_points_source():
    assert landmark_key(["frame", "individual", "keypoint", "confidence"]).output == (
        "individual",
        "keypoint",
    )
    dlc = landmark_key(["label", "id", "likelihood", "valid"])  # napari-deeplabcut
    assert dlc.source == ("id", "label") and dlc.output == ("individual", "keypoint")
    assert landmark_key(["track_id"]).output == ("landmark",)
    assert landmark_key(["label"]).source == ("label",)
    assert landmark_key(["landmark", "track_id"]).source == ("landmark",)
    assert landmark_key(["frame", "x", "y"]) is None


def test_napari_deeplabcut_and_movement_layer_features_give_the_same_landmarks():
    table = pose_table(6)
    movement_like = table[["frame", "x", "y", "individual", "keypoint", "confidence"]]
    dlc_like = pd.DataFrame({"frame": table["frame"], "x": table["x"], "y": table["y"],
                             "label": table["keypoint"], "id": table["individual"],
                             "likelihood": table["confidence"], "valid": True})  # fmt: skip
    a = landmarks_from_points(movement_like, 6)
    b = landmarks_from_points(dlc_like, 6)
    assert a.ids == b.ids == ["m1/snout", "m1/left_ear", "m2/snout", "m2/left_ear"]
    assert a.columns == b.columns == ("individual", "keypoint")
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    row = a.row_fields(3, 5)
    assert list(row) == ["individual", "keypoint", "x", "y", "confidence", "filled"]
    assert (row["individual"], row["keypoint"], row["x"], row["y"]) == (
        "m2",
        "left_ear",
        20.0,
        12.0,
    )
    # our own single-column ids keep the ``landmark`` column
    ours = landmarks_from_points(pd.DataFrame({"frame": [0, 1], "x": [1.0, 2], "y": [3.0, 4],
                                               "track_id": [7, 7]}), 3)  # fmt: skip
    assert ours.row_fields(0, 1) == {"landmark": 7, "x": 2.0, "y": 4.0}


def test_confidence_masking_and_gap_filling_are_counted_exactly():
    table = pose_table(20, individuals=("m1",))
    table["confidence"] = 0.9
    snout = (table["keypoint"] == "snout").to_numpy()
    # snout: low confidence at 3 (gap of 1), 6..7 (gap of 2), 10..14 (gap of 5) and at the last frame
    low = snout & table["frame"].isin([3, 6, 7, 10, 11, 12, 13, 14, 19]).to_numpy()
    table.loc[low, "confidence"] = 0.2
    ear = (table["keypoint"] == "left_ear").to_numpy()
    table.loc[ear & (table["frame"] == 0).to_numpy(), ["x", "y"]] = np.nan  # leading gap
    lm = landmarks_from_points(table, 20, min_confidence=0.6)
    assert lm.masked == 9 and lm.filled == 0
    assert int(np.isnan(lm.xy[..., 0]).sum()) == 10
    lm2 = landmarks_from_points(table, 20, min_confidence=0.6, max_gap=2)
    assert lm2.masked == 9 and lm2.filled == 3  # frames 3, 6, 7; not 10..14, not the ends
    assert lm2.filled_at[0].nonzero()[0].tolist() == [3, 6, 7]
    np.testing.assert_allclose(lm2.xy[0, 6], (16.0, 8.0))  # linear between frames 5 and 8
    lm5 = landmarks_from_points(table, 20, min_confidence=0.6, max_gap=5)
    assert lm5.filled == 8 and lm5.row_fields(0, 12)["filled"] is True
    assert lm5.row_fields(0, 12)["confidence"] == pytest.approx(0.2)  # kept: says why it was filled
    assert np.isnan(lm5.xy[0, 19]).all() and np.isnan(lm5.xy[1, 0]).all()
    meta = lm5.metadata()
    assert meta["landmarks"] == ["m1/snout", "m1/left_ear"]
    assert meta["landmark_columns"] == ["individual", "keypoint"]
    assert meta["low_confidence_positions"] == 9 and meta["interpolated_landmark_positions"] == 8
    assert meta["landmark_min_confidence"] == 0.6 and meta["landmark_max_gap"] == 5


@pytest.mark.parametrize("max_gap", [1, 2, 4])
def test_gap_filling_matches_movement(max_gap):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (1, 40, 2))
    xy[0, rng.choice(40, 16, replace=False)] = np.nan
    frames = np.arange(40)
    table = pd.DataFrame({"frame": frames, "x": xy[0, :, 0], "y": xy[0, :, 1]})
    ours = landmarks_from_points(table, 40, max_gap=max_gap).xy[0]
    data = xr.DataArray(xy[0], dims=("time", "space"), coords={"time": frames})
    theirs = interpolate_over_time(data, max_gap=max_gap).to_numpy()
    np.testing.assert_allclose(ours, theirs, equal_nan=True)


def test_selection_and_unknown_names_list_the_known_ones():
    table = pose_table(5)
    lm = landmarks_from_points(table, 5, keypoints="snout", individuals=["m2"])
    assert lm.ids == ["m2/snout"]
    with pytest.raises(BadInputError, match=r"Unknown keypoint 'nose'.*snout, left_ear"):
        landmarks_from_points(table, 5, keypoints="nose")
    with pytest.raises(BadInputError, match=r"Unknown individuals 'm3', 'm4'.*m1, m2"):
        landmarks_from_points(table, 5, individuals="m3,m4")


def test_choosing_names_from_points_without_identity_columns_is_refused():
    # A single unnamed landmark (frame, x, y only) has no keypoint or individual to choose.
    single = pd.DataFrame({"frame": [0, 1, 2], "x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(
        BadInputError, match="keypoints were chosen but the points have no landmark names"
    ):
        landmarks_from_points(single, 5, keypoints="snout")
    with pytest.raises(
        BadInputError, match="individuals were chosen but the points have no individual"
    ):
        landmarks_from_points(single, 5, individuals="m1")


def test_tracks_of_another_video_length_name_both_lengths(tmp_path):
    with pytest.raises(BadInputError, match=r"tracks have 20 frames but the video has 18"):
        landmarks_from_points(pose_table(20), 18)
    # our own table: frames past the end are an error, not silently dropped
    ours = pd.DataFrame({"frame": np.arange(2330), "x": 5.0, "y": 5.0})
    with pytest.raises(BadInputError, match=r"frame 2329 \(530 points past the end\).*1800 frames"):
        landmarks_from_points(ours, 1800)


def test_empty_and_all_missing_tracks_are_errors():
    empty = pose_table(4).iloc[:0]
    with pytest.raises(BadInputError, match="empty"):
        landmarks_from_points(empty, 4)
    lost = pose_table(4)
    lost[["x", "y"]] = np.nan
    with pytest.raises(BadInputError, match="every point is missing"):
        landmarks_from_points(lost, 4)
    with pytest.raises(BadInputError, match="no confidence"):
        landmarks_from_points(pd.DataFrame({"frame": [0], "x": [1.0], "y": [1.0]}), 2,
                              min_confidence=0.5)  # fmt: skip


def test_positions_outside_the_frame_warn_naming_the_landmark():
    table = pose_table(4, individuals=("m1",))
    table.loc[3, "x"] = 90.0  # frame 1, left_ear: 26.5 px right of the 64-px frame's edge
    with pytest.warns(UserWarning, match=r"1 landmark position lies more than 16.0 px \(half a "
                      r"feature cell\) outside the 64x48 frame: their rows are NaN \(first: "
                      r"frame 1, m1/left_ear, x=90.0, y=9.0\)"):  # fmt: skip
        lm = landmarks_from_points(table, 4, frame_hw=(48, 64))
    assert np.isnan(lm.xy[1, 1]).all() and lm.metadata()["outside_landmark_positions"] == 1


def test_ready_landmarks_pass_through_only_for_their_video_length():
    lm = landmarks_from_points(pose_table(6), 6)
    assert landmarks_from_points(lm, 6) is lm
    with pytest.raises(BadInputError, match="made for 6 frames but the video has 7"):
        landmarks_from_points(lm, 7)


# -- command line and features -------------------------------------------------------------------
N_FRAMES, H, W = 12, 48, 64


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(0)
    base = (rng.uniform(0, 255, (H + 8, W + 40))).astype(np.uint8)
    frames = np.stack([base[4 : 4 + H, 2 * t : 2 * t + W] for t in range(N_FRAMES)])
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, frames, fps=25, crf=0)
    return path


def test_points_without_the_point_post_encoder_is_an_error_before_any_model_work(
    video, tmp_path, capsys
):
    csv = tmp_path / "lm.csv"
    pd.DataFrame({"frame": [0], "x": [1.0], "y": [1.0]}).to_csv(csv, index=False)
    start = time.perf_counter()
    assert main(["extract", str(video), "--points", str(csv), "-o", str(tmp_path / "o.csv")]) == 2
    assert "used by the point post-encoder only (--post-encoder point)" in capsys.readouterr().err
    assert time.perf_counter() - start < 5  # no model was built
    assert not (tmp_path / "o.csv").exists()


def test_pose_file_on_the_command_line_gives_the_features_of_our_table(video, tmp_path):
    """DeepLabCut tracks written by movement → the same features as our CSV with those points."""
    rng = np.random.default_rng(1)
    n_ind, n_kp = 2, 2
    pos = rng.uniform(4, 44, (N_FRAMES, 2, n_kp, n_ind))  # time, space, keypoints, individuals
    conf = rng.uniform(0.5, 1.0, (N_FRAMES, n_kp, n_ind))
    conf[3, 0, 1] = 0.1  # m2/snout at frame 3: masked, then filled (gap of 1)
    ds = load_poses.from_numpy(pos, conf, individual_names=["m1", "m2"], keypoint_names=KEYPOINTS)
    tracks = tmp_path / "clipDLC_resnet50.h5"
    save_poses.to_dlc_file(ds, tracks, split_individuals=False)
    common = ["--post-encoder", "point", "--endpoint", "Mixed_3c", "--windowing", "sliding",
              "--clip-length", "8", "--stride", "4"]  # fmt: skip
    out = tmp_path / "pose.parquet"
    assert main(["extract", str(video), "--points", str(tracks), "--min-confidence", "0.3",
                 "--max-gap", "1", "-o", str(out), *common]) == 0  # fmt: skip
    pose = read_table(out)
    assert list(pose.columns[:7]) == ["frame", "individual", "keypoint", "x", "y", "confidence",
                                      "filled"]  # fmt: skip
    assert pose.attrs["landmarks"] == ["m1/snout", "m1/left_ear", "m2/snout", "m2/left_ear"]
    assert len(pose) == N_FRAMES * 4 and int(pose["filled"].sum()) == 1
    filled = pose[pose["filled"]].iloc[0]
    assert (filled["frame"], filled["individual"], filled["keypoint"]) == (3, "m2", "snout")
    # our own CSV with the same coordinates (the filled one as the linear midpoint)
    ours = pose[["frame", "x", "y"]].copy()
    ours.insert(1, "landmark", pose["individual"] + "/" + pose["keypoint"])
    write_table(ours, tmp_path / "ours.csv")
    out2 = tmp_path / "ours.parquet"
    assert main(["extract", str(video), "--points", str(tmp_path / "ours.csv"), "-o", str(out2),
                 *common]) == 0  # fmt: skip
    plain = read_table(out2)
    np.testing.assert_allclose(pose.filter(like="f0").to_numpy(), plain.filter(like="f0").to_numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(pose.loc[pose["filled"], ["x", "y"]].to_numpy()[0],
                               (pos[2, :, 0, 1] + pos[4, :, 0, 1]) / 2)  # fmt: skip


def test_landmarks_object_is_picklable_for_the_worker():
    import pickle

    lm = landmarks_from_points(pose_table(3), 3, max_gap=1)
    back = pickle.loads(pickle.dumps(lm))
    assert isinstance(back, Landmarks) and back.ids == lm.ids
    np.testing.assert_array_equal(back.xy, lm.xy)


def test_saved_points_of_a_deeplabcut_layer_name_individual_and_keypoint_and_come_back():
    from napari_flow_features.io.tables import points_to_table, table_to_points

    data = np.array([[0, 5.0, 6.0], [0, 7.0, 8.0], [1, 5.5, 6.5]])
    feats = pd.DataFrame({"label": ["snout", "ear", "snout"], "id": ["m1", "m1", "m1"],
                          "likelihood": [0.9, 0.8, 0.7]})  # fmt: skip
    table = points_to_table(data, feats)
    assert list(table.columns) == ["frame", "individual", "keypoint", "x", "y", "likelihood"]
    assert table["keypoint"].tolist() == ["snout", "ear", "snout"]
    back_data, back = table_to_points(table)
    np.testing.assert_array_equal(back_data, data)
    assert sorted(back.columns) == ["id", "label", "likelihood"]
    assert back["label"].tolist() == ["snout", "ear", "snout"]


# -- issue 22: lengths, borders, masks, one identity, counts of the range -------------------------
@pytest.mark.parametrize(
    ("n_tracks", "n_video", "ok"),
    [(3275, 3276, True), (3276, 3286, True), (3276, 3287, False), (99, 100, True),
     (98, 100, False), (31, 30, False), (1801, 1800, True), (2330, 1800, False)],
)  # fmt: skip
def test_length_rule_tolerates_one_percent_and_at_most_ten_frames(n_tracks, n_video, ok):
    if ok:
        note = check_track_length(n_tracks, n_video)
        assert f"{n_tracks} frames and the video {n_video}" in note
    else:
        with pytest.raises(BadInputError, match=rf"tracks have {n_tracks} frames but the video "
                           rf"has {n_video}.*--accept-length-mismatch"):  # fmt: skip
            check_track_length(n_tracks, n_video)
        assert str(n_video) in check_track_length(n_tracks, n_video, allow_mismatch=True)
    assert check_track_length(n_video, n_video) is None


def test_tracks_a_frame_short_warn_and_their_missing_rows_are_nan_and_counted():
    table = pose_table(199)  # 4 landmarks, one frame short of a 200-frame video
    with pytest.warns(UserWarning, match=r"199 frames and the video 200: the video's last 1"):
        lm = landmarks_from_points(table, 200)
    assert lm.xy.shape == (4, 200, 2) and np.isnan(lm.xy[:, 199]).all()
    np.testing.assert_array_equal(lm.xy[:, 198], [[208, 8], [213, 9], [208, 11], [213, 12]])
    assert lm.beyond_tracks == 4 and lm.metadata()["rows_beyond_tracks"] == 4
    assert lm.frames(0, 199).beyond_tracks == 0 and lm.frames(150, 200).beyond_tracks == 4
    longer = pose_table(201)
    with pytest.warns(UserWarning, match=r"tracks' last 1 frames lie after the video's end"):
        lm = landmarks_from_points(longer, 200)
    assert np.isfinite(lm.xy).all() and lm.beyond_tracks == 0
    with pytest.raises(BadInputError, match="--accept-length-mismatch"):
        landmarks_from_points(pose_table(20), 40)
    with pytest.warns(UserWarning, match="last 20 frames"):
        lm = landmarks_from_points(pose_table(20), 40, allow_length_mismatch=True)
    assert lm.beyond_tracks == 4 * 20


def test_layers_without_a_length_follow_the_same_rule_for_points_past_the_end():
    # a napari-deeplabcut or movement layer knows no video length: only points past the end count
    layer = pd.DataFrame({"frame": np.arange(101), "x": 5.0, "y": 5.0, "label": "snout",
                          "id": ""})  # fmt: skip
    with pytest.warns(UserWarning, match=r"101 frames and the video 100"):
        lm = landmarks_from_points(layer, 100)
    assert lm.ids == ["individual_0/snout"] and np.isfinite(lm.xy).all()
    with pytest.raises(BadInputError, match=r"reach frame 100 \(51 points past the end\).*accept"):
        landmarks_from_points(layer, 50)


def border_by_hand(xy, h, w, margin):
    """The border rule written out point by point (independent of classify_border)."""
    out = xy.copy()
    clamped = np.zeros(xy.shape[:2], bool)
    outside = np.zeros(xy.shape[:2], bool)
    for k in range(xy.shape[0]):
        for t in range(xy.shape[1]):
            x, y = xy[k, t]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            dx = max(-0.5 - x, x - (w - 0.5), 0.0)
            dy = max(-0.5 - y, y - (h - 0.5), 0.0)
            if max(dx, dy) > margin:
                outside[k, t] = True
                out[k, t] = np.nan
            elif max(dx, dy) > 0:
                clamped[k, t] = True
                out[k, t] = (min(max(x, -0.5), w - 0.5), min(max(y, -0.5), h - 0.5))
    return out, clamped, outside


def test_border_points_within_half_a_cell_are_clamped_farther_ones_dropped():
    rng = np.random.default_rng(5)
    xy = rng.uniform(-60, 700, (3, 50, 2))
    xy[0, 4] = (639.6, -4.2)  # DeepLabCut's real case on a 640x480 frame: 3.7 px above the edge
    xy[1, 7] = np.nan
    margin = border_margin(640 / 256)  # a 640-px video resized to 256 for the encoder: 40 px
    assert margin == 40.0 and border_margin(1.0) == 16.0
    report = classify_border(xy, (480, 640), margin)
    out, clamped, outside = border_by_hand(xy, 480, 640, margin)
    np.testing.assert_array_equal(report.xy, out)
    np.testing.assert_array_equal(report.clamped, clamped)
    np.testing.assert_array_equal(report.outside, outside)
    np.testing.assert_array_equal(report.xy[0, 4], (639.5, -0.5))
    assert report.clamped[0, 4] and np.isnan(xy[1, 7]).all()  # xy itself is untouched
    k, t = np.argwhere(outside)[0]
    assert report.examples[0] == (k, t, xy[k, t, 0], xy[k, t, 1])
    text = border_message(report, (480, 640), ["a", "b", "c"], margin)
    assert text.startswith(f"{clamped.sum()} landmark positions lie up to ")
    assert f"outside the 640x480 frame: clamped to its edge; {outside.sum()} lie farther " in text
    assert f"(first: frame {t}, {'abc'[k]}, x={xy[k, t, 0]:.1f}, y={xy[k, t, 1]:.1f})" in text
    lm = Landmarks(ids=["a", "b", "c"], xy=xy.copy())
    cut, message = apply_border(lm, (480, 640), margin)
    meta = cut.frames(10, 50).metadata()
    assert meta["clamped_landmark_positions"] == int(clamped[:, 10:].sum())
    assert meta["outside_landmark_positions"] == int(outside[:, 10:].sum())
    assert meta["landmark_warnings"] == [message]
    inside = classify_border(np.array([[[0.0, 0.0], [639.5, 479.5]]]), (480, 640), 16.0)
    assert border_message(inside, (480, 640), ["a"], 16.0) is None


def test_a_selection_masked_whole_is_an_error_naming_the_best_confidence():
    table = pose_table(10, individuals=("m1",))
    table["confidence"] = np.linspace(0.1, 0.85, len(table))
    best = table.loc[table["keypoint"] == "snout", "confidence"].max()
    with pytest.raises(BadInputError, match=rf"min_confidence=0.9 .*best confidence found is "
                       rf"{best:.4g}"):  # fmt: skip
        landmarks_from_points(table, 10, keypoints="snout", min_confidence=0.9)
    with pytest.raises(BadInputError, match=r"min_confidence=1.5 .*best confidence found is 0.85"):
        landmarks_from_points(table, 10, min_confidence=1.5)
    # a confidence exactly at the threshold is kept
    at = landmarks_from_points(table, 10, keypoints="snout", min_confidence=best)
    assert int(np.isfinite(at.xy[..., 0]).sum()) == 1 and at.masked == 9


def test_the_trackers_confidence_is_kept_where_it_gave_no_position():
    table = pose_table(6, individuals=("m1",))
    lost = (table["frame"] == 2).to_numpy() & (table["keypoint"] == "snout").to_numpy()
    table.loc[lost, ["x", "y", "confidence"]] = [np.nan, np.nan, 0.0]  # SLEAP: lost, score 0
    half = (table["frame"] == 4).to_numpy() & (table["keypoint"] == "left_ear").to_numpy()
    table.loc[half, "y"] = np.nan  # DeepLabCut: x given, y NaN
    lm = landmarks_from_points(table, 6)
    assert np.isnan(lm.xy[0, 2]).all() and lm.row_fields(0, 2)["confidence"] == 0.0
    assert np.isnan(lm.xy[1, 4]).all()
    assert lm.row_fields(1, 4)["confidence"] == table.loc[half, "confidence"].item()


def test_one_identity_for_a_single_animal_whatever_the_route():
    from napari_flow_features.io.landmark_key import landmark_ids

    table = pose_table(5, individuals=("individual_0",))  # as read_tracks gives a single animal
    dlc_layer = pd.DataFrame({"frame": table["frame"], "x": table["x"], "y": table["y"],
                              "label": table["keypoint"], "id": "",
                              "likelihood": table["confidence"]})  # fmt: skip
    saved = dlc_layer.assign(id=np.nan)  # the same layer saved and read back: NaN individual
    ids = [landmarks_from_points(t, 5, individuals="individual_0").ids
           for t in (table, dlc_layer, saved)]  # fmt: skip
    assert ids[0] == ids[1] == ids[2] == ["individual_0/snout", "individual_0/left_ear"]
    assert landmark_ids(dlc_layer)[:2] == ["individual_0/snout", "individual_0/left_ear"]
    lm = landmarks_from_points(dlc_layer, 5)
    assert lm.keys == [("individual_0", "snout"), ("individual_0", "left_ear")]
    # a named animal among unnamed points keeps the unnamed ones apart, as before
    mixed = dlc_layer.assign(id=["m1"] * 2 + [""] * (len(dlc_layer) - 2))
    assert landmarks_from_points(mixed, 5).ids == ["m1/snout", "m1/left_ear", "snout", "left_ear"]


def test_rows_that_name_no_landmark_are_an_error_not_a_landmark_each():
    table = pd.DataFrame({"frame": np.arange(380) % 190, "x": 5.0, "y": 6.0,
                          "track_id": [np.nan] * 380})  # fmt: skip
    with pytest.raises(BadInputError, match=r"380 of 380 points have no landmark "
                       r"\(empty column 'track_id', first at row 0\)"):  # fmt: skip
        landmarks_from_points(table, 190)
    table.loc[:189, "track_id"] = 1
    with pytest.raises(BadInputError, match=r"190 of 380 points have no landmark.*row 190"):
        landmarks_from_points(table, 190)


def test_counts_of_a_cut_describe_only_its_rows():
    n = 400
    table = pose_table(n, individuals=("m1",), seed=2)
    table["confidence"] = 0.9
    rng = np.random.default_rng(7)
    low = rng.uniform(size=len(table)) < 0.1
    table.loc[low, "confidence"] = 0.1
    lm = landmarks_from_points(table, n, min_confidence=0.5, max_gap=3)
    cut = lm.frames(200, 320)
    rows = table.iloc[2 * 200 : 2 * 320]
    assert cut.xy.shape == (2, 120, 2)
    assert cut.masked == int((rows["confidence"] < 0.5).sum())
    # independently: a masked position in the cut is filled when its gap (in the whole track) is
    # at most 3 frames long and has known positions on both sides
    filled = 0
    for kp in KEYPOINTS:
        bad = table.loc[table["keypoint"] == kp, "confidence"].to_numpy() < 0.5
        t = 0
        while t < n:
            if not bad[t]:
                t += 1
                continue
            end = t
            while end < n and bad[end]:
                end += 1
            if t > 0 and end < n and end - t <= 3:
                filled += sum(1 for f in range(t, end) if 200 <= f < 320)
            t = end
    assert cut.filled == filled and cut.filled < lm.filled
    meta = cut.metadata()
    assert meta["low_confidence_positions"] == cut.masked
    assert meta["interpolated_landmark_positions"] == filled


def test_command_line_landmark_options_are_the_keywords_of_the_api(tmp_path):
    """The extract parser's landmark options give the landmarks the same keywords give."""
    from napari_flow_features.cli import build_parser

    table = pose_table(20)
    table["confidence"] = 0.9
    low = (table["keypoint"] == "snout") & table["frame"].isin([4, 5, 12])
    table.loc[low, "confidence"] = 0.5  # exactly at the threshold: kept
    table.loc[low & (table["frame"] == 12), "confidence"] = 0.49  # below: masked, then filled
    points = tmp_path / "tracks.csv"
    write_table(table, points)
    flow = np.zeros((19, 8, 8, 2), np.float32)  # 20 frames' flow
    argv = ["extract", "flow.npy", "--post-encoder", "point", "--points", str(points),
            "--keypoints", " snout, left_ear", "--individuals", "m2", "--min-confidence", "0.5",
            "--max-gap", "1"]  # fmt: skip
    args = build_parser().parse_args(argv)
    options = LandmarkOptions.from_args(args)
    assert options == LandmarkOptions(
        min_confidence=0.5, max_gap=1, keypoints=("snout", "left_ear"), individuals=("m2",)
    )
    assert LandmarkOptions.from_args(argparse.Namespace()) == LandmarkOptions()
    from_cli = landmarks_from_args(args, source=flow)
    from_api = landmarks_from_points(points, 20, min_confidence=0.5, max_gap=1,
                                     keypoints=["snout", "left_ear"], individuals="m2")  # fmt: skip
    assert from_cli.ids == from_api.ids == ["m2/snout", "m2/left_ear"]
    assert from_cli.masked == from_api.masked == 1 and from_cli.filled == from_api.filled == 1
    np.testing.assert_array_equal(from_cli.xy, from_api.xy)
    # Filled at frame 12 between 11 and 13: snout of m2 is at x = 10 + t, y = 8 + 3.
    np.testing.assert_allclose(from_cli.xy[0, 12], (22.0, 11.0))
    assert from_cli.filled_at[0].nonzero()[0].tolist() == [12]
