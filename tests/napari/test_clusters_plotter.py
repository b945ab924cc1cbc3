"""Our result layers in napari-clusters-plotter (the ecosystem's clustering plugin), as its users
run it: select the layer, pick the feature columns, run an algorithm, read the new column.

The GAP result layer (one point per frame, the features and ``frame`` in its table) is made by the
same conversion a run uses (``_convert.gap_points``); the frames move through known states.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.analysis.behaviour_map import MapSettings, behaviour_map
from napari_flow_features.napari import _convert

ncp = pytest.importorskip("napari_clusters_plotter")

T, C = 60, 8


def gap_layer(viewer, missing: int | None = None):
    """A GAP result layer of a 60-frame run whose frames cycle through 3 states, and the states."""
    rng = np.random.default_rng(2)
    state = (np.arange(T) // 10) % 3
    values = rng.normal(size=(3, C))[state] * 3 + 0.2 * rng.normal(size=(T, C))
    table = pd.DataFrame(values, columns=[f"f{c:04d}" for c in range(C)])
    table.insert(0, "frame", np.arange(T))
    if missing is not None:
        table = table.drop(index=missing)  # a frame the run did not write
    meta = {"n_frames": T, "frame_shape": [24, 32]}
    place = _convert.Placement("video", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    data, kwargs, _ = _convert.gap_points(table, meta, place, "features points: video")
    return viewer.add_points(data, **kwargs), table, state


def run_algorithm(widget, qtbot, layer, algorithm: str, column: str, **params) -> None:
    """Select our feature columns, choose ``algorithm``, press Run and wait for ``column``."""
    for i in range(widget.feature_selection_widget.count()):
        item = widget.feature_selection_widget.item(i)
        item.setSelected(item.text().startswith("f0"))
    widget.algorithm_selection.setCurrentText(algorithm)
    for name, value in params.items():
        getattr(widget.selected_algorithm_widget, name).value = value
    widget.selected_algorithm_widget.call_button.clicked.emit()
    qtbot.waitUntil(lambda: column in layer.features.columns, timeout=90_000)


def test_gap_layer_features_are_listed_and_clustered(make_napari_viewer, qtbot):
    from napari_clusters_plotter import ClusteringWidget, DimensionalityReductionWidget

    viewer = make_napari_viewer()
    layer, table, state = gap_layer(viewer)
    viewer.layers.selection.active = layer
    clustering = ClusteringWidget(viewer)
    qtbot.addWidget(clustering)
    listed = [clustering.feature_selection_widget.item(i).text()
              for i in range(clustering.feature_selection_widget.count())]  # fmt: skip
    assert listed == sorted(["frame", *[f"f{c:04d}" for c in range(C)]])
    run_algorithm(clustering, qtbot, layer, "KMeans", "KMeans", n_clusters=3)
    kmeans = layer.features["KMeans"]
    assert kmeans.dtype.name == "category"
    assert len(set(zip(kmeans.astype(int), state, strict=True))) == 3  # the 3 states, found

    reduction = DimensionalityReductionWidget(viewer)
    qtbot.addWidget(reduction)
    run_algorithm(reduction, qtbot, layer, "PCA", "PC1")
    ours = behaviour_map(table, MapSettings(clusters="kmeans", k=3))  # the same PCA
    for k in range(2):  # PCA axes are defined up to their sign
        np.testing.assert_allclose(np.abs(layer.features[f"PC{k}"].astype(float)),
                                   np.abs(ours[f"embed_{k}"]), atol=1e-5)  # fmt: skip
    assert "tensorflow" not in sys.modules


def test_umap_through_the_plugin_without_tensorflow(make_napari_viewer, qtbot):
    """napari-clusters-plotter's UMAP imports umap-learn, which imports TensorFlow when it is
    installed (a crash in napari's process); with our plugin loaded it does not."""
    import importlib.util

    if importlib.util.find_spec("umap") is None:  # importorskip would import it (and TF)
        pytest.skip("umap-learn is not installed")
    from napari_clusters_plotter import DimensionalityReductionWidget

    import napari_flow_features.napari  # noqa: F401  # what napari does when it loads our plugin

    assert "umap" not in sys.modules  # nothing of ours loaded it before the plugin's UMAP
    viewer = make_napari_viewer()
    layer, _, _ = gap_layer(viewer)
    viewer.layers.selection.active = layer
    widget = DimensionalityReductionWidget(viewer)
    qtbot.addWidget(widget)
    run_algorithm(widget, qtbot, layer, "UMAP", "UMAP1", n_neighbors=10)
    assert np.isfinite(layer.features[["UMAP0", "UMAP1"]].astype(float)).all(axis=None)
    assert "tensorflow" not in sys.modules


def test_plotter_highlights_the_current_frame(make_napari_viewer, qtbot):
    """The plotter reads ``frame`` from our layer's features and brightens that frame's point."""
    from napari_clusters_plotter import PlotterWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((T, 24, 32), np.uint8), name="video")
    layer, _, _ = gap_layer(viewer)
    viewer.layers.selection.active = layer
    plotter = PlotterWidget(viewer)
    qtbot.addWidget(plotter)
    plotter.x_axis, plotter.y_axis = "f0000", "f0001"
    viewer.dims.set_current_step(0, 23)
    alpha = np.asarray(plotter.plotting_widget.active_artist.alpha, float)
    assert alpha.shape == (T,) and alpha[23] == 1 and (np.delete(alpha, 23) < 1).all()
