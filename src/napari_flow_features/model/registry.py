"""``ModelSerializer``: a versioned model registry on disk.

Layout: ``base_dir/<model_name>/<version>/`` holding the model in one of three formats and
``metadata.json`` (who, what, when, framework versions, input spec, end point, preprocessing, the
custom objects the model needs, and the SHA-256 and size of every file written):

``keras`` (the default)
    ``model.keras``: Keras' own archive (architecture, weights, compile configuration and
    optimizer state).
``h5``
    ``model.h5``: Keras' legacy HDF5 format (architecture, weights, optimizer variables), plus
    ``keras_config.json`` with the Keras 3 compile configuration when the model was compiled.
    Keras 3 writes the optimizer variables into the ``.h5`` but its loader never restores them
    (and cannot recompile a model whose loss was given by its short name, such as ``"mse"``), so
    :meth:`ModelSerializer.load_model` compiles from ``keras_config.json`` and sets the optimizer
    variables from the file itself.
``savedmodel``
    ``saved_model/``: a TensorFlow SavedModel whose ``serving_default`` signature runs the model
    (as :meth:`ModelSerializer.export_for_inference` writes it) and whose variables are the
    model's and the optimizer's, plus ``keras_config.json`` (architecture, compile configuration,
    variable order). Keras 3 cannot rebuild a Keras model from a SavedModel alone (only an
    inference layer, ``keras.layers.TFSMLayer``); the architecture beside it lets loading rebuild
    the model and read every variable back from the SavedModel's own checkpoint.

A version is written in a hidden temporary folder (``io/_atomic.py``'s ``atomic_directory``:
flushed, then renamed), so a crash never leaves a listed version behind.

Loading trusts nothing it reads: model names and versions are checked as on save, every path is
resolved and must stay inside the registry folder (``..``, absolute paths and symbolic links pointing
elsewhere are refused with :class:`UnsafePathError`), a metadata file that is not a JSON object with
the expected fields is reported as corrupt (:class:`CorruptFileError`), every recorded file must match
its SHA-256 (and no unrecorded file may sit beside them) before Keras opens anything, Keras runs in
safe mode, and custom objects the model needs must be available (:class:`MissingCustomObjectError`
names the missing ones).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, CorruptFileError, UnsafePathError
from ..io._atomic import atomic_directory, ensure_output_dir, sha256_file

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
KERAS_CONFIG_FILE = "keras_config.json"
SAVED_MODEL_DIR = "saved_model"
#: The registry's formats and the model file (or folder) each writes.
FORMATS: dict[str, str] = {"keras": MODEL_FILE, "h5": "model.h5", "savedmodel": SAVED_MODEL_DIR}
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SIGNATURE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_OUTPUT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
# Packages whose classes Keras resolves by itself (it imports them); anything else is custom.
_KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp"}


class MissingCustomObjectError(BadInputError):
    """A saved model needs custom classes or functions that are neither registered nor given."""


def _framework_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from .. import __version__

    return {
        "napari_flow_features": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _input_spec(model: Any) -> dict[str, Any]:
    shape = [None if d is None else int(d) for d in model.inputs[0].shape]
    return {"name": model.inputs[0].name, "shape": shape, "dtype": "float32", "layout": "BLHWC"}


def _check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _VERSION_RE.match(value) or ".." in value:
        raise UnsafePathError(
            f"{kind} {value!r} must start with a letter or digit and use only letters, digits, "
            "'.', '_', '+' or '-' (no '..', no '/'; at most 128 characters)"
        )
    return value


def _inside(root: Path, path: Path, what: str) -> Path:
    """``path`` resolved, if it stays inside ``root`` (resolved); else :class:`UnsafePathError`."""
    real_root, real = root.resolve(), path.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePathError(f"{what} resolves outside the registry {real_root}: {path} -> {real}")
    return real


def version_dir(base_dir: str | os.PathLike, model_name: str, version: str) -> Path:
    """The folder of one version, checked.

    Parameters
    ----------
    base_dir : str or os.PathLike
        The registry folder.
    model_name, version : str
        Plain names (letters, digits, ``. _ + -``; no ``..``).

    Returns
    -------
    Path
        ``base_dir/model_name/version`` resolved.

    Raises
    ------
    UnsafePathError
        A name that is not plain, or a folder that resolves outside ``base_dir``.
    """
    _check_name("Model name", model_name)
    _check_name("Version", version)
    base = Path(base_dir)
    return _inside(base, base / model_name / version, f"Version {model_name}/{version}")


_META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model_name": str,
    "version": str,
    "created_utc": str,
    "format": str,
    "weights_file": str,
    "weights_sha256": str,
    "weights_bytes": int,
    "endpoint": (str, type(None)),
    "classes": list,
    "extractor_config": dict,
    "files": dict,
    "custom_objects": list,
}


def _check_metadata(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise CorruptFileError(
            f"Corrupt registry metadata: a JSON object of fields expected, found "
            f"{type(meta).__name__}: {path}"
        )
    if "weights_sha256" not in meta:
        raise CorruptFileError(f"Corrupt registry metadata: no 'weights_sha256' field: {path}")
    for key, kind in _META_FIELDS.items():
        if key in meta and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            raise CorruptFileError(
                f"Corrupt registry metadata: field {key!r} has the wrong type "
                f"({type(meta[key]).__name__}): {path}"
            )
    for name, entry in meta.get("files", {}).items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
        ):
            raise CorruptFileError(
                f"Corrupt registry metadata: files[{name!r}] needs a 'sha256' text and a "
                f"'bytes' count: {path}"
            )
    if "custom_objects" in meta and not all(isinstance(n, str) for n in meta["custom_objects"]):
        raise CorruptFileError(f"Corrupt registry metadata: custom_objects must be names: {path}")
    if meta.get("format", "keras") not in FORMATS:
        raise CorruptFileError(
            f"Corrupt registry metadata: unknown format {meta.get('format')!r} (known: "
            f"{', '.join(FORMATS)}): {path}"
        )
    return meta


# -- custom objects -----------------------------------------------------------------------------
def custom_object_names(model: Any) -> list[str]:
    """Names of the custom classes and functions a model's configuration refers to.

    Everything Keras cannot find by itself: classes from outside Keras' own packages (a user's
    layers, losses, subclassed models) and registered functions (``package>name``). The names are
    those Keras looks up on loading: the registered name (``package>Class``) for classes decorated
    with ``keras.saving.register_keras_serializable``, else the class name.

    Parameters
    ----------
    model : keras.Model
        The model, compiled or not (a custom loss or optimizer counts too).

    Returns
    -------
    list of str
        Sorted, without repeats.
    """
    import keras

    found: set[str] = set()
    configs = [keras.saving.serialize_keras_object(model)]
    if getattr(model, "compiled", False):
        configs.append(model.get_compile_config())
    for config in configs:
        _collect_custom(config, found)
    return sorted(found)


def _collect_custom(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if "class_name" in node and "module" in node:
            module, name = node.get("module"), node.get("class_name")
            if name == "function":
                target = node.get("config")
                if isinstance(target, str) and ">" in target:
                    found.add(target)
            elif isinstance(name, str) and (
                not isinstance(module, str) or module.split(".")[0] not in _KERAS_PACKAGES
            ):
                registered = node.get("registered_name")
                found.add(registered if isinstance(registered, str) and registered else name)
        for value in node.values():
            _collect_custom(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _collect_custom(value, found)


def _resolve_custom_objects(
    needed: Sequence[str], custom_objects: Mapping[str, Any] | None, where: Path
) -> dict[str, Any]:
    """``custom_objects`` completed so Keras finds every needed name, or a named error.

    A user may pass a registered class under its plain class name (``{"Scale": Scale}`` for
    ``"mylab>Scale"``); it is added under the name Keras looks for.
    """
    import keras

    given = dict(custom_objects or {})
    missing = []
    for name in needed:
        if keras.saving.get_registered_object(name, custom_objects=given) is not None:
            continue
        plain = name.split(">")[-1]
        if plain in given:
            given[name] = given[plain]
            continue
        missing.append(name)
    if missing:
        raise MissingCustomObjectError(
            f"The model in {where} needs custom object(s) that are not available here: "
            f"{', '.join(missing)}. Import the code that defines them (decorated with "
            "@keras.saving.register_keras_serializable) before loading, or pass them as "
            f"custom_objects={{{', '.join(repr(n.split('>')[-1]) + ': ...' for n in missing)}}}"
        )
    return given


_LOCATE_RE = re.compile(r"Could not locate (?:class|function) '([^']+)'")


# -- checksums ----------------------------------------------------------------------------------
def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {sha256, bytes}}`` of every file under ``folder`` but the metadata."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != METADATA_FILE:
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def _verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Every recorded file present with its SHA-256, and nothing unrecorded beside them."""
    files: dict[str, dict[str, Any]] = meta.get("files") or {
        meta.get("weights_file", MODEL_FILE): {"sha256": meta.get("weights_sha256")}
    }
    for rel, entry in files.items():
        path = _inside(folder, folder / rel, f"Model file {rel!r}")
        if not path.is_file():
            raise BadInputError(f"Model file missing from the registry: {path}")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise CorruptFileError(
                f"Model file does not match its recorded SHA-256 (tampered or truncated; recorded "
                f"{entry.get('sha256')}, found {actual}): {path}"
            )
    if "files" in meta:
        for path in folder.rglob("*"):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel != METADATA_FILE and rel not in files:
                raise CorruptFileError(
                    f"A file not recorded in the version's checksums was added: {path}"
                )


