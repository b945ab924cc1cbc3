"""Benchmark the I3D flow encoder (to Mixed_5c): each inference runtime against a bare tf.function.

Modes: eager, tf.function (the baseline), XLA, OpenVINO float32 (our ``runtime: openvino``, with its
relative L2 against tf.function), and the bfloat16 variants only where the CPU has native bf16.

    python benchmarks/bench_encoder.py [--clips 16,64] [--sizes 224,112] [--repeats 3]
                                       [--max-isa AVX2]

``--max-isa AVX2`` caps the instruction set both runtimes' oneDNN kernels may use
(``ONEDNN_MAX_CPU_ISA``, which TensorFlow's oneDNN and OpenVINO's CPU plugin both read; and
``OV_CPU_MAX_ISA`` for OpenVINO's own kernels where the build honours it): on an AVX-512 machine it
shows what a CPU with AVX2 only gets, the CPU class our speed targets were first measured on.

Prints frames/s per clip shape and mode, the FLOPs per clip counted from the layer shapes (2 per
multiply-add of every convolution; pools and batch norm are left out, they are < 1 %), the achieved
GFLOP/s and the fraction of this CPU's fp32 peak. The peak is cores × clock × FMA units × 16 fp32
lanes × 2, with the clock from /proc/cpuinfo and 2 AVX-512 FMA units per core when the CPU has
avx512f (8 lanes with AVX2 only). The baseline for the ratios is tf.function float32 in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="16,64", help="clip lengths")
    parser.add_argument("--sizes", default="224,112", help="square frame sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-xla", action="store_true", help="skip XLA (slow to compile)")
    parser.add_argument(
        "--max-isa", help="cap oneDNN's instruction set in both runtimes, e.g. AVX2 (see above)"
    )
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
    print(
        f"{'clip':>10}{'mode':>16}{'frames/s':>10}{'GFLOP/clip':>12}{'GFLOP/s':>9}{'% peak':>8}"
        f"{'% GEMM':>8}{'vs tf.fn':>9}{'rel L2':>10}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
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
            base = times["tf.function"]
            for name, t in times.items():
                gflops = flops / t / 1e9
                pct = f"{100 * gflops / peak:.0f}" if name != "bf16 tf.fn" else "-"
                err = f"{rel[name]:.1e}" if name in rel else "-"
                print(
                    f"{f'{length}x{size}²':>10}{name:>16}{length / t:>10.1f}{flops / 1e9:>12.1f}"
                    f"{gflops:>9.1f}{pct:>8}{100 * gflops / gemm:>8.0f}{base / t:>9.2f}{err:>10}"
                )


if __name__ == "__main__":
    main()
