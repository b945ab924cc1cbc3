"""The seed walk-through: flow, I3D windows, the extractor, the model registry, figures and metrics.

The original design document's examples, run end to end with names imported from
``napari_flow_features`` only: ``OpticalFlowComputer`` (``compute``, ``compute_file``,
``compute_directory``), ``OpticalFlowSequenceLoader(...).create_sequence_batch``,
``DynamicFeatureExtractor(config_path=...)`` (``preprocess_flow_sequence``, ``extract_features``,
``save_model_with_serializer``), ``ModelSerializer`` (``save_model``, ``list_available_versions``,
``load_latest_model``), ``FeatureVisualization`` and its temporal views, and
``FeatureExtractorEvaluator().evaluate``. It runs on two small synthetic whisker videos (24 frames,
64 × 64 pixels) with random I3D weights up to ``Mixed_3c``, so it needs no download; for real
work leave the weights at their default (DeepMind's pretrained flow weights, fetched once).

Run it with an output folder::

    python examples/seed_api.py OUTPUT_DIR

It writes ``videos/``, ``flow/``, ``config.yaml``, ``models/`` (two registry versions),
``figures/`` (five figures and an animated GIF), ``features/*_gap.parquet`` and
``evaluation/metrics.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

import napari_flow_features as nff


def main(output: Path) -> None:
    # -- two small videos: the built-in synthetic whisker, and the same swinging the other way ----
    sample = nff.make_whisker_sample(
        n_frames=24, height=64, width=64, length=44, thickness=3, landmark_radius=12, period=12
    )
    videos = output / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    nff.write_video(videos / "whisker.mp4", sample.video, fps=sample.fps, crf=10)
    nff.write_video(videos / "whisker_reversed.mp4", sample.video[::-1], fps=sample.fps, crf=10)

    # -- optical flow: an array, one file, a whole folder (complete outputs are skipped) ----------
    computer = nff.OpticalFlowComputer(method="farneback")
    flow = computer.compute(sample.video)  # (T-1, H, W, 2) float32: dx, dy in pixels per frame
    computer.compute_file(videos / "whisker.mp4", output / "whisker_flow.npy")
    flow_files = computer.compute_directory(videos, output / "flow")
    print(f"flow {flow.shape}; {len(flow_files)} flow files in {output / 'flow'}")

    # -- I3D windows from the flow files: 16 frames at stride 8, preprocessed to [-1, 1] ----------
    loader = nff.OpticalFlowSequenceLoader(output / "flow", sequence_length=16, stride=8)
    files = loader.files
    batch = loader.create_sequence_batch(files, batch_size=8)
    print(f"sequence batch {batch.shape} from {[f.name for f in files]}")  # [B, L, H, W, 2]

    # -- the extractor, configured from YAML ------------------------------------------------------
    config = output / "config.yaml"
    config.write_text(
        "endpoint: Mixed_3c      # an early end point: small and quick\n"
        "clip_length: 16\n"
        "stride: 8\n"
        "weights:\n"
        "  source: random        # no download; every output says these features are untrained\n"
        "  seed: 0\n"
    )
    extractor = nff.DynamicFeatureExtractor(config_path=config)
    model = extractor.model  # the Keras I3D, up to Mixed_3c
    preprocessed = extractor.preprocess_flow_sequence(flow)  # [N, L, H, W, 2]
    feature_maps = extractor.extract_features(preprocessed)  # [N, T', H', W', C]
    print(f"windows {preprocessed.shape} -> feature maps {feature_maps.shape}")

    # -- the versioned model registry -------------------------------------------------------------
    models = output / "models"
    first = extractor.save_model_with_serializer(
        models, {"model_name": "whisker-i3d", "author": "seed_api.py"}
    )
    serializer = nff.ModelSerializer(model, "whisker-i3d")
    second = serializer.save_model(
        models, {"description": "the same model saved again", "training_dataset": "none"}
    )
    versions = nff.ModelSerializer.list_available_versions(models, "whisker-i3d")
    loaded, metadata, version = nff.ModelSerializer.load_latest_model(models, "whisker-i3d")
    print(f"latest: {version}, saved at end point {metadata['endpoint']}")
    assert [first.name, second.name] == versions and version == second.name
    same = np.asarray(loaded(preprocessed[:1], training=False))
    print(
        f"registry: versions {versions}; latest reproduces the features: "
        f"{np.allclose(same, feature_maps[:1], atol=1e-4)}"
    )

    # -- figures of the activations at Mixed_3c ---------------------------------------------------
    figures = output / "figures"
    figures.mkdir(exist_ok=True)
    viz = nff.FeatureVisualization(model=extractor.model, layer_name="Mixed_3c")
    activations = viz.get_intermediate_activations(preprocessed)
    chosen = [0, 10, 20]
    viz.visualize_layer_activations(activations, frame_idx=0, save_path=figures / "layer.png")
    viz.visualize_temporal_feature_evolution(activations, chosen, figures / "evolution.png")
    viz.create_feature_activation_heatmap(activations, 10, figures / "heatmap.png")
    viz.visualize_3d_feature_activation(activations, 10, figures / "activation_3d.png")
    viz.create_feature_evolution_animation(activations, 10, figures / "evolution.gif")
    viz.create_comparative_temporal_view(
        activations, chosen, flow_sequence=flow, save_path=figures / "comparative.png"
    )
    print(f"figures: {sorted(p.name for p in figures.iterdir())}")

    # -- per-frame features and how good they are --------------------------------------------------
    (output / "features").mkdir(exist_ok=True)
    tables, labels = [], []
    for name, angles in (
        ("whisker", sample.angles_deg),
        ("whisker_reversed", sample.angles_deg[::-1]),
    ):
        result = nff.extract_features(videos / f"{name}.mp4", extractor, post_encoder="gap")
        table = result.table  # frame, f0000 … f0479; the run's metadata in table.attrs
        nff.write_table(table, output / "features" / f"{name}_gap.parquet")
        tables.append(table.assign(video=name))
        step = np.sign(np.diff(angles))  # the label: is the whisker's angle growing or shrinking?
        labels += ["growing" if s > 0 else "shrinking" for s in [*step, step[-1]]]
    both = pd.concat(tables, ignore_index=True)
    # Whole videos as cross-validation folds: neighbouring frames never sit on both sides.
    metrics = nff.FeatureExtractorEvaluator().evaluate(both, labels=labels, groups=both["video"])
    (output / "evaluation").mkdir(exist_ok=True)
    metrics.to_csv(output / "evaluation" / "metrics.csv", index=False)
    print(metrics[["metric", "value"]].to_string(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for everything the example writes")
    main(parser.parse_args().output)
