"""Many videos on Dask (extract/batch.py, `extract --output-dir`): real clusters, no mocks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import moving_pattern

from napari_flow_features.cli import main
from napari_flow_features.errors import BadInputError
from napari_flow_features.extract.batch import (
    BatchSettings,
    close_client,
    extract_many,
    local_client,
    output_names,
    plan_jobs,
    read_index,
    settings_digest,
    table_batch_record,
)
from napari_flow_features.io.tables import read_table
from napari_flow_features.io.video import write_video

BIN = Path(sys.executable).parent
SMALL = ["--endpoint", "Mixed_3c"]
SETTINGS = BatchSettings(extractor={"endpoint": "Mixed_3c"})


def _study(folder: Path, n_good: int = 3, frames: int = 24, corrupt: bool = True) -> list[Path]:
    """``n_good`` short videos in nested folders, plus one file that is not a video."""
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for i in range(n_good):
        path = folder / f"mouse{i % 2}" / f"session{i}.mp4"
        path.parent.mkdir(exist_ok=True)
        write_video(path, moving_pattern(frames), fps=25)
        videos.append(path)
    if corrupt:
        bad = folder / "mouse0" / "broken.mp4"
        bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 40)
        videos.append(bad)
    return videos


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".partial-" in p.name]


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("[!_.]*.parquet")}


@pytest.fixture(scope="module")
def two_workers():
    """A LocalCluster of 2 worker processes (one thread each)."""
    client = local_client(workers=2, cores_per_worker=1)
    yield client
    close_client(client)


def test_cli_folder_with_a_corrupt_video_rerun_and_force(tmp_path, capsys):
    _study(tmp_path / "study")
    out = tmp_path / "features"
    # The YAML the extraction dock saves; an option given on the command line wins over it.
    config = BatchSettings(extractor={"endpoint": "Mixed_3c"}, max_side=None).to_yaml(
        tmp_path / "extract.yaml"
    )
    argv = ["extract", str(tmp_path / "study"), "--output-dir", str(out), "--config", str(config),
            "--max-side", "32"]  # fmt: skip
    assert main(argv) == 3  # ran, some failed (2 would be "could not start")
    text = capsys.readouterr().out
    assert "3 done, 0 skipped, 1 failed" in text
    assert "FAILED" in text and "broken.mp4" in text and "Not a readable video" in text
    index = read_index(out)
    assert pd.read_csv(out / "_index" / "index.csv")["status"].tolist() == index["status"].tolist()
    by_name = {
        Path(s).name: row for s, row in zip(index["source"], index.to_dict("records"), strict=True)
    }
    assert by_name["broken.mp4"]["status"] == "failed"
    assert "Not a readable video" in by_name["broken.mp4"]["error"]
    for name in ("session0.mp4", "session1.mp4", "session2.mp4"):
        assert by_name[name]["status"] == "done" and by_name[name]["rows"] == 24
    assert not (out / "broken.parquet").exists()
    # The per-video tables read back as one (the index files are not part of the dataset).
    table = pd.read_parquet(out)
    assert len(table) == 72
    assert table["source"].nunique() == 3 and table.columns[:2].tolist() == ["source", "frame"]
    import dask.dataframe as dd

    lazy = dd.read_parquet(str(out / "*.parquet"))
    assert lazy.npartitions == 3 and list(lazy.columns) == list(table.columns)
    assert len(lazy) == 72
    assert sorted(read_table(out / "session0.parquet")["frame"]) == list(range(24))
    used = table_batch_record(out / "session0.parquet")["settings"]
    assert used["extractor"]["endpoint"] == "Mixed_3c" and used["max_side"] == 32
    assert read_table(out / "session0.parquet").attrs["endpoint"] == "Mixed_3c"
    before = _mtimes(out)

    assert main(argv) == 3  # rerun: the done ones are skipped and untouched, the broken fails again
    assert "0 done, 3 skipped, 1 failed" in capsys.readouterr().out
    assert _mtimes(out) == before
    assert sorted(read_index(out)["status"]) == ["failed", "skipped", "skipped", "skipped"]

    assert main([*argv, "--force"]) == 3
    assert "3 done, 0 skipped, 1 failed" in capsys.readouterr().out
    after = _mtimes(out)
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in before)
    assert not _partials(tmp_path)


def test_changed_settings_or_source_redo_a_video(tmp_path, two_workers):
    videos = _study(tmp_path / "study", n_good=2, corrupt=False)
    out = tmp_path / "out"
    index = extract_many([tmp_path / "study"], out, SETTINGS, client=two_workers)
    assert index["status"].tolist() == ["done", "done"]
    assert SETTINGS == BatchSettings(extractor={"endpoint": "Mixed_3c"})  # the run changed nothing
    # A changed source (size/mtime) is redone; the other is skipped.
    write_video(videos[0], moving_pattern(30), fps=25)
    index = extract_many([tmp_path / "study"], out, SETTINGS, client=two_workers)
    assert dict(zip(index["source"], index["status"], strict=True)) == {
        str(videos[0]): "done", str(videos[1]): "skipped"}  # fmt: skip
    assert index["rows"].tolist() == [30, 24]
    # Other settings: every video is redone.
    other = BatchSettings(extractor={"endpoint": "Mixed_3b"})
    index = extract_many([tmp_path / "study"], out, other, client=two_workers)
    assert index["status"].tolist() == ["done", "done"]
    record = table_batch_record(out / "session0.parquet")
    assert record["settings_hash"] == settings_digest(other)
    assert record["settings"]["extractor"] == other.extractor.to_dict()


def test_a_worker_killed_mid_video_is_survived(tmp_path, two_workers):
    _study(tmp_path / "study", n_good=3, frames=600, corrupt=False)
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_a_writer() -> None:
        # The temporary table's name carries its writer's pid: kill that worker mid-video.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            # Only tables' temporaries: the index's belongs to this very process.
            for part in out.glob(".session*.partial-*"):
                pid = int(part.name.split(".partial-")[1].split("-")[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_writer)
    killer.start()
    events: list[dict] = []
    index = extract_many([tmp_path / "study"], out, SETTINGS, client=two_workers, retries=2,
                         video_progress=events.append)  # fmt: skip
    killer.join()
    assert killed, "no worker was seen writing"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    assert index["status"].tolist() == ["done"] * 3
    for path in index["output"]:
        assert len(read_table(path)) == 600
    assert not _partials(out)  # the dead worker's temporary went at the end of the run
    # Per-video progress came from the workers, up to each video's last frame.
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and len({e["output"] for e in events if e["done"] == 600}) < 3
    ):
        time.sleep(0.1)
    assert {e["output"] for e in events if e["done"] == e["total"] == 600} == set(index["output"])


def test_sigkill_of_the_command_then_rerun_completes(tmp_path):
    _study(tmp_path / "study", n_good=4, frames=400, corrupt=False)
    out = tmp_path / "out"
    cmd = [str(BIN / "flow-features"), "extract", str(tmp_path / "study"), "--output-dir",
           str(out), *SMALL]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(out.glob("[!_.]*.parquet")):
        children = psutil.Process(proc.pid).children(recursive=True) or children
        time.sleep(0.05)
    assert list(out.glob("[!_.]*.parquet")), "no video finished"
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes left after SIGKILL: {alive}"
    finished = sorted(out.glob("[!_.]*.parquet"))
    assert len(finished) < 4
    for path in finished:  # every output at a final path is complete
        assert len(read_table(path)) == 400
    before = {p.name: p.stat().st_mtime_ns for p in finished}

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    index = read_index(out)
    assert set(index["status"]) <= {"done", "skipped"}
    assert (index["status"] == "skipped").sum() >= len(finished)
    for path in index["output"]:
        assert len(read_table(path)) == 400
    assert {p: Path(out / p).stat().st_mtime_ns for p in before} == before
    assert not _partials(out)


def test_sigterm_stops_the_batch_cleanly(tmp_path):
    _study(tmp_path / "study", n_good=3, frames=400, corrupt=False)
    out = tmp_path / "out"
    cmd = [str(BIN / "flow-features"), "extract", str(tmp_path / "study"), "--output-dir",
           str(out), *SMALL]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(out.glob("[!_.]*.parquet")):
        children = psutil.Process(proc.pid).children(recursive=True) or children
        time.sleep(0.05)
    proc.terminate()  # a cluster's time limit
    assert proc.wait(timeout=60) == 143
    assert "terminated" in proc.stderr.read()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    assert not _partials(out)
    for path in out.glob("*.parquet"):
        assert len(read_table(path)) == 400


def _in_group(process: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False


CTRL_C_MOMENTS = {  # when to press it: what has just appeared (in the output, in $TMPDIR)
    "while the cluster starts": ("tmp", ".flow-features-dask.partial-*"),  # made just before
    "while a worker runs": ("tmp", ".flow-features.partial-*"),  # a task's run folder
    "while a worker writes": ("out", ".session*.partial-*"),
    "twice": ("out", ".session*.partial-*"),
}


@pytest.mark.parametrize("when", list(CTRL_C_MOMENTS))
def test_ctrl_c_stops_the_batch_cleanly(tmp_path, when):
    """Ctrl-C in the terminal (SIGINT to the whole process group, workers included): exit 130
    without a traceback or error lines (workers ignore it and are closed in order; a second
    Ctrl-C does not cut that short), no process of the run left, nothing partial in the output
    folder or the temporary folder (Dask's scratch space and the workers' run folders included),
    and every table written is whole. Pressed while the cluster starts, it is not lost."""
    frames = 1200 if when == "while a worker runs" else 400  # still running a second in
    _study(tmp_path / "study", n_good=2, frames=frames, corrupt=False)
    folders = {"out": tmp_path / "out", "tmp": tmp_path / "tmp"}
    folders["tmp"].mkdir()
    cmd = [str(BIN / "flow-features"), "extract", str(tmp_path / "study"), "--output-dir",
           str(folders["out"]), "--workers", "2", *SMALL]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "TMPDIR": str(folders["tmp"])})  # fmt: skip
    where, pattern = CTRL_C_MOMENTS[when]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if list(folders[where].glob(pattern)):
            break
        time.sleep(0.005)
    if when == "while a worker runs":
        time.sleep(1.0)  # into its flow and encoder
    assert proc.poll() is None, "the run ended before the moment to press Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)
    if when == "twice":
        time.sleep(1.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "ERROR" not in err, err[-3000:]
    deadline = time.monotonic() + 30
    left = [q for q in psutil.process_iter() if _in_group(q, proc.pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [q for q in left if _in_group(q, proc.pid)]
    assert not left, f"processes left after Ctrl-C: {left}"
    assert not _partials(folders["out"])
    assert not [p.name for p in folders["tmp"].iterdir() if ".partial-" in p.name]
    tables = list(folders["out"].glob("[!_.]*.parquet"))
    for path in tables:
        assert len(read_table(path)) == frames
    if when == "while the cluster starts":
        assert not tables  # stopped before any video ran


def test_external_scheduler_and_worker_processes(tmp_path):
    _study(tmp_path / "study", n_good=2, corrupt=False)
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--scheduler-file", str(sched_file), "--port", "0",
         "--dashboard-address", ":0", "--no-show"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file), "--nworkers", "1",
             "--nthreads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))  # fmt: skip
        address = json.loads(sched_file.read_text())["address"]
        out = tmp_path / "out"
        argv = ["extract", str(tmp_path / "study"), "--output-dir", str(out), *SMALL]
        assert main([*argv, "--scheduler-file", str(sched_file)]) == 0
        assert read_index(out)["status"].tolist() == ["done", "done"]
        assert main([*argv, "--scheduler", address, "--force"]) == 0
        assert read_index(out)["status"].tolist() == ["done", "done"]
        assert len(pd.read_parquet(out)) == 48
    finally:
        tree = [p for proc in procs for p in psutil.Process(proc.pid).children(recursive=True)]
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)
        _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive


def test_manifest_rows_overrides_and_errors_name_the_row(tmp_path, two_workers):
    videos = _study(tmp_path / "study", n_good=2, corrupt=False)
    manifest = tmp_path / "runs.csv"
    manifest.write_text(
        "video,output,endpoint,max_side\n"
        f"{videos[0]},a.parquet,,\n"
        f"study/{videos[1].parent.name}/{videos[1].name},,Mixed_3b,32\n"
    )
    index = extract_many(None, tmp_path / "out", SETTINGS, client=two_workers, manifest=manifest)
    assert index["status"].tolist() == ["done", "done"]
    assert Path(index["output"][0]).name == "a.parquet"
    first, second = (table_batch_record(p)["settings"] for p in index["output"])
    assert first["extractor"]["endpoint"] == "Mixed_3c" and first["max_side"] == "auto"
    assert second["extractor"]["endpoint"] == "Mixed_3b" and second["max_side"] == 32

    manifest.write_text(f"path\n{videos[0]}\n")
    with pytest.raises(BadInputError, match="no 'video' column"):
        plan_jobs(None, tmp_path / "o", SETTINGS, manifest)
    manifest.write_text(f"video,points\n{videos[0]},\n{tmp_path / 'missing.mp4'},\n")
    with pytest.raises(BadInputError, match=r"runs.csv row 3: video not found: .*missing.mp4"):
        plan_jobs(None, tmp_path / "o", SETTINGS, manifest)
    manifest.write_text(f"video,colour\n{videos[0]},red\n")
    with pytest.raises(BadInputError, match=r"row 2.*Unknown setting 'colour'"):
        plan_jobs(None, tmp_path / "o", SETTINGS, manifest)
    # Per-video landmarks: the points column with the point post-encoder.
    points = tmp_path / "study" / "whisker_base.csv"
    pd.DataFrame({"frame": range(24), "x": 20.0, "y": 10.0 + pd.Series(range(24)) / 2}).to_csv(
        points, index=False
    )
    manifest.write_text(f"video,points,post_encoder\n{videos[0]},study/{points.name},point\n")
    index = extract_many(None, tmp_path / "pts", SETTINGS, client=two_workers, manifest=manifest)
    table = read_table(index["output"][0])
    assert index["status"].tolist() == ["done"] and len(table) == 24
    assert table["x"].tolist() == [20.0] * 24 and table["y"].iloc[-1] == 21.5
    # One video twice, with other settings and outputs: two rows of the index.
    manifest.write_text(
        f"video,output,endpoint\n{videos[1]},b3.parquet,\n{videos[1]},b2.parquet,Conv3d_2c_3x3\n"
    )
    index = extract_many(None, tmp_path / "two", SETTINGS, client=two_workers, manifest=manifest)
    assert index["status"].tolist() == ["done", "done"]
    assert [read_table(p).shape[1] for p in index["output"]] == [2 + 480, 2 + 192]
    # From the command line: could not start (2), nothing written.
    manifest.write_text(f"video,colour\n{videos[0]},red\n")
    assert main(["extract", "--manifest", str(manifest), "--output-dir", str(tmp_path / "o")]) == 2
    assert not list((tmp_path / "o").glob("*.parquet"))


def test_output_names_are_unique_and_deterministic(tmp_path):
    paths = [tmp_path / "a" / "s1" / "trial.mp4", tmp_path / "b" / "s1" / "trial.mp4",
             tmp_path / "c" / "x.mp4", tmp_path / "c" / "x.avi", tmp_path / "c" / "Y.mp4"]  # fmt: skip
    names = output_names(paths)
    assert names == ["a__s1__trial.parquet", "b__s1__trial.parquet", "x_mp4.parquet",
                     "x_avi.parquet", "Y.parquet"]  # fmt: skip
    assert output_names(paths) == names


def test_bad_sources_and_options_are_named_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["extract", str(tmp_path / "nope.mp4"), "--output-dir", str(out)]) == 2
    assert "Video not found" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "*.mp4"), "--output-dir", str(out)]) == 2
    assert "No file matches" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["extract", str(tmp_path / "empty"), "--output-dir", str(out)]) == 2
    assert "No video" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "*.mp4"), "-o", str(tmp_path / "x.parquet")]) == 2
    assert "--output-dir" in capsys.readouterr().err  # a pattern is a batch
    assert main(["extract", "a.mp4", "b.mp4"]) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert (
        main(["extract", "a.mp4", "b.mp4", "--output-dir", str(out), "--keep-flow", "f.npy"]) == 2
    )
    assert "--keep-flow is for one video" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="Unknown config field 'endpont'"):
        BatchSettings(extractor={"endpont": "Mixed_3c"})


def test_flow_input_dir_skips_and_keeps_going(tmp_path, capsys):
    _study(tmp_path / "study", n_good=2)
    out = tmp_path / "flow"
    argv = ["flow", "--input-dir", str(tmp_path / "study"), "--output-dir", str(out),
            "--method", "dis", "--max-side", "32"]  # fmt: skip
    assert main(argv) == 3
    assert "2 done, 0 skipped, 1 failed" in capsys.readouterr().out
    index = read_index(out)
    assert index.set_index("output")["rows"].dropna().to_dict() == {
        str(out / "session0.npy"): 23, str(out / "session1.npy"): 23}  # fmt: skip
    assert "Not a readable video" in index["error"][index["status"] == "failed"].iloc[0]
    assert np.load(out / "session0.npy").shape == (23, 24, 32, 2)
    before = _mtimes_of(out, "*.npy")
    assert main(argv) == 3
    assert "0 done, 2 skipped, 1 failed" in capsys.readouterr().out
    assert _mtimes_of(out, "*.npy") == before
    assert main([*argv[:-1], "40"]) == 3  # other settings: redone
    assert "2 done, 0 skipped, 1 failed" in capsys.readouterr().out
    assert np.load(out / "session0.npy").shape == (23, 30, 40, 2)


def _mtimes_of(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob(pattern)}


def test_local_cluster_workers_get_their_own_cores(two_workers):
    shares = two_workers.run(lambda: sorted(os.sched_getaffinity(0)))
    tasks = [two_workers.submit(lambda i: sorted(os.sched_getaffinity(0)), i, pure=False)
             for i in range(4)]  # fmt: skip
    first_two = sorted(os.sched_getaffinity(0))[:2]
    assert sorted(map(tuple, shares.values())) == [(first_two[0],), (first_two[1],)]
    assert all(len(t.result()) == 1 for t in tasks)  # task threads inherit the share


def test_single_video_form_reads_the_docks_settings_file(tmp_path, capsys):
    (video,) = _study(tmp_path / "study", n_good=1, corrupt=False)
    config = BatchSettings(extractor={"endpoint": "Mixed_3c"}, max_side=32, start=4).to_yaml(
        tmp_path / "dock.yaml"
    )
    out = tmp_path / "one.parquet"
    assert main(["extract", str(video), "-o", str(out), "--config", str(config)]) == 0
    table = read_table(out)
    assert table.attrs["endpoint"] == "Mixed_3c"
    assert table["frame"].tolist() == list(range(4, 24))  # start from the file's extraction:
    assert "source" not in table.columns  # the single-video table is unchanged


def test_a_machine_without_an_nvidia_driver_starts_plain_cpu_workers():
    """One Dask worker per GPU comes from dask-cuda only where a driver is present; elsewhere the
    LocalCluster of CPU workers, and neither dask-cuda nor torch is imported to decide."""
    import sys

    from napari_flow_features.extract.cluster import _cuda_cluster_class
    from napari_flow_features.model.torch_runtime import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    assert _cuda_cluster_class() is None
    assert "dask_cuda" not in sys.modules


@pytest.mark.parametrize(
    ("options", "words"),
    [({"retries": -1}, "retries must be a whole number ≥ 0"),
     ({"task_frames": 2.5}, "task_frames must be a whole number ≥ 0"),
     ({"task_frames": True}, "task_frames must be a whole number ≥ 0")],
)  # fmt: skip
def test_bad_batch_options_are_named_before_anything_is_written(tmp_path, options, words):
    (tmp_path / "study").mkdir()
    write_video(tmp_path / "study" / "a.mp4", moving_pattern(8), fps=25)
    with pytest.raises(BadInputError, match=words):
        extract_many([tmp_path / "study"], tmp_path / "out", SETTINGS, **options)
    with pytest.raises(TypeError, match="Unknown batch option"):
        extract_many([tmp_path / "study"], tmp_path / "out", SETTINGS, worker=2)
    assert not (tmp_path / "out").exists()
