"""The run's first stage: raw blocks of flow fields or frames, from wherever they come.

A video's frames are read in order (cropped to the region and resized), flow is computed block by
block (or read from the flow cache); a flow file is read in blocks. :func:`open_blocks` chooses,
from the plan, and opens the writers that keep the flow (``keep_flow``, the flow cache).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..io._atomic import HASH_KEY, ensure_output_dir, remove_stale_partials
from .outputs import FlowWriter
from .plan import RunPlan
from .streaming import FrameSelection

logger = logging.getLogger(__name__)

#: The flow cache keeps a video's flow only up to this size (one entry at a time).
FLOW_CACHE_MAX_BYTES = int(os.environ.get("NAPARI_FLOW_FEATURES_FLOW_CACHE_MB", "2048")) * 2**20
#: Blocks of this many fields (or frames) travel between the stages.
BLOCK = 8


def cache_entry(cache: Any, source: Any, method: str, sel: FrameSelection) -> Path | None:
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


#: Cache entries whose SHA-256 this process has checked, by (path, size, mtime): a process that
#: reuses an entry often (napari's model process, one frame at a time) hashes it once.
_VERIFIED_CACHE: set[tuple[str, int, int]] = set()


def open_cached_flow(path: Path, shape: tuple[int, ...], say: Callable[[str], None]) -> Any:
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


def _video_flow_blocks(
    data: Any,
    sel: FrameSelection,
    lo: int,
    hi: int,
    method: str,
    workers: int,
    rgb_sink: dict | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Raw flow fields ``lo..hi-1`` of the selection, computed block by block.

    Frames are read in order (cropped to the region and resized first). ``rgb_sink``
    (two-stream) also receives each frame read, as the RGB stream's uint8 ``(H, W, 3)``, keyed
    by its index.
    """
    from ..flow.compute import _to_grey, iter_flow_blocks
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
        for first in range(lo, hi, BLOCK):
            last = min(first + BLOCK, hi)
            block = [prev, *(grey(i) for i in range(first + 1, last + 1))]
            prev = block[-1]
            yield first, np.stack(block)

    return iter_flow_blocks(blocks(), method, "medium", None, workers)


