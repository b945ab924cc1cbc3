"""Features where the animal moves: Spatial Point Extraction at tracked landmarks.

Samples the I3D feature map at a landmark in every frame (bilinear, align-corners=False) instead of
averaging it over the whole frame, so the features describe the motion at the whisker base, the eye
corner or the paw. Landmarks come as a table of ``frame, x, y`` and a column naming
the landmark (here ``track_id``); DeepLabCut, SLEAP and Lightning Pose files work the same way
(``pip install 'napari-flow-features[poses]'``). The example tracks two points on a synthetic
whisker video, the whisker base (it swings) and a point on the still background, and prints how
much each one's features change from frame to frame.

The weights are DeepMind's pretrained I3D flow weights, downloaded once and cached; set
``NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS=random`` to run offline with untrained weights. Run::

    python examples/landmark_features.py OUTPUT_DIR

It writes ``OUTPUT_DIR/whisker.mp4``, ``OUTPUT_DIR/landmarks.csv`` (the tracks) and
``OUTPUT_DIR/landmark_features.parquet`` (``frame, landmark, x, y, f0000 …``: one row per frame
and landmark).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import napari_flow_features as nff


def main(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    sample = nff.make_whisker_sample(
        n_frames=40, height=96, width=128, length=84, thickness=4, landmark_radius=20
    )
    nff.write_video(output / "whisker.mp4", sample.video, fps=sample.fps, crf=10)

    # Two tracks: the whisker base (the sample's own track, rows t, y, x) and a background point.
    t, y, x = sample.landmarks.T
    tracks = pd.concat(
        [
            pd.DataFrame({"frame": t.astype(int), "x": x, "y": y, "track_id": "whisker base"}),
            pd.DataFrame({"frame": t.astype(int), "x": 6.0, "y": 90.0, "track_id": "background"}),
        ],
        ignore_index=True,
    )
    tracks.to_csv(output / "landmarks.csv", index=False)

    extractor = nff.DynamicFeatureExtractor(endpoint="Mixed_4f")
    result = nff.extract_features(
        output / "whisker.mp4",
        extractor,
        post_encoder="point",  # Spatial Point Extraction
        points=output / "landmarks.csv",  # a path, a DataFrame or (t, y, x) rows all work
        interpolation="bilinear",
        flow_method="dis",
    )
    table = result.table
    nff.write_table(table, output / "landmark_features.parquet")

    features = [c for c in table.columns if c[0] == "f" and c[1:].isdigit()]  # f0000 …
    print(
        f"{len(table)} rows: {table['landmark'].nunique()} landmarks x {len(sample.video)} frames"
    )
    for name, rows in table.groupby("landmark"):
        values = rows.sort_values("frame")[features].to_numpy()
        # How much a landmark's features change per frame, relative to their size.
        step = np.linalg.norm(np.diff(values, axis=0), axis=1).mean()
        size = np.linalg.norm(values, axis=1).mean()
        print(f"{name:>13}: features change by {step / size:.1%} of their size per frame")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the video, tracks and features")
    main(parser.parse_args().output)
