"""Frames/s of the flow, RGB and two-stream extraction side by side, in one run.

    python benchmarks/bench_streams.py [--seconds 8] [--endpoint Mixed_5c]

A generated 640×480 video (``bench_stream.make_video``) runs through ``extract_features`` with the
CLI's defaults (``max_side`` 256, chunked windowing, DIS flow, GAP) twice per stream; the second run
is timed (the first compiles the encoder for these chunk shapes). Weights are random (speed does not depend on them, and the
benchmark stays offline). Prints frames/s, the encoder's share of the time and the CPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import make_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="video length at 30 fps")
    parser.add_argument("--endpoint", default="Mixed_5c")
    args = parser.parse_args()

    from napari_flow_features._tf_env import import_tensorflow_quietly

    import_tensorflow_quietly()
    from napari_flow_features.extract.pipeline import extract_features
    from napari_flow_features.model.extractor import DynamicFeatureExtractor

    cpu = platform.processor() or platform.machine()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "bench.mp4", args.seconds, 480, 640)
        print(f"video: {args.seconds:g} s at 30 fps, 640x480 → 256x192; end point {args.endpoint}; "
              f"CPU {cpu}")  # fmt: skip
        print(f"{'stream':<11} {'frames/s':>9} {'seconds':>8} {'encoder s':>10}")
        for stream in ("flow", "rgb", "two-stream"):
            ext = DynamicFeatureExtractor(
                stream=stream, endpoint=args.endpoint, weights={"source": "random"}
            )
            extract_features(
                video, ext, post_encoder="gap", max_side=256
            )  # warm-up: compile these shapes
            tick = time.perf_counter()
            result = extract_features(video, ext, post_encoder="gap", max_side=256)
            elapsed = time.perf_counter() - tick
            n = result.metadata["n_frames"]
            print(f"{stream:<11} {n / elapsed:>9.1f} {elapsed:>8.1f} "
                  f"{result.metadata['encoder_seconds']:>10.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
