"""docs/make_screenshots.py runs here, so the documentation's screenshots can always be remade."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_screenshots_are_remade_from_a_real_window(qtbot, tmp_path):
    spec = importlib.util.spec_from_file_location("make_screenshots", DOCS / "make_screenshots.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.make_screenshots(tmp_path)
    names = sorted(path.name for path in written)
    # Every documented picture is made by a script: the docks and results by this one (a new dock
    # needs its picture), the landmark workflow's by docs/screenshots/landmarks.py.
    images = {path.name for path in (DOCS / "images").glob("*.png")}
    landmark_script = (DOCS / "screenshots" / "landmarks.py").read_text()
    assert set(names) <= images
    assert all(name in landmark_script for name in images - set(names))
    assert names == sorted([*script.DOCKS, script.RESULTS, script.MAP])
    for path in written:
        pixels = np.asarray(Image.open(path).convert("RGB"), float)
        assert pixels.std() > 10, path.name  # a picture, not a blank window
    assert sum(path.stat().st_size for path in written) < 400_000  # small enough for the repo
    results = np.asarray(Image.open(tmp_path / script.RESULTS).convert("RGB"))
    assert results.shape[1] == 1100
    assert "tensorflow" not in sys.modules
