"""The extraction pipeline: settings → plan → stages → one row per frame, streamed.

Pure (no Qt). A run is planned once against its source (:mod:`.plan`: what applies, frame range,
region, size, passes, landmarks, every check before any work), then runs as a chain of small
stages with one job each:

1. raw blocks of flow fields or frames (:mod:`.sources`: a video's flow computed block by block
   on a background thread, the flow cache, or a flow file), teed to the flow writers;
2. preprocessing into encoder input on the same thread (:func:`.encoding.make_transform`), handed
   over through a bounded queue (:class:`.streaming.FlowFeed`);
3. the encoder passes, chunked or sliding (:func:`.encoding.run_passes`);
4. post-encoder sampling (:class:`.sampling.RowSampler`) into the row sink (:class:`.outputs.Rows`)
   and, for ``none``, the maps writer (:class:`.outputs.MapsWriter`).

Memory and disk are bounded by one chunk, whatever the video's length. The metadata is the plan's
record plus counts of the rows written and timings.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ExtractionSettings
from ..io._atomic import make_work_dir
from .encoding import Encoder, Hooks, make_transform, run_passes
from .landmarks import landmarks_from_points  # noqa: F401 (public here since the seed)
from .outputs import MapsWriter, Rows
from .plan import RUN_FIELDS, RunPlan, check_asked_options, plan_run, run_settings
from .sampling import RowSampler, reduce_channels  # noqa: F401 (public here too)
from .sources import open_blocks
from .streaming import FlowFeed

Progress = Callable[[int, int], None]
Status = Callable[[str], None]


@dataclass
class FeatureResult:
    """What a run returns: the per-frame table, the feature maps and the run metadata.

    The table has DESIGN.md's columns and its metadata in ``table.attrs``; the feature maps
    (``none`` post-encoder) are a read-only ``[N, T', H', W', C]`` memory map.
    """

    table: pd.DataFrame
    feature_maps: Any = None
    metadata: dict = field(default_factory=dict)
    heatmap: np.ndarray | None = None  #: (T, H', W') activation per frame when asked for


def extract_features(
    source: Any,
    extractor: Any,
    settings: ExtractionSettings | None = None,
    *,
    points: Any = None,
    progress: Progress | None = None,
    flow_progress: Progress | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    status: Status | None = None,
    row_sink: Callable[[pd.DataFrame], None] | None = None,
    **options: Any,
) -> FeatureResult:
    """Per-frame features of a video (flow computed on the way, streamed) or a flow sequence.

    The one entry of every route (the CLI, the napari dock and its worker, the batch tasks):
    ``settings`` (:class:`~napari_flow_features.config.ExtractionSettings`) describes the run;
    ``options`` are a shortcut, applied as ``settings.replace(**options)`` (e.g.
    ``post_encoder="point"``, ``start=100``, ``clip_length=32``). Without ``settings`` the run takes
    the extractor's own configuration and the defaults. The run is planned against ``source``
    first (:func:`~napari_flow_features.extract.plan.plan_run`): every choice is checked before
    any work, a default that does not apply to the source is not applied, and an explicit choice
    that cannot apply is an error naming it.

    Post-encoders: ``none`` (the maps go to ``maps_path`` or a ``.npy`` in the run's work folder,
    with a ``<maps>.json`` sidecar recording their SHA-256; the table maps each frame to its map
    and time position), ``gap``, or ``point`` (rows per frame and landmark; the landmarks come
    from ``points`` or the settings' ``points`` file). ``frames`` restricts the run to what those
    frames need (see :func:`extract_frame`). ``heatmap`` (``mean``, ``l2`` or a channel) also
    returns each frame's activation map ``(T, H', W')``.

    Streaming: frames are read in order and flow is computed in blocks on a background thread that
    feeds the encoder through a bounded queue; nothing proportional to the video's length is kept
    except the result rows (give ``row_sink`` to take them block by block instead) and the small
    heatmap. Windowing ``chunked`` (default) is seamless fully convolutional inference in time,
    ``sliding`` the seed's windows.

    Files (docs/reliability.md): every output is streamed to an owner-tagged temporary and made
    visible with its sidecar when complete; the run works in an owner-tagged folder in the
    temporary folder, removed at the end (kept only for ``none`` maps without ``maps_path``) or,
    after a SIGKILL, by the next run.

    Parameters
    ----------
    source : path or array_like
        A video (flow is computed), a flow file (``.npy``, ``.npz``, ``.flo`` folder) or array.
    extractor : DynamicFeatureExtractor
        The encoder (its stream: ``flow``, ``rgb`` or ``two-stream``, docs/streams.md).
    settings : ExtractionSettings, optional
        The run's settings; their encoder fields must describe ``extractor``.
    points : object, optional
        Landmarks in memory: a Points layer's ``(t, y, x)`` data, a table, or ``Landmarks``.
    progress, flow_progress : callable, optional
        ``(done, total)``: frames whose rows are made; flow fields computed.
    cancel : callable or threading.Event, optional
        Stops the run with :class:`CancelledError`, leaving no files behind.
    status : callable, optional
        Hears phases and a time estimate after the first pass.
    row_sink : callable, optional
        Takes the rows in blocks (the table returned is then empty).
    **options
        Settings to change for this run (option names or encoder run fields).

    Returns
    -------
    FeatureResult
        The table (metadata in ``table.attrs``), the maps (``none``) and the heatmap.
    """
    settings = run_settings(extractor, settings)
    if options:
        settings = settings.replace(**options)
    plan = plan_run(source, extractor, settings, points)
    if options:
        check_asked_options(settings, options, plan.source.kind)
    hooks = Hooks(progress, flow_progress, status, cancel)
    for note in plan.notes:
        hooks.say(note)
    for text in plan.warnings:  # known before the run: said once, before any work
        warnings.warn(text, stacklevel=2)
    # Owner-tagged (pid and start time): a run killed with SIGKILL leaves a folder that the next
    # run removes, and a live run's folder is never removed by another.
    workdir = make_work_dir()
    partials: list[Path] = []  # every temporary a run makes, named before it is created
    done = False
    try:
        result = _run(plan, extractor, workdir, partials, hooks, row_sink)
        done = True
        return result
    except BaseException:
        # However the run ends early (error, cancel, Ctrl-C, SIGTERM at any point): no
        # temporary survives, even one made a moment before the signal.
        for tmp in partials:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        # The folder stays only when it holds the feature maps of the none post-encoder.
        if not done or not any(workdir.iterdir()):
            shutil.rmtree(workdir, ignore_errors=True)


def _run(
    plan: RunPlan, extractor: Any, workdir: Path, partials: list[Path], hooks: Hooks,
    row_sink: Callable[[pd.DataFrame], None] | None,
) -> FeatureResult:  # fmt: skip
    """Wire the stages for ``plan`` and run them; the result with its metadata."""
    cfg = extractor.effective_config
    bound = float(cfg["flow_bound"])
    raw = open_blocks(plan, bound, partials, hooks.say)
    rows = Rows(row_sink, names=getattr(extractor, "column_names", None))
    sampler = RowSampler(plan, rows)
    maps = _maps_writer(plan, workdir, partials)
    encoder = Encoder(extractor, plan.settings.predict)
    lo, hi = plan.entry_range
    fields_total = min(hi, plan.sel.n_frames - 1) - lo
    fields_done = [0]

    def on_fields(count: int) -> None:
        fields_done[0] += count
        if hooks.flow_progress is not None and plan.stream != "rgb":
            hooks.flow_progress(fields_done[0], fields_total)

    hooks.say(
        "computing optical flow and features"
        if plan.stream != "rgb"
        else "reading frames and features"
    )
    hooks.report(0, len(plan.wanted))
    transform = make_transform(extractor, plan.stream, bound)
    try:
        with FlowFeed(raw.blocks, plan.n_entries, transform, raw.tee, hooks.cancelled,
                      on_fields) as feed:  # fmt: skip
            run_passes(plan, feed, encoder, sampler, maps, hooks)
        hooks.say("writing results")
        raw.commit()
        first_step = getattr(plan.schedule, "first_step", None)
        maps_out = maps.commit(maps_first_step=first_step) if maps is not None else None
    except BaseException as exc:
        raw.discard(exc)
        if maps is not None:
            maps.discard(exc)
        raise
    _warn_outside(sampler)
    meta = _metadata(plan, extractor, raw.flow_info, sampler, encoder, hooks)
    if raw.kept is not None:
        meta["kept_flow"] = str(raw.kept.final)
        meta["kept_flow_dtype"] = plan.settings.keep_flow_dtype
    table = rows.table()
    table.attrs = meta
    return FeatureResult(table=table, feature_maps=maps_out, metadata=meta, heatmap=sampler.heat)


def _maps_writer(plan: RunPlan, workdir: Path, partials: list[Path]) -> MapsWriter | None:
    """The ``none`` post-encoder's maps file (None for the others)."""
    if plan.settings.post_encoder != "none":
        return None
    chunked = plan.windowing == "chunked"
    final = Path(plan.settings.maps_path or workdir / "feature_maps.npy")
    about = {
        "content": "I3D feature maps (post-encoder none)",
        "layout": "[1, steps, H', W', C]" if chunked else "[windows, T', H', W', C]",
        "endpoint": plan.endpoint,
        "windowing": plan.windowing,
        "source": plan.source.name,
        "n_frames": plan.sel.n_frames,
        **plan.sel.describe(),
    }
    return MapsWriter(final, about, partials, chunked)


def _warn_outside(sampler: RowSampler) -> None:
    # Positions the border rule dropped were said before the run; any other is a surprise.
    outside = [o for o in sampler.outside if np.isfinite(o[2])]
    (h, w) = sampler.plan.sel.work_hw
    if outside:
        warnings.warn(
            f"{len(outside)} landmark positions lie outside the {w}x{h} frame "
            f"(first: frame {outside[0][0]}, x={outside[0][2]:.1f}, y={outside[0][3]:.1f}); "
            "their rows are NaN",
            stacklevel=4,
        )


def _metadata(
    plan: RunPlan, extractor: Any, flow_info: dict, sampler: RowSampler, encoder: Encoder,
    hooks: Hooks,
) -> dict[str, Any]:  # fmt: skip
    """The plan's record, the model's description, counts of the rows written and timings."""
    import time

    model = {k: v for k, v in extractor.describe().items() if k not in RUN_FIELDS}
    elapsed = time.perf_counter() - hooks.started
    n_rows = len(plan.wanted)
    meta: dict[str, Any] = {
        **model,
        **flow_info,
        "landmarks": [],
        "interpolated_landmark_positions": 0,
        **plan.record(),
        **sampler.counts(),
        "seconds": round(elapsed, 3),
        "encoder_seconds": round(encoder.seconds, 3),
        "frames_per_second": round(n_rows / elapsed, 3) if elapsed else None,
    }
    spans = plan.schedule.spans
    if encoder.predict:
        meta["predictions"] = [
            {"window": w, "start_frame": plan.sel.start + spans[w][0], **p}
            for w, p in enumerate(encoder.predictions)
        ]
        meta["predictions_rule"] = "softmax of the summed logits of the streams (top 5)"
    if plan.windowing == "chunked" and plan.settings.post_encoder == "none":
        meta["maps_first_step"] = getattr(plan.schedule, "first_step", 0)
    if sampler.heat is not None:
        meta.update(_heatmap_cells(plan, sampler.heat))
    return meta


def _heatmap_cells(plan: RunPlan, heat: np.ndarray) -> dict[str, Any]:
    """How big a heatmap cell is, in work pixels and in video pixels (for aligned layers)."""
    (rh, rw), (wh, ww) = plan.sel.region_hw, plan.sel.work_hw
    cell = [wh / heat.shape[1], ww / heat.shape[2]]
    return {
        "heatmap": str(plan.settings.heatmap),
        "heatmap_cell_px": cell,
        "heatmap_cell_video_px": [rh / wh * cell[0], rw / ww * cell[1]],
    }


def extract_frame(
    source: Any,
    extractor: Any,
    frame: int,
    settings: ExtractionSettings | None = None,
    **kwargs: Any,
) -> FeatureResult:
    """Features of one frame, running only the pass that frame takes its row from.

    Parameters
    ----------
    source : path or array_like
        As for :func:`extract_features`.
    extractor : DynamicFeatureExtractor
        The encoder.
    frame : int
        The frame (a video frame number).
    settings : ExtractionSettings, optional
        The run's settings (``frames`` is set to this frame).
    **kwargs
        As for :func:`extract_features` (hooks, points, option shortcuts).

    Returns
    -------
    FeatureResult
        The frame's rows.
    """
    return extract_features(source, extractor, settings, frames=[int(frame)], **kwargs)
