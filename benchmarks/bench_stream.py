"""Streaming extraction at the size of real sessions: open time, frames/s per phase, memory, disk.

    python benchmarks/bench_stream.py [--seconds 20] [--minutes 2,20] [--baseline-commit REV]

1. Open time of a long video (first open, second open) against decoding a tenth of it.
2. End to end on a generated 640×480 video of ``--seconds`` with the CLI's defaults
   (``flow-features extract``): frames/s, against the bound ``1 / (1/flow + 1/encoder)`` measured in
   the same run (flow alone, encoder alone), and against the code at ``--baseline-commit`` (run from
   a temporary ``git worktree`` with its own defaults) on the same video.
3. Peak RSS and peak extra disk (in a private TMPDIR) of ``extract`` for videos of each of
   ``--minutes`` at 160×120 (what must stay flat is the cost in the video's length).

Each extraction runs in a subprocess; RSS and disk are polled every 50 ms. Prints the CPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Random weights (speed does not depend on them) unless the caller chose: no download, offline.
os.environ.setdefault("NAPARI_FLOW_FEATURES_DEFAULT_WEIGHTS", "random")


def make_video(path: Path, seconds: float, h: int, w: int, fps: int = 30) -> Path:
    """A textured scene drifting with a slowly turning velocity, written in blocks (bounded memory)."""
    import av

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h * 2, w * 2), dtype=np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (0, 0), 2)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    n = int(seconds * fps)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for t in range(n):
            y = int(h / 2 + h / 3 * np.sin(t / 50))
            x = int(w / 2 + w / 3 * np.cos(t / 70))
            frame = base[y : y + h, x : x + w]
            for p in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "gray")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def run_measured(cmd: list[str], env: dict, tmpdir: Path) -> dict:
    """Run ``cmd``; poll its process tree's RSS and the size of ``tmpdir``; return peaks."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_rss = peak_disk = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
            peak_rss = max(peak_rss, rss)
        except psutil.Error:
            pass
        disk = sum(f.stat().st_size for f in tmpdir.rglob("*") if f.is_file())
        peak_disk = max(peak_disk, disk)
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - start, "rss": peak_rss, "disk": peak_disk, "out": out}


def extract_cmd(python: str, video: Path, out: Path, extra: list[str]) -> list[str]:
    return [python, "-m", "napari_flow_features.cli", "extract", str(video), "-o", str(out), *extra]


def open_times(video: Path) -> dict:
    code = (
        "import time, sys, av;"
        "from napari_flow_features.io.video import VideoArray;"
        f"t=time.perf_counter(); v=VideoArray({str(video)!r}); t1=time.perf_counter()-t; n=len(v);"
        "t=time.perf_counter(); [v[i] for i in range(n//10)]; t2=time.perf_counter()-t;"
        "t=time.perf_counter(); v[n-5]; t3=time.perf_counter()-t;"
        "print(t1, t2, t3, v.index_from_cache)"
    )
    env = {**os.environ}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    a = first.stdout.split()
    b = second.stdout.split()
    return {"open1": float(a[0]), "tenth": float(a[1]), "jump1": float(a[2]),
            "open2": float(b[0]), "jump2": float(b[2]), "cached": b[3]}  # fmt: skip


