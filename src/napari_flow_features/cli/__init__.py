"""The ``flow-features`` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadInputError, CancelledError


def _cmd_sample(args: argparse.Namespace) -> int:
    from ..sample import save_whisker_sample

    paths = save_whisker_sample(args.output)
    for role, path in paths.items():
        print(f"{role:>13}: {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from ..flow.compute import OpticalFlowComputer
    from ..sample import save_whisker_sample

    out = Path(args.output)
    print(f"Writing the synthetic whisker sample to {out.resolve()} ...")
    paths = save_whisker_sample(out / "sample")
    for role, path in paths.items():
        print(f"{role:>13}: {path}")

    flow_path = out / "flow" / "whisker_dis.npy"
    flow_path.parent.mkdir(parents=True, exist_ok=True)
    bar = _Bar("optical flow (DIS)")
    try:
        flow = OpticalFlowComputer("dis").compute(paths["video"], flow_path, progress=bar)
    finally:
        bar.close()
    with np.load(paths["ground_truth"], allow_pickle=False) as gt:
        truth = gt["flow"]
    moving = np.hypot(truth[..., 0], truth[..., 1]) > 0.5
    epe = np.hypot(*(np.asarray(flow) - truth).transpose(3, 0, 1, 2))
    print(f"         flow: {flow_path} {tuple(flow.shape)}")
    print(
        f"               endpoint error vs ground truth: {epe[moving].mean():.2f} px on the "
        f"whisker, {epe[~moving].mean():.2f} px on the still background"
    )
    # The main job: I3D features of the whisker motion, pooled and at the whisker base.
    from .._tf_env import import_tensorflow_quietly

    print("Loading TensorFlow ...", flush=True)
    import_tensorflow_quietly()  # without the CUDA probing lines on a machine with no GPU
    from ..extract.pipeline import extract_features
    from ..io._atomic import atomic_write_path
    from ..io.tables import write_table

    extractor, note = _demo_extractor()
    if note:
        print(note)
    random_weights = extractor.describe()["loaded_model"]["source"] == "random"
    feature_dir = out / "features"
    feature_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for post, points in (("gap", None), ("point", paths["landmarks"])):
        bar = _Bar(f"I3D features ({post})", "window")
        try:
            result = extract_features(
                flow_path, extractor, post, points=points,
                heatmap="l2" if post == "point" else None, progress=bar,
            )  # fmt: skip
        finally:
            bar.close()
        result.table.attrs["source_video"] = paths["video"]
        written.append(write_table(result.table, feature_dir / f"whisker_{post}.parquet"))
        if result.heatmap is not None:
            heat_path = feature_dir / "whisker_heatmap_l2.npy"
            with atomic_write_path(heat_path) as tmp:
                np.save(tmp, result.heatmap, allow_pickle=False)
            written.append(heat_path)
    for path in written:
        print(f"     features: {path}")
    if random_weights:
        print(
            "               (RANDOM I3D weights, marked in every table, figure and report; end "
            "point Mixed_4f: 832 channels per frame)"
        )
    else:
        print("               (DeepMind's flow_imagenet weights, end point Mixed_4f: 832 channels)")
    _demo_figures_and_report(result.table, extractor, flow, gt_path=paths["ground_truth"],
                             out=out)  # fmt: skip
    files = " ".join([paths["video"], paths["landmarks"], str(flow_path)])
    print(f"Open it in napari: napari {files}")
    return 0


def _demo_extractor() -> tuple[Any, str | None]:
    """The demo's encoder: the default (pretrained) weights, or, where they cannot be fetched
    (offline), random weights with a one-line note saying so.
    """
    from ..model.extractor import DynamicFeatureExtractor
    from ..model.weights import WeightsUnavailableError

    settings = {"endpoint": "Mixed_4f", "clip_length": 16, "stride": 8}
    try:
        return DynamicFeatureExtractor(**settings), None
    except WeightsUnavailableError as exc:
        reason = str(exc.__cause__ or exc).split(" for http")[0]
        note = (
            "Pretrained weights unavailable ("
            + reason
            + "); the demo goes on with RANDOM weights, "
            "marked in every output (`flow-features weights fetch flow_imagenet` when online)."
        )
        return DynamicFeatureExtractor(**settings, weights={"source": "random"}), note


def marked_layer_name(name: str, metadata: Any) -> str:
    """A figure's layer name, with RANDOM WEIGHTS in it when the run's metadata says so."""
    if isinstance(metadata, dict) and metadata.get("random_weights"):
        return f"{name} [RANDOM WEIGHTS]"
    return name


def _demo_figures_and_report(
    table: Any, extractor: Any, flow: Any, gt_path: str, out: Path
) -> None:
    """Figures of the point features and of one clip's activations, and an evaluation report
    with the whisker's swing direction (from the sample's ground truth) as labels.
    """
    import numpy as np
    import pandas as pd

    from ..analysis.report import write_evaluation_report
    from ..analysis.visualization import FeatureVisualization
    from ..io.tables import feature_columns

    values = table[feature_columns(table)].to_numpy()
    busiest = np.argsort(np.nan_to_num(values.std(axis=0)))[::-1][:3].tolist()  # most varying
    vis = FeatureVisualization(layer_name=marked_layer_name(extractor.config["endpoint"],
                                                            extractor.describe()),
                               clip_length=extractor.config["clip_length"])  # fmt: skip
    fig_dir = out / "figures"
    figures = write_figures(vis, table, ("evolution", "heatmap", "comparative"), busiest,
                            fig_dir / "whisker_point", flow, stem="whisker_point")  # fmt: skip
    figures += _sequence_figures(extractor, flow, "whisker_clip0", fig_dir, busiest)
    print(f"      figures: {len(figures)} in {fig_dir} (features {busiest}: the most varying)")
    with np.load(gt_path, allow_pickle=False) as gt:
        direction = gt["swing_direction"]
    labels = pd.DataFrame({"frame": np.arange(len(direction)),
                           "label": np.where(direction > 0, "angle rising", "angle falling")})  # fmt: skip
    paths = write_evaluation_report(table, out / "evaluation", labels,
                                    title="Whisker-base features vs swing direction")  # fmt: skip
    metrics = _report_metrics(paths)
    print(f"   evaluation: {paths['html']} (linear probe accuracy {metrics['probe_accuracy']:.2f} "
          f"vs chance {metrics['chance_accuracy']:.2f}; temporal smoothness "
          f"{metrics['temporal_smoothness']:.2f})")  # fmt: skip


class _Bar:
    """A tqdm progress bar fed by ``progress(done, total)`` callbacks."""

    def __init__(self, desc: str, unit: str = "pair") -> None:
        self.desc = desc
        self.unit = unit
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _flow_computer(args: argparse.Namespace):
    from ..flow.compute import OpticalFlowComputer

    return OpticalFlowComputer(
        method=args.method,
        preset=args.preset,
        max_side=args.max_side,
        scale=args.scale,
        workers=args.workers,
    )


def _cmd_flow(args: argparse.Namespace) -> int:
    computer = _flow_computer(args)
    if args.input_dir:
        if args.video or not args.output_dir:
            raise BadInputError("Use either VIDEO -o OUT.npy or --input-dir DIR --output-dir DIR")
        from .extract import cmd_flow_batch

        return cmd_flow_batch(args)  # on Dask: skip what is done, keep going (docs/batch.md)
    if not args.video or not args.output:
        raise BadInputError("Use either VIDEO -o OUT.npy or --input-dir DIR --output-dir DIR")
    bar = _Bar(Path(args.video).name)
    try:
        flow = computer.compute(args.video, args.output, progress=bar)
    finally:
        bar.close()
    print(f"wrote {args.output}: flow {tuple(flow.shape)} float32 (dx, dy px/frame), {args.method}")
    return 0


def _cmd_sequences(args: argparse.Namespace) -> int:
    from ..flow.sequences import OpticalFlowSequenceLoader

    out = Path(args.output_dir)
    if args.mode == "compute":
        out.mkdir(parents=True, exist_ok=True)
        video = Path(args.video_path)
        flow_path = out / f"{video.stem}.npy"
        bar = _Bar(video.name)
        try:
            _flow_computer(args).compute(video, flow_path, progress=bar)
        finally:
            bar.close()
        print(f"wrote {flow_path}")
        sources: list[Path] | Path = [flow_path]
    else:
        sources = Path(args.input_dir)
    loader = OpticalFlowSequenceLoader(
        sources, args.sequence_length, args.stride, bound=args.bound, quantize=args.quantize
    )
    for path in loader.save_sequences(out):
        import numpy as np

        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        print(f"wrote {path}: {shape[0]} windows of {shape[1]} frames, {shape[2]}x{shape[3]}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from ..model.weights import fetch_checkpoint

    bars: dict[str, object] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(
                total=total, desc=name, unit="B", unit_scale=True, dynamic_ncols=True
            )
        bar.update(done - bar.n)

    try:
        prefix = fetch_checkpoint(args.name, args.dest, base_url=args.url, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(f"verified checkpoint: {prefix}")
    print(f"use it with: weights: {{source: deepmind, checkpoint: {prefix}}}")
    return 0


def _extractor(args: argparse.Namespace, **overrides):
    from ..model.extractor import DynamicFeatureExtractor

    if getattr(args, "endpoint", None):
        overrides["endpoint"] = args.endpoint
    if getattr(args, "clip_length", None) is not None:
        overrides["clip_length"] = args.clip_length
    return DynamicFeatureExtractor(args.config, **overrides)


def _write_json(path: Path, payload: Any) -> Path:
    """A JSON report, written atomically (io/_atomic.py)."""
    import json

    from ..io._atomic import atomic_write_path

    with atomic_write_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def _cmd_model(args: argparse.Namespace) -> int:
    from ..model.registry import ModelSerializer

    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--output-dir is a file, not a folder: {out}")
    if args.mode == "implement":
        folder = _extractor(args).save_model_with_serializer(
            out, {"model_name": args.model_name, "description": "I3D flow encoder"}
        )
        print(f"saved {args.model_name} version {folder.name}: {folder}")
        return 0
    if args.data_dir is None:
        raise BadInputError(f"model {args.mode} needs --data-dir")
    if args.mode == "test":
        return _model_test(args, out)
    from ..model.training import evaluate_classifier, train_classifier

    if args.mode == "train":
        extractor = _extractor(args)
        model, report = train_classifier(
            extractor, args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, val_fraction=args.val_fraction,
            freeze_backbone=not args.unfreeze, seed=args.seed, verbose=1,
            registry=(out, args.model_name),
        )  # fmt: skip
        meta = {"description": "I3D flow classifier, final epoch", "classes": report["classes"],
                "extractor_config": extractor.describe(), "training_dataset": str(args.data_dir),
                "val_fraction": args.val_fraction, "seed": args.seed}  # fmt: skip
        final = ModelSerializer(model, args.model_name).save_model(out, meta)
        report["final_version"] = final.name
        _write_json(out / f"{args.model_name}_training_report.json", report)
        acc = report["history"].get("val_accuracy", [float("nan")])[-1]
        print(f"saved {args.model_name} version {final.name}; final validation accuracy {acc:.3f}")
        return 0
    # evaluate
    if args.version:
        model, meta, version = ModelSerializer.load_model(out, args.model_name, args.version)
    else:
        model, meta, version = ModelSerializer.load_latest_model(out, args.model_name)
    if "classes" not in meta:
        raise BadInputError(f"{args.model_name} {version} is not a trained classifier (no classes)")
    cfg = meta.get("extractor_config", {})
    extractor = _extractor(args, clip_length=cfg.get("clip_length", 16), stride=cfg.get("stride", 8),
                           endpoint=cfg.get("endpoint", "Mixed_5c"))  # fmt: skip
    result = evaluate_classifier(
        model, extractor, args.data_dir, meta["classes"],
        val_fraction=meta.get("val_fraction", args.val_fraction), seed=meta.get("seed", args.seed),
    )  # fmt: skip
    result.update({"model_name": args.model_name, "version": version})
    report_dir = out / f"{args.model_name}_{version}_evaluation"
    result["encoder_features"] = _encoder_feature_report(
        model, extractor, args.data_dir, report_dir, f"{args.model_name} {version}"
    )
    path = out / f"{args.model_name}_{version}_evaluation.json"
    _write_json(path, result)
    print(f"{args.model_name} {version}: accuracy {result['accuracy']:.3f} on {result['windows']} "
          f"{result['split']} windows; wrote {path}")  # fmt: skip
    probe = result["encoder_features"].get("probe_accuracy")
    if probe is not None:
        print(f"encoder features (GAP per frame, splits by file): linear probe accuracy "
              f"{probe:.3f}; report in {report_dir}")  # fmt: skip
    return 0


def _use_encoder_of(extractor: Any, model: Any) -> None:
    """Run ``extractor`` with ``model``'s encoder: a classifier's nested encoder, else the model."""
    extractor.model = model.layers[1] if isinstance(model.layers[1], type(model)) else model
    extractor._call = None


def _encoder_feature_report(
    model: Any, extractor: Any, data_dir: str, out: Path, title: str
) -> dict[str, float]:
    """The evaluator on the classifier's encoder features: GAP per frame of every labelled file,
    labelled by its class, cross-validated by file.
    """
    import pandas as pd

    from ..analysis.report import write_evaluation_report
    from ..extract.per_frame import gap_feature_table
    from ..flow.sequences import _open_sequence
    from ..model.training import find_labelled_files

    _use_encoder_of(extractor, model)
    files, names, _ = find_labelled_files(data_dir)
    tables = []
    for i, (path, name) in enumerate(zip(files, names, strict=True)):
        table = gap_feature_table(extractor, _open_sequence(path), str(path))
        tables.append(table.assign(file=i, label=name))
    features = pd.concat(tables, ignore_index=True)
    features.attrs = {**tables[0].attrs, "source": str(data_dir)}
    labels = features["label"].to_numpy()
    paths = write_evaluation_report(
        features.drop(columns=["label"]), out, labels, features["file"].to_numpy(),
        title=f"Encoder features of {title}",
    )  # fmt: skip
    return _report_metrics(paths)


def _model_test(args: argparse.Namespace, out: Path) -> int:
    """Run an encoder (registry model, or the config's) over flow files; one table per file."""
    from ..extract.per_frame import gap_feature_table
    from ..flow.sequences import _open_sequence, find_flow_files
    from ..io._atomic import ensure_output_dir
    from ..io.tables import write_table

    overrides: dict = {}
    if args.registry_dir:
        weights = {"source": "registry", "registry_dir": args.registry_dir,
                   "model_name": args.model_name, "version": args.version}  # fmt: skip
        overrides["weights"] = weights
    extractor = _extractor(args, **overrides)
    _use_encoder_of(extractor, extractor.model)
    files = find_flow_files(args.data_dir)
    if args.num_samples is not None:
        files = files[: args.num_samples]
    ensure_output_dir(out)
    for path in files:
        bar = _Bar(path.name, "window")
        try:
            table = gap_feature_table(extractor, _open_sequence(path), str(path), progress=bar)
        finally:
            bar.close()
        stem = path.stem if path.is_file() else path.name
        target = write_table(table, out / f"{stem}_features.{args.format}")
        print(f"wrote {target}: {len(table)} frames x {table.shape[1] - 1} features")
        if args.num_samples is not None:
            figures = _sequence_figures(extractor, _open_sequence(path), stem, out / "figures",
                                        _parse_features(args.features))  # fmt: skip
            print(f"wrote {len(figures)} figures to {out / 'figures' / stem}")
    return 0


def _sequence_figures(extractor: Any, flow: Any, stem: str, out: Path, features: list[int]) -> list:
    """Every figure kind for the first clip of a flow sequence (the seed's --num_samples)."""
    import numpy as np

    from ..analysis.visualization import FeatureVisualization

    window = extractor.windows(flow.shape[0] + 1)[0]
    maps = extractor.encode(np.stack([extractor.preprocess_window(flow, window)]))
    vis = FeatureVisualization(layer_name=marked_layer_name(extractor.config["endpoint"],
                                                            extractor.describe()),
                               clip_length=extractor.config["clip_length"])  # fmt: skip
    features = [c for c in features if c < maps.shape[-1]] or [0]
    clip_flow = flow[window.start : window.start + extractor.config["clip_length"]]
    return write_figures(vis, maps, VISUALIZE_KINDS, features, out / stem, clip_flow, stem=stem)


def _parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        raise BadInputError(f"--roi takes x,y,w,h in whole pixels, got {text!r}") from None
    if len(values) != 4:
        raise BadInputError(f"--roi takes four numbers x,y,w,h, got {text!r}")
    return values  # type: ignore[return-value]


def _cmd_extract(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..extract.landmarks import landmarks_from_args
    from ..extract.pipeline import _prepare, extract_features
    from ..io._atomic import atomic_write_path
    from ..io.table_stream import TableStreamWriter
    from ..io.tables import feature_columns

    # Every input is read and checked before the model is built or any flow computed.
    output = Path(args.output)
    if output.suffix.lower() not in (".parquet", ".csv", ".npz"):
        raise BadInputError(f"--output must end in .parquet, .csv or .npz, not {output.suffix!r}")
    if not output.parent.is_dir():
        raise BadInputError(f"Output folder does not exist: {output.parent}")
    for name in ("max_side", "stride", "clip_length", "chunk_length"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise BadInputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    roi = _parse_roi(args.roi)
    keep_flow = Path(args.keep_flow) if args.keep_flow else None
    points = landmarks_from_args(args)  # read and checked against the video
    _prepare(
        args.source, args.post_encoder, points, args.interpolation,
        args.interpolate_missing, args.start, args.stop, roi, args.max_side, args.flow_method,
    )  # fmt: skip
    weights: dict = {"seed": args.seed}
    if args.weights:
        weights["source"] = args.weights
    if args.checkpoint:
        weights = {"source": "deepmind", "checkpoint": args.checkpoint,
                   "rgb_checkpoint": args.rgb_checkpoint}  # fmt: skip
    elif args.registry_dir:
        weights = {"source": "registry", "registry_dir": args.registry_dir,
                   "model_name": args.model_name, "version": args.version}  # fmt: skip
    overrides: dict = {"weights": weights}
    for name in ("stride", "runtime", "windowing", "chunk_length", "stream", "fusion"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.predict and not args.endpoint:
        overrides["endpoint"] = "Logits"  # the Kinetics classifier's output
    print("building the I3D model ...", file=sys.stderr)
    extractor = _extractor(args, **overrides)
    maps_path = output.with_name(output.stem + "_maps.npy") if args.post_encoder == "none" else None
    flow_bar = _Bar("optical flow", "field")
    bar = _Bar("I3D features", "frame")
    sink = None if output.suffix.lower() == ".npz" else TableStreamWriter(output)
    try:
        result = extract_features(
            args.source, extractor, args.post_encoder, points=points,
            interpolation=args.interpolation, flow_method=args.flow_method,
            interpolate_missing=args.interpolate_missing, maps_path=maps_path, progress=bar,
            flow_progress=flow_bar, start=args.start, stop=args.stop, roi=roi,
            max_side=args.max_side, keep_flow=keep_flow, keep_flow_dtype=args.keep_flow_dtype,
            flow_cache=args.flow_cache,
            status=lambda text: tqdm.write(f"  {text}", file=sys.stderr),
            row_sink=sink.write if sink is not None else None, predict=args.predict,
        )  # fmt: skip
        meta = result.metadata
        if sink is not None:
            sink.close(meta)
            rows = sink.rows
        else:
            table = result.table
            cols = feature_columns(table)
            with atomic_write_path(output) as tmp:
                np.savez(tmp, frame=table["frame"].to_numpy(),
                         features=table[cols].to_numpy(np.float32) if cols else np.zeros((len(table), 0)))  # fmt: skip
            rows = len(table)
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    finally:
        flow_bar.close()
        bar.close()
    if meta.get("random_weights"):
        print(f"WARNING: {meta['weights_note']}", file=sys.stderr)
    print(f"wrote {output}: {rows} rows, post-encoder {args.post_encoder}, end point "
          f"{meta['endpoint']}, {meta['windowing']} ({meta['n_windows']} encoder passes, "
          f"{meta['encoder_frames_per_output_frame']:.2f} per frame), runtime "
          f"{meta.get('runtime_used', '?')}, {meta['frames_per_second']} frames/s")  # fmt: skip
    if maps_path is not None:
        print(f"feature maps: {maps_path} {tuple(result.feature_maps.shape)}")
    if keep_flow is not None:
        print(f"flow kept: {keep_flow} ({args.keep_flow_dtype})")
    for pred in meta.get("predictions", [])[:3]:
        best = ", ".join(f"{n} {p:.2f}" for n, p in zip(pred["labels"], pred["probs"], strict=True))
        print(f"Kinetics, window at frame {pred['start_frame']}: {best}")
    if args.post_encoder == "point":
        print(f"landmark rows without a point: {meta['missing_landmark_rows']}; outside the frame: "
              f"{meta['outside_frame_rows']}; positions interpolated: "
              f"{meta['interpolated_landmark_positions']}")  # fmt: skip
    return 0


def _defaults_of(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


def _cmd_extract_any(args: argparse.Namespace) -> int:
    """One source with ``-o``: the single-video form; several, a folder, a glob, ``--manifest``
    or ``--output-dir``: the batch (``cli/extract.py``).
    """
    from .extract import cmd_extract_batch, is_batch, settings_file_for_one_video

    if is_batch(args):
        return cmd_extract_batch(args, args.extract_defaults)
    if not args.output:
        raise BadInputError("Give -o FILE for one source, or --output-dir DIR for a batch")
    args.source = args.sources[0]
    with settings_file_for_one_video(args, args.extract_defaults):  # the dock's saved settings
        return _cmd_extract(args)


def _read_labels(path: str) -> Any:
    """A labels table (frame,label or start_frame,end_frame,label) from CSV or Parquet."""
    import pandas as pd

    source = Path(path)
    if not source.is_file():
        raise BadInputError(f"Labels file not found: {source}")
    try:
        if source.suffix.lower() == ".parquet":
            labels = pd.read_parquet(source)
        else:
            labels = pd.read_csv(source)
    except Exception as exc:  # pandas raises many types for bad files
        raise BadInputError(f"Cannot read labels ({type(exc).__name__}: {exc}): {source}") from exc
    from ..io.tables import check_columns

    frames = [c for c in ("frame", "start_frame", "end_frame") if c in labels.columns]
    check_columns(labels, frames, [], source, 2 if source.suffix.lower() == ".csv" else None)
    return labels


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analysis.evaluation import FeatureExtractorEvaluator, feature_matrix, labels_per_row
    from ..analysis.report import write_evaluation_report
    from ..io.tables import read_table

    tables = [read_table(path) for path in args.features]
    labels = _read_labels(args.labels) if args.labels else None
    if len(tables) == 1:
        features = tables[0]
    else:  # one table per video: rows keep their video, splits go by video
        if args.compare:
            raise BadInputError("--compare compares two tables of one video; give one FEATURES")
        stems = [Path(p).stem for p in args.features]
        if len(set(stems)) < len(stems):
            raise BadInputError(f"Feature tables need distinct file names: {stems}")
        features = pd.concat([t.assign(video=s) for t, s in zip(tables, stems, strict=True)],
                             ignore_index=True)  # fmt: skip
        features.attrs = dict(tables[0].attrs)
        if labels is not None:  # per video when the labels have a video column
            per_video = []
            for table, stem in zip(tables, stems, strict=True):
                mine = labels[labels["video"] == stem] if "video" in labels else labels
                per_video.append(labels_per_row(mine, feature_matrix(table)[1]))
            labels = pd.concat([pd.Series(v, dtype=object) for v in per_video]).to_numpy()
    groups_column = args.groups_column or ("video" if len(tables) > 1 else None)
    groups = None
    if groups_column:
        if groups_column not in features:
            raise BadInputError(f"No column {groups_column!r} in {', '.join(args.features)}")
        groups = features[groups_column].to_numpy()
    other = read_table(args.compare) if args.compare else None
    evaluator = FeatureExtractorEvaluator(n_splits=args.splits, gap=args.gap, lag=args.lag)
    names = ", ".join(Path(p).name for p in args.features)
    paths = write_evaluation_report(
        features, args.output, labels, groups, other, evaluator,
        title=f"Feature evaluation: {names}",
    )  # fmt: skip
    _print_report(paths)
    return 0


def _report_metrics(paths: dict) -> dict[str, float]:
    """The metrics a written evaluation report holds (its ``metrics.json``)."""
    import json

    return json.loads(Path(paths["json"]).read_text())["metrics"]


def _print_report(paths: dict) -> None:

    metrics = _report_metrics(paths)
    for name, value in metrics.items():
        print(f"{name:>20}: {value:.4g}")
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")


VISUALIZE_KINDS = ("evolution", "heatmap", "3d", "animation", "comparative", "grid")


def write_figures(
    vis: Any, data: Any, kinds: Sequence[str], features: list[int], out: Path,
    flow: Any = None, sample: int = 0, stem: str = "",
) -> list[Path]:  # fmt: skip
    """The figures of ``kinds`` for ``data`` (activations or a table) into ``out``."""
    from ..io._atomic import ensure_output_dir

    ensure_output_dir(out)
    prefix = f"{stem}_" if stem else ""
    written = []
    for kind in kinds:
        if kind == "evolution":
            path = out / f"{prefix}evolution.png"
            vis.visualize_temporal_feature_evolution(data, features, path, sample=sample)
        elif kind == "comparative":
            path = out / f"{prefix}comparative.png"
            vis.create_comparative_temporal_view(data, features, flow, path, sample=sample)
        elif kind == "grid":
            path = out / f"{prefix}channels.png"
            vis.visualize_layer_activations(data, 0, path, sample=sample)
        else:
            for c in features:
                if kind == "heatmap":
                    path = out / f"{prefix}heatmap_f{c:04d}.png"
                    vis.create_feature_activation_heatmap(data, c, path, sample=sample)
                elif kind == "3d":
                    path = out / f"{prefix}3d_f{c:04d}.png"
                    vis.visualize_3d_feature_activation(data, c, path, sample=sample)
                else:
                    path = out / f"{prefix}animation_f{c:04d}.gif"
                    vis.create_feature_evolution_animation(data, c, path, sample=sample)
                written.append(path)
            continue
        written.append(path)
    return written


def _parse_features(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(
            f"--features takes channel numbers like 0,10,20, not {text!r}"
        ) from None


def _cmd_visualize(args: argparse.Namespace) -> int:
    import numpy as np

    from ..analysis.visualization import FeatureVisualization
    from ..io.tables import read_table

    source = Path(args.input)
    if source.suffix.lower() == ".npy":
        from ..io.flow_files import read_npy

        data = read_npy(source, "Activations")
        if (
            data.ndim in (4, 5)
            and data.shape[0]
            and np.isnan(data[min(args.sample, len(data) - 1)]).all()
        ):
            raise BadInputError(f"Activations of clip {args.sample} are all NaN: {source}")
        layer = args.layer_name or "activations"
    else:
        data = read_table(source)
        layer = marked_layer_name(
            args.layer_name or str(data.attrs.get("endpoint", "features")), data.attrs
        )
    flow = None
    if args.flow:
        from ..flow.sequences import _open_sequence

        flow = _open_sequence(Path(args.flow))
    vis = FeatureVisualization(layer_name=layer, clip_length=args.clip_length)
    if args.kind != "all":
        kinds: tuple[str, ...] = (args.kind,)
    elif source.suffix.lower() == ".npy":
        kinds = VISUALIZE_KINDS
    else:  # a table has no spatial axes: the kinds that plot over time
        kinds = ("evolution", "heatmap", "comparative")
    paths = write_figures(vis, data, kinds, _parse_features(args.features), Path(args.output),
                          flow, args.sample, source.stem)  # fmt: skip
    for path in paths:
        print(f"wrote {path}")
    return 0


def _number(kind: type, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> Any:  # fmt: skip
    """An argparse type: a ``kind`` number within [low, high] (open ends when asked); 0 is a
    value like any other, never "unset", so an option's 0 outside its range is an error.
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}"
            ) from None
        if kind is float and value != value:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "" if low is None else f"{'>' if low_open else '≥'} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '≤'} {high:g}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {' and '.join(v for v in (lo, hi) if v)}"
            )
        return value

    parse.__name__ = f"{kind.__name__} range"
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, low_open=True)
FRACTION = _number(float, 0, 1, high_open=True)  # 0: no validation split


def _add_flow_options(p: argparse.ArgumentParser) -> None:
    from ..flow.compute import DIS_PRESETS, METHODS

    p.add_argument("--method", choices=METHODS, default="farneback", help="flow method")
    p.add_argument("--preset", choices=DIS_PRESETS, default="medium", help="DIS preset")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--max-side", type=POSITIVE_INT, help="resize so the longest side is at most this"
    )
    size.add_argument("--scale", type=POSITIVE_FLOAT, help="resize by this factor before flow")
    p.add_argument(
        "--workers",
        type=POSITIVE_INT,
        help="threads for single-threaded methods (default: cores, max 2)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from ..extract.landmarks import add_landmark_arguments

    parser = argparse.ArgumentParser(
        prog="flow-features",
        description="Motion features from video: optical flow, an I3D flow encoder, post-encoders.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sample", help="write the synthetic whisker sample (.mp4 + landmark .csv)")
    p.add_argument("--output", "-o", required=True, help="folder to write to")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "flow",
        help="compute dense optical flow for a video or a folder of videos",
        description="Writes (T-1, H, W, 2) float32 .npy flow (dx, dy in px/frame) plus a JSON "
        "sidecar. A folder run skips videos whose flow is already complete.",
    )
    p.add_argument("video", nargs="?", help="a video file")
    p.add_argument("-o", "--output", help="output .npy for VIDEO")
    p.add_argument("--input-dir", help="folder of videos")
    p.add_argument("--output-dir", help="folder for <video stem>.npy outputs")
    from .extract import add_cluster_arguments

    add_cluster_arguments(p.add_argument_group("many videos (--input-dir, docs/batch.md)"))
    _add_flow_options(p)
    p.set_defaults(func=_cmd_flow)

    p = sub.add_parser("sequences", help="cut flow into preprocessed I3D windows")
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    load = modes.add_parser("load", help="windows from flow files in a folder")
    load.add_argument("--input-dir", required=True, help="folder of .npy/.npz flow or .flo folders")
    compute = modes.add_parser("compute", help="flow from a video, then windows")
    compute.add_argument("--video-path", required=True)
    _add_flow_options(compute)
    for m in (load, compute):
        m.add_argument("--output-dir", required=True)
        m.add_argument(
            "--sequence-length", type=POSITIVE_INT, default=16, help="frames per window (16)"
        )
        m.add_argument("--stride", type=POSITIVE_INT, default=8, help="frames between windows (8)")
        m.add_argument(
            "--bound", type=POSITIVE_FLOAT, default=20.0, help="clip flow to ±bound px (20)"
        )
        m.add_argument(
            "--quantize", action="store_true", help="quantise to 256 levels like DeepMind"
        )
        m.set_defaults(func=_cmd_sequences)

    p = sub.add_parser("weights", help="DeepMind's published I3D checkpoints")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = wsub.add_parser(
        "fetch",
        help="download and verify a kinetics-i3d checkpoint",
        description="Downloads into --dest or the cache ($NAPARI_FLOW_FEATURES_CACHE, default "
        "~/.cache/napari-flow-features/checkpoints/NAME); a verified copy is reused.",
    )
    from ..model.weights import CHECKPOINTS

    fetch.add_argument("name", choices=CHECKPOINTS)
    fetch.add_argument("--dest", help="folder for the files (default: the cache)")
    fetch.add_argument(
        "--url", help="base URL holding NAME/<files> (default: $NAPARI_FLOW_FEATURES_WEIGHTS_URL "
        "or the kinetics-i3d repository)",
    )  # fmt: skip
    fetch.set_defaults(func=_cmd_weights)

    p = sub.add_parser("model", help="build, fine-tune and evaluate I3D models (model registry)")
    msub = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    helps = {
        "implement": "build the encoder from a config and save it in the registry",
        "train": "fine-tune on labelled flow (class folders or file,label CSV) with a new head",
        "evaluate": "accuracy of a trained classifier on the validation split",
        "test": "run an encoder over flow files and write per-frame feature tables (GAP)",
    }
    for mode, text in helps.items():
        m = msub.add_parser(mode, help=text)
        m.add_argument(
            "--output-dir", required=True,
            help="feature tables folder" if mode == "test" else "model registry folder",
        )  # fmt: skip
        m.add_argument("--data-dir", help="class folders of flow .npy files, or a file,label CSV")
        m.add_argument("--config", help="extractor YAML config (see docs/model.md)")
        m.add_argument("--model-name", default="i3d-flow", help="name in the registry")
        m.add_argument("--endpoint", help="encoder end point (overrides the config)")
        m.add_argument("--clip-length", type=POSITIVE_INT,
                       help="frames per clip (overrides the config)")  # fmt: skip
        m.add_argument("--seed", type=int, default=0, help="split and initialisation seed")
        m.add_argument("--val-fraction", type=FRACTION, default=0.25, help="files held out (0.25)")
        if mode == "train":
            m.add_argument("--epochs", type=POSITIVE_INT, default=5)
            m.add_argument("--batch-size", type=POSITIVE_INT, default=4)
            m.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-3, help="Adam learning rate")
            m.add_argument("--unfreeze", action="store_true", help="train the backbone too")
        if mode in ("evaluate", "test"):
            m.add_argument("--version", help="registry version (default: the newest)")
        if mode == "test":
            m.add_argument("--registry-dir", help="take the encoder from this registry")
            m.add_argument("--num-samples", type=POSITIVE_INT,
                           help="only the first N flow files, with figures of each")  # fmt: skip
            m.add_argument("--features", default="0,1,2", help="channels in the figures")
            m.add_argument("--format", choices=("parquet", "csv"), default="parquet")
        m.set_defaults(func=_cmd_model)

    p = sub.add_parser("extract", help="per-frame I3D features of a video or flow file, or of "
                       "many videos (--output-dir, docs/batch.md)")  # fmt: skip
    p.add_argument("sources", nargs="*", metavar="source",
                   help="video (flow is computed) or flow (.npy, .npz, .flo folder); for a batch: "
                        "videos, globs or folders")  # fmt: skip
    p.add_argument("--post-encoder", choices=("none", "gap", "point"), default="gap")
    p.add_argument("--points", help="landmarks for point: our table (frame, x, y[, track_id]) or "
                   "pose-tracker output (DeepLabCut .h5/.csv, SLEAP .slp/.h5, Lightning Pose .csv)")  # fmt: skip
    p.add_argument("--interpolation", choices=("bilinear", "nearest"), default="bilinear")
    p.add_argument("--interpolate-missing", action="store_true",
                   help="fill landmark gaps linearly between keyframes")  # fmt: skip
    add_landmark_arguments(p)
    p.add_argument("--flow-method", default="dis",
                   choices=("dis", "farneback", "tvl1", "tvl1-skimage"),
                   help="flow method for a video source (DIS: fastest, see docs/performance.md)")  # fmt: skip
    p.add_argument("--max-side", type=int, default=256,
                   help="resize frames so the longest side is at most this before flow and encoder "
                        "(0.25x the pixels of 640x480 at 256; give a large value to keep the size)")  # fmt: skip
    p.add_argument("--roi", help="x,y,w,h: only this region of the frame (video pixels)")
    p.add_argument("--start", type=int, help="first frame (default 0)")
    p.add_argument("--stop", type=int, help="frame after the last (default: the video's end)")
    p.add_argument("--keep-flow", help="also write the flow to this .npy (streamed)")
    p.add_argument("--keep-flow-dtype", choices=("float16", "uint8", "float32"), default="float16",
                   help="stored flow type: float16, uint8 quantised like DeepMind, or float32")  # fmt: skip
    p.add_argument("--flow-cache",
                   help="folder keeping the last video's flow (up to 2 GB) so the next run with "
                        "the same video, method and selection skips it")  # fmt: skip
    p.add_argument("--runtime", choices=("auto", "tensorflow", "openvino"),
                   help="inference runtime (default auto: OpenVINO when installed)")  # fmt: skip
    p.add_argument("--windowing", choices=("chunked", "sliding"),
                   help="chunked (default, seamless) or the seed's sliding windows")  # fmt: skip
    p.add_argument("--chunk-length", type=int, help="frames per encoder pass in chunked mode")
    p.add_argument("--config", help="extractor YAML config (see docs/model.md)")
    p.add_argument("--endpoint", help="encoder end point (e.g. Mixed_4f)")
    p.add_argument("--clip-length", type=POSITIVE_INT, help="frames per clip (sliding windowing)")
    p.add_argument("--stride", type=POSITIVE_INT, help="frames between clips (sliding windowing)")
    p.add_argument("--weights", choices=("pretrained", "random"),
                   help="pretrained (default: DeepMind's flow_imagenet / rgb_imagenet, downloaded "
                        "and cached on first use) or random (every output is marked)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed for random weights")
    p.add_argument("--checkpoint", help="DeepMind checkpoint prefix (weights fetch prints it); "
                   "the flow one for two-stream")  # fmt: skip
    p.add_argument("--rgb-checkpoint", help="two-stream: the RGB checkpoint prefix")
    p.add_argument("--stream", choices=("flow", "rgb", "two-stream"),
                   help="I3D stream (default flow): rgb needs no optical flow; two-stream runs "
                        "both (docs/streams.md)")  # fmt: skip
    p.add_argument("--fusion", choices=("concat", "average"),
                   help="two-stream: concatenate (flow_f..., rgb_f... columns, default) or average")  # fmt: skip
    p.add_argument("--predict", action="store_true",
                   help="add each window's top-5 Kinetics classes (Logits end point, DeepMind "
                        "weights; frames at least 193 px: use --max-side 224 or more)")  # fmt: skip
    p.add_argument("--registry-dir", help="take the model from this registry")
    p.add_argument("--model-name", default="i3d-flow")
    p.add_argument("--version", help="registry version (default: newest)")
    p.add_argument("--output", "-o", help="features .parquet, .csv or .npz (one source)")
    from .extract import add_batch_arguments

    add_batch_arguments(p)
    p.set_defaults(func=_cmd_extract_any, extract_defaults=_defaults_of(p))

    p = sub.add_parser("evaluate", help="consistency, stability and discriminability of features")
    p.add_argument("features", nargs="+",
                   help="feature tables (.parquet or .csv); several = one per video, split by video")  # fmt: skip
    p.add_argument("--labels", help="labels: frame,label or start_frame,end_frame,label (CSV); "
                   "a video column (file stem) assigns rows to tables")  # fmt: skip
    p.add_argument("--compare", help="another table of the same video (stability: CKA, cosine)")
    p.add_argument("--groups-column", help="column naming the video of each row (splits by it)")
    p.add_argument("--splits", type=_number(int, 2), default=5, help="cross-validation folds (5)")
    p.add_argument(
        "--gap", type=NON_NEGATIVE_INT, help="frames left out around a test block (clip length)"
    )
    p.add_argument("--lag", type=POSITIVE_INT, default=1, help="autocorrelation lag in frames (1)")
    p.add_argument("--output", "-o", required=True, help="report folder")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("visualize", help="figures of activations (.npy) or a feature table")
    p.add_argument("input", help="feature maps .npy [N,T',H',W',C] (extract --post-encoder none) "
                   "or a feature table (.parquet, .csv)")  # fmt: skip
    p.add_argument("--kind", choices=(*VISUALIZE_KINDS, "all"), default="evolution")
    p.add_argument("--features", default="0,1,2", help="channel numbers, e.g. 0,10,20")
    p.add_argument("--flow", help="flow file for the comparative view's thumbnails")
    p.add_argument(
        "--sample", type=NON_NEGATIVE_INT, default=0, help="which clip of the activations"
    )
    p.add_argument("--clip-length", type=POSITIVE_INT, default=16,
                   help="frames per clip (time axis)")  # fmt: skip
    p.add_argument("--layer-name", help="name shown in titles (default: the end point)")
    p.add_argument("--output", "-o", required=True, help="figures folder")
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser("demo", help="run the main job on the built-in sample")
    p.add_argument("--output", "-o", default="demo-output", help="folder to write to")
    p.set_defaults(func=_cmd_demo)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's time limit, ``kill``): unwinds like Ctrl-C so every ``finally`` runs
    and no temporary file stays behind.
    """


_SIGNALLED: list[int] = []  # signals received during this main() call


def _on_signal(signum: int, frame: Any) -> None:
    _SIGNALLED.append(signum)
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def _terminate_cleanly() -> dict[int, Any]:
    """Record SIGINT and SIGTERM when they arrive and raise them in the main thread (when we are
    the main thread) as ``KeyboardInterrupt``/:class:`Terminated`; returns the previous handlers.
    """
    import threading

    _SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flow-features``; returns the exit code (0 done, 2 bad input or a full
    disk, 3 a batch ran but some videos failed, 130 Ctrl-C, 143 SIGTERM).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _terminate_cleanly()
    try:
        return int(args.func(args) or 0)
    except BaseException as exc:  # every end is reported with its exit code
        # A signal raised at an arbitrary point may surface as another error from the library
        # it interrupted (h5py, zipfile): the run was stopped, not broken.
        if _SIGNALLED or isinstance(exc, (CancelledError, KeyboardInterrupt)):
            if signal.SIGTERM in _SIGNALLED or isinstance(exc, Terminated):
                print("flow-features: terminated (SIGTERM); temporary files removed",
                      file=sys.stderr)  # fmt: skip
                return 143
            print("flow-features: cancelled", file=sys.stderr)
            return 130
        if isinstance(exc, (BadInputError, OSError)):
            print(f"flow-features: error: {exc}", file=sys.stderr)
            return 2
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def entry() -> None:
    """The console script: :func:`main`, and after Ctrl-C or SIGTERM (the run has already
    removed its temporaries) leave without the interpreter's finalisation, where native thread
    pools (TensorFlow, OpenVINO) could abort the process instead of exiting with 130/143.
    """
    code = main()
    if code in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
