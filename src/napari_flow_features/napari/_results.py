"""Turn an extraction reply into napari layers (features image, point features, heatmap)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..io.landmark_key import landmark_ids, landmark_key
from ..io.tables import feature_columns


def _upsert_image(viewer: Any, name: str, shape: tuple, kwargs: dict, one: bool) -> Any:
    """The Image layer ``name`` with ``shape`` (NaN-filled when new; replaced on a full run)."""
    if name in viewer.layers and one and viewer.layers[name].data.shape == shape:
        return viewer.layers[name]
    data = np.full(shape, np.nan, np.float32)
    if name in viewer.layers:
        viewer.layers[name].data = data
        for key, value in kwargs.items():
            setattr(viewer.layers[name], key, value)
        return viewer.layers[name]
    return viewer.add_image(data, name=name, **kwargs)


def _on_video(source: Any, cell_hw: tuple[float, float], lead: int = 0) -> dict:
    """Scale and translate that put feature-map cells of ``cell_hw`` pixels over the video;
    ``lead`` extra leading axes (e.g. channels) get scale 1."""
    scale = list(source.scale[:3])
    translate = list(source.translate[:3])
    for axis, cell in ((1, cell_hw[0]), (2, cell_hw[1])):
        translate[axis] += (cell - 1) / 2 * scale[axis]
        scale[axis] *= cell
    return {"scale": [1.0] * lead + scale, "translate": [0.0] * lead + translate}


def _fit_contrast(layer: Any) -> None:
    """Contrast limits from the finite values (the layer starts NaN-filled)."""
    finite = layer.data[np.isfinite(layer.data)]
    if finite.size and finite.max() > finite.min():
        layer.contrast_limits = (float(finite.min()), float(finite.max()))


def _beside_video(source: Any, frame_hw: list, n_frames: int, n_channels: int, lead: bool) -> dict:
    """Scale and translate that show the (T, C) matrix in a box the video's size, just right of
    it (rows frames top to bottom, columns channels), instead of on top of the video."""
    h, w = frame_hw
    sy, sx = (float(v) for v in source.scale[1:3])
    ty, tx = (float(v) for v in source.translate[1:3])
    scale = [h * sy / n_frames, w * sx / n_channels]
    # Pixel edges line up: the box's top edge with the video's, its left edge a gap right of it.
    translate = [ty - 0.5 * sy + 0.5 * scale[0],
                 tx - 0.5 * sx + (w + max(8, w // 20)) * sx + 0.5 * scale[1]]  # fmt: skip
    if lead:  # (K, T, C): the landmark axis comes first
        return {"scale": [1.0, *scale], "translate": [0.0, *translate]}
    return {"scale": scale, "translate": translate}


def _add_activations(viewer: Any, reply: dict, source: Any, meta: dict, n_frames: int) -> str:
    """``activations: <source>``: the lazy ``(C, T, H', W')`` volume of the none post-encoder,
    cells over the video; a channel slider on the first axis, and napari's 3-D view shows one
    channel's volume. The maps file is removed when the layer goes or napari exits."""
    import atexit
    import shutil
    from pathlib import Path

    from ..extract.activations import ActivationVolume

    maps = np.load(reply["maps_path"], mmap_mode="r", allow_pickle=False)
    volume = ActivationVolume.from_table(maps, reply["table"], n_frames)
    folder = Path(reply["maps_path"]).parent
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    h, w = meta["frame_shape"]
    place = _on_video(source, (h / volume.shape[2], w / volume.shape[3]), lead=1)
    sample = np.asarray(maps[0], np.float32)  # one window for the contrast limits
    limits = (float(np.percentile(sample, 1)), float(np.percentile(sample, 99.5)))
    name = f"activations: {source.name}"
    if name in viewer.layers:
        old = viewer.layers[name].metadata.get("maps_folder")
        viewer.layers.remove(name)
        if old and Path(old) != folder:
            shutil.rmtree(old, ignore_errors=True)
    viewer.add_image(volume, name=name, colormap="inferno", blending="additive",
                     contrast_limits=limits if limits[1] > limits[0] else (limits[0], limits[0] + 1),
                     metadata={**meta, "maps_path": reply["maps_path"], "maps_folder": str(folder)},
                     **place)  # fmt: skip
    return name


