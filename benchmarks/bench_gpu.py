"""The torch encoder runtime on a GPU against the CPU: equality with Keras, then a speed table.

Made for a GPU machine with PyTorch and no TensorFlow. The Keras side is exported beforehand on a
machine with TensorFlow (``export``); the GPU machine only reads those files (``check``, ``table``).

    python benchmarks/bench_gpu.py export [--assets benchmarks/gpu_assets]   # needs TensorFlow
    python benchmarks/bench_gpu.py check  [--assets benchmarks/gpu_assets]
    python benchmarks/bench_gpu.py table  [--assets ...] [--shapes 16x224x224,64x192x256]
                                          [--repeats 5] [--cpu-repeats 2] [--batch 1]
    python benchmarks/bench_gpu.py all    # check, then table
    python benchmarks/bench_gpu.py cpu [--shapes 16x112x112] [--repeats 5] [--torch-threads N]

``cpu`` (needs TensorFlow) times the three CPU runtimes on the same Keras weights (torch float32, OpenVINO, a
``tf.function``), interleaved call by call so machine load falls on all of them alike, and prints
the median and best seconds per call and the ratios.

``export`` writes ``weights.npz`` (a random flow I3D up to Logits, 400 classes, batch norms with
non-trivial statistics: 48 MiB) and ``reference.npz`` (inputs and the Keras model's outputs at
Mixed_3c, Mixed_4f, Mixed_5c for a 1×16×72×88×2 clip and at Logits for a 1×10×200×200×2 clip).

``check`` compares the torch runtime with those Keras outputs on the CPU and on every CUDA device
in float32 (pass: relative L2 ≤ 1e-4), prints the error of tf32, float16 and bfloat16 on the GPU
against Keras, and exits 1 if a float32 check fails.

``table`` times whole encoder calls (host clip in, host float32 map out: the transfers a run pays)
at Mixed_5c for each clip shape ``LxHxW`` (2 flow channels): torch on the CPU in float32, and on
the GPU in float32, tf32, float16 and bfloat16, with clips/s, frames/s, the ratio to torch CPU
float32 in the same run and the relative L2 of each GPU precision to GPU float32. It names the CPU
and the GPU, and says so when there is no GPU (CPU rows only). 64×192×256 is a 640×480 video
resized to the default 256 longest side; 352×192×256 is the default chunk with its margins.

Weights are random (real ones are not needed for speed; the half-precision errors on DeepMind's
weights may differ).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "benchmarks" / "gpu_assets"
REF_POINTS = ("Mixed_3c", "Mixed_4f", "Mixed_5c")
REF_SHAPE = (1, 16, 72, 88, 2)
LOGITS_SHAPE = (1, 10, 200, 200, 2)
TOLERANCE = 1e-4
GPU_PRECISIONS = ("float32", "tf32", "float16", "bfloat16")


def import_package() -> None:
    """Make ``napari_flow_features`` importable from src/ (without lazy_loader if it is missing)."""
    sys.path.insert(0, str(ROOT / "src"))
    try:
        import lazy_loader  # noqa: F401
    except ImportError:  # a bare GPU machine: load the submodules without the package's __init__
        package = types.ModuleType("napari_flow_features")
        package.__path__ = [str(ROOT / "src" / "napari_flow_features")]
        sys.modules["napari_flow_features"] = package


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


# -- export (TensorFlow here) -------------------------------------------------------------------------


def export(assets: Path) -> None:
    import keras

    from napari_flow_features.model.i3d import build_i3d
    from napari_flow_features.model.torch_i3d import export_torch_weights

    keras.utils.set_random_seed(23)
    model = build_i3d(2, "Logits", num_classes=400)
    rng = np.random.default_rng(23)
    for layer in model.layers:
        if layer.name.endswith(".batch_norm"):
            beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.normal(0, 0.2, beta.shape).astype(np.float32),
                rng.normal(0, 0.2, mean.shape).astype(np.float32),
                rng.uniform(0.3, 3.0, var.shape).astype(np.float32),
            ])  # fmt: skip
    assets.mkdir(parents=True, exist_ok=True)
    export_torch_weights(model, assets / "weights.npz")
    x = rng.uniform(-1, 1, REF_SHAPE).astype(np.float32)
    logits_x = rng.uniform(-1, 1, LOGITS_SHAPE).astype(np.float32)
    probe = keras.Model(model.inputs, [model.get_layer(p).output for p in REF_POINTS])
    outputs = {
        p: np.asarray(o) for p, o in zip(REF_POINTS, probe([x], training=False), strict=True)
    }
    outputs["Logits"] = np.asarray(model([logits_x], training=False))
    np.savez(assets / "reference.npz", x=x, logits_x=logits_x, **outputs)
    size = sum(f.stat().st_size for f in assets.iterdir()) / 2**20
    print(
        f"wrote {assets}/weights.npz and reference.npz ({size:.1f} MiB; Keras {keras.__version__})"
    )


# -- check (no TensorFlow) ----------------------------------------------------------------------------


def devices() -> list[str]:
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def check(assets: Path) -> bool:
    from napari_flow_features.model.torch_i3d import read_arrays
    from napari_flow_features.model.torch_runtime import TorchEncoder

    arrays = read_arrays(assets / "weights.npz")
    ref = dict(np.load(assets / "reference.npz", allow_pickle=False))
    cases = [(p, ref["x"], ref[p]) for p in REF_POINTS] + [
        ("Logits", ref["logits_x"], ref["Logits"])
    ]
    ok = True
    print(f"\n## torch runtime vs the Keras model (float32 pass: rel L2 ≤ {TOLERANCE:g})\n")
    print("| device | precision | end point | input | rel L2 | result |")
    print("|---|---|---|---|---|---|")
    for device in devices():
        precisions = ["float32"] + (["tf32", "float16", "bfloat16"] if device != "cpu" else [])
        for precision in precisions:
            for point, x, want in cases:
                encoder = TorchEncoder(arrays, point, device=device, precision=precision)
                error = rel_l2(encoder(x), want)
                verdict = "info"
                if precision == "float32":
                    verdict = "PASS" if error <= TOLERANCE else "FAIL"
                    ok &= error <= TOLERANCE
                label = encoder.device_label
                shape = "×".join(map(str, x.shape))
                print(f"| {label} | {precision} | {point} | {shape} | {error:.2e} | {verdict} |")
    if len(devices()) == 1:
        print("\nno CUDA GPU visible: the GPU rows were not run")
    return ok


# -- table (no TensorFlow) ----------------------------------------------------------------------------


def time_calls(encoder, x: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    out = encoder(x)  # warm-up (cuDNN picks its algorithms for this shape)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = encoder(x)
        best = min(best, time.perf_counter() - start)
    return best, out


class Run(NamedTuple):
    """One timed encoder: where and in what it ran, its best seconds per call, its output."""

    device: str  # the encoder's device_label, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"
    precision: str
    seconds: float
    out: np.ndarray
    rel_l2: float  # to the first run's output (the first precision asked for: float32)


def precision_runs(
    source: Any, endpoint: str, x: np.ndarray, device: str, precisions, repeats: int
) -> list[Run]:
    """Time the torch runtime on ``device`` in each of ``precisions`` (float32 first) on clips ``x``.

    ``source`` is what :class:`TorchEncoder` takes (weight arrays: convert a Keras model once with
    ``keras_arrays``). Each encoder is freed before the next, so one precision's memory is held.
    """
    import torch

    from napari_flow_features.model.torch_runtime import TorchEncoder

    runs: list[Run] = []
    for precision in precisions:
        encoder = TorchEncoder(source, endpoint, device=device, precision=precision)
        seconds, out = time_calls(encoder, x, repeats)
        error = rel_l2(out, runs[0].out) if runs else 0.0
        runs.append(Run(encoder.device_label, precision, seconds, out, error))
        del encoder
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return runs


def no_gpu_reason() -> str | None:
    """Why the GPU rows cannot be measured here, or None when PyTorch sees a CUDA GPU.

    Imports PyTorch only where an NVIDIA driver is visible (as ``runtime: auto`` does).
    """
    import importlib.metadata

    from napari_flow_features.model.torch_runtime import (
        cuda_available,
        nvidia_driver_present,
        torch_installed,
    )

    if not torch_installed():
        return "PyTorch is not installed: pip install 'napari-flow-features[gpu]'"
    if cuda_available():
        return None
    version = importlib.metadata.version("torch")
    if not nvidia_driver_present():
        return f"no NVIDIA driver visible; PyTorch {version} sees no CUDA device"
    return f"PyTorch {version} sees no CUDA device (a CPU-only build, or a driver it cannot use)"


def table(assets: Path, shapes: list[tuple[int, ...]], repeats: int, cpu_repeats: int, batch: int):
    import torch

    from napari_flow_features.model.torch_i3d import read_arrays
    from napari_flow_features.model.torch_runtime import TorchEncoder

    arrays = read_arrays(assets / "weights.npz")
    gpus = devices()[1:]
    print(f"\n## Mixed_5c encoder calls, batch {batch}, torch {torch.__version__}")
    print(f"CPU: {cpu_name()} ({torch.get_num_threads()} torch threads)")
    print(f"GPU: {', '.join(TorchEncoder(arrays, 'Conv3d_1a_7x7', g).device_label for g in gpus)}"
          if gpus else "GPU: none visible (CPU rows only)")  # fmt: skip
    print("\n| clip L×H×W | device | precision | s per call | clips/s | frames/s | × torch CPU | rel L2 to GPU float32 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for shape in shapes:
        x = np.random.default_rng(0).uniform(-1, 1, (batch, *shape, 2)).astype(np.float32)
        runs = precision_runs(arrays, "Mixed_5c", x, "cpu", ("float32",), cpu_repeats)
        cpu_s = runs[0].seconds
        for gpu in gpus[:1]:
            runs += precision_runs(arrays, "Mixed_5c", x, gpu, GPU_PRECISIONS, repeats)
        for device, precision, seconds, _, rel in runs:
            clips = batch / seconds
            error = None if device == "cpu" else rel
            rows.append({"shape": shape, "device": device, "precision": precision,
                         "seconds": seconds, "ratio": cpu_s / seconds, "rel_l2": error})  # fmt: skip
            err = "" if error is None else f"{error:.2e}"
            print(f"| {'×'.join(map(str, shape))} | {device} | {precision} | {seconds:.3f} | "
                  f"{clips:.2f} | {clips * shape[0]:.1f} | {cpu_s / seconds:.1f} | {err} |")  # fmt: skip
    if not gpus:
        print("\nno CUDA GPU visible: the table has the CPU rows only")
    return rows


def cpu_runtimes(shapes: list[tuple[int, ...]], repeats: int) -> None:
    import keras

    from napari_flow_features.model.i3d import build_i3d
    from napari_flow_features.model.runtime import OpenVINOEncoder, TensorFlowEncoder, cpu_info
    from napari_flow_features.model.torch_runtime import TorchEncoder

    keras.utils.set_random_seed(23)
    model = build_i3d(2, "Mixed_5c")
    encoders = {
        "torch": TorchEncoder(model, device="cpu"),
        "openvino": OpenVINOEncoder(model, cache_dir=ASSETS / "ov-cache"),
        "tensorflow": TensorFlowEncoder(model),
    }
    import torch

    print(f"\n## CPU runtimes, Mixed_5c, batch 1: {cpu_info()['name']}, {cpu_info()['cores']} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)\n")  # fmt: skip
    print(
        "| clip L×H×W | runtime | median s | best s | frames/s (median) | × torch | rel L2 to TF |"
    )
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        x = np.random.default_rng(0).uniform(-1, 1, (1, *shape, 2)).astype(np.float32)
        outs = {name: enc(x) for name, enc in encoders.items()}  # warm-up, compile
        times: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(repeats):
            for name, enc in encoders.items():
                start = time.perf_counter()
                enc(x)
                times[name].append(time.perf_counter() - start)
        base = float(np.median(times["torch"]))
        for name, spent in times.items():
            med = float(np.median(spent))
            print(f"| {'×'.join(map(str, shape))} | {name} | {med:.3f} | {min(spent):.3f} | "
                  f"{shape[0] / med:.1f} | {base / med:.2f} | "
                  f"{rel_l2(outs[name], outs['tensorflow']):.1e} |")  # fmt: skip


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("export", "check", "table", "all", "cpu"))
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--shapes", default="16x224x224,64x192x256", help="clips L×H×W")
    parser.add_argument("--repeats", type=int, default=5, help="timed GPU calls (best kept)")
    parser.add_argument("--cpu-repeats", type=int, default=2, help="timed CPU calls (best kept)")
    parser.add_argument("--batch", type=int, default=1, help="clips per call")
    parser.add_argument("--json", type=Path, help="also write the table's rows here")
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads (default: torch's)"
    )
    args = parser.parse_args()
    import_package()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.what == "export":
        export(args.assets)
        return 0
    if args.what == "cpu":
        cpu_runtimes(parse_shapes(args.shapes), args.repeats)
        return 0
    if not (args.assets / "weights.npz").is_file():
        print(f"no {args.assets}/weights.npz: run `bench_gpu.py export` where TensorFlow is")
        return 2
    ok = check(args.assets) if args.what in ("check", "all") else True
    if args.what in ("table", "all"):
        rows = table(args.assets, parse_shapes(args.shapes), args.repeats, args.cpu_repeats,
                     args.batch)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, default=list))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
