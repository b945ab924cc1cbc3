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

Exit status 0 when every check passes; each failure is printed with what was expected.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    """Build, inspect, install and smoke-test; 0 when all passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where to build")
    parser.add_argument(
        "--venv", type=Path, default=ROOT / "build" / "release-venv", help="the fresh environment"
    )
    parser.add_argument("--no-install", action="store_true", help="build and inspect only")
    args = parser.parse_args(argv)
    args.dist, args.venv = args.dist.resolve(), args.venv.resolve()
    version = source_version()
    failures = Failures()
    start = time.monotonic()
    sdist, wheel = build(args.dist)
    check_sdist(sdist, version, failures)
    check_wheel(wheel, version, failures)
    if not args.no_install:
        fresh_install(wheel, args.venv, version, failures)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    verdict = "failed" if failures else "passed"
    print(f"== release check {verdict} in {time.monotonic() - start:.0f} s ({version})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
