"""The run's plan: one source and one settings object resolved once, checked before any work.

:func:`plan_run` opens the source (no pixels decoded beyond the first frame), decides what applies
to it and checks every choice: a default that does not apply to this source is not applied
(``max_side: auto`` leaves a flow file at its size; ``windowing: chunked`` becomes ``sliding`` for
an end point that pools a whole clip), and an explicit choice that cannot apply is an error naming
it (``roi`` on a flow file, ``clip_length`` under chunked windowing). The plan is what the run's
metadata records (:meth:`RunPlan.record`): every option that shaped the result and none that did
not.

Pure (no Qt, no TensorFlow).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AUTO_MAX_SIDE, CHUNK_MARGIN, ExtractionSettings, ExtractorConfig
from ..errors import BadInputError
from .landmarks import Landmarks, landmarks_from_points, video_name_note
from .post_encoders import FrameAssignment, assign_frames
from .streaming import (
    FrameSelection,
    Span,
    padded_length,
    plan_chunks,
    select_frames,
    step_positions,
)

#: Encoder fields that shape the run (how the encoder is applied), not the model itself: they are
#: taken from the settings, whatever the extractor was built with.
RUN_FIELDS = ("windowing", "chunk_length", "clip_length", "stride", "batch_size")
#: Encoder memory per input pixel of a chunk's frames (float32, flow, Mixed_5c): measured peak RSS
#: growth of one pass at 1x736x192x256x2, TensorFlow 56 B (OpenVINO 29 B), rounded up.
CHUNK_BYTES_PER_PIXEL = 64
#: ``chunk_length: auto`` keeps a pass's encoder memory under this (and under half the memory
#: available when the run starts). 2400 MB gives 800-frame chunks at 256x192: 1.14 passes a frame on
#: long videos, and a peak RSS of about 3.7 GB for a 640x480 video (measured: 3.53 GB at 736, 3.88 at 848).
CHUNK_MEMORY_ENV = "NAPARI_FLOW_FEATURES_CHUNK_MEMORY_MB"
CHUNK_MEMORY_MB = 2400
#: End points that pool a whole clip: no per-step maps, so no chunked windowing.
CLIP_POOLING_ENDPOINTS = ("Logits", "Predictions")


@dataclass(frozen=True, eq=False)
class Source:
    """An opened source: a video (flow is computed) or a flow sequence.

    Attributes
    ----------
    kind : str
        ``video`` or ``flow``.
    data : object
        A lazy video (``(T, H, W[, 3])``) or a flow sequence ``(T-1, H, W, 2)``.
    name : str
        Its path or a description, for messages and metadata.
    n_frames : int
        Video frames (a flow sequence's fields + 1).
    frame_hw : tuple of int
        ``(H, W)`` of a frame (of a field for flow).
    flow_info : dict
        How the flow is made (method) or was made (a flow file's sidecar).
    to_flow : tuple of float or None
        ``(sy, sx)`` from video pixels to the flow's pixels, when a flow file's sidecar says it
        was computed at another size than the video's.
    path : str or None
        The file, when the source is one.
    """

    kind: str
    data: Any
    name: str
    n_frames: int
    frame_hw: tuple[int, int]
    flow_info: dict = field(default_factory=dict)
    to_flow: tuple[float, float] | None = None
    path: str | None = None

    @property
    def frame_offset(self) -> int:
        """The video frame of the source's frame 0 (flow kept from a range starts later)."""
        return int(self.flow_info.get("flow_start_frame", 0))

    @property
    def origin(self) -> tuple[int, int]:
        """``(x, y)`` in video pixels of the source's pixel 0 (flow kept from a region)."""
        roi = self.flow_info.get("flow_roi_xywh")
        return (int(roi[0]), int(roi[1])) if roi else (0, 0)

    @property
    def video_hw(self) -> tuple[int, int]:
        """``(H, W)`` of a frame in video pixels (a flow file's video, from its sidecar)."""
        if self.to_flow is None:
            return self.frame_hw
        return (
            round(self.frame_hw[0] / self.to_flow[0]),
            round(self.frame_hw[1] / self.to_flow[1]),
        )


@dataclass(frozen=True, eq=False)
class ChunkSchedule:
    """Chunked windowing: fully convolutional passes whose kept steps tile the needed ones.

    Attributes
    ----------
    time_stride : int
        Frames per feature-map step.
    passes : tuple of Span
        The encoder passes over the padded frames, in order.
    first_step, last_step : int
        The first and last feature-map step any wanted frame reads.
    k0, k1, w1 : numpy.ndarray
        Per wanted frame: the steps it interpolates between and the weight of ``k1``.
    """

    time_stride: int
    passes: tuple[Span, ...]
    first_step: int
    last_step: int
    k0: np.ndarray
    k1: np.ndarray
    w1: np.ndarray

    @property
    def spans(self) -> list[tuple[int, int]]:
        """Frames ``(lo, hi)`` each pass reads."""
        return [(p.lo, p.hi) for p in self.passes]


@dataclass(frozen=True, eq=False)
class WindowSchedule:
    """Sliding windowing: the seed's windows, of which only those that wanted frames take.

    Attributes
    ----------
    length, stride, batch_size : int
        Window length, frames between window starts, windows per encoder call.
    starts : list of int
        Every window's first frame.
    assign : FrameAssignment
        Which window each frame takes its row from.
    needed : list of int
        The windows that wanted frames take, in order.
    """

    length: int
    stride: int
    batch_size: int
    starts: list[int]
    assign: FrameAssignment
    needed: list[int]

    @property
    def spans(self) -> list[tuple[int, int]]:
        """Frames ``(lo, hi)`` each needed window reads."""
        return [(self.starts[k], self.starts[k] + self.length) for k in self.needed]


@dataclass(frozen=True, eq=False)
class RunPlan:
    """Everything one run decided before any flow is computed.

    Attributes
    ----------
    settings : ExtractionSettings
        The settings the run was asked for.
    source : Source
        The opened source.
    sel : FrameSelection
        Frame range, region and the size flow and encoder see.
    stream : str
        ``flow``, ``rgb`` or ``two-stream``.
    endpoint : str
        The encoder's end point.
    windowing : str
        ``chunked`` or ``sliding`` (resolved for the end point).
    schedule : ChunkSchedule or WindowSchedule
        The encoder passes.
    wanted : numpy.ndarray
        Frames (relative to ``sel.start``) that get rows, in order.
    landmarks : Landmarks or None
        Point post-encoder: positions over the range, frame 0 = ``sel.start``.
    max_side : int or None
        The resize applied (``auto`` resolved).
    notes : tuple of str
        Defaults that did not apply to this source, said once.
    warnings : tuple of str
        What the user should know before the run (landmarks at the border), said once.
    flow_workers : int
        Threads computing flow blocks (:func:`flow_workers_for`).
    """

    settings: ExtractionSettings
    source: Source
    sel: FrameSelection
    stream: str
    endpoint: str
    windowing: str
    schedule: ChunkSchedule | WindowSchedule
    wanted: np.ndarray
    landmarks: Landmarks | None
    max_side: int | None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    flow_workers: int = 1

    @property
    def n_entries(self) -> int:
        """Encoder input entries: flow fields (``T - 1``), or frames for the RGB stream."""
        return self.sel.n_frames - 1 if self.stream == "flow" else self.sel.n_frames

    @property
    def entry_range(self) -> tuple[int, int]:
        """The entries ``lo .. hi - 1`` the passes read (past the last: edge padding)."""
        spans = self.schedule.spans
        lo = min(spans[0][0], self.n_entries - 1)
        return lo, min(max(hi for _, hi in spans), self.n_entries)

    def record(self) -> dict[str, Any]:
        """The options that shaped the result, for the run's metadata.

        Returns
        -------
        dict
            Source, selection, stream, post-encoder, windowing and its parameters (only those of
            the scheme used), landmarks' options; no option that did not apply.
        """
        s, sched = self.settings, self.schedule
        out: dict[str, Any] = {
            "source": self.source.name,
            "source_kind": self.source.kind,
            "source_first_frame": self.source.frame_offset,
            "post_encoder": s.post_encoder,
            "interpolation": s.interpolation if s.post_encoder == "point" else None,
            "n_frames": self.sel.n_frames,
            "frame_shape": list(self.source.video_hw),
            **self.sel.describe(),
            "max_side": self.max_side,
            "stream": self.stream,
            "windowing": self.windowing,
            "n_windows": len(sched.spans),
            "encoder_frames_per_output_frame": sum(hi - lo for lo, hi in sched.spans)
            / max(1, len(self.wanted)),
            # Frames whose flow entry is the edge-padded last field (RGB pads nothing).
            "padded_frames": [] if self.stream == "rgb" else [self.sel.stop - 1],
            "rows_frames": "all" if s.frames is None else [int(f) for f in s.frames],
        }
        if self.source.kind == "video" and self.stream != "rgb":
            out["flow_workers"] = self.flow_workers
        if isinstance(sched, ChunkSchedule):
            out.update(
                chunk_length=max(p.hi - p.lo for p in sched.passes),
                chunk_margin=CHUNK_MARGIN,
                chunks=[list(span) for span in sched.spans],
                windows=[],
            )
        else:
            out.update(
                clip_length=sched.length,
                stride=sched.stride,
                batch_size=sched.batch_size,
                windows=[int(k) for k in sched.needed],
                chunks=[],
            )
        if self.landmarks is not None:
            out.update(self.landmarks.metadata())
            out["interpolate_missing"] = s.interpolate_missing
            if self.landmarks.filled_at is not None:  # counted over the rows written
                filled = self.landmarks.filled_at[:, self.wanted]
                out["interpolated_landmark_positions"] = int(filled.sum())
        if self.notes:
            out["plan_notes"] = list(self.notes)
        return out


# -- the source --------------------------------------------------------------------------------
def open_source(source: Any) -> Source:
    """Open a video or flow source lazily and check its shape.

    Parameters
    ----------
    source : str, os.PathLike or array_like
        A video file, a flow file (``.npy``, ``.npz``, ``.flo`` folder), a frame array (uint8
        ``(T, H, W[, 3])``) or a flow array (float ``(T-1, H, W, 2)``).

    Returns
    -------
    Source
        The opened source.

    Raises
    ------
    BadInputError
        A source of no known kind, a video of fewer than 2 frames, or a flow of the wrong shape.
    """
    from ..io.flow_files import read_flow, validate_flow_array
    from ..io.video import VIDEO_EXTENSIONS, VideoArray

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return replace(_video_source(VideoArray(path), str(path)), path=str(path))
        flow, name = read_flow(path), str(path)
    elif hasattr(source, "shape") and np.dtype(source.dtype).kind == "f":
        flow, name = source, "flow array"
    elif hasattr(source, "shape"):
        if len(source.shape) not in (3, 4):
            raise BadInputError(
                f"A video must be (T, H, W) or (T, H, W, 3); got {tuple(source.shape)}"
            )
        return _video_source(source, str(getattr(source, "path", "video array")))
    else:
        raise BadInputError(f"Cannot extract features from {type(source).__name__}")
    validate_flow_array(flow, name)
    if flow.ndim != 4:
        raise BadInputError(
            f"Need a flow sequence (T-1, H, W, 2); got one field {flow.shape}: {name}"
        )
    frame_hw = (int(flow.shape[1]), int(flow.shape[2]))
    info, video_hw = _flow_file_spec(source)
    to_flow = None
    # Landmarks are in video pixels; flow computed at another size (its sidecar says so) maps
    # them by pixel centres: x_flow = (x + 0.5) * W_flow / W_video - 0.5.
    if video_hw is not None and tuple(video_hw) != frame_hw:
        to_flow = (frame_hw[0] / video_hw[0], frame_hw[1] / video_hw[1])
        info["landmarks_scaled_to_flow"] = list(to_flow)
    path_of = str(source) if isinstance(source, (str, os.PathLike)) else None
    return Source("flow", flow, name, int(flow.shape[0]) + 1, frame_hw, info, to_flow, path_of)


def _video_source(frames: Any, name: str) -> Source:
    n_total = len(frames)
    if n_total < 2:
        raise BadInputError(f"Optical flow needs at least 2 frames; the video has {n_total}")
    first = np.shape(frames[0])
    return Source("video", frames, name, n_total, (int(first[0]), int(first[1])))


def _flow_file_spec(source: Any) -> tuple[dict, list | None]:
    """Flow method and the video's (H, W) from a flow file's sidecar (``<file>.json``)."""
    if not isinstance(source, (str, os.PathLike)):
        return {"flow_method": "given"}, None
    try:
        spec = json.loads(Path(str(source) + ".json").read_text())
    except (OSError, ValueError):
        return {"flow_method": "given"}, None
    if not isinstance(spec, dict):
        return {"flow_method": "given"}, None
    info = {"flow_method": spec.get("flow_method") or "given"}
    if spec.get("flow_preset"):
        info["flow_preset"] = spec["flow_preset"]
    if spec.get("source"):
        info["flow_source_video"] = spec["source"]
    # Flow kept from part of a video (--keep-flow with a range or region) says which part.
    if isinstance(spec.get("start_frame"), int) and spec["start_frame"] > 0:
        info["flow_start_frame"] = spec["start_frame"]
    roi = spec.get("roi_xywh")
    if isinstance(roi, list) and len(roi) == 4 and tuple(roi[:2]) != (0, 0):
        info["flow_roi_xywh"] = roi
    if isinstance(spec.get("video_n_frames"), int):  # kept flow: the whole video's length
        info["flow_video_n_frames"] = spec["video_n_frames"]
    return info, spec.get("video_shape")


# -- the plan ----------------------------------------------------------------------------------
def run_settings(extractor: Any, settings: ExtractionSettings | None) -> ExtractionSettings:
    """The settings a run uses: ``settings``, or the extractor's own configuration's defaults.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        The encoder that runs.
    settings : ExtractionSettings or None
        What was asked for.

    Returns
    -------
    ExtractionSettings
        Settings whose encoder fields describe ``extractor``.

    Raises
    ------
    BadInputError
        The settings describe another model than ``extractor`` (the differing fields are named).
    """
    built: ExtractorConfig | None = getattr(extractor, "config", None)
    if settings is None:
        return ExtractionSettings(extractor=built) if built is not None else ExtractionSettings()
    if built is not None:
        asked = settings.extractor
        differ = [
            f"{name} {getattr(asked, name)!r} (the extractor has {getattr(built, name)!r})"
            for name in ExtractorConfig.field_names()
            if name not in RUN_FIELDS and getattr(asked, name) != getattr(built, name)
        ]
        if differ:
            raise BadInputError(
                "The settings describe another model than the extractor: "
                + "; ".join(differ)
                + ". Build the extractor from the settings: "
                "DynamicFeatureExtractor(config=settings.extractor)"
            )
    return settings


@dataclass(frozen=True, eq=False)
class SourcePlan:
    """The part of a plan that needs no model: the source, its selection and its landmarks.

    Made by :func:`plan_source` before a model is built, so a bad input fails in milliseconds.

    Attributes
    ----------
    source : Source
        The opened source.
    sel : FrameSelection
        Frame range, region and work size.
    max_side : int or None
        The resize applied.
    notes : tuple of str
        Defaults that did not apply.
    wanted : numpy.ndarray
        Frames (relative to ``sel.start``) that get rows.
    landmarks : Landmarks or None
        The landmarks over the whole source (the plan cuts them to the range).
    """

    source: Source
    sel: FrameSelection
    max_side: int | None
    notes: tuple[str, ...]
    wanted: np.ndarray
    landmarks: Landmarks | None


def plan_source(source: Any, settings: ExtractionSettings, points: Any = None) -> SourcePlan:
    """Open the source and check the selection and the landmarks (no model needed).

    Parameters
    ----------
    source : path or array_like
        A video or a flow sequence (see :func:`open_source`).
    settings : ExtractionSettings
        The run's settings.
    points : object, optional
        Landmarks given in memory; else ``settings.points`` (a file) is read.

    Returns
    -------
    SourcePlan
        The checked source.

    Raises
    ------
    BadInputError
        Any choice that cannot apply to this source, named.
    """
    src = source if isinstance(source, Source) else open_source(source)
    sel, max_side, notes = _selection(src, settings)
    wanted = _wanted_frames(settings.frames, sel)
    landmarks = _landmarks(settings, points, src)
    _check_outputs(settings, src)
    return SourcePlan(src, sel, max_side, notes, wanted, landmarks)


def plan_run(
    source: Any, extractor: Any, settings: ExtractionSettings, points: Any = None
) -> RunPlan:
    """Resolve ``settings`` against ``source`` and check every choice, before any work.

    Parameters
    ----------
    source : path, array_like or SourcePlan
        A video or a flow sequence (see :func:`open_source`), or its :func:`plan_source`.
    extractor : DynamicFeatureExtractor
        The encoder (its stream, channels and end point).
    settings : ExtractionSettings
        The run's settings (see :func:`run_settings`).
    points : object, optional
        Landmarks given in memory (a Points layer's data, a table, :class:`Landmarks`); else
        ``settings.points`` (a file) is read.

    Returns
    -------
    RunPlan
        The plan.

    Raises
    ------
    BadInputError
        Any choice that cannot apply to this source, named.
    """
    checked = source if isinstance(source, SourcePlan) else plan_source(source, settings, points)
    src, sel = checked.source, checked.sel
    stream = _check_stream(src, extractor, settings)
    endpoint = str(extractor.effective_config["endpoint"])
    _check_endpoint(extractor, endpoint, sel, settings)
    windowing, more = _windowing(settings.extractor, endpoint)
    if windowing == "chunked":
        length, note = chunk_length_for(extractor, sel, stream, settings.extractor.chunk_length)
        more = (*more, note) if note else more
        schedule: ChunkSchedule | WindowSchedule = _chunk_schedule(
            sel.n_frames, checked.wanted, endpoint, settings, length
        )
    else:
        schedule = _window_schedule(sel.n_frames, checked.wanted, settings.extractor)
    landmarks, border = None, tuple[str, ...]()
    if checked.landmarks is not None:
        landmarks, border = _border(
            checked.landmarks.frames(sel.start, sel.stop), src, sel, endpoint
        )
    return RunPlan(
        settings, src, sel, stream, endpoint, windowing, schedule, checked.wanted, landmarks,
        checked.max_side, (*checked.notes, *more), border,
        flow_workers_for(settings, src, stream, extractor),
    )  # fmt: skip


def _selection(
    src: Source, settings: ExtractionSettings
) -> tuple[FrameSelection, int | None, tuple[str, ...]]:
    """Frame range, region and resize; ``max_side: auto`` resolved for the source's kind."""
    s = settings
    if src.kind == "video":
        max_side = AUTO_MAX_SIDE if s.max_side == "auto" else s.max_side
        assert not isinstance(max_side, str)  # "auto" is the only text the settings allow
        sel = select_frames(src.n_frames, src.frame_hw, s.start, s.stop, s.roi, max_side)
        return sel, max_side, ()
    if s.roi is not None:
        raise BadInputError(
            f"roi {list(s.roi)} applies when flow is computed from a video; {src.name} is a flow "
            "sequence: compute its flow again from the video with that roi, or leave roi out"
        )
    h, w = src.frame_hw
    if s.max_side not in ("auto", None) and s.max_side != max(h, w):
        raise BadInputError(
            f"max_side {s.max_side} applies when flow is computed from a video; {src.name} is "
            f"flow at its own size ({w}x{h}): leave max_side at auto (or null), or compute the "
            "flow again from the video at that size"
        )
    notes = ("max_side auto: a flow file keeps its own size",) if s.max_side == "auto" else ()
    return select_frames(src.n_frames, src.frame_hw, s.start, s.stop), None, notes


def _check_stream(src: Source, extractor: Any, settings: ExtractionSettings) -> str:
    cfg = extractor.effective_config
    stream = cfg.get("stream") or "flow"
    if src.kind == "flow":
        if stream != "flow":
            channels = {"rgb": "3 input channels", "two-stream": "2 + 3 input channels"}[stream]
            raise BadInputError(
                f"The {stream} stream ({channels}) needs the video's frames, but {src.name} is "
                "optical flow (2 channels): give the video, or use a flow model"
            )
        extractor._check_flow(src.data)
    elif cfg["in_channels"] != 2 and stream == "flow":
        raise BadInputError(
            f"The model takes {cfg['in_channels']} input channels but optical flow has 2"
        )
    if settings.keep_flow is not None and stream == "rgb":
        raise BadInputError("keep_flow keeps optical flow; the rgb stream computes none")
    return str(stream)


def _check_endpoint(
    extractor: Any, endpoint: str, sel: FrameSelection, settings: ExtractionSettings
) -> None:
    if endpoint in CLIP_POOLING_ENDPOINTS:
        h, w = extractor.resized_shape(*sel.work_hw)
        if min(math.ceil(h / 32), math.ceil(w / 32)) < 7:
            raise BadInputError(
                f"The {endpoint} end point pools 7x7 Mixed_5c cells: frames must be at least "
                f"193 px on each side (DeepMind used 224x224), these are {w}x{h}; raise max_side"
            )
    if settings.predict:
        if endpoint != "Logits":
            raise BadInputError(f"Kinetics predictions need the Logits end point, not {endpoint}")
        source = extractor.effective_config["weights"]["source"]
        if source not in ("deepmind", "pretrained"):
            raise BadInputError(
                f"Kinetics predictions need DeepMind's weights; these are {source} "
                "(a random network's classes mean nothing)"
            )


def _windowing(config: ExtractorConfig, endpoint: str) -> tuple[str, tuple[str, ...]]:
    """The scheme used; notes for defaults that do not apply and options it does not use."""
    windowing = config.windowing
    notes: list[str] = []
    if windowing == "chunked" and endpoint in CLIP_POOLING_ENDPOINTS:
        # The Logits head pools a whole clip: no per-step maps to chunk.
        windowing = "sliding"
        notes.append(f"windowing sliding: the {endpoint} end point pools whole clips")
    unused = _unused_fields(config, windowing)
    if unused:
        values = ", ".join(f"{n} {getattr(config, n)}" for n in unused)
        notes.append(f"{values}: not used by {windowing} windowing (not recorded)")
    return windowing, tuple(notes)


def _unused_fields(config: ExtractorConfig, windowing: str) -> list[str]:
    """The other scheme's fields that differ from their defaults."""
    defaults = ExtractorConfig()
    other = ("clip_length", "stride", "batch_size") if windowing == "chunked" else ("chunk_length",)
    return [n for n in other if getattr(config, n) != getattr(defaults, n)]


def check_asked_fields(config: ExtractorConfig, asked: Any) -> None:
    """Refuse windowing options asked for this run that the run's scheme does not use.

    A configuration may carry the other scheme's options (they are then not used and not
    recorded); an option asked for explicitly (a command-line flag, a keyword of
    ``extract_features``) that cannot apply is an error naming it.

    Parameters
    ----------
    config : ExtractorConfig
        The run's encoder configuration.
    asked : iterable of str
        The field names given explicitly for this run.

    Raises
    ------
    BadInputError
        An asked field belongs to the scheme this run does not use.
    """
    windowing = config.windowing
    if windowing == "chunked" and config.endpoint in CLIP_POOLING_ENDPOINTS:
        windowing = "sliding"
    bad = [n for n in _unused_fields(config, windowing) if n in set(asked)]
    if bad:
        values = ", ".join(f"{n} {getattr(config, n)}" for n in bad)
        fix = "windowing sliding" if windowing == "chunked" else "windowing chunked"
        raise BadInputError(
            f"{values} shape{'s' if len(bad) == 1 else ''} {_other(windowing)} windowing, but this "
            f"run is {windowing}: ask for {fix} too, or leave {'it' if len(bad) == 1 else 'them'} "
            "out"
        )


#: Options that shape only the point post-encoder's landmarks.
POINT_OPTIONS = ("interpolation", "interpolate_missing", "min_confidence", "max_gap", "keypoints",
                 "individuals", "points_format", "allow_length_mismatch")  # fmt: skip
#: Options that shape only flow computed from a video.
FLOW_OPTIONS = ("flow_method", "flow_cache", "flow_workers")


def check_asked_options(settings: ExtractionSettings, asked: Any, source_kind: str) -> None:
    """Refuse options asked for this run that cannot apply to it, naming them.

    A settings file may carry options a run does not use (they are then not applied); an option
    asked for explicitly (a command-line flag, a keyword of ``extract_features``) that cannot
    apply is an error: the windowing options of the other scheme, landmark options without the
    point post-encoder, ``keep_flow_dtype`` without ``keep_flow``, flow options when no flow is
    computed (a flow file, the RGB stream).

    Parameters
    ----------
    settings : ExtractionSettings
        The run's settings.
    asked : iterable of str
        Option and encoder field names given explicitly for this run.
    source_kind : str
        ``video`` or ``flow``.

    Raises
    ------
    BadInputError
        The first option that cannot apply, named with what would make it apply.
    """
    asked = set(asked)
    check_asked_fields(settings.extractor, asked)
    post = settings.post_encoder
    landmark = sorted(asked & set(POINT_OPTIONS))
    if landmark and post != "point":
        raise BadInputError(
            f"{', '.join(landmark)} shape{'s' if len(landmark) == 1 else ''} the point "
            f"post-encoder's landmarks, but this run is {post}: ask for post_encoder point, or "
            f"leave {'it' if len(landmark) == 1 else 'them'} out"
        )
    if "keep_flow_dtype" in asked and settings.keep_flow is None:
        raise BadInputError("keep_flow_dtype is how kept flow is stored: give keep_flow too")
    stream = settings.extractor.resolved_stream
    flow = sorted(asked & set(FLOW_OPTIONS))
    if flow and (source_kind == "flow" or stream == "rgb"):
        why = "the source is flow already" if source_kind == "flow" else "the rgb stream has none"
        raise BadInputError(
            f"{', '.join(flow)} shape{'s' if len(flow) == 1 else ''} flow computed from a "
            f"video, but {why}: leave {'it' if len(flow) == 1 else 'them'} out"
        )


def _other(windowing: str) -> str:
    return "sliding" if windowing == "chunked" else "chunked"


def _wanted_frames(frames: tuple[int, ...] | None, sel: FrameSelection) -> np.ndarray:
    if frames is None:
        return np.arange(sel.n_frames)
    wanted = np.asarray(frames, int) - sel.start
    if wanted.min() < 0 or wanted.max() >= sel.n_frames:
        bad = [f for f in frames if not sel.start <= f < sel.stop]
        raise BadInputError(
            f"Frame {bad[0]} is out of range: the run covers frames {sel.start}..{sel.stop - 1}"
        )
    return wanted


def chunk_length_for(
    extractor: Any, sel: FrameSelection, stream: str, asked: int | str
) -> tuple[int, str | None]:
    """Frames per chunked pass: the asked number, or for ``auto`` what the memory budget allows.

    Parameters
    ----------
    extractor : DynamicFeatureExtractor
        Its input size (``resized_shape``).
    sel : FrameSelection
        The work size.
    stream : str
        ``two-stream`` runs two encoders over each chunk.
    asked : int or str
        ``chunk_length`` of the settings.

    Returns
    -------
    length : int
        A multiple of 8, at least ``2 * CHUNK_MARGIN + 8``.
    note : str or None
        How ``auto`` was resolved.
    """
    if asked != "auto":
        return int(asked), None
    h, w = extractor.resized_shape(*sel.work_hw)
    per_frame = CHUNK_BYTES_PER_PIXEL * h * w * (2 if stream == "two-stream" else 1)
    budget = chunk_memory_budget()
    length = max(2 * CHUNK_MARGIN + 8, int(budget // per_frame) // 8 * 8)
    return length, f"chunk_length auto: {length} frames ({budget / 2**20:.0f} MB for the encoder)"


def flow_workers_for(settings: ExtractionSettings, src: Source, stream: str, extractor: Any) -> int:
    """Threads computing a video's flow blocks.

    ``flow_workers`` when given (any method; kernels are per thread). Else: 2 for the pooled
    methods (Farneback, scikit-image TV-L1) and 1 for DIS, which keeps pace with a CPU encoder;
    with the encoder on a GPU, the cores less one (at most 8), so flow keeps the GPU fed.

    Parameters
    ----------
    settings : ExtractionSettings
        ``flow_workers`` and ``flow_method``.
    src : Source
        A flow file computes no flow.
    stream : str
        The RGB stream computes no flow.
    extractor : DynamicFeatureExtractor
        Whether its encoder runs on a GPU (its ``runtime_device``).

    Returns
    -------
    int
        At least 1.
    """
    if src.kind != "video" or stream == "rgb":
        return 1
    if settings.flow_workers is not None:
        return settings.flow_workers
    from ..flow.compute import _POOLED

    cores = os.cpu_count() or 1
    if _encoder_on_gpu(extractor):
        return max(1, min(8, cores - 1))
    return min(2, cores) if settings.flow_method in _POOLED else 1


def _encoder_on_gpu(extractor: Any) -> bool:
    # Asked of the configuration, without making an encoder: only the torch runtime runs on a
    # GPU, and it does whenever PyTorch sees one (model/torch_runtime.py). No CUDA probing else.
    from ..model.runtime import resolve_runtime
    from ..model.torch_runtime import cuda_available

    cfg = extractor.effective_config
    if cfg["precision"] == "int8":  # OpenVINO only
        return False
    try:
        runtime = resolve_runtime(cfg["runtime"])
    except BadInputError:  # a runtime not installed: making the encoder says so, by name
        return False
    return runtime == "torch" and cuda_available()


def chunk_memory_budget() -> int:
    """Bytes a chunked pass may use: the setting (MB), at most half the memory available now."""
    budget = int(os.environ.get(CHUNK_MEMORY_ENV, CHUNK_MEMORY_MB)) * 2**20
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
        budget = min(budget, available // 2)
    except (OSError, KeyError, ValueError):  # not Linux: the setting alone
        pass
    return budget


def balanced_chunk_length(span: int, longest: int, margin: int = CHUNK_MARGIN) -> int:
    """The shortest chunk length that covers ``span`` frames in as few passes as ``longest`` does.

    Passes of ``longest`` frames keep ``longest - margin`` at the ends and ``longest - 2 margin``
    between; the last one would read a whole chunk for the few frames left. Equal passes of the
    balanced length read ``span + 2 margin (k - 1)`` frames for ``k`` passes (1.08 passes a frame
    for 1,200 frames against 1.41), in less memory.

    Parameters
    ----------
    span : int
        Frames to cover (a multiple of 8).
    longest : int
        The longest pass allowed (a multiple of 8).
    margin : int, default CHUNK_MARGIN
        Frames recomputed on each side of a cut.

    Returns
    -------
    int
        A multiple of 8 between ``2 margin + 8`` and ``longest``.
    """
    if span <= longest:
        return -(-span // 8) * 8
    passes = -(-(span - 2 * margin) // (longest - 2 * margin))
    length = -(-(span + 2 * margin * (passes - 1)) // passes)
    return min(longest, max(2 * margin + 8, -(-length // 8) * 8))


def _chunk_schedule(
    n: int, wanted: np.ndarray, endpoint: str, settings: ExtractionSettings, length: int
) -> ChunkSchedule:
    from ..model.i3d import ENDPOINT_STRIDES

    ts = ENDPOINT_STRIDES[endpoint][0]
    n_steps = padded_length(n) // ts
    k0, k1, w1 = step_positions(wanted, ts, n_steps)
    need_lo, need_hi = int(k0.min()) * ts, (int(k1.max()) + 1) * ts
    if settings.frames is not None:  # some frames (one, or a task's span): passes around them
        length = min(length, need_hi - need_lo + 2 * CHUNK_MARGIN)
        length = -(-length // 8) * 8
        if settings.extractor.chunk_length == "auto":
            length = balanced_chunk_length(need_hi - need_lo + 2 * CHUNK_MARGIN, length)
    elif settings.extractor.chunk_length == "auto":
        length = balanced_chunk_length(need_hi - need_lo, length)
    passes = plan_chunks(padded_length(n), need_lo, need_hi, length, CHUNK_MARGIN)
    return ChunkSchedule(
        ts, tuple(passes), need_lo // ts, int(k1.max()), k0, k1, w1
    )  # fmt: skip


def _window_schedule(n: int, wanted: np.ndarray, config: ExtractorConfig) -> WindowSchedule:
    from ..flow.sequences import frame_windows

    length, stride = config.clip_length, config.stride
    starts = [w.start for w in frame_windows(n, length, stride)]
    assign = assign_frames(starts, n, length, 1)
    needed = sorted(set(assign.window[wanted].tolist()))
    return WindowSchedule(length, stride, config.batch_size, starts, assign, needed)


def _landmarks(settings: ExtractionSettings, points: Any, src: Source) -> Landmarks | None:
    """The point post-encoder's landmarks for the source; an error where none can apply."""
    given = points if points is not None else settings.points
    if settings.post_encoder != "point":
        if given is not None:
            raise BadInputError(
                "Landmarks (points) are used by the point post-encoder only (--post-encoder "
                f"point); this run is {settings.post_encoder}: ask for the point post-encoder, or "
                "leave the points out"
            )
        return None
    if given is None:
        raise BadInputError(
            "Spatial Point Extraction needs landmarks: give a Points layer, a table or a file"
        )
    # Landmarks are in the whole video's frames and pixels: flow kept from part of it (a range,
    # a region) takes them by the part's place, which its sidecar records.
    video_frames = src.n_frames
    placed = isinstance(given, Landmarks) and given.xy.shape[1] == src.n_frames  # planned before
    recorded = src.flow_info.get("flow_video_n_frames")
    if not placed and recorded is not None:  # kept flow: of the whole video, or a part of it
        video_frames = int(recorded)
    elif not placed and (src.frame_offset or src.origin != (0, 0)):
        raise _unplaced_part(src)  # a part, kept by a version that did not say its video
    landmarks = landmarks_from_points(
        given,
        video_frames,
        settings.interpolate_missing,
        min_confidence=settings.min_confidence,
        max_gap=settings.max_gap,
        keypoints=settings.keypoints,
        individuals=settings.individuals,
        points_format=settings.points_format,
        allow_length_mismatch=settings.allow_length_mismatch,
    )
    if video_frames != src.n_frames:
        landmarks = landmarks.frames(src.frame_offset, src.frame_offset + src.n_frames)
    # Tracks that name another video than this one (SLEAP files do): said, not refused.
    video = src.flow_info.get("flow_source_video") if src.kind == "flow" else src.path
    note = video_name_note(landmarks.options.get("video_file"), video)
    if note:
        warnings.warn(note, stacklevel=4)
        landmarks.notes.append(note)
    return landmarks


def _unplaced_part(src: Source) -> BadInputError:
    """The error for flow kept from part of a video by a version that did not record its video."""
    part = [f"frames from {src.frame_offset}"] if src.frame_offset else []
    if src.origin != (0, 0):
        part.append(f"the region {src.flow_info['flow_roi_xywh']}")
    return BadInputError(
        f"{src.name} is flow kept from part of a video ({' and '.join(part)}) by a version "
        "that did not record the video's length, and landmarks are in the whole video's "
        "frames: keep the flow again, or extract from the video with the same start/stop/roi"
    )


def _border(
    landmarks: Landmarks, src: Source, sel: FrameSelection, endpoint: str
) -> tuple[Landmarks, tuple[str, ...]]:
    """Clamp landmarks within half a feature cell outside the region; farther ones are dropped.

    Positions and the message are in video pixels; the margin is half the end point's cell, in
    video pixels at the run's resize (docs/landmarks.md).
    """
    from ..model.i3d import ENDPOINT_STRIDES
    from .landmarks import border_margin, border_message, classify_border

    x0, y0, rw, rh = sel.roi
    x0, y0 = x0 + src.origin[0], y0 + src.origin[1]  # flow kept from a region starts there
    sy, sx = src.to_flow or (1.0, 1.0)  # flow at another size: the region in video pixels
    region_hw = (round(rh / sy), round(rw / sx))
    scale = max(region_hw[0] / sel.work_hw[0], region_hw[1] / sel.work_hw[1])
    margin = border_margin(scale, ENDPOINT_STRIDES.get(endpoint, (1, 32))[1])
    origin = np.array([x0, y0], float)
    report = classify_border(landmarks.xy - origin, region_hw, margin)
    # Said as the user sees it: video frame numbers and video pixels.
    first = sel.start + src.frame_offset  # the video frame of the run's frame 0
    examples = [(k, t + first, x + x0, y + y0) for k, t, x, y in report.examples]
    report = replace(report, examples=examples)
    message = border_message(report, region_hw, landmarks.ids, margin)
    if message and (x0, y0, rw, rh) != (0, 0, *src.frame_hw[::-1]):
        h, w = region_hw
        message = message.replace(
            f"the {w}x{h} frame", f"the region x={x0}, y={y0}, {w}x{h} of the frame"
        )
    notes = [*landmarks.notes, message] if message else list(landmarks.notes)
    moved = replace(
        landmarks, xy=report.xy + origin, clamped_at=report.clamped, outside_at=report.outside,
        notes=notes,
    )  # fmt: skip
    return moved, (message,) if message else ()


def _check_outputs(settings: ExtractionSettings, src: Source) -> None:
    if settings.keep_flow is not None:
        keep = Path(settings.keep_flow)
        if src.kind == "flow":
            raise BadInputError(
                f"keep_flow writes the flow computed from a video; {src.name} is flow already"
            )
        if settings.frames is not None:
            raise BadInputError("keep_flow needs a run over all frames, not a frame subset")
        if keep.suffix.lower() != ".npy":
            raise BadInputError(f"keep_flow must be a .npy path, got {keep.name}")
        if not keep.parent.is_dir():
            raise BadInputError(f"keep_flow folder does not exist: {keep.parent}")
    if settings.maps_path is not None:
        maps = Path(settings.maps_path)
        if settings.post_encoder != "none":
            raise BadInputError(
                f"maps_path is where the none post-encoder saves its maps; this run is "
                f"{settings.post_encoder}: leave maps_path out"
            )
        if maps.suffix.lower() != ".npy":
            raise BadInputError(f"Feature maps are saved as .npy, got {maps.name}")
