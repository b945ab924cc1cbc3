"""The ``flow-features`` command (run as a subprocess) pinned to independently computed values.

Issue 21, point 3: point and GAP features under the command line's default resize equal the ``none``
post-encoder's maps sampled by DESIGN.md's formulas (written again in ``pinned_reference``), at a
size the strides do not divide; ``flow`` finds a known translation; flow written by ``flow`` gives
the features of the video it came from.

Small on purpose (the suite runs on 2 cores): 20 and 12 frames, random weights, end point Mixed_3c,
the TensorFlow runtime (no OpenVINO conversion per process).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import moving_pattern
from pinned_reference import at_time, bilinear, map_hw, rescale, resized_hw

import napari_flow_features
from napari_flow_features.io.flow_files import write_flo
from napari_flow_features.io.tables import read_table
from napari_flow_features.io.video import write_video

MODEL = ("--weights", "random", "--endpoint", "Mixed_3c", "--runtime", "tensorflow")
STRIDE = 8  # Mixed_3c's spatial stride


# The child runs the package this process imported (a relative PYTHONPATH would not follow cwd).
PACKAGE_ROOT = str(Path(napari_flow_features.__file__).resolve().parents[1])


def flow_features(*argv: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run the command in a child process, as a user does."""
    command = [sys.executable, "-m", "napari_flow_features.cli", *map(str, argv)]
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# -- point and GAP features under the default --max-side 256 -------------------------------------
VIDEO_HW = (190, 300)  # resized to 162x256: 162 is no multiple of 8, and x, y scale differently
THRESHOLD = 0.6
BELOW, ABOVE = np.nextafter(THRESHOLD, 0.0), np.nextafter(THRESHOLD, 1.0)


def landmark_table(n: int) -> pd.DataFrame:
    """A moving landmark (1 ulp below --min-confidence at frame 4, exactly at it elsewhere), one
    near the top-right corner and one on the bottom-left outer pixel edges (video pixels)."""
    rows = []
    for t in range(n):
        rows.append((t, "whisker", 40.3 + 11.0 * t, 25.7 + 6.5 * t, BELOW if t == 4 else THRESHOLD))
        rows.append((t, "corner", 299.4, 0.0, ABOVE))
        rows.append((t, "edge", -0.5, VIDEO_HW[0] - 0.5, 1.0))
    return pd.DataFrame(rows, columns=["frame", "landmark", "x", "y", "confidence"])


@pytest.fixture(scope="module")
def resized_runs(tmp_path_factory):
    """``extract`` with the none, point and gap post-encoders on a 300x190 video, defaults kept."""
    folder = tmp_path_factory.mktemp("resized")
    n, (h, w) = 20, VIDEO_HW
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([
        128 + 60 * np.sin(xx / 7.0 + 0.4 * t) * np.cos(yy / 9.0 - 0.3 * t)
        + 30 * np.sin((xx + yy) / 13.0 + t)
        for t in range(n)
    ]).astype(np.uint8)  # fmt: skip
    write_video(folder / "video.mp4", frames, fps=25)
    landmark_table(n).to_csv(folder / "points.csv", index=False)
    for post in ("none", "gap"):
        ok(flow_features("extract", "video.mp4", "-o", f"{post}.parquet", "--post-encoder", post,
                         *MODEL, cwd=folder))  # fmt: skip
    ok(flow_features("extract", "video.mp4", "-o", "point.parquet", "--post-encoder", "point",
                     "--points", "points.csv", "--min-confidence", repr(THRESHOLD), *MODEL,
                     cwd=folder))  # fmt: skip
    return folder


