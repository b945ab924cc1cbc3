"""The package's layering rules, read from the source (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "napari_flow_features"
QT = (
    "qtpy",
    "magicgui",
    "superqt",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "napari.qt",
    "napari._qt",
)
HEAVY = ("tensorflow", "keras")


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute module names a file imports (everywhere, or at module level only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def uses(names: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


def test_qt_lives_only_under_napari_qt():
    """Qt, magicgui and superqt are imported only by the dock widgets in ``napari/_qt/``; the
    conversion of results into layers and everything else is Qt-free (tested without a window)."""
    files = sorted(PACKAGE.rglob("*.py"))
    qt_dir = PACKAGE / "napari" / "_qt"
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(uses(imports(f), QT))
        for f in files
        if qt_dir not in f.parents and uses(imports(f), QT)
    }
    assert offenders == {}
    assert any(uses(imports(f), QT) for f in qt_dir.glob("*.py"))  # the scan does find Qt


def test_napari_side_never_imports_tensorflow_at_module_level():
    napari_files = sorted((PACKAGE / "napari").rglob("*.py"))
    assert napari_files
    offenders = [str(f) for f in napari_files if uses(imports(f, top_level_only=True), HEAVY)]
    assert offenders == []


def package_imports(path: Path) -> set[str]:
    """This package's modules a file imports anywhere in it, relative imports resolved."""
    parts = ("napari_flow_features", *path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from (also for __init__.py)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from .. import x`
    return {n for n in found if n.split(".")[0] == "napari_flow_features"}


#: What ``io/`` may never import: every layer above it (docs/architecture.md).
ABOVE_IO = tuple(
    f"napari_flow_features.{name}"
    for name in ("flow", "model", "config", "extract", "analysis", "napari", "cli")
)


def test_package_imports_resolves_relative_imports():
    """The scan sees a relative import for what it is (else the rule below could not fail)."""
    found = package_imports(PACKAGE / "model" / "weights.py")
    assert "napari_flow_features.io._atomic" in found
    assert "napari_flow_features._cache_dirs" in found  # `from .. import _cache_dirs`
    assert "napari_flow_features.errors" in found


def test_io_never_imports_the_layers_above_it():
    """Reading a video or a table loads no model, flow, pipeline or napari code: ``io/`` imports
    only the standard library, third-party readers and the package's low modules
    (``errors``, ``_cache_dirs``)."""
    files = sorted((PACKAGE / "io").rglob("*.py"))
    assert len(files) > 5
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(uses(package_imports(f), ABOVE_IO))
        for f in files
        if uses(package_imports(f), ABOVE_IO)
    }
    assert offenders == {}


def test_reading_a_video_loads_no_model_code(tmp_path):
    """A process that opens a video and seeks in it (building the seek index in the cache) has
    imported no ``napari_flow_features.model`` module."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from napari_flow_features.io.video import VideoArray, write_video\n"
        "frames = np.random.default_rng(3).integers(0, 255, (120, 32, 48), dtype=np.uint8)\n"
        "video = VideoArray(write_video(sys.argv[1], frames, bframes=2, gop=12))\n"
        "video[110]\n"
        "assert video.index_from_cache is False\n"
        "print(sorted(m for m in sys.modules if m.startswith('napari_flow_features.model')))\n"
    )
    env = {**os.environ, "NAPARI_FLOW_FEATURES_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.mp4")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert list((tmp_path / "cache" / "video-index").glob("*.npz"))  # the index went to the cache
