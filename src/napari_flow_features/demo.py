"""The demo's steps on the built-in whisker sample, usable from Python as from ``flow-features demo``.

Sample video and landmarks → optical flow (checked against the sample's ground truth) → I3D
features (pooled, and at the whisker base with its heatmap) → figures and an evaluation report with
the whisker's swing direction as labels. Each step is a function; the command line prints between
them. Progress arrives through ``progress(done, total)`` callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: The demo encoder's settings: Mixed_4f keeps the whisker's small motion in 832 channels.
DEMO_SETTINGS: dict[str, Any] = {"endpoint": "Mixed_4f", "clip_length": 16, "stride": 8}


@dataclass(frozen=True)
class DemoFlow:
    """The demo's optical flow and how far it is from the sample's ground truth.

    Attributes
    ----------
    path : Path
        The written flow (``.npy``).
    flow : numpy.ndarray
        The flow, ``(T-1, H, W, 2)``.
    error_moving : float
        Mean endpoint error (px) where the true flow moves more than half a pixel (the whisker).
    error_still : float
        Mean endpoint error (px) elsewhere (the still background).
    """

    path: Path
    flow: Any
    error_moving: float
    error_still: float


@dataclass(frozen=True)
class DemoFeatures:
    """The demo's feature outputs.

    Attributes
    ----------
    written : list of Path
        Tables (pooled, at the whisker base) and the heatmap, in the order written.
    point_table : pandas.DataFrame
        The whisker-base features (for the figures and the report).
    random_weights : bool
        Whether the encoder ran with random weights (marked in every output).
    """

    written: list[Path]
    point_table: Any
    random_weights: bool


@dataclass(frozen=True)
class DemoReport:
    """The demo's figures and evaluation report.

    Attributes
    ----------
    figures : list of Path
        Every figure written.
    figure_dir : Path
        Their folder.
    features : list of int
        The channels shown (the three that vary most).
    report : dict
        Paths of the report's files by kind (``html``, ``json``...).
    metrics : dict
        The report's metrics (``probe_accuracy``, ``chance_accuracy``...).
    """

    figures: list[Path]
    figure_dir: Path
    features: list[int]
    report: dict[str, Path]
    metrics: dict[str, float]


def write_sample(out: str | Path) -> dict[str, str]:
    """Write the synthetic whisker sample into ``out/sample``.

    Parameters
    ----------
    out : str or Path
        The demo's output folder.

    Returns
    -------
    dict
        Paths by role: ``video``, ``landmarks``, ``ground_truth``.
    """
    from .sample import save_whisker_sample

    logger.info("writing the synthetic whisker sample to %s", Path(out) / "sample")
    return save_whisker_sample(Path(out) / "sample")


def compute_demo_flow(
    sample: dict[str, str], out: str | Path, progress: Progress | None = None
) -> DemoFlow:
    """DIS optical flow of the sample video into ``out/flow``, compared with the ground truth.

    Parameters
    ----------
    sample : dict
        What :func:`write_sample` returned.
    out : str or Path
        The demo's output folder.
    progress : callable, optional
        ``progress(done, total)`` per frame pair.

    Returns
    -------
    DemoFlow
        The flow, its path and its endpoint errors.
    """
    import numpy as np

    from .flow.compute import OpticalFlowComputer

    flow_path = Path(out) / "flow" / "whisker_dis.npy"
    flow_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("computing DIS optical flow into %s", flow_path)
    flow = OpticalFlowComputer("dis").compute(sample["video"], flow_path, progress=progress)
    with np.load(sample["ground_truth"], allow_pickle=False) as gt:
        truth = gt["flow"]
    moving = np.hypot(truth[..., 0], truth[..., 1]) > 0.5
    epe = np.hypot(*(np.asarray(flow) - truth).transpose(3, 0, 1, 2))
    return DemoFlow(flow_path, flow, float(epe[moving].mean()), float(epe[~moving].mean()))


def demo_extractor() -> tuple[Any, str | None]:
    """The demo's encoder: the default (pretrained) weights, or random ones when offline.

    Returns
    -------
    extractor : DynamicFeatureExtractor
        Built with :data:`DEMO_SETTINGS`.
    note : str or None
        ``None`` with the pretrained weights; otherwise one line saying why they could not be
        fetched, that the demo goes on with random weights, and how to fetch them.
    """
    from ._tf_env import import_tensorflow_quietly
    from .model.extractor import DynamicFeatureExtractor
    from .model.weights import WeightsUnavailableError

    import_tensorflow_quietly()  # without the CUDA probing lines on a machine with no GPU
    try:
        return DynamicFeatureExtractor(**DEMO_SETTINGS), None
    except WeightsUnavailableError as exc:
        reason = str(exc.__cause__ or exc).split(" for http")[0]
        note = (
            "Pretrained weights unavailable ("
            + reason
            + "); the demo goes on with RANDOM weights, "
            "marked in every output (`flow-features weights fetch flow_imagenet` when online)."
        )
        logger.debug("pretrained weights unavailable", exc_info=True)
        return DynamicFeatureExtractor(**DEMO_SETTINGS, weights={"source": "random"}), note


def extract_demo_features(
    flow_path: str | Path,
    sample: dict[str, str],
    extractor: Any,
    out: str | Path,
    progress_for: Callable[[str], Progress | None] | None = None,
) -> DemoFeatures:
    """I3D features of the demo flow: pooled, and at the whisker base with an L2 heatmap.

    Parameters
    ----------
    flow_path : str or Path
        The demo flow (:func:`compute_demo_flow`).
    sample : dict
        What :func:`write_sample` returned (the landmarks and video paths).
    extractor : DynamicFeatureExtractor
        The encoder (:func:`demo_extractor`).
    out : str or Path
        The demo's output folder; tables go to ``out/features``.
    progress_for : callable, optional
        ``progress_for(post_encoder)`` returns the ``progress(done, total)`` callback of that
        run (or ``None``).

    Returns
    -------
    DemoFeatures
        The written files and the whisker-base table.
    """
    import numpy as np

    from .extract.pipeline import extract_features
    from .extract.plan import run_settings
    from .io._atomic import atomic_write_path
    from .io.tables import write_table

    feature_dir = Path(out) / "features"
    feature_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    table = None
    for post, points in (("gap", None), ("point", sample["landmarks"])):
        logger.info("extracting I3D features (%s)", post)
        progress = progress_for(post) if progress_for is not None else None
        settings = run_settings(extractor, None).replace(
            post_encoder=post, heatmap="l2" if post == "point" else None
        )
        result = extract_features(flow_path, extractor, settings, points=points, progress=progress)
        result.table.attrs["source_video"] = sample["video"]
        written.append(write_table(result.table, feature_dir / f"whisker_{post}.parquet"))
        if result.heatmap is not None:
            heat_path = feature_dir / "whisker_heatmap_l2.npy"
            with atomic_write_path(heat_path) as tmp:
                np.save(tmp, result.heatmap, allow_pickle=False)
            written.append(heat_path)
        table = result.table
    random_weights = extractor.describe()["loaded_model"]["source"] == "random"
    return DemoFeatures(written, table, random_weights)


def demo_figures_and_report(
    table: Any, extractor: Any, flow: Any, ground_truth: str | Path, out: str | Path
) -> DemoReport:
    """Figures of the whisker-base features and of one clip, and an evaluation report.

    The report's labels are the whisker's swing direction (rising or falling angle) from the
    sample's ground truth, so its metrics say whether the motion features tell them apart.

    Parameters
    ----------
    table : pandas.DataFrame
        The whisker-base features (:attr:`DemoFeatures.point_table`).
    extractor : DynamicFeatureExtractor
        The encoder that made them (for the clip figures).
    flow : array_like
        The demo flow ``(T-1, H, W, 2)``.
    ground_truth : str or Path
        The sample's ground-truth ``.npz``.
    out : str or Path
        The demo's output folder; figures go to ``out/figures``, the report to ``out/evaluation``.

    Returns
    -------
    DemoReport
        The figures, the features they show, the report's paths and metrics.
    """
    import numpy as np
    import pandas as pd

    from .analysis.figures import first_clip_figures, marked_layer_name, write_figures
    from .analysis.report import write_evaluation_report
    from .analysis.study import report_metrics
    from .analysis.visualization import FeatureVisualization
    from .io.tables import feature_columns

    values = table[feature_columns(table)].to_numpy()
    busiest = np.argsort(np.nan_to_num(values.std(axis=0)))[::-1][:3].tolist()  # most varying
    vis = FeatureVisualization(layer_name=marked_layer_name(extractor.endpoint,
                                                            extractor.describe()),
                               clip_length=extractor.config.clip_length)  # fmt: skip
    fig_dir = Path(out) / "figures"
    logger.info("writing figures into %s", fig_dir)
    figures = write_figures(vis, table, ("evolution", "heatmap", "comparative"), busiest,
                            fig_dir / "whisker_point", flow, stem="whisker_point")  # fmt: skip
    figures += first_clip_figures(extractor, flow, "whisker_clip0", fig_dir, busiest)
    with np.load(ground_truth, allow_pickle=False) as gt:
        direction = gt["swing_direction"]
    labels = pd.DataFrame({"frame": np.arange(len(direction)),
                           "label": np.where(direction > 0, "angle rising", "angle falling")})  # fmt: skip
    logger.info("writing the evaluation report into %s", Path(out) / "evaluation")
    paths = write_evaluation_report(table, Path(out) / "evaluation", labels,
                                    title="Whisker-base features vs swing direction")  # fmt: skip
    return DemoReport(figures, fig_dir, busiest, paths, report_metrics(paths))
