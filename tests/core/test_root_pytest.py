"""A bare ``pytest`` at the repository root refuses, and says how; each suite still runs alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (ROOT / "conftest.py").is_file(), reason="needs the source tree (root conftest.py)"
)


def run_pytest(*args: str, cwd: Path = ROOT) -> tuple[int, str, float]:
    """``python -m pytest ARGS`` in a fresh process at ``cwd``: (exit code, output, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.returncode, out.stdout + out.stderr, time.perf_counter() - start


@pytest.mark.parametrize(
    "args", [(), ("--collect-only",), ("tests",), ("tests/core", "tests/napari")]
)
def test_a_run_mixing_the_suites_refuses_with_the_commands(args):
    code, output, seconds = run_pytest(*args)
    assert code == pytest.ExitCode.USAGE_ERROR, output
    assert "separate processes" in output
    assert (
        "make test" in output and "pytest tests/core" in output and "pytest tests/napari" in output
    )
    assert "collected" not in output and "passed" not in output  # nothing ran
    assert seconds < 30, f"refusing took {seconds:.1f} s"


def test_refuses_from_inside_the_tests_folder_too():
    code, output, _ = run_pytest(cwd=ROOT / "tests")
    assert code == pytest.ExitCode.USAGE_ERROR and "make test" in output


def test_help_still_answers():
    code, output, _ = run_pytest("--help")
    assert code == 0 and "usage:" in output


def test_each_suite_keeps_its_own_configuration():
    """``pytest tests/core/FILE`` and ``pytest tests/napari/FILE`` read their suite's pytest.ini."""
    code, output, _ = run_pytest("tests/core/test_sample.py", "--collect-only")
    assert code == 0, output
    assert f"rootdir: {ROOT / 'tests' / 'core'}" in output
    assert "configfile: pytest.ini" in output and "tests collected" in output
    code, output, _ = run_pytest("tests/napari/test_convert.py", "--collect-only")
    assert code == 0, output
    assert f"rootdir: {ROOT / 'tests' / 'napari'}" in output
    assert "separate processes" not in output