def write_results(
    viewer: Any, reply: dict, source: Any, points_layer: Any, post: str, one: bool
) -> list[str]:
    """Add or update the result layers; returns their names. ``one``: a single-frame run, whose
    rows replace that frame's rows in existing layers."""
    table: pd.DataFrame = reply["table"]
    meta = {**reply["metadata"], "source_layer": source.name}
    n_frames = int(meta["n_frames"])
    cols = feature_columns(table)
    frames = table["frame"].to_numpy(int)
    written = []

    if cols:
        mat = table[cols].to_numpy(np.float32)
        name = f"features: {source.name}"
        row_ids = landmark_ids(table) if post == "point" else [None] * len(table)
        multi = len(set(row_ids)) > 1
        kwargs = {"metadata": meta, "colormap": "viridis",
                  **_beside_video(source, meta["frame_shape"], n_frames, len(cols), multi)}  # fmt: skip
        if multi:
            ids = list(dict.fromkeys(row_ids))
            layer = _upsert_image(viewer, name, (len(ids), n_frames, len(cols)), kwargs, one)
            k = np.array([ids.index(v) for v in row_ids])
            layer.data[k, frames] = mat
        else:
            layer = _upsert_image(viewer, name, (n_frames, len(cols)), kwargs, one)
            layer.data[frames] = mat
        layer.metadata = meta
        layer.data = layer.data  # refreshes and emits a data event (the plots dock follows)
        _fit_contrast(layer)
        written.append(name)

    if post == "point" and points_layer is not None and cols:
        data = np.asarray(points_layer.data)
        feats = points_layer.features.copy().reset_index(drop=True)
        # Rows and points meet on (frame, landmark) by the one identity rule; a layer without
        # identity columns is a single landmark.
        point_ids = landmark_ids(feats)
        keyed = landmark_key(feats) is not None
        rows = {}
        for i, (f, lm) in enumerate(zip(frames, landmark_ids(table), strict=True)):
            rows[(int(f), lm if keyed else None)] = mat[i]
        new = np.full((len(data), len(cols)), np.nan, np.float32)
        keep_old = one and all(c in feats.columns for c in cols)
        if keep_old:
            new[:] = feats[cols].to_numpy(np.float32)
        for i, point in enumerate(data):
            vec = rows.get((int(np.rint(point[0])), point_ids[i]))
            if vec is not None:
                new[i] = vec
        feats = pd.concat([feats.drop(columns=[c for c in cols if c in feats]),
                           pd.DataFrame(new, columns=cols)], axis=1)  # fmt: skip
        points_layer.features = feats
        points_layer.metadata = {**points_layer.metadata, "features_run": meta}
        written.append(f"{points_layer.name} (features)")

    if post == "gap" and cols:
        name = f"features points: {source.name}"
        h, w = meta["frame_shape"]
        centre = np.stack([np.arange(n_frames), np.full(n_frames, (h - 1) / 2),
                           np.full(n_frames, (w - 1) / 2)], axis=1)  # fmt: skip
        if name in viewer.layers and one:
            layer = viewer.layers[name]
            feats = layer.features.copy()
        else:
            feats = pd.DataFrame(np.full((n_frames, len(cols)), np.nan, np.float32), columns=cols)
            if name in viewer.layers:
                viewer.layers.remove(name)
            layer = viewer.add_points(centre, name=name, size=6, face_color="orange",
                                      scale=source.scale[:3], translate=source.translate[:3])  # fmt: skip
        feats.loc[frames, cols] = mat
        layer.features = feats
        layer.metadata = meta
        written.append(name)

    if post == "none" and reply.get("maps_path"):
        written.append(_add_activations(viewer, reply, source, meta, n_frames))

    heat = reply.get("heatmap")
    if heat is not None:
        name = f"heatmap: {source.name}"
        place = _on_video(source, tuple(meta["heatmap_cell_px"]))
        kwargs = {**place, "colormap": "inferno", "blending": "additive", "metadata": meta}
        layer = _upsert_image(viewer, name, heat.shape, kwargs, one)
        rows = np.unique(frames)
        layer.data[rows] = heat[rows]
        _fit_contrast(layer)
        layer.refresh()
        written.append(name)
    return written
