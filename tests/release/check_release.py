"""The release check (`make release-check`): build, inspect and install the package as a user gets it.

1. ``python -m build``: the sdist, then the wheel built *from the sdist* (so the sdist is proved to
   hold what a build needs).
2. The sdist holds the build inputs (pyproject.toml, src/ with the napari.yaml symlink and its
   target, README, LICENSE) and the tests, docs, examples and changelog; not benchmarks, CI scripts
   or local clutter.
3. The wheel holds the package with its data files, the manifest's content (not a dangling
   symlink), the version from ``__version__``, the dependencies of pyproject.toml, the licence and
   the entry points; nothing else at its top level.
4. A fresh virtual environment gets the wheel and its dependencies (pip's cache and the configured
   index), ``pip check`` passes, ``npe2 validate`` passes, and ``smoke_installed.py`` runs there
   outside the source tree.
5. The napari route in that environment: napari-plugin-manager and a Qt binding are added (a
   user's napari environment), then napari-plugin-manager's own installer, headless
   (``plugin_manager_job.py``), uninstalls the package, installs it *by name* from a PEP 503
   index served on 127.0.0.1 that holds only the built wheel (the dependencies are already there),
   and uninstalls it again; ``npe2 list`` in a new process (a napari restart) finds the plugin
   after the install and not after the uninstalls.
6. The release files that cannot run here: the GitHub workflow (``.github/workflows/release.yml``:
   trigger, permissions, build and publish steps) and the conda-forge recipe draft
   (``packaging/conda-forge/recipe.yaml``: version, run requirements, entry point, tests; at a
   release, the sha256 of the built sdist); see ``release_files.py``. With ``--tag``, the tag must
   be ``v`` + the version.

Exit status 0 when every check passes; each failure is printed with what was expected.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import release_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # `build` brings tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "napari_flow_features"
DIST_NAME = "napari-flow-features"

SDIST_REQUIRED = (
    "pyproject.toml",
    "PKG-INFO",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "napari.yaml",
    "mkdocs.yml",
    f"src/{PACKAGE}/__init__.py",
    f"src/{PACKAGE}/napari.yaml",
    f"src/{PACKAGE}/model/default_config.yaml",
    "tests/core/conftest.py",
    "tests/napari/conftest.py",
    "docs/index.md",
    "docs/api.md",
    "examples/read_feature_table.py",
)
SDIST_FORBIDDEN = ("benchmarks/", ".ci/", ".venv/", "site/", "dist/", "build/", "Makefile")
WHEEL_DATA = (
    f"{PACKAGE}/napari.yaml",
    f"{PACKAGE}/model/default_config.yaml",
    f"{PACKAGE}/model/labels/kinetics400.txt",
    f"{PACKAGE}/model/labels/kinetics600.txt",
    *(
        f"{PACKAGE}/model/reference/{name}.index"
        for name in ("flow_imagenet", "flow_scratch", "rgb_imagenet", "rgb_scratch")
    ),
    f"{PACKAGE}/model/reference/rgb_scratch_kin600.index",
)


class Failures(list[str]):
    """Failed checks, printed together at the end."""

    def check(self, ok: bool, message: str) -> None:
        """Record ``message`` unless ``ok``."""
        if not ok:
            self.append(message)


def source_version() -> str:
    """``__version__`` as written in the package's ``__init__.py`` (the one place it lives)."""
    text = (ROOT / "src" / PACKAGE / "__init__.py").read_text()
    match = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no __version__ = '...' line in src/{PACKAGE}/__init__.py")
    return match.group(1)


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement string (``"pooch>=1.8"`` -> ``"pooch"``)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it; its output goes to ours."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def build(dist: Path) -> tuple[Path, Path]:
    """Build the sdist and, from it, the wheel into ``dist``; return both paths."""
    shutil.rmtree(dist, ignore_errors=True)
    # No isolation: hatchling comes from the testing extra (offline-friendly and fast); the wheel
    # is still built from the unpacked sdist, not from the tree.
    done = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)])
    if done.returncode != 0:
        raise SystemExit("python -m build failed")
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return sdist, wheel


def check_sdist(sdist: Path, version: str, failures: Failures) -> None:
    """The sdist's name, its build inputs, and nothing that does not belong."""
    prefix = f"{PACKAGE}-{version}/"
    failures.check(sdist.name == f"{PACKAGE}-{version}.tar.gz", f"sdist name {sdist.name}")
    with tarfile.open(sdist) as tar:
        members = {m.name[len(prefix) :]: m for m in tar.getmembers() if m.name.startswith(prefix)}
    for name in SDIST_REQUIRED:
        failures.check(name in members, f"sdist lacks {name}")
    link = members.get(f"src/{PACKAGE}/napari.yaml")
    if link is not None and link.issym():
        target = (Path(f"src/{PACKAGE}") / link.linkname).as_posix()
        failures.check(
            os.path.normpath(target) in members,
            f"sdist's src/{PACKAGE}/napari.yaml points to {link.linkname}, which it does not hold",
        )
    for name in members:
        for bad in SDIST_FORBIDDEN:
            failures.check(not name.startswith(bad), f"sdist holds {name} ({bad} is not shipped)")
        failures.check("__pycache__" not in name, f"sdist holds {name}")


