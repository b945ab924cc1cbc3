"""Inference runtimes: OpenVINO equals the Keras model, its compiled model is cached, bf16 rules."""

from __future__ import annotations

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.model import runtime
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.model.i3d import build_i3d

openvino = pytest.importorskip("openvino")


@pytest.mark.parametrize("endpoint", ["Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f"])
def test_openvino_equals_keras_at_three_end_points(endpoint, tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    model = build_i3d(2, endpoint)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 16, 48, 64, 2)).astype(np.float32)
    keras_out = np.asarray(model(x, training=False))
    ov_out = runtime.OpenVINOEncoder(model, cache_dir=tmp_path)(x)
    assert ov_out.shape == keras_out.shape
    rel = np.linalg.norm(ov_out - keras_out) / np.linalg.norm(keras_out)
    assert rel <= 1e-5, f"relative L2 {rel:.2e} at {endpoint}"


def test_compiled_model_is_cached_by_weights_and_shape(tmp_path):
    import keras

    keras.utils.set_random_seed(2)
    model = build_i3d(2, "Mixed_3b")
    x = np.zeros((1, 8, 32, 32, 2), np.float32)
    first = runtime.OpenVINOEncoder(model, cache_dir=tmp_path)
    first(x)
    assert first.converted and len(list(tmp_path.glob("*/model.xml"))) == 1
    second = runtime.OpenVINOEncoder(model, cache_dir=tmp_path)
    second(x)
    assert not second.converted  # read from the disk cache
    second(np.zeros((1, 8, 40, 32, 2), np.float32))  # another shape: another entry
    assert len(list(tmp_path.glob("*/model.xml"))) == 2
    model.get_layer("Conv3d_1a_7x7.conv_3d").kernel.assign(
        np.ones(model.get_layer("Conv3d_1a_7x7.conv_3d").kernel.shape, np.float32)
    )
    changed = runtime.OpenVINOEncoder(model, cache_dir=tmp_path)
    changed(x)
    assert changed.converted  # new weights, new key
    assert not list(tmp_path.glob(".*partial*"))


def test_extractor_uses_the_chosen_runtime():
    ext = DynamicFeatureExtractor(endpoint="Conv3d_2b_1x1", runtime="auto")
    ext.encode(np.zeros((1, 8, 16, 16, 2), np.float32))
    assert ext.describe()["runtime_used"] == "openvino"
    tf_ext = DynamicFeatureExtractor(endpoint="Conv3d_2b_1x1", runtime="tensorflow")
    tf_ext.encode(np.zeros((1, 8, 16, 16, 2), np.float32))
    assert tf_ext.describe()["runtime_used"] == "tensorflow"
    with pytest.raises(BadInputError, match="runtime must be one of"):
        DynamicFeatureExtractor(runtime="tensorrt")


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(
        runtime, "cpu_info", lambda: {"name": "Test CPU", "flags": ["avx2", "fma"], "cores": 2}
    )
    assert not runtime.native_bf16()
    with pytest.raises(BadInputError, match=r"native bfloat16.*Test CPU.*13x slower"):
        DynamicFeatureExtractor(precision="mixed_bfloat16")
    monkeypatch.setattr(
        runtime, "cpu_info", lambda: {"name": "BF16 CPU", "flags": ["avx512_bf16"], "cores": 2}
    )
    assert runtime.native_bf16()
    runtime.check_precision("mixed_bfloat16")  # allowed where the CPU has it