def _video_rgb_blocks(
    data: Any, sel: FrameSelection, lo: int, hi: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames ``lo..hi-1`` of the selection as ``(k, H, W, 3)`` uint8 blocks.

    Cropped and resized like the flow stream's (grey repeated to 3 channels). No optical flow.
    """
    from ..flow.frames import rgb_frame

    x, y, w, h = sel.roi
    for first in range(lo, hi, BLOCK):
        frames = [
            rgb_frame(np.asarray(data[sel.start + i])[y : y + h, x : x + w], sel.work_hw)
            for i in range(first, min(first + BLOCK, hi))
        ]
        yield first, np.stack(frames)


def _two_stream_blocks(
    data: Any, sel: FrameSelection, lo: int, hi: int, method: str, workers: int
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
    for first in range(lo, hi, BLOCK):
        block = np.asarray(flow[offset + first : offset + min(first + BLOCK, hi)], np.float32)
        yield first, block


@dataclass
class Blocks:
    """What the first stage hands on: the raw blocks and the writers that keep the flow.

    Attributes
    ----------
    blocks : iterator
        ``(first entry, raw)`` in order: flow fields, frames, or ``(fields, frames)`` pairs.
    flow_info : dict
        How the flow was made (method, reused from the cache, cached now).
    writers : list of FlowWriter
        The flow cache's entry and ``keep_flow``, fed each raw block (:meth:`tee`).
    kept : FlowWriter or None
        The ``keep_flow`` writer.
    cache : FlowWriter or None
        The flow cache's new entry, until it is complete and published.
    two_stream : bool
        Blocks are ``(fields, frames)`` pairs.
    n_frames : int
        Frames of the run (the last real flow field is ``n_frames - 2``).
    """

    blocks: Iterator[tuple[int, Any]]
    flow_info: dict
    writers: list[FlowWriter] = field(default_factory=list)
    kept: FlowWriter | None = None
    cache: FlowWriter | None = None
    two_stream: bool = False
    n_frames: int = 0

    def tee(self, first: int, raw: Any) -> None:
        """Hand a raw block to the flow writers (two-stream: its real flow fields only).

        The cache entry is published as soon as it holds the whole flow, while the encoder may
        still be working: a run stopped or killed after that lets its rerun skip the flow.
        """
        if self.two_stream:
            raw = raw[0][: max(0, self.n_frames - 1 - first)]
        for writer in self.writers:
            writer(first, raw)
        if self.cache is not None and self.cache.complete:
            self.cache.commit()
            self.writers.remove(self.cache)
            self.cache = None

    def commit(self) -> None:
        """Make the kept flow and the cache entry visible."""
        for writer in self.writers:
            writer.commit()

    def discard(self, exc: BaseException) -> None:
        """Remove the writers' temporaries (the run ended early)."""
        for writer in self.writers:
            writer.discard(exc)


def open_blocks(
    plan: RunPlan, flow_bound: float, partials: list[Path], say: Callable[[str], None]
) -> Blocks:
    """Choose where the run's raw blocks come from and open the flow writers.

    Parameters
    ----------
    plan : RunPlan
        The run.
    flow_bound : float
        The encoder's flow bound (uint8 kept flow is quantised over it).
    partials : list of Path
        Every temporary the writers make is added here before it is created.
    say : callable
        Status messages.

    Returns
    -------
    Blocks
        The blocks and the writers.
    """
    s, sel, src = plan.settings, plan.sel, plan.source
    lo, hi = plan.entry_range
    n_fields = sel.n_frames - 1
    two = plan.stream == "two-stream"
    out = Blocks(iter(()), dict(src.flow_info), two_stream=two, n_frames=sel.n_frames)
    if plan.stream == "rgb":
        out.blocks = _video_rgb_blocks(src.data, sel, lo, hi)
        out.flow_info = {"flow_method": None, "flow_reused": False}
        return out
    if src.kind == "flow":
        out.blocks = _array_flow_blocks(src.data, sel.start, lo, hi)
        return out
    out.flow_info = {"flow_method": s.flow_method, "flow_reused": False}
    path = cache_entry(s.flow_cache, src.data, s.flow_method, sel)
    cached = open_cached_flow(path, (n_fields, *sel.work_hw, 2), say) if path else None
    if cached is not None:
        out.blocks = (
            _cached_two_stream_blocks(cached, src.data, sel, lo, hi)
            if two
            else _array_flow_blocks(cached, 0, lo, hi)
        )
        out.flow_info["flow_reused"] = True
        say("reusing the cached flow of this video")
    else:
        make = _two_stream_blocks if two else _video_flow_blocks
        out.blocks = make(src.data, sel, lo, hi, s.flow_method, plan.flow_workers)
        size = n_fields * sel.work_hw[0] * sel.work_hw[1] * 8
        if path is not None and s.frames is None and size <= FLOW_CACHE_MAX_BYTES:
            out.cache = _new_cache_entry(path, (n_fields, *sel.work_hw, 2), partials)
            out.writers.append(out.cache)
            out.flow_info["flow_cached"] = True
    if s.keep_flow is not None:
        out.kept = _keep_writer(plan, flow_bound, out, partials)
        out.writers.append(out.kept)
    return out


def _new_cache_entry(path: Path, shape: tuple[int, ...], partials: list[Path]) -> FlowWriter:
    # One video's flow at a time: complete entries go; temporaries (hidden, of another live run
    # or removed by the writer once their owner is dead) stay.
    for old in path.parent.iterdir():
        if not old.name.startswith(".") and old.name.endswith((".npy", ".npy.json")):
            old.unlink(missing_ok=True)
    return FlowWriter(path, shape, "float32", 20.0, {}, partials)


def _keep_writer(plan: RunPlan, bound: float, out: Blocks, partials: list[Path]) -> FlowWriter:
    sel = plan.sel
    spec = {
        **out.flow_info,
        "source": plan.source.name,
        "video_shape": list(sel.region_hw),
        "flow_shape": list(sel.work_hw),
        "n_frames": sel.n_frames,
        # Landmarks in the whole video's frames and pixels find their place in this part.
        "video_n_frames": plan.source.n_frames,
        "video_frame_shape": list(plan.source.frame_hw),
        "units": "pixels per frame at flow_shape resolution",
        **sel.describe(),
    }
    assert plan.settings.keep_flow is not None  # checked by the caller
    try:
        return FlowWriter(
            Path(plan.settings.keep_flow), (sel.n_frames - 1, *sel.work_hw, 2),
            plan.settings.keep_flow_dtype, bound, spec, partials,
        )  # fmt: skip
    except BaseException as exc:  # e.g. no space for it: the cache's temporary goes too
        out.discard(exc)
        raise
