"""The package's public face: lazy names from ``__init__.pyi``, a light import, the seed's calls."""

from __future__ import annotations

import ast
import importlib
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_flow_features as nff
from napari_flow_features.errors import BadInputError
from napari_flow_features.io.flow_files import write_flo

PACKAGE = Path(nff.__file__).parent
STUB = PACKAGE / "__init__.pyi"

#: The import budget of issue 15 (median of several fresh interpreters).
IMPORT_BUDGET_S = 0.100
#: Never imported by ``import napari_flow_features`` (TensorFlow and Qt must stay out of napari's
#: process until needed; OpenCV and PyAV load only when video or flow work starts).
HEAVY = ("tensorflow", "keras", "napari", "cv2", "av", "qtpy", "PyQt6", "PyQt5", "matplotlib")

#: The seed document's objects and what issue 15 names: all must be public.
SEED_NAMES = {
    "DynamicFeatureExtractor",
    "OpticalFlowComputer",
    "OpticalFlowSequenceLoader",
    "FeatureVisualization",
    "ModelSerializer",
    "FeatureExtractorEvaluator",
    "extract_features",
    "extract_frame",
    "extract_many",
    "gap",
    "sample_point",
    "preprocess_flow",
    "read_tracks",
    "open_video",
    "read_flow",
    "read_table",
    "write_table",
}


def stub_imports() -> dict[str, str]:
    """name → submodule, from the stub's ``from .sub.module import name`` lines."""
    tree = ast.parse(STUB.read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 1 and node.module, "the stub imports only from inside the package"
            for alias in node.names:
                assert alias.asname is None, "lazy_loader cannot rename"
                found[alias.name] = node.module
    return found


def stub_all() -> list[str]:
    """The literal ``__all__`` of the stub (what type checkers see)."""
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("the stub has no __all__")


# -- the names ---------------------------------------------------------------------------------


def test_all_matches_the_stub():
    imported = stub_imports()
    assert sorted(stub_all()) == sorted([*imported, "__version__"])
    assert len(stub_all()) == len(set(stub_all())), "a name is listed twice"
    assert sorted(nff.__all__) == sorted(stub_all())
    assert SEED_NAMES <= set(nff.__all__)
    assert set(nff.__all__) <= set(dir(nff))


@pytest.mark.parametrize("name", sorted(stub_imports()))
def test_each_public_name_is_the_object_of_its_module(name):
    module = importlib.import_module(f"napari_flow_features.{stub_imports()[name]}")
    public = getattr(nff, name)
    assert public is getattr(module, name)
    assert public.__module__ == module.__name__, "the stub must name where the object is defined"
    assert public.__doc__, f"{name} has no docstring"


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        nff.no_such_thing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from napari_flow_features import no_such_thing", {})
    namespace: dict = {}
    exec("from napari_flow_features import DynamicFeatureExtractor, gap", namespace)
    assert (
        namespace["gap"]
        is importlib.import_module("napari_flow_features.extract.post_encoders").gap
    )


def test_version_is_where_hatch_reads_it():
    """hatch's default pattern on ``__init__.py`` (``[tool.hatch.version]``) finds the version."""
    text = (PACKAGE / "__init__.py").read_text()
    match = re.search(r"""(?im)^(__version__|VERSION) *= *(['"])v?(?P<version>.+?)\2""", text)
    assert match and match.group("version") == nff.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev|\.post)?\d*", nff.__version__)


# -- the import budget -------------------------------------------------------------------------

_IMPORT_PROBE = """
import json, sys, time
before = set(sys.modules)
t0 = time.perf_counter()
import napari_flow_features
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "new": sorted(set(sys.modules) - before)}))
"""


def _fresh_import() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_import_is_fast_and_light():
    """Median of 7 fresh interpreters under 100 ms; no heavy library among the modules loaded."""
    runs = [_fresh_import() for _ in range(7)]
    median = statistics.median(r["seconds"] for r in runs)
    assert median < IMPORT_BUDGET_S, f"import napari_flow_features took {median * 1000:.0f} ms"
    loaded = {name.split(".")[0] for r in runs for name in r["new"]}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    # Nothing of ours beyond the package itself: every public name is lazy.
    ours = {name for r in runs for name in r["new"] if name.startswith("napari_flow_features.")}
    assert not ours, sorted(ours)
    assert "numpy" not in loaded and "pandas" not in loaded


