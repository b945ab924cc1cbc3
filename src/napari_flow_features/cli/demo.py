"""``flow-features demo``: the main job on the built-in sample (steps in :mod:`..demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import console


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-commands.

    Returns
    -------
    argparse.ArgumentParser
        The sub-command's parser.
    """
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run the main job on the built-in sample"
    )
    p.add_argument("--output", "-o", default="demo-output", help="folder to write to")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo's steps, printing what each wrote.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    int
        The exit status (0).
    """
    from .. import demo

    out = Path(args.output)
    console.result(f"Writing the synthetic whisker sample to {out.resolve()} ...")
    sample = demo.write_sample(out)
    for role, path in sample.items():
        console.result(f"{role:>13}: {path}")

    bar = console.bar("optical flow (DIS)")
    try:
        flow = demo.compute_demo_flow(sample, out, progress=bar)
    finally:
        bar.close()
    console.result(f"         flow: {flow.path} {tuple(flow.flow.shape)}")
    console.result(
        f"               endpoint error vs ground truth: {flow.error_moving:.2f} px on the "
        f"whisker, {flow.error_still:.2f} px on the still background"
    )
    # The main job: I3D features of the whisker motion, pooled and at the whisker base.
    console.result("Loading TensorFlow ...")
    extractor, note = demo.demo_extractor()
    if note:
        console.warning(note, stdout=True)
    bars: list[Any] = []

    def progress_for(post: str) -> Any:
        bars.append(console.bar(f"I3D features ({post})", "frame"))
        return bars[-1]

    try:
        features = demo.extract_demo_features(flow.path, sample, extractor, out, progress_for)
    finally:
        for bar in bars:
            bar.close()
    for written in features.written:
        console.result(f"     features: {written}")
    if features.random_weights:
        console.warning(
            "               (RANDOM I3D weights, marked in every table, figure and report; end "
            "point Mixed_4f: 832 channels per frame)",
            stdout=True,
        )
    else:
        console.result(
            "               (DeepMind's flow_imagenet weights, end point Mixed_4f: 832 channels)"
        )
    report = demo.demo_figures_and_report(features.point_table, extractor, flow.flow,
                                          sample["ground_truth"], out)  # fmt: skip
    console.result(f"      figures: {len(report.figures)} in {report.figure_dir} "
                   f"(features {report.features}: the most varying)")  # fmt: skip
    metrics = report.metrics
    console.result(f"   evaluation: {report.report['html']} (linear probe accuracy "
                   f"{metrics['probe_accuracy']:.2f} vs chance {metrics['chance_accuracy']:.2f}; "
                   f"temporal smoothness {metrics['temporal_smoothness']:.2f})")  # fmt: skip
    files = " ".join([sample["video"], sample["landmarks"], str(flow.path)])
    console.result(f"Open it in napari: napari {files}")
    return 0
