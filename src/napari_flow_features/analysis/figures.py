"""Sets of figures written to a folder: every kind for activations or a feature table.

:class:`~napari_flow_features.analysis.visualization.FeatureVisualization` draws one figure; this
module decides which figures a folder gets and their file names (``flow-features visualize``,
``model test --num-samples``, the demo).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
