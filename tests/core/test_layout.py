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