def check_wheel(wheel: Path, version: str, failures: Failures) -> None:
    """The wheel's files, manifest, version, dependencies, licence and entry points."""
    failures.check(
        wheel.name == f"{PACKAGE}-{version}-py3-none-any.whl", f"wheel name {wheel.name}"
    )
    info = f"{PACKAGE}-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in WHEEL_DATA:
            failures.check(name in names, f"wheel lacks {name}")
        tops = {n.split("/", 1)[0] for n in names}
        failures.check(tops == {PACKAGE, info}, f"wheel top level: {sorted(tops)}")
        failures.check(
            not any("__pycache__" in n or n.endswith(".pyc") for n in names), "wheel holds .pyc"
        )
        manifest = zf.read(f"{PACKAGE}/napari.yaml").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        failures.check(f"{info}/licenses/LICENSE" in names, "wheel lacks the LICENSE file")
    failures.check(
        manifest == (ROOT / "napari.yaml").read_text(),
        "wheel's napari.yaml differs from the tree's",
    )
    headers = [line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines()]
    fields: dict[str, list[str]] = {}
    for key, value in (h for h in headers if len(h) == 2):
        fields.setdefault(key, []).append(value)
    failures.check(fields.get("Version") == [version], f"wheel Version {fields.get('Version')}")
    failures.check(
        fields.get("License-Expression") == ["BSD-3-Clause"],
        f"wheel License-Expression {fields.get('License-Expression')}",
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(r) for r in project["dependencies"]}
    required = {requirement_name(r) for r in fields.get("Requires-Dist", []) if "extra ==" not in r}
    failures.check(
        required == declared,
        f"wheel requires {sorted(required ^ declared)} differently from pyproject.toml",
    )
    failures.check(
        f"{DIST_NAME} = {PACKAGE}:napari.yaml" in entry_points, "no napari.manifest entry point"
    )
    failures.check("flow-features = " in entry_points, "no flow-features console script")


