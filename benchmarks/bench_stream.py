"""Streaming extraction at the size of real sessions: open time, frames/s per phase, memory, disk.

    python benchmarks/bench_stream.py [--seconds 20] [--minutes 2,20] [--baseline-commit REV]

1. Open time of a long video (first open, second open) against decoding a tenth of it.
2. End to end on a generated 640×480 video of ``--seconds`` with the CLI's defaults
   (``flow-features extract``): frames/s, against the bound ``1 / (1/flow + 1/encoder)`` measured in
   the same run (flow alone, encoder alone), the encoder's passes per frame of every row (the
   metadata's ``encoder_frames_per_output_frame``), the same with 256-frame chunks, and against the
   code at ``--baseline-commit`` (run from a temporary ``git worktree`` with its own defaults) on
   the same video. Where PyTorch sees a CUDA GPU, a row on the device the defaults did not use
   (``runtime: auto`` runs on the GPU there, so the extra row is the CPU runtime; ``--runtime
   torch`` if the defaults stayed on the CPU) and the GPU's speed-up over the CPU; otherwise one
   line saying why the GPU row was not measured. The scaling across Dask workers is
   ``bench_split.py``'s table.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_gpu
# Speed does not depend on the weights' values: random weights keep the benchmark offline.
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
    # Output to files, not pipes: a full pipe would block the child (tqdm writes a lot).
    out_file = tempfile.TemporaryFile("w+")
    err_file = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, env=env, stdout=out_file, stderr=err_file, text=True)
    ps = psutil.Process(proc.pid)
    peak_rss = peak_disk = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
            peak_rss = max(peak_rss, rss)
        except psutil.Error:
            pass
        disk = 0
        for f in tmpdir.rglob("*"):
            try:
                disk += f.stat().st_size if f.is_file() else 0
            except OSError:  # removed while we looked
                pass
        peak_disk = max(peak_disk, disk)
        time.sleep(0.05)
    proc.wait()
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - start, "rss": peak_rss, "disk": peak_disk, "out": out}


def extract_cmd(python: str, video: Path, out: Path, extra: list[str]) -> list[str]:
    return [python, "-m", "napari_flow_features.cli", "extract", str(video), "-o", str(out), *extra]


def open_times(video: Path, warm: Path) -> dict:
    """In a fresh process: open another video first (library start-up), then time opening
    ``video``, decoding a tenth of it in order, and a far jump (which builds the seek index)."""
    code = (
        "import time\n"
        "from napari_flow_features.io.video import VideoArray\n"
        f"VideoArray({str(warm)!r})[0]\n"
        f"t = time.perf_counter(); v = VideoArray({str(video)!r}); t1 = time.perf_counter() - t\n"
        "n = len(v); t = time.perf_counter()\n"
        "for f in v.iter_frames(0, n // 10): pass\n"
        "t2 = time.perf_counter() - t; t = time.perf_counter(); v[n - 5]\n"
        "print(t1, t2, time.perf_counter() - t, v.index_from_cache, n)\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        for _ in range(2)
    ]
    for r in runs:
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
    a, b = (r.stdout.split() for r in runs)
    return {"open1": float(a[0]), "tenth": float(a[1]), "jump1": float(a[2]),
            "open2": float(b[0]), "jump2": float(b[2]), "cached": b[3], "n": int(a[4])}  # fmt: skip


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
    parser.add_argument("--parts", default="open,e2e,memory", help="which tables to measure")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}")
    python = sys.executable

    parts = set(args.parts.split(","))
    flow_fps = enc_fps = fps = bound = float("nan")
    # 1. open time
    if "open" in parts:
        open_table(work, args.open_minutes)
    if "e2e" in parts:
        flow_fps, enc_fps, fps, bound = end_to_end(work, args, python)
    if "memory" in parts:
        memory_table(work, args, python)
    print(json.dumps({"flow_fps": flow_fps, "encoder_fps": enc_fps, "fps": fps, "bound": bound}))


def open_table(work: Path, open_minutes: float) -> None:
    """Open time of a short and a long video against decoding a tenth of each."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["NAPARI_FLOW_FEATURES_CACHE"] = str(cache)
    warm = make_video(work / "warm_2s_160x120.mp4", 2, 120, 160)
    print("\n## Open (160x120 mp4; fresh process, library warmed on another file)\n")
    print(
        "| video | frames | MB | open s | open again s | decode a tenth s | open / tenth | far jump s (builds index) | far jump after reopen s (cached index) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for minutes in (1.0, open_minutes):
        video = make_video(work / f"open_{minutes:g}min_160x120.mp4", minutes * 60, 120, 160)
        o = open_times(video, warm)
        print(f"| {minutes:g} min | {o['n']} | {video.stat().st_size / 1e6:.0f} | {o['open1']:.4f} | "
              f"{o['open2']:.4f} | {o['tenth']:.2f} | {o['open1'] / o['tenth']:.4f} | "
              f"{o['jump1']:.3f} | {o['jump2']:.3f} ({o['cached']}) |")  # fmt: skip


def end_to_end(work: Path, args: argparse.Namespace, python: str) -> tuple:
    """The CLI's defaults on a 640x480 video against the bound, the other device and the baseline."""
    video = make_video(work / f"e2e_{args.seconds:g}s_640x480.mp4", args.seconds, 480, 640)
    n_frames = int(args.seconds * 30)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)

    def measure(name: str, extra: list[str], run_env: dict = env) -> tuple[dict, dict]:
        from napari_flow_features.io.tables import read_table

        run = run_measured(extract_cmd(python, video, work / name, extra), run_env, tmp)
        return run, dict(read_table(work / name).attrs)

    ours, meta = measure("e2e.parquet", [])
    # Flow alone (same method and size as the defaults) in this same session; the encoder's own
    # time comes from each run's metadata.
    from napari_flow_features.flow.compute import OpticalFlowComputer

    tick = time.perf_counter()
    OpticalFlowComputer("dis", max_side=256).compute(video)
    flow_fps = n_frames / (time.perf_counter() - tick)
    runs = {f"this commit, defaults ({run_where(meta)})": (ours, meta)}
    # The same defaults with the fixed 256-frame chunks of earlier versions: passes per frame,
    # encoder time and peak memory against chunk_length auto (sized to the memory budget).
    fixed = runs["chunk_length 256"] = measure("e2e_256.parquet", ["--chunk-length", "256"])
    other, note = other_device(meta)
    if other is not None:
        other_run = measure("e2e_other.parquet", other)
        runs[f"{' '.join(other)} ({run_where(other_run[1])})"] = other_run
    if args.baseline_commit:
        base_dir = work / "baseline"
        if not base_dir.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_dir),
                            args.baseline_commit], check=True, capture_output=True)  # fmt: skip
        benv = {**env, "PYTHONPATH": str(base_dir / "src")}
        runs[f"{args.baseline_commit} (its own defaults)"] = measure("base.parquet", [], benv)
    print(f"\n## End to end, {args.seconds:g} s 640x480 ({n_frames} frames), CLI defaults\n")
    print("| run | wall s (with start-up) | frames/s wall | frames/s streaming | flow alone fps | "
          "encoder fps (per output frame) | passes | bound fps | streaming / bound | "
          "peak RSS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, (run, run_meta) in runs.items():
        print(e2e_row(label, run, run_meta, n_frames, flow_fps))
    passes, fmeta = meta["encoder_frames_per_output_frame"], fixed[1]
    print(
        f"\npasses: the encoder's frames per output frame (encoder_frames_per_output_frame). "
        f"chunk_length auto: {meta['chunk_length']} frames, {passes:.3f} passes per frame "
        f"(goal ≤ 1.15), peak RSS {ours['rss'] / 1e9:.2f} GB (goal < 4 GB); encoder seconds with "
        f"256-frame chunks / with auto: {fmeta['encoder_seconds'] / meta['encoder_seconds']:.2f}"
    )
    print(note if other is None else device_ratio(meta, other_run[1], n_frames))
    if args.baseline_commit:
        base = runs[f"{args.baseline_commit} (its own defaults)"][0]
        speed_up = base["seconds"] / ours["seconds"]
        print(f"speed-up end to end over {args.baseline_commit} (wall, start-up included): "
              f"{speed_up:.2f}x")  # fmt: skip
    print("Scaling of one long video across Dask workers (1, 2, 4): benchmarks/bench_split.py")
    enc_fps = n_frames / meta["encoder_seconds"]
    return flow_fps, enc_fps, n_frames / meta["seconds"], 1 / (1 / flow_fps + 1 / enc_fps)


def run_where(meta: dict) -> str:
    """The runtime and device a run used, from its metadata: ``"openvino on cpu"``."""
    return f"{meta.get('runtime_used', '?')} on {meta.get('runtime_device', '?')}"


def e2e_row(label: str, run: dict, meta: dict, n_frames: int, flow_fps: float) -> str:
    """One row of the end-to-end table; blank cells where a run's metadata lacks the value (the
    baseline commit's may predate ``encoder_seconds`` or ``encoder_frames_per_output_frame``)."""

    def per_frame(key: str) -> float | None:
        return n_frames / meta[key] if meta.get(key) else None

    streaming, encoder = per_frame("seconds"), per_frame("encoder_seconds")
    bound = 1 / (1 / flow_fps + 1 / encoder) if encoder else None
    cells = [
        label,
        f"{run['seconds']:.1f}",
        f"{n_frames / run['seconds']:.2f}",
        streaming,
        flow_fps if encoder else None,
        encoder,
        meta.get("encoder_frames_per_output_frame"),
        bound,
        streaming / bound if streaming and bound else None,
        f"{run['rss'] / 1e6:.0f}",
    ]
    text = [c if isinstance(c, str) else "" if c is None else f"{c:.2f}" for c in cells]
    return "| " + " | ".join(text) + " |"


def other_device(meta: dict) -> tuple[list[str] | None, str]:
    """The extra run on the device the defaults did not use, or None and why there is none.

    With a CUDA GPU visible, ``runtime: auto`` already runs on it (torch): the extra run is then the
    CPU runtime auto picks without a GPU. Otherwise, where PyTorch sees a GPU but the defaults ran
    on the CPU, the extra run is ``--runtime torch``.
    """
    from bench_gpu import no_gpu_reason
    from napari_flow_features.model.runtime import resolve_runtime

    reason = no_gpu_reason()
    if reason is not None:
        return None, f"GPU row: not measured ({reason})"
    if str(meta.get("runtime_device", "")).startswith("cuda"):
        return ["--runtime", resolve_runtime("auto", lambda: False)], ""
    return ["--runtime", "torch"], ""


def device_ratio(meta: dict, other: dict, n_frames: int) -> str:
    """How much faster the GPU run streamed and encoded than the CPU run, both of this run."""
    gpu, cpu = (meta, other) if str(meta["runtime_device"]).startswith("cuda") else (other, meta)
    return (
        f"GPU ({run_where(gpu)}) against CPU ({run_where(cpu)}): streaming "
        f"{cpu['seconds'] / gpu['seconds']:.2f}x, encoder "
        f"{cpu['encoder_seconds'] / gpu['encoder_seconds']:.2f}x ({n_frames} frames each)"
    )


def memory_table(work: Path, args: argparse.Namespace, python: str) -> None:
    """Peak RSS and extra disk of extract for videos of each length (small frames)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tmp = work / "tmp"
    env["TMPDIR"] = str(tmp)
    print("\n## Memory and disk against length (160x120, GAP, Mixed_5c, defaults)\n")
    print(
        "| minutes | frames | wall s | frames/s | peak RSS MB | peak extra disk in TMPDIR MB (the output table itself excluded) |"
    )
    print("|---|---|---|---|---|---|")
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        v = make_video(work / f"mem_{minutes:g}min_160x120.mp4", minutes * 60, 120, 160)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        r = run_measured(extract_cmd(python, v, work / "mem_out.parquet", []), env, tmp)
        frames = int(minutes * 60 * 30)
        rows.append((minutes, r))
        print(f"| {minutes:g} | {frames} | {r['seconds']:.1f} | {frames / r['seconds']:.1f} | "
              f"{r['rss'] / 1e6:.0f} | {r['disk'] / 1e6:.1f} |")  # fmt: skip
    if len(rows) >= 2:
        growth = (rows[-1][1]["rss"] - rows[0][1]["rss"]) / 1e6
        print(
            f"\nRSS growth {rows[0][0]:g} → {rows[-1][0]:g} min: {growth:+.0f} MB (goal ≤ +100 MB)"
        )


if __name__ == "__main__":
    main()
