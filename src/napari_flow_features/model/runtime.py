"""Inference runtimes for the I3D encoder: the Keras model compiled for the fastest CPU runtime.

The Keras model stays the source of truth (training, registry, checkpoint import). For inference it is
run through one of:

- ``tensorflow``: a cached ``tf.function`` of the Keras model (always available);
- ``openvino``: the same graph converted by OpenVINO (``ov.convert_model`` on the ``tf.function``'s
  concrete function for one input shape), compiled for this CPU and cached on disk, keyed by the
  model's weights, the input shape, the precision and the OpenVINO version.

``auto`` picks OpenVINO when it is installed (measured faster on AVX2 CPUs, about equal on AVX-512
ones: see docs/performance.md), else TensorFlow. bfloat16 is used only on CPUs with native bf16
(``avx512_bf16`` or ``amx_bf16``); elsewhere it is ~13x slower than float32, so asking for it is an
error. Outputs of every runtime equal the Keras model's within relative L2 ≤ 1e-5 in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import RUNTIMES
from ..errors import BadInputError

if TYPE_CHECKING:
    from .torch_runtime import TorchEncoder

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Compiled input shapes kept per model (chunked extraction needs one or two).
_SHAPES_KEPT = 4


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """The CPU's model name and feature flags (``/proc/cpuinfo`` on Linux; empty flags elsewhere)."""
    name, flags = platform.processor() or platform.machine(), list[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                name = value.strip()
            elif key == "flags" and not flags:
                flags = value.split()
    return {"name": name, "flags": flags, "cores": os.cpu_count() or 1}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512-BF16 or AMX)."""
    return any(flag in cpu_info()["flags"] for flag in BF16_FLAGS)


def check_precision(precision: str) -> None:
    """Refuse bfloat16 on a CPU without native bf16, saying why."""
    if precision == "float32":
        return
    if precision != "mixed_bfloat16":
        raise BadInputError(f"precision must be float32 or mixed_bfloat16, not {precision!r}")
    if not native_bf16():
        raise BadInputError(
            f"precision mixed_bfloat16 needs a CPU with native bfloat16 ({' or '.join(BF16_FLAGS)} "
            f"in its flags); this one ({cpu_info()['name']}) has none, where bfloat16 runs about "
            "13x slower than float32. Use precision float32."
        )


def installed_runtimes(cuda_available: Callable[[], bool] | None = None) -> list[str]:
    """Runtimes importable here, fastest first.

    ``torch`` comes first when PyTorch sees a CUDA GPU (``cuda_available``, default
    :func:`~.torch_runtime.cuda_available`, asked only when PyTorch is installed), last otherwise
    (slower than both on the CPUs measured: docs/performance.md).
    """
    from . import torch_runtime

    found = ["openvino"] if importlib.util.find_spec("openvino") is not None else []
    found.append("tensorflow")
    if torch_runtime.torch_installed():
        if (cuda_available or torch_runtime.cuda_available)():
            found.insert(0, "torch")
        else:
            found.append("torch")
    return found


def resolve_runtime(name: str, cuda_available: Callable[[], bool] | None = None) -> str:
    """``auto`` → the fastest installed runtime; an explicit name must be installed.

    ``cuda_available`` (default: ask PyTorch) decides whether ``auto`` runs on a GPU.
    """
    if name not in RUNTIMES:
        raise BadInputError(f"runtime must be one of {', '.join(RUNTIMES)}, not {name!r}")
    installed = installed_runtimes(cuda_available)
    if name == "auto":
        return installed[0]
    if name not in installed:
        raise BadInputError(
            f"runtime {name} is not installed: pip install {name} (installed: {', '.join(installed)})"
        )
    return name


def weights_digest(model: Any) -> str:
    """SHA-256 of the model's architecture name and every weight (changes when any weight does)."""
    digest = hashlib.sha256(model.name.encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.path}|{value.shape}|{value.dtype}".encode())
        digest.update(value.data)
    return digest.hexdigest()


def runtime_cache_dir() -> Path:
    """Compiled models live in the package's cache folder, under ``runtimes/``.

    Returns
    -------
    pathlib.Path
        :func:`napari_flow_features._cache_dirs.runtime_cache_dir`, where every cache location is
        kept.
    """
    from .._cache_dirs import runtime_cache_dir as location

    return location()


