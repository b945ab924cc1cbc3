"""The compiled-model cache is bounded: least recently used out, never an entry in use (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_flow_features.errors import BadInputError
from napari_flow_features.model import runtime, runtime_cache

MB = 2**20


def fake_entry(cache: Path, name: str, nbytes: int, used: float) -> Path:
    """An entry of ``nbytes`` last used at ``used`` (seconds since the epoch)."""
    entry = cache / name
    entry.mkdir(parents=True)
    (entry / "model.xml").write_text("<net/>")
    (entry / "model.bin").write_bytes(b"\0" * nbytes)
    (entry / runtime_cache.LAST_USED).touch()
    os.utime(entry / runtime_cache.LAST_USED, (used, used))
    return entry


def names(cache: Path) -> set[str]:
    return {p.name for p in runtime_cache.entries(cache)}


def test_least_recently_used_entries_go_first(tmp_path):
    now = time.time()
    for i, name in enumerate("abcd"):  # a oldest, d newest; 1 MB each (+ the xml)
        fake_entry(tmp_path, name, MB, now - 100 + 10 * i)
    removed = runtime_cache.prune(tmp_path, limit=int(2.5 * MB))
    assert [p.name for p in removed] == ["a", "b"] and names(tmp_path) == {"c", "d"}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing half-removed


def test_a_use_makes_an_entry_recent(tmp_path):
    now = time.time()
    old, _ = fake_entry(tmp_path, "old", MB, now - 100), fake_entry(tmp_path, "mid", MB, now - 50)
    with runtime_cache.using(old):
        pass
    runtime_cache.prune(tmp_path, limit=int(1.5 * MB))
    assert names(tmp_path) == {"old"}


def test_kept_entry_and_entries_in_use_by_live_processes_stay(tmp_path):
    now = time.time()
    busy = fake_entry(tmp_path, "busy", MB, now - 100)
    fake_entry(tmp_path, "idle", MB, now - 90)
    new = fake_entry(tmp_path, "new", MB, now - 200)  # written just now by the caller
    with runtime_cache.using(busy):
        os.utime(busy / runtime_cache.LAST_USED, (now - 100, now - 100))
        runtime_cache.prune(tmp_path, keep=new, limit=0)
        assert names(tmp_path) == {"busy", "new"}
    # A process that died while reading leaves its marker: the entry is no longer protected.
    dead = fake_entry(tmp_path, "dead", MB, now - 300)
    code = (
        "import sys; from pathlib import Path\n"
        "from napari_flow_features.io._atomic import temp_sibling\n"
        "temp_sibling(Path(sys.argv[1]) / 'in-use').touch()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(dead)], check=True)
    assert runtime_cache.in_use(dead) is False
    runtime_cache.prune(tmp_path, limit=int(1.5 * MB))
    assert "dead" not in names(tmp_path)


def test_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(runtime_cache.CAP_ENV, raising=False)
    assert runtime_cache.cap_bytes() == 512 * MB
    monkeypatch.setenv(runtime_cache.CAP_ENV, "64")
    assert runtime_cache.cap_bytes() == 64 * MB
    for bad in ("-1", "lots", "1.5"):
        monkeypatch.setenv(runtime_cache.CAP_ENV, bad)
        with pytest.raises(BadInputError, match=runtime_cache.CAP_ENV):
            runtime_cache.cap_bytes()


def test_encoder_cache_stays_under_the_cap_and_runs_after_its_entry_is_removed(
    tmp_path, monkeypatch
):
    pytest.importorskip("openvino")
    import keras

    from napari_flow_features.model.i3d import build_i3d

    keras.utils.set_random_seed(4)
    model = build_i3d(2, "Mixed_3b")
    x1, x2 = np.ones((1, 8, 32, 32, 2), np.float32), np.ones((1, 8, 40, 32, 2), np.float32)
    encoder = runtime.OpenVINOEncoder(model, cache_dir=tmp_path)
    first = encoder(x1)
    (entry,) = runtime_cache.entries(tmp_path)
    size = runtime_cache.folder_bytes(entry)
    monkeypatch.setenv(runtime_cache.CAP_ENV, str(int(1.5 * size / MB) + 1))
    assert 1.5 * size < runtime_cache.cap_bytes() < 2 * size  # room for one entry only
    encoder(x2)  # a second shape: a second entry, the first one out
    assert [p.name for p in runtime_cache.entries(tmp_path)] != [entry.name]
    assert len(runtime_cache.entries(tmp_path)) == 1 and not entry.exists()
    # The compiled model no longer needs its files (OpenVINO mapped the .bin while reading).
    np.testing.assert_array_equal(encoder(x1), first)
    assert runtime_cache.folder_bytes(tmp_path) <= runtime_cache.cap_bytes()
