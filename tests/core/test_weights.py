"""flow-features weights fetch, against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from napari_flow_features.cli import main
from napari_flow_features.errors import BadInputError
from napari_flow_features.model import weights
from napari_flow_features.model.checkpoint import load_deepmind_checkpoint
from napari_flow_features.model.i3d import build_i3d
from napari_flow_features.model.weights import FILES, cache_dir, fetch_checkpoint, published_shapes

DATA = FILES[2]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under ``/cut/`` the data file stops halfway (the connection closes),
    under ``/stall/`` it stops halfway and hangs until released, under ``/flaky/`` the data file's
    first request is a 503."""

    requests: list[str]
    stalled: threading.Event
    release: threading.Event
    failed_once: set[str]

    def do_GET(self):
        self.requests.append(self.path)
        mode, _, rest = self.path.lstrip("/").partition("/")
        if mode in ("cut", "stall") and rest.endswith(DATA):
            data = (Path(self.directory) / rest).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if mode == "stall":
                self.stalled.set()
                self.release.wait(timeout=30)
            self.close_connection = True
            return
        if mode in ("cut", "stall", "flaky"):
            if mode == "flaky" and rest.endswith(DATA) and rest not in self.failed_once:
                self.failed_once.add(rest)
                self.send_error(503, "Try again")
                return
            self.path = "/" + rest
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serves <root>/flow_imagenet/{checkpoint, index, data}: a generated checkpoint with the
    published names and shapes."""
    from test_i3d import write_checkpoint

    root = tmp_path_factory.mktemp("served")
    folder = root / "flow_imagenet"
    folder.mkdir()
    values = write_checkpoint(folder / "model.ckpt", published_shapes("flow_imagenet"), seed=5)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    requests: list[str] = []
    stalled, release = threading.Event(), threading.Event()
    handler = type(
        "H",
        (_Handler,),
        {"requests": requests, "stalled": stalled, "release": release, "failed_once": set()},
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", root, values, requests, (stalled, release)
    release.set()
    httpd.shutdown()


def test_fetch_verifies_and_loads(server, tmp_path):
    url, _, values, requests, _ = server
    seen = []
    prefix = fetch_checkpoint(
        "flow_imagenet",
        tmp_path / "w",
        base_url=url,
        progress=lambda f, d, t: seen.append((f, d, t)),
    )
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(FILES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging removed
    assert {f for f, _, _ in seen} == set(FILES) and all(t is not None for _, _, t in seen)
    model = build_i3d(2, "Conv3d_1a_7x7")
    load_deepmind_checkpoint(model, prefix)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("Conv3d_1a_7x7.conv_3d").kernel),
        values["Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"],
    )
    count = len(requests)
    fetch_checkpoint("flow_imagenet", tmp_path / "w", base_url=url)  # verified copy: no download
    assert len(requests) == count


def test_cache_folder_follows_the_environment(server, tmp_path, monkeypatch):
    url, *_ = server
    monkeypatch.setenv("NAPARI_FLOW_FEATURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_FLOW_FEATURES_WEIGHTS_URL", url)
    assert cache_dir() == tmp_path / "cache" / "checkpoints"
    prefix = fetch_checkpoint("flow_imagenet")
    assert prefix == tmp_path / "cache" / "checkpoints" / "flow_imagenet" / "model.ckpt"


def test_corrupt_download_leaves_nothing(server, tmp_path):
    url, root, *_ = server
    bad = root / "bad"
    (bad / "flow_imagenet").mkdir(parents=True)
    for f in FILES:
        (bad / "flow_imagenet" / f).write_bytes((root / "flow_imagenet" / f).read_bytes())
    data = bad / "flow_imagenet" / FILES[2]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside a tensor
    data.write_bytes(bytes(raw))
    with pytest.raises(BadInputError, match="corrupt"):
        fetch_checkpoint("flow_imagenet", tmp_path / "w", base_url=f"{url}/bad")
    assert list(tmp_path.iterdir()) == []


def test_wrong_checkpoint_and_http_errors(server, tmp_path):
    url, root, _, requests, _ = server
    count = len(requests)
    with pytest.raises(BadInputError, match="HTTP 404"):
        fetch_checkpoint("rgb_imagenet", tmp_path / "w", base_url=url)
    assert len(requests) == count + 1  # a 404 is not tried again
    (root / "wrong").mkdir()
    (root / "wrong" / "rgb_imagenet").symlink_to(root / "flow_imagenet")  # flow served as RGB
    with pytest.raises(BadInputError, match="does not match the published variables"):
        fetch_checkpoint("rgb_imagenet", tmp_path / "w", base_url=f"{url}/wrong")
    with pytest.raises(BadInputError, match="Unknown checkpoint"):
        fetch_checkpoint("flow_best", tmp_path / "w", base_url=url)
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch(server, tmp_path, capsys):
    url, *_ = server
    assert (
        main(["weights", "fetch", "flow_imagenet", "--dest", str(tmp_path / "w"), "--url", url])
        == 0
    )
    assert "verified checkpoint" in capsys.readouterr().out
    assert main(["weights", "fetch", "flow_imagenet", "--dest", str(tmp_path / "x"),
                 "--url", "http://127.0.0.1:9/none"]) == 2  # fmt: skip
    assert "Download failed" in capsys.readouterr().err


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hidden(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_known_hashes_are_checked_and_a_wrong_one_leaves_nothing(server, tmp_path):
    url, root, _, requests, _ = server
    served = root / "flow_imagenet"
    count = len(requests)
    with pytest.raises(
        BadInputError, match=f"Downloaded {DATA} of flow_imagenet is not the expected"
    ):
        fetch_checkpoint(
            "flow_imagenet", tmp_path / "w", base_url=url, retries=1,
            known_hashes={DATA: "sha256:" + "0" * 64},
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no cache folder, no staging, no temporary
    assert [r for r in requests[count:] if r.endswith(DATA)] == [f"/flow_imagenet/{DATA}"] * 2
    right = {f: _sha256(served / f) for f in FILES}
    prefix = fetch_checkpoint("flow_imagenet", tmp_path / "w", base_url=url, known_hashes=right)
    assert {_sha256(prefix.parent / f) for f in FILES} == set(right.values())
    assert _hidden(tmp_path) == []


def test_deepmind_source_is_held_to_the_published_hashes(server, tmp_path, monkeypatch):
    """From DeepMind's URL the published SHA-256 apply: a file that differs is refused."""
    url, *_ = server
    monkeypatch.setattr(weights, "DEFAULT_BASE_URL", url)  # the local server stands in for it
    monkeypatch.delenv(weights.URL_ENV)
    with pytest.raises(BadInputError, match="Downloaded checkpoint of flow_imagenet is not the"):
        fetch_checkpoint("flow_imagenet", tmp_path / "w", retries=0)
    assert list(tmp_path.iterdir()) == []


