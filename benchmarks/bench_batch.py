"""Many-video benchmark: a serial loop vs ``extract_many`` on Dask (docs/batch.md).

    python benchmarks/bench_batch.py [--videos 8] [--seconds 60] [--size 160x120]

Generates ``--videos`` videos of ``--seconds`` at 25 fps and extracts them with the default settings
(Mixed_5c, chunked) four ways: a serial loop in this process (one model, built once), ``extract_many``
on the default LocalCluster, ``extract_many`` on an external cluster of one ``dask scheduler`` and a
``dask worker --nworkers 2 --nthreads 1`` started as processes, and the same command again with all
videos done (the skip run). Prints wall time, videos per minute and CPU utilisation: the CPU seconds
of this process and every process it started (children are counted once they have ended) over wall
time × cores, so other programs on the machine do not count. Ends with a table: each parallel
case's throughput as a ratio of the serial loop's (same work: one model build, then every video)
and of the serial loop's warm per-video rate (videos × the median time of videos 2..N, no start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Speed does not depend on the weights' values: random weights keep the benchmark offline (the
# Dask workers inherit this environment).
os.environ.setdefault("NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS", "random")


def moving_video(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """A textured background with a bright bar sweeping across (motion wherever it passes)."""
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3.0)
    bg = ((bg - bg.min()) / (bg.max() - bg.min()) * 120 + 40).astype(np.uint8)
    frames = np.empty((n, h, w), np.uint8)
    for t in range(n):
        frames[t] = bg
        x = int((t * (5 + seed)) % (w - 20))
        frames[t, h // 3 : 2 * h // 3, x : x + 20] = 230
    return frames


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(name: str, n_videos: int, run) -> dict:
    cpu0, t0 = _cpu(), time.perf_counter()
    detail = run()
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    row = {
        "case": name,
        "wall_s": round(wall, 2),
        "videos_per_min": round(n_videos / wall * 60, 1),
        "cpu_utilisation": round(cpu / (wall * cores), 2),
        **(detail or {}),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each video")
    parser.add_argument("--size", default="160x120", help="WxH")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    w, h = (int(v) for v in args.size.split("x"))

    from napari_flow_features.extract.batch import (
        BatchSettings,
        close_client,
        connect,
        extract_many,
        extract_video,
        local_cluster_shape,
        plan_jobs,
    )
    from napari_flow_features.io.video import write_video

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    videos = work / "videos"
    videos.mkdir()
    n_frames = int(args.seconds * 25)
    for i in range(args.videos):
        write_video(videos / f"session{i:02d}.mp4", moving_video(n_frames, h, w, i), fps=25)
    settings = BatchSettings()
    workers, cores = local_cluster_shape()
    print(f"{args.videos} videos of {n_frames} frames at {w}x{h}; default LocalCluster here: "
          f"{workers} worker(s) x {cores} core(s)", flush=True)  # fmt: skip
    rows = []

    def serial() -> dict:
        jobs = plan_jobs([videos], work / "serial", settings)
        (work / "serial").mkdir()
        seconds = [extract_video(job)["seconds"] for job in jobs]
        return {
            "first_video_s": seconds[0],
            "warm_video_s": round(float(np.median(seconds[1:])), 2),
        }

    def default_cluster() -> dict:
        index = extract_many([videos], work / "local", settings)
        return {"done": int((index["status"] == "done").sum())}

    def skip_run() -> dict:
        index = extract_many([videos], work / "local", settings)
        return {"skipped": int((index["status"] == "skipped").sum())}

    rows.append(measure("serial loop (one process)", args.videos, serial))
    rows.append(measure("extract_many, default LocalCluster", args.videos, default_cluster))
    rows.append(measure("skip run (all done)", args.videos, skip_run))

    sched_file = work / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    procs = []

    def external() -> dict:
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--scheduler-file", str(sched_file), "--port", "0",
             "--dashboard-address", ":0", "--no-show"], stderr=subprocess.DEVNULL))  # fmt: skip
        while not sched_file.exists():
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "worker", "--scheduler-file", str(sched_file), "--nworkers",
             "2", "--nthreads", "1"], stderr=subprocess.DEVNULL))  # fmt: skip
        client = connect(scheduler_file=str(sched_file))
        client.wait_for_workers(2)
        try:
            index = extract_many([videos], work / "external", settings, client=client)
        finally:
            close_client(client)
            for proc in reversed(procs):  # ended inside the measurement: their CPU counts
                proc.terminate()
                proc.wait()
        return {"done": int((index["status"] == "done").sum())}

    rows.append(measure("extract_many, external cluster (2 workers x 1 thread)", args.videos,
                        external))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print_table(rows, args.videos, load_before)


def cpu_name() -> str:
    """The CPU's model name and the SIMD features that matter for the encoder."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "?"
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(simd) or 'no AVX2'})"


def print_table(rows: list[dict], n_videos: int, load_before: float) -> None:
    serial = rows[0]
    warm_wall = serial["warm_video_s"] * n_videos
    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} logical cores; load before the run "
          f"{load_before:.2f} (1-min average)")  # fmt: skip
    print("| case | wall s | videos/min | CPU use | vs serial loop | vs warm per-video rate |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = serial["wall_s"] / row["wall_s"]
        warm = warm_wall / row["wall_s"]
        skip = row["case"].startswith("skip")
        print(f"| {row['case']} | {row['wall_s']} | {row['videos_per_min']} | "
              f"{row['cpu_utilisation']:.2f} | {'' if skip else f'{ratio:.2f}x'} | "
              f"{'' if skip else f'{warm:.2f}x'} |")  # fmt: skip


if __name__ == "__main__":
    main()
