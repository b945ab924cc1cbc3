"""Kinetics class predictions from an I3D whose Logits come from a DeepMind checkpoint."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from ..errors import BadInputError


def kinetics_labels(num_classes: int = 400) -> list[str]:
    """Class names of Kinetics-400 or Kinetics-600 (DeepMind's label maps, in logit order).

    Parameters
    ----------
    num_classes : {400, 600}
        Which label map.

    Returns
    -------
    list of str
        One name per logit.

    Raises
    ------
    BadInputError
        Another number of classes.
    """
    files = {400: "kinetics400.txt", 600: "kinetics600.txt"}
    if num_classes not in files:
        raise BadInputError(f"Kinetics label maps exist for 400 and 600 classes, not {num_classes}")
    text = resources.files(__package__).joinpath("labels", files[num_classes]).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def predict_kinetics(model: Any, clip: np.ndarray, top: int = 5) -> list[tuple[str, float]]:
    """The most likely Kinetics classes for one preprocessed clip.

    Parameters
    ----------
    model : keras.Model
        An I3D built to the ``Logits`` (or ``Predictions``) end point, usually with a DeepMind
        checkpoint loaded.
    clip : numpy.ndarray
        ``[L, H, W, C]`` or ``[1, L, H, W, C]`` (224×224 frames for the published models).
    top : int
        How many classes to return.

    Returns
    -------
    list of (str, float)
        Class names and probabilities, most likely first. Probabilities are the softmax of the
        time-averaged logits.

    Raises
    ------
    BadInputError
        Not one clip, or a model that ends at a feature map instead of logits.
    """
    arr = np.asarray(clip, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[0] != 1:
        raise BadInputError(f"predict_kinetics takes one clip [L, H, W, C]; got shape {arr.shape}")
    out = np.asarray(model(arr, training=False), dtype=np.float64)[0]
    if out.ndim != 1:
        raise BadInputError(
            f"The model ends at a feature map {out.shape}; build it to the Logits end point"
        )
    labels = kinetics_labels(len(out))
    last = model.layers[-1].name
    probs = (
        out if last == "Predictions" else np.exp(out - out.max()) / np.exp(out - out.max()).sum()
    )
    order = np.argsort(-probs)[: max(1, int(top))]
    return [(labels[i], float(probs[i])) for i in order]
