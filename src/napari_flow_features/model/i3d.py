"""Inflated 3D Inception-v1 (I3D) in Keras 3, as DeepMind's kinetics-i3d defines it.

Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017. Every ``Unit3D`` is a 3-D
convolution without bias, batch normalisation without scale (epsilon 1e-3) and ReLU; padding is
``SAME`` everywhere. Layers are named after DeepMind's end points and variable scopes with ``.`` for
``/`` (Keras forbids ``/``): the checkpoint variable ``Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d/w`` is
the kernel of layer ``Mixed_4b.Branch_1.Conv3d_0b_3x3.conv_3d``.

Strides of the feature maps (DESIGN.md): Mixed_5c is 8 in time and 32 in space; Mixed_4f 4 and 16.
"""

from __future__ import annotations

from typing import Any

#: DeepMind's end points, in order.
ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
    "Predictions",
)

#: (temporal, spatial) stride of each end point's output relative to the input clip.
ENDPOINT_STRIDES = {
    "Conv3d_1a_7x7": (2, 2),
    "MaxPool3d_2a_3x3": (2, 4),
    "Conv3d_2b_1x1": (2, 4),
    "Conv3d_2c_3x3": (2, 4),
    "MaxPool3d_3a_3x3": (2, 8),
    "Mixed_3b": (2, 8),
    "Mixed_3c": (2, 8),
    "MaxPool3d_4a_3x3": (4, 16),
    "Mixed_4b": (4, 16),
    "Mixed_4c": (4, 16),
    "Mixed_4d": (4, 16),
    "Mixed_4e": (4, 16),
    "Mixed_4f": (4, 16),
    "MaxPool3d_5a_2x2": (8, 32),
    "Mixed_5b": (8, 32),
    "Mixed_5c": (8, 32),
}

#: Output channels of each Mixed block's branches: b0, (b1 reduce, b1), (b2 reduce, b2), b3.
MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999  # Sonnet's BatchNorm decay_rate


def endpoint_channels(endpoint: str) -> int:
    """Give the number of channels of an end point's output.

    Parameters
    ----------
    endpoint : str
        One of :data:`ENDPOINTS` below ``Logits``.

    Returns
    -------
    int
        Channels ``C`` of its ``[B, L', H', W', C]`` feature map (1024 at ``Mixed_5c``).
    """
    if endpoint in MIXED_CHANNELS:
        c = MIXED_CHANNELS[endpoint]
        return c[0] + c[2] + c[4] + c[5]
    fixed = {"Conv3d_1a_7x7": 64, "MaxPool3d_2a_3x3": 64, "Conv3d_2b_1x1": 64}
    if endpoint in fixed:
        return fixed[endpoint]
    previous = ENDPOINTS[ENDPOINTS.index(endpoint) - 1]
    return 192 if endpoint in ("Conv3d_2c_3x3", "MaxPool3d_3a_3x3") else endpoint_channels(previous)


def _unit3d(
    x: Any, channels: int, kernel: tuple, name: str, stride: tuple = (1, 1, 1), dtype: Any = None
) -> Any:
    import keras

    x = keras.layers.Conv3D(
        channels, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}.conv_3d",
        dtype=dtype,
    )(x)  # fmt: skip
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, center=True, scale=False,
        name=f"{name}.batch_norm", dtype=dtype,
    )(x)  # fmt: skip
    return keras.layers.Activation("relu", name=f"{name}.relu", dtype=dtype)(x)


def _mixed(x: Any, name: str, dtype: Any = None) -> Any:
    import keras

    b0, b1a, b1, b2a, b2, b3 = MIXED_CHANNELS[name]
    branch0 = _unit3d(x, b0, (1, 1, 1), f"{name}.Branch_0.Conv3d_0a_1x1", dtype=dtype)
    branch1 = _unit3d(x, b1a, (1, 1, 1), f"{name}.Branch_1.Conv3d_0a_1x1", dtype=dtype)
    branch1 = _unit3d(branch1, b1, (3, 3, 3), f"{name}.Branch_1.Conv3d_0b_3x3", dtype=dtype)
    branch2 = _unit3d(x, b2a, (1, 1, 1), f"{name}.Branch_2.Conv3d_0a_1x1", dtype=dtype)
    # DeepMind's i3d.py names this one layer Conv3d_0a_3x3 in Mixed_5b (the checkpoints keep it).
    second = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
    branch2 = _unit3d(branch2, b2, (3, 3, 3), f"{name}.Branch_2.{second}", dtype=dtype)
    branch3 = keras.layers.MaxPooling3D(
        (3, 3, 3), strides=(1, 1, 1), padding="same", name=f"{name}.Branch_3.MaxPool3d_0a_3x3",
        dtype=dtype,
    )(x)  # fmt: skip
    branch3 = _unit3d(branch3, b3, (1, 1, 1), f"{name}.Branch_3.Conv3d_0b_1x1", dtype=dtype)
    return keras.layers.Concatenate(axis=-1, name=name, dtype=dtype)(
        [branch0, branch1, branch2, branch3]
    )


