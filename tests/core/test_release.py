"""Release shape: one version, declared dependencies that are used (and used ones declared), the
changelog's form, the napari hub metadata and the sdist's file list. The build, the fresh-venv
install and `npe2 validate` run in `make release-check` (tests/release/check_release.py)."""

from __future__ import annotations

import ast
import hashlib
import os
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
    "dask": "distributed",  # dask.config for the LocalCluster's scratch folder; same release
    "movement": "the [poses] extra",
    "h5py": "the [poses] extra (movement); only imported when present",
    "loguru": "the [poses] extra (movement); only imported when present",
    "sleap_io": "the [poses] extra (.slp projects; movement installs it too)",
    "psutil": "optional: only asked where /proc is missing",
    "umap": "the [umap] extra (umap-learn); only imported for --method umap",
    "torch": "the [gpu] extra (runtime torch); only imported when asked for or a GPU is visible",
    "nncf": "the [int8] extra; only imported for precision int8",
    "dask_cuda": "the [gpu] extra (dask-cuda); only imported where an NVIDIA driver is present",
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


# -- the release route: workflow, conda-forge recipe, local index (tests/release/) -------------

sys.path.insert(0, str(ROOT / "tests" / "release"))
import check_release  # noqa: E402 (from tests/release, put on the path just above)
import release_files  # noqa: E402

WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
RECIPE = yaml.safe_load((ROOT / "packaging" / "conda-forge" / "recipe.yaml").read_text())


def test_release_workflow_builds_checks_and_publishes_on_a_tag():
    assert release_files.workflow_problems(WORKFLOW) == []
    # What the checker accepts, read here directly: on `v*` tags, PyPI's trusted publishing.
    assert WORKFLOW[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads `on` as True
    publish = WORKFLOW["jobs"]["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    steps = [s.get("uses", "").split("@")[0] for s in publish["steps"]]
    assert "pypa/gh-action-pypi-publish" in steps
    build_runs = " ".join(s.get("run", "") for s in WORKFLOW["jobs"]["build"]["steps"])
    assert "tests/release/check_release.py --dist dist --no-install --tag" in build_runs
    assert "twine check --strict dist/*" in build_runs


def _broken(change):
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    change(doc)
    return " | ".join(release_files.workflow_problems(doc))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.__setitem__(True, {"push": {"branches": ["main"]}}), "tags only"),
        (lambda d: d[True].__setitem__("pull_request", {}), "pushed tag only"),
        (lambda d: d[True]["push"].__setitem__("tags", ["*"]), "must start with 'v'"),
        (lambda d: d["jobs"]["publish"].pop("permissions"), "lacks 'permissions: id-token"),
        (lambda d: d.__setitem__("permissions", {"id-token": "write"}), "top level"),
        (lambda d: d["jobs"]["build"].__setitem__("permissions", {"id-token": "write"}), "without"),
        (lambda d: d["jobs"]["publish"].pop("environment"), "not 'pypi'"),
        (lambda d: d["jobs"]["publish"].__setitem__("needs", ["test"]), "does not need the build"),
        (
            lambda d: d["jobs"]["publish"]["steps"][-1]["with"].__setitem__("password", "x"),
            "trusted publishing needs none",
        ),
        (
            lambda d: d["jobs"]["publish"]["steps"][0]["with"].__setitem__("name", "other"),
            "does not download the artifact",
        ),
        (
            lambda d: d["jobs"]["build"]["steps"][-1]["with"].__setitem__("path", "wheels/"),
            "uploads 'wheels/'",
        ),
        (lambda d: d["jobs"]["build"]["steps"].pop(3), "no job runs tests/release"),
        (lambda d: d["jobs"]["publish"]["steps"].pop(), "0 jobs use"),
        (lambda d: d["jobs"]["test"]["steps"][0].__setitem__("uses", "x/y"), "not pinned"),
    ],
)
def test_release_workflow_checker_names_each_mistake(change, message):
    assert message in _broken(change)


# PyPI -> conda-forge names, written out here (not taken from release_files) so that the recipe is
# checked against an independent reading of pyproject.toml.
PIP_TO_CONDA = {
    "napari": "napari-base",
    "opencv-python-headless": "py-opencv",
    "matplotlib": "matplotlib-base",
    "lazy-loader": "lazy_loader",
}


def test_conda_recipe_requires_what_pyproject_does():
    import napari_flow_features

    context = RECIPE["context"]
    assert context["version"] == napari_flow_features.__version__
    assert context["name"] == PYPROJECT["project"]["name"]
    run = {}
    for entry in RECIPE["requirements"]["run"]:
        name, _, bound = entry.replace("${{ python_min }}", context["python_min"]).partition(" ")
        run[name] = bound.replace(" ", "")
    expected = {"python": PYPROJECT["project"]["requires-python"]}
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, bound = re.fullmatch(r"([A-Za-z0-9._-]+)(.*)", requirement).groups()
        expected[PIP_TO_CONDA.get(_name(name), _name(name))] = bound
    assert run == expected
    assert "pyqt" not in run and "napari" not in run  # the Qt binding is the user's choice
    assert RECIPE["build"]["noarch"] == "python"
    scripts = [f"{k} = {v}" for k, v in PYPROJECT["project"]["scripts"].items()]
    assert RECIPE["build"]["python"]["entry_points"] == scripts
    imports = RECIPE["tests"][0]["python"]["imports"]
    assert "napari_flow_features" in imports
    assert "flow-features --help" in RECIPE["tests"][1]["script"]
    assert RECIPE["about"]["license"] == PYPROJECT["project"]["license"]
    assert release_files.recipe_problems(RECIPE, PYPROJECT["project"], context["version"]) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["requirements"]["run"].remove("tensorflow >=2.16"), "lack tensorflow >=2.16"),
        (lambda r: r["requirements"]["run"].append("pyqt >=5"), "requires pyqt"),
        (
            lambda r: r["requirements"]["run"].__setitem__(
                r["requirements"]["run"].index("numpy >=1.24"), "numpy >=2"
            ),
            "numpy >=2, pyproject",
        ),
        (lambda r: r["context"].__setitem__("version", "9.9.9"), "recipe version '9.9.9'"),
        (lambda r: r["build"].pop("noarch"), "noarch"),
        (lambda r: r["build"]["python"].__setitem__("entry_points", []), "entry points"),
        (lambda r: r["source"].__setitem__("sha256", ""), "no sha256"),
        (lambda r: r["tests"].pop(1), "do not run the console script"),
    ],
)
def test_conda_recipe_checker_names_each_mistake(change, message):
    recipe = yaml.safe_load((ROOT / "packaging" / "conda-forge" / "recipe.yaml").read_text())
    change(recipe)
    import napari_flow_features

    version = napari_flow_features.__version__
    problems = release_files.recipe_problems(recipe, PYPROJECT["project"], version)
    assert any(message in p for p in problems), problems


