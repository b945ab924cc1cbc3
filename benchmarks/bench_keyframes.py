"""Keyframe filling: carrying keyframes along the optical flow vs straight lines, against the truth.

The synthetic whisker sample (a textured bar swinging sinusoidally about a pivot; the landmark's
true track is known) with keyframes every ``--spacing`` frames. For every filled frame, the error
(px) to the true landmark position, grouped by the distance to the nearest keyframe.

    python benchmarks/bench_keyframes.py            # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_flow_features.extract.keyframes import fill_keyframes
from napari_flow_features.flow.compute import compute_flow
from napari_flow_features.sample import make_whisker_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=int, default=60, help="frames between keyframes (60)")
    parser.add_argument("--keyframes", type=int, default=4, help="number of keyframes (4)")
    parser.add_argument("--period", type=float, default=90.0, help="swing period, frames (90)")
    parser.add_argument("--method", default="dis", help="flow method (dis)")
    args = parser.parse_args()

    n = args.spacing * (args.keyframes - 1) + 1
    sample = make_whisker_sample(n_frames=n, height=160, width=224, period=args.period,
                                 amplitude_deg=25.0, thickness=9.0, landmark_radius=70.0)  # fmt: skip
    truth = sample.landmarks[:, [2, 1]]  # (x, y)
    keys = sample.landmarks[:: args.spacing]
    start = time.perf_counter()
    flow = compute_flow(sample.video, args.method)
    flow_s = time.perf_counter() - start
    start = time.perf_counter()
    filled = {m: fill_keyframes(keys, n, m, flow=flow) for m in ("linear", "flow")}
    fill_s = time.perf_counter() - start
    distance = np.abs(np.arange(n)[:, None] - np.arange(0, n, args.spacing)[None]).min(axis=1)
    print(f"whisker sample: {n} frames 224x160, keyframes every {args.spacing} frames, swing "
          f"period {args.period:g} frames, ±25°, landmark 70 px from the pivot; flow "
          f"{args.method} ({flow_s:.1f} s), fill {fill_s:.2f} s")  # fmt: skip
    print(f"{'frames from keyframe':>22} {'linear px':>10} {'flow px':>10} {'linear/flow':>12}")
    for d in (5, 10, 30):
        rows = distance == d
        err = {m: np.linalg.norm(filled[m][rows] - truth[rows], axis=1).mean() for m in filled}
        ratio = err["linear"] / err["flow"]
        print(f"{d:>22} {err['linear']:>10.2f} {err['flow']:>10.2f} {ratio:>12.1f}")
    inner = distance > 0
    err = {m: np.linalg.norm(filled[m][inner] - truth[inner], axis=1).mean() for m in filled}
    print(f"{'all filled frames':>22} {err['linear']:>10.2f} {err['flow']:>10.2f} "
          f"{err['linear'] / err['flow']:>12.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
