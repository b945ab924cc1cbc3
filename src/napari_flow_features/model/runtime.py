"""Inference runtimes for the I3D encoder: the Keras model compiled for the fastest CPU runtime.

The Keras model stays the source of truth (training, registry, checkpoint import). For inference it is
run through one of:

- ``tensorflow``: a cached ``tf.function`` of the Keras model (always available);
- ``openvino``: the same graph converted by OpenVINO (``ov.convert_model`` on the ``tf.function``'s
  concrete function for one input shape), compiled for this CPU and cached on disk, keyed by the
  model's weights, the input shape, the precision and the OpenVINO version. OpenVINO is imported
  with its usage telemetry stubbed (``model/_openvino.py``: no network, no child process), and the
  cache is bounded (``model/runtime_cache.py``: least recently used entries out above
  ``$NAPARI_FLOW_FEATURES_RUNTIME_CACHE_MB``, default 512 MB).

``precision: int8`` (never a default) runs the OpenVINO model quantised by NNCF's post-training
quantisation, calibrated on the first clips the encoder is given for each input shape (the user's
own frames); the quantised model is cached under a key that includes the calibration clips'
SHA-256, and :meth:`OpenVINOEncoder.describe` records the calibration for the run's metadata.

- ``torch``: the I3D rebuilt in PyTorch from the Keras model's weights (``model/torch_i3d.py``),
  on a CUDA GPU when PyTorch sees one (``model/torch_runtime.py``).

``auto`` picks ``torch`` when PyTorch is installed and sees a CUDA GPU; else OpenVINO when it is
installed (measured faster on AVX2 CPUs, about equal on AVX-512 ones: see docs/performance.md),
else TensorFlow. bfloat16 is used only on CPUs with native bf16
(``avx512_bf16`` or ``amx_bf16``); elsewhere it is ~13x slower than float32, so asking for it is an
error. Outputs of every runtime equal the Keras model's within relative L2 ≤ 1e-5 in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import platform
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import RUNTIMES
from ..errors import BadInputError
from . import runtime_cache

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .torch_runtime import TorchEncoder

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Compiled input shapes kept per model (chunked extraction needs one or two).
_SHAPES_KEPT = 4


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """The CPU's model name and feature flags (``/proc/cpuinfo`` on Linux; empty flags elsewhere)."""
    # platform.machine(), not platform.processor(): that one runs `uname -p` in a child process.
    name, flags = platform.machine(), list[str]()
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


def check_precision(precision: str, runtime: str | None = None) -> None:
    """Refuse a precision this machine or runtime cannot run, saying why.

    Parameters
    ----------
    precision
        ``float32``, ``mixed_bfloat16`` (a CPU with native bf16) or ``int8`` (OpenVINO with NNCF).
    runtime
        The runtime asked for (``auto``, ``tensorflow``, ``openvino``), or None not to check it.

    Raises
    ------
    BadInputError
        What is missing: native bf16, NNCF, or an OpenVINO runtime for int8.
    """
    if precision == "float32":
        return
    if precision == "int8":
        check_int8(runtime)
        return
    if precision != "mixed_bfloat16":
        raise BadInputError(f"precision must be float32, mixed_bfloat16 or int8, not {precision!r}")
    if not native_bf16():
        raise BadInputError(
            f"precision mixed_bfloat16 needs a CPU with native bfloat16 ({' or '.join(BF16_FLAGS)} "
            f"in its flags); this one ({cpu_info()['name']}) has none, where bfloat16 runs about "
            "13x slower than float32. Use precision float32."
        )


