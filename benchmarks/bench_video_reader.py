"""Benchmark the lazy video reader against plain ``cv2.VideoCapture`` in the same run.

    python benchmarks/bench_video_reader.py [--frames 3000] [--size 320x240]

Generates a long H.264 video (B-frames, 250-frame GOPs like a camera file), then measures, each in a
fresh process so memory numbers are not shared: open time, sequential and random-access frames/s,
and peak memory growth while scrubbing. cv2 random access seeks with CAP_PROP_POS_FRAMES; the table
also counts how many of those frames differ from sequential decoding (frame-exactness).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORKER = r"""
import json, resource, sys, time
import numpy as np
path, which, n_random, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

out = {}
if which == "ours":
    from napari_flow_features.io.video import VideoArray
    t = time.perf_counter(); v = VideoArray(path); out["open_s"] = time.perf_counter() - t
    n = len(v)
    out["decoded_on_open"] = v.decoded_frames
    t = time.perf_counter()
    seq = [v.frame(i).copy() for i in range(n)]
    out["seq_fps"] = n / (time.perf_counter() - t)
    v = VideoArray(path)
    idx = np.random.default_rng(seed).integers(0, n, n_random)
    base = rss_mb()
    t = time.perf_counter()
    rand = [v[int(i)] for i in idx]
    out["rand_fps"] = n_random / (time.perf_counter() - t)
    out["scrub_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    out["rand_mismatch"] = int(sum(not np.array_equal(r, seq[int(i)]) for r, i in zip(rand, idx)))
else:
    import cv2
    t = time.perf_counter()
    cap = cv2.VideoCapture(path); ok, _ = cap.read()
    out["open_s"] = time.perf_counter() - t
    out["decoded_on_open"] = 1
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    t = time.perf_counter()
    seq = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        seq.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    out["seq_fps"] = len(seq) / (time.perf_counter() - t)
    idx = np.random.default_rng(seed).integers(0, len(seq), n_random)
    base = rss_mb()
    t = time.perf_counter()
    rand = []
    for i in idx:
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
        ok, f = cap.read()
        rand.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if ok else None)
    out["rand_fps"] = n_random / (time.perf_counter() - t)
    out["scrub_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    # cv2 and PyAV may round YUV->grey differently; count frames closer to another index.
    def nearest(frame, i):
        lo, hi = max(0, i - 3), min(len(seq), i + 4)
        errs = [np.abs(frame.astype(int) - seq[j]).mean() for j in range(lo, hi)]
        return lo + int(np.argmin(errs))
    out["rand_mismatch"] = int(sum(r is None or nearest(r, int(i)) != int(i) for r, i in zip(rand, idx)))
print(json.dumps(out))
"""


def make_video(path: Path, n_frames: int, width: int, height: int) -> float:
    from napari_flow_features.io.video import write_video

    rng = np.random.default_rng(0)
    texture = (rng.random((height + 64, width + n_frames)) * 255).astype(np.uint8)
    frames = np.empty((n_frames, height, width), np.uint8)
    for t in range(n_frames):
        frames[t] = texture[(t // 3) % 64 : (t // 3) % 64 + height, t : t + width]
        frames[t, 8:40, 8:120] = 0
        frames[t, 12:36, 12 + (t % 100) : 20 + (t % 100)] = 255  # frame-unique marker
    start = time.perf_counter()
    write_video(path, frames, fps=30, crf=20, bframes=3, gop=250)
    return time.perf_counter() - start


def run(which: str, path: Path, n_random: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(path), which, str(n_random), "7"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--random", type=int, default=200, help="random reads to time")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from napari_flow_features.sample import make_whisker_sample

    start = time.perf_counter()
    make_whisker_sample()
    sample_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        enc_s = make_video(path, args.frames, width, height)
        ours, cv = run("ours", path, args.random), run("cv2", path, args.random)

    print(
        f"video: {args.frames} frames {width}x{height} H.264 (B-frames, GOP 250); "
        f"encoded in {enc_s:.1f} s; sample generation {sample_s:.2f} s"
    )
    rows = [
        ("open time (s)", "open_s", "{:.4f}", "lower"),
        ("frames decoded on open", "decoded_on_open", "{:.0f}", "lower"),
        ("sequential frames/s", "seq_fps", "{:.0f}", "higher"),
        ("random-access frames/s", "rand_fps", "{:.1f}", "higher"),
        ("peak RSS growth scrubbing (MiB)", "scrub_peak_mb", "{:.1f}", "lower"),
        (f"random frames not exact (of {args.random})", "rand_mismatch", "{:.0f}", "lower"),
    ]
    print(f"{'metric':<38}{'ours':>12}{'cv2':>12}{'ours/cv2':>10}")
    for label, key, fmt, _better in rows:
        a, b = ours[key], cv[key]
        ratio = f"{a / b:.2f}" if b else "-"
        print(f"{label:<38}{fmt.format(a):>12}{fmt.format(b):>12}{ratio:>10}")


if __name__ == "__main__":
    main()
