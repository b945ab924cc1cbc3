"""A napari script as most users write it (no ``if __name__ == "__main__":`` guard) runs once.

The model worker used to start with multiprocessing "spawn", which re-imports the caller's
``__main__``: the script's top level ran again in the child, opened a second viewer and died. The
script here opens the sample, runs the extraction dock on one frame, closes the viewer when the
job ends and leaves ``napari.run()``; it runs as its own process, exactly as ``python script.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os
    import napari

    # Each run of this top level (in any process) leaves a line with its process id.
    with open(os.environ["MARKER_FILE"], "a") as marker:
        marker.write(f"{os.getpid()}\\n")

    viewer = napari.Viewer()
    viewer.open_sample("napari-flow-features", "whisker")
    _, extract = viewer.window.add_plugin_dock_widget("napari-flow-features",
                                                      "I3D feature extraction")
    extract.endpoint.value = "Mixed_3c"
    extract.clip_length.value = 8
    extract.stride.value = 8
    extract.post_encoder.value = "Spatial Point Extraction"
    viewer.dims.set_current_step(0, 40)
    worker = extract.run(current_frame=True)

    def finished():
        try:  # whatever happens, close the viewer so that napari.run() returns
            print("STATUS", extract.status.value, flush=True)
            names = [lay.name for lay in viewer.layers if lay.name.startswith("features:")]
            print("LAYERS", names, flush=True)
            table = viewer.layers["whisker base"].features
            frames = viewer.layers["whisker base"].data[:, 0].astype(int)
            filled = table["f0000"].notna().to_numpy()
            print("ROWS", int(filled.sum()), flush=True)
            print("FRAMES", sorted(set(frames[filled].tolist())), flush=True)
        finally:
            viewer.close()

    worker.finished.connect(finished)
    napari.run()
    print("AFTER RUN", flush=True)
    """
)


def test_an_unguarded_napari_script_runs_once_and_extracts(tmp_path):
    script = tmp_path / "my_analysis.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "top-level-runs.txt"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "MARKER_FILE": str(marker), "TMPDIR": str(temp)}
    # The script's own folder is where a user runs it from; the package comes from the test's path.
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, timeout=240,
                          capture_output=True, text=True)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    runs = marker.read_text().split()
    assert runs == [runs[0]], f"the script's top level ran {len(runs)} times: {runs}\n{output}"
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines["STATUS"].startswith("done"), output
    assert lines["LAYERS"] == "['features: whisker video (point, Mixed_3c, RANDOM WEIGHTS)']"
    # One frame at one landmark: the landmark's row at the frame the slider shows has features.
    assert lines["ROWS"] == "1" and lines["FRAMES"] == "[40]", output
    assert "AFTER RUN" in done.stdout  # napari.run() returned once the viewer closed
    assert "stopped unexpectedly" not in output
    assert list(temp.iterdir()) == []  # the worker's temporary folder went with it
