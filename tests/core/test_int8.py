"""precision int8 (issue 23): NNCF-quantised OpenVINO encoder, calibrated on the run's own clips."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

from napari_flow_features.config import ExtractorConfig
from napari_flow_features.errors import BadInputError
from napari_flow_features.model import runtime
from napari_flow_features.model.extractor import DynamicFeatureExtractor
from napari_flow_features.model.i3d import build_i3d

pytest.importorskip("openvino")
nncf_missing = importlib.util.find_spec("nncf") is None
needs_nncf = pytest.mark.skipif(nncf_missing, reason="nncf not installed (extra int8)")

#: Relative L2 of int8 to float32 measured on these clips (Mixed_3c, random weights, seed 3):
#: 0.011 (seeds 0 and 1); the bound leaves margin. It shows that quantisation ran and stayed close to float32,
#: not what int8 costs on real weights and frames (docs/performance.md, bench_encoder.py).
REL_L2_BOUND = 0.05


def clips(seed: int, shape=(1, 16, 40, 56, 2)) -> np.ndarray:
    """Smooth flow-like clips (quantisation ranges from them, like a real run's first chunk)."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(*(np.linspace(0, 1, n) for n in shape[1:4]), indexing="ij")
    base = np.stack([np.sin(3 * x + 2 * t), np.cos(2 * y - t)], axis=-1)
    noise = rng.normal(0, 0.1, shape)
    return np.clip(base[None] + noise, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(3)
    return build_i3d(2, "Mixed_3c")


@needs_nncf
def test_int8_is_close_to_float32_and_records_its_calibration(model, tmp_path):
    x = clips(0)
    f32 = runtime.OpenVINOEncoder(model, cache_dir=tmp_path)(x)
    encoder = runtime.make_encoder(model, "auto", "int8", tmp_path)
    out = encoder(x)
    assert out.shape == f32.shape and out.dtype == np.float32
    rel = np.linalg.norm(out - f32) / np.linalg.norm(f32)
    assert 0 < rel < REL_L2_BOUND, rel  # not float32 itself, and close to it
    (record,) = encoder.describe()["int8_calibration"]
    assert record["sha256"] == hashlib.sha256(x.tobytes()).hexdigest()
    assert record["input_shape"] == list(x.shape) and record["clips"] == 1
    assert "INT8" in encoder.describe()["int8_note"]


@needs_nncf
def test_int8_model_is_cached_by_calibration(model, tmp_path):
    x, other = clips(0), clips(1)
    first = runtime.OpenVINOEncoder(model, "int8", tmp_path)
    out = first(x)
    assert first.converted and len(list(tmp_path.glob("*/model.xml"))) == 2  # float32 + int8
    again = runtime.OpenVINOEncoder(model, "int8", tmp_path)
    np.testing.assert_array_equal(again(x), out)  # the cached int8 model
    assert not again.converted and len(list(tmp_path.glob("*/model.xml"))) == 2
    recal = runtime.OpenVINOEncoder(model, "int8", tmp_path)
    recal(other)  # another calibration: a new int8 entry from the cached float32 one
    assert not recal.converted and len(list(tmp_path.glob("*/model.xml"))) == 3
    # Later batches of a shape run the model calibrated on the first.
    np.testing.assert_array_equal(recal(x), recal(x))
    assert len(recal.describe()["int8_calibration"]) == 1


@needs_nncf
def test_extractor_tables_say_int8():
    ext = DynamicFeatureExtractor(endpoint="Mixed_3b", precision="int8")
    assert ext.model.dtype_policy.name == "float32"  # int8 quantises the float32 model
    ext.encode(clips(2, (1, 8, 32, 32, 2)))
    meta = ext.describe()
    assert meta["precision"] == "int8" and meta["runtime_used"] == "openvino"
    assert meta["int8_calibration"][0]["input_shape"] == [1, 8, 32, 32, 2]
    plain = DynamicFeatureExtractor(endpoint="Mixed_3b")
    plain.encode(clips(2, (1, 8, 32, 32, 2)))
    assert "int8_calibration" not in plain.describe()


def test_int8_refused_on_tensorflow_and_never_default():
    assert ExtractorConfig().precision == "float32"
    with pytest.raises(BadInputError, match="int8 runs on the openvino runtime only"):
        DynamicFeatureExtractor(endpoint="Mixed_3b", precision="int8", runtime="tensorflow")


def test_int8_without_nncf_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a)
    )
    with pytest.raises(BadInputError, match=r"needs nncf .*napari-flow-features\[int8\]"):
        DynamicFeatureExtractor(endpoint="Mixed_3b", precision="int8")


@needs_nncf
def test_int8_needs_calibration_clips_of_the_shape(model, tmp_path):
    encoder = runtime.OpenVINOEncoder(model, "int8", tmp_path)
    with pytest.raises(BadInputError, match="calibration clips of shape"):
        encoder.compiled_for((1, 16, 40, 56, 2))


@needs_nncf
def test_a_shape_met_again_keeps_its_first_calibration(model, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_SHAPES_KEPT", 1)  # every new shape drops the last one
    x, later = clips(0), clips(5)
    encoder = runtime.OpenVINOEncoder(model, "int8", tmp_path)
    encoder(x)
    encoder(clips(1, (1, 16, 32, 32, 2)))  # another shape: x's compiled model is dropped
    reference = runtime.OpenVINOEncoder(model, "int8", tmp_path)
    reference(x)  # calibrated on x, from the cache
    np.testing.assert_array_equal(encoder(later), reference(later))
    first = encoder.describe()["int8_calibration"][0]
    assert first["sha256"] == hashlib.sha256(x.tobytes()).hexdigest()


@needs_nncf
def test_extract_command_writes_int8_into_the_table(tmp_path):
    from conftest import moving_pattern

    from napari_flow_features.cli import main
    from napari_flow_features.io.tables import read_table
    from napari_flow_features.io.video import write_video

    video, config, out = tmp_path / "v.mp4", tmp_path / "int8.yaml", tmp_path / "f.parquet"
    write_video(video, moving_pattern(20, 40, 56), fps=25)
    config.write_text("precision: int8\nendpoint: Mixed_3b\n")
    assert main(["extract", str(video), "--config", str(config), "-o", str(out)]) == 0
    table = read_table(out)
    assert len(table) == 20
    meta = table.attrs
    assert meta["precision"] == "int8" and meta["int8_note"].startswith("INT8")
    (record,) = meta["int8_calibration"]
    assert record["input_shape"][0] == 1 and len(record["sha256"]) == 64
