"""One long video across Dask workers (extract/split.py, `extract -o OUT --task-frames N`)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import moving_pattern

from napari_flow_features.config import ExtractionSettings
from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.batch import (
    _extractor_for,
    close_client,
    extract_many,
    local_client,
)
from napari_flow_features.extract.pipeline import extract_features
from napari_flow_features.extract.split import (
    DEFAULT_TASK_FRAMES,
    GRID,
    LEAD,
    TAIL,
    Task,
    _join,
    extract_split,
    parts_dir,
    plan_split,
    plan_tasks,
    run_task,
    whole_record,
)
from napari_flow_features.extract.split_batch import batch_task_frames
from napari_flow_features.io.tables import feature_columns, read_table
from napari_flow_features.io.video import write_video

BIN = Path(sys.executable).parent
SETTINGS = ExtractionSettings(
    extractor={"endpoint": "Mixed_3c", "runtime": "tensorflow"}, max_side=None
)


def _video(folder: Path, n: int, name: str = "long.mp4") -> str:
    path = folder / name
    write_video(path, moving_pattern(n), fps=25)
    return str(path)


def _points(folder: Path, n: int) -> str:
    """Two landmarks on every frame, drifting across the 64x48 frame (inside it)."""
    t = np.arange(n)
    table = pd.DataFrame({
        "frame": np.repeat(t, 2),
        "track_id": ["nose", "tail"] * n,
        "x": np.stack([10 + 40 * t / n, 50 - 30 * t / n], 1).ravel(),
        "y": np.stack([12 + 0.1 * t, 36 - 0.1 * t], 1).ravel(),
    })  # fmt: skip
    path = folder / "points.csv"
    table.to_csv(path, index=False)
    return str(path)


def _max_rel_l2(split: pd.DataFrame, whole: pd.DataFrame) -> float:
    cols = feature_columns(whole)
    a, b = split[cols].to_numpy(np.float64), whole[cols].to_numpy(np.float64)
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


def _keys(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in table.columns if c not in feature_columns(table)]]


# -- the plan -------------------------------------------------------------------------------------


def test_tasks_tile_the_range_on_the_grid_with_clipped_margins():
    tasks = plan_tasks(1000, 100, start=13, stop=901)
    assert tasks[0].lo == 13 and tasks[-1].hi == 901
    assert all(a.hi == b.lo for a, b in itertools.pairwise(tasks))
    assert all((t.lo - 13) % GRID == 0 for t in tasks)
    assert all(t.start == max(13, t.lo - LEAD) and t.stop == min(901, t.hi + TAIL) for t in tasks)
    assert all((t.start - 13) % GRID == 0 for t in tasks)
    sizes = [t.rows_frames for t in tasks]
    assert len(tasks) == 9 and max(sizes) - min(sizes) <= GRID and max(sizes) <= 104
    assert plan_tasks(50, 1800) == [Task(0, 0, 50, 0, 50)]
    settings = tasks[2].settings(SETTINGS)
    assert (settings.start, settings.stop) == (tasks[2].start, tasks[2].stop)
    assert settings.frames == tuple(range(tasks[2].lo, tasks[2].hi))


@pytest.mark.parametrize("bad", [0, -8, 2.5, True])
def test_a_bad_task_length_is_named(bad):
    with pytest.raises(BadInputError, match="task_frames"):
        plan_tasks(100, bad)


@pytest.mark.parametrize(
    ("change", "words"),
    [({"keep_flow": "/tmp/f.npy"}, "keep_flow"), ({"post_encoder": "none"}, "none post-encoder"),
     ({"flow_cache": "/tmp"}, "flow_cache"), ({"frames": (3, 4)}, "frames"),
     ({"extractor": {"endpoint": "Mixed_3c", "windowing": "sliding"}}, "sliding")],
)  # fmt: skip
def test_options_a_split_cannot_honour_are_refused_before_any_work(tmp_path, change, words):
    video = _video(tmp_path, 20)
    with pytest.raises(BadInputError, match=words) as err:
        plan_split(video, tmp_path / "out.parquet", SETTINGS.replace(**change), 8)
    assert "--task-frames 0" in str(err.value)
    assert not parts_dir(tmp_path / "out.parquet").exists()


# -- equal to one run -----------------------------------------------------------------------------


def _split_in_process(video: str, out: Path, settings: ExtractionSettings, task_frames: int):
    """The tasks run one after another in this process (the same functions a worker runs)."""
    jobs = plan_split(video, out, settings, task_frames)
    parts_dir(out).mkdir()
    for job in jobs:
        assert run_task(job).get("error") is None
    return jobs, _join(jobs, out, whole_record(video, settings), task_frames, 1.0)


@pytest.mark.parametrize(
    ("n", "start", "stop", "task_frames", "post"),
    [(203, None, None, 24, "gap"), (190, 5, 181, 40, "point"), (157, None, 150, 32, "gap")],
)
def test_split_rows_equal_one_run(tmp_path, n, start, stop, task_frames, post):
    video = _video(tmp_path, n)
    points = _points(tmp_path, n) if post == "point" else None
    settings = SETTINGS.replace(start=start, stop=stop, post_encoder=post, points=points)
    whole = extract_features(video, _extractor_for(settings.extractor), settings)
    out = tmp_path / "out.parquet"
    jobs, result = _split_in_process(video, out, settings, task_frames)
    assert len(jobs) >= 4 and result.rows == len(whole.table)
    split = read_table(out)
    pd.testing.assert_frame_equal(_keys(split), _keys(whole.table))
    assert _max_rel_l2(split, whole.table) <= 1e-6
    meta = split.attrs
    for key in ("start_frame", "stop_frame", "n_frames", "rows_frames", "padded_frames",
                "landmarks", "post_encoder", "endpoint", "runtime_used"):  # fmt: skip
        assert meta[key] == whole.metadata[key], key
    assert meta["missing_landmark_rows"] == whole.metadata["missing_landmark_rows"]
    assert meta["split"]["tasks"] == [[j.task.lo, j.task.hi, j.task.start, j.task.stop]
                                      for j in jobs]  # fmt: skip
    ran = sum(hi - lo for lo, hi in meta["chunks"])
    assert meta["encoder_frames_per_output_frame"] == pytest.approx(ran / split["frame"].nunique())
    assert not parts_dir(out).exists()


def test_split_into_an_npz(tmp_path):
    video = _video(tmp_path, 100)
    whole = extract_features(video, _extractor_for(SETTINGS.extractor), SETTINGS).table
    out = tmp_path / "out.npz"
    _, result = _split_in_process(video, out, SETTINGS, 32)
    with np.load(out) as saved:
        np.testing.assert_array_equal(saved["frame"], whole["frame"])
        got, want = saved["features"].astype(np.float64), whole[feature_columns(whole)].to_numpy()
    rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert result.rows == 100 and rel.max() <= 1e-6 and not parts_dir(out).exists()


def test_tasks_without_their_margins_would_differ(tmp_path):
    """The equality above is not free: tasks cut at their own rows change the rows near cuts."""
    video = _video(tmp_path, 120)
    ext = _extractor_for(SETTINGS.extractor)
    whole = extract_features(video, ext, SETTINGS).table
    bare = [Task(0, 0, 64, 0, 64), Task(1, 64, 120, 64, 120)]
    rows = pd.concat([extract_features(video, ext, t.settings(SETTINGS)).table for t in bare])
    assert _max_rel_l2(rows.reset_index(drop=True), whole) > 1e-3


# -- on Dask --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> ExtractionSettings:
    """Settings of a model loaded from a registry: every worker runs the same weights.

    (Random weights built in a Dask worker are not reproducible: Keras draws their seeds from the
    process's shared ``random`` while the worker's other threads use it too.)
    """
    from napari_flow_features.model.extractor import DynamicFeatureExtractor

    folder = tmp_path_factory.mktemp("registry")
    model = DynamicFeatureExtractor(config=SETTINGS.extractor)
    model.save_model_with_serializer(folder, {"model_name": "small"})
    weights = {"source": "registry", "registry_dir": str(folder), "model_name": "small"}
    return SETTINGS.replace(extractor=SETTINGS.extractor.replace(weights=weights))


@pytest.fixture(scope="module")
def two_workers():
    """A LocalCluster of 2 worker processes (one thread each)."""
    client = local_client(workers=2, cores_per_worker=1)
    yield client
    close_client(client)


def test_on_two_workers_resumes_only_the_missing_task(tmp_path, two_workers, saved):
    video = _video(tmp_path, 150)
    out = tmp_path / "out.parquet"
    whole = extract_features(video, _extractor_for(saved.extractor), saved).table
    heard: list[tuple[int, int]] = []
    result = extract_split(video, out, saved, task_frames=40, client=two_workers,
                           video_progress=lambda e: heard.append((e["done"], e["total"])))  # fmt: skip
    assert result.rows == 150 and _max_rel_l2(read_table(out), whole) <= 1e-6
    assert heard[-1] == (150, 150) and all(t == 150 for _, t in heard)
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)
    workers = two_workers.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2

    # A run killed after some tasks: their parts are kept, the rerun runs only the others.
    jobs = plan_split(video, out, saved, 40)
    out.unlink()
    parts_dir(out).mkdir()
    for job in jobs[:2] + jobs[3:]:
        run_task(job)
    kept = {j.part: Path(j.part).stat().st_mtime_ns for j in jobs if j is not jobs[2]}
    seen: list[str] = []
    two_workers.subscribe_topic("napari-flow-features-progress",
                                lambda e: seen.append(e[1]["output"]))  # fmt: skip
    messages: list[str] = []
    result = extract_split(video, out, saved, task_frames=40, client=two_workers,
                           log=messages.append)  # fmt: skip
    assert "3 done before, 1 to run" in messages[0]
    assert {Path(p).name for p in seen} == {Path(jobs[2].part).name}
    assert result.rows == 150 and _max_rel_l2(read_table(out), whole) <= 1e-6
    assert not parts_dir(out).exists() and kept  # joined, then removed


def test_a_failing_task_is_named_and_the_finished_parts_stay(tmp_path, two_workers, saved):
    video = _video(tmp_path, 100)
    out = tmp_path / "out.parquet"
    jobs = plan_split(video, out, saved, 32)
    Path(jobs[1].part).mkdir(parents=True)  # task 1's part cannot be written: its name is taken
    with pytest.raises(BadInputError, match=r"^task 1 \(frames 24\.\.47\): .*3 of 4 tasks' parts "
                       r"are kept in .*a rerun runs only the others"):  # fmt: skip
        extract_split(video, out, saved, task_frames=32, client=two_workers)
    assert not out.exists()
    assert [Path(j.part).is_file() for j in jobs] == [True, False, True, True]
    Path(jobs[1].part).rmdir()
    messages: list[str] = []
    extract_split(video, out, saved, task_frames=32, client=two_workers, log=messages.append)
    assert "3 done before, 1 to run" in messages[0] and len(read_table(out)) == 100


def test_cli_task_frames_through_a_scheduler(tmp_path, two_workers, saved):
    video = _video(tmp_path, 120)
    out = tmp_path / "out.csv"
    cmd = [str(BIN / "flow-features"), "extract", video, "-o", str(out), "--endpoint", "Mixed_3c",
           "--runtime", "tensorflow", "--max-side", "0", "--task-frames", "48", "--scheduler",
           two_workers.scheduler.address, "--registry-dir", saved.extractor.weights.registry_dir,
           "--model-name", "small"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 tasks" in result.stderr + result.stdout
    table = read_table(out)
    whole = extract_features(video, _extractor_for(saved.extractor), saved).table
    assert _max_rel_l2(table, whole) <= 1e-6
    assert table.attrs["split"]["task_frames"] == 48


def test_cli_refuses_what_it_cannot_split_before_any_work(tmp_path, capsys):
    from napari_flow_features.cli import main

    videos = [_video(tmp_path, 20, f"v{i}.mp4") for i in range(2)]
    batch = ["extract", *videos, "--output-dir", str(tmp_path / "out"), "--task-frames", "8",
             "--windowing", "sliding"]  # fmt: skip
    assert main(batch) == 2
    err = capsys.readouterr().err
    assert "v0.mp4" in err and "sliding windows" in err and "--task-frames 0" in err
    single = ["extract", videos[0], "-o", str(tmp_path / "o.parquet"), "--keep-flow",
              str(tmp_path / "f.npy")]  # fmt: skip
    assert main([*single, "--workers", "2", "--task-frames", "8"]) == 2
    assert "keep_flow" in capsys.readouterr().err
    assert main([*single[:4], "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "--workers sizes a LocalCluster" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.parts")) and not (tmp_path / "out").exists()


# -- a batch's long videos ------------------------------------------------------------------------


def test_an_automatic_split_shares_the_frames_out_over_the_workers():
    from napari_flow_features.extract.split_batch import MIN_AUTO_TASK_FRAMES, auto_task_frames

    assert auto_task_frames([12_000], 16, 1800) == 752  # 16 tasks, not 7 with 9 workers idle
    assert auto_task_frames([108_000] * 3, 8, 1800) == 1800  # enough work: the longest tasks
    assert auto_task_frames([2400], 2, 1800) == 1200
    assert auto_task_frames([9000], 16, 1800) == MIN_AUTO_TASK_FRAMES  # margins stay <= 20 %
    assert all(auto_task_frames([n], w, 1800) % GRID == 0 for n in (999, 5001) for w in (3, 7))


def test_batch_task_frames_splits_when_workers_outnumber_videos():
    assert batch_task_frames(None, workers=4, videos=3) == DEFAULT_TASK_FRAMES
    assert batch_task_frames(None, workers=3, videos=3) == 0
    assert batch_task_frames(0, workers=16, videos=1) == 0
    assert batch_task_frames(96, workers=1, videos=5) == 96


def test_batch_splits_a_long_video_across_idle_workers(tmp_path, two_workers, saved, monkeypatch):
    """Two workers, one video to run: it is cut into tasks, joined into the table a batch writes."""
    monkeypatch.setattr("napari_flow_features.extract.split_batch.DEFAULT_TASK_FRAMES", 40)
    (tmp_path / "study").mkdir()
    video = _video(tmp_path / "study", 150)
    whole = extract_many([video], tmp_path / "whole", saved, client=two_workers, task_frames=0)
    heard: list[dict] = []
    log: list[str] = []
    calls: list[tuple] = []
    index = extract_many([video], tmp_path / "split", saved, client=two_workers, log=log.append,
                         video_progress=heard.append,
                         progress=lambda d, t, r: calls.append((d, t, r)))  # fmt: skip
    assert list(index["status"]) == ["done"] and int(index["rows"][0]) == 150
    # Heard when the work starts (a bar can show from then on), then when the video is done.
    assert calls[0] == (0, 1, None) and calls[-1][:2] == (1, 1)
    assert calls[-1][2]["status"] == "done"
    assert any("long.mp4: 4 tasks of about 40 frames; 0 done before, 4 to run" in m for m in log)
    split_table = pd.read_parquet(index["output"][0])
    whole_table = pd.read_parquet(whole["output"][0])
    pd.testing.assert_frame_equal(_keys(split_table), _keys(whole_table))  # source column first
    assert list(split_table.columns[:2]) == ["source", "frame"]
    assert _max_rel_l2(split_table, whole_table) <= 1e-6
    meta = read_table(index["output"][0]).attrs
    assert meta["split"]["task_frames"] == 40 and len(meta["split"]["tasks"]) == 4
    assert meta["batch"]["settings_hash"] == whole["settings_hash"][0]
    # Progress is the video's, across its tasks: the table's name, frames up to 150, never back.
    assert heard and {e["output"] for e in heard} == {index["output"][0]}
    assert all(e["total"] == 150 for e in heard)
    assert [e["done"] for e in heard] == sorted(e["done"] for e in heard)
    # Nothing is left beside the tables, and a rerun skips the joined table like any other.
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["_index", "long.parquet"]
    again = extract_many([video], tmp_path / "split", saved, client=two_workers)
    assert list(again["status"]) == ["skipped"]


@pytest.mark.parametrize("form", ["-o", "--output-dir"])
def test_a_killed_run_resumes_with_the_tasks_that_had_not_finished(tmp_path, two_workers, saved,
                                                                   form):  # fmt: skip
    """SIGKILL the command line once its first part is written; the rerun runs only the rest."""
    import re
    import signal
    import time

    video = _video(tmp_path, 200)
    target = tmp_path / ("out.parquet" if form == "-o" else "tables")
    parts = parts_dir(target) if form == "-o" else target / "_parts" / "long"
    cmd = [str(BIN / "flow-features"), "extract", video, form, str(target), "--endpoint",
           "Mixed_3c", "--runtime", "tensorflow", "--max-side", "0", "--task-frames", "24",
           "--scheduler", two_workers.scheduler.address, "--registry-dir",
           saved.extractor.weights.registry_dir, "--model-name", "small"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(parts.glob("task-*.parquet")) and first.poll() is None:
        assert time.monotonic() < deadline, "no part was written"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = len(list(parts.glob("task-*.parquet")))
    assert first.returncode == -signal.SIGKILL and kept >= 1
    time.sleep(3)  # the tasks running at the kill finish (Dask cannot stop a running task)

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    said = re.search(r"9 tasks of about 24 frames; (\d+) done before, (\d+) to run", again.stderr)
    assert said, again.stderr
    done_before, to_run = map(int, said.groups())
    assert done_before >= kept and to_run >= 1 and done_before + to_run == 9
    table = read_table(target if form == "-o" else target / "long.parquet")
    whole = extract_features(video, _extractor_for(saved.extractor), saved).table
    assert len(table) == 200 and _max_rel_l2(table, whole) <= 1e-6
    assert not parts.exists() and not list(tmp_path.rglob("*.partial*"))


def test_a_split_video_that_cannot_run_fails_once_with_its_reason(tmp_path, two_workers, saved):
    """The model cannot load on the workers: one clear reason in the index (not one per task and
    the plan), no Dask retries of a failure that repeats, and no empty parts folder left."""
    (tmp_path / "study").mkdir()
    video = _video(tmp_path / "study", 100)
    gone = saved.extractor.weights.replace(registry_dir=str(tmp_path / "no-registry"))
    broken = saved.replace(extractor=saved.extractor.replace(weights=gone))
    index = extract_many([video], tmp_path / "out", broken, client=two_workers, task_frames=40)
    assert list(index["status"]) == ["failed"]
    error = index["error"][0]
    assert "no-registry" in error and error.count("no-registry") == 1, error
    assert "tasks failed" not in error and "kept in" not in error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_index"]


def test_a_video_run_whole_removes_the_parts_a_killed_split_left(tmp_path, two_workers, saved):
    """A killed split run, rerun whole (--task-frames 0, or fewer workers than videos): its parts
    could not be reused and would stay forever; the finished table removes them."""
    from napari_flow_features.cli import main

    (tmp_path / "study").mkdir()
    video = _video(tmp_path / "study", 60)
    out = tmp_path / "out"
    left = out / "_parts" / "long"
    left.mkdir(parents=True)
    (left / "task-00000-0-40.parquet").write_bytes(b"a part of a killed run")
    index = extract_many([video], out, saved, client=two_workers, task_frames=0)
    assert list(index["status"]) == ["done"] and not (out / "_parts").exists()

    single = tmp_path / "single.parquet"
    parts_dir(single).mkdir()
    (parts_dir(single) / "task-00000-0-40.parquet").write_bytes(b"a part of a killed run")
    assert main(["-q", "extract", video, "-o", str(single), "--endpoint", "Mixed_3c", "--runtime",
                 "tensorflow", "--max-side", "0", "--registry-dir",
                 saved.extractor.weights.registry_dir, "--model-name", "small"]) == 0  # fmt: skip
    assert single.is_file() and not parts_dir(single).exists()


def test_a_split_implied_by_a_cluster_option_runs_whole_when_it_cannot_apply(tmp_path, capsys):
    """``--workers 2`` without ``--task-frames`` implies a split, as a batch's idle workers do:
    settings a split cannot honour run the video as one task instead, said (an explicit
    ``--task-frames`` is refused, above)."""
    from napari_flow_features.cli import main

    video = _video(tmp_path, 20)
    out, kept = tmp_path / "o.parquet", tmp_path / "f.npy"
    assert main(["extract", video, "-o", str(out), "--keep-flow", str(kept), "--workers", "2",
                 "--endpoint", "Mixed_3c", "--runtime", "tensorflow", "--max-side", "0",
                 "--weights", "random"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "runs as one task in this process, as a split cannot: keep_flow" in err
    assert len(read_table(out)) == 20 and kept.is_file()


def test_auto_split_says_why_a_long_video_runs_whole_and_is_silent_about_short_ones(tmp_path):
    from napari_flow_features.extract.batch import Job
    from napari_flow_features.extract.split_batch import split_videos

    sliding = SETTINGS.replace(extractor=SETTINGS.extractor.replace(windowing="sliding"))
    jobs = [Job(_video(tmp_path, n, f"v{n}.mp4"), str(tmp_path / f"v{n}.parquet"), s, "h")
            for n, s in ((100, sliding), (30, sliding), (100, SETTINGS))]  # fmt: skip
    log: list[str] = []
    planned = split_videos(jobs, 40, explicit=False, log=log.append)
    assert list(planned) == [jobs[2].output] and planned[jobs[2].output][0] == 40
    assert len(planned[jobs[2].output][1]) == 3
    assert len(log) == 1 and log[0].startswith("v100.mp4: runs as one task, as a split cannot: ")
    assert "sliding windows" in log[0] and "--task-frames" not in log[0]
    with pytest.raises(BadInputError, match=r"v100\.mp4: a split run cannot: sliding"):
        split_videos(jobs, 40, explicit=True)


def test_a_rerun_cuts_a_video_as_its_first_run_did(tmp_path, monkeypatch):
    """The automatic length depends on the videos left to run; a rerun after a kill (one video
    fewer) keeps the length the parts were made with, so they are reused."""
    from napari_flow_features.extract import split_batch
    from napari_flow_features.extract.batch import Job

    monkeypatch.setattr(split_batch, "MIN_AUTO_TASK_FRAMES", 8)
    out = tmp_path / "out"
    out.mkdir()  # the batch makes it before planning
    jobs = [Job(_video(tmp_path, 100, f"{name}.mp4"), str(out / f"{name}.parquet"), SETTINGS, "h")
            for name in ("a", "b")]  # fmt: skip
    first = split_batch.split_videos(jobs, 1800, explicit=False, workers=4)
    assert {length for length, _ in first.values()} == {56}  # 200 frames over 4 workers
    assert split_batch.auto_task_frames([100], 4, 1800) == 32  # what b alone would get
    again = split_batch.split_videos(jobs[1:], 1800, explicit=False, workers=4)
    assert again[jobs[1].output][0] == 56
    assert [t.part for t in again[jobs[1].output][1]] == [t.part for t in first[jobs[1].output][1]]
    other = jobs[1].__class__(jobs[1].source, jobs[1].output, SETTINGS, "other settings")
    assert split_batch.split_videos([other], 1800, explicit=False, workers=4)[other.output][0] == 32


def test_extract_split_says_what_it_cannot_take(tmp_path):
    video = _video(tmp_path, 20)
    out = tmp_path / "o.parquet"
    with pytest.raises(TypeError):
        extract_split(video, out, SETTINGS, 1800)  # how it runs is keywords (or run=)
    with pytest.raises(BadInputError, match="task_frames 0 is no split"):
        extract_split(video, out, SETTINGS, task_frames=0)
    with pytest.raises(TypeError, match="video_progress"):
        extract_split(video, out, SETTINGS, progress=print)
    assert not out.exists() and not parts_dir(out).exists()
