"""Figures of encoder activations and feature tables (matplotlib, Agg; nothing opens a window).

Activations are ``[N, T', H', W', C]`` (one clip is picked with ``sample``) or ``[T', H', W', C]``.
Time axes are in video frames: step k of a clip of L frames covers frames ``k·L/T' … (k+1)·L/T'``
and is drawn at its centre ``(k + 0.5)·L/T' − 0.5`` (the DESIGN.md per-frame mapping). Feature
tables (``frame``, ``f0000…``) are accepted where a figure has no spatial axes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadInputError


def _figure(width: float, height: float) -> Any:
    """A Figure bound to the Agg canvas: no pyplot, no GUI backend, no window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    # A margin round the edge: constrained layout's default (3 pt) lets labels touch the border,
    # and a GIF frame's y-label lost its first pixel column.
    layout = ConstrainedLayoutEngine(w_pad=0.08, h_pad=0.08)
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a figure atomically (format from the suffix: png, svg, pdf).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or os.PathLike
        Where to write it; nothing appears there unless the save completes.
    dpi : int
        Resolution of raster formats.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from ..io._atomic import atomic_write_path

    path = Path(path)
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def figure_rgb(fig: Any) -> np.ndarray:
    """The rendered figure as an image.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        A figure on the Agg canvas.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB.
    """
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _as_table(features: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(frames, (n, C) values) of a feature table or a 2-D array; None for activations."""
    if isinstance(features, pd.DataFrame):
        from ..io.landmark_key import landmark_ids
        from ..io.tables import feature_columns

        cols = feature_columns(features)
        if not cols:
            raise BadInputError("The table has no feature columns (f0000, f0001, …)")
        ids = np.array(landmark_ids(features), dtype=object)
        if len(set(ids)) > 1:
            features = features[ids == ids[0]]  # one landmark per line plot
        frames = features["frame"].to_numpy() if "frame" in features else np.arange(len(features))
        return frames, features[cols].to_numpy(np.float32)
    arr = np.asarray(features)
    if arr.ndim == 2:
        return np.arange(len(arr)), arr.astype(np.float32)
    return None


class FeatureVisualization:
    """Figures of a model's activations at one layer, and of feature tables.

    The five temporal views of the seed: :meth:`visualize_temporal_feature_evolution`,
    :meth:`create_feature_activation_heatmap`, :meth:`visualize_3d_feature_activation`,
    :meth:`create_feature_evolution_animation` and :meth:`create_comparative_temporal_view`; and
    :meth:`visualize_layer_activations`, a grid of channels at one time step. Figures are built
    on matplotlib's Agg canvas (no pyplot, no window), returned, and saved when given a path.

    Parameters
    ----------
    model : keras.Model, optional
        The Keras encoder (``extractor.model``); only :meth:`get_intermediate_activations` needs
        it.
    layer_name : str
        An end point (``Mixed_3c``) or any Keras layer name of the model.
    clip_length : int
        Frames per clip, to put activation time steps on a frame axis.
    frame_shape : tuple of int, optional
        ``(H, W)`` of the frames fed to the network: spatial axes in its pixels. Without it an end
        point's nominal stride (``Mixed_4f``: 16 px per cell) does, and other layers stay in cells.

    Examples
    --------
    >>> viz = FeatureVisualization(model=extractor.model, layer_name="Mixed_3c")  # doctest: +SKIP
    >>> acts = viz.get_intermediate_activations(extractor.preprocess_flow_sequence(flow))  # doctest: +SKIP
    >>> viz.visualize_temporal_feature_evolution(acts, [0, 10], save_path="evolution.png")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any = None,
        layer_name: str = "Mixed_3c",
        clip_length: int = 16,
        frame_shape: tuple[int, int] | None = None,
    ) -> None:
        self.model = model
        self.layer_name = layer_name
        self.clip_length = int(clip_length)
        self.frame_shape = None if frame_shape is None else tuple(int(v) for v in frame_shape[:2])
        self._probe: Any = None

    # -- activations ---------------------------------------------------------------------------
    def valid_layer_names(self) -> list[str]:
        """End points of the model, in network order (any Keras layer name also works).

        Returns
        -------
        list of str
            The I3D end points present in ``model``.
        """
        from ..model.i3d import ENDPOINTS

        names = {layer.name for layer in self.model.layers}
        return [p for p in ENDPOINTS if p in names or f"{p}.relu" in names]

    def _layer(self) -> Any:
        if self.model is None:
            raise BadInputError("FeatureVisualization needs a model for activations")
        names = {layer.name for layer in self.model.layers}
        for name in (self.layer_name, f"{self.layer_name}.relu"):
            if name in names:
                return self.model.get_layer(name)
        raise BadInputError(
            f"Layer {self.layer_name!r} is not in the model; valid layers: "
            f"{', '.join(self.valid_layer_names())}"
        )

    def get_intermediate_activations(self, preprocessed: np.ndarray) -> np.ndarray:
        """The activations at ``layer_name`` for preprocessed clips.

        Parameters
        ----------
        preprocessed : numpy.ndarray
            ``[N, L, H, W, C]`` clips, e.g. from ``extractor.preprocess_flow_sequence(flow)``.

        Returns
        -------
        numpy.ndarray
            ``[N, T', H', W', C']`` float32.

        Raises
        ------
        BadInputError
            Without a model, for a layer the model does not have (the message lists the valid
            end points), or clips that are not 5-D.
        """
        import keras
        import tensorflow as tf

        clips = np.asarray(preprocessed, np.float32)
        if clips.ndim != 5:
            raise BadInputError(f"Preprocessed clips must be [N, L, H, W, C], got {clips.shape}")
        if self._probe is None:
            layer = self._layer()
            self._probe = keras.Model(self.model.inputs, layer.output)
        out = self._probe(tf.convert_to_tensor(clips), training=False)
        return np.asarray(tf.cast(out, tf.float32))

    def _clip(self, activations: Any, sample: int) -> np.ndarray:
        acts = np.asarray(activations, np.float32)
        if acts.ndim == 5:
            if not 0 <= sample < len(acts):
                raise BadInputError(f"sample {sample} out of range: {len(acts)} clips")
            acts = acts[sample]
        if acts.ndim != 4:
            raise BadInputError(
                f"Activations must be [N, T', H', W', C] or [T', H', W', C], got {acts.shape}; "
                "this figure needs spatial maps, not a feature table"
            )
        return acts

    def step_frames(self, t_steps: int) -> np.ndarray:
        """Frame (within the clip) at the centre of each activation time step.

        Parameters
        ----------
        t_steps : int
            Time steps T' of the activations.

        Returns
        -------
        numpy.ndarray
            ``(k + 0.5) · L / T' − 0.5`` for each step k.
        """
        per = self.clip_length / t_steps
        return (np.arange(t_steps) + 0.5) * per - 0.5

    def spatial_extent(self, map_hw: tuple[int, int]) -> tuple[tuple, str]:
        """Where a ``(H', W')`` map lies, for ``imshow``.

        Parameters
        ----------
        map_hw : tuple of int
            ``(H', W')`` cells.

        Returns
        -------
        extent : tuple of float
            ``(left, right, bottom, top)``: pixel edges of the frame the cells cover, or cell
            edges when the pixel size is unknown.
        unit : str
            ``"px"`` or ``"cell"``.
        """
        from ..model.i3d import ENDPOINT_STRIDES

        h_cells, w_cells = map_hw
        if self.frame_shape is not None:
            h, w = self.frame_shape
        elif self.layer_name in ENDPOINT_STRIDES:
            stride = ENDPOINT_STRIDES[self.layer_name][1]
            h, w = h_cells * stride, w_cells * stride
        else:
            return (-0.5, w_cells - 0.5, h_cells - 0.5, -0.5), "cell"
        return (-0.5, w - 0.5, h - 0.5, -0.5), "px"

    def _cell_centres_px(self, map_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, str]:
        """Centres of the cells along y and x, in the unit of :meth:`spatial_extent`."""
        (left, right, bottom, top), unit = self.spatial_extent(map_hw)
        h_cells, w_cells = map_hw
        ys = top + (np.arange(h_cells) + 0.5) * (bottom - top) / h_cells
        xs = left + (np.arange(w_cells) + 0.5) * (right - left) / w_cells
        return ys, xs, unit

    @staticmethod
    def _check_feature(c: int, n: int) -> int:
        if not 0 <= int(c) < n:
            raise BadInputError(f"Feature {c} does not exist: there are {n} channels (0..{n - 1})")
        return int(c)

    def _feature_maps(
        self, activations: Any, feature_idx: int, sample: int
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """(channel, its ``(T', H', W')`` maps, the frame of each step) of one clip."""
        acts = self._clip(activations, sample)
        c = self._check_feature(feature_idx, acts.shape[-1])
        return c, acts[..., c], self.step_frames(len(acts))

    def _series(
        self, data: Any, features: list[int], sample: int
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(x in frames, (len(x), len(features)) values, x label) of a table or activations."""
        if not features:
            raise BadInputError("Choose at least one feature to plot")
        table = _as_table(data)
        if table is not None:
            frames, values = table
            cols = [self._check_feature(c, values.shape[1]) for c in features]
            return frames, values[:, cols], "frame"
        acts = self._clip(data, sample)
        cols = [self._check_feature(c, acts.shape[-1]) for c in features]
        return (
            self.step_frames(len(acts)),
            acts.mean(axis=(1, 2))[:, cols],
            "frame (within the clip)",
        )

    # -- figures -------------------------------------------------------------------------------
    def visualize_layer_activations(
        self,
        activations: Any,
        frame_idx: int = 0,
        save_path: str | os.PathLike | None = None,
        max_channels: int = 16,
        sample: int = 0,
    ) -> Any:
        """A grid of the first ``max_channels`` channel maps at one time step, on one colour scale.

        Parameters
        ----------
        activations : array_like
            ``[N, T', H', W', C]`` (from :meth:`get_intermediate_activations`) or
            ``[T', H', W', C]``.
        frame_idx : int
            The activation time step.
        save_path : str or os.PathLike, optional
            Save the figure there (format from the suffix: png, svg, pdf), atomically.
        max_channels : int
            Channels drawn (the first ones).
        sample : int
            Which clip of ``[N, T', H', W', C]`` activations to draw.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (on the Agg canvas; nothing opens a window).

        Raises
        ------
        BadInputError
            For a channel or clip that does not exist, or input of the wrong shape.
        """
        acts = self._clip(activations, sample)
        if not 0 <= frame_idx < len(acts):
            raise BadInputError(f"frame_idx {frame_idx} out of range: {len(acts)} time steps")
        maps = acts[frame_idx]
        n = min(max_channels, maps.shape[-1])
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig = _figure(2.2 * cols + 1, 2.0 * rows + 0.6)
        axes = fig.subplots(rows, cols, squeeze=False)
        lo, hi = float(maps[..., :n].min()), float(maps[..., :n].max())
        image = None
        for k, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if k < n:
                image = ax.imshow(maps[..., k], cmap="inferno", vmin=lo, vmax=hi)
                ax.set_title(f"channel {k}", fontsize=8)
        frames = self.step_frames(len(acts))
        fig.suptitle(
            f"{self.layer_name}: channels at time step {frame_idx} (frame ≈ {frames[frame_idx]:.1f})"
        )
        fig.colorbar(image, ax=axes, label="activation", shrink=0.8)
        return self._done(fig, save_path)

    def visualize_temporal_feature_evolution(
        self,
        activations: Any,
        feature_indices: list[int],
        save_path: str | os.PathLike | None = None,
        sample: int = 0,
    ) -> Any:
        """Each chosen feature's spatially averaged activation (or table value) over time.

        Parameters
        ----------
        activations : array_like or pandas.DataFrame
            ``[N, T', H', W', C]`` or ``[T', H', W', C]`` activations (spatially averaged), or a
            feature table / ``(frames, channels)`` array (its values over frames).
        feature_indices : list of int
            Channels to plot, one line each.
        save_path : str or os.PathLike, optional
            Save the figure there (format from the suffix: png, svg, pdf), atomically.
        sample : int
            Which clip of ``[N, T', H', W', C]`` activations to draw.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (on the Agg canvas; nothing opens a window).

        Raises
        ------
        BadInputError
            For a channel or clip that does not exist, or input of the wrong shape.
        """
        x, values, xlabel = self._series(activations, list(feature_indices), sample)
        fig = _figure(8, 3.6)
        ax = fig.add_subplot()
        for j, c in enumerate(feature_indices):
            ax.plot(x, values[:, j], marker="o" if len(x) < 20 else None, label=f"feature {c}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("activation (spatial mean)" if xlabel != "frame" else "feature value")
        ax.set_title(f"{self.layer_name}: feature evolution over time")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        return self._done(fig, save_path)

    def create_feature_activation_heatmap(
        self,
        activations: Any,
        feature_idx: int,
        save_path: str | os.PathLike | None = None,
        sample: int = 0,
    ) -> Any:
        """Where a feature fires: its map at every time step, on one colour scale.

        For a feature table: the chosen feature and its neighbouring channels over frames.

        Parameters
        ----------
        activations : array_like or pandas.DataFrame
            ``[N, T', H', W', C]`` or ``[T', H', W', C]`` activations (spatially averaged), or a
            feature table / ``(frames, channels)`` array (its values over frames).
        feature_idx : int
            The channel.
        save_path : str or os.PathLike, optional
            Save the figure there (format from the suffix: png, svg, pdf), atomically.
        sample : int
            Which clip of ``[N, T', H', W', C]`` activations to draw.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (on the Agg canvas; nothing opens a window).

        Raises
        ------
        BadInputError
            For a channel or clip that does not exist, or input of the wrong shape.
        """
        table = _as_table(activations)
        if table is not None:
            frames, values = table
            c = self._check_feature(feature_idx, values.shape[1])
            c_lo, c_hi = max(0, c - 8), min(values.shape[1], c + 9)
            fig = _figure(8, 3.6)
            ax = fig.add_subplot()
            image = ax.imshow(values[:, c_lo:c_hi].T, aspect="auto", cmap="inferno", origin="lower",
                              extent=(frames[0] - 0.5, frames[-1] + 0.5, c_lo - 0.5, c_hi - 0.5))  # fmt: skip
            ax.axhline(c, color="cyan", lw=0.8, ls="--")
            ax.set_xlabel("frame")
            ax.set_ylabel("feature (channel)")
            ax.set_title(f"feature {c} (dashed) and its neighbours over time")
            fig.colorbar(image, ax=ax, label="feature value")
            return self._done(fig, save_path)
        c, maps, frames = self._feature_maps(activations, feature_idx, sample)
        extent, unit = self.spatial_extent(maps.shape[1:3])
        fig = _figure(2.4 * len(maps) + 1, 2.8)
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        lo, hi = float(maps.min()), float(maps.max())
        image = None
        for k, ax in enumerate(axes):
            image = ax.imshow(maps[k], cmap="inferno", vmin=lo, vmax=hi, extent=extent)
            ax.set_title(f"step {k} (frame ≈ {frames[k]:.1f})", fontsize=8)
            ax.set_xlabel(f"x ({unit})")
            ax.set_ylabel(f"y ({unit})" if k == 0 else "")
        fig.suptitle(f"{self.layer_name}: where feature {c} fires")
        fig.colorbar(image, ax=list(axes), label="activation")
        return self._done(fig, save_path)

    def visualize_3d_feature_activation(
        self,
        activations: Any,
        feature_idx: int,
        save_path: str | os.PathLike | None = None,
        sample: int = 0,
    ) -> Any:
        """A 3-D scatter over (x, y, time) of every feature-map cell, coloured and sized by activation.

        Parameters
        ----------
        activations : array_like
            ``[N, T', H', W', C]`` (from :meth:`get_intermediate_activations`) or
            ``[T', H', W', C]``.
        feature_idx : int
            The channel.
        save_path : str or os.PathLike, optional
            Save the figure there (format from the suffix: png, svg, pdf), atomically.
        sample : int
            Which clip of ``[N, T', H', W', C]`` activations to draw.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (on the Agg canvas; nothing opens a window).

        Raises
        ------
        BadInputError
            For a channel or clip that does not exist, or input of the wrong shape.
        """
        c, maps, frames = self._feature_maps(activations, feature_idx, sample)
        ys, xs, unit = self._cell_centres_px(maps.shape[1:3])
        t, y, x = np.meshgrid(frames, ys, xs, indexing="ij")
        v = maps.ravel()
        span = float(v.max() - v.min()) or 1.0
        size = 6 + 60 * (v - v.min()) / span
        fig = _figure(7, 5.5)
        ax = fig.add_subplot(projection="3d")
        points = ax.scatter(x.ravel(), t.ravel(), y.ravel(), c=v, s=size, cmap="inferno", alpha=0.8)
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel("frame (within the clip)")
        ax.set_zlabel(f"y ({unit})")
        ax.invert_zaxis()  # image rows grow downwards
        ax.set_title(f"{self.layer_name}: feature {c} over time and space")
        fig.colorbar(points, ax=ax, label="activation", shrink=0.7)
        return self._done(fig, save_path)

    def create_feature_evolution_animation(
        self,
        activations: Any,
        feature_idx: int,
        save_path: str | os.PathLike,
        sample: int = 0,
        fps: float = 2.0,
    ) -> Path:
        """An animated GIF of a feature's map through the time steps, on one colour scale.

        Parameters
        ----------
        activations : array_like
            ``[N, T', H', W', C]`` (from :meth:`get_intermediate_activations`) or
            ``[T', H', W', C]``.
        feature_idx : int
            The channel.
        save_path : str or os.PathLike
            The GIF to write (atomically).
        sample : int
            Which clip of ``[N, T', H', W', C]`` activations to draw.
        fps : float
            Time steps per second of the animation.

        Returns
        -------
        pathlib.Path
            ``save_path``.

        Raises
        ------
        BadInputError
            For a channel or clip that does not exist, or input of the wrong shape.
        """
        import imageio.v3 as iio

        from ..io._atomic import atomic_write_path

        c, maps, frames = self._feature_maps(activations, feature_idx, sample)
        extent, unit = self.spatial_extent(maps.shape[1:3])
        lo, hi = float(maps.min()), float(maps.max())
        images = []
        for k in range(len(maps)):
            fig = _figure(4.5, 3.6)
            ax = fig.add_subplot()
            image = ax.imshow(maps[k], cmap="inferno", vmin=lo, vmax=hi, extent=extent)
            ax.set_title(f"feature {c}, step {k} (frame ≈ {frames[k]:.1f})")
            ax.set_xlabel(f"x ({unit})")
            ax.set_ylabel(f"y ({unit})")
            fig.colorbar(image, ax=ax, label="activation")
            images.append(figure_rgb(fig))
        path = Path(save_path)
        with atomic_write_path(path) as tmp:
            iio.imwrite(tmp, np.stack(images), extension=".gif", duration=1000 / fps, loop=0)
        return path

    def create_comparative_temporal_view(
        self,
        activations: Any,
        feature_indices: list[int],
        flow_sequence: Any = None,
        save_path: str | os.PathLike | None = None,
        sample: int = 0,
        n_thumbnails: int = 6,
    ) -> Any:
        """The chosen features side by side over time: one panel each, a shared time axis.

        With ``flow_sequence``, a row of flow colour images at evenly spaced frames of the plotted
        span sits above them (for activations: the clip's own flow, from its first frame).

        Parameters
        ----------
        activations : array_like or pandas.DataFrame
            ``[N, T', H', W', C]`` or ``[T', H', W', C]`` activations (spatially averaged), or a
            feature table / ``(frames, channels)`` array (its values over frames).
        feature_indices : list of int
            Channels, one panel each.
        flow_sequence : array_like, optional
            ``(T-1, H, W, 2)`` flow of the same video, for the thumbnails.
        save_path : str or os.PathLike, optional
            Save the figure there (format from the suffix: png, svg, pdf), atomically.
        sample : int
            Which clip of ``[N, T', H', W', C]`` activations to draw.
        n_thumbnails : int
            Flow images in the top row.

        Returns
        -------
        matplotlib.figure.Figure
            The figure (on the Agg canvas; nothing opens a window).

        Raises
        ------
        BadInputError
            For a channel or clip that does not exist, or input of the wrong shape.
        """
        from ..flow.colour import flow_to_colour, robust_max_magnitude

        x, values, xlabel = self._series(activations, list(feature_indices), sample)
        n = len(feature_indices)
        thumbs = flow_sequence is not None
        fig = _figure(9, 1.6 * n + (2.0 if thumbs else 0) + 0.6)
        grid = fig.add_gridspec(n + (1 if thumbs else 0), n_thumbnails if thumbs else 1,
                                height_ratios=([1.5] if thumbs else []) + [1] * n)  # fmt: skip
        if thumbs:
            flow = flow_sequence
            # Thumbnails from the frames the x axis spans (a clip's own frames for activations).
            lo = max(0, int(np.floor(np.nanmin(x)))) if xlabel == "frame" else 0
            hi = int(np.ceil(np.nanmax(x))) if xlabel == "frame" else self.clip_length - 1
            hi = min(hi, len(flow) - 1)
            picks = np.unique(np.linspace(lo, hi, n_thumbnails).round().astype(int))
            vmax = robust_max_magnitude(flow)
            for j, f in enumerate(picks):
                ax = fig.add_subplot(grid[0, j])
                ax.imshow(flow_to_colour(np.asarray(flow[f]), vmax))
                ax.set_title(f"flow, frame {f}", fontsize=8)
                ax.set_axis_off()
        first = None
        for j, c in enumerate(feature_indices):
            ax = fig.add_subplot(grid[j + (1 if thumbs else 0), :], sharex=first)
            first = first or ax
            ax.plot(x, values[:, j], color=f"C{j % 10}")
            ax.set_ylabel(f"feature {c}", fontsize=8)
            ax.grid(alpha=0.3)
            if j < n - 1:
                ax.tick_params(labelbottom=False)
        fig.axes[-1].set_xlabel(xlabel)  # the last feature's panel
        fig.suptitle(f"{self.layer_name}: features side by side over time")
        return self._done(fig, save_path)

    # -- feature tables ------------------------------------------------------------------------
    @staticmethod
    def principal_components(
        features: Any, n_components: int = 3
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Principal components of a feature table's finite rows.

        Parameters
        ----------
        features : pandas.DataFrame or array_like
            A feature table or a ``(frames, channels)`` array.
        n_components : int
            Components wanted (fewer when the rows or channels are fewer).

        Returns
        -------
        frames : numpy.ndarray
            The frame of each row.
        scores : numpy.ndarray
            ``(n, k)`` float32 scores; NaN on rows with non-finite features.
        ratios : numpy.ndarray
            Explained variance ratio of each component.

        Raises
        ------
        BadInputError
            For activations instead of a table, or fewer than 2 finite rows.
        """
        from sklearn.decomposition import PCA

        table = _as_table(features)
        if table is None:
            raise BadInputError("Principal components need a feature table (frames x channels)")
        frames, values = table
        ok = np.isfinite(values).all(axis=1)
        if ok.sum() < 2:
            raise BadInputError("Principal components need at least 2 rows with finite features")
        k = max(1, min(n_components, ok.sum(), values.shape[1]))
        pca = PCA(n_components=k).fit(values[ok])
        scores = np.full((len(values), k), np.nan, np.float32)
        scores[ok] = pca.transform(values[ok])
        return frames, scores, pca.explained_variance_ratio_

    def _done(self, fig: Any, save_path: str | os.PathLike | None) -> Any:
        if save_path is not None:
            save_figure(fig, save_path)
        return fig
