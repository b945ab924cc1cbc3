"""ActivationVolume: lazy per-frame channel volumes over the none post-encoder's feature maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_flow_features.extract.activations import ActivationVolume
from napari_flow_features.extract.post_encoders import assign_frames, gap


@pytest.fixture
def volume(tmp_path):
    maps = np.random.default_rng(0).normal(size=(3, 2, 3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "maps.npy", maps)
    assign = assign_frames([0, 8, 16], 30, 16, 2)  # 30 frames, windows of 16 at stride 8
    table = pd.DataFrame({"frame": np.arange(30), "window": assign.window, "tau": assign.tau})
    lazy = ActivationVolume.from_table(np.load(tmp_path / "maps.npy", mmap_mode="r"), table, 30)
    return maps, assign, lazy


def test_each_frame_is_its_windows_map_at_its_time_position(volume):
    maps, assign, lazy = volume
    assert lazy.shape == (5, 30, 3, 4) and lazy.dtype == np.float32
    # frame 3 of window 0: tau = (3 + 0.5) * 2 / 16 - 0.5 = -0.0625 → clamped to step 0
    np.testing.assert_allclose(lazy[2, 3], maps[0, 0, :, :, 2])
    # frame 12 takes window 1 (centre 15.5 is nearest): tau = (4.5) / 8 - 0.5 = 0.0625
    assert assign.window[12] == 1
    want = 0.9375 * maps[1, 0, :, :, 4] + 0.0625 * maps[1, 1, :, :, 4]
    np.testing.assert_allclose(lazy[4, 12], want, rtol=1e-6)
    # GAP is the spatial mean of the volume, frame by frame
    rows = np.stack([lazy[:, t].mean(axis=(1, 2)) for t in range(30)])
    for t in (0, 12, 29):
        w, tau = assign.window[t], assign.tau[t]
        lo, frac = int(tau), tau - int(tau)
        hi = min(lo + 1, 1)
        np.testing.assert_allclose(rows[t], (1 - frac) * gap(maps[w, lo]) + frac * gap(maps[w, hi]),
                                   rtol=1e-5)  # fmt: skip


def test_numpy_style_indexing(volume):
    _, _, lazy = volume
    assert lazy[1].shape == (30, 3, 4)  # one channel's volume, what a 3-D view reads
    assert lazy[:, 5].shape == (5, 3, 4)
    assert lazy[1, 2:6, 1, :].shape == (4, 4)
    assert lazy[..., 2].shape == (5, 30, 3)
    assert lazy[0, -1].shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(lazy)[3, 7], lazy[3, 7])


def test_frames_not_run_are_nan(tmp_path):
    maps = np.ones((1, 2, 2, 2, 3), np.float32)
    table = pd.DataFrame({"frame": [4, 5], "window": [0, 0], "tau": [0.0, 1.0]})
    lazy = ActivationVolume.from_table(maps, table, 10)
    assert np.isnan(lazy[0, 0]).all() and np.isfinite(lazy[:, 4:6]).all()
    with pytest.raises(ValueError, match="out of range"):
        ActivationVolume(maps, np.array([0, 3]), np.zeros(2))
