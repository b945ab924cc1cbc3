"""Streaming pieces of the pipeline: frame selection, the flow feed and the chunk plan.

Frame selection is the range, region and resize that run; the flow feed overlaps optical flow with
the encoder through a bounded queue; the chunk plan splits seamless (fully convolutional in time)
inference into passes.

Nothing here holds anything proportional to the video's length: frames are read in order, flow is
computed in blocks on a background thread (its own thread pool for single-threaded methods), and the
consumer keeps only the flow of the chunk it is encoding. Pure: no Qt, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadInputError, CancelledError

#: Flow blocks waiting between the flow thread and the encoder (each ``block`` fields).
QUEUE_BLOCKS = 4


# -- frame selection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSelection:
    """Which part of a video runs: a frame range, a region, and the size flow and encoder see.

    Attributes
    ----------
    start, stop : int
        Frames ``start .. stop - 1`` run.
    roi : tuple of int
        ``(x, y, w, h)`` in video pixels (the whole frame by default).
    work_hw : tuple of int
        ``(H, W)`` the region is resized to before flow and encoder.
    """

    start: int
    stop: int
    roi: tuple[int, int, int, int]  #: (x, y, w, h) in video pixels (the whole frame by default)
    work_hw: tuple[int, int]  #: (H, W) that flow and encoder see

    @property
    def n_frames(self) -> int:
        """Frames in the range."""
        return self.stop - self.start

    @property
    def region_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the region in video pixels."""
        return (self.roi[3], self.roi[2])

    def to_work(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map video pixel coordinates to work-frame pixels (pixel centres, align-corners=False).

        Parameters
        ----------
        x, y : numpy.ndarray
            Positions in video pixels.

        Returns
        -------
        tuple of numpy.ndarray
            ``(x, y)`` in the resized region's pixels.
        """
        (h, w), (wh, ww) = self.region_hw, self.work_hw
        return (x - self.roi[0] + 0.5) * ww / w - 0.5, (y - self.roi[1] + 0.5) * wh / h - 0.5

    def describe(self) -> dict:
        """Describe the selection for a feature table's metadata.

        Returns
        -------
        dict
            ``start_frame``, ``stop_frame``, ``roi_xywh`` and ``work_shape``.
        """
        return {
            "start_frame": self.start,
            "stop_frame": self.stop,
            "roi_xywh": list(self.roi),
            "work_shape": list(self.work_hw),
        }


def select_frames(
    n_frames: int,
    frame_hw: tuple[int, int],
    start: int | None = None,
    stop: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
    max_side: int | None = None,
) -> FrameSelection:
    """Validate a frame range, region and resize against a video.

    Parameters
    ----------
    n_frames : int
        The video's frame count.
    frame_hw : tuple of int
        The video's ``(H, W)``.
    start, stop : int, optional
        Frames ``start .. stop - 1`` (default: all).
    roi : sequence of 4 numbers, optional
        ``(x, y, w, h)`` in video pixels, inside the frame, at least 8 px each way (default: the
        whole frame).
    max_side : int, optional
        Resize the region so its longest side is at most this (``None`` or 0: keep its size).

    Returns
    -------
    FrameSelection
        The checked selection.

    Raises
    ------
    BadInputError
        The range is empty or outside the video, has fewer than 2 frames, or ``roi`` is not four
        numbers inside the frame.
    """
    from ..flow.compute import resized_shape

    first = 0 if start is None else int(start)
    last = n_frames if stop is None else int(stop)
    if not 0 <= first < n_frames:
        raise BadInputError(f"start frame {first} is outside the video's frames 0..{n_frames - 1}")
    if not first < last <= n_frames:
        raise BadInputError(
            f"stop frame {last} must be after start {first} and at most {n_frames} (the video's "
            "frame count)"
        )
    if last - first < 2:
        raise BadInputError(f"Optical flow needs at least 2 frames; frames {first}..{last - 1}")
    h, w = frame_hw
    box: tuple[int, int, int, int]
    if roi is None:
        box = (0, 0, w, h)
    else:
        try:
            values = tuple(round(float(v)) for v in roi)
        except (TypeError, ValueError):
            raise BadInputError(f"roi must be four numbers x, y, w, h; got {roi!r}") from None
        if len(values) != 4:
            raise BadInputError(f"roi must be four numbers x, y, w, h; got {roi!r}")
        x, y, bw, bh = values
        box = (x, y, bw, bh)
        if bw < 8 or bh < 8:
            raise BadInputError(f"roi {box} is too small: width and height must be at least 8 px")
        if x < 0 or y < 0 or x + bw > w or y + bh > h:
            raise BadInputError(f"roi x={x}, y={y}, w={bw}, h={bh} is not inside the {w}x{h} frame")
    work = resized_shape((box[3], box[2]), max_side)
    return FrameSelection(first, last, box, work)


# -- the chunk plan of seamless inference ------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """One encoder pass over padded frames ``lo..hi-1``, keeping outputs ``keep_lo..keep_hi-1``.

    Attributes
    ----------
    lo, hi : int
        The frames the pass reads.
    keep_lo, keep_hi : int
        The output frames it contributes.
    """

    lo: int
    hi: int
    keep_lo: int
    keep_hi: int


def padded_length(n_frames: int, align: int = 8) -> int:
    """Count frames after edge-padding to a multiple of ``align``.

    Parameters
    ----------
    n_frames : int
        Frames before padding.
    align : int, default 8
        The encoder's total time stride, so every layer sees whole strides.

    Returns
    -------
    int
        ``n_frames`` rounded up to a multiple of ``align``.
    """
    return int(math.ceil(n_frames / align) * align)


def plan_chunks(
    n_padded: int, need_lo: int, need_hi: int, length: int, margin: int, align: int = 8
) -> list[Span]:
    """Plan encoder passes whose kept outputs equal one pass over the whole sequence.

    Every kept output is ``margin`` frames away from a cut that is not a sequence end.

    Parameters
    ----------
    n_padded : int
        Frames in the padded sequence.
    need_lo, need_hi : int
        Output frames ``need_lo .. need_hi - 1`` to cover (widened to multiples of ``align``).
    length : int
        Most frames a pass reads.
    margin : int
        Frames each side of a cut whose outputs the cut changes (the receptive field's reach).
    align : int, default 8
        The encoder's total time stride.

    Returns
    -------
    list of Span
        The passes, in order; their kept ranges tile the needed outputs.

    Raises
    ------
    BadInputError
        ``length`` is too short to keep anything between two margins.
    """
    need_lo = need_lo // align * align
    need_hi = min(n_padded, -(-need_hi // align) * align)
    length = min(length, n_padded)
    if length < n_padded and length < 2 * margin + align:
        raise BadInputError(f"chunk length {length} must be at least {2 * margin + align}")
    spans: list[Span] = []
    pos = need_lo
    while pos < need_hi:
        lo = max(0, pos - margin)
        hi = min(n_padded, lo + length)
        if hi == n_padded:
            lo = max(0, n_padded - length)
        keep_hi = n_padded if hi == n_padded else hi - margin
        spans.append(Span(lo, hi, pos, min(keep_hi, need_hi)))
        pos = keep_hi
    return spans


def step_positions(
    frames: np.ndarray, time_stride: int, n_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the two feature-map steps each frame interpolates between, and the weight of the second.

    DESIGN.md's rule with the whole sequence as one window: ``tau = (t + 0.5) / stride - 0.5``,
    clamped to ``[0, n_steps - 1]``.

    Parameters
    ----------
    frames : numpy.ndarray
        Frame indices ``t``.
    time_stride : int
        Frames per feature-map step.
    n_steps : int
        Steps in the feature map.

    Returns
    -------
    k0, k1 : numpy.ndarray
        The steps below and above ``tau``.
    weight : numpy.ndarray
        ``tau - k0``, the weight of ``k1``.
    """
    tau = np.clip((np.asarray(frames, float) + 0.5) / time_stride - 0.5, 0, n_steps - 1)
    k0 = np.floor(tau).astype(int)
    k1 = np.minimum(k0 + 1, n_steps - 1)
    return k0, k1, tau - k0


# -- the flow feed -----------------------------------------------------------------------------
class FlowFeed:
    """Encoder-ready flow fields ``lo..`` produced on a background thread, read in order.

    The same feed carries the RGB stream's frames and the two-stream's ``(fields, frames)``
    blocks: ``transform`` makes them encoder-ready (2, 3 or 5 channels per entry).

    ``blocks`` yields ``(first field index, raw fields)`` in order; ``transform`` turns a block into
    what the encoder takes (resize, clip, quantise, scale) and runs on the flow thread, so it
    overlaps with the encoder too; ``tee`` (optional) sees each raw block first (``--keep-flow``,
    the flow cache). Field ``i`` beyond the last real field ``n_fields - 1`` is a copy of it (the
    frame-aligned edge padding). Use as a context manager: leaving stops and joins the thread.

    Parameters
    ----------
    blocks : iterator of (int, numpy.ndarray)
        ``(first field index, raw fields)`` in order.
    n_fields : int
        Real fields the blocks hold.
    transform : callable
        Raw block → encoder-ready block; runs on the flow thread.
    tee : callable, optional
        ``tee(first, raw)`` sees each raw block first.
    cancel : callable, optional
        Polled before each block; true raises :class:`CancelledError` in the consumer.
    on_fields : callable, optional
        Called with the number of fields of each block produced (progress).
    """

    def __init__(
        self,
        blocks: Iterator[tuple[int, np.ndarray]],
        n_fields: int,
        transform: Callable[[np.ndarray], np.ndarray],
        tee: Callable[[int, np.ndarray], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        on_fields: Callable[[int], None] | None = None,
    ) -> None:
        self.n_fields = n_fields
        self._blocks, self._transform, self._tee = blocks, transform, tee
        self._cancel = cancel or (lambda: False)
        self._on_fields = on_fields
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._stop = threading.Event()
        self._fields: dict[int, np.ndarray] = {}
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="flow-feed", daemon=True)

    def __enter__(self) -> FlowFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the flow thread, wait for it, and close the block iterator."""
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        close = getattr(self._blocks, "close", None)  # a generator's: runs its cleanup now
        if close is not None:
            with contextlib.suppress(AttributeError, ValueError):
                close()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for first, raw in self._blocks:
                if self._stop.is_set():
                    return
                if self._cancel():
                    raise CancelledError("Feature extraction cancelled")
                if self._tee is not None:
                    self._tee(first, raw)
                if not self._put(("fields", first, self._transform(raw))):
                    return
                if self._on_fields is not None:  # two-stream blocks are (fields, frames)
                    self._on_fields(len(raw[0]) if isinstance(raw, tuple) else len(raw))
            self._put(("end", None, None))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("error", exc, None))

    def _pull(self) -> None:
        kind, first, block = self._queue.get()
        if kind == "error":
            raise first
        if kind == "end":
            self._done = True
            return
        for j, field in enumerate(block):
            self._fields[first + j] = field

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Read fields ``lo .. hi - 1``, waiting for the flow thread as needed.

        Parameters
        ----------
        lo, hi : int
            The field range; indices past the last real field repeat it (edge padding).

        Returns
        -------
        numpy.ndarray
            ``(hi - lo, H, W, C)`` encoder-ready fields.

        Raises
        ------
        Exception
            Whatever the flow thread raised (e.g. :class:`CancelledError`, a decoding error).
        RuntimeError
            The blocks ended before the fields were produced.
        """
        last = min(hi, self.n_fields) - 1
        while last not in self._fields and not self._done:
            self._pull()
        idx = np.minimum(np.arange(lo, hi), self.n_fields - 1)
        missing = [i for i in (int(idx[0]), int(idx[-1])) if i not in self._fields]
        if missing:
            raise RuntimeError(f"flow fields {missing} were not produced")
        return np.stack([self._fields[int(i)] for i in idx])

    def drop_before(self, index: int) -> None:
        """Forget fields below ``index`` (the last real field is kept for padding).

        Parameters
        ----------
        index : int
            The first field still needed.
        """
        for i in [i for i in self._fields if i < index and i != self.n_fields - 1]:
            del self._fields[i]
