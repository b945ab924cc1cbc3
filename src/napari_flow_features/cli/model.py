"""``flow-features model``: build, fine-tune, evaluate and test I3D models (the model registry)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ._common import (
    FRACTION,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    console,
    extractor_from,
    output_folder,
    parse_features,
)

MODES = {
    "implement": "build the encoder from a config and save it in the registry",
    "train": "fine-tune on labelled flow (class folders or file,label CSV) with a new head",
    "evaluate": "accuracy of a trained classifier on the validation split",
    "test": "run an encoder over flow files and write per-frame feature tables (GAP)",
    "export": "export a registry model as a SavedModel serving chosen end points",
}
SAVE_FORMATS = ("keras", "h5", "savedmodel")  # ModelSerializer's formats (docs/model.md)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``model`` sub-command and its modes.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-commands.

    Returns
    -------
    argparse.ArgumentParser
        The sub-command's parser.
    """
    p: argparse.ArgumentParser = sub.add_parser(
        "model", help="build, fine-tune and evaluate I3D models (model registry)"
    )
    msub = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    for mode, text in MODES.items():
        m = msub.add_parser(mode, help=text)
        m.add_argument(
            "--output-dir", required=True,
            help="feature tables folder" if mode == "test" else "model registry folder",
        )  # fmt: skip
        m.add_argument("--data-dir", help="class folders of flow .npy files, or a file,label CSV")
        m.add_argument("--config", help="extractor YAML config (see docs/configuration.md)")
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
        if mode in ("implement", "train"):
            m.add_argument("--save-format", choices=SAVE_FORMATS, default="keras",
                           help="registry file format (keras, h5, savedmodel; default keras)")  # fmt: skip
        if mode in ("evaluate", "test", "export"):
            m.add_argument("--version", help="registry version (default: the newest)")
        if mode == "export":
            m.add_argument("--export-dir", required=True, help="new SavedModel folder")
            m.add_argument("--inputs", help="input names, comma-separated (default: flow)")
            m.add_argument("--endpoints",
                           help="end points served as named outputs, e.g. Mixed_3c,Mixed_5c "
                                "(default: the model's output)")  # fmt: skip
        if mode == "test":
            m.add_argument("--registry-dir", help="take the encoder from this registry")
            m.add_argument("--num-samples", type=POSITIVE_INT,
                           help="only the first N flow files, with figures of each")  # fmt: skip
            m.add_argument("--features", default="0,1,2", help="channels in the figures")
            m.add_argument("--format", choices=("parquet", "csv"), default="parquet")
        m.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the model mode asked for.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    out = output_folder(args.output_dir)
    if args.mode == "implement":
        folder = extractor_from(args).save_model_with_serializer(
            out, {"model_name": args.model_name, "description": "I3D flow encoder"},
            format=args.save_format,
        )  # fmt: skip
        console.result(f"saved {args.model_name} version {folder.name}: {folder}")
        return 0
    if args.mode == "export":
        return _export(args, out)
    if args.data_dir is None:
        raise BadInputError(f"model {args.mode} needs --data-dir")
    if args.mode == "test":
        return _test(args, out)
    if args.mode == "train":
        return _train(args, out)
    return _evaluate(args, out)


def _train(args: argparse.Namespace, out: Path) -> int:
    from ..analysis.classifier import train_into_registry
    from ..model.training import TrainingSettings

    settings = TrainingSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        val_fraction=args.val_fraction, freeze_backbone=not args.unfreeze, seed=args.seed,
    )  # fmt: skip
    report = train_into_registry(
        extractor_from(args), args.data_dir, out, args.model_name, settings,
        verbose=0 if console.quiet else 1, save_format=args.save_format,
    )  # fmt: skip
    acc = report["history"].get("val_accuracy", [float("nan")])[-1]
    console.result(f"saved {args.model_name} version {report['final_version']}; final validation "
                   f"accuracy {acc:.3f}")  # fmt: skip
    return 0


def _export(args: argparse.Namespace, registry: Path) -> int:
    """A registry model as a SavedModel whose signature serves the chosen end points."""
    from ..model.registry import ModelSerializer

    model, _, version = (
        ModelSerializer.load_model(registry, args.model_name, args.version)
        if args.version
        else ModelSerializer.load_latest_model(registry, args.model_name)
    )
    inputs = [name.strip() for name in args.inputs.split(",")] if args.inputs else None
    endpoints = [name.strip() for name in args.endpoints.split(",")] if args.endpoints else None
    folder = ModelSerializer.export_for_inference(
        model, args.export_dir, inputs=inputs, endpoints=endpoints
    )
    console.result(f"exported {args.model_name} version {version} to {folder}")
    return 0


def _evaluate(args: argparse.Namespace, out: Path) -> int:
    from ..analysis.classifier import evaluate_registered_classifier, load_classifier
    from ..model.training import TrainingSettings

    model, meta, version = load_classifier(out, args.model_name, args.version)
    cfg = meta.get("extractor_config", {})
    extractor = extractor_from(args, clip_length=cfg.get("clip_length", 16),
                               stride=cfg.get("stride", 8), endpoint=cfg.get("endpoint", "Mixed_5c"))  # fmt: skip
    result, path, report_dir = evaluate_registered_classifier(
        model, meta, version, extractor, args.data_dir, out, args.model_name,
        TrainingSettings(val_fraction=args.val_fraction, seed=args.seed),
    )  # fmt: skip
    console.result(f"{args.model_name} {version}: accuracy {result['accuracy']:.3f} on "
                   f"{result['windows']} {result['split']} windows; wrote {path}")  # fmt: skip
    probe = result["encoder_features"].get("probe_accuracy")
    if probe is not None:
        console.result(f"encoder features (GAP per frame, splits by file): linear probe accuracy "
                       f"{probe:.3f}; report in {report_dir}")  # fmt: skip
    return 0


def _test(args: argparse.Namespace, out: Path) -> int:
    """Run an encoder (registry model, or the config's) over flow files; one table per file."""
    from ..analysis.figures import first_clip_figures
    from ..extract.flow_tables import table_stem, use_encoder_of, write_gap_tables
    from ..flow.sequences import _open_sequence

    overrides: dict[str, Any] = {}
    if args.registry_dir:
        overrides["weights"] = {"source": "registry", "registry_dir": args.registry_dir,
                                "model_name": args.model_name, "version": args.version}  # fmt: skip
    extractor = extractor_from(args, **overrides)
    use_encoder_of(extractor, extractor.model)
    figure_channels = parse_features(args.features) if args.num_samples is not None else []
    bars: list[Any] = []

    def progress_for(path: Path) -> Any:
        bars.append(console.bar(path.name, "window"))
        return bars[-1]

    try:
        for path, target, table in write_gap_tables(extractor, args.data_dir, out, args.format,
                                                    args.num_samples, progress_for):  # fmt: skip
            bars.pop().close()
            console.result(f"wrote {target}: {len(table)} frames x {table.shape[1] - 1} features")
            if args.num_samples is not None:
                stem = table_stem(path)
                figures = first_clip_figures(extractor, _open_sequence(path), stem,
                                             out / "figures", figure_channels)  # fmt: skip
                console.result(f"wrote {len(figures)} figures to {out / 'figures' / stem}")
    finally:
        for bar in bars:
            bar.close()
    return 0
