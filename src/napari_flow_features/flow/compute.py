"""Dense optical flow from video: Farneback, DIS, Dual TV-L1 (OpenCV contrib or scikit-image).

Output follows DESIGN.md: ``(T-1, H, W, 2)`` float32, ``[..., 0]`` = dx, ``[..., 1]`` = dy, pixels per
frame at the resolution the flow was computed at; ``flow[t]`` moves frame t to frame t+1.

Frames are read and flow is written in chunks, so a long video never holds its flow in memory when an
output file is given. Methods that run on one thread (Farneback, scikit-image's TV-L1) spread frame
pairs over a pool of *threads* (OpenCV and scikit-image release the GIL: two threads give ~1.8x one on
2 cores); DIS is already multi-threaded inside OpenCV and runs on one. Threads, not processes: the
library then works in unguarded scripts, notebooks and napari (a spawn pool re-executes the caller's
script and can outlive a killed parent), and no child process can be orphaned.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, CancelledError
from ..io._atomic import HASH_KEY, atomic_write_with_sidecar, remove_stale_partials
from ..io.npy_stream import NpyWriter, npy_nbytes

METHODS = ("farneback", "dis", "tvl1", "tvl1-skimage")
DIS_PRESETS = ("ultrafast", "fast", "medium")
#: Methods whose implementation uses one core: a thread pool over frame pairs gives ~1.8x on 2 cores.
#: OpenCV's TV-L1 gained nothing from a pool (measured 0.98-1.08x), so it runs on one thread.
_POOLED = {"farneback", "tvl1-skimage"}
FARNEBACK_DEFAULTS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}
TVL1_EXTRA_HINT = (
    "Dual TV-L1 from OpenCV needs the OpenCV contrib modules: "
    "pip install 'napari-flow-features[tvl1]' (if cv2.optflow is still missing, the plain "
    "wheel was written over the contrib one: pip install --force-reinstall --no-deps "
    "opencv-contrib-python-headless; docs/flow.md). "
    "method='tvl1-skimage' (scikit-image's TV-L1, similar speed) works without it."
)

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


@dataclass
class FlowSpec:
    """What a flow computation ran with; saved beside flow files and in layer metadata."""

    method: str
    preset: str | None
    input_shape: tuple[int, int]  #: (H, W) of the video
    flow_shape: tuple[int, int]  #: (H, W) the flow was computed at
    n_frames: int
    params: dict = field(default_factory=dict)
    source: str | None = None

    @property
    def scale_yx(self) -> tuple[float, float]:
        """Video pixels per flow pixel along y and x (1.0 without resizing)."""
        return (
            self.input_shape[0] / self.flow_shape[0],
            self.input_shape[1] / self.flow_shape[1],
        )

    def to_dict(self) -> dict:
        """The spec as the JSON fields a flow file's sidecar records."""
        return {
            "flow_method": self.method,
            "flow_preset": self.preset,
            "video_shape": list(self.input_shape),
            "flow_shape": list(self.flow_shape),
            "flow_scale_yx": list(self.scale_yx),
            "n_frames": self.n_frames,
            "flow_params": self.params,
            "source": self.source,
            "units": "pixels per frame at flow_shape resolution",
        }


def resized_shape(
    shape: tuple[int, int], max_side: int | None = None, scale: float | None = None
) -> tuple[int, int]:
    """The (H, W) frames are resized to before flow.

    Parameters
    ----------
    shape
        The frames' (H, W).
    max_side
        At most this many pixels on the longest side (never enlarged).
    scale
        Or multiply both sides by this (0 < scale <= 4).

    Returns
    -------
    tuple of int
        (H, W); ``shape`` when neither is given.
    """
    h, w = shape
    if max_side is not None and scale is not None:
        raise BadInputError("Give either max_side or scale, not both")
    if max_side is not None:
        if max_side < 8:
            raise BadInputError(f"max_side must be at least 8 pixels, got {max_side}")
        factor = min(1.0, max_side / max(h, w))
    elif scale is not None:
        if not 0 < scale <= 4:
            raise BadInputError(f"scale must be in (0, 4], got {scale}")
        factor = scale
    else:
        return (h, w)
    return (max(1, round(h * factor)), max(1, round(w * factor)))