def frame_maps(folder: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Each frame's ``(H', W', C)`` map from the none run: its window's maps at ``tau``."""
    maps = np.load(folder / "none_maps.npy", allow_pickle=False)
    table = pd.read_parquet(folder / "none.parquet")
    assert table["frame"].tolist() == list(range(20))
    per_frame = np.stack([
        at_time(maps[int(wi)], float(tau))
        for wi, tau in zip(table["window"], table["tau"], strict=True)
    ])  # fmt: skip
    work = json.loads((folder / "none_maps.npy.json").read_text())["work_shape"]
    return per_frame, tuple(work)


def test_the_default_resize_is_to_a_longest_side_of_256(resized_runs):
    per_frame, work = frame_maps(resized_runs)
    assert work == resized_hw(VIDEO_HW, 256) == (162, 256)
    assert per_frame.shape == (20, *map_hw(work, STRIDE), 480) == (20, 21, 32, 480)


def test_point_features_are_the_maps_sampled_at_the_resized_landmark(resized_runs):
    per_frame, work = frame_maps(resized_runs)
    table = read_table(resized_runs / "point.parquet")
    feats = table.filter(regex=r"^f\d{4}$").to_numpy(float)
    assert len(table) == 20 * 3 and feats.shape[1] == 480
    # The rows keep the landmarks in video pixels (a position below --min-confidence is missing)
    # and the tracker's confidence.
    points = landmark_table(20)
    low = (points["confidence"] < THRESHOLD).to_numpy()
    positions = points[["x", "y"]].to_numpy(copy=True)
    positions[low] = np.nan
    np.testing.assert_array_equal(table[["x", "y"]].to_numpy(), positions)
    np.testing.assert_array_equal(table["confidence"], points["confidence"])
    expected, unscaled = [], []
    for (t, x, y), conf in zip(points[["frame", "x", "y"]].to_numpy(), points["confidence"],
                               strict=True):  # fmt: skip
        fmap = per_frame[int(t)]
        if conf < THRESHOLD:  # a missing position: a NaN row
            expected.append(np.full(480, np.nan))
            unscaled.append(np.full(480, np.nan))
            continue
        expected.append(bilinear(fmap, *rescale(x, y, VIDEO_HW, work), work))
        unscaled.append(bilinear(fmap, x, y, work))  # the bug: landmarks not scaled to 256x162
    expected_arr = np.array(expected)
    scale = np.nanmax(np.abs(expected_arr))
    np.testing.assert_allclose(feats, expected_arr, rtol=1e-4, atol=1e-5 * scale)
    # The data tell the bug apart: unscaled, the moving landmark's features change by far more
    # than the tolerance (the corners clamp to the same cells either way).
    moving = (points["landmark"] == "whisker").to_numpy() & ~low
    change = np.linalg.norm(np.array(unscaled) - expected_arr, axis=1)[moving]
    assert np.median(change / np.linalg.norm(expected_arr, axis=1)[moving]) > 0.1
    # Exactly at --min-confidence is kept, 1 ulp below is missing, and it is counted as such.
    missing = np.isnan(feats).all(axis=1)
    assert missing.sum() == 1 and table.loc[missing, "frame"].tolist() == [4]
    assert table.attrs["low_confidence_positions"] == 1
    assert table.attrs["missing_landmark_rows"] == 1 and table.attrs["outside_frame_rows"] == 0


def test_gap_features_are_the_spatial_mean_of_the_maps(resized_runs):
    per_frame, _ = frame_maps(resized_runs)
    table = pd.read_parquet(resized_runs / "gap.parquet")
    assert table["frame"].tolist() == list(range(20))
    feats = table.filter(regex=r"^f\d{4}$").to_numpy(float)
    expected = per_frame.sum(axis=(1, 2)) / (per_frame.shape[1] * per_frame.shape[2])
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# -- flow of a known translation -----------------------------------------------------------------
DX, DY = 2, -1  # px per frame: content moves right and up
SHIFT_T, SHIFT_HW = 12, (96, 128)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Path:
    """A smooth random texture translated by (DX, DY) px per frame, near-lossless H.264."""
    folder = tmp_path_factory.mktemp("shift")
    (h, w), margin = SHIFT_HW, 30
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 255, (h + 2 * margin, w + 2 * margin)).astype(np.float32)
    big = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)
    texture = big.astype(np.uint8)
    frames = np.stack([
        texture[margin + DY * -t : margin + DY * -t + h, margin - DX * t : margin - DX * t + w]
        for t in range(SHIFT_T)
    ])  # fmt: skip
    assert frames[1, 20 + DY, 20 + DX] == frames[0, 20, 20]  # frame t+1 at (x+DX, y+DY) = frame t
    write_video(folder / "shift.mp4", frames, fps=25, crf=8)
    return folder


def check_translation(flow: np.ndarray, dx: float, dy: float, margin: int) -> None:
    """Interior median within 0.05 px and 95 % of vectors within 0.1 px of the translation.

    A whole-pixel shift of a smooth texture: measured Farneback within 0.002 px, DIS within 0.05 px
    everywhere in the interior. A sign error, swapped components or unscaled displacements miss by
    0.5 px or more. The margin leaves out where new content enters the frame.
    """
    inner = flow[:, margin:-margin, margin:-margin]
    for c, want in ((0, dx), (1, dy)):
        assert abs(float(np.median(inner[..., c])) - want) < 0.05, (c, np.median(inner[..., c]))
        assert np.percentile(np.abs(inner[..., c] - want), 95) < 0.1


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_flow_command_finds_the_translation(shifted, tmp_path, method):
    out = tmp_path / "flow.npy"
    ok(flow_features("flow", shifted / "shift.mp4", "-o", out, "--method", method, cwd=tmp_path))
    flow = np.load(out, allow_pickle=False)
    assert flow.shape == (SHIFT_T - 1, *SHIFT_HW, 2) and flow.dtype == np.float32
    check_translation(flow, DX, DY, margin=16)
    side = json.loads(out.with_name("flow.npy.json").read_text())
    assert side["flow_method"] == method and side["n_frames"] == SHIFT_T
    assert side["video_shape"] == side["flow_shape"] == list(SHIFT_HW)
    assert side["flow_scale_yx"] == [1.0, 1.0]
    assert side["units"] == "pixels per frame at flow_shape resolution"
    data = out.read_bytes()
    assert side["data_bytes"] == len(data)
    assert side["data_sha256"] == hashlib.sha256(data).hexdigest()


def test_flow_command_scales_displacements_with_max_side(shifted, tmp_path):
    """Half the size, half the displacement: (2, -1) px per frame at 128x96 is (1, -0.5) at 64x48."""
    out = tmp_path / "half.npy"
    ok(flow_features("flow", shifted / "shift.mp4", "-o", out, "--max-side", 64, "--method",
                     "farneback", cwd=tmp_path))  # fmt: skip
    flow = np.load(out, allow_pickle=False)
    assert flow.shape == (SHIFT_T - 1, 48, 64, 2)
    check_translation(flow, DX / 2, DY / 2, margin=8)
    side = json.loads(out.with_name("half.npy.json").read_text())
    assert side["video_shape"] == [96, 128] and side["flow_shape"] == [48, 64]
    assert side["flow_scale_yx"] == [2.0, 2.0]


def test_flow_command_for_a_folder_finds_the_translation(shifted, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(shifted / "shift.mp4", videos / "shift.mp4")
    ok(flow_features("flow", "--input-dir", videos, "--output-dir", "out", cwd=tmp_path))
    out = tmp_path / "out" / "shift.npy"
    flow = np.load(out, allow_pickle=False)
    assert flow.shape == (SHIFT_T - 1, *SHIFT_HW, 2)
    check_translation(flow, DX, DY, margin=16)
    side = json.loads(out.with_name("shift.npy.json").read_text())
    assert side["flow_method"] == "dis" and side["n_frames"] == SHIFT_T  # extract's default
    assert side["data_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["flow.npz", "flow.flo", "flows"])
def test_flow_command_writes_only_npy(shifted, tmp_path, name):
    """``flow -o`` writes ``.npy`` only: any other name is refused before any work, nothing left."""
    result = flow_features("flow", shifted / "shift.mp4", "-o", name, cwd=tmp_path)
    assert result.returncode == 2
    assert "must be a .npy file" in result.stderr and name in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- flow, then extract from the flow file ---------------------------------------------------------
@pytest.fixture(scope="module")
def flow_then_extract(shifted):
    """``flow`` with its defaults, and the features of the video with ``extract``'s (the same)."""
    ok(flow_features("flow", "shift.mp4", "-o", "flow.npy", cwd=shifted))
    flow = np.load(shifted / "flow.npy", allow_pickle=False)
    np.savez(shifted / "flow.npz", flow=flow)
    (shifted / "flo").mkdir()
    for i, field in enumerate(flow):
        write_flo(shifted / "flo" / f"{i:03d}.flo", field)
    ok(flow_features("extract", "shift.mp4", "-o", "video.parquet", *MODEL, cwd=shifted))
    return shifted


def check_same_features(folder: Path, output: str) -> None:
    got = pd.read_parquet(folder / output)
    want = pd.read_parquet(folder / "video.parquet")
    assert len(got) == SHIFT_T and got["frame"].tolist() == list(range(SHIFT_T))
    a, b = got.filter(regex=r"^f\d{4}$").to_numpy(), want.filter(regex=r"^f\d{4}$").to_numpy()
    assert a.shape == b.shape == (SHIFT_T, 480)
    # The same flow through the same encoder (measured: equal to the last bit).
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("source", ["flow.npy", "flow.npz", "flo"])
def test_extract_from_flow_files_with_defaults(flow_then_extract, source):
    folder = flow_then_extract
    output = f"from_{Path(source).stem}_defaults.parquet"
    ok(flow_features("extract", source, "-o", output, *MODEL, cwd=folder))
    check_same_features(folder, output)


def test_extract_from_a_flow_file_without_resize_in_the_settings(flow_then_extract):
    """A settings file that says no resize (``extraction: {max_side: null}``) works the same."""
    folder = flow_then_extract
    (folder / "no_resize.yaml").write_text("extraction:\n  max_side: null\n")
    ok(flow_features("extract", "flow.npy", "-o", "from_flow.parquet", "--config",
                     "no_resize.yaml", *MODEL, cwd=folder))  # fmt: skip
    check_same_features(folder, "from_flow.parquet")


@pytest.mark.parametrize(
    ("option", "named"),
    [(("--max-side", "64"), "max_side 64"), (("--roi", "0,0,16,16"), "roi [0, 0, 16, 16]")],
)
def test_a_choice_that_cannot_apply_to_a_flow_file_is_named(flow_then_extract, option, named):
    """An explicit resize or region cannot apply to flow already computed: refused, named."""
    folder = flow_then_extract
    output = f"refused_{option[0][2:]}.parquet"
    result = flow_features("extract", "flow.npy", "-o", output, *option, *MODEL, cwd=folder)
    assert result.returncode == 2 and named in result.stderr and "flow" in result.stderr
    assert not (folder / output).exists()


def test_flow_then_extract_equals_extract_of_the_video_with_every_default(tmp_path):
    """A 320x240 video: ``flow`` (defaults) then ``extract FLOW.npy`` (defaults) gives the rows that
    ``extract VIDEO`` (defaults) gives, because both resize to 256x192 and use DIS; ``flow
    --max-side 0`` keeps the video's size."""
    write_video(tmp_path / "big.mp4", moving_pattern(12, 240, 320), fps=25)
    ok(flow_features("flow", "big.mp4", "-o", "flow.npy", cwd=tmp_path))
    side = json.loads((tmp_path / "flow.npy.json").read_text())
    assert side["flow_method"] == "dis" and side["flow_shape"] == [192, 256]
    ok(flow_features("extract", "flow.npy", "-o", "from_flow.parquet", *MODEL, cwd=tmp_path))
    ok(flow_features("extract", "big.mp4", "-o", "video.parquet", *MODEL, cwd=tmp_path))
    got = pd.read_parquet(tmp_path / "from_flow.parquet")
    want = pd.read_parquet(tmp_path / "video.parquet")
    assert got["frame"].tolist() == want["frame"].tolist() == list(range(12))
    a, b = got.filter(regex=r"^f\d{4}$").to_numpy(), want.filter(regex=r"^f\d{4}$").to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    ok(flow_features("flow", "big.mp4", "-o", "full.npy", "--max-side", 0, cwd=tmp_path))
    assert np.load(tmp_path / "full.npy").shape == (11, 240, 320, 2)


def test_flow_kept_from_a_range_keeps_its_video_frame_numbers(flow_then_extract):
    """Flow kept from frames 3..9 of a video: rows from it are numbered 3..9 (the video's frames)."""
    folder = flow_then_extract
    ok(flow_features("extract", "shift.mp4", "-o", "part.parquet", "--start", 3, "--stop", 10,
                     "--keep-flow", "part.npy", *MODEL, cwd=folder))  # fmt: skip
    ok(flow_features("extract", "part.npy", "-o", "from_part.parquet", *MODEL, cwd=folder))
    rows = pd.read_parquet(folder / "from_part.parquet")
    assert rows["frame"].tolist() == list(range(3, 10))


@pytest.mark.parametrize(
    ("part", "first"),
    [(("--start", 3, "--stop", 10, "--roi", "24,16,64,48", "--max-side", 0), 3),
     (("--start", 3, "--stop", 10, "--roi", "24,16,64,48", "--max-side", 32), 3),
     (("--stop", 9), 0)],
    ids=["range and region", "range and region, resized", "first frames"],
)  # fmt: skip
def test_landmarks_find_their_place_in_flow_kept_from_part_of_a_video(flow_then_extract, part,
                                                                      first):  # fmt: skip
    """Flow kept from part of a video (a range, a region, resized or not): landmarks in the whole
    video's frames and pixels give, from the kept flow, the rows the video gives with that part
    (positions in video pixels, frames numbered as the video's; flow kept in float32, so the
    encoder sees the very same input), and the border rule names the same video frames."""
    folder = flow_then_extract
    t = np.arange(SHIFT_T)
    far = t >= 5  # landmark c leaves the region (x=24..87): dropped, named at video frame 5
    pd.DataFrame({"frame": np.repeat(t, 3), "track_id": ["a", "b", "c"] * SHIFT_T,
                  "x": np.stack([30 + 4 * t, 80 - 3 * t, np.where(far, 2.0, 50.0)], 1).ravel(),
                  "y": np.stack([20 + 2 * t, 60 - t, np.full(SHIFT_T, 40.0)], 1).ravel()}).to_csv(
        folder / "lm.csv", index=False)  # fmt: skip
    point = ["--post-encoder", "point", "--points", "lm.csv", *MODEL]
    name = "_".join(map(str, part)).replace(",", "-")
    kept = f"kept{name}.npy"
    video = ok(flow_features("extract", "shift.mp4", "-o", f"video{name}.parquet", *part, *point,
                             "--keep-flow", kept, "--keep-flow-dtype", "float32", cwd=folder))  # fmt: skip
    again = ok(flow_features("extract", kept, "-o", f"kept{name}.parquet", *point, cwd=folder))
    got = pd.read_parquet(folder / f"kept{name}.parquet")
    want = pd.read_parquet(folder / f"video{name}.parquet")
    keys = [c for c in want.columns if not c.startswith("f0")]
    pd.testing.assert_frame_equal(got[keys], want[keys])
    stop = dict(zip(part[::2], part[1::2], strict=True))["--stop"]
    assert got["frame"].tolist() == np.repeat(np.arange(first, stop), 3).tolist()
    a, b = got.filter(regex=r"^f\d{4}$").to_numpy(), want.filter(regex=r"^f\d{4}$").to_numpy()
    dropped = (want["landmark"] == "c").to_numpy() & (want["frame"] >= 5).to_numpy() & (first == 3)
    assert np.isnan(b[dropped]).all() and np.isfinite(b[~dropped]).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(b)))
    if first == 3:  # the region's border: the same message, in the video's frames
        said = [line for line in again.stderr.splitlines() if "first: frame" in line]
        assert said and "first: frame 5, c" in said[0], again.stderr
        assert said[0] in video.stderr
