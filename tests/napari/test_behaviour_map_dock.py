"""The behaviour map in the Feature plots dock: scatter and ethogram linked to the time slider."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.backend_bases import MouseEvent

from napari_flow_features.analysis.behaviour_map import MapSettings, behaviour_map
from napari_flow_features.napari._qt import plots_widget as _plots_widget
from napari_flow_features.napari._qt.plots_widget import FeaturePlotsWidget

T = 90


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_plots_widget, "show_error", seen.append)
    return seen


def state_features(t: int = T, channels: int = 12) -> tuple[pd.DataFrame, np.ndarray]:
    """Features of frames that move through 3 states in blocks of 15 frames, and the states."""
    rng = np.random.default_rng(3)
    state = (np.arange(t) // 15) % 3
    values = rng.normal(size=(3, channels))[state] * 3 + 0.2 * rng.normal(size=(t, channels))
    return pd.DataFrame(values, columns=[f"f{c:04d}" for c in range(channels)]), state


def press(widget, x: float, y: float, axes) -> None:
    px, py = axes.transData.transform((x, y))
    MouseEvent("button_press_event", widget.canvas, px, py, button=1)._process()


def map_shown(widget) -> bool:
    return widget._artists is not None and widget.status.value == ""


def test_map_view_follows_and_moves_the_time_slider(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((T, 24, 32), np.uint8), name="video")
    feats, state = state_features()
    feats.loc[40, "f0002"] = np.nan  # the landmark was lost at frame 40
    points = viewer.add_points(np.stack([np.arange(T), np.full(T, 9), np.full(T, 9)], 1),
                               features=feats, name="landmarks")  # fmt: skip
    widget = FeaturePlotsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Feature plots")
    widget.mode.value = "behaviour map"
    widget.map_clusters.value = "kmeans"
    widget.map_k.value = 3
    assert not widget.map_k.native.isHidden() and widget.features.native.isHidden()
    qtbot.waitUntil(lambda: map_shown(widget), timeout=30_000)
    art = widget._artists
    assert not widget.canvas.isHidden() and len(widget.figure.axes) == 2
    # The map is the library's, on the layer's rows (computed here on the same table).
    table = feats.assign(frame=np.arange(T))[["frame", *feats.columns]]
    expected = behaviour_map(table, MapSettings(clusters="kmeans", k=3))
    ok = np.arange(T) != 40
    np.testing.assert_allclose(art.scatter.get_offsets(), expected[["embed_0", "embed_1"]][ok])
    assert (art.point_frames == np.flatnonzero(ok)).all()
    cluster = widget.mapped()["cluster"].to_numpy()
    assert len(set(zip(cluster[ok], state[ok], strict=True))) == 3 and cluster[40] == -1
    strip = np.asarray(art.ethogram.get_array())
    assert (strip[0] - 1 == cluster).all()  # the ethogram is the cluster of each frame

    draws = widget.full_draws
    viewer.dims.set_current_step(0, 17)
    np.testing.assert_allclose(widget.highlighted(), expected[["embed_0", "embed_1"]][17:18])
    assert widget._cursor.get_xdata()[0] == 17 and widget.full_draws == draws  # blitted only
    viewer.dims.set_current_step(0, 40)
    assert widget.highlighted().shape == (0, 2)  # no point for a frame without features

    x, y = expected.loc[63, ["embed_0", "embed_1"]]
    press(widget, x, y, art.scatter_axes)  # a click on the point of frame 63
    assert viewer.dims.current_step[0] == 63
    np.testing.assert_allclose(widget.highlighted(), [[x, y]])
    press(widget, 12.2, 0, art.ethogram_axes)  # a click in the ethogram strip
    assert viewer.dims.current_step[0] == 12

    widget.to_layer.changed.emit(True)
    assert (points.features["cluster"].to_numpy() == cluster).all()
    np.testing.assert_allclose(points.features["embed_0"], widget.mapped()["embed_0"])
    qtbot.wait(50)
    assert map_shown(widget) and widget.mapped()["cluster"].tolist() == cluster.tolist()

    widget.mode.value = "chosen features"  # back to lines: one axes again
    qtbot.waitUntil(lambda: len(widget.lines()) == 3)
    assert widget.figure.axes == [widget.axes]
    assert errors == []
    assert "tensorflow" not in sys.modules


def test_map_of_a_landmarks_image_has_one_ethogram_row_each(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    feats, _ = state_features(t=60, channels=6)
    stack = np.stack([feats.to_numpy(), feats.to_numpy()[::-1]]).astype(np.float32)
    viewer.add_image(stack, name="features: clip", metadata={"landmarks": ["nose", "paw"]})
    widget = FeaturePlotsWidget(viewer)
    widget.mode.value = "behaviour map"
    qtbot.waitUntil(lambda: map_shown(widget), timeout=30_000)
    strip = np.asarray(widget._artists.ethogram.get_array()) - 1
    mapped = widget.mapped()
    assert strip.shape == (2, 60)
    assert (strip[1] == mapped.loc[mapped["landmark"] == "landmark paw", "cluster"]).all()
    widget.to_layer.changed.emit(True)  # not a Points layer: said so, nothing breaks
    assert errors and "Points layer" in errors[-1]


def test_a_bad_map_is_a_message(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    feats, _ = state_features(t=3, channels=4)
    viewer.add_points(np.zeros((3, 3)) + np.arange(3)[:, None], features=feats)
    widget = FeaturePlotsWidget(viewer)
    widget.map_clusters.value = "kmeans"
    widget.map_k.value = 5
    widget.mode.value = "behaviour map"
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert "k=5 needs at least 5 rows" in widget.status.value