def _to_grey(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    import cv2

    from .frames import to_uint8

    frame = to_uint8(frame)  # any bit depth, by the rule in flow/frames.py
    if frame.ndim == 3:
        if frame.shape[-1] == 3:
            frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        elif frame.shape[-1] == 1:
            frame = frame[..., 0]
        else:
            raise BadInputError(f"Frames must be grey (H, W) or RGB (H, W, 3); got {frame.shape}")
    elif frame.ndim != 2:
        raise BadInputError(f"Frames must be grey (H, W) or RGB (H, W, 3); got {frame.shape}")
    if size is not None and frame.shape != size:
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(frame)


# -- per-pair kernels (one per thread: OpenCV's DIS and TV-L1 objects are not thread-safe) ---------
_THREAD_KERNELS = threading.local()


def _make_kernel(
    method: str, preset: str, params: dict
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import cv2

    if method == "farneback":
        p = {**FARNEBACK_DEFAULTS, **params}

        def farneback(a, b):
            return cv2.calcOpticalFlowFarneback(
                a, b, None, p["pyr_scale"], int(p["levels"]), int(p["winsize"]),
                int(p["iterations"]), int(p["poly_n"]), p["poly_sigma"], int(p["flags"]),
            )  # fmt: skip

        return farneback
    if method == "dis":
        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        code = presets[preset]

        def dis(a, b):
            # A fresh object per pair: one DIS object's result depends on the pairs it computed
            # before (measured: up to 0.19 px on the same pair's second call), which made a
            # frame's flow depend on the run's history (chunks, threads, a warm worker). Making
            # one costs 0.05 ms against ~10 ms a pair at 256x192.
            return cv2.DISOpticalFlow_create(code).calc(a, b, None)

        return dis
    if method == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise BadInputError(TVL1_EXTRA_HINT)
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**params)  # type: ignore[attr-defined]
        return lambda a, b: tvl1.calc(a, b, None)
    if method == "tvl1-skimage":
        from skimage.registration import optical_flow_tvl1

        def sk_tvl1(a, b):
            # skimage returns (row, col) displacements such that b(p + flow) ≈ a(p): our convention.
            v, u = optical_flow_tvl1(
                a.astype(np.float32) / 255, b.astype(np.float32) / 255, **params
            )
            return np.stack([u, v], axis=-1)

        return sk_tvl1
    raise BadInputError(f"Unknown flow method {method!r}; choose one of {', '.join(METHODS)}")


def _kernel(method: str, preset: str, params: dict):
    """The calling thread's kernel for the method (built once per thread and settings)."""
    cache = getattr(_THREAD_KERNELS, "cache", None)
    if cache is None:
        cache = _THREAD_KERNELS.cache = {}
    key = (method, preset, json.dumps(params, sort_keys=True))
    if key not in cache:
        cache[key] = _make_kernel(method, preset, params)
    return cache[key]


def _flow_chunk(method: str, preset: str, params: dict, frames: np.ndarray) -> np.ndarray:
    """Flow for consecutive pairs of ``frames`` (``len(frames) - 1`` fields)."""
    kernel = _kernel(method, preset, params)
    out = np.empty((len(frames) - 1, *frames.shape[1:3], 2), np.float32)
    for i in range(len(frames) - 1):
        out[i] = kernel(frames[i], frames[i + 1])
    return out


def iter_flow_blocks(
    grey_blocks: Iterator[tuple[int, np.ndarray]],
    method: str,
    preset: str = "medium",
    params: dict | None = None,
    workers: int = 1,
) -> Generator[tuple[int, np.ndarray], None, None]:
    """Flow of each ``(first pair index, grey frames)`` block, in order.

    With ``workers > 1`` blocks run on a thread pool, at most ``2 * workers`` in flight, so
    memory stays bounded whatever the video's length. Closing the generator drops queued blocks.

    Parameters
    ----------
    grey_blocks
        ``(first pair index, grey frames)`` with one frame of overlap between blocks.
    method, preset, params
        The flow method, DIS preset and method parameters.
    workers
        Threads.

    Yields
    ------
    tuple of (int, numpy.ndarray)
        ``(first pair index, fields)``, fields ``(n, H, W, 2)`` float32.
    """
    params = dict(params or {})
    if workers <= 1:
        for start, block in grey_blocks:
            yield start, _flow_chunk(method, preset, params, block)
        return
    pending: deque[tuple[int, Future]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="flow") as pool:
        try:
            for start, block in grey_blocks:
                pending.append((start, pool.submit(_flow_chunk, method, preset, params, block)))
                if len(pending) >= 2 * workers:
                    first, fut = pending.popleft()
                    yield first, fut.result()
            while pending:
                first, fut = pending.popleft()
                yield first, fut.result()
        finally:
            # On cancel or error: drop queued blocks; running ones finish (they write nothing).
            for _, fut in pending:
                fut.cancel()


def shutdown_pool() -> None:
    """Kept for compatibility: flow threads live only as long as a run, nothing to stop."""


# -- sources -------------------------------------------------------------------------------------
def _open_source(video: Any) -> tuple[Any, str | None]:
    """A frame-indexable object and its path (if any) from a path, VideoArray, array or list."""
    from ..io.video import VideoArray

    if isinstance(video, (str, os.PathLike)):
        return VideoArray(video), str(video)
    if isinstance(video, VideoArray):
        return video, str(video.path)
    if isinstance(video, (list, tuple)):
        shapes = {np.shape(f)[:2] for f in video}
        if len(shapes) > 1:
            raise BadInputError(f"Frames have different sizes: {sorted(shapes)}")
        return video, None
    if hasattr(video, "shape") and hasattr(video, "__getitem__"):
        if len(video.shape) not in (3, 4):
            raise BadInputError(
                f"Video must be (T, H, W) or (T, H, W, 3); got an array of shape {tuple(video.shape)}"
            )
        return video, None
    raise BadInputError(f"Cannot read frames from {type(video).__name__}")


class OpticalFlowComputer:
    """Compute dense optical flow for a video.

    Parameters
    ----------
    method
        ``"farneback"``, ``"dis"``, ``"tvl1"`` (OpenCV contrib; install the ``tvl1`` extra) or
        ``"tvl1-skimage"``.
    preset
        DIS preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (default).
    max_side, scale
        Resize frames before flow (DeepMind resized the short side to 256 before TV-L1).
    workers
        Threads over frame pairs. Default: one per core (at most 2) for Farneback and
        ``tvl1-skimage``, which run on one thread; in-process for OpenCV's TV-L1 (a pool measured no
        gain). DIS always runs in-process because OpenCV parallelises it.
    chunk_size
        Frame pairs per task and per write.
    params
        Method parameters (e.g. Farneback ``winsize``), passed to OpenCV/scikit-image.

    Examples
    --------
    >>> flow = OpticalFlowComputer("farneback").compute(video)           # doctest: +SKIP
    >>> OpticalFlowComputer("dis").compute_file("mouse.mp4", "mouse.npy")  # doctest: +SKIP
    """

    def __init__(
        self,
        method: str = "farneback",
        preset: str = "medium",
        max_side: int | None = None,
        scale: float | None = None,
        workers: int | None = None,
        chunk_size: int = 8,
        params: dict | None = None,
    ) -> None:
        if method not in METHODS:
            raise BadInputError(
                f"Unknown flow method {method!r}; choose one of {', '.join(METHODS)}"
            )
        if preset not in DIS_PRESETS:
            raise BadInputError(
                f"Unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}"
            )
        if chunk_size < 1:
            raise BadInputError(f"chunk_size must be at least 1, got {chunk_size}")
        if workers is not None and workers < 1:
            raise BadInputError(f"workers must be at least 1, got {workers}")
        resized_shape((100, 100), max_side, scale)  # validate early
        self.method = method
        self.preset = preset
        self.max_side = max_side
        self.scale = scale
        self.chunk_size = int(chunk_size)
        self.params = dict(params or {})
        if workers is None:
            workers = min(2, os.cpu_count() or 1) if method in _POOLED else 1
        self.workers = 1 if method == "dis" else int(workers)
        if method == "tvl1":
            _kernel(method, preset, self.params)  # fail now, with the install hint

    # -- public API --------------------------------------------------------------------------------
    def spec_for(self, video: Any) -> FlowSpec:
        """The :class:`FlowSpec` a run on ``video`` would produce (opens the video lazily)."""
        frames, path = _open_source(video)
        return self._spec(frames, path)

    def compute(
        self,
        video: Any,
        output: str | os.PathLike | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | threading.Event | None = None,
    ) -> np.ndarray:
        """Flow ``(T-1, H, W, 2)`` for ``video`` (path, :class:`VideoArray`, array or frame list).

        With ``output`` (a ``.npy`` path) the flow streams to disk and a read-only memory map is
        returned; a JSON sidecar ``<output>.json`` records the :class:`FlowSpec`. ``progress(done,
        total)`` is called after each chunk of frame pairs; ``cancel`` (a callable or an Event)
        stops between frame pairs with :class:`CancelledError`, leaving no output file behind.
        """
        run = self.iter_compute(video, output)
        is_cancelled = _cancel_check(cancel)
        try:
            while True:
                done, total = next(run)
                if progress is not None:
                    progress(done, total)
                if is_cancelled():
                    run.close()
                    raise CancelledError("Optical flow cancelled")
        except StopIteration as stop:
            return stop.value

    def iter_compute(
        self, video: Any, output: str | os.PathLike | None = None
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Generator form of :meth:`compute`: yields ``(done, total)``, returns the flow.

        Closing it (e.g. napari's worker ``quit()``) stops the work and removes partial files.
        With ``output`` the flow and its sidecar (recording the flow's SHA-256, computed while
        writing) become visible together when complete.
        """
        frames, path = _open_source(video)
        spec = self._spec(frames, path)
        total = spec.n_frames - 1
        shape = (total, *spec.flow_shape, 2)
        if output is None:
            flow = np.empty(shape, np.float32)
            yield from self._run(frames, spec, flow)
            return flow
        output = Path(output)
        if output.suffix.lower() != ".npy":
            raise BadInputError(f"Flow output must be a .npy file, got {output.name}")
        _check_writable(output.parent)
        # The flow and its sidecar become visible together; the sidecar records the flow's
        # SHA-256 (hashed while writing), so a reader refuses a pair that does not belong together.
        sidecar = output.with_name(output.name + ".json")
        try:
            with (
                atomic_write_with_sidecar(
                    output, sidecar, spec.to_dict(), npy_nbytes(shape, np.float32)
                ) as (tmp, meta),
                NpyWriter(tmp, shape, np.float32, atomic=False, label=output) as writer,
            ):
                yield from self._run(frames, spec, writer)
                meta[HASH_KEY] = writer.sha256
        except PermissionError as exc:
            raise BadInputError(
                f"Cannot write flow to {output} (read-only folder?): {exc}"
            ) from exc
        return np.load(output, mmap_mode="r", allow_pickle=False)

    def compute_file(
        self,
        video_path: str | os.PathLike,
        output_path: str | os.PathLike,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | threading.Event | None = None,
    ) -> Path:
        """Compute flow for one video file and write it to ``output_path`` (``.npy``)."""
        self.compute(video_path, output_path, progress=progress, cancel=cancel)
        return Path(output_path)

    def compute_directory(
        self,
        input_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | threading.Event | None = None,
        on_file: Callable[[Path, str], None] | None = None,
    ) -> list[Path]:
        """Flow for every video in ``input_dir`` as ``output_dir/<stem>.npy``.

        Outputs that exist and are complete (right shape, method and resize) are skipped; partial
        leftovers of an interrupted run are removed and redone. ``on_file(path, status)`` reports
        ``"computed"`` or ``"skipped"`` per video.
        """
        from ..io.video import VIDEO_EXTENSIONS

        input_dir, output_dir = Path(input_dir), Path(output_dir)
        if not input_dir.is_dir():
            raise BadInputError(f"Input folder not found: {input_dir}")
        videos = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            raise BadInputError(f"No videos ({', '.join(VIDEO_EXTENSIONS)}) in {input_dir}")
        output_dir.mkdir(parents=True, exist_ok=True)
        _check_writable(output_dir)
        remove_stale_partials(output_dir)  # of dead runs only, never a live run's
        outputs = []
        for video in videos:
            out = output_dir / f"{video.stem}.npy"
            if self.is_complete(video, out):
                status = "skipped"
            else:
                self.compute(video, out, progress=progress, cancel=cancel)
                status = "computed"
            if on_file is not None:
                on_file(out, status)
            outputs.append(out)
        return outputs

    def is_complete(self, video: str | os.PathLike, output: str | os.PathLike) -> bool:
        """Whether ``output`` already holds this computer's flow for ``video``.

        Parameters
        ----------
        video
            The video the flow would be computed from.
        output
            The ``.npy`` flow file (with its ``.json`` sidecar).

        Returns
        -------
        bool
            True when the flow and its sidecar belong together (the recorded SHA-256 matches)
            and record this method, its settings and the video's frame count and size.
        """
        from ..io.flow_files import read_flow_sidecar

        output = Path(output)
        if not output.is_file():
            return False
        try:
            stored = read_flow_sidecar(output)
            arr = np.load(output, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError):  # a refused pair is a BadInputError (a ValueError)
            return False
        if stored is None:
            return False
        expected = self.spec_for(video).to_dict()
        keys = ("flow_method", "flow_preset", "flow_shape", "n_frames", "flow_params")
        same = all(stored.get(k) == expected[k] for k in keys)
        return same and arr.shape == (expected["n_frames"] - 1, *expected["flow_shape"], 2)

    # -- internals ---------------------------------------------------------------------------------
    def _spec(self, frames: Any, path: str | None) -> FlowSpec:
        n = len(frames)
        if n < 2:
            raise BadInputError(f"Optical flow needs at least 2 frames; the video has {n}")
        first = np.asarray(frames[0])
        if first.ndim not in (2, 3):
            raise BadInputError(f"Frames must be (H, W) or (H, W, 3); got {first.shape}")
        in_shape = (int(first.shape[0]), int(first.shape[1]))
        flow_shape = resized_shape(in_shape, self.max_side, self.scale)
        params = (
            self.params if self.method != "farneback" else {**FARNEBACK_DEFAULTS, **self.params}
        )
        return FlowSpec(
            method=self.method,
            preset=self.preset if self.method == "dis" else None,
            input_shape=in_shape,
            flow_shape=flow_shape,
            n_frames=n,
            params=params,
            source=path,
        )

    def _frame_chunks(self, frames: Any, spec: FlowSpec) -> Iterator[tuple[int, np.ndarray]]:
        """(first pair index, grey frames[start : start + chunk + 1]) with one frame of overlap."""
        size = spec.flow_shape
        prev = None
        start = 0
        total = spec.n_frames - 1
        while start < total:
            stop = min(start + self.chunk_size, total)
            block = [prev] if prev is not None else [_to_grey(frames[start], size)]
            for i in range(start + 1, stop + 1):
                f = _to_grey(frames[i], size)
                if f.shape != block[0].shape:
                    raise BadInputError(
                        f"Frames have different sizes: frame {i} is {np.shape(frames[i])[:2]}, "
                        f"frame 0 is {spec.input_shape}"
                    )
                block.append(f)
            prev = block[-1]
            yield start, np.stack(block)
            start = stop

    def _run(
        self, frames: Any, spec: FlowSpec, out: np.ndarray | NpyWriter
    ) -> Iterator[tuple[int, int]]:
        """Compute into ``out`` (an array, or a :class:`NpyWriter` written in order)."""
        total = spec.n_frames - 1
        done = 0
        yield 0, total
        blocks = iter_flow_blocks(
            self._frame_chunks(frames, spec), self.method, self.preset, self.params, self.workers
        )
        try:
            for start, fields in blocks:
                out[start : start + len(fields)] = fields
                done += len(fields)
                yield done, total
        finally:
            blocks.close()


def _cancel_check(cancel: CancelCheck | threading.Event | None) -> CancelCheck:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _check_writable(folder: Path) -> None:
    if not folder.is_dir():
        raise BadInputError(f"Output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise BadInputError(f"Output folder is not writable (read-only?): {folder}")


def compute_flow(video: Any, method: str = "farneback", **kwargs: Any) -> np.ndarray:
    """Shorthand for ``OpticalFlowComputer(method, **kwargs).compute(video)``."""
    run_keys = {"output", "progress", "cancel"}
    run = {k: kwargs.pop(k) for k in list(kwargs) if k in run_keys}
    return OpticalFlowComputer(method, **kwargs).compute(video, **run)
