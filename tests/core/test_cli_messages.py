"""Messages of the command line: a warning prints once, as ``warning: text``, above the bars."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd

from napari_flow_features.cli._messages import plain_warnings
from napari_flow_features.io.video import write_video


def segments(stream: str) -> list[str]:
    """What a terminal shows as separate lines: text between carriage returns and newlines, without
    the cursor movements (tqdm's ``ESC [ A`` moves up to a bar's line)."""
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "\n", stream)
    return [s.strip() for s in re.split(r"[\r\n]", plain) if s.strip()]


def test_a_warning_prints_once_plainly_on_its_own_line(tmp_path):
    """A landmark outside the frame warns: one line ``warning: ...`` between the progress bars,
    without the source file's path or line, and not spliced into a bar."""
    rng = np.random.default_rng(0)
    write_video(tmp_path / "v.mp4", (rng.random((12, 32, 32)) * 255).astype(np.uint8), fps=10)
    pd.DataFrame({"frame": [0, 1, 2], "x": [5.0, 500.0, 600.0], "y": [5.0, 5.0, 5.0]}).to_csv(
        tmp_path / "points.csv", index=False
    )
    args = ["extract", "v.mp4", "--post-encoder", "point", "--points", "points.csv",
            "--weights", "random", "--endpoint", "Mixed_3c",
            "--output", "out.csv"]  # fmt: skip
    code = "import sys; from napari_flow_features.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = segments(done.stderr)
    assert any("I3D features: 100%" in line for line in lines)  # the bars were drawn
    hits = [line for line in lines if "outside the 32x32 frame" in line]
    assert len(hits) == 1, done.stderr
    assert hits[0].startswith("warning: 2 landmark positions lie "), hits
    assert ".py" not in done.stderr and "UserWarning" not in done.stderr


def test_plain_warnings_are_once_per_text_and_restored_after(capsys):
    import warnings

    before = warnings.showwarning
    with plain_warnings():
        for _ in range(3):  # the same text from three places: one line
            warnings.warn_explicit("disk nearly full", UserWarning, "a.py", 1)
            warnings.warn_explicit("disk nearly full", UserWarning, "b.py", 2)
        warnings.warn_explicit("old option", DeprecationWarning, "c.py", 3)
    assert warnings.showwarning is before
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "warning: disk nearly full",
        "warning: DeprecationWarning: old option",
    ]
