"""Per-frame motion features of a video: optical flow → I3D → global average pooling → a table.

The everyday job in a script: one call turns a video into a frames × channels feature table (one
row per video frame, columns ``frame``, ``f0000`` …), computing the optical flow on the way and
streaming it straight into the encoder. The table is saved as Parquet and as CSV with a JSON
sidecar; the run's metadata (weights, end point, flow method, windowing) travels with it and comes
back with ``read_table``. Give your own video with ``--video``; without it the example makes a
small synthetic whisker video.

The weights are DeepMind's pretrained I3D flow weights, downloaded once (about 50 MB) and cached;
set ``NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS=random`` to run offline with untrained weights (every
output then says so). Run::

    python examples/extract_gap_features.py OUTPUT_DIR [--video VIDEO] [--endpoint Mixed_4f]

It writes ``OUTPUT_DIR/features.parquet`` and ``OUTPUT_DIR/features.csv`` (+ ``.csv.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari_flow_features as nff


def main(output: Path, video: Path | None, endpoint: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    if video is None:  # a small stand-in: 40 frames of the synthetic whisker at 96 x 128
        sample = nff.make_whisker_sample(
            n_frames=40, height=96, width=128, length=84, thickness=4, landmark_radius=20
        )
        video = output / "whisker.mp4"
        nff.write_video(video, sample.video, fps=sample.fps, crf=10)

    extractor = nff.DynamicFeatureExtractor(endpoint=endpoint)
    result = nff.extract_features(
        video,
        extractor,
        post_encoder="gap",  # Global Average Pooling: one C-vector per frame
        flow_method="dis",
        progress=lambda done, total: print(f"\r{done}/{total} frames encoded", end=""),
    )
    print()
    table = result.table
    nff.write_table(table, output / "features.parquet")
    nff.write_table(table, output / "features.csv")

    again = nff.read_table(output / "features.parquet")
    features = [c for c in again.columns if c[0] == "f" and c[1:].isdigit()]  # f0000 …
    print(f"{len(again)} frames x {len(features)} features from {video.name} at {endpoint}")
    print(f"flow method: {again.attrs['flow_method']}; windowing: {again.attrs['windowing']}")
    if again.attrs.get("random_weights"):
        print(again.attrs["weights_note"])
    print(again.iloc[:5, :6].to_string(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the feature tables")
    parser.add_argument("--video", type=Path, help="a video file (default: a synthetic sample)")
    parser.add_argument("--endpoint", default="Mixed_4f", help="I3D end point (default Mixed_4f)")
    args = parser.parse_args()
    main(args.output, args.video, args.endpoint)
