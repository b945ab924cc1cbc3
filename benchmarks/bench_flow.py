"""Benchmark optical flow: our OpticalFlowComputer against a plain loop over the same function.

    python benchmarks/bench_flow.py [--frames 120] [--sizes 320x240,640x480]

For each method and frame size, in the same run:
Each method and size runs in a fresh process; times are the best of 7 interleaved repeats
(TV-L1: one run).
- "plain loop": a hand-written loop calling the OpenCV / scikit-image function on grey frames and
  storing each field in a preallocated array (the baseline for the overhead ratio); "discard" is the
  same loop throwing results away (shown for reference: no real use can do that);
- "ours, 1 proc": OpticalFlowComputer(method, workers=1) on the same frames (overhead ratio, target
  ≤ 1.05);
- "ours, default": the default worker count (2 processes for Farneback and TV-L1 on 2 cores; DIS
  threads inside OpenCV), with its speed-up over one process (Farneback target ≥ 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def moving_texture(n: int, h: int, w: int) -> np.ndarray:
    """A smooth random texture drifting 1.5 px right and 0.5 px down per frame."""
    import cv2

    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((h + n, w + 2 * n)).astype(np.float32), (0, 0), 2.0)
    big = (big - big.min()) / (big.max() - big.min()) * 200 + 20
    frames = np.empty((n, h, w), np.uint8)
    for t in range(n):
        m = np.float32([[1, 0, -1.5 * t], [0, 1, -0.5 * t]])
        frames[t] = cv2.warpAffine(big, m, (w + 2 * n, h + n))[:h, :w].astype(np.uint8)
    return frames


def plain_loop(method: str, frames: np.ndarray, store: bool = True) -> float:
    import cv2

    if method == "farneback":

        def fn(a, b):
            return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    elif method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

        def fn(a, b):
            return dis.calc(a, b, None)
    elif method == "tvl1":
        tv = cv2.optflow.DualTVL1OpticalFlow_create()

        def fn(a, b):
            return tv.calc(a, b, None)
    else:
        from skimage.registration import optical_flow_tvl1

        def fn(a, b):
            v, u = optical_flow_tvl1(a.astype(np.float32) / 255, b.astype(np.float32) / 255)
            return np.stack([u, v], axis=-1)

    start = time.perf_counter()
    if store:  # keep the flow, as any real use must
        out = np.empty((len(frames) - 1, *frames.shape[1:], 2), np.float32)
        for i in range(len(frames) - 1):
            out[i] = fn(frames[i], frames[i + 1])
    else:
        for i in range(len(frames) - 1):
            fn(frames[i], frames[i + 1])
    return time.perf_counter() - start


def ours(method: str, frames: np.ndarray, workers: int | None) -> float:
    from napari_flow_features.flow.compute import OpticalFlowComputer

    computer = OpticalFlowComputer(method, workers=workers)
    start = time.perf_counter()
    computer.compute(frames)
    return time.perf_counter() - start


def measure(method: str, width: int, height: int, n: int, repeats: int) -> dict:
    """All timings for one method and size (run in a fresh process by ``main``)."""
    from napari_flow_features.flow.compute import OpticalFlowComputer

    frames = moving_texture(n, height, width)
    default_workers = OpticalFlowComputer(method).workers
    plain_loop(method, frames[:3])  # warm-up: first-call allocations
    ours(method, frames[:3], workers=1)
    # Best of `repeats`, interleaved, so both sides see the same machine noise.
    base = discard = one = dflt = float("inf")
    for _ in range(repeats):
        base = min(base, plain_loop(method, frames))
        one = min(one, ours(method, frames, workers=1))
        if default_workers > 1:
            dflt = min(dflt, ours(method, frames, workers=None))
    for _ in range(repeats):  # reference only; kept apart as it skews the timings around it
        discard = min(discard, plain_loop(method, frames, store=False))
    return {
        "pairs": n - 1,
        "base": base,
        "discard": discard,
        "one": one,
        "dflt": dflt if default_workers > 1 else one,
        "workers": default_workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames for Farneback and DIS")
    parser.add_argument("--tvl1-frames", type=int, default=16, help="frames for the TV-L1 methods")
    parser.add_argument("--sizes", default="320x240,640x480")
    parser.add_argument("--repeats", type=int, default=7, help="best-of repeats (not for TV-L1)")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import cv2

    if args.one:
        method, size = args.one
        w, h = (int(v) for v in size.split("x"))
        tvl1 = method.startswith("tvl1")
        n = args.tvl1_frames if tvl1 else args.frames
        print(json.dumps(measure(method, w, h, n, 1 if tvl1 else args.repeats)))
        return

    methods = ["farneback", "dis", "tvl1-skimage"] + (["tvl1"] if hasattr(cv2, "optflow") else [])
    print(f"{os.cpu_count()} cores, OpenCV {cv2.__version__}, threads {cv2.getNumThreads()}")
    print(
        f"{'method':<13}{'size':>9}{'pairs':>6}{'discard fps':>12}{'plain fps':>11}"
        f"{'ours 1p fps':>13}{'overhead':>10}{'ours dflt fps':>15}{'procs':>6}{'speed-up':>10}"
    )
    for size in args.sizes.split(","):
        for method in methods:
            # Each case in a fresh process: earlier cases' large allocations skew later timings.
            cmd = [sys.executable, __file__, "--one", method, size, "--frames", str(args.frames),
                   "--tvl1-frames", str(args.tvl1_frames), "--repeats", str(args.repeats)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            p = r["pairs"]
            print(
                f"{method:<13}{size:>9}{p:>6}{p / r['discard']:>12.1f}{p / r['base']:>11.1f}"
                f"{p / r['one']:>13.1f}{r['one'] / r['base']:>10.3f}{p / r['dflt']:>15.1f}"
                f"{r['workers']:>6}{r['one'] / r['dflt']:>10.2f}"
            )


if __name__ == "__main__":
    main()