def cpu_name() -> str:
    from napari_flow_features.model.runtime import cpu_info

    info = cpu_info()
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in info["flags"]]
    return f"{info['name']} ({info['cores']} cores; {', '.join(flags)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="length of the 640x480 video")
    parser.add_argument("--minutes", default="2,20", help="lengths for the memory/disk runs")
    parser.add_argument("--open-minutes", type=float, default=60, help="length for the open test")
    parser.add_argument("--baseline-commit", help="git revision to compare end to end against")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench-stream"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}")
    python = sys.executable

    # 1. open time
    long_small = make_video(
        work / f"open_{args.open_minutes:g}min_160x120.mp4", args.open_minutes * 60, 120, 160
    )
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["NAPARI_FLOW_FEATURES_CACHE"] = str(cache)
    o = open_times(long_small)
    print(
        f"\n## Open ({args.open_minutes:g} min 160x120, {long_small.stat().st_size / 1e6:.0f} MB)\n"
    )
    print(
        "| first open s | second open s | decode a tenth s | open / tenth | first far jump s | jump after reopen s (cached index) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {o['open1']:.4f} | {o['open2']:.4f} | {o['tenth']:.2f} | {o['open1'] / o['tenth']:.4f} | {o['jump1']:.3f} | {o['jump2']:.3f} ({o['cached']}) |"
    )

    # 2. end to end at 640x480
    video = make_video(work / f"e2e_{args.seconds:g}s_640x480.mp4", args.seconds, 480, 640)
    n_frames = int(args.seconds * 30)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    ours = run_measured(extract_cmd(python, video, work / "e2e.parquet", []), env, tmp)
    from napari_flow_features.io.tables import read_table

    meta = read_table(work / "e2e.parquet").attrs
    # Flow alone (same method and size as the defaults) and encoder alone, in this same session.
    from napari_flow_features.flow.compute import OpticalFlowComputer

    tick = time.perf_counter()
    OpticalFlowComputer("dis", max_side=256).compute(video, work / "flow_alone.npy")
    flow_fps = n_frames / (time.perf_counter() - tick)
    encoded = meta["encoder_frames_per_output_frame"] * n_frames
    enc_fps = n_frames / meta["encoder_seconds"]
    bound = 1 / (1 / flow_fps + 1 / enc_fps)
    fps = n_frames / ours["seconds"]
    print(f"\n## End to end, {args.seconds:g} s 640x480 ({n_frames} frames), CLI defaults\n")
    print(
        "| run | wall s | frames/s | flow alone fps | encoder fps (per output frame) | bound fps | vs bound | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| this commit ({meta.get('runtime_used')}, {meta['windowing']}, {encoded / n_frames:.2f} passes) | {ours['seconds']:.1f} | {fps:.2f} | {flow_fps:.1f} | {enc_fps:.1f} | {bound:.2f} | {fps / bound:.2f} | {ours['rss'] / 1e6:.0f} |"
    )
    if args.baseline_commit:
        base_dir = work / "baseline"
        if not base_dir.exists():
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(ROOT),
                    "worktree",
                    "add",
                    "--detach",
                    str(base_dir),
                    args.baseline_commit,
                ],
                check=True,
                capture_output=True,
            )
        benv = {**env, "PYTHONPATH": str(base_dir / "src")}
        base = run_measured(extract_cmd(python, video, work / "base.parquet", []), benv, tmp)
        bfps = n_frames / base["seconds"]
        print(
            f"| {args.baseline_commit} (its defaults) | {base['seconds']:.1f} | {bfps:.2f} | | | | | {base['rss'] / 1e6:.0f} |"
        )
        print(f"\nspeed-up end to end: {fps / bfps:.2f}x")

    # 3. memory and disk against length
    print("\n## Memory and disk against length (160x120, GAP, Mixed_5c, defaults)\n")
    print("| minutes | frames | wall s | frames/s | peak RSS MB | peak extra disk MB |")
    print("|---|---|---|---|---|---|")
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        v = make_video(work / f"mem_{minutes:g}min_160x120.mp4", minutes * 60, 120, 160)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        out_dir = work / "out"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        r = run_measured(extract_cmd(python, v, out_dir / "f.parquet", []), env, tmp)
        extra = r["disk"]
        frames = int(minutes * 60 * 30)
        rows.append((minutes, r))
        print(
            f"| {minutes:g} | {frames} | {r['seconds']:.1f} | {frames / r['seconds']:.1f} | {r['rss'] / 1e6:.0f} | {extra / 1e6:.1f} |"
        )
    if len(rows) >= 2:
        growth = (rows[-1][1]["rss"] - rows[0][1]["rss"]) / 1e6
        print(
            f"\nRSS growth {rows[0][0]:g} → {rows[-1][0]:g} min: {growth:+.0f} MB (goal ≤ +100 MB)"
        )
    print(json.dumps({"flow_fps": flow_fps, "encoder_fps": enc_fps, "fps": fps, "bound": bound}))


if __name__ == "__main__":
    main()
