"""Dock widget ``Feature plots``: features (or their principal components) over time.

The plot is synced with the viewer's frame. A vertical cursor follows the current frame; only the cursor is redrawn on a frame change (the rest
of the figure is cached and blitted). A click on the plot moves the viewer to that frame (unless the
toolbar is zooming or panning; the toolbar also saves the figure). Colours
follow napari's theme. Sources: Points layers whose features hold ``f0000…`` columns (one line per
landmark) and ``features: …`` Image layers of shape ``(T, C)`` or ``(K, T, C)`` (K landmarks). The plot
follows its source: when a run writes new features, it redraws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, SpinBox
from napari.utils.notifications import show_error

from ...io.landmark_key import landmark_ids, landmark_key
from ...io.tables import feature_columns
from .. import _axes
from .scroll import make_scrollable

if TYPE_CHECKING:
    import napari

SHOW_CHOICES = ("chosen features", "principal components")
TYPING_PAUSE_MS = 400


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
        self.status = Label(value="")
        self.extend([self.source, self.mode, self.features, self.components, self.status])
        self.figure = Figure(figsize=(5, 3), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.toolbar = NavigationToolbar2QT(self.canvas, self.native)  # zoom, pan, save figure
        self._add_native(self.toolbar)
        self._add_native(self.canvas)
        self.axes = self.figure.add_subplot()
        self._cursor: Any = None
        self._background: Any = None
        self.full_draws = 0  #: figure redraws (a frame change only blits the cursor)
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        for widget in (self.source, self.mode, self.components):
            widget.changed.connect(self.replot)
        self.mode.changed.connect(self._update_visibility)
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
        self.features.visible = self.mode.value == "chosen features"
        self.components.visible = self.mode.value == "principal components"

    def _disconnect(self, *_: Any) -> None:
        """The dock was closed: stop listening to the viewer and its layers."""
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
        if self._cursor is None or self._background is None:
            return
        self.canvas.restore_region(self._background)
        self.axes.draw_artist(self._cursor)
        self.canvas.blit(self.figure.bbox)

    def _on_frame(self, *_: Any) -> None:
        if self._cursor is not None:
            frame = self.current_frame()
            self._cursor.set_xdata([frame, frame])
            self._blit_cursor()

    def _on_click(self, event: Any) -> None:
        """A click in the plot moves the viewer to the nearest frame."""
        if event.inaxes is not self.axes or event.xdata is None or self.toolbar.mode:
            return  # outside the plot, or the toolbar is zooming or panning
        axis = self.frame_axis
        top = int(self._viewer.dims.nsteps[axis]) - 1
        self._viewer.dims.set_current_step(axis, int(np.clip(round(event.xdata), 0, top)))
