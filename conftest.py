"""Refuse a ``pytest`` run at the repository root: the two suites need separate processes.

TensorFlow (``tests/core``) and a napari canvas (``tests/napari``) must never share a process
(docs/architecture.md), so ``pytest`` with no path, ``pytest tests`` or any run whose files span
both suites stops here with the commands to use. ``pytest tests/core …`` and
``pytest tests/napari …`` find their own ``pytest.ini`` first and never load this file.
"""

from __future__ import annotations

import pytest

HOW = (
    "napari-flow-features has two test suites that must run in separate processes "
    "(TensorFlow and a napari canvas cannot share one; see docs/architecture.md). Run:\n"
    "    make test                 # ruff, then both suites, each in its own process\n"
    "or\n"
    "    pytest tests/core         # headless: library, CLI, model\n"
    "    pytest tests/napari       # napari widgets, under Xvfb\n"
    "(a single file works too: pytest tests/core/test_sequences.py)"
)


def pytest_configure(config: pytest.Config) -> None:
    """Stop before collecting anything; ``--help`` and ``--version`` still answer."""
    if config.option.help or config.option.version:
        return
    raise pytest.UsageError(HOW)
