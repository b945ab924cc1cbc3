"""Fine-tune the I3D flow encoder on labelled flow clips with a new classification head.

Data: a folder with one sub-folder per class holding flow files (``.npy``/``.npz`` sequences
``(T-1, H, W, 2)``), or a CSV with ``file,label`` columns (paths relative to the CSV). Every file is
cut into windows (DESIGN.md); a window takes its file's label. The validation split is by file, so
windows of one video never sit on both sides.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError


@dataclass
class LabelledClips:
    """Windows of labelled flow files, split by file into training and validation.

    Attributes
    ----------
    classes : list of str
        Class names, sorted; a label is an index into them.
    files : list of Path
        The flow files.
    labels : list of int
        One class index per file.
    train_files, val_files : list of int
        Indices into ``files`` of each side of the split.
    """

    classes: list[str]
    files: list[Path]
    labels: list[int]
    train_files: list[int] = field(default_factory=list)
    val_files: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingSettings:
    """How a classifier is fine-tuned: the Keras fit, the validation split and the new head.

    Attributes
    ----------
    epochs, batch_size : int
        Keras ``fit`` settings (at least 1).
    learning_rate : float
        Adam's learning rate (above 0).
    val_fraction : float
        Share of each class' files held out for validation (:func:`split_by_file`), in [0, 1).
    freeze_backbone : bool
        Train the head only.
    dropout : float
        Dropout rate before the softmax layer, in [0, 1).
    seed : int
        Seeds the split, the shuffle and the head's initial weights.

    Raises
    ------
    BadInputError
        A value out of its range (the error names the setting).
    """

    epochs: int = 5
    batch_size: int = 4
    learning_rate: float = 1e-3
    val_fraction: float = 0.25
    freeze_backbone: bool = True
    dropout: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every value before any data is read."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            if not whole or value < low:
                raise BadInputError(f"{name} must be a whole number ≥ {low}, got {value!r}")
        if not self.learning_rate > 0:
            raise BadInputError(f"learning_rate must be above 0, got {self.learning_rate}")
        for name in ("val_fraction", "dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise BadInputError(f"{name} must be in [0, 1), got {value}")


def find_labelled_files(data: str | os.PathLike) -> tuple[list[Path], list[str], list[str]]:
    """The labelled flow files of a class-per-folder tree or a ``file,label`` CSV.

    Parameters
    ----------
    data : str or os.PathLike
        A folder with one sub-folder per class of ``.npy``/``.npz`` flow files, or a CSV with
        ``file`` and ``label`` columns (paths relative to the CSV).

    Returns
    -------
    files : list of Path
        The flow files.
    labels : list of str
        Each file's class name.
    classes : list of str
        The class names, sorted.

    Raises
    ------
    BadInputError
        Neither a folder nor a CSV, a CSV without the columns or listing a missing file, or
        fewer than two classes.
    """
    data = Path(data)
    files: list[Path] = []
    labels: list[str] = []
    if data.is_file() and data.suffix.lower() == ".csv":
        with open(data, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise BadInputError(f"Label CSV needs 'file' and 'label' columns: {data}")
            for row in reader:
                path = (data.parent / row["file"]).resolve()
                if not path.is_file():
                    raise BadInputError(f"{data} lists a missing file: {row['file']}")
                files.append(path)
                labels.append(str(row["label"]))
    elif data.is_dir():
        for sub in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(sub.iterdir()):
                if f.suffix.lower() in (".npy", ".npz"):
                    files.append(f)
                    labels.append(sub.name)
    else:
        raise BadInputError(f"Training data must be a folder of class folders or a CSV: {data}")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise BadInputError(
            f"Training needs at least 2 classes; found {classes or 'none'} in {data}"
        )
    return files, labels, classes


def split_by_file(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split files into training and validation, per class and reproducibly.

    Parameters
    ----------
    labels : list of int
        One class index per file.
    val_fraction : float
        The share of each class' files that goes to validation (at least one file when the class
        has two or more and ``val_fraction > 0``; never all of them).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train, val : list of int
        Sorted file indices of each side.
    """
    train: list[int] = []
    val: list[int] = []
    rng = np.random.default_rng(seed)
    for c in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        rng.shuffle(idx)
        n_val = round(len(idx) * val_fraction)
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def build_classifier(
    extractor: Any, num_classes: int, freeze_backbone: bool, dropout: float
) -> Any:
    """The extractor's encoder with a new classification head.

    Encoder, then an average over time and space, layer normalization, dropout and a softmax
    layer. The norm makes the head indifferent to the backbone's feature scale (random weights
    give features around 1e-3, DeepMind's around 1), so one learning rate suits both.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        Its ``model`` is the encoder (shared, not copied).
    num_classes : int
        Outputs of the softmax layer.
    freeze_backbone : bool
        Keep the encoder's weights fixed (and its batch norm in inference mode).
    dropout : float
        Dropout rate before the softmax layer.

    Returns
    -------
    keras.Model
        ``i3d_flow_classifier``: clips ``[B, L, H, W, C]`` to class probabilities.
    """
    import keras

    backbone = extractor.model
    backbone.trainable = not freeze_backbone
    inputs = keras.Input(shape=backbone.inputs[0].shape[1:], name="clip")
    x = backbone(inputs, training=False if freeze_backbone else None)
    x = keras.layers.GlobalAveragePooling3D(name="head.pool")(x)
    x = keras.layers.LayerNormalization(name="head.norm")(x)
    x = keras.layers.Dropout(dropout, name="head.dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head.logits")(x)
    return keras.Model(inputs, outputs, name="i3d_flow_classifier")


