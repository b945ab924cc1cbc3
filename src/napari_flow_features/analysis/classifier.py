"""Fine-tune an I3D classifier into the model registry, and evaluate a registered one.

The library side of ``flow-features model train`` and ``model evaluate``: training
(:func:`~napari_flow_features.model.training.train_classifier`) with the final model saved as a
registry version and a JSON training report, and an evaluation that adds, beside the classifier's
accuracy, a report on its encoder's per-frame features.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError

if TYPE_CHECKING:
    from ..model.training import TrainingSettings

logger = logging.getLogger(__name__)


def train_into_registry(
    extractor: Any,
    data_dir: str | os.PathLike[str],
    registry_dir: str | os.PathLike[str],
    model_name: str,
    settings: TrainingSettings | None = None,
    *,
    verbose: int = 1,
    save_format: str = "keras",
) -> dict[str, Any]:
    """Fine-tune a classifier on labelled flow and save it (and its best epochs) in the registry.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        The encoder and its windowing.
    data_dir : str or PathLike
        Class folders of flow files, or a ``file,label`` CSV.
    registry_dir : str or PathLike
        The model registry folder; the training report goes there as
        ``<model_name>_training_report.json``.
    model_name : str
        Name in the registry.
    settings : TrainingSettings, optional
        Epochs, batch size, learning rate, split, frozen backbone, dropout and seed (default:
        ``TrainingSettings()``); the split (``val_fraction``, ``seed``) is recorded with the model
        so that evaluation holds out the same files.
    verbose : int
        Keras' progress output (0 none, 1 a bar per epoch).
    save_format : {"keras", "h5", "savedmodel"}
        The registry format of the final model and the per-epoch checkpoints.

    Returns
    -------
    dict
        The training report: classes, split, Keras history, the registry versions saved
        (``registry_versions``, epochs that improved) and ``final_version``.
    """
    from ..io.json_files import write_json
    from ..model.registry import ModelSerializer
    from ..model.training import TrainingSettings, train_classifier

    settings = TrainingSettings() if settings is None else settings
    out = Path(registry_dir)
    model, report = train_classifier(
        extractor, data_dir, settings, verbose=verbose, registry=(out, model_name),
        registry_format=save_format,
    )  # fmt: skip
    meta = {"description": "I3D flow classifier, final epoch", "classes": report["classes"],
            "extractor_config": extractor.describe(), "training_dataset": str(data_dir),
            "val_fraction": settings.val_fraction, "seed": settings.seed}  # fmt: skip
    final = ModelSerializer(model, model_name).save_model(out, meta, format=save_format)
    report["final_version"] = final.name
    write_json(out / f"{model_name}_training_report.json", report)
    logger.info("saved %s version %s in %s", model_name, final.name, out)
    return report


def load_classifier(
    registry_dir: str | os.PathLike[str], model_name: str, version: str | None = None
) -> tuple[Any, dict[str, Any], str]:
    """A trained classifier from the registry (the newest version by default).

    Parameters
    ----------
    registry_dir : str or PathLike
        The model registry folder.
    model_name : str
        Name in the registry.
    version : str, optional
        The version (default: the newest).

    Returns
    -------
    model : keras.Model
        The classifier.
    metadata : dict
        Its registry metadata (``classes``, ``extractor_config``, ``val_fraction``, ``seed``).
    version : str
        The version loaded.

    Raises
    ------
    BadInputError
        The model is not a trained classifier (its metadata has no classes).
    """
    from ..model.registry import ModelSerializer

    if version:
        model, meta, found = ModelSerializer.load_model(registry_dir, model_name, version)
    else:
        model, meta, found = ModelSerializer.load_latest_model(registry_dir, model_name)
    if "classes" not in meta:
        raise BadInputError(f"{model_name} {found} is not a trained classifier (no classes)")
    return model, meta, found


def evaluate_registered_classifier(
    model: Any,
    metadata: dict[str, Any],
    version: str,
    extractor: Any,
    data_dir: str | os.PathLike[str],
    registry_dir: str | os.PathLike[str],
    model_name: str,
    split: TrainingSettings | None = None,
) -> tuple[dict[str, Any], Path, Path]:
    """Accuracy on the validation split training held out, plus a report on the encoder features.

    Parameters
    ----------
    model : keras.Model
        The classifier (:func:`load_classifier`).
    metadata : dict
        Its registry metadata; its ``val_fraction`` and ``seed`` win over ``split``'s, so the
        split is the one training held out.
    version : str
        Its registry version.
    extractor : DynamicFeatureExtractor
        Built with the classifier's ``extractor_config`` (clip length, stride, end point).
    data_dir : str or PathLike
        The labelled flow (as for training).
    registry_dir : str or PathLike
        The registry folder: ``<model>_<version>_evaluation.json`` and the
        ``<model>_<version>_evaluation/`` report folder are written there.
    model_name : str
        Name in the registry.
    split : TrainingSettings, optional
        Its ``val_fraction`` and ``seed`` are the split when the metadata does not record it
        (default: ``TrainingSettings()``'s).

    Returns
    -------
    result : dict
        Accuracy, per-class accuracy, confusion, window counts, and ``encoder_features`` (the
        metrics of :func:`encoder_feature_report`).
    json_path : Path
        The written JSON result.
    report_dir : Path
        The encoder-feature report folder.
    """
    from ..io.json_files import write_json
    from ..model.training import TrainingSettings, evaluate_classifier

    split = TrainingSettings() if split is None else split
    out = Path(registry_dir)
    result = evaluate_classifier(
        model, extractor, data_dir, metadata["classes"],
        val_fraction=metadata.get("val_fraction", split.val_fraction),
        seed=metadata.get("seed", split.seed),
    )  # fmt: skip
    result.update({"model_name": model_name, "version": version})
    report_dir = out / f"{model_name}_{version}_evaluation"
    result["encoder_features"] = encoder_feature_report(
        model, extractor, data_dir, report_dir, f"{model_name} {version}"
    )
    path = write_json(out / f"{model_name}_{version}_evaluation.json", result)
    return result, path, report_dir


def encoder_feature_report(
    model: Any, extractor: Any, data_dir: str | os.PathLike[str], out: Path, title: str
) -> dict[str, float]:
    """Evaluate the classifier's encoder features: GAP per frame of every labelled file.

    Each frame is labelled by its file's class; cross-validation splits by file.

    Parameters
    ----------
    model : keras.Model
        The classifier (its encoder is used, see ``use_encoder_of``).
    extractor : DynamicFeatureExtractor
        Changed in place to run that encoder.
    data_dir : str or PathLike
        The labelled flow.
    out : Path
        The report folder.
    title : str
        Named in the report's title.

    Returns
    -------
    dict
        The report's metrics.
    """
    import pandas as pd

    from ..extract.flow_tables import use_encoder_of
    from ..extract.per_frame import gap_feature_table
    from ..flow.sequences import _open_sequence
    from ..model.training import find_labelled_files
    from .report import write_evaluation_report
    from .study import report_metrics

    use_encoder_of(extractor, model)
    files, names, _ = find_labelled_files(data_dir)
    tables = []
    for i, (path, name) in enumerate(zip(files, names, strict=True)):
        logger.info("encoder features of %s (%s)", path, name)
        table = gap_feature_table(extractor, _open_sequence(path), str(path))
        tables.append(table.assign(file=i, label=name))
    features = pd.concat(tables, ignore_index=True)
    features.attrs = {**tables[0].attrs, "source": str(data_dir)}
    labels = features["label"].to_numpy()
    paths = write_evaluation_report(
        features.drop(columns=["label"]), out, labels, features["file"].to_numpy(),
        title=f"Encoder features of {title}",
    )  # fmt: skip
    return report_metrics(paths)
