"""ModelSerializer: versions, metadata, checksums, atomic saves, SavedModel export."""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError, CorruptFileError
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.model.i3d import build_i3d
from napari_flow_features.model.registry import (
    FORMATS,
    MissingCustomObjectError,
    ModelSerializer,
    sha256_file,
)

CLIP = np.random.default_rng(0).uniform(-1, 1, (1, 4, 16, 16, 2)).astype(np.float32)
BATCH = np.random.default_rng(1).normal(size=(2, 4, 8, 8, 2)).astype(np.float32)
TARGET = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)
FORMAT_NAMES = sorted(FORMATS)


@functools.cache  # Keras refuses to register a name twice
def _custom_layers():
    """A layer registered with Keras (``nff_test>Scale``) and one that is not (``Shift``)."""
    import keras

    @keras.saving.register_keras_serializable(package="nff_test")
    class Scale(keras.layers.Layer):
        def __init__(self, init: float = 1.5, **kwargs):
            super().__init__(**kwargs)
            self.init = init

        def build(self, shape):
            self.scale = self.add_weight(
                shape=(shape[-1],), initializer=keras.initializers.Constant(self.init), name="s"
            )

        def call(self, x):
            return x * self.scale

        def get_config(self):
            return {**super().get_config(), "init": self.init}

    class Shift(keras.layers.Layer):
        def build(self, shape):
            self.shift = self.add_weight(shape=(shape[-1],), initializer="ones", name="b")

        def call(self, x):
            return x + self.shift

    return Scale, Shift


def _trained_custom_model():
    """A compiled model with both custom layers, trained one step (optimizer state not trivial)."""
    import keras

    Scale, Shift = _custom_layers()
    keras.utils.set_random_seed(0)
    clip = keras.Input((None, None, None, 2), name="clip")
    x = keras.layers.Conv3D(3, 3, padding="same", name="conv")(clip)
    x = Scale(name="scale")(x)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = Shift(name="shift")(x)
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    model = keras.Model(clip, x, name="custom")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.train_on_batch(BATCH, TARGET)
    return model, Shift


