"""Flow files: .flo bit-exact round trip, .npy/.npz/.flo folders, and every bad-file error."""

from __future__ import annotations

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.io.flow_files import (
    FloFolder,
    read_flo,
    read_flow,
    write_flo,
    write_flow_npy,
)


def random_flow(h=7, w=11, seed=0):
    return np.random.default_rng(seed).normal(0, 5, (h, w, 2)).astype(np.float32)


def test_flo_round_trip_is_bit_exact(tmp_path):
    flow = random_flow()
    flow[0, 0] = [np.nan, -0.0]
    flow[1, 2] = [np.float32(1e-42), np.inf]  # subnormal and inf survive as bytes
    path = write_flo(tmp_path / "a.flo", flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == (7, 11, 2)
    assert back.tobytes() == flow.tobytes()


def test_flo_layout_is_middlebury(tmp_path):
    """Header: float32 202021.25, int32 width, int32 height; then row-major (dx, dy) pairs."""
    flow = np.zeros((2, 3, 2), np.float32)
    flow[1, 2] = [4.5, -1.25]  # y=1, x=2
    raw = write_flo(tmp_path / "b.flo", flow).read_bytes()
    assert np.frombuffer(raw[:4], "<f4")[0] == np.float32(202021.25)
    assert tuple(np.frombuffer(raw[4:12], "<i4")) == (3, 2)
    values = np.frombuffer(raw[12:], "<f4")
    assert values[(1 * 3 + 2) * 2] == 4.5 and values[(1 * 3 + 2) * 2 + 1] == -1.25


def test_flo_wrong_magic(tmp_path):
    path = write_flo(tmp_path / "bad.flo", random_flow())
    raw = bytearray(path.read_bytes())
    raw[:4] = np.array([1.0], "<f4").tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(BadInputError, match=r"magic.*bad\.flo"):
        read_flo(path)


def test_flo_truncated_and_overlong(tmp_path):
    path = write_flo(tmp_path / "t.flo", random_flow())
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    with pytest.raises(BadInputError, match=r"truncated.*t\.flo"):
        read_flo(path)
    path.write_bytes(raw[:10])
    with pytest.raises(BadInputError, match="header"):
        read_flo(path)
    path.write_bytes(raw + b"\0" * 8)
    with pytest.raises(BadInputError, match="longer"):
        read_flo(path)


def test_flo_absurd_header(tmp_path):
    path = tmp_path / "h.flo"
    path.write_bytes(np.array([202021.25], "<f4").tobytes() + np.array([-3, 5], "<i4").tobytes())
    with pytest.raises(BadInputError, match="width -3"):
        read_flo(path)


def test_write_flo_rejects_sequences_and_ints(tmp_path):
    with pytest.raises(BadInputError, match="one"):
        write_flo(tmp_path / "x.flo", np.zeros((2, 4, 4, 2), np.float32))
    with pytest.raises(BadInputError, match="floating"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 4, 2), np.int32))
    assert list(tmp_path.iterdir()) == []


def test_npy_sequence_is_memory_mapped(tmp_path):
    seq = np.stack([random_flow(seed=s) for s in range(5)])
    path = write_flow_npy(tmp_path / "seq.npy", seq)
    flow = read_flow(path)
    assert isinstance(flow, np.memmap)
    np.testing.assert_array_equal(flow, seq)


def test_npz_by_name_or_single_array(tmp_path):
    seq = np.stack([random_flow(seed=s) for s in range(3)])
    np.savez(tmp_path / "named.npz", flow=seq, other=np.zeros(3))
    np.savez(tmp_path / "single.npz", seq)
    np.savez(tmp_path / "ambiguous.npz", a=seq, b=seq)
    np.testing.assert_array_equal(read_flow(tmp_path / "named.npz"), seq)
    np.testing.assert_array_equal(read_flow(tmp_path / "single.npz"), seq)
    with pytest.raises(BadInputError, match=r"ambiguous\.npz"):
        read_flow(tmp_path / "ambiguous.npz")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 5, 3), np.float32), r"\(H, W, 2\)"),
        (np.zeros((4, 5), np.float32), r"\(H, W, 2\)"),
        (np.zeros((2, 4, 5, 2), np.uint8), "floating"),
    ],
)
def test_npy_wrong_shape_or_dtype(tmp_path, array, message):
    path = tmp_path / "wrong.npy"
    np.save(path, array)
    with pytest.raises(BadInputError, match=message):
        read_flow(path)


def test_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match=r"object.*obj\.npy"):
        read_flow(path)
    npz = tmp_path / "obj.npz"
    np.savez(npz, flow=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadInputError, match=r"obj\.npz"):
        read_flow(npz)


def test_corrupt_npy_and_npz(tmp_path):
    (tmp_path / "c.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "c.npz").write_bytes(b"PK not a zip")
    with pytest.raises(BadInputError, match=r"c\.npy"):
        read_flow(tmp_path / "c.npy")
    with pytest.raises(BadInputError, match=r"c\.npz"):
        read_flow(tmp_path / "c.npz")
    with pytest.raises(BadInputError, match="not found"):
        read_flow(tmp_path / "missing.npy")


def test_flo_folder_is_a_lazy_sequence_in_natural_order(tmp_path):
    fields = [random_flow(seed=s) for s in range(12)]
    for i, f in enumerate(fields):
        write_flo(tmp_path / f"frame_{i}.flo", f)  # frame_10 must come after frame_9
    seq = read_flow(tmp_path)
    assert isinstance(seq, FloFolder) and seq.shape == (12, 7, 11, 2)
    np.testing.assert_array_equal(seq[10], fields[10])
    np.testing.assert_array_equal(seq[2:5, 1:3], np.stack(fields[2:5])[:, 1:3])
    np.testing.assert_array_equal(np.asarray(seq), np.stack(fields))


def test_flo_folder_with_mixed_sizes(tmp_path):
    write_flo(tmp_path / "0.flo", random_flow(7, 11))
    write_flo(tmp_path / "1.flo", random_flow(5, 11))
    seq = read_flow(tmp_path)
    with pytest.raises(BadInputError, match="differ in size"):
        seq[1]


def test_empty_folder(tmp_path):
    with pytest.raises(BadInputError, match=r"No \.flo"):
        read_flow(tmp_path)
