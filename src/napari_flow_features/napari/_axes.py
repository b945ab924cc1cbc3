"""Which viewer axis holds video frames (a channel slider from an activation volume may lead)."""

from __future__ import annotations

from typing import Any


def frame_axis(viewer: Any, layer: Any = None) -> int:
    """The world axis of ``layer``'s first axis (its frames); without a layer, that of a
    ``(T, H, W)`` video. Layers fill the trailing world axes, so extra leading ones come first.
    """
    ndim = layer.ndim if layer is not None else 3
    return max(0, viewer.dims.ndim - ndim)


def current_frame(viewer: Any, layer: Any = None) -> int:
    """The frame the viewer shows of ``layer`` (or of a video)."""
    return int(viewer.dims.current_step[frame_axis(viewer, layer)])
