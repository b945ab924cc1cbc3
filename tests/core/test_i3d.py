"""The Keras I3D against DeepMind's published checkpoint index, and the checkpoint importer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from napari_flow_features.errors import BadInputError
from napari_flow_features.model.checkpoint import (
    checkpoint_shapes,
    detect_scope,
    expected_variables,
    load_deepmind_checkpoint,
)
from napari_flow_features.model.i3d import (
    ENDPOINT_STRIDES,
    build_i3d,
    count_parameters,
    endpoint_channels,
)

# The real index files (names and shapes, no weights) of DeepMind's checkpoints ship in the package
# (model/reference/); the project's shared/ folder beside the checkout holds the originals.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "kinetics-i3d"
PACKAGED = (
    Path(__file__).resolve().parents[2] / "src" / "napari_flow_features" / "model" / "reference"
)


def reference(name: str) -> dict[str, tuple[int, ...]]:
    from napari_flow_features.model.weights import published_shapes

    return published_shapes(name)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/ reference folder not beside this checkout")
@pytest.mark.parametrize(
    "name", ["flow_imagenet", "flow_scratch", "rgb_imagenet", "rgb_scratch", "rgb_scratch_kin600"]
)
def test_packaged_indexes_are_the_published_ones(name):
    original = (SHARED / name / "model.ckpt.index").read_bytes()
    assert (PACKAGED / f"{name}.index").read_bytes() == original
    assert reference(name) == {
        k: tuple(v) for k, v in checkpoint_shapes(SHARED / name / "model.ckpt").items()
    }


@pytest.fixture(scope="module")
def flow_logits_model():
    return build_i3d(in_channels=2, endpoint="Logits", num_classes=400)


def write_checkpoint(prefix: Path, shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """A TF checkpoint with exactly these names and shapes, filled with random values."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        arr = rng.standard_normal(shape).astype(np.float32)
        values[name] = np.abs(arr) + 0.5 if name.endswith("moving_variance") else arr
    names = sorted(values)
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[values[n] for n in names],
    )  # fmt: skip
    return values


def test_flow_stream_matches_the_published_checkpoint(flow_logits_model):
    ref = reference("flow_imagenet")
    scope = detect_scope(ref)
    assert scope == "Flow/inception_i3d/"
    ours = {name: shape for name, (_, shape) in expected_variables(flow_logits_model).items()}
    theirs = {name[len(scope) :]: shape for name, shape in ref.items()}
    assert ours == theirs  # same 230 names, same shapes
    assert count_parameters(flow_logits_model) == sum(int(np.prod(s)) for s in ref.values())
    assert count_parameters(flow_logits_model) == 12_682_592


def squeezed(shapes: dict) -> dict:
    return {n: tuple(d for d in s if d != 1) for n, s in shapes.items()}


def test_rgb_and_kinetics600_variants_match_their_indexes():
    rgb = build_i3d(in_channels=3, endpoint="Logits")
    ref = reference("rgb_imagenet")  # stores batch-norm statistics as (1, 1, 1, 1, C)
    scope = detect_scope(ref)
    assert squeezed({n: s for n, (_, s) in expected_variables(rgb).items()}) == squeezed(
        {n[len(scope) :]: s for n, s in ref.items()}
    )
    for name in ("rgb_scratch", "flow_scratch"):
        other = reference(name)
        model = rgb if name.startswith("rgb") else build_i3d(2, "Logits")
        sc = detect_scope(other)
        assert squeezed({n: s for n, (_, s) in expected_variables(model).items()}) == squeezed(
            {n[len(sc) :]: s for n, s in other.items()}
        )
    kin600 = reference("rgb_scratch_kin600")
    assert detect_scope(kin600) == ""
    network = {n: s for n, s in kin600.items() if not n.endswith("Momentum") and n != "global_step"}
    model = build_i3d(in_channels=3, endpoint="Logits", num_classes=600)
    assert squeezed({n: s for n, (_, s) in expected_variables(model).items()}) == squeezed(network)


