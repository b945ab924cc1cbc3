"""Sets of figures written to a folder: every kind for activations or a feature table.

:class:`~napari_flow_features.analysis.visualization.FeatureVisualization` draws one figure; this
module decides which figures a folder gets and their file names (``flow-features visualize``,
``model test --num-samples``, the demo).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError

logger = logging.getLogger(__name__)

#: The figure kinds, in the order ``--kind all`` writes them.
FIGURE_KINDS = ("evolution", "heatmap", "3d", "animation", "comparative", "grid")
#: The kinds that need no spatial axes (what a feature table can show).
TABLE_FIGURE_KINDS = ("evolution", "heatmap", "comparative")


def marked_layer_name(name: str, metadata: Any) -> str:
    """A figure's layer name, with ``[RANDOM WEIGHTS]`` in it when the run's metadata says so.

    Parameters
    ----------
    name : str
        The layer (end point) name.
    metadata : Any
        The run's metadata (a table's ``attrs``, ``extractor.describe()``); anything but a dict
        with ``random_weights`` set leaves the name as it is.

    Returns
    -------
    str
        The name to show in titles.
    """
    if isinstance(metadata, dict) and metadata.get("random_weights"):
        return f"{name} [RANDOM WEIGHTS]"
    return name


def write_figures(
    vis: Any, data: Any, kinds: Sequence[str], features: list[int], out: Path,
    flow: Any = None, sample: int = 0, stem: str = "",
) -> list[Path]:  # fmt: skip
    """Write the figures of ``kinds`` for ``data`` into ``out``.

    Parameters
    ----------
    vis : FeatureVisualization
        Draws each figure.
    data : numpy.ndarray or pandas.DataFrame
        Activations ``[N, T', H', W', C]`` or a feature table.
    kinds : sequence of str
        Figure kinds out of :data:`FIGURE_KINDS`; heatmap, 3d and animation write one file per
        channel.
    features : list of int
        The channels shown.
    out : Path
        The folder (created).
    flow : array_like, optional
        Flow for the comparative view's thumbnails.
    sample : int
        Which clip of the activations.
    stem : str
        Prefix of every file name (``<stem>_evolution.png``).

    Returns
    -------
    list of Path
        The written figures.
    """
    from ..io._atomic import ensure_output_dir

    ensure_output_dir(out)
    prefix = f"{stem}_" if stem else ""
    written = []
    for kind in kinds:
        if kind == "evolution":
            path = out / f"{prefix}evolution.png"
            vis.visualize_temporal_feature_evolution(data, features, path, sample=sample)
        elif kind == "comparative":
            path = out / f"{prefix}comparative.png"
            vis.create_comparative_temporal_view(data, features, flow, path, sample=sample)
        elif kind == "grid":
            path = out / f"{prefix}channels.png"
            vis.visualize_layer_activations(data, 0, path, sample=sample)
        else:
            for c in features:
                if kind == "heatmap":
                    path = out / f"{prefix}heatmap_f{c:04d}.png"
                    vis.create_feature_activation_heatmap(data, c, path, sample=sample)
                elif kind == "3d":
                    path = out / f"{prefix}3d_f{c:04d}.png"
                    vis.visualize_3d_feature_activation(data, c, path, sample=sample)
                else:
                    path = out / f"{prefix}animation_f{c:04d}.gif"
                    vis.create_feature_evolution_animation(data, c, path, sample=sample)
                logger.debug("wrote %s", path)
                written.append(path)
            continue
        logger.debug("wrote %s", path)
        written.append(path)
    return written


def first_clip_figures(
    extractor: Any, flow: Any, stem: str, out: Path, features: list[int]
) -> list[Path]:
    """Every figure kind for the activations of the first clip of a flow sequence.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        Encodes the clip.
    flow : array_like
        The flow sequence ``(T-1, H, W, 2)``.
    stem : str
        Sub-folder of ``out`` and prefix of the file names.
    out : Path
        The figures folder.
    features : list of int
        The channels shown (those beyond the map's channels are dropped; channel 0 if none stay).

    Returns
    -------
    list of Path
        The written figures.
    """
    import numpy as np

    from .visualization import FeatureVisualization

    window = extractor.windows(flow.shape[0] + 1)[0]
    maps = extractor.encode(np.stack([extractor.preprocess_window(flow, window)]))
    vis = FeatureVisualization(layer_name=marked_layer_name(extractor.endpoint,
                                                            extractor.describe()),
                               clip_length=extractor.config.clip_length)  # fmt: skip
    features = [c for c in features if c < maps.shape[-1]] or [0]
    clip_flow = flow[window.start : window.start + extractor.config.clip_length]
    return write_figures(vis, maps, FIGURE_KINDS, features, out / stem, clip_flow, stem=stem)


def figures_of_file(
    source: str | Path,
    out: str | Path,
    kind: str = "evolution",
    features: Sequence[int] = (0, 1, 2),
    flow: str | Path | None = None,
    sample: int = 0,
    clip_length: int = 16,
    layer_name: str | None = None,
) -> list[Path]:
    """Figures of saved activations (``.npy``) or of a feature table (``.parquet``, ``.csv``).

    Parameters
    ----------
    source : str or Path
        Activations ``[N, T', H', W', C]`` (``extract --post-encoder none``) or a feature table.
    out : str or Path
        The figures folder.
    kind : str
        A kind of :data:`FIGURE_KINDS`, or ``"all"`` (for a table: the kinds that plot over time).
    features : sequence of int
        The channels shown.
    flow : str or Path, optional
        A flow file for the comparative view's thumbnails.
    sample : int
        Which clip of the activations.
    clip_length : int
        Frames per clip (the time axis).
    layer_name : str, optional
        Name in the titles (default: the table's end point, or "activations").

    Returns
    -------
    list of Path
        The written figures, named ``<source stem>_<kind>...``.
    """
    import numpy as np

    from ..io.tables import read_table
    from .visualization import FeatureVisualization

    source = Path(source)
    if source.suffix.lower() == ".npy":
        from ..io.flow_files import read_npy

        data = read_npy(source, "Activations")
        if (
            data.ndim in (4, 5)
            and data.shape[0]
            and np.isnan(data[min(sample, len(data) - 1)]).all()
        ):
            raise BadInputError(f"Activations of clip {sample} are all NaN: {source}")
        layer = layer_name or "activations"
    else:
        data = read_table(source)
        layer = marked_layer_name(layer_name or str(data.attrs.get("endpoint", "features")),
                                  data.attrs)  # fmt: skip
    flow_data = None
    if flow:
        from ..flow.sequences import _open_sequence

        flow_data = _open_sequence(Path(flow))
    vis = FeatureVisualization(layer_name=layer, clip_length=clip_length)
    if kind != "all":
        kinds: tuple[str, ...] = (kind,)
    elif source.suffix.lower() == ".npy":
        kinds = FIGURE_KINDS
    else:  # a table has no spatial axes: the kinds that plot over time
        kinds = TABLE_FIGURE_KINDS
    return write_figures(vis, data, kinds, list(features), Path(out), flow_data, sample,
                         source.stem)  # fmt: skip


#: The colour of noise and missing rows in a behaviour map.
NOISE_COLOUR = "#9e9e9e"


@dataclass(frozen=True)
class MapArtists:
    """What :func:`draw_behaviour_map` drew, for a caller that links it to a viewer.

    Attributes
    ----------
    scatter_axes, ethogram_axes : matplotlib.axes.Axes
        The embedding scatter and the ethogram strip under it.
    scatter : matplotlib.collections.PathCollection
        One point per row with a finite embedding, in table order.
    ethogram : matplotlib.image.AxesImage
        ``cluster + 1`` per landmark (rows) and frame (columns); 0 is noise or missing.
    point_frames : numpy.ndarray
        The frame of each scatter point.
    point_rows : numpy.ndarray
        The ethogram row (landmark) of each scatter point.
    landmarks : list
        The landmark of each ethogram row (``[None]`` for a table without identity).
    first_frame : int
        The frame of the ethogram's first column.
    """

    scatter_axes: Any
    ethogram_axes: Any
    scatter: Any
    ethogram: Any
    point_frames: Any
    point_rows: Any
    landmarks: list
    first_frame: int


def cluster_colours(n_clusters: int) -> list[str]:
    """Colours of clusters 0 … n-1 (tab10, then tab20 for more than ten).

    Parameters
    ----------
    n_clusters : int
        The number of clusters.

    Returns
    -------
    list of str
        One hex colour per cluster (repeating after 20).
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10" if n_clusters <= 10 else "tab20"]
    return [to_hex(cmap(c % cmap.N)) for c in range(n_clusters)]


def ethogram(table: Any) -> tuple[Any, list, int]:
    """Cluster per landmark and frame of a mapped table.

    Parameters
    ----------
    table : pandas.DataFrame
        A table with ``frame`` and ``cluster`` (:func:`~.behaviour_map.behaviour_map`).

    Returns
    -------
    codes : numpy.ndarray
        ``(landmarks, frames)`` int: the cluster, -1 for noise and for frames without a row.
    landmarks : list
        The landmark of each row (``[None]`` when the table has no identity columns).
    first_frame : int
        The frame of column 0 (columns run to the table's last frame).
    """
    import numpy as np

    from ..io.landmark_key import landmark_ids

    frames = table["frame"].to_numpy(int)
    ids = landmark_ids(table)
    landmarks = list(dict.fromkeys(ids))
    first = int(frames.min())
    codes = np.full((len(landmarks), int(frames.max()) - first + 1), -1, np.int64)
    row = {lm: i for i, lm in enumerate(landmarks)}
    codes[[row[lm] for lm in ids], frames - first] = table["cluster"].to_numpy(int)
    return codes, landmarks, first


def _map_title(meta: dict) -> str:
    """'PCA (58 % + 36 %) · HDBSCAN: 3 clusters, 12 noise, 1 missing' from the map's metadata."""
    method = str(meta.get("method", "")).upper()
    ratio = meta.get("explained_variance_ratio")
    if ratio:
        method += " (" + " + ".join(f"{100 * r:.0f} %" for r in ratio) + ")"
    counts = f"{meta.get('n_clusters', '?')} clusters"
    counts += f", {meta['noise_rows']} noise" if meta.get("noise_rows") else ""
    counts += f", {meta['missing_rows']} missing" if meta.get("missing_rows") else ""
    clusters = {"hdbscan": "HDBSCAN", "kmeans": "k-means"}.get(str(meta.get("clusters")), "")
    return f"{method} · {clusters}: {counts}"


def draw_behaviour_map(fig: Any, table: Any, text: str = "black") -> MapArtists:
    """Draw a behaviour map into a figure: the embedding scatter over an ethogram strip.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (cleared first).
    table : pandas.DataFrame
        A mapped table (``embed_0``, ``embed_1``, ``cluster``; :func:`.behaviour_map.behaviour_map`).
    text : str, default "black"
        The colour of labels, ticks and the legend text (a dark theme passes a light one).

    Returns
    -------
    MapArtists
        The axes and artists, and which frame each point shows.

    Raises
    ------
    BadInputError
        The table has no map columns.
    """
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    from ..io.landmark_key import landmark_ids
    from .behaviour_map import MAP_COLUMNS

    missing = [c for c in MAP_COLUMNS if c not in table.columns]
    if missing:
        raise BadInputError(f"Not a behaviour map: no column {missing[0]!r} (run map first)")
    codes, landmarks, first = ethogram(table)
    n = int(max(codes.max(), table["cluster"].max()) + 1)
    colours = cluster_colours(n)
    fig.clear()
    grid = fig.add_gridspec(2, 1, height_ratios=[4, max(0.8, 0.3 * len(landmarks))])
    ax, strip = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    xy = table[["embed_0", "embed_1"]].to_numpy(float)
    ok = np.isfinite(xy).all(axis=1)
    cluster = table["cluster"].to_numpy(int)[ok]
    palette = np.array([NOISE_COLOUR, *colours])
    scatter = ax.scatter(xy[ok, 0], xy[ok, 1], s=12, c=palette[cluster + 1], linewidths=0)
    ax.set_xlabel("embed_0", color=text)
    ax.set_ylabel("embed_1", color=text)
    ax.set_title(_map_title(table.attrs.get("behaviour_map", {})), color=text, fontsize=9)
    image = strip.imshow(codes + 1, cmap=ListedColormap([NOISE_COLOUR, *colours]),
                         vmin=-0.5, vmax=n + 0.5, aspect="auto", interpolation="nearest",
                         extent=(first - 0.5, first + codes.shape[1] - 0.5,
                                 len(landmarks) - 0.5, -0.5))  # fmt: skip
    strip.set_yticks(range(len(landmarks)),
                     [str(lm) if lm is not None else "" for lm in landmarks])  # fmt: skip
    strip.set_xlabel("frame", color=text)
    if landmarks == [None]:
        strip.set_ylabel("cluster", color=text)
    for axes in (ax, strip):
        axes.tick_params(colors=text)
        for spine in axes.spines.values():
            spine.set_color(text)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{k}") for k, c in
               enumerate(colours)] + [Line2D([], [], ls="", marker="o", color=NOISE_COLOUR,
                                             label="noise / missing")]  # fmt: skip
    legend = ax.legend(handles=handles, title="cluster", fontsize=7, title_fontsize=7,
                       loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0,
                       frameon=False, labelcolor=text)  # fmt: skip
    legend.get_title().set_color(text)
    row = {lm: i for i, lm in enumerate(landmarks)}
    ids = np.array([row[lm] for lm in landmark_ids(table)], int)
    return MapArtists(ax, strip, scatter, image, table["frame"].to_numpy(int)[ok], ids[ok],
                      landmarks, first)  # fmt: skip


def behaviour_map_figure(table: Any, path: str | Path | None = None) -> Any:
    """The behaviour map figure of a mapped table, saved when ``path`` is given.

    Parameters
    ----------
    table : pandas.DataFrame
        A mapped table (:func:`.behaviour_map.behaviour_map`).
    path : str or Path, optional
        Save it there (png, svg, pdf; atomically).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (Agg canvas).
    """
    from .visualization import _figure, save_figure

    fig = _figure(6.4, 5.2)
    draw_behaviour_map(fig, table)
    if path is not None:
        save_figure(fig, path)
    return fig