class _ClipSource:
    """Yields preprocessed (clip, label) pairs for a list of files, reading one window at a time."""

    def __init__(self, extractor: Any, files: list[Path], labels: list[int]) -> None:
        from ..flow.sequences import _open_sequence

        self.extractor = extractor
        self.items: list[tuple[Path, Any, int]] = []
        for f, lab in zip(files, labels, strict=True):
            flow = _open_sequence(f)
            self.extractor._check_flow(flow)
            for w in extractor.windows(flow.shape[0] + 1):
                self.items.append((f, w, lab))

    def __len__(self) -> int:
        return len(self.items)

    def __call__(self) -> Iterator[tuple[np.ndarray, np.int32]]:
        from ..flow.sequences import _open_sequence

        cache: dict[Path, Any] = {}
        for f, w, lab in self.items:
            flow = cache.setdefault(f, _open_sequence(f))
            yield self.extractor.preprocess_window(flow, w), np.int32(lab)


def make_dataset(
    extractor: Any, files: list[Path], labels: list[int], batch: int, shuffle: bool, seed: int
) -> tuple[Any, int]:
    """A ``tf.data`` pipeline of preprocessed windows and their labels.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        Cuts files into windows and preprocesses them.
    files : list of Path
        Flow files; each window takes its file's label.
    labels : list of int
        One class index per file.
    batch : int
        Windows per batch.
    shuffle : bool
        Shuffle the windows (again every epoch).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dataset : tf.data.Dataset
        Batches of ``(clips float32 [B, L, H, W, C], labels int32 [B])``; windows are read one
        at a time.
    windows : int
        The number of windows.
    """
    import tensorflow as tf

    source = _ClipSource(extractor, files, labels)
    sample, _ = next(iter(source()))
    spec = (
        tf.TensorSpec(sample.shape, tf.float32),
        tf.TensorSpec((), tf.int32),
    )
    ds = tf.data.Dataset.from_generator(source, output_signature=spec)
    if shuffle:
        ds = ds.shuffle(max(1, len(source)), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE), len(source)


