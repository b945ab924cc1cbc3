"""Figure defects that stay fixed, checked on the rendered figures: what overlaps what, in pixels.

Each test renders the figure with Agg and compares the pixel boxes of its parts (title, colour bar,
legend, labels, data), or reads the pixels of the saved file, so a layout change that brings a
defect back fails here, whatever the fonts.
"""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from napari_flow_features.analysis.report import write_evaluation_report
from napari_flow_features.analysis.visualization import FeatureVisualization

T = 120


def overlap(a, b) -> float:
    """Area (px²) where two display-space boxes overlap."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(0.0, w) * max(0.0, h)


def report_figures(tmp_path, monkeypatch, n_labels: int) -> list:
    """The figures of an evaluation report on features that separate ``n_labels`` labels, as
    drawn (the report's figure factory is wrapped to keep them)."""
    import napari_flow_features.analysis.report as report_module

    figures: list = []
    real = report_module._figure
    monkeypatch.setattr(
        report_module, "_figure", lambda *a: figures.append(real(*a)) or figures[-1]
    )
    rng = np.random.default_rng(n_labels)
    lab = np.repeat([f"label {k}" for k in range(n_labels)], T // n_labels)
    x = rng.normal(size=(len(lab), 8)) + (lab == "label 0")[:, None] * 1.5
    table = pd.DataFrame(x, columns=[f"f{c:04d}" for c in range(8)])
    table.insert(0, "frame", np.arange(len(lab)))
    write_evaluation_report(table, tmp_path, lab)
    for fig in figures:
        fig.canvas.draw()
    return figures


@pytest.mark.parametrize("n_labels", [2, 4])
def test_confusion_matrix_title_clear_of_its_colour_bar(tmp_path, monkeypatch, n_labels):
    """The title sits above the matrix and its colour bar, overlapping neither."""
    fig = report_figures(tmp_path, monkeypatch, n_labels)[-1]  # the confusion matrix comes last
    renderer = fig.canvas.get_renderer()
    assert fig._suptitle is not None
    title = fig._suptitle.get_window_extent(renderer)
    matrix, bar = fig.axes[0], fig.axes[1]
    for ax in (matrix, bar):
        assert overlap(title, ax.get_tightbbox(renderer)) == 0
    assert title.y0 > bar.get_window_extent(renderer).y1  # above the bar, not beside it


def test_report_legends_hide_no_data(tmp_path, monkeypatch):
    """No legend box of the report's figures overlaps the data area of its axes."""
    checked = 0
    for fig in report_figures(tmp_path, monkeypatch, 3):
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                box = legend.get_window_extent(renderer)
                assert overlap(box, ax.get_window_extent(renderer)) == 0
                assert box.x1 <= fig.bbox.x1  # and it is not cut off at the edge
                checked += 1
    assert checked == 2  # PCA over time and PCA by label


def test_gif_frames_keep_their_y_label_inside(tmp_path):
    """No ink in the outer pixel columns and rows of a GIF frame: the y-label is not clipped."""
    acts = np.random.default_rng(0).random((4, 15, 20, 8)).astype(np.float32)
    vis = FeatureVisualization(layer_name="Mixed_4f", clip_length=16)
    path = vis.create_feature_evolution_animation(acts, 2, tmp_path / "a.gif")
    frames = iio.imread(path)
    assert frames.ndim == 4 and len(frames) == 4
    frame = frames[0][..., :3].astype(int)
    background = frame[frame.shape[0] // 2, -1]  # right edge, mid height: paper colour
    for edge in (frame[:, :3], frame[:, -3:], frame[:3], frame[-3:]):
        assert (np.abs(edge - background).sum(-1) < 30).all()


def test_heatmap_axes_are_in_pixels(tmp_path):
    """Spatial axes span the frame's pixels (the end point's stride, or the given frame size)."""
    acts = np.random.default_rng(0).random((4, 15, 20, 8)).astype(np.float32)
    fig = FeatureVisualization(layer_name="Mixed_4f").create_feature_activation_heatmap(acts, 2)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (px)" and ax.get_ylabel() == "y (px)"
    np.testing.assert_allclose(ax.get_xlim(), (-0.5, 20 * 16 - 0.5))
    np.testing.assert_allclose(ax.get_ylim(), (15 * 16 - 0.5, -0.5))  # rows grow downwards
    sized = FeatureVisualization(layer_name="Mixed_4f", frame_shape=(230, 310))
    ax = sized.create_feature_activation_heatmap(acts, 2).axes[0]
    np.testing.assert_allclose(ax.get_xlim(), (-0.5, 309.5))
    cells = FeatureVisualization(layer_name="some_keras_layer")
    ax = cells.create_feature_activation_heatmap(acts, 2).axes[0]
    assert ax.get_xlabel() == "x (cell)"
    np.testing.assert_allclose(ax.get_xlim(), (-0.5, 19.5))
