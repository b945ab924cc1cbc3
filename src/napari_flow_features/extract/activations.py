"""Per-frame activation volumes read lazily from the ``none`` post-encoder's feature maps."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io._lazy import LazyArray
from .post_encoders import interpolate_time


class ActivationVolume(LazyArray):
    """Per-frame activations ``(C, T, H', W')`` float32, read lazily from window feature maps.

    Element ``[c, t]`` is channel c of frame t's feature map, time-interpolated inside the frame's
    window exactly as the per-frame rows are (DESIGN.md); frames outside the run are NaN.
    ``volume[c]`` is one channel's ``(T, H', W')`` volume for a 3-D view.

    Parameters
    ----------
    maps : array_like
        ``[N, T', H', W', C]`` feature maps (a memory map is fine: only the windows a request
        touches are read, once each).
    window : numpy.ndarray
        ``(T,)`` int: the window each frame takes (-1: not run).
    tau : numpy.ndarray
        ``(T,)`` float: each frame's time position in its window.

    Raises
    ------
    ValueError
        ``maps`` is not 5-D, or a window index is out of range.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, maps: Any, window: np.ndarray, tau: np.ndarray) -> None:
        if np.ndim(maps) != 5:
            raise ValueError(f"Feature maps must be [N, T', H', W', C], got {np.shape(maps)}")
        self.maps = maps
        self.window = np.asarray(window, int)
        self.tau = np.asarray(tau, float)
        n, _, h, w, c = maps.shape
        if self.window.max(initial=-1) >= n:
            raise ValueError(f"Window index {self.window.max()} out of range: {n} windows")
        self.shape = (c, len(self.window), h, w)

    @classmethod
    def from_table(cls, maps: Any, table: Any, n_frames: int) -> ActivationVolume:
        """Build the volume from the ``none`` post-encoder's table.

        Parameters
        ----------
        maps : array_like
            The run's ``[N, T', H', W', C]`` feature maps.
        table : pandas.DataFrame
            The ``none`` table: ``frame``, ``window``, ``tau`` per frame.
        n_frames : int
            The video's frame count (frames not in the table are NaN).

        Returns
        -------
        ActivationVolume
            The lazy volume.
        """
        window = np.full(n_frames, -1, int)
        tau = np.zeros(n_frames)
        frames = table["frame"].to_numpy(int)
        window[frames] = table["window"].to_numpy(int)
        tau[frames] = table["tau"].to_numpy(float)
        return cls(maps, window, tau)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (4 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (4 - len(key))
        channels = np.arange(self.shape[0])[key[0]]
        frames = np.arange(self.shape[1])[key[1]]
        c_list, t_list = np.atleast_1d(channels), np.atleast_1d(frames)
        out = np.full((len(c_list), len(t_list), *self.shape[2:]), np.nan, np.float32)
        wins = self.window[t_list]
        for w in np.unique(wins[wins >= 0]):
            block = np.asarray(self.maps[w][..., c_list], np.float32)  # one read per window
            for j in np.flatnonzero(wins == w):
                out[:, j] = np.moveaxis(interpolate_time(block, self.tau[t_list[j]]), -1, 0)
        out = out[:, :, key[2]][..., key[3]]
        if np.ndim(frames) == 0:
            out = out[:, 0]
        if np.ndim(channels) == 0:
            out = out[0]
        return out