def test_published_hashes_describe_the_shipped_indexes():
    for name in weights.CHECKPOINTS:
        assert weights.PUBLISHED_SHA256[name]["model.ckpt.index"] == (
            weights.published_index_sha256(name)
        )
        assert len(weights.PUBLISHED_DATA_GIT_BLOB[name]) == 40


def test_git_blob_ids_equal_gits(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert weights.git_blob_sha1(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert weights.git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_interrupted_download_leaves_no_partial_file(server, tmp_path):
    url, *_ = server
    with pytest.raises(BadInputError, match="Download failed"):
        fetch_checkpoint("flow_imagenet", tmp_path / "w", base_url=f"{url}/cut", retries=0)
    assert list(tmp_path.iterdir()) == []


def test_a_server_error_is_tried_again(server, tmp_path):
    url, _, _, requests, _ = server
    count = len(requests)
    prefix = fetch_checkpoint("flow_imagenet", tmp_path / "w", base_url=f"{url}/flaky", retries=1)
    assert prefix.with_suffix(".ckpt.index").is_file()
    assert [r for r in requests[count:] if r.endswith(DATA)] == [f"/flaky/flow_imagenet/{DATA}"] * 2


def test_a_killed_download_leaves_nothing_at_the_final_path(server, tmp_path):
    """SIGKILL halfway through the data file: the final folder never appears, and the next fetch
    removes the dead run's staging folder."""
    url, _, _, _, (stalled, release) = server
    dest = tmp_path / "w"
    code = (
        "from napari_flow_features.model.weights import fetch_checkpoint\n"
        f"fetch_checkpoint('flow_imagenet', {str(dest)!r}, base_url={url + '/stall'!r}, retries=0)"
    )
    stalled.clear()
    release.clear()
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    try:
        assert stalled.wait(timeout=60), "the child never reached the data file"
        deadline = time.monotonic() + 20
        while not any(p.stat().st_size for p in tmp_path.glob(".*/*")):
            assert time.monotonic() < deadline, "no bytes of the data file reached the disk"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
        release.set()
    assert not dest.exists()
    assert len(_hidden(tmp_path)) == 1  # the dead run's staging folder, hidden
    fetch_checkpoint("flow_imagenet", dest, base_url=url)
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    assert _hidden(tmp_path) == []


def test_cache_defaults_to_platformdirs_user_cache(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("NAPARI_FLOW_FEATURES_CACHE")
    expected = Path(platformdirs.user_cache_dir("napari-flow-features", appauthor=False))
    assert cache_dir() == expected / "checkpoints"
    if sys.platform.startswith("linux"):  # the layout of caches made before platformdirs
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert cache_dir() == tmp_path / "napari-flow-features" / "checkpoints"


@pytest.fixture
def pretrained_default(monkeypatch, tmp_path):
    """The shipped default (pretrained weights), with the cache in a fresh folder."""
    monkeypatch.delenv("NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS")
    monkeypatch.setenv("NAPARI_FLOW_FEATURES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checkpoints"


def test_pretrained_weights_by_default_fetched_once(server, pretrained_default, monkeypatch, capfd):
    from napari_flow_features.model.extractor import DynamicFeatureExtractor, default_config

    url, _, values, requests, _ = server
    monkeypatch.setenv("NAPARI_FLOW_FEATURES_WEIGHTS_URL", url)
    assert default_config()["weights"]["source"] == "pretrained"
    count = len(requests)
    ext = DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", runtime="tensorflow")
    assert len(requests) == count + 3  # the three files, on first use
    assert "downloading model.ckpt.data-00000-of-00001" in capfd.readouterr().err  # progress bar
    np.testing.assert_array_equal(
        np.asarray(ext.model.get_layer("Conv3d_1a_7x7.conv_3d").kernel),
        values["Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"],
    )
    meta = ext.describe()
    assert meta["loaded_model"]["source"] == "deepmind"
    assert meta["loaded_model"]["pretrained"] == "flow_imagenet"
    assert meta["quantize_effective"] and "random_weights" not in meta
    assert (pretrained_default / "flow_imagenet" / "model.ckpt.index").is_file()
    DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", runtime="tensorflow")
    assert len(requests) == count + 3  # cached and verified: no second download


def test_offline_without_a_cached_copy_says_what_to_do(pretrained_default, monkeypatch, capsys):
    from napari_flow_features.demo import demo_extractor as _demo_extractor
    from napari_flow_features.model.extractor import DynamicFeatureExtractor
    from napari_flow_features.model.weights import WeightsUnavailableError

    monkeypatch.setenv("NAPARI_FLOW_FEATURES_WEIGHTS_URL", "http://127.0.0.1:9/offline")
    with pytest.raises(WeightsUnavailableError) as info:
        DynamicFeatureExtractor(endpoint="Conv3d_1a_7x7", stream="rgb")
    text = str(info.value)
    assert "pretrained rgb_imagenet weights are not in the cache" in text
    assert "flow-features weights fetch rgb_imagenet --dest DIR" in text
    assert "--checkpoint DIR/model.ckpt" in text and "--weights random" in text
    assert not pretrained_default.exists() or not any(pretrained_default.rglob("*.ckpt*"))
    # The demo goes on with random weights, says so in one line, and marks its outputs.
    extractor, note = _demo_extractor()
    assert note.startswith("Pretrained weights unavailable") and "\n" not in note
    assert "RANDOM weights" in note
    meta = extractor.describe()
    assert meta["random_weights"] and meta["weights_note"].startswith("RANDOM WEIGHTS")
    # The CLI: an offline default is a clear error (exit 2) naming the way out.
    from conftest import moving_pattern

    from napari_flow_features.io.video import write_video

    video = pretrained_default.parent / "v.mp4"
    write_video(video, moving_pattern(16, 32, 32), fps=25)
    capsys.readouterr()
    assert main(["extract", str(video), "-o", str(pretrained_default.parent / "f.csv")]) == 2
    err = capsys.readouterr().err
    assert (
        "weights fetch flow_imagenet" in err and not (pretrained_default.parent / "f.csv").exists()
    )


def test_random_weights_are_marked_in_tables_and_figure_names(tmp_path, capsys):
    from conftest import moving_pattern

    from napari_flow_features.analysis.figures import marked_layer_name
    from napari_flow_features.io.tables import read_table
    from napari_flow_features.io.video import write_video

    video = tmp_path / "v.mp4"
    write_video(video, moving_pattern(16, 32, 32), fps=25)
    out = tmp_path / "f.parquet"
    assert main(["extract", str(video), "--weights", "random", "--endpoint", "Conv3d_1a_7x7",
                 "--runtime", "tensorflow", "-o", str(out)]) == 0  # fmt: skip
    assert "WARNING: RANDOM WEIGHTS" in capsys.readouterr().err
    attrs = read_table(out).attrs
    assert attrs["random_weights"] and attrs["weights"]["source"] == "random"
    assert marked_layer_name("Mixed_5c", attrs) == "Mixed_5c [RANDOM WEIGHTS]"
