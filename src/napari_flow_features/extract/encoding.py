"""The run's middle stages: preprocessing raw blocks, and the encoder passes over them.

:func:`make_transform` turns a raw block into encoder input (resize, clip, quantise, scale; on the
flow thread). :func:`run_passes` reads the feed in the plan's passes (chunked or sliding), runs
the encoder and hands every wanted frame's time-interpolated map ``(H', W', C)`` to the sink, and
each pass's maps to the maps writer of the ``none`` post-encoder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import CancelledError
from .outputs import MapsWriter
from .plan import ChunkSchedule, RunPlan, WindowSchedule
from .post_encoders import assign_frames, interpolate_time
from .streaming import FlowFeed

Progress = Callable[[int, int], None]


@dataclass
class Hooks:
    """How a run talks to its caller: progress, phases, cancel.

    Attributes
    ----------
    progress : callable or None
        ``progress(done, total)``: frames whose rows are made.
    flow_progress : callable or None
        ``flow_progress(done, total)``: flow fields computed.
    status : callable or None
        ``status(text)``: phases and a time estimate.
    cancel : callable, threading.Event or None
        Polled; true stops the run with :class:`CancelledError`.
    """

    progress: Progress | None = None
    flow_progress: Progress | None = None
    status: Callable[[str], None] | None = None
    cancel: Callable[[], bool] | threading.Event | None = None
    started: float = field(default_factory=time.perf_counter)

    def say(self, text: str) -> None:
        """Tell the caller a phase or an estimate."""
        if self.status is not None:
            self.status(text)

    def cancelled(self) -> bool:
        """Whether the caller asked to stop."""
        if self.cancel is None:
            return False
        if isinstance(self.cancel, threading.Event):
            return self.cancel.is_set()
        return bool(self.cancel())

    def check(self) -> None:
        """Raise :class:`CancelledError` when the caller asked to stop."""
        if self.cancelled():
            raise CancelledError("Feature extraction cancelled")

    def report(self, done: int, total: int, first: bool = False) -> None:
        """Report rows made; after the first pass also a time estimate."""
        if self.progress is not None:
            self.progress(done, total)
        if first and 0 < done < total:
            rate = done / (time.perf_counter() - self.started)
            left = (total - done) / rate
            self.say(f"{rate:.1f} frames/s; about {_duration(left)} left for {total} frames")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class FrameSink(Protocol):
    """Takes each wanted frame's map (the post-encoder sampling stage)."""

    def frame(self, t: int, fmap: np.ndarray, extra: dict, labels: dict | None) -> None:
        """Rows of frame ``t`` (relative to the range) from its map ``(H', W', C)``."""


