"""A lazy, frame-exact video array backed by PyAV (FFmpeg).

Opening a file takes constant time: frame count, rate and size come from the container and one
decoded frame, and the end of the file is checked for truncation. The seek index (every packet's
timestamp, demuxed but not decoded) is built lazily on the first random access and cached on disk,
keyed by the file's path, size and modification time, so the next open of the same file is free;
reading frames in order never needs it. Containers that keep no frame count (and AVI, whose frames
are numbered in decode order) are indexed at open, and ``count_source`` says so. Frame ``i`` is the
``i``-th frame in presentation order, whatever the codec's decode order (B-frames) or keyframe
spacing. Reads go through a small LRU cache; a forward jump of a few frames keeps decoding instead
of seeking.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import BadInputError
from ._lazy import LazyArray

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
ColorMode = Literal["auto", "rgb", "grey"]


class VideoArray(LazyArray):
    """Read-only ``(T, H, W)`` (grey) or ``(T, H, W, 3)`` (RGB) uint8 array view of a video file.

    Frames decode on demand (napari slices it like a NumPy array); ``np.asarray`` reads them all.

    Parameters
    ----------
    path : str or os.PathLike
        Video file readable by FFmpeg.
    colour : {"auto", "rgb", "grey"}, default "auto"
        ``"auto"``: grey when the first frame has no colour. ``color=`` (the seed's spelling) is
        accepted as an alias.
    cache_frames : int, default 64
        Number of decoded frames kept (least recently used are dropped).
    forward_decode_limit : int, default 48
        A read at most this many frames ahead of the decoder keeps decoding instead of seeking.

    Attributes
    ----------
    path : pathlib.Path
        The video file.
    colour : str
        ``"grey"`` or ``"rgb"``, as chosen (``color`` is the same, the seed's spelling).
    fps : float
        Frames per second the container declares (NaN when it declares none).
    codec : str
        The video codec's name.
    decoded_frames : int
        Frames decoded since opening (for tests and benchmarks of laziness).

    Raises
    ------
    BadInputError
        The file is missing, empty, a folder, not a video, has no video stream, is truncated, or
        its first frame cannot be decoded; or ``colour`` is not one of the three modes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        colour: ColorMode = "auto",
        cache_frames: int = 64,
        forward_decode_limit: int = 48,
        *,
        color: ColorMode | None = None,
    ) -> None:
        self.path = Path(path)
        colour = _colour_alias(colour, color)
        self._cache_size = max(1, int(cache_frames))
        self._forward_limit = max(0, int(forward_decode_limit))
        self._lock = threading.RLock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._container: Any = None
        self._decoder: Any = None
        self._next_index: int | None = None  # index the running decoder yields next
        self._sequential = False  # the running decoder started at the file's start: count frames
        self._indexed = False
        #: Frames decoded since opening (for tests and benchmarks of laziness).
        self.decoded_frames = 0
        #: Whether the seek index came from the disk cache (None: not built yet).
        self.index_from_cache: bool | None = None
        self._open_container()
        self._format = "raw"  # the first frame comes back undecoded to pick the colour mode
        raw = self._decode_at(0)
        if colour == "auto":
            colour = "grey" if _raw_looks_grey(raw) else "rgb"
        self.colour: str = colour
        self._format = "gray" if colour == "grey" else "rgb24"
        first = self._convert(raw)
        self._frame_shape = first.shape

    # -- opening -------------------------------------------------------------------------------
    def _open_file(self) -> tuple[Any, Any, int]:
        """``(container, first video stream, file size)``, or a named error."""
        import av

        path = self.path
        if not path.exists():
            raise BadInputError(f"Video file not found: {path}")
        if path.is_dir():
            raise BadInputError(f"Expected a video file, got a folder: {path}")
        file_size = path.stat().st_size
        if file_size == 0:
            raise BadInputError(f"Video file is empty: {path}")
        try:
            container = av.open(str(path), mode="r")
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            raise BadInputError(f"Not a readable video (FFmpeg: {exc}): {path}") from exc
        if not container.streams.video:
            container.close()
            raise BadInputError(f"File has no video stream: {path}")
        stream = container.streams.video[0]
        return container, stream, file_size

    def _open_container(self) -> None:
        """Open the file and read what the container declares; index now only if it must."""
        container, stream, file_size = self._open_file()
        self._count_mode = "avi" in container.format.name.split(",")
        declared = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        self.fps: float = float(rate) if rate else float("nan")
        self.codec: str = stream.codec_context.name
        stream.thread_type = "AUTO"
        if self._count_mode or declared == 0:
            container.close()
            self._build_index()
            self.count_source = "index"
            return
        self._check_tail(container, stream, file_size)
        self._container, self._stream = container, stream
        self._n_frames = declared
        self.count_source = "container"

    def _check_tail(self, container: Any, stream: Any, file_size: int) -> None:
        """Check for truncation in constant time.

        The packets of the last keyframe interval must lie inside the file (an index written before
        the data survives a cut).
        """
        import av

        end = (stream.start_time or 0) + (stream.duration or 0)
        try:
            # any_frame: land on the packets just before the end, not the last keyframe (a long GOP
            # would be demuxed whole)
            container.seek(end, stream=stream, backward=True, any_frame=True)
            seen, last = 0, None
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                seen += 1
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    last = ts if last is None else max(last, ts)
                if (
                    packet.pos is not None
                    and packet.pos >= 0
                    and packet.pos + packet.size > file_size
                ):
                    raise BadInputError(
                        f"Truncated video: the container lists {stream.frames} frames but the "
                        f"file ({file_size} bytes) ends before their data: {self.path}"
                    )
            # The last frame starts one frame before the declared end; data that stops earlier was cut.
            frame_ticks = 1 / (self.fps * stream.time_base) if self.fps == self.fps else 0
            if seen == 0 or (last is not None and stream.duration and last + 2 * frame_ticks < end):
                raise BadInputError(
                    f"Truncated video: the container lists {stream.frames} frames but the file "
                    f"({file_size} bytes) ends before their data: {self.path}"
                )
            container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            container.close()
            raise BadInputError(
                f"Corrupt video, the container cannot be read ({exc}): {self.path}"
            ) from exc
        except BadInputError:
            container.close()
            raise

    def _cache_key(self) -> str:
        import hashlib

        stat = self.path.stat()
        text = f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|index v1"
        return hashlib.sha1(text.encode()).hexdigest()

    def _ensure_index(self) -> None:
        """Load the seek index from the disk cache (same path, size and mtime) or build it now."""
        if self._indexed:
            return
        from .._cache_dirs import video_index_dir

        cached = video_index_dir() / f"{self._cache_key()}.npz"
        try:
            with np.load(cached, allow_pickle=False) as data:
                pts, keys, key_ts = data["pts"], data["key_index"], data["key_ts"]
            self._pts = pts
            self._pts_to_index = {int(p): i for i, p in enumerate(pts.tolist())}
            self._key_index, self._key_ts = keys.tolist(), key_ts.tolist()
            self._indexed = True
            self.index_from_cache = True
            return
        except (OSError, KeyError, ValueError):
            pass
        container, stream = self._container, self._stream
        self._build_index()
        if len(self._pts) != self._n_frames:
            raise BadInputError(
                f"The container declares {self._n_frames} frames but holds {len(self._pts)}: {self.path}"
            )
        self._container.close()  # the indexer's own handle; keep the open one
        self._container, self._stream = container, stream
        self.index_from_cache = False
        import contextlib

        from ._atomic import atomic_write_path

        with contextlib.suppress(OSError):
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write_path(cached) as tmp:
                np.savez(tmp, pts=self._pts, key_index=np.asarray(self._key_index, np.int64),
                         key_ts=np.asarray(self._key_ts, np.int64))  # fmt: skip

    def _build_index(self) -> None:
        import av

        path = self.path
        container, stream, file_size = self._open_file()
        pts: list[int] = []
        key_order: list[int] = []  # packet ordinals of keyframes
        key_ts: list[int] = []
        truncated = False
        try:
            for packet in container.demux(stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None or packet.size == 0:
                    continue
                if (
                    packet.pos is not None
                    and packet.pos >= 0
                    and packet.pos + packet.size > file_size
                ):
                    truncated = True
                    break
                if packet.is_keyframe:
                    key_order.append(len(pts))
                    key_ts.append(int(ts))
                pts.append(int(ts))
        except av.FFmpegError as exc:
            container.close()
            raise BadInputError(
                f"Corrupt video, the container cannot be read ({exc}): {path}"
            ) from exc
        declared = int(stream.frames or 0)  # the container's own count (0 when it keeps none)
        if declared and len(pts) < declared:
            truncated = True
        if truncated:
            container.close()
            raise BadInputError(
                f"Truncated video: the container lists {max(declared, len(pts))} frames but the file "
                f"({file_size} bytes) ends before their data: {path}"
            )
        if not pts:
            container.close()
            raise BadInputError(f"Video has no frames: {path}")
        # AVI keeps no presentation timestamps (FFmpeg makes them up in decode order), so frames are
        # numbered by the decoder's output order, counted from a keyframe whose number is known.
        self._count_mode = "avi" in container.format.name.split(",")
        if self._count_mode:
            key_index = key_order  # closed GOPs: a keyframe's packet ordinal is its frame number
            self._pts_to_index = {}
        else:
            order = sorted(pts)
            self._pts_to_index = {p: i for i, p in enumerate(order)}
            key_index = [self._pts_to_index[t] for t in key_ts]
            pts = order
        if not key_index:
            key_index, key_ts = [0], [pts[0]]
        keys = sorted(zip(key_index, key_ts, strict=True))
        self._key_index = [k for k, _ in keys]
        self._key_ts = [t for _, t in keys]
        self._pts = np.asarray(pts, dtype=np.int64)
        self._container = container
        self._stream = stream
        stream.thread_type = "AUTO"
        self._n_frames = len(pts)
        self._indexed = True

    # -- array protocol --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """``(T, H, W)`` or ``(T, H, W, 3)``."""
        return (self._n_frames, *self._frame_shape)

    @property
    def dtype(self) -> np.dtype:
        """Always ``uint8``."""
        return np.dtype(np.uint8)

    @property
    def nbytes(self) -> int:
        """Bytes the whole video takes decoded (napari's memory estimates)."""
        return self.size

    @property
    def color(self) -> str:
        """The seed's spelling of :attr:`colour`."""
        return self.colour

    def __repr__(self) -> str:
        return f"VideoArray({str(self.path)!r}, shape={self.shape}, colour={self.colour!r}, fps={self.fps:.3g})"

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = self.ndim - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1 :]
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = len(self)
        if isinstance(first, (int, np.integer)):
            index = int(first)
            if not -n <= index < n:
                raise IndexError(f"frame {index} out of range for a video of {n} frames")
            return self.frame(index % n)[rest]
        indices: Sequence[int]
        if isinstance(first, slice):
            indices = range(*first.indices(n))
        else:
            arr = np.asarray(first)
            if arr.dtype == bool:
                indices = np.flatnonzero(arr).tolist()
            else:
                indices = [int(i) for i in arr.ravel()]
                for i in indices:
                    if not -n <= i < n:
                        raise IndexError(f"frame {i} out of range for a video of {n} frames")
                indices = [i % n for i in indices]
        out = np.empty((len(indices), *self._frame_shape), dtype=np.uint8)
        # Decode in ascending order so forward runs never re-seek, then place as requested.
        for i in sorted(set(indices)):
            frame = self.frame(i)
            for j, k in enumerate(indices):
                if k == i:
                    out[j] = frame
        return out[(slice(None), *rest)]

    def __reduce__(self) -> tuple[type[VideoArray], tuple[str, str, int, int]]:
        # Reopen by path in another process (the decoder cannot be pickled).
        return (VideoArray, (str(self.path), self.colour, self._cache_size, self._forward_limit))

    # -- frame access ----------------------------------------------------------------------------
    def frame(self, index: int) -> np.ndarray:
        """Read one frame.

        Parameters
        ----------
        index : int
            Frame number in presentation order, ``0 <= index < len(self)``.

        Returns
        -------
        numpy.ndarray
            The frame, ``(H, W)`` or ``(H, W, 3)`` uint8 (cached; do not modify it).

        Raises
        ------
        BadInputError
            The frame cannot be decoded (a corrupt video).
        """
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
            frame = self._decode_at(index)
            self._remember(index, frame)
            return frame

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Read frames in order, decoding sequentially.

        Parameters
        ----------
        start : int, default 0
            First frame.
        stop : int, optional
            One past the last frame (default and at most: the video's length).

        Yields
        ------
        numpy.ndarray
            Frames ``start .. stop - 1``, each as :meth:`frame` returns it.
        """
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            yield self.frame(i)

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _decode_at(self, index: int) -> np.ndarray:

        ahead = None if self._next_index is None else index - self._next_index
        if not self._indexed and (ahead is None or ahead < 0) and index <= self._forward_limit:
            self._restart_sequential()  # near the start: decode from it, no index needed
            ahead = index
        if self._sequential and ahead is not None and 0 <= ahead <= self._forward_limit:
            result = self._decode_checked(index)
            if result is not None:
                return result
            raise BadInputError(f"Corrupt video: frame {index} could not be decoded: {self.path}")
        self._ensure_index()
        k = bisect.bisect_right(self._key_index, index) - 1
        if ahead is None or ahead < 0 or ahead > self._forward_limit or self._sequential:
            self._seek_to_key(k)
        while True:
            result = self._decode_checked(index)
            if result is not None:
                return result
            # Overshot (the seek landed after the target) or ran out: start one keyframe earlier.
            k = min(k, bisect.bisect_right(self._key_index, index) - 1) - 1
            if k < 0:
                raise BadInputError(
                    f"Corrupt video: frame {index} could not be decoded: {self.path}"
                )
            self._seek_to_key(k)

    def _decode_checked(self, index: int) -> Any:
        """:meth:`_decode_until` with FFmpeg's errors named for the user."""
        import av

        try:
            return self._decode_until(index)
        except av.FFmpegError as exc:
            raise BadInputError(
                f"Corrupt video: decoding frame {index} failed ({exc}): {self.path}"
            ) from exc

    def _restart_sequential(self) -> None:
        """Decode from the first frame, numbering frames by their order of presentation."""
        stream = self._stream
        self._container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(stream)
        self._next_index = 0
        self._sequential = True

    def _seek_to_key(self, k: int) -> None:
        self._sequential = False
        k = max(k, 0)
        self._container.seek(self._key_ts[k], stream=self._stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(self._stream)
        self._next_index = self._key_index[k] if self._count_mode else None

    def _decode_until(self, index: int) -> np.ndarray | None:
        """Decode forward to frame ``index``; None when the decoder is already past it or ends."""
        if self._decoder is None:
            self._ensure_index()
            self._seek_to_key(bisect.bisect_right(self._key_index, index) - 1)
        for frame in self._decoder:
            self.decoded_frames += 1
            if self._count_mode or self._sequential:
                i = self._next_index
                # Both ways into counting (a count-mode seek, a restart from the top) set it.
                assert i is not None
            else:
                i = self._pts_to_index.get(frame.pts) if frame.pts is not None else None
                if i is None:
                    continue
            self._next_index = i + 1
            if i == index:
                return frame if self._format == "raw" else self._convert(frame)
            if i > index:
                return None
        self._decoder = None
        self._next_index = None
        return None

    def _convert(self, frame: Any) -> np.ndarray:
        arr = _frame_to_grey(frame) if self._format == "gray" else frame.to_ndarray(format="rgb24")
        arr.setflags(write=False)
        return arr

    def close(self) -> None:
        """Release the file handle (the object can no longer decode)."""
        with self._lock:
            if self._container is not None:
                self._container.close()
                self._container = None
                self._decoder = None

    def __enter__(self) -> VideoArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


_PLANAR_YUV = {"yuv420p", "yuv422p", "yuv444p", "yuv440p", "yuv411p", "yuv410p", "nv12", "nv21"}
# MPEG (limited) range luma 16..235 to full-range grey; bit-identical to swscale's conversion.
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def _frame_to_grey(frame: Any) -> np.ndarray:
    """Grey from an 8-bit YUV frame's luma plane (no colour conversion: ~2× faster than swscale)."""
    name = frame.format.name
    full_range = name.startswith("yuvj") or frame.color_range == 2
    if name not in _PLANAR_YUV and not name.startswith("yuvj"):
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    if full_range:
        return luma.copy()
    import cv2

    return cv2.LUT(luma, _LIMITED_TO_FULL)


def _raw_looks_grey(frame: Any) -> bool:
    """Tell whether a decoded frame has no colour.

    An 8-bit planar YUV frame is grey when its chroma is neutral (128 ± 2) everywhere; other pixel
    formats are converted to RGB and compared channel by channel.
    """
    name = frame.format.name
    if name in _PLANAR_YUV or name.startswith("yuvj"):
        if name in ("nv12", "nv21"):
            return _looks_grey(frame.to_ndarray(format="rgb24"))
        for plane in frame.planes[1:3]:
            data = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            chroma = data[:, : plane.width].astype(np.int16)
            if chroma.size and np.abs(chroma - 128).max() > 2:
                return False
        return True
    return _looks_grey(frame.to_ndarray(format="rgb24"))


def _looks_grey(rgb: np.ndarray) -> bool:
    if rgb.ndim != 3:
        return True
    r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
    return int(np.abs(r - g).max()) <= 2 and int(np.abs(g - b).max()) <= 2


def open_video(
    path: str | os.PathLike, colour: ColorMode = "auto", *, color: ColorMode | None = None
) -> VideoArray:
    """Open a video lazily.

    Parameters
    ----------
    path : str or os.PathLike
        Video file readable by FFmpeg.
    colour : {"auto", "rgb", "grey"}, default "auto"
        ``"auto"``: grey when the first frame has no colour.
    color : {"auto", "rgb", "grey"}, optional
        The seed's spelling of ``colour`` (an alias; give one of the two).

    Returns
    -------
    VideoArray
        The video as a ``(T, H, W)`` or ``(T, H, W, 3)`` uint8 array that decodes on demand.

    Raises
    ------
    BadInputError
        The file is unusable (the message names it and why).
    """
    return VideoArray(path, colour=_colour_alias(colour, color))


def _colour_alias(colour: ColorMode, color: ColorMode | None) -> ColorMode:
    """``colour``, or the seed's ``color`` alias when only that was given; checked."""
    if color is not None:
        if colour != "auto" and colour != color:
            raise BadInputError(f"colour={colour!r} and color={color!r} disagree: give one")
        colour = color
    if colour not in ("auto", "rgb", "grey"):
        raise BadInputError(f"colour must be 'auto', 'rgb' or 'grey', not {colour!r}")
    return colour


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 30.0,
    codec: str = "libx264",
    crf: int = 18,
    bframes: int | None = None,
    gop: int | None = None,
) -> Path:
    """Write frames as a video file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The output; its suffix picks the container (``.mp4``, ``.avi``, ``.mov``, ``.mkv``).
    frames : numpy.ndarray
        ``(T, H, W)`` or ``(T, H, W, 3)`` uint8 frames; odd sizes are padded by one edge pixel.
    fps : float, default 30.0
        Frame rate.
    codec : str, default "libx264"
        An FFmpeg video encoder.
    crf : int, default 18
        libx264's constant rate factor (lower: better quality).
    bframes, gop : int, optional
        libx264's B-frame count and keyframe interval (tests use them to make files whose decode
        order differs from display order).

    Returns
    -------
    pathlib.Path
        The written video.

    Raises
    ------
    BadInputError
        The frames are not uint8 grey or RGB, there are none, or ``codec`` is not a video codec.
    """
    import av

    from ._atomic import atomic_write_path

    frames = np.asarray(frames)
    if (
        frames.dtype != np.uint8
        or frames.ndim not in (3, 4)
        or (frames.ndim == 4 and frames.shape[-1] != 3)
    ):
        raise BadInputError(
            f"Video frames must be uint8 (T, H, W) or (T, H, W, 3); got {frames.dtype} {frames.shape}"
        )
    if len(frames) == 0:
        raise BadInputError("Cannot write a video with no frames")
    h, w = frames.shape[1:3]
    path = Path(path)

    with atomic_write_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=_container_format(path)) as out:
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            if not isinstance(stream, av.VideoStream):
                raise BadInputError(f"Codec {codec!r} is not a video codec")
            stream.width, stream.height = w + (w % 2), h + (h % 2)
            stream.pix_fmt = "yuv420p"
            options: dict[str, object] = {"crf": str(crf)} if codec == "libx264" else {}
            if bframes is not None:
                options["bf"] = str(bframes)
            if gop is not None:
                options["g"] = str(gop)
                options["keyint_min"] = str(gop)
            stream.options = options
            fmt = "gray" if frames.ndim == 3 else "rgb24"
            for f in frames:
                if f.shape[0] != stream.height or f.shape[1] != stream.width:
                    pad = ((0, stream.height - h), (0, stream.width - w)) + ((0, 0),) * (f.ndim - 2)
                    f = np.pad(f, pad, mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=fmt)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    return path


def _container_format(path: Path) -> str | None:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(
        path.suffix.lower()
    )
