"""The extraction pipeline: source → flow → encoder → post-encoder → one row per frame, streamed.

Pure (no Qt). Frames are read in order, flow is computed in blocks on a background thread and fed to
the encoder through a bounded queue (:mod:`.streaming`); rows come out as soon as the feature-map
steps they need are done. Memory and disk are bounded by one chunk, whatever the video's length;
with the ``none`` post-encoder the maps stream into a ``.npy`` renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import pandas as pd

from ..errors import BadInputError, CancelledError
from ..io._atomic import (
    HASH_KEY,
    atomic_write_with_sidecar,
    ensure_output_dir,
    make_work_dir,
    remove_stale_partials,
)
from ..io.npy_stream import NpyWriter, npy_nbytes
from .landmarks import Landmarks, landmarks_from_points
from .post_encoders import (
    INTERPOLATIONS,
    POST_ENCODERS,
    assign_frames,
    gap,
    inside_frame,
    interpolate_time,
    sample_point,
)
from .streaming import (
    FlowFeed,
    FrameSelection,
    padded_length,
    plan_chunks,
    select_frames,
    step_positions,
)

Progress = Callable[[int, int], None]
logger = logging.getLogger(__name__)


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


def _resolve_source(source: Any) -> tuple[str, Any, str]:
    """``("video", frames, name)`` or ``("flow", flow, name)``."""
    from ..io.flow_files import read_flow, validate_flow_array
    from ..io.video import VIDEO_EXTENSIONS, VideoArray

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return "video", VideoArray(path), str(path)
        flow, name = read_flow(path), str(path)
    elif hasattr(source, "shape") and np.dtype(source.dtype).kind == "f":
        flow, name = source, "flow array"
    elif hasattr(source, "shape"):
        if len(source.shape) not in (3, 4):
            raise BadInputError(
                f"A video must be (T, H, W) or (T, H, W, 3); got {tuple(source.shape)}"
            )
        return "video", source, str(getattr(source, "path", "video array"))
    else:
        raise BadInputError(f"Cannot extract features from {type(source).__name__}")
    validate_flow_array(flow, name)
    if flow.ndim != 4:
        raise BadInputError(
            f"Need a flow sequence (T-1, H, W, 2); got one field {flow.shape}: {name}"
        )
    return "flow", flow, name


def _flow_file_spec(source: Any) -> tuple[dict, list | None]:
    """Flow method and the video's (H, W) from a flow file's sidecar (``<file>.json``).

    ``({"flow_method": "given"}, None)`` without one.
    """
    if not isinstance(source, (str, os.PathLike)):
        return {"flow_method": "given"}, None
    sidecar = Path(str(source) + ".json")
    try:
        spec = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {"flow_method": "given"}, None
    info = {"flow_method": spec.get("flow_method", "given")}
    if spec.get("flow_preset"):
        info["flow_preset"] = spec["flow_preset"]
    if spec.get("source"):
        info["flow_source_video"] = spec["source"]
    return info, spec.get("video_shape")


def _check_cancel(cancel: Any) -> None:
    if cancel is None:
        return
    stop = cancel.is_set() if isinstance(cancel, threading.Event) else cancel()
    if stop:
        raise CancelledError("Feature extraction cancelled")


#: The flow cache keeps a video's flow only up to this size (one entry at a time).
FLOW_CACHE_MAX_BYTES = int(os.environ.get("NAPARI_FLOW_FEATURES_FLOW_CACHE_MB", "2048")) * 2**20
KEEP_FLOW_DTYPES = ("float32", "float16", "uint8")
Status = Callable[[str], None]


@dataclass
class _Run:
    """Everything one run decided before any flow is computed."""

    kind: str
    data: Any
    name: str
    sel: FrameSelection
    flow_info: dict
    to_flow: tuple[float, float] | None
    landmarks: Landmarks | None


def _cache_entry(cache: Any, source: Any, method: str, sel: FrameSelection) -> Path | None:
    """Where the flow of video ``source`` by ``method`` over selection ``sel`` is kept.

    The key is a file's path, size and modification time (or an in-memory video's content hash),
    the method and the selection, so it changes when any of them does.
    """
    if cache is None:
        return None
    import hashlib

    source = getattr(source, "path", source)  # a VideoArray is its file
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    else:
        frames = np.ascontiguousarray(source)
        key = f"array|{frames.shape}|{hashlib.sha1(frames.data).hexdigest()}"
    key += f"|{method}|{sel.describe()}"
    folder = ensure_output_dir(cache)
    remove_stale_partials(folder)  # a killed run's temporaries, also when this run only reads
    return folder / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


def _video_flow_blocks(
    data: Any,
    sel: FrameSelection,
    lo: int,
    hi: int,
    method: str,
    workers: int | None,
    rgb_sink: dict | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Raw flow fields ``lo..hi-1`` of the selection, computed block by block.

    Frames are read in order (cropped to the region and resized first). ``rgb_sink``
    (two-stream) also receives each frame read, as the RGB stream's uint8 ``(H, W, 3)``, keyed
    by its index.
    """
    from ..flow.compute import _POOLED, _to_grey, iter_flow_blocks
    from ..flow.frames import rgb_frame

    x, y, w, h = sel.roi
    size = sel.work_hw

    def grey(i: int) -> np.ndarray:
        frame = np.asarray(data[sel.start + i])[y : y + h, x : x + w]
        if rgb_sink is not None:
            rgb_sink[i] = rgb_frame(frame, size)
        return _to_grey(frame, size)

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        prev = grey(lo)
        for first in range(lo, hi, 8):
            last = min(first + 8, hi)
            block = [prev, *(grey(i) for i in range(first + 1, last + 1))]
            prev = block[-1]
            yield first, np.stack(block)

    if workers is None:
        workers = min(2, os.cpu_count() or 1) if method in _POOLED else 1
    return iter_flow_blocks(blocks(), method, "medium", None, 1 if method == "dis" else workers)


