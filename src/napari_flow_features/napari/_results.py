"""Put an extraction reply into a viewer: the layer data of ``_convert.py``, visible and in view.

Works on any ``ViewerModel`` (no window needed). After a run the result layers are shown, sit above
everything else (a flow layer computed earlier must not hide them; the landmarks stay on top), and
the camera fits the scene when a new layer lies outside the current view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _convert
from ._convert import LayerData, Placement


def _put(viewer: Any, layer_data: LayerData) -> Any:
    """Add the layer, or update the one of that name in place when the type matches.

    The type is compared by ``__class__``: napari hands plugin widgets proxies whose ``type()`` is
    the proxy's.
    """
    data, kwargs, kind = layer_data
    name = kwargs["name"]
    if name in viewer.layers:
        layer = viewer.layers[name]
        if (
            layer.__class__.__name__.lower() == kind
            and np.shape(layer.data) == np.shape(data)
            and kind != "points"
        ):
            for key, value in kwargs.items():
                if key not in ("name", "contrast_limits"):
                    setattr(layer, key, value)
            layer.data = data  # one data event: the plots dock follows
            if "contrast_limits" in kwargs:
                layer.contrast_limits = kwargs["contrast_limits"]
            return layer
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def _previous(viewer: Any, name: str, one: bool) -> Any:
    """The data a single-frame run adds to (the existing layer's), else None."""
    if one and name in viewer.layers:
        layer = viewer.layers[name]
        return (
            layer.features
            if layer.__class__.__name__.lower() == "points"
            else np.asarray(layer.data)
        )
    return None


def world_view(viewer: Any) -> np.ndarray:
    """Give the part of the world the 2-D camera shows.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer (one without a window uses its model's canvas size).

    Returns
    -------
    numpy.ndarray
        ``[[min_y, min_x], [max_y, max_x]]`` in world coordinates.
    """
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; before it: viewer.camera
    camera = scene.camera if scene is not None else viewer.camera
    canvas = getattr(viewer, "canvas", None)
    h, w = canvas.size if canvas is not None else viewer._canvas_size
    centre = np.asarray(camera.center[-2:], float)
    half = np.array([h, w], float) / (2 * camera.zoom)
    return np.stack([centre - half, centre + half])


def pixel_extent(layer: Any) -> np.ndarray:
    """Give the world extent of a layer's displayed pixels, to their outer edges.

    Parameters
    ----------
    layer : napari.layers.Layer
        Any layer.

    Returns
    -------
    numpy.ndarray
        ``[[min_y, min_x], [max_y, max_x]]`` in world coordinates.
    """
    extent = np.asarray(layer.extent.world, float)[:, -2:]
    half = 0.5 * np.abs(np.asarray(layer.scale[-2:], float))
    return extent + np.stack([-half, half])


def in_view(viewer: Any, layer: Any, tolerance: float = 1e-6) -> bool:
    """Tell whether a layer's displayed extent lies inside what the camera shows.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.
    layer : napari.layers.Layer
        The layer.
    tolerance : float, default 1e-6
        Slack in world units.

    Returns
    -------
    bool
        True when the whole layer is in view.
    """
    view, ext = world_view(viewer), pixel_extent(layer)
    return bool((ext[0] >= view[0] - tolerance).all() and (ext[1] <= view[1] + tolerance).all())


def show_results(viewer: Any, layers: list, keep_on_top: list | None = None) -> None:
    """Make result layers visible, move them to the top, and fit the camera if one is out of view.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.
    layers : list of napari.layers.Layer
        The result layers.
    keep_on_top : list of napari.layers.Layer, optional
        Layers moved above the results (the landmarks).
    """
    for layer in [*layers, *(keep_on_top or [])]:
        layer.visible = True
        index = viewer.layers.index(layer)
        viewer.layers.move(index, len(viewer.layers))
    if viewer.dims.ndisplay == 2 and not all(in_view(viewer, layer) for layer in layers):
        viewer.reset_view()


def write_results(
    viewer: Any,
    reply: dict,
    source: Any,
    points_layer: Any,
    post: str,
    one: bool,
    replace: bool = True,
    release: Callable[[str], None] | None = None,
) -> list[str]:
    """Add or update the result layers of an extraction reply.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.
    reply : dict
        The model worker's reply: ``table``, ``metadata`` and optional heatmap and maps path.
    source : napari.layers.Image
        The video layer the run read.
    points_layer : napari.layers.Points or None
        The landmark layer of a ``point`` run.
    post : str
        The post-encoder, ``none``, ``gap`` or ``point``.
    one : bool
        A single-frame run, whose rows replace that frame's rows in existing layers.
    replace : bool, default True
        Results take the names ``<kind>: <source>`` and replace the previous run's; off, each
        run's layers are named by source, post-encoder and end point (a run with the same settings
        updates its own layers).
    release : callable, optional
        ``release(maps_path)`` is called for activation maps a replaced layer no longer needs.

    Returns
    -------
    list of str
        The names of the result layers.
    """
    table = reply["table"]
    meta = {**reply["metadata"], "source_layer": source.name}
    place = Placement.of(source)
    label = _convert.run_label(meta, post)

    def name(kind: str) -> str:
        return _convert.result_name(kind, source.name, label, replace)

    frames = table["frame"].to_numpy(int)
    written: list[str] = []
    added: list[Any] = []

    image = _convert.features_image(table, meta, place, name("features"), post,
                                    _previous(viewer, name("features"), one))  # fmt: skip
    if image is not None:
        added.append(_put(viewer, image))
        written.append(image[1]["name"])

    if post == "point" and points_layer is not None and image is not None:
        points_layer.features = _convert.point_features(
            np.asarray(points_layer.data), points_layer.features, table, keep_old=one
        )
        points_layer.metadata = {**points_layer.metadata, "features_run": meta}
        written.append(f"{points_layer.name} (features)")

    if post == "gap" and image is not None:
        previous = _previous(viewer, name("features points"), one)
        layer_data = _convert.gap_points(table, meta, place, name("features points"), previous)
        added.append(_put(viewer, layer_data))
        written.append(layer_data[1]["name"])

    if post == "none" and reply.get("maps_path"):
        volume_name = name("activations")
        if volume_name in viewer.layers:
            old = viewer.layers[volume_name].metadata.get("maps_path")
            viewer.layers.remove(volume_name)
            if old and old != reply["maps_path"] and release is not None:
                release(old)
        layer_data = _convert.activation_volume(reply["maps_path"], table, meta, place,
                                                volume_name)  # fmt: skip
        added.append(_put(viewer, layer_data))
        written.append(volume_name)

    heat = reply.get("heatmap")
    if heat is not None:
        layer_data = _convert.heatmap_image(heat, frames, meta, place, name("heatmap"),
                                            _previous(viewer, name("heatmap"), one))  # fmt: skip
        added.append(_put(viewer, layer_data))
        written.append(layer_data[1]["name"])

    show_results(viewer, added, keep_on_top=[points_layer] if points_layer is not None else None)
    return written
