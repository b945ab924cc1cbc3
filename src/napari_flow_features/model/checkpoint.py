"""Import DeepMind's published kinetics-i3d TF1 checkpoints into the Keras I3D.

Checkpoints: ``flow_imagenet``, ``flow_scratch`` (scope ``Flow/inception_i3d/``), ``rgb_imagenet``,
``rgb_scratch`` (``RGB/inception_i3d/``) and ``rgb_scratch_kin600`` (no scope, with optimizer
``Momentum`` slots). Variables ``<scope><EndPoint>/.../conv_3d/w``, ``.../conv_3d/b`` and
``.../batch_norm/{beta,moving_mean,moving_variance}`` map onto the layers of :func:`build_i3d`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadInputError
from .i3d import ENDPOINTS

_WEIGHT_NAMES = {"kernel": "w", "bias": "b", "beta": "beta", "moving_mean": "moving_mean",
                 "moving_variance": "moving_variance"}  # fmt: skip
_OPTIMIZER = re.compile(r"(/Momentum|/ExponentialMovingAverage|/Adam(_\d+)?|/RMSProp(_\d+)?)$")
_ANCHOR = "Conv3d_1a_7x7/conv_3d/w"


@dataclass
class CheckpointReport:
    """What an import did.

    Attributes
    ----------
    scope : str
        The variable scope found in front of the network's names (``Flow/inception_i3d/``,
        ``RGB/inception_i3d/`` or ``""``).
    loaded : int
        Variables copied into the model.
    ignored_past_endpoint : list of str
        Variables of end points past a truncated model's last one.
    ignored_optimizer : int
        Optimizer slots and ``global_step``, skipped.
    ignored_other : list of str
        Variables outside the scope, skipped.
    """

    scope: str
    loaded: int
    ignored_past_endpoint: list[str] = field(default_factory=list)
    ignored_optimizer: int = 0
    ignored_other: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"loaded {self.loaded} variables from scope {self.scope or '(none)'}; ignored "
            f"{len(self.ignored_past_endpoint)} past the model's end point, "
            f"{self.ignored_optimizer} optimizer slots, {len(self.ignored_other)} others"
        )


def _layer_of(name: str) -> str:
    """The Keras layer holding checkpoint variable ``name`` (scope already removed)."""
    return name.rsplit("/", 1)[0].replace("/", ".")


def expected_variables(model: Any) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """The checkpoint variable each weight of a model is loaded from.

    Parameters
    ----------
    model : keras.Model
        An I3D from :func:`~napari_flow_features.model.i3d.build_i3d`.

    Returns
    -------
    dict
        Checkpoint name without scope (``Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d/w``) to
        ``(Keras variable, shape)``.

    Raises
    ------
    ValueError
        A layer has a weight with no DeepMind counterpart (not an I3D from ``build_i3d``).
    """
    out: dict[str, tuple[Any, tuple[int, ...]]] = {}
    for layer in model.layers:
        for var in layer.weights:
            short = var.name.split("/")[-1]
            if short not in _WEIGHT_NAMES:
                raise ValueError(
                    f"Layer {layer.name} has a weight {var.name} with no DeepMind name"
                )
            ckpt = layer.name.replace(".", "/") + "/" + _WEIGHT_NAMES[short]
            out[ckpt] = (var, tuple(var.shape))
    return out


def same_shape(a: Any, b: Any) -> bool:
    """Whether two shapes are equal up to singleton axes.

    rgb_imagenet stores batch-norm statistics as ``(1, 1, 1, 1, C)``, the others as ``(C,)``.

    Parameters
    ----------
    a, b : sequence of int
        The shapes.

    Returns
    -------
    bool
        True when they hold the same axes once axes of length 1 are dropped.
    """
    return tuple(d for d in a if d != 1) == tuple(d for d in b if d != 1)


def _endpoint_of(name: str) -> str:
    return name.split("/", 1)[0]


def checkpoint_shapes(ckpt_prefix: str | os.PathLike) -> dict[str, list[int]]:
    """Variable names and shapes in a checkpoint (the ``.index`` file is enough).

    Parameters
    ----------
    ckpt_prefix : str or os.PathLike
        The checkpoint prefix (``.../model.ckpt``).

    Returns
    -------
    dict
        Variable name to shape.

    Raises
    ------
    BadInputError
        Not a readable TensorFlow checkpoint.
    """
    import tensorflow as tf

    try:
        return dict(tf.train.list_variables(os.fspath(ckpt_prefix)))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as exc:
        raise BadInputError(f"Not a readable TensorFlow checkpoint ({exc}): {ckpt_prefix}") from exc


def detect_scope(names: list[str] | dict) -> str:
    """The variable scope in front of the network's names.

    Parameters
    ----------
    names : list of str or dict
        The checkpoint's variable names (a dict's keys).

    Returns
    -------
    str
        ``Flow/inception_i3d/``, ``RGB/inception_i3d/`` or ``""`` (Kinetics-600).

    Raises
    ------
    BadInputError
        No single I3D network in the names.
    """
    scopes = {n[: -len(_ANCHOR)] for n in names if n.endswith(_ANCHOR)}
    if len(scopes) != 1:
        raise BadInputError(
            f"Cannot find one I3D network in the checkpoint (variables ending in {_ANCHOR}: "
            f"{sorted(scopes) or 'none'})"
        )
    return scopes.pop()


def load_deepmind_checkpoint(
    model: Any, ckpt_prefix: str | os.PathLike, scope: str | None = None
) -> CheckpointReport:
    """Copy every variable of a DeepMind I3D checkpoint into a model built by ``build_i3d``.

    Parameters
    ----------
    model : keras.Model
        The I3D (any end point; flow or RGB as the checkpoint).
    ckpt_prefix : str or os.PathLike
        The checkpoint prefix (``.../flow_imagenet/model.ckpt``).
    scope : str, optional
        The variable scope; detected from the names by default.

    Returns
    -------
    CheckpointReport
        What was loaded and what was skipped: variables past a truncated model's end point and
        optimizer slots are counted, not loaded.

    Raises
    ------
    BadInputError
        A variable the model needs but the checkpoint lacks, an unexpected variable inside the
        model's end points, a wrong shape, or a checkpoint for the other stream (RGB into flow),
        each named in the message.
    """
    import tensorflow as tf

    shapes = checkpoint_shapes(ckpt_prefix)
    scope = detect_scope(shapes) if scope is None else scope
    expected = expected_variables(model)
    model_points = {_endpoint_of(n) for n in expected}
    report = CheckpointReport(scope=scope, loaded=0)
    found: dict[str, str] = {}
    for full in shapes:
        if full == "global_step" or _OPTIMIZER.search(full):
            report.ignored_optimizer += 1
            continue
        if not full.startswith(scope):
            report.ignored_other.append(full)
            continue
        name = full[len(scope) :]
        if name in expected:
            found[name] = full
        elif _endpoint_of(name) in ENDPOINTS and _endpoint_of(name) not in model_points:
            report.ignored_past_endpoint.append(full)
        else:
            raise BadInputError(
                f"Unexpected variable {full} {shapes[full]} in {ckpt_prefix}: the model has no such "
                "weight (a different architecture?)"
            )
    missing = sorted(set(expected) - set(found))
    if missing:
        raise BadInputError(
            f"The checkpoint lacks {len(missing)} variables the model needs, e.g. "
            f"{scope}{missing[0]}: {ckpt_prefix}"
        )
    first_kernel = "Conv3d_1a_7x7/conv_3d/w"
    have = tuple(shapes[found[first_kernel]])
    want = expected[first_kernel][1]
    if have[3] != want[3]:
        kind = {2: "optical flow", 3: "RGB"}
        raise BadInputError(
            f"The checkpoint is for {have[3]} input channels ({kind.get(have[3], '?')}), the model "
            f"takes {want[3]} ({kind.get(want[3], '?')}): {ckpt_prefix}"
        )
    reader = tf.train.load_checkpoint(os.fspath(ckpt_prefix))
    for name, full in found.items():
        var, shape = expected[name]
        if not same_shape(shapes[full], shape):
            raise BadInputError(
                f"Variable {full} has shape {tuple(shapes[full])}, the model needs {shape} "
                f"(number of classes?): {ckpt_prefix}"
            )
        var.assign(np.asarray(reader.get_tensor(full), dtype=var.dtype).reshape(shape))
        report.loaded += 1
    return report
