"""Smoke test of an installed wheel, run by ``check_release.py`` with the fresh environment's Python.

Usage: ``python smoke_installed.py VERSION VENV`` from outside the source tree. Checks that the
package imports from VENV (not from a source tree), has the version, that every module imports
with the declared dependencies alone (the napari ones included), that its data files are there and
match what the code expects, and that the ``flow-features`` command runs: ``--help``, optical flow
on a small generated video, and features with random I3D weights (TensorFlow in the fresh
environment).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path


def main(version: str, venv: Path) -> None:
    """Run every check; an ``AssertionError`` names the first that fails."""
    import napari_flow_features as nff

    where = Path(nff.__file__).resolve()
    assert venv.resolve() in where.parents, f"imported from {where}, not from {venv}"
    assert nff.__version__ == version, (nff.__version__, version)
    heavy = [m for m in ("tensorflow", "cv2", "av", "napari", "qtpy") if m in sys.modules]
    assert not heavy, f"import napari_flow_features loaded {heavy}"

    # Every module imports with the declared dependencies (a forgotten one fails here).
    names = [
        m.name
        for m in pkgutil.walk_packages(nff.__path__, "napari_flow_features.")
        if not m.name.endswith(".__main__")  # importing it would run the command
    ]
    # Modules that are an extra's own code import only with it: without it, the error names it.
    of_extras = {"napari_flow_features.model.torch_i3d": "torch"}  # the [gpu] extra
    for name in names:
        needs = of_extras.get(name)
        if needs is not None and importlib.util.find_spec(needs) is None:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                assert exc.name == needs, (name, exc)
                continue
            raise AssertionError(f"{name} imported without {needs}")
        importlib.import_module(name)
    print(f"imported {len(names)} modules from {where.parent}")

    # Data files: the config, the labels, and the shipped indexes that pin the weights' hashes.
    from napari_flow_features.model import weights

    model = resources.files("napari_flow_features.model")
    assert model.joinpath("default_config.yaml").read_text().strip()
    assert len(model.joinpath("labels", "kinetics400.txt").read_text().splitlines()) == 400
    assert len(model.joinpath("labels", "kinetics600.txt").read_text().splitlines()) == 600
    for name in weights.CHECKPOINTS:
        index = model.joinpath("reference", f"{name}.index").read_bytes()
        assert (
            hashlib.sha256(index).hexdigest() == weights.PUBLISHED_SHA256[name]["model.ckpt.index"]
        ), name

    # The console script: help, flow on a generated video, features with random weights.
    script = venv / "bin" / "flow-features"
    subprocess.run([str(script), "--help"], check=True, capture_output=True)
    from napari_flow_features.io.video import write_video
    from napari_flow_features.sample import make_whisker_sample

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "whisker.mp4"
        sample = make_whisker_sample(n_frames=16, height=48, width=48, length=30, thickness=3)
        write_video(video, sample.video, fps=sample.fps, crf=10)
        flow = Path(tmp) / "flow.npy"
        subprocess.run(
            [str(script), "flow", str(video), "-o", str(flow), "--method", "dis"], check=True
        )
        import numpy as np

        assert np.load(flow).shape == (15, 48, 48, 2)
        table = Path(tmp) / "features.parquet"
        subprocess.run(
            [str(script), "extract", str(video), "--weights", "random", "--endpoint",
             "Conv3d_1a_7x7", "--runtime", "tensorflow", "-o", str(table)],
            check=True,
        )  # fmt: skip
        import pandas as pd

        features = pd.read_parquet(table)
        assert len(features) == 16 and "f0063" in features.columns, features.columns
    print(f"napari-flow-features {version}: the installed wheel works")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
