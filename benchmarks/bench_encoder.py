"""Benchmark the I3D flow encoder (to Mixed_5c): each inference runtime against a bare tf.function.

Modes: eager, tf.function (the baseline), XLA, OpenVINO float32 (our ``runtime: openvino``, with its
relative L2 against tf.function), and the bfloat16 variants only where the CPU has native bf16.
Where PyTorch is installed, ``runtime: torch`` on the CPU in float32 (``torch CPU f32``: what
``auto`` never picks on a CPU, docs/performance.md says why); where PyTorch also sees a CUDA GPU,
``runtime: torch`` on that GPU (named above the table) in float32, float16 and bfloat16, against the
same tf.function baseline. Their relative L2: float32 against tf.function, float16 and bfloat16
against the GPU's float32 (bench_gpu.py's convention, whose timing code they reuse). Without a GPU
one line says why the GPU rows were not measured.
Then, where NNCF is installed, ``precision: int8`` against OpenVINO float32 (see :func:`int8_rows`).

    python benchmarks/bench_encoder.py [--clips 16,64] [--sizes 224,112] [--repeats 3]
                                       [--max-isa AVX2] [--no-int8] [--int8-clips 4]
                                       [--flow FLOW.npy] [--no-torch-cpu]

``--max-isa AVX2`` caps the instruction set both runtimes' oneDNN kernels may use
(``ONEDNN_MAX_CPU_ISA``, which TensorFlow's oneDNN and OpenVINO's CPU plugin both read; and
``OV_CPU_MAX_ISA`` for OpenVINO's own kernels where the build honours it): on an AVX-512 machine it
shows what a CPU with AVX2 only gets, the CPU class our speed targets were first measured on.

Prints frames/s per clip shape and mode, the FLOPs per clip counted from the layer shapes (2 per
multiply-add of every convolution; pools and batch norm are left out, they are < 1 %), the achieved
GFLOP/s and the fraction of this CPU's fp32 peak. The peak is cores × clock × FMA units × 16 fp32
lanes × 2, with the clock from /proc/cpuinfo and 2 AVX-512 FMA units per core when the CPU has
avx512f (8 lanes with AVX2 only). The baseline for the ratios is tf.function float32 in the same run.
The GPU rows have no "% peak" or "% GEMM" (those are the CPU's).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import no_gpu_reason, precision_runs, rel_l2

#: The torch runtime's precisions on a GPU, with their names in the table.
GPU_PRECISIONS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def cpu_peak_gflops() -> tuple[float, str]:
    """fp32 peak from the CPU flags and clock, with the assumptions spelled out."""
    text = open("/proc/cpuinfo").read()
    mhz = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", text).group(1))
    flags = re.search(r"flags\s*:\s*(.*)", text).group(1).split()
    cores = os.cpu_count() or 1
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2 if "avx512f" in flags or "fma" in flags else 1
    peak = cores * mhz / 1000 * fma_units * lanes * 2
    how = f"{cores} cores × {mhz / 1000:.2f} GHz × {fma_units} FMA × {lanes} fp32 lanes × 2"
    return peak, how


def conv_flops(model) -> int:
    """2 × multiply-adds of every Conv3D for the model's fixed input shape."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            out = layer.output.shape  # (B, T, H, W, C_out)
            k = layer.kernel.shape  # (kt, kh, kw, C_in, C_out)
            total += 2 * int(np.prod(out[1:4])) * int(np.prod(k))
    return total


