"""One long video across Dask workers: the scaling of ``extract -o OUT --task-frames N``.

    python benchmarks/bench_split.py [--seconds 60] [--workers 1,2,4] [--task-frames 0]

A generated 640×480 video of ``--seconds`` at 30 fps (bench_stream's drifting texture) runs with the
command line's defaults (one random Mixed_5c model saved to a registry, so every process loads
the same weights) once in one process (``flow-features extract VIDEO -o OUT``), then split
across each number of ``--workers`` that this machine has the cores for (``--workers K
--task-frames N``, a LocalCluster of K processes with an equal share of the cores). Prints wall
time, frames/s, the speed-up over the one-process run measured in the same run, the encoder's
frames per output frame (the split's margins cost extra passes) and the largest relative L2
difference of a row to the one-process table. A last row runs the batch form (``--output-dir``) on
the most workers, where one video on more workers than videos is split the same way. Each run is
a subprocess; the CPU is named.
``--task-frames 0`` (default) cuts the video into twice as many tasks as the most workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import cpu_name
from bench_stream import make_video

# Speed does not depend on the weights' values: random weights keep the benchmark offline.
os.environ.setdefault("NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS", "random")
BIN = Path(sys.executable).parent / "flow-features"


def run(video: Path, out: Path, extra: list[str], form: str = "-o") -> float:
    """Wall seconds of one ``flow-features extract`` (a failure stops the benchmark).

    ``form`` ``--output-dir``: the batch form, writing ``out.parent / (video stem).parquet``.
    """
    out.unlink(missing_ok=True)
    target = out if form == "-o" else out.parent
    t0 = time.perf_counter()
    subprocess.run([str(BIN), "-q", "extract", str(video), form, str(target), *extra], check=True)
    return time.perf_counter() - t0


def max_rel_l2(path: Path, reference: Path) -> float:
    """The largest per-row relative L2 difference between two feature tables."""
    from napari_flow_features.io.tables import feature_columns, read_table

    a, b = read_table(path), read_table(reference)
    cols = feature_columns(b)
    x, y = a[cols].to_numpy(np.float64), b[cols].to_numpy(np.float64)
    return float((np.linalg.norm(x - y, axis=1) / np.linalg.norm(y, axis=1)).max())


def saved_model(folder: Path) -> list[str]:
    """Options that load one random Mixed_5c model from a registry in ``folder``.

    Every process then runs the same weights (random weights built in a Dask worker differ from
    one process to the next, so the tables could not be compared).
    """
    from napari_flow_features.model.extractor import DynamicFeatureExtractor

    DynamicFeatureExtractor(weights={"source": "random"}).save_model_with_serializer(
        folder, {"model_name": "bench"}
    )
    return ["--registry-dir", str(folder), "--model-name", "bench"]


def main() -> None:
    """Run the benchmark and print its table."""
    from napari_flow_features.io.tables import read_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--task-frames", type=int, default=0)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    counts = [k for k in map(int, args.workers.split(",")) if k <= cores]
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        folder = Path(tmp)
        video = make_video(folder / "long.mp4", args.seconds, 480, 640)
        n = round(args.seconds * 30)
        task_frames = args.task_frames or -(-n // (2 * max(counts)))
        model = saved_model(folder / "registry")
        single = folder / "single.parquet"
        load = os.getloadavg()[0]
        base = run(video, single, model)
        rows = [("one process", base, read_table(single).attrs, 0.0)]
        for k in counts:
            out = folder / f"split{k}.parquet"
            seconds = run(
                video, out, [*model, "--workers", str(k), "--task-frames", str(task_frames)]
            )
            rows.append((f"split, {k} worker(s)", seconds, read_table(out).attrs,
                         max_rel_l2(out, single)))  # fmt: skip
        # The batch form on the most workers: one video, more workers than videos, so it splits.
        k = max(counts)
        out = folder / "batch" / "long.parquet"
        seconds = run(video, out, [*model, "--workers", str(k), "--task-frames", str(task_frames)],
                      "--output-dir")  # fmt: skip
        rows.append((f"batch, {k} worker(s)", seconds, read_table(out).attrs,
                     max_rel_l2(out, single)))  # fmt: skip
    print(f"\nCPU: {cpu_name()}, {cores} cores; load average before: {load:.2f}")
    print(f"video: 640x480, {n} frames; tasks of {task_frames} frames\n")
    print(f"{'run':<22} {'wall s':>8} {'frames/s':>9} {'vs one':>7} {'enc/frame':>9} "
          f"{'max rel L2':>11}")  # fmt: skip
    for name, seconds, meta, err in rows:
        print(f"{name:<22} {seconds:8.1f} {n / seconds:9.2f} {base / seconds:7.2f} "
              f"{meta['encoder_frames_per_output_frame']:9.2f} {err:11.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