def make_transform(extractor: Any, stream: str, bound: float) -> Callable[[Any], np.ndarray]:
    """Raw block → encoder input, for the stream.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        Its streams' resize and quantisation.
    stream : str
        ``flow``, ``rgb`` or ``two-stream`` (``(fields, frames)`` blocks, channels concatenated).
    bound : float
        Flow is clipped to ``±bound`` and divided by it.

    Returns
    -------
    callable
        The transform, run on the flow thread.
    """
    from ..flow.frames import rgb_to_i3d
    from ..flow.sequences import preprocess_flow_inplace

    streams = getattr(extractor, "streams", {stream: extractor})

    def flow_input(raw: np.ndarray) -> np.ndarray:
        flow_ext = streams["flow"]
        data = flow_ext._resize(np.array(raw, dtype=np.float32))
        if data is raw:
            data = data.copy()
        return preprocess_flow_inplace(data, bound, flow_ext.quantize)

    def rgb_input(frames: np.ndarray) -> np.ndarray:
        return rgb_to_i3d(streams["rgb"].resize_frames(frames))

    def both_inputs(raw: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        fields, frames = raw
        flow_part = flow_input(fields)
        if len(flow_part) < len(frames):  # the last frame: the last field again (edge padding)
            pad = np.repeat(flow_part[-1:], len(frames) - len(flow_part), axis=0)
            flow_part = np.concatenate([flow_part, pad])
        return np.concatenate([flow_part, rgb_input(frames)], axis=-1)

    transforms: dict[str, Callable[[Any], np.ndarray]] = {
        "flow": flow_input,
        "rgb": rgb_input,
        "two-stream": both_inputs,
    }
    return transforms[stream]


class Encoder:
    """The encoder stage: the fused output of the streams, timed.

    With ``predict``, also each clip's top-5 Kinetics classes from the softmax of the streams'
    summed logits (DeepMind's two-stream rule).
    """

    def __init__(self, extractor: Any, predict: bool) -> None:
        self.extractor, self.predict = extractor, predict
        self.seconds = 0.0
        self.predictions: list[dict] = []
        self._labels: list[str] = []
        if predict:
            from ..model.kinetics import kinetics_labels

            self._labels = kinetics_labels(int(extractor.effective_config["num_classes"]))

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        """Encode clips ``[B, L, H, W, C]``; returns the fused maps (or logits)."""
        tick = time.perf_counter()
        try:
            if not self.predict:
                return self.extractor.encode(clips)
            parts = self.extractor.encode_streams(clips)
            self._predict(np.sum([np.asarray(p, np.float64) for p in parts.values()], axis=0))
            return self.extractor.fuse(parts)
        finally:
            self.seconds += time.perf_counter() - tick

    def _predict(self, logits: np.ndarray) -> None:
        for row in logits:
            prob = np.exp(row - row.max())
            prob /= prob.sum()
            top = np.argsort(-prob)[:5]
            self.predictions.append(
                {"labels": [self._labels[i] for i in top], "probs": [float(prob[i]) for i in top]}
            )

    def labels(self, window: int) -> dict | None:
        """The window's top-5 classes as row fields (``top1_label``, ``top1_prob``, ...)."""
        if not self.predict:
            return None
        pred = self.predictions[window]
        out: dict = {}
        for r, (name, p) in enumerate(zip(pred["labels"], pred["probs"], strict=True), 1):
            out[f"top{r}_label"], out[f"top{r}_prob"] = name, p
        return out


def run_passes(
    plan: RunPlan, feed: FlowFeed, encoder: Encoder, sink: FrameSink, maps: MapsWriter | None,
    hooks: Hooks,
) -> None:  # fmt: skip
    """Run the plan's encoder passes over the feed; every wanted frame's map goes to ``sink``.

    Parameters
    ----------
    plan : RunPlan
        The passes and the wanted frames.
    feed : FlowFeed
        Encoder-ready entries, read in order.
    encoder : Encoder
        The encoder stage.
    sink : FrameSink
        The post-encoder sampling stage.
    maps : MapsWriter or None
        The ``none`` post-encoder's maps file.
    hooks : Hooks
        Progress and cancel.
    """
    feed.drop_before(plan.entry_range[0])
    if isinstance(plan.schedule, ChunkSchedule):
        _chunked(plan, plan.schedule, feed, encoder, sink, maps, hooks)
    else:
        _sliding(plan, plan.schedule, feed, encoder, sink, maps, hooks)


def _chunked(
    plan: RunPlan, sched: ChunkSchedule, feed: FlowFeed, encoder: Encoder, sink: FrameSink,
    maps: MapsWriter | None, hooks: Hooks,
) -> None:  # fmt: skip
    """Fully convolutional passes; a frame's row waits for the two steps it interpolates."""
    ts, wanted, spans = sched.time_stride, plan.wanted, sched.spans
    store: dict[int, np.ndarray] = {}
    p = 0
    for i, (lo, hi) in enumerate(spans):
        hooks.check()
        out = encoder(feed.get(lo, hi)[None])[0]  # (steps, H', W', C)
        keep = sched.passes[i]
        for j in range(keep.keep_lo // ts, keep.keep_hi // ts):
            store[j] = out[j - lo // ts]
            if maps is not None and sched.first_step <= j <= sched.last_step:
                steps = sched.last_step + 1 - sched.first_step
                maps.write(j - sched.first_step, store[j][None], (1, steps, *out.shape[1:]))
        while p < len(wanted) and int(sched.k1[p]) in store:
            before, after = store[int(sched.k0[p])], store[int(sched.k1[p])]
            wgt = float(sched.w1[p])
            fmap = before if wgt == 0 else (1 - wgt) * before + wgt * after
            tau = float(sched.k0[p] + wgt - sched.first_step)
            sink.frame(int(wanted[p]), fmap, {"window": 0, "tau": tau}, None)
            p += 1
        if p < len(wanted):
            for j in [j for j in store if j < int(sched.k0[p])]:
                del store[j]
        feed.drop_before(spans[i + 1][0] if i + 1 < len(spans) else hi)
        hooks.report(p, len(wanted), first=i == 0)


def _sliding(
    plan: RunPlan, sched: WindowSchedule, feed: FlowFeed, encoder: Encoder, sink: FrameSink,
    maps: MapsWriter | None, hooks: Hooks,
) -> None:  # fmt: skip
    """The seed's windows, ``batch_size`` per encoder call; a frame takes its window's row."""
    wanted, spans, batch = plan.wanted, sched.spans, sched.batch_size
    taus = None
    done = 0
    for b in range(0, len(spans), batch):
        hooks.check()
        out = encoder(np.stack([feed.get(lo, hi) for lo, hi in spans[b : b + batch]]))
        if taus is None and out.ndim == 5:
            taus = assign_frames(sched.starts, plan.sel.n_frames, sched.length, out.shape[1])
        for j, k in enumerate(sched.needed[b : b + batch]):
            if maps is not None:
                maps.write(b + j, out[j][None], (len(sched.needed), *out.shape[1:]))
            labels = encoder.labels(b + j)
            for t in wanted[sched.assign.window[wanted] == k]:
                if out.ndim == 2:  # Logits: one vector per window, a 1x1 "map"
                    sink.frame(int(t), out[j][None, None], {"window": b + j}, labels)
                else:
                    assert taus is not None  # set for the first 5-D maps above
                    tau = float(taus.tau[t])
                    fmap = interpolate_time(out[j], tau)
                    sink.frame(int(t), fmap, {"window": b + j, "tau": tau}, labels)
                done += 1
        nxt = b + batch
        feed.drop_before(spans[nxt][0] if nxt < len(spans) else spans[-1][1])
        hooks.report(done, len(wanted), first=b == 0)
