"""``ModelSerializer``: a versioned model registry on disk.

Layout: ``base_dir/<model_name>/<version>/`` holding ``model.keras`` (Keras format, optimizer state
included when the model was compiled) and ``metadata.json`` (who, what, when, framework versions,
input spec, end point, preprocessing, and the SHA-256 of ``model.keras``). A version is written in a
hidden temporary folder and renamed into place, so a crash never leaves a listed version behind.
Loading verifies the checksum and uses Keras' safe mode.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..errors import BadInputError

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def _check_name(kind: str, value: str) -> str:
    if not _VERSION_RE.match(str(value)):
        raise BadInputError(
            f"{kind} {value!r} must start with a letter or digit and use only letters, digits, "
            "'.', '_', '+' or '-'"
        )
    return str(value)


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
        root = Path(base_dir) / self.model_name
        root.mkdir(parents=True, exist_ok=True)
        explicit = version is not None
        version = _check_name("Version", version) if explicit else self._new_version(root)
        final = root / version
        if final.exists():
            raise BadInputError(f"Version {version} of {self.model_name} already exists: {final}")
        tmp = root / f".partial-{version}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            model_path = tmp / MODEL_FILE
            self.model.save(model_path)
            meta = self._metadata(metadata or {}, version, model_path)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
            if final.exists():  # another process took the name meanwhile
                raise BadInputError(
                    f"Version {version} of {self.model_name} already exists: {final}"
                )
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
        """Complete versions of ``model_name``, oldest first (by creation time, then name)."""
        root = Path(base_dir) / model_name
        if not root.is_dir():
            return []
        found = []
        for entry in root.iterdir():
            meta_path = entry / METADATA_FILE
            if entry.name.startswith(".") or not meta_path.is_file():
                continue
            with contextlib.suppress(ValueError, OSError):
                meta = json.loads(meta_path.read_text())
                found.append((meta.get("created_utc", ""), entry.name))
        return [name for _, name in sorted(found)]

    @staticmethod
    def read_metadata(base_dir: str | os.PathLike, model_name: str, version: str) -> dict:
        """The metadata of one version."""
        path = Path(base_dir) / model_name / version / METADATA_FILE
        if not path.is_file():
            versions = ModelSerializer.list_available_versions(base_dir, model_name)
            raise BadInputError(
                f"No version {version!r} of model {model_name!r} in {base_dir} "
                f"(available: {', '.join(versions) or 'none'})"
            )
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise BadInputError(f"Corrupt registry metadata ({exc}): {path}") from exc

    @staticmethod
    def load_model(
        base_dir: str | os.PathLike, model_name: str, version: str
    ) -> tuple[Any, dict, str]:
        """``(model, metadata, version)``; refuses a file whose checksum does not match."""
        import keras

        meta = ModelSerializer.read_metadata(base_dir, model_name, version)
        model_path = Path(base_dir) / model_name / version / meta.get("weights_file", MODEL_FILE)
        if not model_path.is_file():
            raise BadInputError(f"Model file missing from the registry: {model_path}")
        actual = sha256_file(model_path)
        if actual != meta.get("weights_sha256"):
            raise BadInputError(
                f"Model file does not match its recorded SHA-256 (tampered or truncated; recorded "
                f"{meta.get('weights_sha256')}, found {actual}): {model_path}"
            )
        try:
            model = keras.models.load_model(model_path, safe_mode=True, compile=True)
        except Exception as exc:  # Keras raises many types for unreadable archives
            raise BadInputError(
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
        float32 ``[None, None, None, None, C]``, output ``features``. Written atomically."""
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
        tmp = export_dir.with_name(f".{export_dir.name}.partial-{secrets.token_hex(4)}")
        try:
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
            os.rename(tmp, export_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return export_dir