def build_i3d(
    in_channels: int = 2,
    endpoint: str = "Mixed_5c",
    num_classes: int = 400,
    dropout_rate: float = 0.0,
    clip_length: int | None = None,
    height: int | None = None,
    width: int | None = None,
    name: str | None = None,
    precision: str = "float32",
) -> Any:
    """Build the I3D network up to ``endpoint`` (inclusive) as a Keras functional model.

    Parameters
    ----------
    in_channels : int, default 2
        Input channels: 2 for flow, 3 for RGB.
    endpoint : str, default "Mixed_5c"
        The last layer, one of :data:`ENDPOINTS`.
    num_classes : int, default 400
        Classes of ``Logits``/``Predictions``.
    dropout_rate : float, default 0.0
        Dropout before the logits.
    clip_length, height, width : int, optional
        Fixed input sizes; leave ``None`` to accept any clip length and frame size.
    name : str, optional
        The model's name (default ``i3d_<in_channels>ch_<endpoint>``).
    precision : {"float32", "mixed_bfloat16"}, default "float32"
        ``"mixed_bfloat16"`` computes in bfloat16 with float32 weights (the output is cast back to
        float32).

    Returns
    -------
    keras.Model
        Input ``[B, L, H, W, in_channels]``. An end point below Logits outputs the feature map
        ``[B, L', H', W', C]`` (``SAME`` padding: ``L' = ceil(L / stride)``); ``Logits`` gives
        ``[B, num_classes]`` (DeepMind's averaged logits, needing ``L' ≥ 2`` and ``H', W' ≥ 7`` at
        Mixed_5c, i.e. 224×224 input), ``Predictions`` their softmax.

    Raises
    ------
    ValueError
        Unknown ``precision`` or ``endpoint``.
    """
    import keras

    if precision not in ("float32", "mixed_bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'mixed_bfloat16', not {precision!r}")
    dt = keras.DTypePolicy(precision)
    if endpoint not in ENDPOINTS:
        raise ValueError(f"Unknown end point {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    stop = ENDPOINTS.index(endpoint)
    inputs = keras.Input(shape=(clip_length, height, width, in_channels), name="clip")
    x = inputs
    for point in ENDPOINTS[: stop + 1]:
        if point == "Conv3d_1a_7x7":
            x = _unit3d(x, 64, (7, 7, 7), point, stride=(2, 2, 2), dtype=dt)
        elif point in ("MaxPool3d_2a_3x3", "MaxPool3d_3a_3x3"):
            x = keras.layers.MaxPooling3D((1, 3, 3), (1, 2, 2), "same", name=point, dtype=dt)(x)
        elif point == "Conv3d_2b_1x1":
            x = _unit3d(x, 64, (1, 1, 1), point, dtype=dt)
        elif point == "Conv3d_2c_3x3":
            x = _unit3d(x, 192, (3, 3, 3), point, dtype=dt)
        elif point == "MaxPool3d_4a_3x3":
            x = keras.layers.MaxPooling3D((3, 3, 3), (2, 2, 2), "same", name=point, dtype=dt)(x)
        elif point == "MaxPool3d_5a_2x2":
            x = keras.layers.MaxPooling3D((2, 2, 2), (2, 2, 2), "same", name=point, dtype=dt)(x)
        elif point in MIXED_CHANNELS:
            x = _mixed(x, point, dtype=dt)
        elif point == "Logits":
            x = keras.layers.AveragePooling3D(
                (2, 7, 7), (1, 1, 1), padding="valid", name="Logits.pool", dtype=dt
            )(x)
            x = keras.layers.Dropout(dropout_rate, name="Logits.dropout", dtype=dt)(x)
            x = keras.layers.Conv3D(
                num_classes, (1, 1, 1), padding="same", use_bias=True,
                name="Logits.Conv3d_0c_1x1.conv_3d", dtype=dt,
            )(x)  # fmt: skip
            # DeepMind squeezes the 1x1 spatial axes, then averages the logits over time.
            x = keras.layers.GlobalAveragePooling3D(name="Logits", dtype=dt)(x)
        elif point == "Predictions":
            x = keras.layers.Softmax(name="Predictions", dtype="float32")(x)
    if precision != "float32" and endpoint != "Predictions":
        x = keras.layers.Activation("linear", dtype="float32", name="to_float32")(x)
    return keras.Model(inputs, x, name=name or f"i3d_{in_channels}ch_{endpoint}")


def count_parameters(model: Any) -> int:
    """Count the scalar values in every weight of a model.

    Parameters
    ----------
    model : keras.Model
        Any Keras model.

    Returns
    -------
    int
        Trainable or not: kernels, biases, BatchNorm statistics.
    """
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.weights))