def fresh_install(wheel: Path, venv: Path, version: str, failures: Failures) -> None:
    """Install the wheel into a new virtual environment and check it there."""
    shutil.rmtree(venv, ignore_errors=True)
    start = time.monotonic()
    if run([sys.executable, "-m", "venv", str(venv)]).returncode != 0:
        raise SystemExit("could not create the fresh virtual environment")
    python = venv / "bin" / "python"
    # No Qt binding: napari leaves it to the user, as does this package, and every module must
    # import without one (widgets import Qt when they are made). --no-compile: byte-compiling
    # TensorFlow's sources would be most of the install's CPU time.
    install = run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", str(wheel)])
    if install.returncode != 0:
        raise SystemExit("pip could not install the wheel into a fresh environment")
    print(f"== fresh environment installed in {time.monotonic() - start:.0f} s", flush=True)
    # Outside the source tree and without the developer's path: only the installed copy counts.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cwd = venv
    failures.check(
        run([str(python), "-m", "pip", "check"], env=env, cwd=cwd).returncode == 0,
        "pip check found broken requirements",
    )
    failures.check(
        run(
            [str(venv / "bin" / "npe2"), "validate", "--imports", DIST_NAME], env=env, cwd=cwd
        ).returncode
        == 0,
        "npe2 validate --imports failed on the installed wheel",
    )
    smoke = Path(__file__).with_name("smoke_installed.py")
    failures.check(
        run([str(python), str(smoke), version, str(venv)], env=env, cwd=cwd).returncode == 0,
        "the smoke test failed in the fresh environment",
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves the index folder; records each path asked for instead of printing it."""

    requested: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requested.append(self.path)


def serve_index(wheel: Path, root: Path) -> tuple[str, ThreadingHTTPServer, list[str]]:
    """A PEP 503 simple index holding only ``wheel``, served on 127.0.0.1 (a free port).

    Returns the index URL, the server (call ``shutdown()``) and the list of requested paths.
    """
    shutil.rmtree(root, ignore_errors=True)
    project = root / "simple" / DIST_NAME
    project.mkdir(parents=True)
    shutil.copy2(wheel, project / wheel.name)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = '<!DOCTYPE html><html><body><a href="{0}">{1}</a></body></html>\n'
    (project / "index.html").write_text(
        page.format(f"{html.escape(wheel.name)}#sha256={digest}", html.escape(wheel.name))
    )
    (root / "simple" / "index.html").write_text(page.format(f"{DIST_NAME}/", DIST_NAME))
    requested: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/simple/", server, requested


def npe2_finds(venv: Path, env: dict[str, str]) -> dict[str, str]:
    """Plugin name -> version as ``npe2 list`` in a new process (a napari restart) reports them."""
    done = subprocess.run(
        [str(venv / "bin" / "npe2"), "list", "--fields", "name,version", "--format", "json"],
        env=env, cwd=venv, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {p["name"]: p["version"] for p in json.loads(done.stdout)}


def plugin_manager_route(wheel: Path, venv: Path, version: str, failures: Failures) -> None:
    """Uninstall, install by name from a local index, uninstall: napari-plugin-manager's installer.

    The fresh environment gets what a user's napari environment has besides: napari-plugin-manager
    and a Qt binding (the versions of this environment, so pip's cache serves them).
    """
    start = time.monotonic()
    python = venv / "bin" / "python"
    extras = []
    for name in ("napari-plugin-manager", "PyQt6"):
        try:
            extras.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            extras.append(name)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *extras]
    if run(pip).returncode != 0:
        failures.append(f"could not add {extras} to the fresh environment")
        return
    url, server, requested = serve_index(wheel, venv.parent / "plugin-index")
    # Only the local index: the dependencies are installed, and no other index can shadow it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PIP_INDEX_URL": url, "QT_QPA_PLATFORM": "offscreen"}
    job = [str(python), str(Path(__file__).with_name("plugin_manager_job.py"))]
    try:
        steps = [("uninstall", []), ("install", ["--origin", url]), ("uninstall", [])]
        for action, origin in steps:
            step = time.monotonic()
            code = run([*job, action, DIST_NAME, *origin], env=env, cwd=venv).returncode
            found = npe2_finds(venv, env)
            print(f"== plugin manager {action}: {time.monotonic() - step:.1f} s", flush=True)
            failures.check(code == 0, f"napari-plugin-manager's {action} failed (exit {code})")
            if action == "install":
                failures.check(
                    found.get(DIST_NAME) == version,
                    f"after the install npe2 finds {DIST_NAME} {found.get(DIST_NAME)}",
                )
                fetched = f"/simple/{DIST_NAME}/{wheel.name}"
                failures.check(fetched in requested, f"the local index served {requested}")
            else:
                failures.check(DIST_NAME not in found, f"npe2 still finds {DIST_NAME}")
    finally:
        server.shutdown()
        server.server_close()
    print(f"== plugin manager route in {time.monotonic() - start:.0f} s", flush=True)


def check_release_files(
    sdist: Path,
    version: str,
    tag: str | None,
    failures: Failures,
    recipe_path: Path = release_files.RECIPE,
    changelog: Path = ROOT / "CHANGELOG.md",
) -> None:
    """The release workflow, the conda-forge recipe and (given) the tag against this build."""
    workflow = release_files.load_yaml(release_files.WORKFLOW)
    for problem in release_files.workflow_problems(workflow):
        failures.append(f"{release_files.WORKFLOW.name}: {problem}")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    recipe = release_files.load_yaml(recipe_path)
    for problem in release_files.recipe_problems(recipe, project, version):
        failures.append(f"{recipe_path.name}: {problem}")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    recorded = (recipe.get("source") or {}).get("sha256") if isinstance(recipe, dict) else None
    if release_files.changelog_released(changelog, version):
        failures.check(
            recorded == digest,
            f"{recipe_path.name}: sha256 {recorded}, the sdist's is {digest} (a release)",
        )
    elif recorded != digest:
        print(f"== {recipe_path.name}: sha256 to set at the release: {digest} (now {recorded})")
    if tag is not None:
        failures.check(tag == f"v{version}", f"tag {tag!r} is not 'v{version}'")


def main(argv: list[str] | None = None) -> int:
    """Build, inspect, install and smoke-test; 0 when all passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where to build")
    parser.add_argument(
        "--venv", type=Path, default=ROOT / "build" / "release-venv", help="the fresh environment"
    )
    parser.add_argument("--no-install", action="store_true", help="build and inspect only")
    parser.add_argument("--tag", help="the git tag being released (must be v + the version)")
    args = parser.parse_args(argv)
    args.dist, args.venv = args.dist.resolve(), args.venv.resolve()
    version = source_version()
    failures = Failures()
    start = time.monotonic()
    sdist, wheel = build(args.dist)
    check_sdist(sdist, version, failures)
    check_wheel(wheel, version, failures)
    check_release_files(sdist, version, args.tag, failures)
    if not args.no_install:
        fresh_install(wheel, args.venv, version, failures)
        plugin_manager_route(wheel, args.venv, version, failures)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    verdict = "failed" if failures else "passed"
    print(f"== release check {verdict} in {time.monotonic() - start:.0f} s ({version})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