class TensorFlowEncoder:
    """The Keras model through one cached ``tf.function`` (no XLA: slower on these CPUs)."""

    name = "tensorflow"

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self._call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Encode clips ``[B, L, H, W, C]`` → feature maps, float32."""
        import tensorflow as tf

        out = self._call(tf.convert_to_tensor(batch, tf.float32))
        return np.asarray(out, dtype=np.float32)


class OpenVINOEncoder:
    """The Keras model converted and compiled by OpenVINO, one compiled model per input shape.

    Conversions are cached on disk (``cache_dir/<key>/model.xml``), so a second run with the same
    weights and shape only compiles (about a second).
    """

    name = "openvino"

    def __init__(
        self, model: Any, precision: str = "float32", cache_dir: str | os.PathLike | None = None
    ) -> None:
        import openvino as ov

        self.model = model
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else runtime_cache_dir()
        self._core = ov.Core()
        self._version = ov.__version__
        self._digest = weights_digest(model)
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()
        #: Whether the last :meth:`compiled_for` call converted the model (False: read from cache).
        self.converted = False

    def _key(self, shape: tuple) -> str:
        text = f"{self._digest}|{shape}|{self.precision}|openvino {self._version}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def compiled_for(self, shape: tuple) -> Any:
        """The compiled model for input ``shape`` (converted, or read from the disk cache)."""
        shape = tuple(int(s) for s in shape)
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        folder = self.cache_dir / self._key(shape)
        xml = folder / "model.xml"
        self.converted = False
        try:
            ov_model = self._core.read_model(str(xml)) if xml.is_file() else None
        except Exception:  # a damaged cache entry: convert again
            ov_model = None
        if ov_model is None:
            ov_model = self._convert(shape)
            self._save(ov_model, folder)
            self.converted = True
        hint = "bf16" if self.precision == "mixed_bfloat16" else "f32"
        # OpenVINO defaults to bf16 on CPUs that have it: float32 must be asked for.
        compiled = self._core.compile_model(
            ov_model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        )
        self._compiled[shape] = compiled
        while len(self._compiled) > _SHAPES_KEPT:
            self._compiled.popitem(last=False)
        return compiled

    def _convert(self, shape: tuple) -> Any:
        import openvino as ov
        import tensorflow as tf

        model = self.model
        function = tf.function(lambda x: model(x, training=False))
        concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32))
        return ov.convert_model(concrete)

    def _save(self, ov_model: Any, folder: Path) -> None:
        import openvino as ov

        with contextlib.suppress(OSError):  # no cache (read-only home): still runs
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
            try:
                ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
                os.replace(tmp, folder)  # the whole entry appears at once
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not folder.is_dir():
                    raise

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Encode clips ``[B, L, H, W, C]`` → feature maps, float32 (compiled per shape)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        compiled = self.compiled_for(batch.shape)
        return np.asarray(compiled(batch)[0], dtype=np.float32)


def make_encoder(
    model: Any,
    runtime: str = "auto",
    precision: str = "float32",
    cache_dir: str | os.PathLike | None = None,
) -> TensorFlowEncoder | OpenVINOEncoder | TorchEncoder:
    """An encoder callable ``clips [B, L, H, W, C] → maps`` on the chosen runtime.

    ``torch`` (explicit, or ``auto`` with a CUDA GPU) runs the Keras model's weights in PyTorch;
    ``auto`` keeps to the CPU runtimes for a model that is not a plain I3D (a registry classifier).
    """
    if runtime in ("auto", "torch") and resolve_runtime(runtime) == "torch":
        from .torch_i3d import keras_endpoint
        from .torch_runtime import TorchEncoder

        if runtime == "torch" or _plain_i3d(model, keras_endpoint):
            return TorchEncoder(model, precision=precision)
        cpu = [r for r in installed_runtimes() if r != "torch"]
        runtime = "tensorflow" if precision == "mixed_bfloat16" else cpu[0]
    check_precision(precision)
    if precision == "mixed_bfloat16" and runtime in ("auto", "tensorflow"):
        return TensorFlowEncoder(model)  # the bf16 Keras graph does not convert to OpenVINO
    if precision == "mixed_bfloat16":
        raise BadInputError(
            "runtime openvino runs float32 models; use runtime tensorflow for mixed_bfloat16"
        )
    name = resolve_runtime(runtime)
    if name == "openvino":
        return OpenVINOEncoder(model, precision, cache_dir)
    return TensorFlowEncoder(model)


def _plain_i3d(model: Any, keras_endpoint: Callable[[Any], str]) -> bool:
    try:
        keras_endpoint(model)
    except BadInputError:
        return False
    return True
