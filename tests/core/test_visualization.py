"""FeatureVisualization: activations of a real Keras I3D, and figures of hand-made activations."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from napari_flow_features.analysis.visualization import FeatureVisualization
from napari_flow_features.errors import BadInputError


@pytest.fixture
def acts():
    """[N=2, T'=2, H'=3, W'=4, C=5]: channel c at step k, cell (y, x) = 100k + 10y + x + c/10."""
    k, y, x, c = np.meshgrid(np.arange(2), np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    one = (100 * k + 10 * y + x + c / 10).astype(np.float32)
    return np.stack([one, -one])


def labelled(ax) -> bool:
    return bool(ax.get_xlabel()) and (bool(ax.get_ylabel()) or ax.name == "3d")


def has_colorbar(fig) -> bool:
    return any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_activations_at_an_end_point_of_a_real_model():
    from napari_flow_features.model.i3d import build_i3d

    model = build_i3d(in_channels=2, endpoint="Mixed_3c", clip_length=8, height=32, width=32)
    vis = FeatureVisualization(model, "Mixed_3c")
    clips = np.random.default_rng(0).uniform(-1, 1, (2, 8, 32, 32, 2)).astype(np.float32)
    out = vis.get_intermediate_activations(clips)
    assert out.shape == (2, 4, 4, 4, 480) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.asarray(model(clips), np.float32), rtol=1e-5, atol=1e-5)
    early = FeatureVisualization(model, "Conv3d_2c_3x3").get_intermediate_activations(clips)
    assert early.shape == (2, 4, 8, 8, 192)
    with pytest.raises(BadInputError, match=r"valid layers: Conv3d_1a_7x7, .*Mixed_3c"):
        FeatureVisualization(model, "Mixed_9z").get_intermediate_activations(clips)


def test_evolution_is_the_spatial_mean_at_frame_centres(acts, tmp_path):
    vis = FeatureVisualization(layer_name="Mixed_5c", clip_length=16)
    fig = vis.visualize_temporal_feature_evolution(acts, [0, 4], save_path=tmp_path / "e.png")
    ax = fig.axes[0]
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_xdata(), [3.5, 11.5])  # 8 frames per step
    np.testing.assert_allclose(
        lines[1].get_ydata(), acts[0, :, :, :, 4].mean(axis=(1, 2)), rtol=1e-6
    )
    assert labelled(ax) and "frame" in ax.get_xlabel() and ax.get_title()
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    # The same figure from a feature table: one line per chosen column, over the frame column.
    table = pd.DataFrame({"frame": [0, 1, 2], "f0000": [1.0, 2, 3], "f0001": [0.0, 5, 1]})
    fig = vis.visualize_temporal_feature_evolution(table, [1])
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [0, 5, 1])


def test_maps_grid_heatmap_3d_and_animation(acts, tmp_path):
    vis = FeatureVisualization(layer_name="Mixed_4f", clip_length=16)
    grid = vis.visualize_layer_activations(acts, frame_idx=1, sample=1)
    images = [im for ax in grid.axes for im in ax.get_images()]
    assert len(images) == 5 and has_colorbar(grid)
    np.testing.assert_allclose(images[2].get_array(), -acts[0, 1, :, :, 2])
    heat = vis.create_feature_activation_heatmap(acts, 3)
    maps = [ax.get_images()[0].get_array() for ax in heat.axes if ax.get_images()]
    np.testing.assert_allclose(np.stack(maps), acts[0, :, :, :, 3])
    assert (
        has_colorbar(heat)
        and heat.get_suptitle()
        and all(labelled(ax) or ax.get_label() == "<colorbar>" for ax in heat.axes[:1])
    )
    cube = vis.visualize_3d_feature_activation(acts, 2)
    scatter = cube.axes[0].collections[0]
    assert len(scatter.get_array()) == 2 * 3 * 4 and labelled(cube.axes[0]) and has_colorbar(cube)
    gif = vis.create_feature_evolution_animation(acts, 0, tmp_path / "a.gif")
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 2 and frames.ndim == 4  # one GIF frame per time step
    assert not frames[0].shape[:2] == (0, 0) and not np.array_equal(frames[0], frames[1])


def test_comparative_view_with_flow_thumbnails(acts, tmp_path):
    vis = FeatureVisualization(layer_name="Mixed_5c")
    flow = np.zeros((20, 12, 16, 2), np.float32)
    flow[..., 0] = 2.0
    fig = vis.create_comparative_temporal_view(acts, [0, 1, 2], flow_sequence=flow,
                                               save_path=tmp_path / "c.svg")  # fmt: skip
    thumbs = [ax for ax in fig.axes if ax.get_images()]
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(thumbs) == 6 and len(panels) == 3
    assert thumbs[0].get_images()[0].get_array().shape == (12, 16, 3)
    assert panels[-1].get_xlabel().startswith("frame")
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


def test_table_heatmap_and_principal_components():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    values = np.outer(np.sin(t / 6), rng.normal(size=12)) + 0.01 * rng.normal(size=(60, 12))
    table = pd.DataFrame(values, columns=[f"f{c:04d}" for c in range(12)])
    table.insert(0, "frame", t)
    table.loc[5, "f0003"] = np.nan
    vis = FeatureVisualization()
    fig = vis.create_feature_activation_heatmap(table, 2)
    assert fig.axes[0].get_images()[0].get_array().shape == (11, 60)  # channels 0..10, frames
    _, scores, ratio = vis.principal_components(table, 2)
    assert scores.shape == (60, 2) and np.isnan(scores[5]).all() and ratio[0] > 0.99
    assert (
        abs(np.corrcoef(scores[np.isfinite(scores[:, 0]), 0], np.sin(np.delete(t, 5) / 6))[0, 1])
        > 0.99
    )


def test_bad_requests_are_named(acts):
    vis = FeatureVisualization()
    with pytest.raises(BadInputError, match="Feature 9 does not exist: there are 5"):
        vis.visualize_temporal_feature_evolution(acts, [9])
    with pytest.raises(BadInputError, match="needs spatial maps"):
        vis.visualize_3d_feature_activation(np.zeros((10, 4)), 0)
    with pytest.raises(BadInputError, match="frame_idx 7 out of range"):
        vis.visualize_layer_activations(acts, frame_idx=7)
    with pytest.raises(BadInputError, match="needs a model"):
        vis.get_intermediate_activations(np.zeros((1, 8, 16, 16, 2)))
