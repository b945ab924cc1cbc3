"""The ``torch`` inference runtime: the I3D encoder in PyTorch, on a CUDA GPU when one is visible.

Importing this module imports neither PyTorch nor TensorFlow; :class:`TorchEncoder` imports PyTorch
when it is made. See docs/performance.md ("Which runtime runs where") for why PyTorch is the GPU
runtime.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError

#: Precisions of the torch runtime. float32 is IEEE float32 on a GPU too (PyTorch's default lets
#: cuDNN use TF32 for float32 convolutions, about 1e-3 off). The others run on a GPU only, only when
#: asked for: their error against float32 is printed by benchmarks/bench_gpu.py.
TORCH_PRECISIONS = ("float32", "tf32", "float16", "bfloat16")
#: The bfloat16 name the rest of the package uses (config ``precision``) means bfloat16 here.
_ALIASES = {"mixed_bfloat16": "bfloat16"}


def torch_installed() -> bool:
    """Whether PyTorch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is visible (cheap: no import of PyTorch)."""
    return (
        Path("/proc/driver/nvidia").exists()
        or Path("/dev/nvidiactl").exists()
        or shutil.which("nvidia-smi") is not None
    )


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether PyTorch is installed and sees a CUDA GPU (imports PyTorch only if a driver is there)."""
    if not torch_installed() or not nvidia_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def torch_precision(precision: str) -> str:
    """The torch precision for a configured one (``mixed_bfloat16`` → ``bfloat16``), checked."""
    name = _ALIASES.get(precision, precision)
    if name not in TORCH_PRECISIONS:
        raise BadInputError(
            f"precision must be one of {', '.join(TORCH_PRECISIONS)} for runtime torch, not "
            f"{precision!r}"
        )
    return name


def pick_device(device: str | None = None) -> str:
    """``device`` as given, else ``cuda`` when PyTorch sees a GPU, else ``cpu``."""
    if device is not None:
        return device
    return "cuda" if cuda_available() else "cpu"


def device_label(device: Any) -> str:
    """Name the device that runs: ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu"``."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


class TorchEncoder:
    """The I3D encoder in PyTorch, built from the Keras model's weights (or an exported ``.npz``).

    Parameters
    ----------
    source : keras.Model, str, PathLike or mapping
        A Keras I3D (its weights are read once), an ``.npz`` written by
        :func:`~.torch_i3d.export_torch_weights`, or :func:`~.torch_i3d.keras_arrays` output.
    endpoint : str, optional
        The end point to compute (default: the source's).
    device : str, optional
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``; default a CUDA GPU when visible, else the CPU.
    precision : {"float32", "tf32", "float16", "bfloat16"}, default "float32"
        float32 is IEEE float32 everywhere; the others only on a GPU (``tf32``: float32 storage,
        TensorFloat-32 convolutions; ``mixed_bfloat16`` means bfloat16). Outputs are float32.
    """

    name = "torch"

    def __init__(
        self,
        source: Any,
        endpoint: str | None = None,
        device: str | None = None,
        precision: str = "float32",
    ) -> None:
        """Load the network on the device."""
        import torch

        from .torch_i3d import keras_arrays, load_torch_i3d

        self.precision = torch_precision(precision)
        self.device = torch.device(pick_device(device))
        if self.precision != "float32" and self.device.type != "cuda":
            raise BadInputError(
                f"precision {self.precision} runs on a GPU only; this run is on {self.device.type}: "
                "use precision float32"
            )
        if not isinstance(source, (str, os.PathLike, Mapping)):
            source = keras_arrays(source)
        self.dtype = torch.float32 if self.precision == "tf32" else getattr(torch, self.precision)
        self.module = load_torch_i3d(source, endpoint, self.device, self.dtype)
        #: The device that runs, for the run's metadata (``runtime_device``).
        self.device_label = device_label(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fastest algorithm per input shape

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Encode clips ``[B, L, H, W, C]`` → feature maps, float32 on the host."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            _set_conv_tf32(self.precision == "tf32")  # process-wide: set for each call
            x = x.pin_memory()
        with torch.inference_mode():
            out = self.module(x.to(self.device, self.dtype, non_blocking=True))
            return out.float().cpu().numpy()


def _set_conv_tf32(allowed: bool) -> None:
    """Let cuDNN use TF32 for float32 convolutions, or not (PyTorch's default allows it)."""
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # PyTorch ≥ 2.9
        conv.fp32_precision = "tf32" if allowed else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = allowed