# -- writing and reading the formats ------------------------------------------------------------
@contextlib.contextmanager
def _compile_config_kept(model: Any) -> Iterator[None]:
    """Undo Keras' legacy H5 writer's edit of the model.

    ``save_model_to_hdf5`` pops the optimizer out of ``model._compile_config`` (Keras 3.15), so a
    later ``.keras`` save of the same model would silently drop the optimizer.
    """
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    kept = dict(config) if isinstance(config, dict) else None
    try:
        yield
    finally:
        if kept is not None and isinstance(config, dict):
            config.clear()
            config.update(kept)


def _optimizer_variables(model: Any) -> list[Any]:
    optimizer = getattr(model, "optimizer", None)
    return list(getattr(optimizer, "variables", None) or [])


def _write_model(model: Any, folder: Path, fmt: str) -> None:
    """Write ``model`` into the (temporary) version ``folder`` in format ``fmt``."""
    import keras

    if fmt == "keras":
        model.save(folder / MODEL_FILE)
        return
    compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
    extra: dict[str, Any] = {"compile_config": compile_config or None}
    if fmt == "h5":
        with _compile_config_kept(model):
            keras.saving.save_model(model, folder / FORMATS["h5"])
    else:
        module = _serving_module(model, None, None)
        module.model_variables = [v.value for v in model.variables]
        module.optimizer_variables = [v.value for v in _optimizer_variables(model)]
        _save_serving_module(module, folder / SAVED_MODEL_DIR)
        extra["model_config"] = keras.saving.serialize_keras_object(model)
        extra["variables"] = [_variable_entry(v) for v in model.variables]
        extra["optimizer_variables"] = [_variable_entry(v) for v in _optimizer_variables(model)]
    (folder / KERAS_CONFIG_FILE).write_text(json.dumps(extra, indent=1), encoding="utf-8")