def train_classifier(
    extractor: Any,
    data: str | os.PathLike,
    settings: TrainingSettings | None = None,
    *,
    verbose: int = 1,
    registry: tuple[str | os.PathLike, str] | None = None,
    registry_format: str = "keras",
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the extractor's encoder with a new head on labelled flow files.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        The encoder and its preprocessing.
    data : str or os.PathLike
        Labelled files (see :func:`find_labelled_files`).
    settings : TrainingSettings, optional
        Epochs, batch size, learning rate, split, frozen backbone, dropout and seed (default:
        ``TrainingSettings()``).
    verbose : int
        Keras' progress display (0 silent, 1 bar).
    registry : tuple, optional
        ``(base_dir, model_name)``: every epoch that improves validation accuracy is saved as a
        registry version (the report lists them).
    registry_format : {"keras", "h5", "savedmodel"}
        The format of those versions (see :meth:`ModelSerializer.save_model
        <napari_flow_features.model.registry.ModelSerializer.save_model>`).

    Returns
    -------
    classifier : keras.Model
        The trained classifier (compiled, with its optimizer state).
    report : dict
        Classes, the files of each side, window counts, the Keras history and the versions saved.

    Raises
    ------
    BadInputError
        Unusable data (see :func:`find_labelled_files`) or no file left for training.
    """
    import keras

    from .registry import FORMATS

    if registry_format not in FORMATS:
        raise BadInputError(
            f"Unknown registry format {registry_format!r}; choose one of {', '.join(FORMATS)}"
        )
    s = TrainingSettings() if settings is None else settings
    files, names, classes = find_labelled_files(data)
    labels = [classes.index(n) for n in names]
    train_idx, val_idx = split_by_file(labels, s.val_fraction, s.seed)
    if not train_idx:
        raise BadInputError("No files left for training after the validation split")
    keras.utils.set_random_seed(s.seed)
    model = build_classifier(extractor, len(classes), s.freeze_backbone, s.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(s.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    pick = lambda idx: ([files[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    train_ds, n_train = make_dataset(extractor, *pick(train_idx), s.batch_size, True, s.seed)
    val_ds, n_val = (None, 0)
    if val_idx:
        val_ds, n_val = make_dataset(extractor, *pick(val_idx), s.batch_size, False, s.seed)
    callbacks = []
    saved: list[str] = []
    if registry is not None and val_ds is not None:
        callbacks.append(_registry_checkpoint(registry, classes, extractor, saved, registry_format))
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=s.epochs, verbose=verbose, callbacks=callbacks
    )
    report = {
        "classes": classes,
        "train_files": [str(files[i]) for i in train_idx],
        "val_files": [str(files[i]) for i in val_idx],
        "train_windows": n_train,
        "val_windows": n_val,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "registry_versions": saved,
    }
    return model, report


def _registry_checkpoint(
    registry: tuple[str | os.PathLike, str],
    classes: list[str],
    extractor: Any,
    saved: list[str],
    save_format: str = "keras",
) -> Any:
    """A Keras callback that saves through the registry whenever validation accuracy improves.

    The versions saved are appended to ``saved``.
    """
    import keras

    from .registry import ModelSerializer

    class _Callback(keras.callbacks.Callback):
        best = -1.0

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            acc = float((logs or {}).get("val_accuracy", -1))
            if acc <= self.best:
                return
            self.best = acc
            base, name = registry
            meta = {
                "description": f"I3D flow classifier, epoch {epoch + 1}",
                "classes": classes,
                "val_accuracy": acc,
                "epoch": epoch + 1,
                "extractor_config": extractor.describe(),
            }
            folder = ModelSerializer(self.model, name).save_model(base, meta, format=save_format)
            saved.append(folder.name)

    return _Callback()


def evaluate_classifier(
    model: Any,
    extractor: Any,
    data: str | os.PathLike,
    classes: list[str],
    val_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Accuracy on the validation split (the same files training held out for the same seed).

    Parameters
    ----------
    model : keras.Model
        A classifier from :func:`train_classifier` (or the registry).
    extractor : DynamicFeatureExtractor
        Its preprocessing (the same as in training).
    data : str or os.PathLike
        The labelled files training used.
    classes : list of str
        The classifier's classes, in output order.
    val_fraction, seed : float, int
        As in training, so that the same files are held out.
    batch_size : int
        Windows per batch.

    Returns
    -------
    dict
        ``split``, ``files``, ``windows``, ``accuracy`` and ``per_class_accuracy`` (None for a
        class without validation windows). With no validation split, every file is used.

    Raises
    ------
    BadInputError
        The data has classes the model was not trained on.
    """
    files, names, found = find_labelled_files(data)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise BadInputError(f"Data has classes the model was not trained on: {unknown}")
    labels = [classes.index(n) for n in names]
    _, val_idx = split_by_file(labels, val_fraction, seed)
    idx = val_idx or list(range(len(files)))
    ds, n = make_dataset(
        extractor, [files[i] for i in idx], [labels[i] for i in idx], batch_size, False, seed
    )
    truth: list[int] = []
    pred: list[int] = []
    for clips, y in ds:
        probs = np.asarray(model(clips, training=False))
        pred += probs.argmax(axis=1).tolist()
        truth += np.asarray(y).tolist()
    truth_arr, pred_arr = np.asarray(truth), np.asarray(pred)
    per_class = {
        c: float((pred_arr[truth_arr == k] == k).mean()) if (truth_arr == k).any() else None
        for k, c in enumerate(classes)
    }
    return {
        "split": "validation" if val_idx else "all (no validation split)",
        "files": [str(files[i]) for i in idx],
        "windows": n,
        "accuracy": float((truth_arr == pred_arr).mean()) if n else float("nan"),
        "per_class_accuracy": per_class,
    }
