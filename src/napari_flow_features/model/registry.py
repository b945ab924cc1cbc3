"""``ModelSerializer``: a versioned model registry on disk.

Layout: ``base_dir/<model_name>/<version>/`` holding ``model.keras`` (Keras format, optimizer state
included when the model was compiled) and ``metadata.json`` (who, what, when, framework versions,
input spec, end point, preprocessing, and the SHA-256 of ``model.keras``). A version is written in a
hidden temporary folder (``io/_atomic.py``'s ``atomic_directory``: flushed, then renamed), so a crash
never leaves a listed version behind.

Loading trusts nothing it reads: model names and versions are checked as on save, every path is
resolved and must stay inside the registry folder (``..``, absolute paths and symbolic links pointing
elsewhere are refused with :class:`UnsafePathError`), a metadata file that is not a JSON object with
the expected fields is reported as corrupt (:class:`CorruptFileError`), and the model file must match
its recorded SHA-256 before Keras (safe mode) opens it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..errors import BadInputError, CorruptFileError, UnsafePathError
from ..io._atomic import atomic_directory, ensure_output_dir, sha256_file

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def _framework_versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    from .. import __version__

    return {
        "napari_flow_features": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": numpy.__version__,
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
    """The folder of one version, checked: valid names, and inside ``base_dir`` once resolved."""
    _check_name("Model name", model_name)
    _check_name("Version", version)
    base = Path(base_dir)
    return _inside(base, base / model_name / version, f"Version {model_name}/{version}")


_META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model_name": str,
    "version": str,
    "created_utc": str,
    "weights_file": str,
    "weights_sha256": str,
    "weights_bytes": int,
    "endpoint": (str, type(None)),
    "classes": list,
    "extractor_config": dict,
}


def _check_metadata(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise CorruptFileError(
            f"Corrupt registry metadata: a JSON object of fields expected, found "
            f"{type(meta).__name__}: {path}"
        )
    for key in ("weights_sha256",):
        if key not in meta:
            raise CorruptFileError(f"Corrupt registry metadata: no {key!r} field: {path}")
    for key, kind in _META_FIELDS.items():
        if key in meta and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            raise CorruptFileError(
                f"Corrupt registry metadata: field {key!r} has the wrong type "
                f"({type(meta[key]).__name__}): {path}"
            )
    return meta


class ModelSerializer:
    """Save and load versions of a Keras model under a name.

    >>> ModelSerializer(model, "whisker-i3d").save_model("models", {"author": "me"})  # doctest: +SKIP
    >>> model, meta, version = ModelSerializer.load_latest_model("models", "whisker-i3d")  # doctest: +SKIP
    """

    def __init__(self, model: Any, model_name: str) -> None:
        self.model = model
        self.model_name = _check_name("Model name", model_name)

    # -- saving --------------------------------------------------------------------------------
    def save_model(
        self, base_dir: str | os.PathLike, metadata: dict | None = None, version: str | None = None
    ) -> Path:
        """Write a new version; returns its folder. An existing version is never overwritten."""
        root = ensure_output_dir(Path(base_dir) / self.model_name)
        _inside(Path(base_dir), root, f"Model folder {self.model_name}")
        explicit = version is not None
        version = _check_name("Version", version) if explicit else self._new_version(root)
        final = root / version
        if final.exists():
            raise BadInputError(f"Version {version} of {self.model_name} already exists: {final}")
        with atomic_directory(final) as tmp:
            model_path = tmp / MODEL_FILE
            self.model.save(model_path)
            meta = self._metadata(metadata or {}, version, model_path)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
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

    def _metadata(self, user: dict, version: str, model_path: Path) -> dict[str, Any]:
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        meta: dict[str, Any] = {
            "model_name": self.model_name,
            "version": version,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "author": user.get("author"),
            "description": user.get("description"),
            "training_dataset": user.get("training_dataset"),
            "framework_versions": _framework_versions(),
            "input_spec": _input_spec(model),
            "output_shape": [None if d is None else int(d) for d in model.outputs[0].shape],
            "endpoint": user.get("endpoint", getattr(model.layers[-1], "name", None)),
            "preprocessing": user.get("preprocessing"),
            "has_optimizer_state": optimizer is not None
            and bool(getattr(optimizer, "variables", [])),
            "weights_file": MODEL_FILE,
            "weights_sha256": sha256_file(model_path),
            "weights_bytes": model_path.stat().st_size,
        }
        for key, value in user.items():
            meta.setdefault(key, value)
            if meta[key] is None:
                meta[key] = value
        return meta

    # -- listing and loading -------------------------------------------------------------------
    @staticmethod
    def list_available_versions(base_dir: str | os.PathLike, model_name: str) -> list[str]:
        """Complete versions of ``model_name``, oldest first (by creation time, then name).

        Temporary folders of unfinished saves are skipped; a version whose metadata cannot be read
        is reported (:class:`CorruptFileError`), not skipped: the newest might be the corrupt one.
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
        """The metadata of one version, checked (see the module's docstring)."""
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
        base_dir: str | os.PathLike, model_name: str, version: str
    ) -> tuple[Any, dict, str]:
        """``(model, metadata, version)``; refuses a file whose checksum does not match."""
        import keras

        meta = ModelSerializer.read_metadata(base_dir, model_name, version)
        folder = version_dir(base_dir, model_name, version)
        weights_file = meta.get("weights_file", MODEL_FILE)
        model_path = _inside(folder, folder / weights_file, f"Model file {weights_file!r}")
        if not model_path.is_file():
            raise BadInputError(f"Model file missing from the registry: {model_path}")
        actual = sha256_file(model_path)
        if actual != meta.get("weights_sha256"):
            raise CorruptFileError(
                f"Model file does not match its recorded SHA-256 (tampered or truncated; recorded "
                f"{meta.get('weights_sha256')}, found {actual}): {model_path}"
            )
        try:
            model = keras.models.load_model(model_path, safe_mode=True, compile=True)
        except Exception as exc:  # Keras raises many types for unreadable archives
            raise CorruptFileError(
                f"Cannot load model ({type(exc).__name__}: {exc}): {model_path}"
            ) from exc
        return model, meta, version

    @staticmethod
    def load_latest_model(base_dir: str | os.PathLike, model_name: str) -> tuple[Any, dict, str]:
        """The newest version of ``model_name``."""
        versions = ModelSerializer.list_available_versions(base_dir, model_name)
        if not versions:
            raise BadInputError(f"No saved versions of model {model_name!r} in {base_dir}")
        return ModelSerializer.load_model(base_dir, model_name, versions[-1])

    # -- export --------------------------------------------------------------------------------
    @staticmethod
    def export_for_inference(model: Any, export_dir: str | os.PathLike) -> Path:
        """A TensorFlow SavedModel with serving signature ``serving_default(flow)``: input ``flow``
        float32 ``[None, None, None, None, C]``, output ``features``. Written atomically.
        """
        import tensorflow as tf

        export_dir = Path(export_dir)
        if export_dir.exists():
            raise BadInputError(f"Export folder already exists: {export_dir}")
        channels = int(model.inputs[0].shape[-1])

        class _Serving(tf.Module):
            def __init__(self, keras_model: Any) -> None:
                super().__init__()
                self.keras_model = keras_model

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, None, None, None, channels], tf.float32, name="flow")
                ]
            )
            def serve(self, flow: Any) -> dict[str, Any]:
                return {"features": tf.cast(self.keras_model(flow, training=False), tf.float32)}

        module = _Serving(model)
        with atomic_directory(export_dir) as tmp:
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        return export_dir
