"""I3D preprocessing and windows, against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.flow.sequences import (
    OpticalFlowSequenceLoader,
    create_sequence_batch,
    frame_windows,
    preprocess_flow,
    window_data,
    window_starts,
)
from napari_flow_features.io.flow_files import write_flo


def test_preprocess_clips_and_scales():
    f = np.array([-25, -20, -10, 0, 0.07, 10, 20, 25], np.float32).reshape(4, 2)
    out = preprocess_flow(f)
    np.testing.assert_allclose(out.ravel(), [-1, -1, -0.5, 0, 0.0035, 0.5, 1, 1], atol=1e-7)
    assert out.dtype == np.float32
    np.testing.assert_allclose(preprocess_flow(f, bound=10).ravel()[2:4], [-1, 0])


def test_preprocess_quantises_like_deepmind():
    f = np.array([-20, -10, 0, 0.07, 10, 20], np.float32).reshape(3, 2)
    # q = round((f + 20) * 255 / 40): 0, 63.75→64, 127.5→128 (half to even), 127.95→128, 191.25→191, 255
    q = np.array([0, 64, 128, 128, 191, 255])
    np.testing.assert_allclose(
        preprocess_flow(f, quantize=True).ravel(), q / 255 * 2 - 1, atol=1e-7
    )
    assert (
        len(np.unique(preprocess_flow(np.linspace(-30, 30, 10000).reshape(-1, 2), quantize=True)))
        <= 256
    )


def test_preprocess_rejects_nan_and_bad_shapes():
    f = np.zeros((2, 2, 2), np.float32)
    f[0, 1, 0] = np.nan
    with pytest.raises(BadInputError, match="1 NaN"):
        preprocess_flow(f)
    with pytest.raises(BadInputError, match="size 2"):
        preprocess_flow(np.zeros((4, 3)))
    with pytest.raises(BadInputError, match="positive"):
        preprocess_flow(np.zeros((4, 2)), bound=0)


@pytest.mark.parametrize(
    ("n", "length", "stride", "expected"),
    [
        (40, 16, 8, [0, 8, 16, 24]),
        (41, 16, 8, [0, 8, 16, 24, 25]),
        (16, 16, 8, [0]),
        (10, 16, 8, [0]),
        (20, 4, 5, [0, 5, 10, 15, 16]),
        (5, 1, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_window_starts(n, length, stride, expected):
    assert window_starts(n, length, stride) == expected


def test_window_starts_rejects_bad_parameters():
    with pytest.raises(BadInputError, match="at least 1"):
        window_starts(10, 0, 8)
    with pytest.raises(BadInputError, match="at least 1"):
        window_starts(10, 16, 0)


def test_frame_windows_pad_at_the_end_and_for_short_videos():
    (w,) = frame_windows(n_frames=10, length=16, stride=8)
    np.testing.assert_array_equal(w.frames, [*range(10), *[9] * 6])
    # Frame 9 has no flow of its own (9 flow fields for 10 frames): padded from there on.
    np.testing.assert_array_equal(w.padded, [False] * 9 + [True] * 7)
    last = frame_windows(n_frames=41, length=16, stride=8)[-1]
    assert last.start == 25 and last.frames[-1] == 40 and last.padded.sum() == 1


def test_window_data_reads_the_right_fields():
    flow = np.arange(9, dtype=np.float32)[:, None, None, None] * np.ones((9, 2, 3, 2), np.float32)
    (w,) = frame_windows(10, 12, 4)
    data = window_data(flow, w)
    np.testing.assert_array_equal(data[:, 0, 0, 0], [*range(9), 8, 8, 8])


def make_flow_dir(tmp_path):
    d = tmp_path / "flows"
    d.mkdir()
    seq_a = np.random.default_rng(0).normal(0, 10, (20, 6, 8, 2)).astype(np.float32)
    np.save(d / "a.npy", seq_a)
    np.savez(d / "b.npz", flow=seq_a[:5])
    flo = d / "c"
    flo.mkdir()
    for i in range(3):
        write_flo(flo / f"{i}.flo", seq_a[i])
    return d, seq_a


def test_loader_yields_windows_lazily(tmp_path):
    d, seq_a = make_flow_dir(tmp_path)
    loader = OpticalFlowSequenceLoader(d, sequence_length=8, stride=4)
    items = list(loader)
    # a: 21 frames → starts 0,4,8,12,13; b: 6 frames → [0]; c: 4 frames → [0]
    assert [w.start for w, _ in items] == [0, 4, 8, 12, 13, 0, 0]
    assert len(loader) == 7
    _, data = items[1]
    np.testing.assert_allclose(data, preprocess_flow(seq_a[4:12]))
    assert data.shape == (8, 6, 8, 2) and data.dtype == np.float32


def test_batches_and_create_sequence_batch(tmp_path):
    d, _ = make_flow_dir(tmp_path)
    loader = OpticalFlowSequenceLoader(d, sequence_length=8, stride=4)
    batches = list(loader.iter_batches(3))
    assert [b.shape[0] for b, _ in batches] == [3, 3, 1]
    batch = create_sequence_batch([d / "a.npy"], batch_size=2, sequence_length=8, stride=4)
    assert batch.shape == (2, 8, 6, 8, 2) and batch.dtype == np.float32


def test_batches_refuse_mixed_sizes(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 6, 8, 2), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 6, 9, 2), np.float32))
    with pytest.raises(BadInputError, match="different sizes"):
        list(OpticalFlowSequenceLoader(tmp_path, 4, 4).iter_batches(4))


def test_save_sequences(tmp_path):
    d, seq_a = make_flow_dir(tmp_path)
    out = OpticalFlowSequenceLoader([d / "a.npy"], 8, 4, quantize=True).save_sequences(
        tmp_path / "out"
    )
    arr = np.load(out[0])
    assert arr.shape == (5, 8, 6, 8, 2)
    last = seq_a[[*range(13, 20), 19]]  # starts at 13; frame 20 has no flow and repeats field 19
    np.testing.assert_allclose(arr[4], preprocess_flow(last, quantize=True))
    index = json.loads(out[0].with_suffix(".json").read_text())
    assert [w["start"] for w in index["windows"]] == [0, 4, 8, 12, 13]
    assert index["windows"][-1]["padded"][-1] is True


def test_loader_errors(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        OpticalFlowSequenceLoader(tmp_path / "nope")
    with pytest.raises(BadInputError, match="No flow files"):
        OpticalFlowSequenceLoader(tmp_path)
    np.save(tmp_path / "one.npy", np.zeros((4, 5, 2), np.float32))
    with pytest.raises(BadInputError, match="one field"):
        list(OpticalFlowSequenceLoader(tmp_path))


def test_configuration_names_beside_the_seeds(tmp_path):
    """clip_length/flow_bound (docs/configuration.md) and the seed's sequence_length/bound agree."""
    flow = np.random.default_rng(0).normal(0, 15, (20, 6, 8, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", flow)
    seed = OpticalFlowSequenceLoader(tmp_path, sequence_length=8, stride=4, bound=10.0)
    named = OpticalFlowSequenceLoader(tmp_path, clip_length=8, stride=4, flow_bound=10.0)
    assert (named.sequence_length, named.bound) == (seed.sequence_length, seed.bound) == (8, 10.0)
    np.testing.assert_array_equal(
        named.create_sequence_batch(batch_size=3), seed.create_sequence_batch(batch_size=3)
    )
    np.testing.assert_array_equal(
        preprocess_flow(flow, flow_bound=10.0), preprocess_flow(flow, 10.0)
    )
    with pytest.raises(BadInputError, match="disagree"):
        OpticalFlowSequenceLoader(tmp_path, sequence_length=8, clip_length=12)
    with pytest.raises(BadInputError, match="disagree"):
        preprocess_flow(flow, bound=5.0, flow_bound=10.0)