def test_recipe_sha256_must_be_the_sdists_at_a_release(tmp_path, capsys):
    sdist = tmp_path / "napari_flow_features-1.2.3.tar.gz"
    sdist.write_bytes(b"an sdist")
    digest = hashlib.sha256(b"an sdist").hexdigest()
    recipe = tmp_path / "recipe.yaml"
    recorded = RECIPE["source"]["sha256"]
    text = (ROOT / "packaging" / "conda-forge" / "recipe.yaml").read_text()
    recipe.write_text(
        text.replace(f'version: "{RECIPE["context"]["version"]}"', 'version: "1.2.3"')
    )
    changelog = tmp_path / "CHANGELOG.md"

    def check(top: str, tag: str | None = None) -> list[str]:
        changelog.write_text(f"# Changelog\n\n{top}\n")
        failures = check_release.Failures()
        check_release.check_release_files(sdist, "1.2.3", tag, failures, recipe, changelog)
        return failures

    assert check("## [1.2.3] - Unreleased") == []  # between releases: only told the value
    assert f"sha256 to set at the release: {digest}" in capsys.readouterr().out
    assert check("## [1.2.3] - 2026-12-06") == [
        f"recipe.yaml: sha256 {recorded}, the sdist's is {digest} (a release)"
    ]
    recipe.write_text(recipe.read_text().replace(recorded, digest))
    assert check("## [1.2.3] - 2026-12-06") == []
    assert check("## [1.2.3] - 2026-12-06", tag="v1.2.4") == ["tag 'v1.2.4' is not 'v1.2.3'"]
    assert check("## [1.2.3] - 2026-12-06", tag="v1.2.3") == []


def test_changelog_released_reads_the_top_section(tmp_path):
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text("# Changelog\n\n## [0.2.0] - Unreleased\n\n## [0.1.0] - 2026-01-02\n")
    assert not release_files.changelog_released(changelog, "0.2.0")
    assert not release_files.changelog_released(changelog, "0.1.0")  # not the top one
    changelog.write_text("# Changelog\n\n## [0.2.0] - 2026-12-06\n")
    assert release_files.changelog_released(changelog, "0.2.0")


def _tiny_wheel(folder: Path, version: str) -> Path:
    """A minimal valid wheel of napari-flow-features (metadata only), made by hand."""
    import base64
    import zipfile

    info = f"napari_flow_features-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: napari-flow-features\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"napari_flow_features-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def test_local_index_serves_the_wheel_to_pip_by_name(tmp_path):
    import subprocess

    wheel = _tiny_wheel(tmp_path, "7.8.9")
    url, server, requested = check_release.serve_index(wheel, tmp_path / "index")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/simple/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # only this index, none of the machine's
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--index-url", url,
             "--dest", str(tmp_path / "got"), "napari-flow-features"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "got" / wheel.name).read_bytes() == wheel.read_bytes()
    assert f"/simple/napari-flow-features/{wheel.name}" in requested


#: The wheels that each install a ``cv2`` package (and overwrite each other's files).
OPENCV_WHEELS = {
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
}


def _requirements_with(extra: str | None) -> set[str]:
    """Distribution names a plain install (``extra`` None) or ``.[extra]`` asks for directly,
    through the package's own extras (``napari-flow-features[docs]``) too."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    todo, seen = [extra] if extra else [], set()
    while todo:
        name = todo.pop()
        seen.add(name)
        for req in optional[name]:
            if _name(req) == "napari-flow-features":
                inner = re.search(r"\[([^\]]+)\]", req)
                assert inner is not None, req
                todo += [e.strip() for e in inner.group(1).split(",") if e.strip() not in seen]
            else:
                names.add(_name(req))
    return names


@pytest.mark.parametrize("extra", [None, "all", "poses", "testing", "docs"])
def test_one_opencv_wheel(extra):
    """One ``cv2`` per environment: the plain headless wheel, which movement's video reader (the
    ``poses`` extra) requires too; only the opt-in ``tvl1`` extra adds the contrib wheel on top."""
    assert _requirements_with(extra) & OPENCV_WHEELS == {"opencv-python-headless"}
    assert _requirements_with("tvl1") & OPENCV_WHEELS == OPENCV_WHEELS & {
        "opencv-python-headless", "opencv-contrib-python-headless"
    }  # fmt: skip