def _variable_entry(variable: Any) -> dict[str, Any]:
    return {"path": str(variable.path), "shape": [int(d) for d in variable.shape]}


def _read_keras_config(folder: Path) -> dict[str, Any]:
    path = folder / KERAS_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptFileError(
            f"Cannot read the model's Keras configuration ({exc}): {path}"
        ) from exc
    if not isinstance(config, dict):
        raise CorruptFileError(f"The model's Keras configuration is not a JSON object: {path}")
    return config


def _compile(model: Any, compile_config: Any, custom_objects: dict[str, Any]) -> None:
    import keras

    if compile_config:
        with keras.saving.custom_object_scope(custom_objects):
            model.compile_from_config(compile_config)


def _optimizer_for(model: Any, saved_paths: Sequence[str], source: Path) -> list[Any]:
    """The optimizer variables that receive saved values, in the saved order.

    The optimizer is built for the model's trainable variables first when the saved state has
    more variables than it. The same number of variables are taken in order (Keras creates an
    optimizer's slots in the order of the trainable variables; their paths may differ, since a
    rebuilt model's variables can sit in another name scope). Fewer saved variables are the state
    of an optimizer that was never built (a compiled model never trained: its step count and
    learning rate), matched by path; its slots keep their initial values, as they were.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise CorruptFileError(f"Optimizer state saved, but no optimizer configuration: {source}")
    if len(saved_paths) > len(optimizer.variables):
        optimizer.build(model.trainable_variables)
    targets = list(optimizer.variables)
    if len(saved_paths) == len(targets):
        return targets
    by_path = {str(v.path): v for v in targets}
    missing = [path for path in saved_paths if path not in by_path]
    if missing or len(saved_paths) > len(targets):
        raise CorruptFileError(
            f"The saved optimizer state has {len(saved_paths)} variables, the rebuilt optimizer "
            f"{len(targets)} ({', '.join(missing[:3]) or 'too few'} not among them): {source}"
        )
    return [by_path[path] for path in saved_paths]


def _check_shapes(variables: Sequence[Any], shapes: Sequence[Any], what: str, source: Path) -> None:
    """Raise unless each variable has the saved shape."""
    if len(variables) != len(shapes):
        raise CorruptFileError(
            f"The rebuilt model has {len(variables)} {what} variables, {len(shapes)} were saved: "
            f"{source}"
        )
    for variable, shape in zip(variables, shapes, strict=True):
        if [int(d) for d in variable.shape] != [int(d) for d in shape]:
            raise CorruptFileError(
                f"Saved {what} variable {variable.path} has shape {tuple(shape)}, the rebuilt "
                f"model's {tuple(variable.shape)}: {source}"
            )


def _load_h5(folder: Path, custom_objects: dict[str, Any]) -> Any:
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import (  # Keras' reader of its own H5 layout
        load_attributes_from_hdf5_group,
        load_optimizer_weights_from_hdf5_group,
    )

    path = folder / FORMATS["h5"]
    model = keras.models.load_model(
        path, safe_mode=True, compile=False, custom_objects=custom_objects
    )
    config = _read_keras_config(folder) if (folder / KERAS_CONFIG_FILE).is_file() else {}
    _compile(model, config.get("compile_config"), custom_objects)
    with h5py.File(path, "r") as fh:
        if "optimizer_weights" in fh:
            names = [
                n.decode("utf-8") if isinstance(n, bytes) else str(n)
                for n in load_attributes_from_hdf5_group(fh["optimizer_weights"], "weight_names")
            ]
            values = [np.asarray(v) for v in load_optimizer_weights_from_hdf5_group(fh)]
            targets = _optimizer_for(model, names, path)
            _check_shapes(targets, [v.shape for v in values], "optimizer", path)
            for variable, value in zip(targets, values, strict=True):
                variable.assign(value)
    return model


def _load_savedmodel(folder: Path, custom_objects: dict[str, Any]) -> Any:
    import keras
    import tensorflow as tf

    config = _read_keras_config(folder)
    if not isinstance(config.get("model_config"), dict):
        raise CorruptFileError(f"No model architecture in {folder / KERAS_CONFIG_FILE}")
    model = keras.saving.deserialize_keras_object(
        config["model_config"], custom_objects=custom_objects, safe_mode=True
    )
    _compile(model, config.get("compile_config"), custom_objects)
    saved_model = folder / SAVED_MODEL_DIR
    recorded = config.get("variables") or []
    recorded_optimizer = config.get("optimizer_variables") or []
    _check_shapes(model.variables, [e.get("shape", []) for e in recorded], "model", saved_model)
    optimizer_variables = []
    if recorded_optimizer:
        paths = [str(e.get("path")) for e in recorded_optimizer]
        optimizer_variables = _optimizer_for(model, paths, saved_model)
        shapes = [e.get("shape", []) for e in recorded_optimizer]
        _check_shapes(optimizer_variables, shapes, "optimizer", saved_model)
    checkpoint = tf.train.Checkpoint(
        model_variables=[v.value for v in model.variables],
        optimizer_variables=[v.value for v in optimizer_variables],
    )
    status = checkpoint.read(str(saved_model / "variables" / "variables"))
    status.assert_existing_objects_matched()
    return model


# -- export -------------------------------------------------------------------------------------
def _serving_module(
    model: Any,
    inputs: str | Sequence[str] | None,
    endpoints: Sequence[str] | Mapping[str, str] | None,
) -> Any:
    """A ``tf.Module`` with a ``serve`` function: named inputs in, named end points out."""
    import keras
    import tensorflow as tf

    model_inputs = list(model.inputs)
    if inputs is None:
        names = ["flow"] if len(model_inputs) == 1 else [str(t.name) for t in model_inputs]
    else:
        names = [inputs] if isinstance(inputs, str) else [str(n) for n in inputs]
    if len(names) != len(model_inputs):
        raise BadInputError(
            f"The model takes {len(model_inputs)} input(s) "
            f"({', '.join(str(t.name) for t in model_inputs)}); {len(names)} name(s) given: "
            f"{names}"
        )
    for name in names:
        if not _SIGNATURE_NAME_RE.match(name):
            raise BadInputError(
                f"Input name {name!r} must be an identifier (letters, digits, '_'; not starting "
                "with a digit)"
            )
    if len(set(names)) != len(names):
        raise BadInputError(f"Input names must differ: {names}")

    if endpoints is None:
        outputs = model.outputs
        keys = ["features"] if len(outputs) == 1 else [str(n) for n in model.output_names]
        target = model
    else:
        chosen = dict(endpoints) if isinstance(endpoints, Mapping) else {e: e for e in endpoints}
        if not chosen:
            raise BadInputError("endpoints is empty: name at least one layer, or pass None")
        layers = {key: _endpoint_layer(model, layer) for key, layer in chosen.items()}
        for key in chosen:
            if not isinstance(key, str) or not _OUTPUT_NAME_RE.match(key):
                raise BadInputError(f"Output name {key!r} must be an identifier ('.' allowed)")
        keys = list(chosen)
        target = keras.Model(
            model_inputs[0] if len(model_inputs) == 1 else model_inputs,
            [layer.output for layer in layers.values()],
        )

    specs = [
        tf.TensorSpec([None, *t.shape[1:]], tf.as_dtype(t.dtype), name=name)
        for t, name in zip(model_inputs, names, strict=True)
    ]

    def serve(*tensors: Any) -> dict[str, Any]:
        result = target(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return {
            key: tf.cast(value, tf.float32) if value.dtype.is_floating else value
            for key, value in zip(keys, result, strict=True)
        }

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=specs)
    module.serving_variables = [v.value for v in target.variables]
    return module


def _endpoint_layer(model: Any, name: str) -> Any:
    """The layer whose output is end point ``name``.

    That is the layer of that name or, for an I3D unit (convolution, batch norm, ReLU:
    ``Conv3d_2c_3x3``), its ``<name>.relu`` layer.
    """
    names = [layer.name for layer in model.layers]
    for candidate in (name, f"{name}.relu"):
        if candidate in names:
            return model.get_layer(candidate)
    points = [n for n in names if "." not in n]
    points += [n[: -len(".relu")] for n in names if n.endswith(".relu") and n.count(".") == 1]
    raise BadInputError(
        f"No layer or end point {name!r} in model {model.name!r}; it has: {', '.join(points[:60])}"
    )


def _save_serving_module(module: Any, path: Path) -> None:
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


class ModelSerializer:
    """Save and load versions of a Keras model under a name.

    Parameters
    ----------
    model : keras.Model
        The model to save (compiled or not).
    model_name : str
        Its name in the registry (letters, digits, ``. _ + -``).

    Examples
    --------
    >>> ModelSerializer(model, "whisker-i3d").save_model("models", {"author": "me"})  # doctest: +SKIP
    >>> model, meta, version = ModelSerializer.load_latest_model("models", "whisker-i3d")  # doctest: +SKIP
    """

    def __init__(self, model: Any, model_name: str) -> None:
        self.model = model
        self.model_name = _check_name("Model name", model_name)

    # -- saving --------------------------------------------------------------------------------
    def save_model(
        self,
        base_dir: str | os.PathLike,
        metadata: dict | None = None,
        version: str | None = None,
        format: str = "keras",
    ) -> Path:
        """Write a new version of the model; an existing version is never overwritten.

        Parameters
        ----------
        base_dir : str or os.PathLike
            The registry folder (created if missing).
        metadata : dict, optional
            Fields to record (author, description, training_dataset, endpoint, preprocessing,
            anything else JSON can hold).
        version : str, optional
            The version's name; default a UTC timestamp with microseconds.
        format : {"keras", "h5", "savedmodel"}
            ``keras``: ``model.keras``; ``h5``: Keras' legacy ``model.h5``; ``savedmodel``: a
            TensorFlow SavedModel (``serving_default`` signature) plus the Keras architecture
            (see the module's docstring). All three keep the weights, the compile configuration
            and the optimizer state, and reload as the same Keras model.

        Returns
        -------
        Path
            The version's folder.

        Raises
        ------
        BadInputError
            An unknown format, or ``version`` exists already.
        UnsafePathError
            A version name that is not plain.
        """
        if format not in FORMATS:
            raise BadInputError(
                f"Unknown model format {format!r}; choose one of {', '.join(FORMATS)}"
            )
        root = ensure_output_dir(Path(base_dir) / self.model_name)
        _inside(Path(base_dir), root, f"Model folder {self.model_name}")
        explicit = version is not None
        version = _check_name("Version", version) if explicit else self._new_version(root)
        final = root / version
        if final.exists():
            raise BadInputError(f"Version {version} of {self.model_name} already exists: {final}")
        with atomic_directory(final) as tmp:
            _write_model(self.model, tmp, format)
            meta = self._metadata(metadata or {}, version, tmp, format)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        logger.info("Saved %s version %s (%s) in %s", self.model_name, version, format, final)
        return final

    @staticmethod
    def _new_version(root: Path) -> str:
        """A UTC timestamp with microseconds; a suffix keeps it unique within the same instant."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        version, n = stamp, 1
        while (root / version).exists():
            version = f"{stamp}-{n}"
            n += 1
        return version

    def _metadata(self, user: dict, version: str, folder: Path, fmt: str) -> dict[str, Any]:
        model = self.model
        files = _manifest(folder)
        weights_file = FORMATS[fmt]
        if fmt == "savedmodel":  # the first data shard holds the weights
            weights_file = min(f for f in files if f.startswith(f"{SAVED_MODEL_DIR}/variables/"))
        meta: dict[str, Any] = {
            "model_name": self.model_name,
            "version": version,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "author": user.get("author"),
            "description": user.get("description"),
            "training_dataset": user.get("training_dataset"),
            "framework_versions": _framework_versions(),
            "format": fmt,
            "input_spec": _input_spec(model),
            "output_shape": [None if d is None else int(d) for d in model.outputs[0].shape],
            "endpoint": user.get("endpoint", getattr(model.layers[-1], "name", None)),
            "preprocessing": user.get("preprocessing"),
            "has_optimizer_state": bool(_optimizer_variables(model)),
            "custom_objects": custom_object_names(model),
            "weights_file": weights_file,
            "weights_sha256": files[weights_file]["sha256"] if weights_file in files else "",
            "weights_bytes": files[weights_file]["bytes"] if weights_file in files else 0,
            "files": files,
        }
        if fmt == "savedmodel":
            meta["serving_signature"] = "serving_default"
        for key, value in user.items():
            meta.setdefault(key, value)
            if meta[key] is None:
                meta[key] = value
        return meta

    # -- listing and loading -------------------------------------------------------------------
    @staticmethod
    def list_available_versions(base_dir: str | os.PathLike, model_name: str) -> list[str]:
        """Complete versions of a model, oldest first (by creation time, then name).

        Temporary folders of unfinished saves are skipped; a version whose metadata cannot be read
        is reported, not skipped: the newest might be the corrupt one.

        Parameters
        ----------
        base_dir : str or os.PathLike
            The registry folder.
        model_name : str
            The model's name.

        Returns
        -------
        list of str
            Version names; empty if the model has none.

        Raises
        ------
        CorruptFileError
            A version's metadata cannot be read, or the model's entry is a file.
        """
        _check_name("Model name", model_name)
        base = Path(base_dir)
        root = base / model_name
        if root.exists() and not root.is_dir():
            raise CorruptFileError(f"Registry entry is a file, not a model folder: {root}")
        if not root.is_dir():
            return []
        _inside(base, root, f"Model folder {model_name}")
        found = []
        for entry in root.iterdir():
            if entry.name.startswith(".") or not _VERSION_RE.match(entry.name):
                continue
            meta = ModelSerializer.read_metadata(base, model_name, entry.name)
            created = meta.get("created_utc", "")
            found.append((created if isinstance(created, str) else "", entry.name))
        return [name for _, name in sorted(found)]

    @staticmethod
    def read_metadata(base_dir: str | os.PathLike, model_name: str, version: str) -> dict:
        """The metadata of one version, checked (see the module's docstring).

        Parameters
        ----------
        base_dir : str or os.PathLike
            The registry folder.
        model_name, version : str
            Which version.

        Returns
        -------
        dict
            The metadata as saved.

        Raises
        ------
        BadInputError
            No such version (the message lists the available ones).
        CorruptFileError
            Metadata missing, not JSON, or with fields of the wrong type.
        """
        folder = version_dir(base_dir, model_name, version)
        path = folder / METADATA_FILE
        if not folder.is_dir():
            others = [
                e.name
                for e in (Path(base_dir) / model_name).glob("*")
                if e.is_dir() and not e.name.startswith(".")
            ]
            raise BadInputError(
                f"No version {version!r} of model {model_name!r} in {base_dir} "
                f"(available: {', '.join(sorted(others)) or 'none'})"
            )
        if not path.is_file():
            raise CorruptFileError(f"Registry version has no {METADATA_FILE}: {folder}")
        _inside(folder, path, "Metadata file")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"Corrupt registry metadata ({exc}): {path}") from exc
        return _check_metadata(meta, path)

    @staticmethod
    def load_model(
        base_dir: str | os.PathLike,
        model_name: str,
        version: str,
        custom_objects: Mapping[str, Any] | None = None,
    ) -> tuple[Any, dict, str]:
        """Load one version, after checking every file against its recorded SHA-256.

        Parameters
        ----------
        base_dir : str or os.PathLike
            The registry folder.
        model_name, version : str
            Which version.
        custom_objects : mapping, optional
            Custom classes and functions the model needs that are not registered with
            ``keras.saving.register_keras_serializable``, by class name (or registered name).

        Returns
        -------
        tuple
            ``(model, metadata, version)``: a Keras model, compiled with its optimizer state when
            it was saved compiled.

        Raises
        ------
        CorruptFileError
            A file that does not match its checksum (tampered or truncated), an unrecorded file,
            or a model Keras cannot read.
        MissingCustomObjectError
            A custom object the model needs is not available (named in the message).
        UnsafePathError
            A name or recorded path leading outside the registry.
        """
        meta = ModelSerializer.read_metadata(base_dir, model_name, version)
        folder = version_dir(base_dir, model_name, version)
        fmt = meta.get("format") or (
            "h5" if meta.get("weights_file", "").endswith(".h5") else "keras"
        )
        _verify_files(folder, meta)
        resolved = _resolve_custom_objects(meta.get("custom_objects", []), custom_objects, folder)
        try:
            model = _load_files(folder, meta, fmt, resolved)
        except BadInputError:
            raise
        except Exception as exc:  # Keras and TensorFlow raise many types for unreadable files
            missing = _LOCATE_RE.search(str(exc))
            if missing:
                raise MissingCustomObjectError(
                    f"The model in {folder} needs the custom object {missing.group(1)!r}, which is "
                    "not registered: import the code that defines it, or pass it in "
                    "custom_objects"
                ) from exc
            raise CorruptFileError(
                f"Cannot load model ({type(exc).__name__}: {exc}): {folder}"
            ) from exc
        return model, meta, version

    @staticmethod
    def load_latest_model(
        base_dir: str | os.PathLike,
        model_name: str,
        custom_objects: Mapping[str, Any] | None = None,
    ) -> tuple[Any, dict, str]:
        """The newest version of a model.

        Parameters
        ----------
        base_dir : str or os.PathLike
            The registry folder.
        model_name : str
            The model's name.
        custom_objects : mapping, optional
            As for :meth:`load_model`.

        Returns
        -------
        tuple
            ``(model, metadata, version)``.

        Raises
        ------
        BadInputError
            The model has no saved versions.
        """
        versions = ModelSerializer.list_available_versions(base_dir, model_name)
        if not versions:
            raise BadInputError(f"No saved versions of model {model_name!r} in {base_dir}")
        return ModelSerializer.load_model(base_dir, model_name, versions[-1], custom_objects)

    # -- export --------------------------------------------------------------------------------
    @staticmethod
    def export_for_inference(
        model: Any,
        export_dir: str | os.PathLike,
        inputs: str | Sequence[str] | None = None,
        endpoints: Sequence[str] | Mapping[str, str] | None = None,
    ) -> Path:
        """Write a TensorFlow SavedModel with a ``serving_default`` signature, atomically.

        Parameters
        ----------
        model : keras.Model
            The model to export.
        export_dir : str or os.PathLike
            Where to write it; must not exist.
        inputs : str or sequence of str, optional
            Names of the signature's inputs, one per model input in order. Default ``flow`` for a
            single-input model (float32 ``[None, None, None, None, C]`` for the I3D), else the
            Keras input names.
        endpoints : sequence of str or mapping, optional
            Layers whose outputs the signature returns, one call computing them all: a list of
            layer names (``["Mixed_3c", "Mixed_5c"]``; each output is named after its layer) or a
            mapping ``{output name: layer name}``. Default: the model's output, named
            ``features``. Floating outputs are cast to float32.

        Returns
        -------
        Path
            ``export_dir``. ``tf.saved_model.load(export_dir).signatures["serving_default"]``
            takes the inputs as keyword arguments and returns a dict of the outputs.

        Raises
        ------
        BadInputError
            ``export_dir`` exists, an input or output name is not an identifier, the number of
            input names differs from the model's inputs, or an end point names no layer.
        """
        export_dir = Path(export_dir)
        if export_dir.exists():
            raise BadInputError(f"Export folder already exists: {export_dir}")
        module = _serving_module(model, inputs, endpoints)
        with atomic_directory(export_dir) as tmp:
            _save_serving_module(module, tmp)
        logger.info("Exported a SavedModel to %s", export_dir)
        return export_dir


def _load_files(folder: Path, meta: dict[str, Any], fmt: str, custom: dict[str, Any]) -> Any:
    """The Keras model of a verified version folder."""
    import keras

    if fmt == "h5":
        return _load_h5(folder, custom)
    if fmt == "savedmodel":
        return _load_savedmodel(folder, custom)
    path = _inside(folder, folder / meta.get("weights_file", MODEL_FILE), "Model file")
    return keras.models.load_model(path, safe_mode=True, compile=True, custom_objects=custom)