@pytest.mark.parametrize(
    ("endpoint", "clip", "expected"),
    [
        ("Mixed_5c", (8, 64, 96), (1, 1, 2, 3, 1024)),
        ("Mixed_4f", (8, 48, 80), (1, 2, 3, 5, 832)),
        ("Mixed_3c", (5, 30, 17), (1, 3, 4, 3, 480)),  # odd sizes: SAME gives ceil(n / stride)
        ("Conv3d_1a_7x7", (3, 9, 9), (1, 2, 5, 5, 64)),
    ],
)
def test_endpoint_shapes_follow_the_strides(endpoint, clip, expected):
    model = build_i3d(2, endpoint)
    out = model(np.zeros((1, *clip, 2), np.float32))
    assert tuple(out.shape) == expected
    st, ss = ENDPOINT_STRIDES[endpoint]
    assert expected[1:4] == (-(-clip[0] // st), -(-clip[1] // ss), -(-clip[2] // ss))
    assert expected[-1] == endpoint_channels(endpoint)


def test_logits_average_over_time(flow_logits_model):
    out = flow_logits_model(np.zeros((2, 16, 224, 224, 2), np.float32))
    assert tuple(out.shape) == (2, 400)


def test_unknown_endpoint():
    with pytest.raises(ValueError, match="Mixed_9z"):
        build_i3d(2, "Mixed_9z")


@pytest.fixture(scope="module")
def random_flow_checkpoint(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    values = write_checkpoint(prefix, reference("flow_imagenet"))
    return prefix, values


def test_import_puts_every_value_in_its_layer(flow_logits_model, random_flow_checkpoint):
    prefix, values = random_flow_checkpoint
    report = load_deepmind_checkpoint(flow_logits_model, prefix)
    assert report.loaded == 230 and not report.ignored_past_endpoint
    for name, (var, _) in expected_variables(flow_logits_model).items():
        np.testing.assert_array_equal(np.asarray(var), values["Flow/inception_i3d/" + name])
    # Spot-check the layer naming by hand: a kernel and a BN statistic deep in the network.
    layer = flow_logits_model.get_layer("Mixed_4b.Branch_1.Conv3d_0b_3x3.conv_3d")
    np.testing.assert_array_equal(
        np.asarray(layer.kernel),
        values["Flow/inception_i3d/Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d/w"],
    )
    bn = flow_logits_model.get_layer("Conv3d_2c_3x3.batch_norm")
    np.testing.assert_array_equal(
        np.asarray(bn.moving_variance),
        values["Flow/inception_i3d/Conv3d_2c_3x3/batch_norm/moving_variance"],
    )


def test_truncated_model_ignores_later_variables(random_flow_checkpoint):
    prefix, values = random_flow_checkpoint
    model = build_i3d(2, "Mixed_4f")
    report = load_deepmind_checkpoint(model, prefix)
    later = [n for n in values if n.split("/")[2] in ("Mixed_5b", "Mixed_5c", "Logits")]
    assert sorted(report.ignored_past_endpoint) == sorted(later)
    assert report.loaded == 230 - len(later)
    assert "past the model's end point" in str(report)


def test_import_errors(tmp_path, random_flow_checkpoint):
    ref = reference("flow_imagenet")
    model = build_i3d(2, "Conv3d_2c_3x3")
    missing = dict(ref)
    del missing["Flow/inception_i3d/Conv3d_2b_1x1/batch_norm/beta"]
    write_checkpoint(tmp_path / "missing.ckpt", missing)
    with pytest.raises(BadInputError, match="Conv3d_2b_1x1/batch_norm/beta"):
        load_deepmind_checkpoint(model, tmp_path / "missing.ckpt")

    extra = {**ref, "Flow/inception_i3d/Conv3d_2b_1x1/conv_3d/b": (64,)}
    write_checkpoint(tmp_path / "extra.ckpt", extra)
    with pytest.raises(BadInputError, match=r"Unexpected variable .*Conv3d_2b_1x1/conv_3d/b"):
        load_deepmind_checkpoint(model, tmp_path / "extra.ckpt")

    rgb = {k.replace("Flow/", "RGB/"): v for k, v in ref.items()}
    rgb["RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w"] = (7, 7, 7, 3, 64)
    write_checkpoint(tmp_path / "rgb.ckpt", rgb)
    with pytest.raises(BadInputError, match=r"3 input channels \(RGB\).*takes 2"):
        load_deepmind_checkpoint(model, tmp_path / "rgb.ckpt")

    prefix, _ = random_flow_checkpoint
    with pytest.raises(BadInputError, match=r"Logits/Conv3d_0c_1x1/conv_3d/b.*\(600,\)"):
        load_deepmind_checkpoint(build_i3d(2, "Logits", num_classes=600), prefix)

    with pytest.raises(BadInputError, match="Not a readable"):
        load_deepmind_checkpoint(model, tmp_path / "nothing.ckpt")


def test_rgb_imagenet_layout_imports(tmp_path):
    values = write_checkpoint(tmp_path / "rgb.ckpt", reference("rgb_imagenet"))
    model = build_i3d(3, "Conv3d_2b_1x1")
    load_deepmind_checkpoint(model, tmp_path / "rgb.ckpt")
    bn = model.get_layer("Conv3d_2b_1x1.batch_norm")
    np.testing.assert_array_equal(
        np.asarray(bn.beta), values["RGB/inception_i3d/Conv3d_2b_1x1/batch_norm/beta"].ravel()
    )


def test_kinetics600_style_checkpoint_without_scope_and_with_momentum(tmp_path):
    shapes = {k: v for k, v in reference("rgb_scratch_kin600").items() if v}  # global_step is ()
    values = write_checkpoint(tmp_path / "k600.ckpt", shapes)
    model = build_i3d(3, "Mixed_3c")
    report = load_deepmind_checkpoint(model, tmp_path / "k600.ckpt")
    assert report.scope == "" and report.ignored_optimizer == sum(
        n.endswith("Momentum") for n in values
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("Mixed_3c.Branch_0.Conv3d_0a_1x1.conv_3d").kernel),
        values["Mixed_3c/Branch_0/Conv3d_0a_1x1/conv_3d/w"],
    )
