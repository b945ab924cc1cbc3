"""DynamicFeatureExtractor: config, preprocessing, inference, weights, precision; Kinetics labels."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from napari_flow_features.errors import BadInputError
from napari_flow_features.flow.sequences import preprocess_flow
from napari_flow_features.model.extractor import (
    DynamicFeatureExtractor,
    default_config,
    load_config,
)
from napari_flow_features.model.i3d import build_i3d
from napari_flow_features.model.kinetics import kinetics_labels, predict_kinetics


def test_config_layers_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"endpoint": "Mixed_4f", "weights": {"seed": 3}}))
    cfg = load_config(path, clip_length=8)
    assert cfg["endpoint"] == "Mixed_4f" and cfg["clip_length"] == 8 and cfg["weights"]["seed"] == 3
    assert cfg["stride"] == 8  # untouched default
    with pytest.raises(BadInputError, match=r"Unknown config field 'clip_len'.*clip_length"):
        load_config(clip_len=8)
    with pytest.raises(BadInputError, match="Mixed_9"):
        load_config(endpoint="Mixed_9")
    with pytest.raises(BadInputError, match="stride"):
        load_config(stride=0)
    with pytest.raises(BadInputError, match="checkpoint is not set"):
        load_config(weights={"source": "deepmind"})
    path.write_text("endpoint: [unclosed")
    with pytest.raises(BadInputError, match="not valid YAML"):
        load_config(path)
    # load_config resolves the stream for a run; the defaults are the shipped ones.
    assert load_config()["stream"] == "flow" and default_config()["endpoint"] == "Mixed_5c"


@pytest.fixture(scope="module")
def small_extractor():
    return DynamicFeatureExtractor(endpoint="Mixed_4f", clip_length=8, stride=4, batch_size=2)


def test_preprocess_and_extract_shapes(small_extractor):
    flow = np.random.default_rng(0).normal(0, 8, (19, 48, 64, 2)).astype(np.float32)  # 20 frames
    clips = small_extractor.preprocess_flow_sequence(flow)
    assert clips.shape == (4, 8, 48, 64, 2)  # starts 0, 4, 8, 12
    np.testing.assert_allclose(clips[1], preprocess_flow(flow[4:12]))
    maps = small_extractor.extract_features(clips)
    assert maps.shape == (4, 2, 3, 4, 832) and maps.dtype == np.float32
    # Batching does not change results.
    np.testing.assert_allclose(
        small_extractor.extract_features(clips, batch_size=4), maps, rtol=1e-5, atol=1e-5
    )


def test_random_weights_are_reproducible(small_extractor):
    again = DynamicFeatureExtractor(endpoint="Mixed_4f", clip_length=8, stride=4)
    other = DynamicFeatureExtractor(
        endpoint="Mixed_4f", clip_length=8, stride=4, weights={"seed": 1}
    )
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8, 32, 32, 2)).astype(np.float32)
    a, b, c = (e.extract_features(x) for e in (small_extractor, again, other))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(a, c)


def test_resize_scales_the_vectors():
    ext = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", clip_length=4, resize=32)
    flow = np.zeros((3, 48, 64, 2), np.float32)
    flow[..., 0] = 8.0  # 8 px at full size = 4 px at half size
    clips = ext.preprocess_flow_sequence(flow)
    assert clips.shape == (1, 4, 24, 32, 2)
    np.testing.assert_allclose(clips[..., 0], 4.0 / 20.0)


def test_bad_inputs(small_extractor):
    with pytest.raises(BadInputError, match=r"\(T-1, H, W, 2\)"):
        small_extractor.preprocess_flow_sequence(np.zeros((5, 8, 8), np.float32))
    with pytest.raises(BadInputError, match="input channels"):
        small_extractor.extract_features(np.zeros((1, 8, 16, 16, 3), np.float32))
    rgb = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", in_channels=3)
    with pytest.raises(BadInputError, match="3 input channels but optical flow has 2"):
        rgb.preprocess_flow_sequence(np.zeros((4, 8, 8, 2), np.float32))
    nan = np.zeros((9, 16, 16, 2), np.float32)
    nan[3, 2, 2, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        small_extractor.preprocess_flow_sequence(nan)


def test_deepmind_weights_turn_quantisation_on(tmp_path):
    from test_i3d import reference, write_checkpoint

    from napari_flow_features.io._atomic import sha256_file

    write_checkpoint(tmp_path / "m.ckpt", reference("flow_imagenet"))
    ext = DynamicFeatureExtractor(
        endpoint="Conv3d_2b_1x1",
        weights={"source": "deepmind", "checkpoint": str(tmp_path / "m.ckpt")},
    )
    assert ext.quantize and ext.checkpoint_report.loaded == 8
    assert ext.describe()["quantize_effective"] is True
    loaded = ext.describe()["loaded_model"]  # what was loaded, with the data file's SHA-256
    assert loaded["source"] == "deepmind" and loaded["variables_loaded"] == 8
    assert loaded["endpoint"] == "Conv3d_2b_1x1" and loaded["channels"] == 64
    assert loaded["weights_sha256"] == sha256_file(tmp_path / "m.ckpt.data-00000-of-00001")
    flow = np.linspace(-30, 30, 9 * 4 * 4 * 2, dtype=np.float32).reshape(9, 4, 4, 2)
    clips = ext.preprocess_flow_sequence(flow)
    assert len(np.unique(clips)) <= 256
    assert not DynamicFeatureExtractor(endpoint="Conv3d_2b_1x1").quantize


@pytest.mark.skipif(
    not __import__("napari_flow_features.model.runtime", fromlist=["x"]).native_bf16(),
    reason="this CPU has no native bfloat16: mixed_bfloat16 is refused here (tested below)",
)
def test_mixed_bfloat16_stays_close_to_float32():
    x = np.random.default_rng(2).uniform(-1, 1, (1, 8, 32, 32, 2)).astype(np.float32)
    f32 = DynamicFeatureExtractor(endpoint="Mixed_3c", clip_length=8).extract_features(x)
    bf16 = DynamicFeatureExtractor(
        endpoint="Mixed_3c", clip_length=8, precision="mixed_bfloat16"
    ).extract_features(x)
    assert bf16.dtype == np.float32
    a, b = f32.ravel(), bf16.ravel()
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.99
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.1


def test_kinetics_labels_and_prediction():
    labels = kinetics_labels(400)
    assert len(labels) == 400 and labels[0] == "abseiling"
    assert len(kinetics_labels(600)) == 600
    model = build_i3d(2, "Logits")
    for w in model.weights:
        w.assign(np.zeros(w.shape, np.float32) + (1.0 if "moving_variance" in w.path else 0.0))
    bias = np.zeros(400, np.float32)
    bias[labels.index("air drumming")] = 5.0
    bias[labels.index("abseiling")] = 3.0
    model.get_layer("Logits.Conv3d_0c_1x1.conv_3d").bias.assign(bias)
    top = predict_kinetics(model, np.zeros((16, 224, 224, 2), np.float32), top=2)
    assert [name for name, _ in top] == ["air drumming", "abseiling"]
    expected = np.exp(5) / (np.exp(5) + np.exp(3) + 398)
    assert top[0][1] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(BadInputError, match="Logits end point"):
        predict_kinetics(build_i3d(2, "Conv3d_1a_7x7"), np.zeros((4, 16, 16, 2), np.float32))


@pytest.mark.parametrize("classes", [400, 600])
def test_classifier_end_point_records_one_channel_per_class(classes):
    """At Logits the metadata's channel count is the number of classes the features have (it
    said Mixed_5c's 1024, which a table's reader now refuses as a contradiction)."""
    ext = DynamicFeatureExtractor(endpoint="Logits", num_classes=classes, runtime="tensorflow")
    maps = ext.encode(np.zeros((1, 16, 224, 224, 2), np.float32))
    assert maps.shape[-1] == classes
    assert ext.describe()["channels"] == classes == ext.describe()["loaded_model"]["channels"]


def test_random_weights_depend_on_the_seed_alone_whatever_other_threads_draw():
    """A Dask worker's threads draw from Python's shared generators while a model is built: the
    random weights must still be the seed's (they differed between workers before)."""
    import random
    import threading

    def kernels() -> list:
        ext = DynamicFeatureExtractor(endpoint="Mixed_3b", weights={"source": "random", "seed": 5})
        return [np.array(w) for w in ext.model.weights if w.path.endswith("kernel")]

    quiet = kernels()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            random.random()
            np.random.random()  # noqa: NPY002 (the legacy global generator, on purpose)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        noisy = kernels()
    finally:
        stop.set()
        thread.join()
    assert len(quiet) == len(noisy) > 5
    for a, b in zip(quiet, noisy, strict=True):
        np.testing.assert_array_equal(a, b)
    # Glorot uniform, as Keras' default: within the limit, spread over it.
    first = quiet[0]
    fan = np.prod(first.shape[:-2]) * (first.shape[-2] + first.shape[-1])
    limit = np.sqrt(6 / fan)
    assert np.abs(first).max() <= limit and np.abs(first).max() > 0.9 * limit
