"""The torch runtime: equal to the Keras model, an exported .npz that runs without TensorFlow, auto."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import napari_flow_features  # noqa: E402
from napari_flow_features.errors import BadInputError, CorruptFileError  # noqa: E402
from napari_flow_features.model import runtime, torch_i3d, torch_runtime  # noqa: E402
from napari_flow_features.model.extractor import DynamicFeatureExtractor  # noqa: E402
from napari_flow_features.model.i3d import build_i3d  # noqa: E402
from napari_flow_features.model.torch_runtime import TorchEncoder  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")
CPU_DEFAULT = "openvino" if importlib.util.find_spec("openvino") else "tensorflow"


def keras_i3d(in_channels: int, endpoint: str, seed: int, num_classes: int = 400):
    """A random Keras I3D whose batch norms have non-trivial statistics (folding is exercised)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_i3d(in_channels, endpoint, num_classes=num_classes)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.endswith(".batch_norm"):
            beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.normal(0, 0.2, beta.shape).astype(np.float32),
                rng.normal(0, 0.2, mean.shape).astype(np.float32),
                rng.uniform(0.3, 3.0, var.shape).astype(np.float32),
            ])  # fmt: skip
    return model


def keras_outputs(model, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    out = probe([x], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.fixture(scope="module")
def flow_model():
    return keras_i3d(2, "Mixed_5c", seed=3)


@pytest.mark.parametrize(
    ("channels", "shape"), [(2, (1, 16, 72, 88)), (3, (2, 13, 61, 75))], ids=["flow", "rgb"]
)
def test_torch_equals_keras_at_mixed_end_points(channels, shape, flow_model):
    # Sizes no stride divides: SAME padding is asymmetric in space (and in time for 13 frames).
    model = flow_model if channels == 2 else keras_i3d(3, "Mixed_5c", seed=4)
    x = np.random.default_rng(channels).uniform(-1, 1, (*shape, channels)).astype(np.float32)
    points = ["Mixed_3c", "Mixed_4f", "Mixed_5c"]
    arrays = torch_i3d.keras_arrays(model)
    for point, want in zip(points, keras_outputs(model, points, x), strict=True):
        got = TorchEncoder(arrays, endpoint=point, device="cpu")(x)
        assert got.dtype == np.float32 and got.shape == want.shape, point
        assert np.linalg.norm(want) > 0
        assert rel_l2(got, want) <= 1e-4, f"relative L2 {rel_l2(got, want):.2e} at {point}"


def test_torch_equals_keras_logits_and_predictions():
    # A Mixed_5c map of 2×7×8: the 2×7×7 VALID pool leaves 1×1×2 cells that Logits averages.
    model = keras_i3d(3, "Predictions", seed=5, num_classes=12)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 16, 200, 232, 3)).astype(np.float32)
    logits, probs = keras_outputs(model, ["Logits", "Predictions"], x)
    arrays = torch_i3d.keras_arrays(model)
    got_logits = TorchEncoder(arrays, endpoint="Logits", device="cpu")(x)
    got_probs = TorchEncoder(arrays, device="cpu")(x)
    assert got_logits.shape == logits.shape == (1, 12)
    assert rel_l2(got_logits, logits) <= 1e-4
    assert rel_l2(got_probs, probs) <= 1e-4
    assert np.allclose(got_probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(BadInputError, match="at least 2×7×7"):
        TorchEncoder(arrays, endpoint="Logits", device="cpu")(x[:, :, :100])


def test_same_padding_follows_tensorflow():
    # out = ceil(n / s); the odd padded cell goes after.
    assert torch_i3d.same_padding(72, 7, 2) == (2, 3)
    assert torch_i3d.same_padding(73, 7, 2) == (3, 3)
    assert torch_i3d.same_padding(9, 3, 2) == (1, 1)
    assert torch_i3d.same_padding(10, 3, 2) == (0, 1)
    assert torch_i3d.same_padding(5, 2, 2) == (0, 1)
    assert torch_i3d.same_padding(4, 2, 2) == (0, 0)


def test_export_round_trip_and_refusals(flow_model, tmp_path):
    path = torch_i3d.export_torch_weights(flow_model, tmp_path / "flow.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npz"]  # no partial left
    arrays = torch_i3d.keras_arrays(flow_model)
    read = torch_i3d.read_arrays(path)
    assert read.keys() == arrays.keys()
    assert all(np.array_equal(read[k], arrays[k]) for k in arrays)
    x = np.random.default_rng(7).uniform(-1, 1, (1, 8, 40, 56, 2)).astype(np.float32)
    from_file = TorchEncoder(path, device="cpu")(x)
    assert np.array_equal(from_file, TorchEncoder(arrays, device="cpu")(x))
    # An export computes any earlier end point, not a later one.
    (want,) = keras_outputs(flow_model, ["Mixed_4b"], x)
    assert rel_l2(TorchEncoder(path, "Mixed_4b", device="cpu")(x), want) <= 1e-4
    with pytest.raises(BadInputError, match="end at Mixed_5c"):
        TorchEncoder(path, "Logits", device="cpu")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CorruptFileError, match="not a torch I3D export"):
        TorchEncoder(tmp_path / "other.npz", device="cpu")
    partial = {k: v for k, v in read.items() if "Mixed_5b.Branch_2" not in k}
    with pytest.raises(CorruptFileError, match=r"lack 'Mixed_5b\.Branch_2"):
        TorchEncoder(partial, device="cpu")
    with pytest.raises(BadInputError, match=r"written as \.npz"):
        torch_i3d.export_torch_weights(flow_model, tmp_path / "flow.pt")
    with pytest.raises(BadInputError, match=r"Clips must be \[B, L, H, W, 2\]"):
        TorchEncoder(arrays, device="cpu")(x[..., :1])