def check_int8(runtime: str | None = None) -> None:
    """Refuse ``precision: int8`` without NNCF and OpenVINO, or on the TensorFlow runtime."""
    if runtime in ("tensorflow", "torch"):
        raise BadInputError(
            "precision int8 runs on the openvino runtime only (runtime auto or openvino), not "
            f"{runtime}"
        )
    missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        raise BadInputError(
            f"precision int8 needs {' and '.join(missing)} (post-training quantisation): "
            "pip install 'napari-flow-features[int8]'"
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

    def describe(self) -> dict[str, Any]:
        """What the run's metadata records about this encoder beyond its name (nothing)."""
        return {}


class OpenVINOEncoder:
    """The Keras model converted and compiled by OpenVINO, one compiled model per input shape.

    Conversions are cached on disk (``cache_dir/<key>/model.xml``), so a second run with the same
    weights and shape only compiles (about a second). With ``precision="int8"`` the first batch of
    each input shape calibrates NNCF's post-training quantisation of the converted model.
    """

    name = "openvino"

    def __init__(
        self, model: Any, precision: str = "float32", cache_dir: str | os.PathLike | None = None
    ) -> None:
        from ._openvino import import_openvino

        ov = import_openvino()
        self.model = model
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else runtime_cache_dir()
        self._core = ov.Core()
        self._version = ov.__version__
        self._digest = weights_digest(model)
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()
        #: Whether the last :meth:`compiled_for` call converted the model (False: read from cache).
        self.converted = False
        #: int8 only: per input shape, the calibration clips' SHA-256 and size.
        self.calibration: dict[tuple, dict[str, Any]] = {}
        self._int8_entries: dict[tuple, Path] = {}

    def _key(self, shape: tuple, precision: str = "float32", extra: str = "") -> str:
        text = f"{self._digest}|{shape}|{precision}|openvino {self._version}{extra}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def compiled_for(self, shape: tuple, calibration: np.ndarray | None = None) -> Any:
        """The compiled model for input ``shape`` (converted, or read from the disk cache).

        Parameters
        ----------
        shape
            The input shape ``(B, L, H, W, C)``.
        calibration
            int8 only: clips of that shape to calibrate the quantisation with, when this shape
            has none yet.

        Returns
        -------
        openvino.CompiledModel
            Compiled for this CPU in float32 (int8 where quantised).
        """
        shape = tuple(int(s) for s in shape)
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        self.converted = False
        float_entry = self.cache_dir / self._key(shape)
        if self.precision == "int8":
            entry, build = self._int8_entry(shape, float_entry, calibration)
        else:
            entry, build = float_entry, lambda: self._convert(shape)
        hint = "bf16" if self.precision == "mixed_bfloat16" else "f32"
        with runtime_cache.using(entry):
            # OpenVINO defaults to bf16 on CPUs that have it: float32 must be asked for.
            compiled = self._core.compile_model(
                self._read_or_build(entry, build),
                "CPU",
                {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"},
            )
        self._compiled[shape] = compiled
        while len(self._compiled) > _SHAPES_KEPT:
            self._compiled.popitem(last=False)
        return compiled

    def _read_or_build(self, entry: Path, build: Any) -> Any:
        """The OpenVINO model in cache ``entry``, or ``build()`` saved there (then the cap)."""
        xml = entry / "model.xml"
        try:
            if xml.is_file():
                with runtime_cache.using(entry):
                    return self._core.read_model(str(xml))
        except Exception:  # a damaged or vanished cache entry: build it again
            logger.info("runtime cache entry %s unreadable: building it again", entry.name)
        ov_model = build()
        self._save(ov_model, entry)
        return ov_model

    def _int8_entry(
        self, shape: tuple, float_entry: Path, calibration: np.ndarray | None
    ) -> tuple[Path, Any]:
        """The int8 cache entry for ``shape`` calibrated on ``calibration``, and its builder.

        A shape calibrated earlier in this encoder's life keeps its entry (a shape dropped from
        memory and met again runs the same model, not one calibrated on the later clips).
        """
        known = self._int8_entries.get(shape)
        if known is not None and (known / "model.xml").is_file():
            return known, lambda: self._core.read_model(str(known / "model.xml"))
        if calibration is None or tuple(calibration.shape) != shape:
            raise BadInputError(
                f"precision int8 needs calibration clips of shape {shape} (the first batch "
                "the encoder is given)"
            )
        clips = np.ascontiguousarray(calibration, dtype=np.float32)
        digest = hashlib.sha256(clips.data).hexdigest()
        self.calibration[shape] = {
            "input_shape": list(shape),
            "clips": int(shape[0]),
            "frames_per_clip": int(shape[1]),
            "sha256": digest,
            "nncf": _nncf_version(),
        }
        entry = self.cache_dir / self._key(shape, "int8", f"|{digest}|nncf {_nncf_version()}")
        self._int8_entries[shape] = entry

        def build() -> Any:
            float_model = self._read_or_build(float_entry, lambda: self._convert(shape))
            return quantize(float_model, clips)

        return entry, build

    def _convert(self, shape: tuple) -> Any:
        import tensorflow as tf

        from ._openvino import converter_without_telemetry, import_openvino

        ov = import_openvino()
        model = self.model
        function = tf.function(lambda x: model(x, training=False))
        concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32))
        with converter_without_telemetry():
            ov_model = ov.convert_model(concrete)
        self.converted = True
        return ov_model

    def _save(self, ov_model: Any, entry: Path) -> None:
        """Write ``ov_model`` as cache ``entry`` (whole or not at all), then apply the cap."""
        from ._openvino import import_openvino

        ov = import_openvino()
        try:  # no cache (read-only home): still runs
            tmp = runtime_cache.new_entry_dir(entry)
        except OSError:
            return
        try:
            ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
            runtime_cache.publish(tmp, entry)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        runtime_cache.prune(self.cache_dir, keep=entry)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Encode clips ``[B, L, H, W, C]`` → feature maps, float32 (compiled per shape)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        compiled = self.compiled_for(batch.shape, batch if self.precision == "int8" else None)
        return np.asarray(compiled(batch)[0], dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """What the run's metadata records about this encoder beyond its name.

        Returns
        -------
        dict
            For int8: ``int8_calibration``, one record per input shape (clips, SHA-256, NNCF
            version) and a note that the features are quantised; else empty.
        """
        if self.precision != "int8":
            return {}
        return {
            "int8_calibration": list(self.calibration.values()),
            "int8_note": INT8_NOTE,
        }


#: What every table of an int8 run carries.
INT8_NOTE = (
    "INT8: the encoder ran quantised to 8 bits (NNCF post-training quantisation calibrated on the "
    "first clips of this run); features differ from float32 (see docs/performance.md)"
)


def _nncf_version() -> str:
    from ._openvino import import_nncf

    return str(import_nncf().__version__)


def quantize(ov_model: Any, clips: np.ndarray) -> Any:
    """NNCF post-training quantisation of ``ov_model`` calibrated on ``clips`` (its input shape).

    Parameters
    ----------
    ov_model
        The float32 OpenVINO model, input shape ``clips.shape``.
    clips
        Calibration clips ``[B, L, H, W, C]`` float32 (one calibration sample: the model's input).

    Returns
    -------
    openvino.Model
        The model with int8 weights and activations where NNCF places quantisers.
    """
    from ._openvino import import_nncf

    nncf = import_nncf()
    nncf.set_log_level(logging.WARNING)
    started = time.perf_counter()
    # NNCF draws progress bars on stdout (rich), which would mix into our tables and bars.
    with contextlib.redirect_stdout(io.StringIO()):
        quantised = nncf.quantize(
            ov_model,
            nncf.Dataset([clips]),
            subset_size=1,
            preset=nncf.QuantizationPreset.PERFORMANCE,
        )
    logger.info(
        "int8: quantised the encoder for input %s in %.1f s (NNCF %s)",
        tuple(clips.shape),
        time.perf_counter() - started,
        nncf.__version__,
    )
    return quantised


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
    if precision != "int8" and runtime in ("auto", "torch") and resolve_runtime(runtime) == "torch":
        from .torch_i3d import keras_endpoint
        from .torch_runtime import TorchEncoder

        if runtime == "torch" or _plain_i3d(model, keras_endpoint):
            return TorchEncoder(model, precision=precision)
        cpu = [r for r in installed_runtimes() if r != "torch"]
        runtime = "tensorflow" if precision == "mixed_bfloat16" else cpu[0]
    check_precision(precision, runtime)
    if precision == "mixed_bfloat16" and runtime in ("auto", "tensorflow"):
        return TensorFlowEncoder(model)  # the bf16 Keras graph does not convert to OpenVINO
    if precision == "mixed_bfloat16":
        raise BadInputError(
            "runtime openvino runs float32 models; use runtime tensorflow for mixed_bfloat16"
        )
    if precision == "int8":  # OpenVINO only (check_precision said so)
        return OpenVINOEncoder(model, precision, cache_dir)
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