def _video_rgb_blocks(
    data: Any, sel: FrameSelection, lo: int, hi: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames ``lo..hi-1`` of the selection as ``(k, H, W, 3)`` uint8 blocks.

    Cropped and resized like the flow stream's (grey repeated to 3 channels). No optical flow.
    """
    from ..flow.frames import rgb_frame

    x, y, w, h = sel.roi
    for first in range(lo, hi, 8):
        frames = [
            rgb_frame(np.asarray(data[sel.start + i])[y : y + h, x : x + w], sel.work_hw)
            for i in range(first, min(first + 8, hi))
        ]
        yield first, np.stack(frames)


def _two_stream_blocks(
    data: Any, sel: FrameSelection, lo: int, hi: int, method: str, workers: int | None
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Entries ``lo..hi-1`` of both streams from one read of the frames.

    Yields ``(first, (fields, frames))`` where entry ``i`` is flow field ``i`` (frame i → i+1)
    and frame ``i``. The last frame has no field of its own: its block carries one frame more
    than fields (the transform pads the flow by its last field, the frame-aligned rule).
    """
    n = sel.n_frames
    flow_lo, flow_hi = min(lo, n - 2), min(hi, n - 1)
    stash: dict[int, np.ndarray] = {}
    for first, fields in _video_flow_blocks(
        data, sel, flow_lo, flow_hi, method, workers, rgb_sink=stash
    ):
        last = first + len(fields)
        stop = last + 1 if (last == flow_hi and hi == n) else last
        frames = np.stack([stash.pop(i) if i != last else stash[i] for i in range(first, stop)])
        yield first, (fields, frames)


def _cached_two_stream_blocks(
    cached: Any, data: Any, sel: FrameSelection, lo: int, hi: int
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Like :func:`_two_stream_blocks` with the flow read from the flow cache."""
    n_fields = cached.shape[0]
    for first, frames in _video_rgb_blocks(data, sel, lo, hi):
        # The last frame's block may start past the last field: it takes that field (padding).
        fields = np.asarray(
            cached[min(first, n_fields - 1) : min(first + len(frames), n_fields)], np.float32
        )
        yield first, (fields, frames)


def _array_flow_blocks(
    flow: Any, offset: int, lo: int, hi: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Fields ``lo..hi-1`` of a stored flow sequence (starting at field ``offset``), 8 at a time."""
    for first in range(lo, hi, 8):
        block = np.asarray(flow[offset + first : offset + min(first + 8, hi)], np.float32)
        yield first, block


class _NpyWithSidecar:
    """A ``.npy`` streamed in order beside its JSON sidecar ``<final>.json``.

    Both are written to owner-tagged temporaries (the data with buffered writes, its blocks
    reserved up front, its SHA-256 computed while writing); :meth:`commit` makes them visible
    together with the hash recorded in the sidecar, :meth:`discard` removes both temporaries and
    leaves the final paths as they were (docs/reliability.md).
    """

    def __init__(
        self,
        final: Path,
        shape: tuple[int, ...],
        dtype: Any,
        metadata: dict[str, Any],
        partials: list[Path],
        header_shape: tuple[int, ...] | None = None,
    ) -> None:
        from ..io.tables import jsonable_metadata

        self.final = final
        self._stack = contextlib.ExitStack()
        nbytes = npy_nbytes(header_shape or shape, dtype)
        try:
            tmp, self.meta = self._stack.enter_context(
                atomic_write_with_sidecar(
                    final,
                    final.with_name(final.name + ".json"),
                    jsonable_metadata(metadata),
                    nbytes,
                )
            )
            partials.append(tmp)
            self.writer = self._stack.enter_context(
                NpyWriter(tmp, shape, dtype, False, header_shape=header_shape, label=final)
            )
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def write(self, first: int, rows: np.ndarray) -> None:
        """Write ``rows`` starting at row ``first`` (the next unwritten one)."""
        self.writer[first : first + len(rows)] = rows

    def commit(self, **extra: Any) -> Path:
        """Make the data and its sidecar visible together; returns the final path.

        Checks every row was written and records the data's hash (and ``extra`` fields) in the
        sidecar first.
        """
        self.meta.update(extra)
        self.meta[HASH_KEY] = self.writer.sha256
        self._stack.close()
        return self.final

    def discard(self, exc: BaseException | None = None) -> None:
        """Remove both temporaries (after ``exc``, or a cancel); the final paths are untouched."""
        exc = exc or CancelledError("discarded")
        tb: TracebackType | None = exc.__traceback__
        with contextlib.suppress(Exception):  # already ending with an error: keep that one
            self._stack.__exit__(type(exc), exc, tb)


class _FlowWriter(_NpyWithSidecar):
    """Raw flow written in order, made visible with its hashed sidecar when complete.

    Stored as ``float32``, ``float16``, or ``uint8`` quantised as DeepMind did
    (``[-bound, bound]`` → 0..255).
    """

    def __init__(
        self,
        final: Path,
        shape: tuple[int, ...],
        dtype: str,
        bound: float,
        spec: dict[str, Any],
        partials: list[Path],
    ) -> None:
        if dtype not in KEEP_FLOW_DTYPES:
            raise BadInputError(f"keep-flow dtype must be one of {', '.join(KEEP_FLOW_DTYPES)}")
        self.dtype, self.bound = dtype, float(bound)
        meta = {**spec, "flow_encoding": dtype}
        if dtype == "uint8":
            meta["flow_quantisation_bound"] = self.bound
        super().__init__(final, shape, dtype, meta, partials)

    def __call__(self, first: int, raw: np.ndarray) -> None:
        """Write raw flow fields ``first, first + 1, …`` (encoded to the file's dtype)."""
        if self.dtype == "uint8":
            q = (np.clip(raw, -self.bound, self.bound) + self.bound) * (255.0 / (2 * self.bound))
            raw = np.round(q).astype(np.uint8)
        self.write(first, raw)


#: Cache entries whose SHA-256 this process has checked, by (path, size, mtime): a process that
#: reuses an entry often (napari's model process, one frame at a time) hashes it once.
_VERIFIED_CACHE: set[tuple[str, int, int]] = set()


def _open_cached_flow(path: Path, shape: tuple[int, ...], say: Callable[[str], None]) -> Any:
    """The flow cache's entry at ``path`` as a read-only memory map, or None.

    None when there is none or it is refused (no hashed sidecar, a SHA-256 or shape that does
    not match): a refused entry is removed and the flow computed again.
    """
    from ..io.flow_files import read_flow_sidecar

    if not path.is_file():
        return None
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        meta = read_flow_sidecar(path, verify=key not in _VERIFIED_CACHE)
        if meta is None or HASH_KEY not in meta:
            raise BadInputError(f"no sidecar recording its SHA-256: {path}")
        cached = np.load(path, mmap_mode="r", allow_pickle=False)
        if cached.shape != shape or cached.dtype != np.float32:
            raise BadInputError(f"{cached.dtype} {cached.shape}, expected float32 {shape}")
        _VERIFIED_CACHE.add(key)
    except (ValueError, OSError) as exc:  # BadInputError and its kinds are ValueErrors
        logger.warning("Flow cache entry refused, computing the flow again: %s", exc)
        say("the cached flow does not match its checksum: computing it again")
        for stale in (path, path.with_name(path.name + ".json")):
            stale.unlink(missing_ok=True)
        return None
    return cached


def _prepare(
    source: Any,
    post_encoder: str,
    points: Any,
    interpolation: str,
    interpolate_missing: bool,
    start: int | None,
    stop: int | None,
    roi: Any,
    max_side: int | None,
    flow_method: str,
) -> _Run:
    """Check every input and open the source (no pixels decoded beyond the first frame)."""
    from ..flow.compute import METHODS

    if post_encoder not in POST_ENCODERS:
        raise BadInputError(
            f"post_encoder must be one of {', '.join(POST_ENCODERS)}, not {post_encoder!r}"
        )
    if interpolation not in INTERPOLATIONS:
        raise BadInputError(f"interpolation must be bilinear or nearest, not {interpolation!r}")
    if post_encoder == "point" and points is None:
        raise BadInputError(
            "Spatial Point Extraction needs landmarks: give a Points layer or table"
        )
    if flow_method not in METHODS:
        raise BadInputError(
            f"Unknown flow method {flow_method!r}; choose one of {', '.join(METHODS)}"
        )
    kind, data, name = _resolve_source(source)
    to_flow = None
    if kind == "video":
        n_total = len(data)
        if n_total < 2:
            raise BadInputError(f"Optical flow needs at least 2 frames; the video has {n_total}")
        first_shape = np.shape(data[0])
        frame_hw = (int(first_shape[0]), int(first_shape[1]))
        sel = select_frames(n_total, frame_hw, start, stop, roi, max_side)
        flow_info = {"flow_method": flow_method, "flow_reused": False}
    else:
        if roi is not None or max_side is not None:
            raise BadInputError(
                "roi and max_side apply when flow is computed from a video; this source is a flow "
                f"sequence ({name}): compute it again from the video with them"
            )
        n_total = data.shape[0] + 1
        frame_hw = (int(data.shape[1]), int(data.shape[2]))
        sel = select_frames(n_total, frame_hw, start, stop)
        flow_info, video_hw = _flow_file_spec(source)
        # Landmarks are in video pixels; flow computed at another size (its sidecar says so) maps
        # them by pixel centres: x_flow = (x + 0.5) * W_flow / W_video - 0.5.
        if video_hw is not None and tuple(video_hw) != frame_hw:
            to_flow = (frame_hw[0] / video_hw[0], frame_hw[1] / video_hw[1])
            flow_info["landmarks_scaled_to_flow"] = list(to_flow)
    landmarks = None
    if post_encoder == "point":
        landmarks = landmarks_from_points(points, n_total, interpolate_missing)
        landmarks = landmarks.frames(sel.start, sel.stop)
    return _Run(kind, data, name, sel, flow_info, to_flow, landmarks)


def extract_features(
    source: Any,
    extractor: Any,
    post_encoder: str = "gap",
    points: Any = None,
    interpolation: str = "bilinear",
    clip_length: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    flow_method: str = "dis",
    interpolate_missing: bool = False,
    maps_path: str | os.PathLike | None = None,
    frames: list[int] | None = None,
    heatmap: str | int | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    flow_cache: str | os.PathLike | None = None,
    start: int | None = None,
    stop: int | None = None,
    roi: Any = None,
    max_side: int | None = None,
    keep_flow: str | os.PathLike | None = None,
    keep_flow_dtype: str = "float16",
    windowing: str | None = None,
    flow_workers: int | None = None,
    status: Status | None = None,
    flow_progress: Progress | None = None,
    row_sink: Callable[[pd.DataFrame], None] | None = None,
    predict: bool = False,
) -> FeatureResult:
    """Per-frame features of a video (flow computed on the way, streamed) or a flow sequence.

    ``post_encoder``: ``"none"`` (maps to ``maps_path`` or a ``.npy`` in the run's work folder,
    with a ``<maps>.json`` sidecar recording their SHA-256; the table maps each frame to its map
    and time position), ``"gap"`` or ``"point"`` (needs ``points``; rows per frame
    and landmark). ``frames`` restricts the run to what those frames need (see
    :func:`extract_frame`: one short chunk, and only its flow). ``heatmap`` (``"mean"``, ``"l2"`` or
    a channel) also returns each frame's activation map ``(T, H', W')`` reduced over channels.

    Streaming: frames are read in order and flow is computed in blocks on a background thread that
    feeds the encoder through a bounded queue; nothing proportional to the video's length is kept
    except the result rows (give ``row_sink`` to take them block by block instead) and the small
    heatmap. ``windowing`` (default: the extractor's, ``chunked``) is seamless fully convolutional
    inference in time, or the seed's ``sliding`` windows.

    Choosing less work: ``start``/``stop`` (a frame range), ``roi = (x, y, w, h)`` in video pixels,
    ``max_side`` (resize before flow and encoder). ``keep_flow``: also write the flow to this
    ``.npy`` (``keep_flow_dtype`` float16, uint8 quantised, or float32; a JSON sidecar records it
    and its SHA-256). ``flow_cache``: a folder that keeps one video's flow (up to
    ``FLOW_CACHE_MAX_BYTES``) so the next run on the same video and selection skips the flow
    (``flow_reused`` in the metadata); an entry that does not match its recorded SHA-256 is
    computed again.

    Files (docs/reliability.md): every output is streamed to an owner-tagged temporary and made
    visible with its sidecar when complete; the run works in an owner-tagged folder in the
    temporary folder (:func:`~napari_flow_features.io._atomic.make_work_dir`), removed at the end
    (kept only for ``none`` maps without ``maps_path``) or, after a SIGKILL, by the next run.

    ``progress(done, total)`` counts frames encoded, ``flow_progress`` flow fields computed;
    ``status(text)`` hears phases and a time estimate after the first chunk; ``cancel`` (a callable
    or an Event) stops the run with :class:`CancelledError`, leaving no files behind.

    Streams (the extractor's ``stream``, docs/streams.md): ``flow``; ``rgb`` (frames only, no optical
    flow); ``two-stream`` (flow computed once, both encoders over the same chunks or windows, fused
    by the config's ``fusion``). Row ``t`` of every stream belongs to video frame ``t``. ``predict``
    (a ``Logits`` end point with DeepMind weights) adds each window's top-5 Kinetics classes,
    ``top1_label``, ``top1_prob`` … ``top5_prob``: the softmax of the streams' summed logits.
    """
    run = _prepare(
        source, post_encoder, points, interpolation, interpolate_missing,
        start, stop, roi, max_side, flow_method,
    )  # fmt: skip
    cfg = extractor.effective_config  # stream, channels, end point of the model that runs
    stream = cfg.get("stream") or "flow"
    if run.kind == "flow":
        if stream != "flow":
            channels = {"rgb": "3 input channels", "two-stream": "2 + 3 input channels"}[stream]
            raise BadInputError(
                f"The {stream} stream ({channels}) needs the video's frames, but {run.name} is "
                "optical flow (2 channels): give the video, or use a flow model"
            )
        extractor._check_flow(run.data)
    elif cfg["in_channels"] != 2 and stream == "flow":
        raise BadInputError(
            f"The model takes {cfg['in_channels']} input channels but optical flow has 2"
        )
    if keep_flow is not None and stream == "rgb":
        raise BadInputError("keep_flow keeps optical flow; the rgb stream computes none")
    if cfg["endpoint"] in ("Logits", "Predictions"):
        import math

        h, w = extractor.resized_shape(*run.sel.work_hw)
        if min(math.ceil(h / 32), math.ceil(w / 32)) < 7:
            raise BadInputError(
                f"The {cfg['endpoint']} end point pools 7x7 Mixed_5c cells: frames must be at least "
                f"193 px on each side (DeepMind used 224x224), these are {w}x{h}; raise max_side"
            )
    if predict:
        if cfg["endpoint"] != "Logits":
            raise BadInputError(
                f"Kinetics predictions need the Logits end point, not {cfg['endpoint']}"
            )
        if cfg["weights"]["source"] not in ("deepmind", "pretrained"):
            raise BadInputError(
                f"Kinetics predictions need DeepMind's weights; these are {cfg['weights']['source']} "
                "(a random network's classes mean nothing)"
            )
    settings = {
        "clip_length": clip_length if clip_length is not None else cfg["clip_length"],
        "stride": stride if stride is not None else cfg["stride"],
        "batch_size": batch_size if batch_size is not None else cfg["batch_size"],
    }
    for key, value in settings.items():
        if isinstance(value, bool) or int(value) != value or int(value) < 1:
            raise BadInputError(f"{key} must be a whole number ≥ 1, got {value!r}")
        settings[key] = int(value)
    windowing = windowing or cfg.get("windowing", "sliding")
    if windowing not in ("chunked", "sliding"):
        raise BadInputError(f"windowing must be chunked or sliding, not {windowing!r}")
    from ..model.i3d import ENDPOINT_STRIDES

    if windowing == "chunked" and cfg["endpoint"] not in ENDPOINT_STRIDES:
        windowing = "sliding"  # Logits/Predictions pool over a whole clip: no per-step maps
    if keep_flow is not None:
        if frames is not None:
            raise BadInputError("keep_flow needs a run over all frames, not a frame subset")
        keep_flow = Path(keep_flow)
        if keep_flow.suffix.lower() != ".npy":
            raise BadInputError(f"keep_flow must be a .npy path, got {keep_flow.name}")
        if not keep_flow.parent.is_dir():
            raise BadInputError(f"keep_flow folder does not exist: {keep_flow.parent}")
        if keep_flow_dtype not in KEEP_FLOW_DTYPES:
            raise BadInputError(
                f"keep_flow_dtype must be one of {', '.join(KEEP_FLOW_DTYPES)}, not {keep_flow_dtype!r}"
            )
    # Owner-tagged (pid and start time): a run killed with SIGKILL leaves a folder that the next
    # run removes, and a live run's folder is never removed by another.
    workdir = make_work_dir()
    partials: list[Path] = []  # every temporary a run makes, named before it is created
    done = False
    try:
        result = _stream(
            run, extractor, workdir, post_encoder, interpolation, settings, windowing, maps_path,
            frames, heatmap, progress, cancel, flow_cache, keep_flow, keep_flow_dtype,
            flow_method, flow_workers, status, flow_progress, row_sink, partials, predict,
        )  # fmt: skip
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


class _Rows:
    """Result rows, kept or handed to a sink in blocks of ``block`` rows."""

    def __init__(
        self,
        sink: Callable[[pd.DataFrame], None] | None,
        block: int = 2048,
        names: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.sink, self.block = sink, block
        self.names = names or (lambda count: [f"f{c:04d}" for c in range(count)])
        self.rows: list[dict] = []
        self.feats: list[np.ndarray] = []
        self.parts: list[pd.DataFrame] = []
        self.count = 0
        self.nan_rows = 0

    def add(self, row: dict, feat: np.ndarray | None = None) -> None:
        self.rows.append(row)
        if feat is not None:
            self.feats.append(feat)
            self.nan_rows += bool(np.isnan(feat[0]))
        if len(self.rows) >= self.block:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        part = pd.DataFrame(self.rows)
        if self.feats:
            mat = np.stack(self.feats).astype(np.float32)
            cols = pd.DataFrame(mat, columns=self.names(mat.shape[1]))
            part = pd.concat([part, cols], axis=1)
        self.count += len(part)
        self.rows, self.feats = [], []
        if self.sink is not None:
            self.sink(part)
        else:
            self.parts.append(part)

    def table(self) -> pd.DataFrame:
        self.flush()
        if not self.parts:
            return pd.DataFrame({"frame": pd.Series([], dtype=int)})
        return pd.concat(self.parts, ignore_index=True)


def _stream(
    run: _Run,
    extractor: Any,
    workdir: Path,
    post_encoder: str,
    interpolation: str,
    settings: dict,
    windowing: str,
    maps_path: Any,
    frames: list[int] | None,
    heatmap: Any,
    progress: Progress | None,
    cancel: Any,
    flow_cache: Any,
    keep_flow: Path | None,
    keep_flow_dtype: str,
    flow_method: str,
    flow_workers: int | None,
    status: Status | None,
    flow_progress: Progress | None,
    row_sink: Any,
    partials: list[Path],
    predict: bool = False,
) -> FeatureResult:
    from ..flow.frames import rgb_to_i3d
    from ..flow.sequences import frame_windows, preprocess_flow_inplace
    from ..model.extractor import CHUNK_MARGIN
    from ..model.i3d import ENDPOINT_STRIDES

    cfg = extractor.effective_config  # stream, channels, end point of the model that runs
    stream = cfg.get("stream") or "flow"
    streams = getattr(extractor, "streams", {stream: extractor})
    sel, n = run.sel, run.sel.n_frames
    is_cancelled = _cancel_fn(cancel)
    say = status or (lambda text: None)
    wanted = np.arange(n) if frames is None else np.asarray(sorted(set(frames)), int) - sel.start
    if wanted.size == 0 or wanted.min() < 0 or wanted.max() >= n:
        raise BadInputError(
            f"Frame out of range: the run covers frames {sel.start}..{sel.stop - 1}"
        )

    # What the encoder runs on: chunks (seamless) or the seed's sliding windows.
    if windowing == "chunked":
        ts = ENDPOINT_STRIDES[cfg["endpoint"]][0]
        n_pad = padded_length(n)
        n_steps = n_pad // ts
        k0, k1, w1 = step_positions(wanted, ts, n_steps)
        need_lo, need_hi = int(k0.min()) * ts, (int(k1.max()) + 1) * ts
        length = int(cfg["chunk_length"])
        if frames is not None:  # a few frames: one short pass around them
            length = min(length, need_hi - need_lo + 2 * CHUNK_MARGIN)
            length = -(-length // 8) * 8
        passes = plan_chunks(n_pad, need_lo, need_hi, length, CHUNK_MARGIN)
        spans = [(p.lo, p.hi) for p in passes]
        first_step = need_lo // ts
    else:
        length, step = settings["clip_length"], settings["stride"]
        windows = frame_windows(n, length, step)
        starts = [w.start for w in windows]
        assign = assign_frames(starts, n, length, 1)
        needed = sorted(set(assign.window[wanted].tolist()))
        spans = [(windows[k].start, windows[k].start + length) for k in needed]
    # Encoder input entry i belongs to video frame i: flow field i (frame i → i+1, the last frame
    # takes the last field: edge padding) or frame i itself (RGB, which needs no padding).
    n_entries = n - 1 if stream == "flow" else n
    field_lo = min(spans[0][0], n_entries - 1)
    field_hi = min(max(hi for _, hi in spans), n_entries)

    # Where the raw flow comes from: a stored sequence, the flow cache, or computed now.
    flow_info = dict(run.flow_info)
    cache_path: Path | None = None
    cache_writer: _FlowWriter | None = None
    keep_writer: _FlowWriter | None = None
    n_fields = n - 1
    blocks: Iterator[tuple[int, Any]]
    if stream == "rgb":
        blocks = _video_rgb_blocks(run.data, sel, field_lo, field_hi)
        flow_info = {"flow_method": None, "flow_reused": False}
    elif run.kind == "video":
        cache_path = _cache_entry(flow_cache, run.data, flow_method, sel)
        cached = None
        if cache_path is not None:
            cached = _open_cached_flow(cache_path, (n_fields, *sel.work_hw, 2), say)
        if cached is not None:
            if stream == "two-stream":
                blocks = _cached_two_stream_blocks(cached, run.data, sel, field_lo, field_hi)
            else:
                blocks = _array_flow_blocks(cached, 0, field_lo, field_hi)
            flow_info["flow_reused"] = True
            say("reusing the cached flow of this video")
        else:
            if stream == "two-stream":
                blocks = _two_stream_blocks(
                    run.data, sel, field_lo, field_hi, flow_method, flow_workers
                )
            else:
                blocks = _video_flow_blocks(
                    run.data, sel, field_lo, field_hi, flow_method, flow_workers
                )
            size = n_fields * sel.work_hw[0] * sel.work_hw[1] * 8
            if cache_path is not None and frames is None and size <= FLOW_CACHE_MAX_BYTES:
                # One video's flow at a time: complete entries go; temporaries (hidden, of
                # another live run or removed by the writer once their owner is dead) stay.
                for old in cache_path.parent.iterdir():
                    if not old.name.startswith(".") and old.name.endswith((".npy", ".npy.json")):
                        old.unlink(missing_ok=True)
                cache_writer = _FlowWriter(
                    cache_path, (n_fields, *sel.work_hw, 2), "float32", 20.0, {}, partials
                )
    else:
        blocks = _array_flow_blocks(run.data, sel.start, field_lo, field_hi)
    spec = {
        **flow_info,
        "source": run.name,
        "video_shape": list(sel.region_hw),
        "flow_shape": list(sel.work_hw),
        "n_frames": n,
        "units": "pixels per frame at flow_shape resolution",
        **sel.describe(),
    }
    if keep_flow is not None:
        try:
            keep_writer = _FlowWriter(
                keep_flow, (n_fields, *sel.work_hw, 2), keep_flow_dtype,
                float(cfg["flow_bound"]), spec, partials,
            )  # fmt: skip
        except BaseException as exc:  # e.g. no space for it: the cache's temporary goes too
            if cache_writer is not None:
                cache_writer.discard(exc)
            raise
    tees = [w for w in (cache_writer, keep_writer) if w is not None]
    bound = float(cfg["flow_bound"])

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
    transform = transforms[stream]

    def tee(first: int, raw: Any) -> None:
        if stream == "two-stream":
            raw = raw[0][: max(0, n - 1 - first)]  # the real flow fields only
        for writer in tees:
            writer(first, raw)

    fields_done = [0]
    flow_total = min(field_hi, n - 1) - field_lo

    def on_fields(count: int) -> None:
        fields_done[0] += count
        if flow_progress is not None and stream != "rgb":
            flow_progress(fields_done[0], flow_total)

    frame_hw = sel.work_hw
    rows = _Rows(row_sink, names=getattr(extractor, "column_names", None))
    landmarks = run.landmarks
    outside: list[tuple] = []
    heat = None
    maps_writer: _NpyWithSidecar | None = None
    maps_final = Path(maps_path) if maps_path is not None else workdir / "feature_maps.npy"
    timing = {"encoder_seconds": 0.0}
    total_out = len(wanted)
    emitted = 0
    t_start = time.perf_counter()

    def emit(
        t: int, fmap: np.ndarray, extra: dict | None = None, labels: dict | None = None
    ) -> None:
        """Rows of frame ``t`` (relative) from its time-interpolated map ``(H', W', C)``.

        ``labels``: the frame's window's Kinetics predictions, on every row of the frame.
        """
        nonlocal heat
        frame = int(t) + sel.start
        if labels:
            extra = {**(extra or {}), **labels} if post_encoder == "none" else extra
        if heatmap is not None:
            if heat is None:
                heat = np.full((n, *fmap.shape[:2]), np.nan, np.float32)
            heat[t] = reduce_channels(fmap, heatmap)
        if post_encoder == "none":
            rows.add({"frame": frame, **(extra or {})})
        elif post_encoder == "gap":
            rows.add({"frame": frame, **(labels or {})}, gap(fmap))
        else:
            assert landmarks is not None  # a point run has them (checked in _prepare)
            for k in range(len(landmarks.ids)):
                fields = landmarks.row_fields(k, t)
                x, y = float(landmarks.xy[k, t, 0]), float(landmarks.xy[k, t, 1])
                vx, vy = x, y
                if run.to_flow is not None:
                    vx, vy = (x + 0.5) * run.to_flow[1] - 0.5, (y + 0.5) * run.to_flow[0] - 0.5
                wx, wy = sel.to_work(np.asarray(vx), np.asarray(vy))
                fx, fy = float(wx), float(wy)
                if np.isfinite(fx) and not inside_frame(fx, fy, frame_hw):
                    outside.append((frame, landmarks.ids[k], x, y))
                rows.add(
                    {"frame": frame, **fields, **(labels or {})},
                    sample_point(fmap, fx, fy, frame_hw, interpolation),
                )

    def open_maps(shape: tuple[int, ...]) -> _NpyWithSidecar:
        if maps_final.suffix.lower() != ".npy":
            raise BadInputError(f"Feature maps are saved as .npy, got {maps_final.name}")
        rows_shape = shape[1:] if windowing == "chunked" else shape  # (1, S, ...): rows are steps
        layout = "[1, steps, H', W', C]" if windowing == "chunked" else "[windows, T', H', W', C]"
        about = {
            "content": "I3D feature maps (post-encoder none)",
            "layout": layout,
            "shape": list(shape),
            "endpoint": cfg["endpoint"],
            "windowing": windowing,
            "source": run.name,
            "n_frames": n,
            **sel.describe(),
        }
        return _NpyWithSidecar(
            maps_final, rows_shape, np.float32, about, partials, header_shape=shape
        )

    def report(done: int) -> None:
        if progress is not None:
            progress(done, total_out)

    def estimate(done: int) -> None:
        elapsed = time.perf_counter() - t_start
        if done and done < total_out:
            rate = done / elapsed
            left = (total_out - done) / rate
            say(f"{rate:.1f} frames/s; about {_duration(left)} left for {total_out} frames")

    predictions: list[dict] = []
    labels_of = None
    if predict:
        from ..model.kinetics import kinetics_labels

        labels_of = kinetics_labels(int(cfg["num_classes"]))

    def encode(clips: np.ndarray) -> np.ndarray:
        """The fused encoder output.

        With ``predict``, also each clip's top-5 Kinetics classes from the softmax of the
        streams' summed logits (DeepMind's two-stream rule).
        """
        if not predict:
            return extractor.encode(clips)
        parts = extractor.encode_streams(clips)
        logits = np.sum([np.asarray(p, np.float64) for p in parts.values()], axis=0)
        assert labels_of is not None  # set whenever predict is
        for row in logits:
            prob = np.exp(row - row.max())
            prob /= prob.sum()
            top = np.argsort(-prob)[:5]
            predictions.append(
                {
                    "labels": [labels_of[i] for i in top],
                    "probs": [float(prob[i]) for i in top],
                }
            )
        return extractor.fuse(parts)

    def label_fields(window: int) -> dict | None:
        if not predict:
            return None
        pred = predictions[window]
        out: dict = {}
        for r, (name, p) in enumerate(zip(pred["labels"], pred["probs"], strict=True), 1):
            out[f"top{r}_label"], out[f"top{r}_prob"] = name, p
        return out

    say("computing optical flow and features" if stream != "rgb" else "reading frames and features")
    report(0)
    try:
        # Two-stream blocks carry (fields, frames) pairs; FlowFeed hands them to the transform
        # and the tee untouched, so they pass as its arrays.
        feed_blocks = cast(Iterator[tuple[int, np.ndarray]], blocks)
        with FlowFeed(feed_blocks, n_entries, transform, tee, is_cancelled, on_fields) as feed:
            feed.drop_before(field_lo)
            if windowing == "chunked":
                store: dict[int, np.ndarray] = {}
                p = 0
                for i, (lo, hi) in enumerate(spans):
                    if is_cancelled():
                        raise CancelledError("Feature extraction cancelled")
                    clip = feed.get(lo, hi)[None]
                    tick = time.perf_counter()
                    maps = encode(clip)[0]  # (steps, H', W', C)
                    timing["encoder_seconds"] += time.perf_counter() - tick
                    keep = passes[i]
                    for j in range(keep.keep_lo // ts, keep.keep_hi // ts):
                        store[j] = maps[j - lo // ts]
                        if post_encoder == "none" and first_step <= j <= int(k1.max()):
                            if maps_writer is None:
                                steps = int(k1.max()) + 1 - first_step
                                maps_writer = open_maps((1, steps, *maps.shape[1:]))
                            row = j - first_step
                            maps_writer.write(row, maps[j - lo // ts][None])
                    while p < len(wanted) and int(k1[p]) in store:
                        before, after = store[int(k0[p])], store[int(k1[p])]
                        wgt = float(w1[p])
                        fmap = before if wgt == 0 else (1 - wgt) * before + wgt * after
                        tau = float(k0[p] + wgt - first_step)
                        emit(int(wanted[p]), fmap, {"window": 0, "tau": tau})
                        p += 1
                    if p < len(wanted):
                        for j in [j for j in store if j < int(k0[p])]:
                            del store[j]
                    next_lo = spans[i + 1][0] if i + 1 < len(spans) else hi
                    feed.drop_before(next_lo)
                    emitted = p
                    report(emitted)
                    if i == 0:
                        estimate(emitted)
                n_passes = len(spans)
            else:
                batch = settings["batch_size"]
                taus = None
                for b in range(0, len(spans), batch):
                    if is_cancelled():
                        raise CancelledError("Feature extraction cancelled")
                    group = needed[b : b + batch]
                    clips = np.stack([feed.get(lo, hi) for lo, hi in spans[b : b + batch]])
                    tick = time.perf_counter()
                    maps = encode(clips)
                    timing["encoder_seconds"] += time.perf_counter() - tick
                    if taus is None and maps.ndim == 5:
                        taus = assign_frames(starts, n, length, maps.shape[1])
                    if post_encoder == "none" and maps_writer is None:
                        maps_writer = open_maps((len(needed), *maps.shape[1:]))
                    for j, k in enumerate(group):
                        if maps_writer is not None:
                            maps_writer.write(b + j, maps[j][None])
                        for t in wanted[assign.window[wanted] == k]:
                            labels = label_fields(b + j)
                            if maps.ndim == 2:  # Logits: one vector per window, a 1x1 "map"
                                emit(int(t), maps[j][None, None], {"window": b + j}, labels)
                            else:
                                assert taus is not None  # set for the first 5-D maps above
                                tau = float(taus.tau[t])
                                emit(
                                    int(t),
                                    interpolate_time(maps[j], tau),
                                    {"window": b + j, "tau": tau},
                                    labels,
                                )
                            emitted += 1
                    nxt = b + batch
                    feed.drop_before(spans[nxt][0] if nxt < len(spans) else spans[-1][1])
                    report(emitted)
                    if b == 0:
                        estimate(emitted)
                n_passes = len(spans)
        say("writing results")
        for writer in tees:
            writer.commit()
        maps_out = None
        if maps_writer is not None:
            extra = {"maps_first_step": first_step} if windowing == "chunked" else {}
            maps_writer.commit(**extra)
            maps_writer = None
            maps_out = np.load(maps_final, mmap_mode="r", allow_pickle=False)
    except BaseException as exc:
        for writer in tees:
            writer.discard(exc)
        if maps_writer is not None:
            maps_writer.discard(exc)
        raise
    if cache_writer is not None:
        flow_info["flow_cached"] = True
    table = rows.table()
    if outside:
        warnings.warn(
            f"{len(outside)} landmark positions lie outside the {frame_hw[1]}x{frame_hw[0]} frame "
            f"(first: frame {outside[0][0]}, x={outside[0][2]:.1f}, y={outside[0][3]:.1f}); "
            "their rows are NaN",
            stacklevel=3,
        )
    elapsed = time.perf_counter() - t_start
    encoded = sum(hi - lo for lo, hi in spans)
    meta = {
        **extractor.describe(),
        **flow_info,
        "post_encoder": post_encoder,
        "interpolation": interpolation if post_encoder == "point" else None,
        "source": run.name,
        "n_frames": n,
        "frame_shape": list(frame_hw),
        **sel.describe(),
        "windowing": windowing,
        "clip_length": settings["clip_length"],
        "stride": settings["stride"],
        "batch_size": settings["batch_size"],
        "n_windows": n_passes,
        "windows": [] if windowing == "chunked" else [int(k) for k in needed],
        "chunks": [list(s) for s in spans] if windowing == "chunked" else [],
        "chunk_margin": CHUNK_MARGIN if windowing == "chunked" else None,
        "encoder_frames_per_output_frame": encoded / max(1, len(wanted)),
        "stream": stream,
        # Frames whose flow entry is the edge-padded last field (the RGB stream pads nothing).
        "padded_frames": [] if stream == "rgb" else [sel.stop - 1],
        "missing_landmark_rows": rows.nan_rows - len(outside) if post_encoder == "point" else 0,
        "outside_frame_rows": len(outside),
        "interpolated_landmark_positions": landmarks.filled if landmarks else 0,
        "landmarks": [str(i) for i in landmarks.ids] if landmarks else [],
        **(landmarks.metadata() if landmarks else {}),
        "seconds": round(elapsed, 3),
        "encoder_seconds": round(timing["encoder_seconds"], 3),
        "frames_per_second": round(len(wanted) / elapsed, 3) if elapsed else None,
    }
    if predict:
        meta["predictions"] = [
            {"window": w, "start_frame": sel.start + spans[w][0], **p}
            for w, p in enumerate(predictions)
        ]
        meta["predictions_rule"] = "softmax of the summed logits of the streams (top 5)"
    if keep_writer is not None:
        meta["kept_flow"] = str(keep_writer.final)
        meta["kept_flow_dtype"] = keep_flow_dtype
    if windowing == "chunked" and post_encoder == "none":
        meta["maps_first_step"] = first_step
    if heat is not None:
        meta["heatmap"] = str(heatmap)
        meta["heatmap_cell_px"] = [frame_hw[0] / heat.shape[1], frame_hw[1] / heat.shape[2]]
        # In video pixels (frames resized with max_side, cropped to the roi): for aligned layers.
        (rh, rw), (wh, ww) = sel.region_hw, frame_hw
        meta["heatmap_cell_video_px"] = [
            rh / wh * meta["heatmap_cell_px"][0],
            rw / ww * meta["heatmap_cell_px"][1],
        ]
    table.attrs = meta
    return FeatureResult(table=table, feature_maps=maps_out, metadata=meta, heatmap=heat)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cancel_fn(cancel: Any) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def reduce_channels(fmap: np.ndarray, how: str | int) -> np.ndarray:
    """``(H', W', C)`` → ``(H', W')``: the channel mean, the L2 norm over channels, or one channel."""
    if how == "mean":
        return fmap.mean(axis=-1)
    if how == "l2":
        return np.sqrt((fmap.astype(np.float64) ** 2).sum(axis=-1)).astype(np.float32)
    try:
        channel = int(how)
    except (TypeError, ValueError):
        raise BadInputError(
            f"heatmap must be 'mean', 'l2' or a channel number, not {how!r}"
        ) from None
    if not 0 <= channel < fmap.shape[-1]:
        raise BadInputError(
            f"Channel {channel} does not exist: the map has {fmap.shape[-1]} channels"
        )
    return fmap[..., channel]


def extract_frame(source: Any, extractor: Any, frame: int, **kwargs: Any) -> FeatureResult:
    """Features of one frame, running only the window that frame takes its row from."""
    return extract_features(source, extractor, frames=[int(frame)], **kwargs)
