"""Which viewer axis holds video frames (a channel slider from an activation volume may lead)."""

from __future__ import annotations

from typing import Any


def frame_axis(viewer: Any, layer: Any = None) -> int:
    """Find the world axis that holds a layer's frames.

    Layers fill the trailing world axes, so extra leading ones (a channel slider) come first.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.
    layer : napari.layers.Layer, optional
        A layer whose first axis is frames (default: a ``(T, H, W)`` video).

    Returns
    -------
    int
        The world axis of the layer's first axis.
    """
    ndim = layer.ndim if layer is not None else 3
    return max(0, viewer.dims.ndim - ndim)


def current_frame(viewer: Any, layer: Any = None) -> int:
    """Give the frame the viewer shows of a layer.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.
    layer : napari.layers.Layer, optional
        A layer whose first axis is frames (default: a ``(T, H, W)`` video).

    Returns
    -------
    int
        The current step on the layer's frame axis.
    """
    return int(viewer.dims.current_step[frame_axis(viewer, layer)])
