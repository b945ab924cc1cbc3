"""Release shape: one version, declared dependencies that are used (and used ones declared), the
changelog's form, the napari hub metadata and the sdist's file list. The build, the fresh-venv
install and `npe2 validate` run in `make release-check` (tests/release/check_release.py)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "napari_flow_features"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Import name of each dependency whose distribution name differs from what the code imports.
IMPORT_NAMES = {
    "opencv-python-headless": "cv2",
    "scikit-image": "skimage",
    "scikit-learn": "sklearn",
    "pyyaml": "yaml",
    "lazy-loader": "lazy_loader",
}
# Imported in src but installed by a declared dependency or an extra (not declared themselves).
COMES_WITH = {
    "keras": "tensorflow",  # TensorFlow >= 2.16 installs Keras 3, its tf.keras
    "napari_builtins": "napari",
    "movement": "the [poses] extra",
    "h5py": "the [poses] extra (movement); only imported when present",
    "loguru": "the [poses] extra (movement); only imported when present",
    "psutil": "optional: only asked where /proc is missing",
    "nncf": "the [int8] extra; only imported for precision int8",
}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _third_party_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "napari_flow_features":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_version_lives_in_one_place():
    import napari_flow_features

    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/napari_flow_features/__init__.py"
    text = (SRC / "__init__.py").read_text()
    (written,) = re.findall(r"^__version__ = \"([^\"]+)\"$", text, re.MULTILINE)
    assert napari_flow_features.__version__ == written
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", written)


def test_every_dependency_is_imported_and_every_import_declared():
    imports = _third_party_imports()
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    unused = []
    for dist in sorted(declared):
        module = IMPORT_NAMES.get(dist, dist.replace("-", "_"))
        if module == "lazy_loader" and not (SRC / "__init__.pyi").exists():
            continue  # the lazy public API (__init__.py + __init__.pyi) lands beside this change
        if module not in imports:
            unused.append(dist)
    assert not unused, f"declared but imported nowhere in src: {unused}"
    import_of = {IMPORT_NAMES.get(d, d.replace("-", "_")): d for d in declared}
    undeclared = {m: sorted(f) for m, f in imports.items() if m not in import_of}
    assert set(undeclared) <= set(COMES_WITH), f"imported but not declared: {undeclared}"


def test_extras_name_what_they_install():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {_name(r) for r in extras["docs"]} >= {
        "mkdocs",
        "mkdocs-material",
        "mkdocstrings",
        "mkdocs-gen-files",
        "mkdocs-literate-nav",
    }
    testing = {_name(r) for r in extras["testing"]}
    assert {"build", "hatchling", "pytest", "mypy"} <= testing
    assert "napari-flow-features" in testing  # the docs extra, through the package itself


def test_changelog_follows_keep_a_changelog():
    import napari_flow_features

    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (Unreleased|\d{4}-\d{2}-\d{2})$", text, re.M)
    assert releases, "no '## [X.Y.Z] - YYYY-MM-DD' or '- Unreleased' headings"
    assert len(releases) == len(re.findall(r"^## ", text, re.M)), "a release heading is malformed"
    versions = [tuple(int(p) for p in v.split(".")) for v, _ in releases]
    assert versions == sorted(versions, reverse=True), "newest first"
    current = tuple(int(p) for p in napari_flow_features.__version__.split(".")[:3])
    top, status = versions[0], releases[0][1]
    # The top section is the current version, or the next one while it is still unreleased.
    assert top == current or (top > current and status == "Unreleased")
    assert all(status != "Unreleased" for _, status in releases[1:])
    allowed = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert set(re.findall(r"^### (.+)$", text, re.M)) <= allowed


def test_napari_hub_metadata_follows_the_hub_format():
    config = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text())
    known = {"visibility", "summary", "authors", "labels", "project_urls", "project_site"}
    assert set(config) <= known, set(config) - known
    assert config.get("visibility", "public") in {"public", "disabled", "hidden"}
    summary = config["summary"]
    assert isinstance(summary, str) and "\n" not in summary.strip() and len(summary) < 300
    for author in config.get("authors", []):
        assert set(author) <= {"name", "orcid"} and author["name"].strip()
    description = (ROOT / ".napari-hub" / "DESCRIPTION.md").read_text()
    assert description.startswith("# ")
    headings = re.findall(r"^## (.+)$", description, re.M)
    assert "Getting started" in headings
    # The hub renders the file outside the repository: no relative links or images.
    assert not re.findall(r"\]\((?!https?://)[^)]+\)", description)
    # Menu paths it names exist in the manifest (display name and the widgets' names).
    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert f"({manifest['display_name']})" in description
    widget_names = {w["display_name"] for w in manifest["contributions"]["widgets"]}
    for name in re.findall(r"Plugins ▸ Flow Features ▸ ([^`]+)`", description):
        assert name in widget_names, name


@pytest.mark.parametrize(
    "entry", PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
)
def test_sdist_includes_exist(entry):
    assert (ROOT / entry.lstrip("/")).exists(), entry
