"""Checks of the release files that cannot run here: the GitHub release workflow and the
conda-forge recipe draft. Used by ``check_release.py`` (``make release-check``) and by
``tests/core/test_release.py``; each function returns the problems it found, as sentences.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
RECIPE = ROOT / "packaging" / "conda-forge" / "recipe.yaml"
BUILD_SCRIPT = "tests/release/check_release.py"
PUBLISH_ACTION = "pypa/gh-action-pypi-publish"

# pip (PyPI) name -> conda-forge name, where they differ. napari on PyPI has no Qt binding; on
# conda-forge that is napari-base (napari there brings PyQt). matplotlib-base is matplotlib without
# the Qt backend's dependency, the conda-forge convention for libraries.
CONDA_NAMES = {
    "napari": "napari-base",
    "opencv-python-headless": "py-opencv",
    "matplotlib": "matplotlib-base",
    "lazy-loader": "lazy_loader",
}


def normalise(name: str) -> str:
    """A project name in PEP 503 normal form (``Lazy_Loader`` -> ``lazy-loader``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(requirement: str) -> tuple[str, str]:
    """``"numpy>=1.24"`` or ``"numpy >=1.24"`` -> ``("numpy", ">=1.24")``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*(.*?)\s*", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(1), match.group(2).replace(" ", "")


# -- the release workflow ---------------------------------------------------------------------


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job.get("steps") or []
    return [s for s in steps if isinstance(s, dict)]


def _uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@", 1)[0] == action


def _trigger_problems(doc: dict[Any, Any]) -> list[str]:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    trigger = doc.get("on", doc.get(True))
    if not isinstance(trigger, dict) or set(trigger) != {"push"}:
        return [f"the workflow must run on a pushed tag only, not on {trigger!r}"]
    push = trigger["push"] or {}
    tags = push.get("tags") or []
    problems = []
    if set(push) != {"tags"}:
        problems.append(f"push trigger has {sorted(set(push) - {'tags'})}: tags only")
    if not tags or not all(str(t).startswith("v") for t in tags):
        problems.append(f"push tags {tags!r}: every pattern must start with 'v' (v1.2.3)")
    return problems


def _build_job(jobs: dict[str, Any]) -> tuple[str | None, str | None, str | None, list[str]]:
    """The job that runs the build script: its name, dist folder, artifact name, problems."""
    for name, job in jobs.items():
        runs = [s for s in _steps(job) if BUILD_SCRIPT in str(s.get("run", ""))]
        if not runs:
            continue
        command = str(runs[0]["run"]).split()
        problems = []
        dist = command[command.index("--dist") + 1] if "--dist" in command else None
        if dist is None:
            problems.append(f"the build step does not name its --dist folder: {runs[0]['run']!r}")
        if "--tag" not in command:
            problems.append("the build step does not check the tag against __version__ (--tag)")
        uploads = [s for s in _steps(job) if _uses(s, "actions/upload-artifact")]
        if not uploads:
            return name, dist, None, [*problems, f"job {name!r} uploads no artifact"]
        upload = uploads[0].get("with") or {}
        if dist is not None and str(upload.get("path", "")).rstrip("/") != dist.rstrip("/"):
            problems.append(f"job {name!r} uploads {upload.get('path')!r}, builds into {dist!r}")
        return name, dist, upload.get("name"), problems
    return None, None, None, [f"no job runs {BUILD_SCRIPT} (the build and its checks)"]


def _publish_problems(name: str, job: dict[str, Any], build: str, artifact: Any) -> list[str]:
    problems = []
    needs = job.get("needs") or []
    needs = [needs] if isinstance(needs, str) else needs
    if build not in needs:
        problems.append(f"publish job {name!r} does not need the build job {build!r}")
    if (job.get("permissions") or {}).get("id-token") != "write":
        problems.append(f"publish job {name!r} lacks 'permissions: id-token: write'")
    environment = job.get("environment")
    env_name = environment.get("name") if isinstance(environment, dict) else environment
    if env_name != "pypi":
        problems.append(f"publish job {name!r} runs in environment {env_name!r}, not 'pypi'")
    publish = next(s for s in _steps(job) if _uses(s, PUBLISH_ACTION))
    options = publish.get("with") or {}
    if "password" in options:
        problems.append("the publish step passes a password: trusted publishing needs none")
    packages = str(options.get("packages-dir", "dist/")).rstrip("/")
    downloads = [s for s in _steps(job) if _uses(s, "actions/download-artifact")]
    got = [(d.get("with") or {}) for d in downloads]
    if not any(
        g.get("name") == artifact and str(g.get("path", "")).rstrip("/") == packages for g in got
    ):
        problems.append(
            f"publish job {name!r} does not download the artifact {artifact!r} into {packages}/"
        )
    return problems


def workflow_problems(doc: Any) -> list[str]:
    """What is wrong with a parsed release workflow (an empty list when nothing is).

    It runs on pushed ``v*`` tags only; one job runs the build script with ``--dist`` and
    ``--tag`` and uploads that folder; the publish job needs it, downloads that artifact into the
    folder it publishes, uses ``pypa/gh-action-pypi-publish`` without a password, in the ``pypi``
    environment with ``id-token: write`` (which no other job and not the top level grants); every
    action is pinned to a version.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), dict):
        return ["the workflow is not a mapping with 'jobs'"]
    jobs: dict[str, Any] = doc["jobs"]
    problems = _trigger_problems(doc)
    if (doc.get("permissions") or {}).get("id-token"):
        problems.append("id-token is granted at the top level: only the publish job needs it")
    build, _dist, artifact, build_problems = _build_job(jobs)
    problems += build_problems
    publishers = [n for n, j in jobs.items() if any(_uses(s, PUBLISH_ACTION) for s in _steps(j))]
    if len(publishers) != 1:
        problems.append(f"{len(publishers)} jobs use {PUBLISH_ACTION}; one must")
    elif build is not None:
        problems += _publish_problems(publishers[0], jobs[publishers[0]], build, artifact)
    for name, job in jobs.items():
        if name not in publishers and (job.get("permissions") or {}).get("id-token"):
            problems.append(f"job {name!r} is granted id-token without publishing")
        for step in _steps(job):
            if "uses" in step and "@" not in str(step["uses"]):
                problems.append(f"job {name!r}: {step['uses']!r} is not pinned to a version")
    return problems


