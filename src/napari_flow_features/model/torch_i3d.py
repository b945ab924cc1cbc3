"""The I3D encoder in plain PyTorch, built from the Keras model's weights (no TensorFlow needed).

The Keras model (:mod:`.i3d`) stays the source of truth. Its weights are exported once as a plain
``.npz`` of arrays keyed ``<layer name>/<weight name>`` (``Mixed_4b.Branch_1.Conv3d_0b_3x3.conv_3d/
kernel``, ``….batch_norm/moving_mean``) plus a JSON ``__meta__`` entry, so a machine with PyTorch
and no TensorFlow (a GPU workstation, a cluster's GPU node) runs the same network.

Numerics follow the Keras (TensorFlow) graph exactly:

- ``SAME`` padding as TensorFlow computes it: ``out = ceil(n / stride)``, total padding
  ``max((out - 1) * stride + kernel - n, 0)``, the odd pixel **after** (asymmetric for even totals,
  e.g. the stride-2 7×7×7 stem on an even size); convolutions pad with zeros, max pooling with
  ``-inf`` (TensorFlow ignores padded cells in a max);
- every ``Unit3D`` is a bias-free convolution, batch normalisation without scale
  (``epsilon = 1e-3``, moving statistics) and ReLU: the normalisation is folded into the
  convolution's weights and a bias (computed in float64);
- ``Logits``: average pooling 2×7×7 ``VALID`` at stride 1, a 1×1×1 convolution with bias, then the
  mean over the remaining time and space cells (Keras' ``GlobalAveragePooling3D``); ``Predictions``
  its softmax.

Input and output are channels-last like the Keras model: clips ``[B, L, H, W, C]`` → feature maps
``[B, L', H', W', C']`` (or ``[B, classes]`` at Logits/Predictions).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError, CorruptFileError
from .i3d import BN_EPSILON, ENDPOINTS, MIXED_CHANNELS

#: Written into every export's ``__meta__``; a file without it is refused.
FORMAT = "napari-flow-features/torch-i3d"
FORMAT_VERSION = 1

Arrays = Mapping[str, np.ndarray]
_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")
_ONES = (1, 1, 1)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding along one axis.

    Parameters
    ----------
    size, kernel, stride : int
        Input length, kernel length and stride along the axis.

    Returns
    -------
    tuple of int
        Cells padded before and after (the odd one after).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(
    x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad ``[B, C, L, H, W]`` for SAME; symmetric padding is returned for the op to apply."""
    pads = [same_padding(int(x.shape[2 + i]), kernel[i], stride[i]) for i in range(3)]
    if all(before == after for before, after in pads):
        return x, tuple(before for before, _ in pads)
    flat = [p for before_after in reversed(pads) for p in before_after]  # W, H, then L
    return F.pad(x, flat, value=value), (0, 0, 0)


class Unit3d(nn.Module):
    """Convolution (SAME) with batch normalisation folded in, then ReLU (optional)."""

    def __init__(
        self, weight: np.ndarray, bias: np.ndarray, stride: tuple[int, ...], relu: bool = True
    ) -> None:
        """Take a ``[out, in, kt, kh, kw]`` weight and ``[out]`` bias (already folded)."""
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(bias), requires_grad=False)
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.stride = tuple(int(s) for s in stride)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``[B, C, L, H, W]``."""
        x, padding = _pad_same(x, self.kernel, self.stride, 0.0)
        if x.device.type == "cpu" and x.dtype == torch.float32 and _MKLDNN:
            # F.conv3d takes PyTorch's naive 3-D kernel for one small clip (its heuristic is
            # tuned for 2-D); oneDNN's is 1.7x faster here, same values.
            y = torch.mkldnn_convolution(x, self.weight, self.bias, padding, self.stride, _ONES, 1)
        else:
            y = F.conv3d(x, self.weight, self.bias, self.stride, padding)
        return F.relu(y, inplace=True) if self.relu else y


class MaxPoolSame(nn.Module):
    """Max pooling with TensorFlow's SAME padding (padded cells never win)."""

    def __init__(self, kernel: tuple[int, ...], stride: tuple[int, ...]) -> None:
        """Pool with ``kernel`` at ``stride`` (time, height, width)."""
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``[B, C, L, H, W]``."""
        x, padding = _pad_same(x, self.kernel, self.stride, float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride, padding)


class Mixed(nn.Module):
    """An Inception block: four branches concatenated along channels."""

    def __init__(self, units: dict[str, Unit3d]) -> None:
        """Take the block's six units keyed by their Keras names' tails."""
        super().__init__()
        self.units = nn.ModuleDict({k.replace(".", "_"): u for k, u in units.items()})
        self.pool = MaxPoolSame((3, 3, 3), (1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``[B, C, L, H, W]`` through the four branches."""
        u = list(self.units.values())  # b0, b1a, b1, b2a, b2, b3: insertion order
        return torch.cat([u[0](x), u[2](u[1](x)), u[4](u[3](x)), u[5](self.pool(x))], dim=1)