def test_the_generic_convolution_path_equals_the_onednn_one(flow_model, monkeypatch):
    # The CPU takes oneDNN's convolution directly; a GPU (or a build without oneDNN) F.conv3d.
    arrays = torch_i3d.keras_arrays(flow_model)
    x = np.random.default_rng(12).uniform(-1, 1, (1, 8, 40, 56, 2)).astype(np.float32)
    onednn = TorchEncoder(arrays, "Mixed_4f", device="cpu")(x)
    monkeypatch.setattr(torch_i3d, "_MKLDNN", False)
    assert rel_l2(TorchEncoder(arrays, "Mixed_4f", device="cpu")(x), onednn) <= 1e-5


def test_an_export_runs_where_tensorflow_cannot_be_imported(flow_model, tmp_path):
    path = torch_i3d.export_torch_weights(flow_model, tmp_path / "flow.npz")
    x = np.random.default_rng(8).uniform(-1, 1, (1, 8, 40, 56, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = sys.modules["keras"] = None  # importing them now fails
        import numpy as np
        from napari_flow_features.model.torch_runtime import TorchEncoder
        out = TorchEncoder({str(path)!r}, device="cpu")(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "out.npy")!r}, out)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
    """)
    src = str(Path(napari_flow_features.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['keras', 'tensorflow']"  # the blocked entries
    (want,) = keras_outputs(flow_model, ["Mixed_5c"], x)
    assert rel_l2(np.load(tmp_path / "out.npy"), want) <= 1e-4


def test_auto_uses_torch_only_with_a_cuda_gpu():
    assert runtime.resolve_runtime("auto", cuda_available=lambda: True) == "torch"
    assert runtime.resolve_runtime("auto", cuda_available=lambda: False) == CPU_DEFAULT
    assert runtime.installed_runtimes(lambda: True)[0] == "torch"
    assert runtime.installed_runtimes(lambda: False)[-1] == "torch"  # slower on CPUs measured
    assert runtime.resolve_runtime("torch", cuda_available=lambda: False) == "torch"


def test_auto_keeps_a_model_torch_cannot_run_on_the_cpu_runtimes(monkeypatch):
    import keras

    head = keras.Sequential([keras.Input((None, None, None, 2)), keras.layers.Conv3D(4, 1)])
    with pytest.raises(BadInputError, match="not a plain I3D"):
        TorchEncoder(head, device="cpu")
    monkeypatch.setattr(torch_runtime, "cuda_available", lambda: True)  # our probe, not torch's
    assert runtime.resolve_runtime("auto") == "torch"
    assert runtime.make_encoder(head, "auto").name == CPU_DEFAULT
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    assert runtime.make_encoder(head, "auto", "mixed_bfloat16").name == "tensorflow"


def test_precision_below_float32_only_on_a_gpu(flow_model):
    arrays = torch_i3d.keras_arrays(flow_model)
    for precision in ("float16", "bfloat16", "mixed_bfloat16", "tf32"):
        with pytest.raises(BadInputError, match="GPU only"):
            TorchEncoder(arrays, device="cpu", precision=precision)
    with pytest.raises(BadInputError, match="precision must be one of"):
        TorchEncoder(arrays, device="cpu", precision="int8")


def test_extractor_on_torch_equals_tensorflow_and_records_the_device():
    x = np.random.default_rng(9).uniform(-1, 1, (2, 8, 36, 44, 2)).astype(np.float32)
    on_torch = DynamicFeatureExtractor(endpoint="Mixed_4c", runtime="torch")
    on_tf = DynamicFeatureExtractor(endpoint="Mixed_4c", runtime="tensorflow")
    got, want = on_torch.encode(x), on_tf.encode(x)
    assert rel_l2(got, want) <= 1e-4
    meta = on_torch.describe()
    assert (meta["runtime_used"], meta["runtime_device"]) == ("torch", "cpu")
    assert on_tf.describe()["runtime_device"] == "cpu"


@needs_cuda
def test_gpu_float32_equals_the_cpu_and_is_the_default(flow_model):
    arrays = torch_i3d.keras_arrays(flow_model)
    x = np.random.default_rng(10).uniform(-1, 1, (2, 16, 72, 88, 2)).astype(np.float32)
    (want,) = keras_outputs(flow_model, ["Mixed_5c"], x)
    gpu = TorchEncoder(arrays)
    assert gpu.device.type == "cuda" and gpu.device_label.startswith("cuda:")
    assert rel_l2(gpu(x), want) <= 1e-4  # IEEE float32: TF32 is off unless asked for
    assert runtime.resolve_runtime("auto") == "torch"


@needs_cuda
@pytest.mark.parametrize(("precision", "bound"), [("float16", 0.05), ("bfloat16", 0.1)])
def test_gpu_half_precisions_run_close_to_float32(flow_model, precision, bound):
    arrays = torch_i3d.keras_arrays(flow_model)
    x = np.random.default_rng(11).uniform(-1, 1, (1, 16, 72, 88, 2)).astype(np.float32)
    full = TorchEncoder(arrays, device="cuda")(x)
    half = TorchEncoder(arrays, device="cuda", precision=precision)(x)
    assert half.dtype == np.float32 and np.isfinite(half).all()
    assert rel_l2(half, full) <= bound


def test_extract_says_which_runtime_and_device_ran(tmp_path, capsys):
    from napari_flow_features.cli import main
    from napari_flow_features.io.tables import read_table
    from napari_flow_features.io.video import write_video
    from napari_flow_features.sample import make_whisker_sample

    video = tmp_path / "w.mp4"
    write_video(video, make_whisker_sample(n_frames=8, height=48, width=64).video, crf=5)
    out = tmp_path / "f.parquet"
    assert main(["extract", str(video), "--weights", "random", "--endpoint", "Mixed_3b",
                 "--runtime", "torch", "--post-encoder", "gap", "-o", str(out)]) == 0  # fmt: skip
    assert "runtime torch on cpu," in capsys.readouterr().out
    table = read_table(out)
    assert (table.attrs["runtime_used"], table.attrs["runtime_device"]) == ("torch", "cpu")