# -- the conda-forge recipe -------------------------------------------------------------------


def _context(text: str, value: Any, context: dict[str, Any]) -> str:
    """Substitute the recipe's simple ``${{ name }}`` expressions from its context."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in context:
            raise KeyError(f"{text}: ${{{{ {key} }}}} is not in the recipe's context")
        return str(context[key])

    return re.sub(r"\$\{\{\s*(\w+)\s*\}\}", replace, str(value))


def _run_problems(run: list[str], project: dict[str, Any], context: dict[str, Any]) -> list[str]:
    expected = {"python": f">={project['requires-python'].removeprefix('>=')}"}
    for requirement in project["dependencies"]:
        name, bound = split_requirement(requirement)
        expected[CONDA_NAMES.get(normalise(name), normalise(name))] = bound
    found = {}
    for entry in run:
        name, bound = split_requirement(_context("run", entry, context))
        found[name] = bound
    problems = []
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            problems.append(f"recipe's run requirements lack {name} {expected[name]}")
        elif name not in expected:
            problems.append(f"recipe requires {name}, which pyproject.toml does not")
        elif found[name] != expected[name]:
            problems.append(f"recipe requires {name} {found[name]}, pyproject {expected[name]}")
    return problems


def recipe_problems(recipe: Any, project: dict[str, Any], version: str) -> list[str]:
    """What is wrong with a parsed conda-forge recipe against pyproject's ``[project]`` table.

    The package name and version (``version``, the package's ``__version__``); a PyPI sdist
    source with a sha256; ``noarch: python``; the console script as the entry point; the run
    requirements: pyproject's dependencies and lower bounds under their conda-forge names
    (`CONDA_NAMES`) and the same minimum Python; tests that import the package and run the
    command; the licence.
    """
    if not isinstance(recipe, dict) or recipe.get("schema_version") != 1:
        return ["the recipe is not a v1 recipe (schema_version: 1)"]
    context = dict(recipe.get("context") or {})
    problems = []
    if context.get("version") != version:
        problems.append(f"recipe version {context.get('version')!r}, package {version!r}")
    if context.get("name") != project["name"]:
        problems.append(f"recipe name {context.get('name')!r}, project {project['name']!r}")
    source = recipe.get("source") or {}
    if not re.fullmatch(r"[0-9a-f]{64}", str(source.get("sha256", ""))):
        problems.append("the recipe's source has no sha256")
    if "pypi.org/packages/source/" not in str(source.get("url", "")):
        problems.append(f"the recipe's source is not the PyPI sdist: {source.get('url')!r}")
    build = recipe.get("build") or {}
    if build.get("noarch") != "python":
        problems.append("the recipe is not noarch: python")
    scripts = [f"{k} = {v}" for k, v in project["scripts"].items()]
    entry_points = (build.get("python") or {}).get("entry_points") or []
    if sorted(entry_points) != sorted(scripts):
        problems.append(f"recipe entry points {entry_points}, pyproject scripts {scripts}")
    run = (recipe.get("requirements") or {}).get("run") or []
    problems += _run_problems(run, project, context)
    tests = recipe.get("tests") or []
    imports = [i for t in tests for i in (t.get("python") or {}).get("imports", [])]
    commands = [c for t in tests for c in t.get("script", [])]
    if "napari_flow_features" not in imports:
        problems.append("the recipe's tests do not import napari_flow_features")
    if not any(c.split()[0] in project["scripts"] for c in commands):
        problems.append("the recipe's tests do not run the console script")
    if (recipe.get("about") or {}).get("license") != project["license"]:
        problems.append(f"recipe licence {(recipe.get('about') or {}).get('license')!r}")
    return problems


def load_yaml(path: Path) -> Any:
    """A YAML file, parsed safely."""
    return yaml.safe_load(path.read_text())


def changelog_released(changelog: Path, version: str) -> bool:
    """Whether the changelog's top section is ``version`` with a date (the release being made)."""
    top = re.search(r"^## \[([^\]]+)\] - (\S+)$", changelog.read_text(), re.MULTILINE)
    return top is not None and top.group(1) == version and top.group(2) != "Unreleased"
