"""ModelSerializer: versions, metadata, checksums, atomic saves, SavedModel export."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.model.i3d import build_i3d
from napari_flow_features.model.registry import ModelSerializer, sha256_file

CLIP = np.random.default_rng(0).uniform(-1, 1, (1, 4, 16, 16, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def small_model():
    import keras

    keras.utils.set_random_seed(0)
    return build_i3d(2, "Conv3d_2b_1x1")


def test_save_list_load_round_trip(tmp_path, small_model):
    ser = ModelSerializer(small_model, "whisker-i3d")
    folder = ser.save_model(
        tmp_path, {"author": "lab", "description": "test", "training_dataset": "none"}
    )
    version = folder.name
    assert ModelSerializer.list_available_versions(tmp_path, "whisker-i3d") == [version]
    model, meta, v = ModelSerializer.load_latest_model(tmp_path, "whisker-i3d")
    assert v == version
    np.testing.assert_allclose(np.asarray(model(CLIP)), np.asarray(small_model(CLIP)), rtol=1e-6)
    for key in ("author", "description", "training_dataset", "created_utc", "version",
                "framework_versions", "input_spec", "endpoint", "weights_sha256"):  # fmt: skip
        assert meta[key] is not None, key
    assert meta["input_spec"]["shape"] == [None, None, None, None, 2]
    assert meta["weights_sha256"] == sha256_file(folder / "model.keras")
    assert meta["framework_versions"]["tensorflow"]


def test_versions_are_unique_and_ordered(tmp_path, small_model):
    ser = ModelSerializer(small_model, "m")
    made = [ser.save_model(tmp_path).name for _ in range(3)]  # same second, distinct versions
    assert len(set(made)) == 3
    assert ModelSerializer.list_available_versions(tmp_path, "m") == made
    assert ModelSerializer.load_latest_model(tmp_path, "m")[2] == made[-1]


def test_explicit_version_is_never_overwritten(tmp_path, small_model):
    ser = ModelSerializer(small_model, "m")
    ser.save_model(tmp_path, version="v1")
    before = sha256_file(tmp_path / "m" / "v1" / "model.keras")
    with pytest.raises(BadInputError, match="already exists"):
        ser.save_model(tmp_path, version="v1")
    assert sha256_file(tmp_path / "m" / "v1" / "model.keras") == before
    with pytest.raises(BadInputError, match="Version"):
        ser.save_model(tmp_path, version="../escape")


def test_tampered_and_truncated_files_are_refused(tmp_path, small_model):
    folder = ModelSerializer(small_model, "m").save_model(tmp_path, version="v1")
    path = folder / "model.keras"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="tampered or truncated"):
        ModelSerializer.load_model(tmp_path, "m", "v1")
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(BadInputError, match="SHA-256"):
        ModelSerializer.load_model(tmp_path, "m", "v1")
    with pytest.raises(BadInputError, match=r"No version 'v9'.*available: v1"):
        ModelSerializer.load_model(tmp_path, "m", "v9")
    with pytest.raises(BadInputError, match="No saved versions"):
        ModelSerializer.load_latest_model(tmp_path, "other")


def test_a_crash_mid_save_leaves_no_version(tmp_path, small_model, monkeypatch):
    ser = ModelSerializer(small_model, "m")

    def crash(*args, **kwargs):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(small_model, "save", crash)
    with pytest.raises(RuntimeError):
        ser.save_model(tmp_path, version="v1")
    monkeypatch.undo()
    assert ModelSerializer.list_available_versions(tmp_path, "m") == []
    assert os.listdir(tmp_path / "m") == []


def test_optimizer_state_is_kept(tmp_path):
    import keras

    model = build_i3d(2, "Conv3d_1a_7x7")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(CLIP[:, :, :8, :8], np.zeros((1, 2, 4, 4, 64), np.float32), epochs=1, verbose=0)
    ModelSerializer(model, "trained").save_model(tmp_path, version="v1")
    loaded, meta, _ = ModelSerializer.load_model(tmp_path, "trained", "v1")
    assert meta["has_optimizer_state"] is True
    assert int(loaded.optimizer.iterations.numpy()) == 1


def test_export_for_inference(tmp_path, small_model):
    import tensorflow as tf

    out = ModelSerializer.export_for_inference(small_model, tmp_path / "export")
    loaded = tf.saved_model.load(str(out))
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["flow"]
    assert spec.shape.as_list() == [None, None, None, None, 2] and spec.dtype == tf.float32
    np.testing.assert_allclose(
        serve(flow=tf.constant(CLIP))["features"].numpy(), np.asarray(small_model(CLIP)), rtol=1e-6
    )
    with pytest.raises(BadInputError, match="already exists"):
        ModelSerializer.export_for_inference(small_model, out)


def test_extractor_saves_and_loads_through_the_registry(tmp_path):
    ext = DynamicFeatureExtractor(endpoint="Conv3d_2b_1x1", clip_length=4, weights={"seed": 7})
    folder = ext.save_model_with_serializer(tmp_path, {"model_name": "whisker", "author": "lab"})
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["endpoint"] == "Conv3d_2b_1x1" and meta["preprocessing"]["clip_length"] == 4
    again = DynamicFeatureExtractor(
        endpoint="Conv3d_2b_1x1", clip_length=4,
        weights={"source": "registry", "registry_dir": str(tmp_path), "model_name": "whisker"},
    )  # fmt: skip
    assert again.registry_version == folder.name
    np.testing.assert_allclose(again.extract_features(CLIP), ext.extract_features(CLIP), rtol=1e-6)
    with pytest.raises(BadInputError, match="2 input channels, the config says 3"):
        DynamicFeatureExtractor(
            in_channels=3,
            weights={"source": "registry", "registry_dir": str(tmp_path), "model_name": "whisker"},
        )


def test_run_metadata_describes_the_loaded_model(tmp_path):
    """A Mixed_3c model loaded with the default config (Mixed_5c) is described as what it is:
    480 channels at Mixed_3c, with the version and checksum that were loaded."""
    saved = DynamicFeatureExtractor(endpoint="Mixed_3c").save_model_with_serializer(
        tmp_path, {"model_name": "small"}
    )
    meta = json.loads((saved / "metadata.json").read_text())
    extractor = DynamicFeatureExtractor(
        weights={"source": "registry", "registry_dir": str(tmp_path), "model_name": "small"}
    )
    described = extractor.describe()
    assert described["endpoint"] == "Mixed_3c" and described["channels"] == 480
    assert described["endpoint_strides"] == [2, 8]
    loaded = described["loaded_model"]
    assert loaded["version"] == saved.name == described["registry_version"]
    assert loaded["weights_sha256"] == meta["weights_sha256"] == sha256_file(saved / "model.keras")
    assert loaded["config_endpoint"] == "Mixed_5c"
    maps = extractor.extract_features(CLIP)
    assert maps.shape[-1] == described["channels"]


def test_loads_validate_names_like_saves(tmp_path, small_model):
    from napari_flow_features.errors import CorruptFileError, UnsafePathError

    ModelSerializer(small_model, "m").save_model(tmp_path / "reg", version="v1")
    (tmp_path / "elsewhere" / "v1").mkdir(parents=True)
    for f in ("model.keras", "metadata.json"):
        (tmp_path / "elsewhere" / "v1" / f).write_bytes(
            (tmp_path / "reg" / "m" / "v1" / f).read_bytes()
        )
    with pytest.raises(UnsafePathError, match="Model name"):
        ModelSerializer.load_model(tmp_path / "reg", "../elsewhere", "v1")
    with pytest.raises(UnsafePathError, match="Version"):
        ModelSerializer.load_model(tmp_path / "reg", "m", "../../elsewhere/v1")
    (tmp_path / "reg" / "m" / "v2").symlink_to(tmp_path / "elsewhere" / "v1")
    with pytest.raises(UnsafePathError, match="outside the registry"):
        ModelSerializer.load_model(tmp_path / "reg", "m", "v2")
    (tmp_path / "reg" / "m" / "v2").unlink()
    (tmp_path / "reg" / "m" / "v1" / "metadata.json").write_text("{truncated")
    with pytest.raises(CorruptFileError, match="Corrupt registry metadata"):
        ModelSerializer.load_latest_model(tmp_path / "reg", "m")