class Logits(nn.Module):
    """DeepMind's logits: 2×7×7 VALID average pool, 1×1×1 convolution, mean over time and space."""

    def __init__(self, conv: Unit3d, softmax: bool) -> None:
        """Wrap the 1×1×1 convolution (with bias, no ReLU); ``softmax`` for Predictions."""
        super().__init__()
        self.conv, self.softmax = conv, softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1024, L', H', W']`` → ``[B, classes]``."""
        if x.shape[2] < 2 or x.shape[3] < 7 or x.shape[4] < 7:
            raise BadInputError(
                f"Logits need a Mixed_5c map of at least 2×7×7 (a 9×193×193 clip); got "
                f"{tuple(x.shape[2:])}"
            )
        y = self.conv(F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))).mean(dim=(2, 3, 4))
        return torch.softmax(y.float(), dim=-1) if self.softmax else y


class TorchI3D(nn.Module):
    """I3D up to an end point, channels-last in and out like the Keras model."""

    def __init__(self, stages: list[tuple[str, nn.Module]], endpoint: str, in_channels: int):
        """Chain ``stages`` (end point name → module) up to ``endpoint``."""
        super().__init__()
        self.stages = nn.ModuleDict(dict(stages))
        self.endpoint = endpoint
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, L, H, W, C]`` → ``[B, L', H', W', C']`` (``[B, classes]`` at Logits)."""
        if x.ndim != 5 or x.shape[-1] != self.in_channels:
            raise BadInputError(
                f"Clips must be [B, L, H, W, {self.in_channels}]; got shape {tuple(x.shape)}"
            )
        y = x.permute(0, 4, 1, 2, 3)
        for stage in self.stages.values():
            y = stage(y)
        return y if y.ndim == 2 else y.permute(0, 2, 3, 4, 1)


# -- weights: Keras → arrays → npz → torch ----------------------------------------------------------


def keras_endpoint(model: Any) -> str:
    """The last I3D end point a Keras model built by :func:`~.i3d.build_i3d` computes.

    Parameters
    ----------
    model : keras.Model
        The model.

    Returns
    -------
    str
        Its end point.

    Raises
    ------
    BadInputError
        The model is not a plain I3D (e.g. a registry classifier with a head of its own).
    """
    names = {layer.name for layer in model.layers}
    present = [p for p in ENDPOINTS if p in names or f"{p}.conv_3d" in names]
    output = model.layers[-1].name if len(model.outputs) == 1 else ""
    last = present[-1] if present else None
    if last is None or not output.startswith((last, "to_float32")):
        raise BadInputError(
            f"Model {model.name!r} is not a plain I3D (its output is {output!r}); the torch runtime "
            "runs I3D end points only: use runtime openvino or tensorflow"
        )
    return last


def keras_arrays(model: Any) -> dict[str, np.ndarray]:
    """Every weight of an I3D Keras model as float32 arrays, plus the ``__meta__`` entry.

    Parameters
    ----------
    model : keras.Model
        A model built by :func:`~.i3d.build_i3d` (any end point, flow or RGB).

    Returns
    -------
    dict
        ``{"<layer>/<weight>": array, ..., "__meta__": JSON string array}``.
    """
    endpoint = keras_endpoint(model)
    arrays: dict[str, np.ndarray] = {}
    for layer in model.layers:
        for weight in layer.weights:
            arrays[f"{layer.name}/{weight.name}"] = np.asarray(weight.numpy(), dtype=np.float32)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "endpoint": endpoint,
        "in_channels": int(model.inputs[0].shape[-1]),
        "model_name": model.name,
    }
    arrays["__meta__"] = np.array(json.dumps(meta))
    return arrays


def export_torch_weights(model: Any, path: str | os.PathLike) -> Path:
    """Write an I3D Keras model's weights as a plain ``.npz`` that :func:`load_torch_i3d` reads.

    The file is written under a temporary name and renamed into place when complete.

    Parameters
    ----------
    model : keras.Model
        A model built by :func:`~.i3d.build_i3d`.
    path : str or PathLike
        The ``.npz`` to write.

    Returns
    -------
    Path
        ``path``.
    """
    from ..io._atomic import temp_sibling

    final = Path(path)
    if final.suffix != ".npz":
        raise BadInputError(f"Torch weights are written as .npz; got {final.name!r}")
    tmp = temp_sibling(final)
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **keras_arrays(model))  # type: ignore[arg-type]
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an export of :func:`export_torch_weights` (no pickles), checking its format.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz``.

    Returns
    -------
    dict
        Its arrays by key.

    Raises
    ------
    CorruptFileError
        Not such an export, or unreadable.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"Cannot read torch I3D weights {path}: {err}") from err
    _meta(arrays, str(path))
    return arrays


def _meta(arrays: Arrays, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(str(arrays["__meta__"]))
        ok = meta.get("format") == FORMAT and meta.get("version") == FORMAT_VERSION
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise CorruptFileError(
            f"{where} is not a torch I3D export ({FORMAT} version {FORMAT_VERSION}): make it with "
            "export_torch_weights"
        )
    return dict(meta)


def _folded(arrays: Arrays, name: str, stride: tuple[int, ...] = (1, 1, 1)) -> Unit3d:
    """The Unit3D ``name`` with its batch normalisation folded into weight and bias."""
    try:
        kernel = arrays[f"{name}.conv_3d/kernel"].astype(np.float64)
        beta = arrays[f"{name}.batch_norm/beta"].astype(np.float64)
        mean = arrays[f"{name}.batch_norm/moving_mean"].astype(np.float64)
        var = arrays[f"{name}.batch_norm/moving_variance"].astype(np.float64)
    except KeyError as err:
        raise CorruptFileError(f"Torch I3D weights lack {err.args[0]!r}") from err
    scale = 1.0 / np.sqrt(var + BN_EPSILON)
    weight = np.transpose(kernel * scale, (4, 3, 0, 1, 2))  # [kt, kh, kw, in, out] → [out, in, …]
    bias = beta - mean * scale
    return Unit3d(
        np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32), stride
    )


def _mixed(arrays: Arrays, name: str) -> Mixed:
    second = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
    tails = [
        "Branch_0.Conv3d_0a_1x1",
        "Branch_1.Conv3d_0a_1x1",
        "Branch_1.Conv3d_0b_3x3",
        "Branch_2.Conv3d_0a_1x1",
        f"Branch_2.{second}",
        "Branch_3.Conv3d_0b_1x1",
    ]
    return Mixed({tail: _folded(arrays, f"{name}.{tail}") for tail in tails})


def _logits(arrays: Arrays, softmax: bool) -> Logits:
    try:
        kernel = arrays["Logits.Conv3d_0c_1x1.conv_3d/kernel"]
        bias = arrays["Logits.Conv3d_0c_1x1.conv_3d/bias"]
    except KeyError as err:
        raise CorruptFileError(f"Torch I3D weights lack {err.args[0]!r}") from err
    weight = np.ascontiguousarray(np.transpose(kernel, (4, 3, 0, 1, 2)), np.float32)
    conv = Unit3d(weight, np.ascontiguousarray(bias, np.float32), (1, 1, 1), relu=False)
    return Logits(conv, softmax)


def _stage(arrays: Arrays, point: str) -> nn.Module:
    pools = {
        "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
        "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
        "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
        "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
    }
    if point in pools:
        return MaxPoolSame(*pools[point])
    if point in MIXED_CHANNELS:
        return _mixed(arrays, point)
    if point in ("Logits", "Predictions"):
        return _logits(arrays, softmax=point == "Predictions")
    return _folded(arrays, point, (2, 2, 2) if point == "Conv3d_1a_7x7" else (1, 1, 1))


def build_torch_i3d(arrays: Arrays, endpoint: str | None = None) -> TorchI3D:
    """Build the float32 torch I3D up to ``endpoint`` from exported arrays (on the CPU).

    Parameters
    ----------
    arrays : mapping
        :func:`keras_arrays` or :func:`read_arrays` output.
    endpoint : str, optional
        Any end point up to the export's own (default: the export's).

    Returns
    -------
    TorchI3D
        In eval mode, weights frozen.
    """
    meta = _meta(arrays, "The arrays")
    endpoint = endpoint or meta["endpoint"]
    if endpoint not in ENDPOINTS:
        raise BadInputError(f"Unknown end point {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")
    if ENDPOINTS.index(endpoint) > ENDPOINTS.index(meta["endpoint"]):
        raise BadInputError(
            f"The weights end at {meta['endpoint']}; they cannot compute {endpoint}"
        )
    points = [p for p in ENDPOINTS[: ENDPOINTS.index(endpoint) + 1] if p != "Predictions"]
    stages = [(p, _stage(arrays, p)) for p in points]
    if endpoint == "Predictions":
        stages[-1] = ("Predictions", _logits(arrays, softmax=True))
    return TorchI3D(stages, endpoint, int(meta["in_channels"])).eval()


def load_torch_i3d(
    source: str | os.PathLike | Arrays,
    endpoint: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TorchI3D:
    """Load the torch I3D from an export (path) or its arrays, on ``device`` in ``dtype``.

    Parameters
    ----------
    source : str, PathLike or mapping
        An ``.npz`` written by :func:`export_torch_weights`, or :func:`keras_arrays` output.
    endpoint : str, optional
        Any end point up to the export's own (default: the export's).
    device : str or torch.device, default "cpu"
        Where it runs (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
    dtype : torch.dtype, default torch.float32
        The weights' type (``torch.float16``/``torch.bfloat16`` on a GPU).

    Returns
    -------
    TorchI3D
        In eval mode on ``device``.
    """
    arrays = source if isinstance(source, Mapping) else read_arrays(source)
    return build_torch_i3d(arrays, endpoint).to(device=device, dtype=dtype)
