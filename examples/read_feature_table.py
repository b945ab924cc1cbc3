"""Read a feature table with pandas and summarise it.

A feature table (``flow-features demo``, ``flow-features extract``, ``extract_features(...)`` then
``write_table``, or the napari dock's *save*) is an ordinary Parquet or CSV file: one row per frame
(and per landmark for the ``point`` post-encoder), the columns ``frame``, the landmark identity,
``x``, ``y``, then the features ``f0000 … f{C-1}`` (two-stream: ``flow_f…``, ``rgb_f…``). The
run's settings travel with it as JSON: in the Parquet schema's metadata under the key
``napari_flow_features``, or for a CSV in the sidecar ``<file>.csv.json``. Nothing of this package
is needed to read it; this script uses pandas and pyarrow only, and prints what a table holds:
its settings (weights, end point, post-encoder), its frames and landmarks, missing values, the
feature magnitude over time and the features that vary most.

Run it with an output folder; it first writes a small table there through the API (a 24-frame
synthetic whisker video, random I3D weights up to ``Mixed_3c``, so no download) and then reads it
back::

    python examples/read_feature_table.py OUTPUT_DIR

or give it a table you have (it is only read)::

    python examples/read_feature_table.py OUTPUT_DIR --table demo-output/features/whisker_point.parquet

It prints the summary and writes it to ``OUTPUT_DIR/summary.txt``; with no ``--table`` the video,
the extractor's YAML config and the table it made (``whisker_gap.parquet``) are there too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

META_KEY = b"napari_flow_features"


def read_table_and_settings(path: Path) -> tuple[pd.DataFrame, dict]:
    """The table as a DataFrame and the run's settings, with pandas and pyarrow only."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pd.read_parquet(path)
        # Settings: in the schema's metadata, or for a streamed table the file's key-value metadata.
        schema_metadata = pq.read_schema(path).metadata or {}
        file_metadata = pq.ParquetFile(path).metadata.metadata or {}
        raw = schema_metadata.get(META_KEY) or file_metadata.get(META_KEY)
        settings = json.loads(raw) if raw else {}
    elif path.suffix == ".csv":
        table = pd.read_csv(path)
        sidecar = path.with_name(path.name + ".json")
        settings = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        settings = settings.get("metadata", settings)  # the sidecar also holds the CSV's SHA-256
    else:
        raise SystemExit(f"{path}: a feature table is a .parquet or .csv file")
    return table, settings


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns: ``f0000``…, or ``flow_f0000``… and ``rgb_f0000``… (two-stream)."""
    return [c for c in table.columns if c.split("_")[-1].startswith("f") and c[-4:].isdigit()]


def summarise(table: pd.DataFrame, settings: dict) -> str:
    """A short, plain-text report of what the table holds."""
    features = feature_columns(table)
    lines = []
    weights = settings.get("weights") or {}
    lines.append(
        "settings: "
        + ", ".join(
            f"{key}={settings[key]}"
            for key in ("endpoint", "stream", "post_encoder", "interpolation", "flow_method")
            if key in settings
        )
    )
    if weights:
        lines.append(f"weights: {weights.get('source')}" + (
            "  (RANDOM: these features are untrained)" if settings.get("random_weights") else ""
        ))  # fmt: skip
    frames = table["frame"]
    lines.append(
        f"rows: {len(table)}; frames {frames.min()}…{frames.max()} ({frames.nunique()} distinct); "
        f"{len(features)} feature columns"
    )
    identity = [c for c in ("landmark", "individual", "keypoint") if c in table.columns]
    if identity:
        groups = table.groupby(identity, sort=False).size()
        lines.append(
            f"landmarks ({' / '.join(identity)}): {len(groups)}, {groups.iloc[0]} rows each"
        )
    values = table[features].to_numpy(dtype=np.float64)
    missing = np.isnan(values).any(axis=1)
    if missing.any():  # a landmark outside the frame, or not tracked there
        lines.append(
            f"rows with missing features: {int(missing.sum())} (NaN, never a clamped value)"
        )
    complete = table.loc[~missing]
    if complete.empty:
        return "\n".join([*lines, "no row has all its features"])
    magnitude = pd.Series(np.linalg.norm(values[~missing], axis=1), index=complete.index)
    per_frame = magnitude.groupby(complete["frame"]).mean()
    lines.append(
        f"feature magnitude (L2 per row) over frames: mean {per_frame.mean():.3g}, "
        f"min {per_frame.min():.3g} at frame {per_frame.idxmin()}, "
        f"max {per_frame.max():.3g} at frame {per_frame.idxmax()}"
    )
    spread = complete[features].std().dropna().sort_values(ascending=False)
    if not spread.empty:
        top = ", ".join(f"{name} (std {value:.3g})" for name, value in spread.head(5).items())
        lines.append(f"most varying features: {top}")
    return "\n".join(lines)


def write_small_table(folder: Path) -> Path:
    """A small feature table through the API: synthetic whisker video, random weights."""
    import napari_flow_features as nff

    sample = nff.make_whisker_sample(
        n_frames=24, height=64, width=64, length=44, thickness=3, landmark_radius=12, period=12
    )
    video = folder / "whisker.mp4"
    nff.write_video(video, sample.video, fps=sample.fps, crf=10)
    config = folder / "config.yaml"
    config.write_text(
        "endpoint: Mixed_3c      # an early end point: small and quick\n"
        "weights:\n"
        "  source: random        # no download; every output says these features are untrained\n"
    )
    extractor = nff.DynamicFeatureExtractor(config_path=config)
    result = nff.extract_features(video, extractor, post_encoder="gap")
    return nff.write_table(result.table, folder / "whisker_gap.parquet")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the summary (and the small table)")
    parser.add_argument("--table", type=Path, help="a feature table to read (.parquet or .csv)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.table
    if path is None:
        path = write_small_table(args.output)
        print(f"wrote a small table through the API: {path}")
    table, settings = read_table_and_settings(path)
    summary = summarise(table, settings)
    print(summary)
    (args.output / "summary.txt").write_text(summary + "\n")


if __name__ == "__main__":
    main()