def _values(variables):
    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


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


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_crash_mid_save_leaves_no_version(tmp_path, small_model, monkeypatch, fmt):
    import tensorflow as tf
    from keras.src.legacy.saving import legacy_h5_format

    ser = ModelSerializer(small_model, "m")
    real_save = tf.saved_model.save

    def crash(*args, **kwargs):
        if fmt == "savedmodel":
            real_save(*args, **kwargs)  # a complete SavedModel, then death before the rest
        raise RuntimeError("killed while writing")

    if fmt == "keras":
        monkeypatch.setattr(small_model, "save", crash)
    elif fmt == "h5":  # the .h5 is open and half written when the writer dies
        monkeypatch.setattr(legacy_h5_format, "save_weights_to_hdf5_group", crash)
    else:
        monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ser.save_model(tmp_path, version="v1", format=fmt)
    monkeypatch.undo()
    assert ModelSerializer.list_available_versions(tmp_path, "m") == []
    assert os.listdir(tmp_path / "m") == []


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


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_every_format_round_trips_the_i3d_exactly(tmp_path, small_model, fmt):
    folder = ModelSerializer(small_model, "i3d").save_model(tmp_path, version="v1", format=fmt)
    model, meta, _ = ModelSerializer.load_model(tmp_path, "i3d", "v1")
    assert meta["format"] == fmt and meta["custom_objects"] == []
    np.testing.assert_array_equal(np.asarray(model(CLIP)), np.asarray(small_model(CLIP)))
    assert [v.path for v in model.variables] == [v.path for v in small_model.variables]
    # Every file written is checksummed in the metadata.
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(meta["files"]) == [f for f in written if f != "metadata.json"]
    for rel, entry in meta["files"].items():
        assert entry["sha256"] == sha256_file(folder / rel)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_custom_layers_and_optimizer_state_survive_every_format(tmp_path, fmt):
    model, Shift = _trained_custom_model()
    ModelSerializer(model, "custom").save_model(tmp_path, version="v1", format=fmt)
    assert "optimizer" in model.get_compile_config()  # Keras' H5 writer used to pop it
    loaded, meta, _ = ModelSerializer.load_model(
        tmp_path, "custom", "v1", custom_objects={"Shift": Shift}
    )
    assert meta["custom_objects"] == ["Shift", "nff_test>Scale"]
    assert meta["has_optimizer_state"] is True
    assert type(loaded.get_layer("scale")).__name__ == "Scale"
    assert type(loaded.get_layer("shift")) is Shift
    np.testing.assert_array_equal(np.asarray(loaded(BATCH)), np.asarray(model(BATCH)))
    # The optimizer is the same Adam with the same step count and moments.
    assert type(loaded.optimizer).__name__ == "Adam"
    assert [v.path for v in loaded.optimizer.variables] == [
        v.path for v in model.optimizer.variables
    ]
    assert int(loaded.optimizer.iterations.numpy()) == 1
    for mine, theirs in zip(
        _values(loaded.optimizer.variables), _values(model.optimizer.variables), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
    # One more training step from the loaded model equals one from the original.
    loss_loaded = loaded.train_on_batch(BATCH, TARGET)
    loss_original = model.train_on_batch(BATCH, TARGET)
    assert loss_loaded == loss_original
    for mine, theirs in zip(_values(loaded.variables), _values(model.variables), strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.fixture(scope="module")
def custom_model():
    """A trained model with custom layers that tests only read (save and compare)."""
    return _trained_custom_model()


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_loading_without_a_custom_layer_names_it(tmp_path, fmt, monkeypatch, custom_model):
    import keras

    model, Shift = custom_model
    ModelSerializer(model, "custom").save_model(tmp_path, version="v1", format=fmt)
    with pytest.raises(MissingCustomObjectError, match=r"Shift.*custom_objects="):
        ModelSerializer.load_model(tmp_path, "custom", "v1")
    monkeypatch.delitem(keras.saving.get_custom_objects(), "nff_test>Scale")
    with pytest.raises(MissingCustomObjectError, match=r"nff_test>Scale") as info:
        ModelSerializer.load_model(tmp_path, "custom", "v1", custom_objects={"Shift": Shift})
    assert "Shift" not in str(info.value)
    # Passing the registered class by its plain name is enough.
    Scale = type(model.get_layer("scale"))
    loaded, _, _ = ModelSerializer.load_latest_model(
        tmp_path, "custom", custom_objects={"Shift": Shift, "Scale": Scale}
    )
    np.testing.assert_array_equal(np.asarray(loaded(BATCH)), np.asarray(model(BATCH)))


def test_metadata_without_custom_names_still_gives_a_named_error(tmp_path, custom_model):
    """Versions saved before the metadata listed custom objects: Keras' own error, translated."""
    model, _ = custom_model
    folder = ModelSerializer(model, "custom").save_model(tmp_path, version="v1")
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["custom_objects"]
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(MissingCustomObjectError, match="Shift"):
        ModelSerializer.load_model(tmp_path, "custom", "v1")


@pytest.mark.parametrize(
    ("fmt", "target"),
    [
        ("h5", "model.h5"),
        ("savedmodel", "saved_model/variables/variables.data-00000-of-00001"),
        ("savedmodel", "saved_model/saved_model.pb"),
        ("savedmodel", "keras_config.json"),
    ],
)
def test_tampered_files_of_every_format_are_refused(tmp_path, small_model, fmt, target):
    folder = ModelSerializer(small_model, "m").save_model(tmp_path, version="v1", format=fmt)
    _flip_byte(folder / target)
    with pytest.raises(CorruptFileError, match=r"tampered or truncated.*" + target.split("/")[-1]):
        ModelSerializer.load_model(tmp_path, "m", "v1")


def test_an_added_or_removed_file_is_refused(tmp_path, small_model):
    folder = ModelSerializer(small_model, "m").save_model(
        tmp_path, version="v1", format="savedmodel"
    )
    (folder / "saved_model" / "assets" / "extra.txt").write_text("not saved by the registry")
    with pytest.raises(CorruptFileError, match=r"not recorded.*extra.txt"):
        ModelSerializer.load_model(tmp_path, "m", "v1")
    (folder / "saved_model" / "assets" / "extra.txt").unlink()
    (folder / "saved_model" / "variables" / "variables.index").unlink()
    with pytest.raises(BadInputError, match=r"missing.*variables.index"):
        ModelSerializer.load_model(tmp_path, "m", "v1")


def test_unknown_format_is_refused(tmp_path, small_model):
    with pytest.raises(BadInputError, match=r"Unknown model format 'onnx'.*h5"):
        ModelSerializer(small_model, "m").save_model(tmp_path, format="onnx")
    assert not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []


def test_registry_savedmodel_serves_without_keras_objects(tmp_path, small_model):
    import tensorflow as tf

    folder = ModelSerializer(small_model, "m").save_model(
        tmp_path, version="v1", format="savedmodel"
    )
    serve = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    np.testing.assert_allclose(
        serve(flow=tf.constant(CLIP))["features"].numpy(), np.asarray(small_model(CLIP)), rtol=1e-6
    )


def test_export_signature_returns_the_chosen_end_points(tmp_path):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = build_i3d(2, "Mixed_5c")
    clip = np.random.default_rng(4).uniform(-1, 1, (1, 8, 32, 32, 2)).astype(np.float32)
    out = ModelSerializer.export_for_inference(
        model, tmp_path / "export", inputs="motion", endpoints=["Mixed_3c", "Mixed_5c"]
    )
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    spec = serve.structured_input_signature[1]
    assert list(spec) == ["motion"] and spec["motion"].shape.as_list() == [None] * 4 + [2]
    assert sorted(serve.structured_outputs) == ["Mixed_3c", "Mixed_5c"]
    got = serve(motion=tf.constant(clip))
    inner = keras.Model(model.input, [model.get_layer(n).output for n in ("Mixed_3c", "Mixed_5c")])
    want = [np.asarray(t) for t in inner(clip)]
    assert got["Mixed_3c"].shape == (1, 4, 4, 4, 480) and got["Mixed_5c"].shape == (
        1,
        1,
        1,
        1,
        1024,
    )
    for name, expected in zip(("Mixed_3c", "Mixed_5c"), want, strict=True):
        # Equal here (0.0); graph and eager execution may fuse ops differently on other CPUs.
        error = np.linalg.norm(got[name].numpy() - expected) / np.linalg.norm(expected)
        assert error <= 1e-6, (name, error)
    np.testing.assert_array_equal(want[1], np.asarray(model(clip)))  # the last one is the model's


def test_export_names_outputs_and_refuses_bad_requests(tmp_path, small_model):
    import keras
    import tensorflow as tf

    out = ModelSerializer.export_for_inference(
        small_model, tmp_path / "e", endpoints={"stem": "Conv3d_1a_7x7"}
    )
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    stem = keras.Model(small_model.input, small_model.get_layer("Conv3d_1a_7x7.relu").output)
    assert list(serve.structured_outputs) == ["stem"]
    np.testing.assert_allclose(
        serve(flow=tf.constant(CLIP))["stem"].numpy(), np.asarray(stem(CLIP)), rtol=1e-6
    )
    with pytest.raises(BadInputError, match=r"No layer or end point 'Mixed_9z'.*Conv3d_1a_7x7"):
        ModelSerializer.export_for_inference(small_model, tmp_path / "x", endpoints=["Mixed_9z"])
    with pytest.raises(BadInputError, match="Input name '2 flow'"):
        ModelSerializer.export_for_inference(small_model, tmp_path / "x", inputs="2 flow")
    with pytest.raises(BadInputError, match="takes 1 input"):
        ModelSerializer.export_for_inference(small_model, tmp_path / "x", inputs=["a", "b"])
    assert not (tmp_path / "x").exists()


def test_training_checkpoints_use_the_chosen_format(tmp_path, custom_model):
    from napari_flow_features.model.training import _registry_checkpoint, train_classifier

    class _Extractor:  # what the callback reads from an extractor: its description
        def describe(self):
            return {"endpoint": "custom"}

    saved: list[str] = []
    callback = _registry_checkpoint((tmp_path, "clf"), ["a", "b"], _Extractor(), saved, "h5")
    callback.set_model(custom_model[0])
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    callback.on_epoch_end(1, {"val_accuracy": 0.4})  # not better: not saved
    assert len(saved) == 1
    meta = ModelSerializer.read_metadata(tmp_path, "clf", saved[0])
    assert meta["format"] == "h5" and meta["classes"] == ["a", "b"] and meta["epoch"] == 1
    with pytest.raises(BadInputError, match="Unknown registry format 'onnx'"):
        train_classifier(_Extractor(), tmp_path / "no-data", registry_format="onnx")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_compiled_model_never_trained_keeps_its_optimizer(tmp_path, fmt):
    """Its optimizer has no slots yet (step count and learning rate only); loading builds them."""
    import keras

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="seq")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    ModelSerializer(model, "fresh").save_model(tmp_path, version="v1", format=fmt)
    loaded, _, _ = ModelSerializer.load_model(tmp_path, "fresh", "v1")
    assert type(loaded.optimizer).__name__ == "SGD" and int(loaded.optimizer.iterations) == 0
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    assert loaded.train_on_batch(x, y) == model.train_on_batch(x, y)
    for mine, theirs in zip(_values(loaded.variables), _values(model.variables), strict=True):
        np.testing.assert_array_equal(mine, theirs)