def tf_gemm_gflops(n: int = 2048) -> float:
    """float32 matrix-multiply rate through TensorFlow (oneDNN/Eigen, all cores): the practical
    limit the encoder's convolutions are measured against (NumPy's BLAS may be slower here)."""
    import tensorflow as tf

    a = tf.constant(np.random.default_rng(0).random((n, n), dtype=np.float32))
    matmul = tf.function(lambda m: tf.linalg.matmul(m, m))
    matmul(a).numpy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        matmul(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def numpy_gemm_gflops(n: int = 2048) -> float:
    """This machine's float32 matrix-multiply rate through NumPy (the practical limit)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def time_call(fn, x, repeats: int) -> float:
    fn(x)  # warm-up (tracing, compilation, allocations)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(fn(x))
        best = min(best, time.perf_counter() - start)
    return best


def flow_clips(flow_path: str | None, n: int, length: int, size: int) -> tuple[np.ndarray, str]:
    """``n`` encoder-ready flow clips ``[n, 1, length, size, size, 2]`` and where they came from.

    From a flow file (``flow-features flow VIDEO -o flow.npy``): consecutive windows, resized to
    ``size``² (displacements scaled), clipped to ±20 px and quantised like DeepMind's. Otherwise
    smooth synthetic flow with noise (no video needed; its numbers are not a real video's).
    """
    from napari_flow_features.flow.sequences import preprocess_flow_inplace

    if flow_path is None:
        rng = np.random.default_rng(0)
        t, y, x = np.meshgrid(*(np.linspace(0, 1, k) for k in (length, size, size)), indexing="ij")
        out = []
        for i in range(n):
            field = np.stack([np.sin(6 * x + 3 * t + i), np.cos(5 * y - 2 * t + i)], axis=-1)
            out.append(np.clip(field + rng.normal(0, 0.2, field.shape), -1, 1))
        return np.asarray(out, np.float32)[:, None], "synthetic flow (smooth fields + noise)"
    import cv2

    flow = np.load(flow_path, mmap_mode="r")
    if len(flow) < n * length:
        raise SystemExit(f"{flow_path} has {len(flow)} fields; {n} clips of {length} need more")
    h, w = flow.shape[1:3]
    out = []
    for i in range(n):
        window = np.asarray(flow[i * length : (i + 1) * length], np.float32)
        resized = np.stack(
            [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in window]
        )
        resized[..., 0] *= size / w
        resized[..., 1] *= size / h
        out.append(preprocess_flow_inplace(resized, 20.0, quantize=True))
    return np.asarray(out, np.float32)[:, None], f"{flow_path} ({n} windows from its start)"


def real_or_random_weights(*models) -> str:
    """Load DeepMind's flow_imagenet weights into ``models`` if they are in the cache."""
    from napari_flow_features.model.checkpoint import load_deepmind_checkpoint
    from napari_flow_features.model.weights import cache_dir

    prefix = cache_dir() / "flow_imagenet" / "model.ckpt"
    if not Path(f"{prefix}.index").is_file():
        return "random"
    for model in models:
        load_deepmind_checkpoint(model, prefix)
    return f"DeepMind flow_imagenet ({prefix})"


def position_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the channel vectors at every (clip, t, y, x) position."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.sum(a2 * b2, axis=1) / np.maximum(norms, 1e-12)


def torch_rows(
    model, x: np.ndarray, reference: np.ndarray, gpu: bool, cpu: bool, repeats: int
) -> dict[str, tuple[float, float]]:
    """The ``runtime: torch`` rows: ``{mode: (best seconds per call, relative L2)}``.

    float32 on the CPU when ``cpu``; float32, float16 and bfloat16 on the CUDA GPU when ``gpu``.
    float32 is compared with ``reference`` (tf.function's output), the half precisions with the
    GPU's float32. Timing and the encoders are bench_gpu.py's :func:`precision_runs`.
    """
    from napari_flow_features.model.torch_i3d import keras_arrays

    arrays = keras_arrays(model)  # the Keras weights read once for every encoder
    runs = precision_runs(arrays, "Mixed_5c", x, "cpu", ("float32",), repeats) if cpu else []
    if gpu:
        runs += precision_runs(arrays, "Mixed_5c", x, "cuda", tuple(GPU_PRECISIONS), repeats)
    rows = {}
    for run in runs:
        where = "CPU" if run.device == "cpu" else "GPU"
        error = rel_l2(run.out, reference) if run.precision == "float32" else run.rel_l2
        rows[f"torch {where} {GPU_PRECISIONS[run.precision]}"] = (run.seconds, error)
    return rows


def torch_header(no_torch_cpu: bool) -> tuple[bool, bool]:
    """Say which torch rows this run has (naming the GPU, or why there is none): (gpu, cpu)."""
    from napari_flow_features.model.torch_runtime import torch_installed

    reason = no_gpu_reason()
    if reason is None:
        import torch

        from napari_flow_features.model.torch_runtime import device_label

        print(f"GPU: {device_label('cuda')}; torch {torch.__version__} (rows 'torch GPU …')")
    else:
        print(f"GPU rows: not measured ({reason})")
    return reason is None, torch_installed() and not no_torch_cpu


def int8_rows(args: argparse.Namespace) -> None:
    """int8 (NNCF, calibrated on the first clip) against OpenVINO float32: speed and error.

    The first of ``--int8-clips`` clips calibrates (what a run does: its first clips); the error is
    measured on the others (held out): relative L2 of the Mixed_5c maps, the median and 5th
    percentile of the per-position cosine, and the top-1 agreement of the Logits end point.
    """
    import tempfile

    from napari_flow_features.model.i3d import build_i3d
    from napari_flow_features.model.runtime import OpenVINOEncoder

    cache = tempfile.mkdtemp(prefix="bench-int8-")  # our cap applies; removed at the end
    print(
        f"\nint8 (NNCF post-training quantisation) against OpenVINO float32, {args.int8_clips} clips:"
    )
    print(f"{'clip':>10}{'end point':>11}{'f32 fr/s':>10}{'int8 fr/s':>10}{'speed-up':>9}"
          f"{'rel L2':>8}{'cos med':>8}{'cos p5':>8}{'top-1 =':>8}")  # fmt: skip
    weights = "random"
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            for length in (int(c) for c in args.clips.split(",")):
                data, origin = flow_clips(args.flow, args.int8_clips, length, size)
                shape = dict(clip_length=length, height=size, width=size)
                # Logits pools 2×7×7 of Mixed_5c: it needs 224² and 16 frames.
                ends = ("Mixed_5c", "Logits") if size >= 224 and length >= 16 else ("Mixed_5c",)
                models = {e: build_i3d(2, e, **shape) for e in ends}
                weights = real_or_random_weights(*models.values())
                for endpoint, model in models.items():
                    f32 = OpenVINOEncoder(model, cache_dir=cache)
                    int8 = OpenVINOEncoder(model, "int8", cache_dir=cache)
                    int8(data[0])  # calibrates on the first clip
                    a = np.concatenate([f32(c) for c in data[1:]])
                    b = np.concatenate([int8(c) for c in data[1:]])
                    t32, t8 = (
                        time_call(f32, data[1], args.repeats),
                        time_call(int8, data[1], args.repeats),
                    )
                    rel = np.linalg.norm(b - a) / np.linalg.norm(a)
                    if endpoint == "Logits":
                        agree = np.mean(a.argmax(-1) == b.argmax(-1))
                        cos = "-", "-"
                    else:
                        agree, cosines = "-", position_cosines(a, b)
                        cos = f"{np.median(cosines):.3f}", f"{np.percentile(cosines, 5):.3f}"
                    agree_text = agree if agree == "-" else f"{100 * agree:.0f}%"
                    print(f"{f'{length}x{size}²':>10}{endpoint:>11}{length / t32:>10.1f}"
                          f"{length / t8:>10.1f}{t32 / t8:>9.2f}{rel:>8.3f}{cos[0]:>8}{cos[1]:>8}"
                          f"{agree_text:>8}")  # fmt: skip
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"clips: {origin}; weights: {weights}")
    if weights == "random":
        print(
            "RANDOM WEIGHTS: these error numbers say nothing about int8's accuracy (an untrained "
            "network's activations are not a trained one's); fetch the real weights "
            "(flow-features weights fetch flow_imagenet) and give --flow from your video."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="16,64", help="clip lengths")
    parser.add_argument("--sizes", default="224,112", help="square frame sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-xla", action="store_true", help="skip XLA (slow to compile)")
    parser.add_argument(
        "--max-isa", help="cap oneDNN's instruction set in both runtimes, e.g. AVX2 (see above)"
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 rows")
    parser.add_argument("--only-int8", action="store_true", help="only the int8 rows")
    parser.add_argument("--int8-clips", type=int, default=4, help="1 calibrates, the rest measure")
    parser.add_argument("--flow", help="a flow .npy (flow-features flow) for the int8 clips")
    parser.add_argument("--no-torch-cpu", action="store_true", help="skip the torch-on-the-CPU row")
    args = parser.parse_args()
    if args.max_isa:  # before TensorFlow or OpenVINO load oneDNN, which reads it once
        os.environ["ONEDNN_MAX_CPU_ISA"] = os.environ["OV_CPU_MAX_ISA"] = args.max_isa.upper()
        # TensorFlow 2.21's oneDNN cannot create its 3-D convolutions under a capped ISA ("could
        # not create a primitive descriptor"): it runs its Eigen kernels, as TF builds without
        # oneDNN do.
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

    import tensorflow as tf

    from napari_flow_features.model.i3d import build_i3d
    from napari_flow_features.model.runtime import (
        OpenVINOEncoder,
        cpu_info,
        installed_runtimes,
        native_bf16,
    )

    peak, how = cpu_peak_gflops()
    print(f"CPU: {cpu_info()['name']}; native bf16: {native_bf16()}")
    print(f"fp32 peak {peak:.0f} GFLOP/s ({how}); TensorFlow {tf.__version__}")
    if args.max_isa:
        print(
            f"instruction set capped at {args.max_isa.upper()} (ONEDNN_MAX_CPU_ISA); TensorFlow "
            "without its oneDNN kernels (TF_ENABLE_ONEDNN_OPTS=0)"
        )
    numpy_gemm, tf_gemm = numpy_gemm_gflops(), tf_gemm_gflops()
    gemm = max(tf_gemm, numpy_gemm)
    print(
        f"float32 GEMM 2048²: NumPy {numpy_gemm:.0f} GFLOP/s, TensorFlow {tf_gemm:.0f} "
        f"GFLOP/s; '% GEMM' below is against the faster, {gemm:.0f} GFLOP/s"
    )
    gpu, torch_cpu = torch_header(args.no_torch_cpu) if not args.only_int8 else (False, False)
    print(
        f"{'clip':>10}{'mode':>16}{'frames/s':>10}{'GFLOP/clip':>12}{'GFLOP/s':>9}{'% peak':>8}"
        f"{'% GEMM':>8}{'vs tf.fn':>9}{'rel L2':>10}"
    )
    for size in (int(s) for s in args.sizes.split(",")) if not args.only_int8 else ():
        for length in (int(c) for c in args.clips.split(",")):
            x = tf.constant(
                np.random.default_rng(0).uniform(-1, 1, (1, length, size, size, 2)), tf.float32
            )
            f32 = build_i3d(2, "Mixed_5c", clip_length=length, height=size, width=size)
            bf16 = build_i3d(
                2,
                "Mixed_5c",
                clip_length=length,
                height=size,
                width=size,
                precision="mixed_bfloat16",
            )
            bf16.set_weights(f32.get_weights())
            flops = conv_flops(f32)
            modes = {
                "eager": lambda t, m=f32: m(t, training=False),
                "tf.function": tf.function(lambda t, m=f32: m(t, training=False)),
                "XLA": tf.function(lambda t, m=f32: m(t, training=False), jit_compile=True),
                "bf16 tf.fn": tf.function(lambda t, m=bf16: m(t, training=False)),
            }
            if args.no_xla:
                modes.pop("XLA")
            if not native_bf16():
                modes.pop("bf16 tf.fn")  # ~13x slower without native bf16: not a runtime we use
            rel = {}
            if "openvino" in installed_runtimes():
                ov = OpenVINOEncoder(
                    f32, cache_dir=os.path.join(os.path.dirname(__file__), ".ov-cache")
                )
                xn = np.asarray(x)
                modes["openvino f32"] = lambda t, e=ov, xn=xn: e(xn)
                ref = np.asarray(modes["tf.function"](x))
                got = ov(xn)
                rel["openvino f32"] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            times = {name: time_call(fn, x, args.repeats) for name, fn in modes.items()}
            if gpu or torch_cpu:
                ref = np.asarray(modes["tf.function"](x))
                for name, (t, err) in torch_rows(
                    f32, np.array(x), ref, gpu, torch_cpu, args.repeats
                ).items():
                    times[name], rel[name] = t, err
            base = times["tf.function"]
            for name, t in times.items():
                gflops = flops / t / 1e9
                on_cpu = name != "bf16 tf.fn" and not name.startswith("torch GPU")
                pct = f"{100 * gflops / peak:.0f}" if on_cpu else "-"
                pct_gemm = f"{100 * gflops / gemm:.0f}" if not name.startswith("torch GPU") else "-"
                err = f"{rel[name]:.1e}" if name in rel else "-"
                print(
                    f"{f'{length}x{size}²':>10}{name:>16}{length / t:>10.1f}{flops / 1e9:>12.1f}"
                    f"{gflops:>9.1f}{pct:>8}{pct_gemm:>8}{base / t:>9.2f}{err:>10}"
                )
    if gpu and not args.only_int8:
        print("rel L2 of 'torch GPU f16/bf16': against 'torch GPU f32'; of the others: tf.function")
    if not args.no_int8 and importlib.util.find_spec("nncf") is not None:
        int8_rows(args)


if __name__ == "__main__":
    main()
