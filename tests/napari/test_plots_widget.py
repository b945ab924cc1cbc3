"""The Feature plots dock widget: lines from layer features, a frame cursor, click to seek, theme."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backend_bases import MouseEvent

from napari_flow_features.napari._qt import plots_widget as _plots_widget
from napari_flow_features.napari._qt.plots_widget import FeaturePlotsWidget

PLUGIN = "napari-flow-features"


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_plots_widget, "show_error", seen.append)
    return seen


def landmark_layer(viewer):
    """Two landmarks on 40 frames; feature c of landmark k at frame t is k*100 + c*10 + t."""
    t = np.arange(40)
    data = np.concatenate([np.stack([t, np.full(40, 10), np.full(40, 12)], 1),
                           np.stack([t, np.full(40, 20), np.full(40, 30)], 1)])  # fmt: skip
    feats = pd.DataFrame({"track_id": np.repeat([0, 1], 40)})
    for c in range(5):
        feats[f"f{c:04d}"] = feats["track_id"] * 100 + c * 10 + np.tile(t, 2)
    return viewer.add_points(data, features=feats, name="landmarks")


def click(widget, frame: float) -> None:
    x, y = widget.axes.transData.transform((frame, np.mean(widget.axes.get_ylim())))
    MouseEvent("button_press_event", widget.canvas, x, y, button=1)._process()


def test_lines_cursor_click_and_theme(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 32, 48), np.uint8), name="video")
    widget = FeaturePlotsWidget(viewer)
    assert widget.status.value.startswith("no layer with features")
    layer = landmark_layer(viewer)
    assert widget.source.value is layer
    widget.features.value = "1"
    widget.features.value = "1,"
    widget.features.value = "1,4"  # typing: one replot after the pause
    qtbot.waitUntil(lambda: len(widget.lines()) == 4)  # two features x two landmarks
    lines = widget.lines()
    np.testing.assert_array_equal(lines[1].get_ydata(), 40 + np.arange(40))  # f0004, landmark 0
    np.testing.assert_array_equal(lines[3].get_ydata(), 140 + np.arange(40))  # f0004, landmark 1

    draws = widget.full_draws
    viewer.dims.set_current_step(0, 17)
    assert widget._cursor.get_xdata()[0] == 17
    assert widget.full_draws == draws  # only the cursor was redrawn
    click(widget, 25.3)
    assert viewer.dims.current_step[0] == 25 and widget._cursor.get_xdata()[0] == 25
    click(widget, widget.axes.get_xlim()[1] - 0.05)  # in the margin past the end: the last frame
    assert viewer.dims.current_step[0] == 39
    widget.toolbar.zoom()  # while zooming, a click is the toolbar's
    click(widget, 5)
    assert viewer.dims.current_step[0] == 39
    widget.toolbar.zoom()

    widget.mode.value = "principal components"
    widget.components.value = 2
    assert len(widget.lines()) == 4 and widget.features.native.isHidden()
    viewer.theme = "light"
    from napari.utils.theme import get_theme

    want = get_theme("light").canvas.as_rgb_tuple()
    got = tuple(round(255 * v) for v in widget.axes.get_facecolor()[:3])
    assert got == want
    assert errors == []


def test_features_image_and_bad_choices(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    table = np.outer(np.sin(np.arange(30) / 4), np.arange(1, 9)).astype(np.float32)
    viewer.add_image(table, name="features: clip")
    viewer.add_image(np.zeros((30, 16, 16)), name="not features")
    widget = FeaturePlotsWidget(viewer)
    assert [name for name, _ in _plots_widget.feature_sources(viewer)] == ["features: clip"]
    widget.features.value = "7"
    qtbot.waitUntil(lambda: len(widget.lines()) == 1)
    np.testing.assert_allclose(widget.lines()[0].get_ydata(), table[:, 7])
    widget.features.value = "0,9"
    widget.features.value = "0,99"
    qtbot.waitUntil(lambda: bool(errors))
    assert errors == ["Feature plots: feature 99 does not exist: there are 8 (0..7)"]  # once
    assert widget.status.value.startswith("feature 99")
    widget.features.value = "2"  # the widget recovers
    qtbot.waitUntil(lambda: widget.status.value == "")
    assert len(widget.lines()) == 1


def test_the_plot_follows_features_as_they_land(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 32, 48), np.uint8), name="video")
    points = viewer.add_points(np.stack([np.arange(40), np.full(40, 5), np.full(40, 5)], 1))
    widget = FeaturePlotsWidget(viewer)
    widget.features.value = "0,1"
    assert widget.source.value is None  # no feature columns yet
    points.features = pd.DataFrame({"f0000": np.arange(40.0), "f0001": np.zeros(40)})
    qtbot.waitUntil(lambda: widget.source.value is points and len(widget.lines()) == 2)
    points.features = pd.DataFrame({"f0000": -np.arange(40.0), "f0001": np.ones(40)})
    qtbot.waitUntil(lambda: widget.lines()[0].get_ydata()[5] == -5)
    # A (K, T, C) features image (K landmarks) gives one line per landmark and feature.
    image = viewer.add_image(np.zeros((2, 40, 3), np.float32), name="features: video",
                             metadata={"landmarks": ["nose", "paw"]})  # fmt: skip
    widget.source.value = image
    widget.features.value = "2"
    qtbot.waitUntil(lambda: len(widget.lines()) == 2)
    assert [line.get_label() for line in widget.lines()] == [
        "f0002 (landmark nose)",
        "f0002 (landmark paw)",
    ]
    data = image.data.copy()
    data[1, :, 2] = 7.0
    image.data = data
    qtbot.waitUntil(lambda: widget.lines()[1].get_ydata()[0] == 7.0)
    assert errors == []


def test_closing_the_viewer_with_the_dock_open_is_clean(make_napari_viewer, qtbot):
    """Closing deletes the dock's Qt side and then removes layers: nothing may touch the dead dock."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 32, 48), np.uint8), name="video")
    landmark_layer(viewer)
    widget = FeaturePlotsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Feature plots")
    viewer.close()
    qtbot.wait(50)  # a refresh scheduled by the layer removals would run (and fail) here


def test_toolbar_icons_follow_the_theme(make_napari_viewer):
    """Light icons on napari's dark theme, dark icons on the light one (opaque pixels' mean)."""
    from qtpy.QtGui import QImage

    from napari_flow_features.napari._qt.plots_widget import FeaturePlotsWidget

    def icon_brightness(widget) -> float:
        action = next(a for a in widget.toolbar.actions() if not a.icon().isNull())
        image = (
            action.icon().pixmap(24, 24).toImage().convertToFormat(QImage.Format.Format_RGBA8888)
        )
        ptr = image.constBits()
        ptr.setsize(image.sizeInBytes())
        px = np.frombuffer(ptr, np.uint8).reshape(image.height(), -1, 4)[:, : image.width()]
        opaque = px[..., 3] > 128
        return float(px[opaque][:, :3].mean())

    viewer = make_napari_viewer()
    viewer.theme = "dark"
    widget = FeaturePlotsWidget(viewer)
    assert icon_brightness(widget) > 160
    viewer.theme = "light"
    assert icon_brightness(widget) < 100