def test_import_time_from_python_x_importtime():
    """Python's own accounting (``-X importtime``) agrees: the package's cumulative time is small."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import napari_flow_features"],
        capture_output=True,
        text=True,
        check=True,
    )
    cumulative = {}
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            cumulative[parts[2]] = int(parts[1])  # microseconds
    assert cumulative["napari_flow_features"] < IMPORT_BUDGET_S * 1e6
    assert not {name.split(".")[0] for name in cumulative} & set(HEAVY)


def test_a_public_name_loads_only_its_own_modules():
    """Touching the flow loader imports NumPy and its module, still no OpenCV or TensorFlow."""
    code = (
        "import sys, napari_flow_features as nff\n"
        "nff.OpticalFlowSequenceLoader, nff.preprocess_flow, nff.open_video, nff.ModelSerializer\n"
        "nff.DynamicFeatureExtractor\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'cv2', 'av', 'napari') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the seed's OpticalFlowSequenceLoader(...).create_sequence_batch(files, batch_size=8) --------


def _flow(n_fields: int, height: int = 6, width: int = 8) -> np.ndarray:
    """Flow whose dx names its field (0.25 px per field index) and dy its column; one value that
    clipping must bound (field 0, pixel (0, 0): dy = 30 px).
    """
    flow = np.empty((n_fields, height, width, 2), np.float32)
    flow[..., 0] = 0.25 * np.arange(n_fields)[:, None, None]
    flow[..., 1] = -0.5 * np.arange(width)[None, None, :]
    flow[0, 0, 0, 1] = 30.0
    return flow


def _expected(raw: np.ndarray, fields: list[int]) -> np.ndarray:
    """The window made of those fields, preprocessed by hand: clip to ±20 px, divide by 20."""
    return np.clip(raw[fields], -20, 20) / 20


@pytest.fixture
def flow_dir(tmp_path):
    """a.npy: a 56-frame video (55 fields); b/: an 11-frame one as .flo files; c.npz: 20 frames."""
    a, b, c = _flow(55), _flow(10), _flow(19)
    np.save(tmp_path / "a.npy", a)
    (tmp_path / "b").mkdir()
    for i, field in enumerate(b):
        write_flo(tmp_path / "b" / f"{i:03d}.flo", field)
    np.savez(tmp_path / "c.npz", flow=c)
    return tmp_path, {"a.npy": a, "b": b, "c.npz": c}


def test_create_sequence_batch_is_the_seeds_method(flow_dir):
    folder, raw = flow_dir
    loader = nff.OpticalFlowSequenceLoader(folder, sequence_length=16, stride=8)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["a.npy", "b", "c.npz"]
    batch = loader.create_sequence_batch(files, batch_size=8)
    assert batch.shape == (8, 16, 6, 8, 2) and batch.dtype == np.float32
    # DESIGN.md: windows of 16 at stride 8 over frame-aligned flow, the last aligned to the end; the
    # frame without flow of its own (the last) and a short video's missing frames repeat the last
    # field. a (56 frames): starts 0, 8, …, 40; b (11 frames): one window, padded; then c's first.
    a_windows = [list(range(s, s + 16)) for s in (0, 8, 16, 24, 32)]
    a_last = [*range(40, 55), 54]
    b_window = [*range(10), *[9] * 6]
    expected = np.stack(
        [_expected(raw["a.npy"], w) for w in [*a_windows, a_last]]
        + [_expected(raw["b"], b_window), _expected(raw["c.npz"], list(range(16)))]
    )
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-7)
    assert batch[0, 0, 0, 0, 1] == 1.0  # 30 px clipped to the bound

    # Absolute paths too; a batch larger than the windows gives them all (c: starts 0 and 4).
    whole = loader.create_sequence_batch([folder / "c.npz"], batch_size=8)
    c_windows = [list(range(16)), [*range(4, 19), 18]]
    np.testing.assert_allclose(whole, np.stack([_expected(raw["c.npz"], w) for w in c_windows]))
    # No files: all of the loader's; the function form gives the same batch.
    np.testing.assert_array_equal(loader.create_sequence_batch(batch_size=8), batch)
    same = nff.create_sequence_batch([folder / f for f in files], 8, sequence_length=16, stride=8)
    np.testing.assert_array_equal(same, batch)


def test_create_sequence_batch_with_the_loaders_preprocessing(flow_dir):
    folder, raw = flow_dir
    quantised = nff.OpticalFlowSequenceLoader(folder, 16, 8, quantize=True)
    batch = quantised.create_sequence_batch(["a.npy"], batch_size=1)
    levels = np.round((np.clip(raw["a.npy"][:16], -20, 20) + 20) / 40 * 255) / 255 * 2 - 1
    np.testing.assert_allclose(batch[0], levels, atol=1e-6)
    plain = nff.OpticalFlowSequenceLoader(folder, 16, 8, preprocess=False)
    np.testing.assert_array_equal(plain.create_sequence_batch("a.npy", 1)[0], raw["a.npy"][:16])


def test_create_sequence_batch_errors_name_the_problem(flow_dir, tmp_path_factory):
    folder, _ = flow_dir
    loader = nff.OpticalFlowSequenceLoader(folder, 16, 8)
    with pytest.raises(BadInputError, match=r"not found.*missing\.npy"):
        loader.create_sequence_batch(["missing.npy"])
    with pytest.raises(BadInputError, match="batch_size must be at least 1"):
        loader.create_sequence_batch(["a.npy"], batch_size=0)
    with pytest.raises(BadInputError, match="No flow files given"):
        loader.create_sequence_batch([])
    other = tmp_path_factory.mktemp("other")
    np.save(other / "wide.npy", _flow(20, width=9))
    with pytest.raises(BadInputError, match="different sizes"):
        loader.create_sequence_batch(["a.npy", other / "wide.npy"], batch_size=8)
