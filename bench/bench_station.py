"""Station throughput and live latency, ONNX Runtime CPU, one run (issue 16).

Arms (ABAB-interleaved over ``--rounds``, medians reported; the machine's load average is
printed before and after, since other work on a shared CPU moves every figure):

1. throughput: 4 live cameras (in-memory demo-line frames replayed at ``--fast-fps``, i.e.
   faster than they can be processed) batched by one station process vs 4 one-camera
   ``edge run`` processes (``run_bundle``, overlap on) at the same time: frames/s per camera;
   again with cameras at each of ``--rates`` (a camera far faster than the consumer costs a
   reader wake-up per frame it delivers, most of them dropped).
2. batch sweep: 8 such cameras in one station with ``max_batch`` 1, 2, 4, 8: frames/s per
   camera; and the inference alone (trunk + merged heads) per frame at batch 1/2/4/8.
3. latency: 4 cameras at 30 fps in one station vs one camera alone (``run_bundle``) at 30 fps:
   e2e p50/p99 (capture -> results written).
4. live e2e: one camera at 30 fps, 640x480 and 1280x720 frames (``run_bundle``): e2e p50 vs
   trunk + heads p50 of the same run; preprocess p50; and the resize alone (``resize_frame``
   vs ``cv2.INTER_AREA``) for both sizes.

    python bench/bench_station.py [--bundle B] [--seconds 4] [--rounds 2]

Without ``--bundle`` the demo model is converted with a dynamic batch (1..8) into a temporary
folder (about 20 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.core.preprocess import resize_frame
from edge.data.demo_line import LineConfig, render_frame
from edge.runtime.pipeline import Pipeline
from edge.runtime.replay import ReplaySource
from edge.runtime.run import RunConfig, run_bundle
from edge.runtime.station import run_station
from edge.runtime.station_config import Camera, StationConfig

REPO = Path(__file__).resolve().parents[1]


def frames(width: int, height: int, n: int = 8) -> list[np.ndarray]:
    return [render_frame(i, LineConfig(width=width, height=height)).image for i in range(n)]


def single(bundle: Path, seconds: float, fps: float, size: tuple[int, int]) -> dict[str, Any]:
    """One camera through ``run_bundle`` (what one ``edge run`` process does)."""
    src = ReplaySource(frames(*size), fps=fps)
    c0 = time.process_time()
    s = run_bundle(bundle, RunConfig(source="replay", duration_s=seconds, warmup=10), source=src)
    st = s.stages
    return {
        "fps": s.fps,
        "frames_per_cpu_s": s.frames / (time.process_time() - c0),
        "e2e_p50": st["e2e"]["p50_ms"],
        "e2e_p99": st["e2e"]["p99_ms"],
        "infer_p50": st["trunk"]["p50_ms"] + st.get("heads", {"p50_ms": 0.0})["p50_ms"],
        "pre_p50": st["preprocess"]["p50_ms"],
    }


def station(
    bundle: Path, cams: int, seconds: float, fps: float, max_batch: int | None = None
) -> dict[str, Any]:
    imgs = frames(640, 480)
    cameras = tuple(Camera(f"c{i}", "replay") for i in range(cams))
    srcs = {c.id: ReplaySource(imgs, fps=fps, name=c.id) for c in cameras}
    cfg = StationConfig(cameras, duration_s=seconds, warmup=10, max_batch=max_batch)
    c0 = time.process_time()
    s = run_station(bundle, cfg, sources=srcs)
    cpu = time.process_time() - c0
    per = [c["fps"] for c in s["cameras"].values()]
    p99 = [c["stages"]["e2e"]["p99_ms"] for c in s["cameras"].values()]
    p50 = [c["stages"]["e2e"]["p50_ms"] for c in s["cameras"].values()]
    return {
        "fps_per_camera": statistics.mean(per),
        "frames_per_cpu_s": s["frames"] / cpu,
        "e2e_p50": statistics.median(p50),
        "e2e_p99": max(p99),
        "batches": s["batches"],
    }


def processes(bundle: Path, n: int, seconds: float, fps: float) -> tuple[float, float]:
    """``n`` one-camera processes at once; mean frames/s per camera, frames per CPU second
    (each process's CPU time over its run, loading and warm-up included, as for a station)."""
    cmd = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--seconds", str(seconds)]
    cmd += ["--fast-fps", str(fps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            raise SystemExit(f"a one-camera process failed (exit {p.returncode})")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    fps_cam = statistics.mean(o["fps"] for o in outs)
    return fps_cam, fps_cam * n / sum(o["fps"] / o["frames_per_cpu_s"] for o in outs)


def inference_per_frame(bundle: Path, batch: int, runs: int = 60) -> float:
    """Trunk + merged heads at ``batch``: ms per frame (median over ``runs``)."""
    with Pipeline(bundle) as p:
        x = np.repeat(p.preprocess(frames(320, 240, 1)[0]), batch, axis=0)
        assert p.parts is not None and p.parts.merged is not None
        ts = []
        for _ in range(runs + 5):
            t0 = time.perf_counter_ns()
            p.parts.all_heads(p.parts.taps({p.spec.name: x}))
            ts.append(time.perf_counter_ns() - t0)
        return statistics.median(ts[5:]) / 1e6 / batch


def resize_us(size: tuple[int, int]) -> tuple[float, float]:
    img = frames(*size, n=1)[0]
    out = []
    for fn in (
        lambda: resize_frame(img, 128, 128),
        lambda: cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA),
    ):
        ts = []
        for _ in range(200):
            t0 = time.perf_counter_ns()
            fn()
            ts.append(time.perf_counter_ns() - t0)
        out.append(statistics.median(ts) / 1e3)
    return out[0], out[1]


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def build(work: Path) -> Path:
    from edge.convert.bundle import ConvertConfig, convert_checkpoint

    out = work / "bundle"
    if (out / "manifest.json").is_file():
        return out
    ckpt = REPO / "edge" / "assets" / "demo.pt"
    cfg = ConvertConfig(out=out, dynamic_batch=True, max_batch=8, verify_frames=2)
    return convert_checkpoint(ckpt, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fast-fps", type=float, default=1000.0)
    ap.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",") if x],
        default=[300.0],
        help="more camera rates for the station vs processes arm (comma-separated fps)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    if a.child:
        assert a.bundle is not None
        print(json.dumps(single(a.bundle, a.seconds, a.fast_fps, (640, 480))))
        return
    bundle = a.bundle or build(Path(tempfile.mkdtemp(prefix="bench-station-")))
    print(f"bundle {bundle}; load average before: {load()} on {os.cpu_count()} CPUs")
    res: dict[str, list[float]] = {}

    def add(k: str, v: float) -> None:
        res.setdefault(k, []).append(v)

    batches: dict[str, Any] = {}
    rates = [a.fast_fps] + [r for r in a.rates if r != a.fast_fps]
    for _ in range(a.rounds):  # ABAB: each round runs every arm once
        s = station(bundle, 4, a.seconds, a.fast_fps)
        add("station 4 cams fps/cam", s["fps_per_camera"])
        add("station 4 cams frames/CPU-s", s["frames_per_cpu_s"])
        batches["4 cams"] = s["batches"]
        fps_cam, per_cpu = processes(bundle, 4, a.seconds, a.fast_fps)
        add("4 processes fps/cam", fps_cam)
        add("4 processes frames/CPU-s", per_cpu)
        for rate in rates[1:]:  # slower cameras: fewer frames read only to be dropped
            s = station(bundle, 4, a.seconds, rate)
            add(f"cameras at {rate:g} fps: station fps/cam", s["fps_per_camera"])
            fps_cam, _ = processes(bundle, 4, a.seconds, rate)
            add(f"cameras at {rate:g} fps: 4 processes fps/cam", fps_cam)
        for mb in (1, 2, 4, 8):
            s = station(bundle, 8, a.seconds, a.fast_fps, max_batch=mb)
            add(f"sweep 8 cams max_batch {mb} fps/cam", s["fps_per_camera"])
            add(f"inference alone batch {mb} ms/frame", inference_per_frame(bundle, mb))
        s = station(bundle, 4, a.seconds, 30.0)
        add("station 4x30fps e2e p50", s["e2e_p50"])
        add("station 4x30fps e2e p99", s["e2e_p99"])
        one = single(bundle, a.seconds, 30.0, (640, 480))
        add("one camera 30fps e2e p50", one["e2e_p50"])
        add("one camera 30fps e2e p99", one["e2e_p99"])
        for size in ((640, 480), (1280, 720)):
            r = single(bundle, a.seconds, 30.0, size)
            tag = f"{size[0]}x{size[1]}"
            add(f"live {tag} e2e p50", r["e2e_p50"])
            add(f"live {tag} trunk+heads p50", r["infer_p50"])
            add(f"live {tag} preprocess p50", r["pre_p50"])
            ours, area = resize_us(size)
            add(f"resize {tag} resize_frame us", ours)
            add(f"resize {tag} INTER_AREA us", area)
    med = {k: statistics.median(v) for k, v in res.items()}
    for k, v in med.items():
        print(f"{k:45s} {v:9.3f}   (rounds: {', '.join(f'{x:.3f}' for x in res[k])})")
    print(f"batches (4 cams, last round): {batches['4 cams']}")
    r1 = med["station 4 cams fps/cam"] / med["4 processes fps/cam"]
    r2 = med["station 4x30fps e2e p99"] / med["one camera 30fps e2e p99"]
    print(f"station vs 4 processes, frames/s per camera: {r1:.2f}x (target >= 1.3x)")
    for rate in rates[1:]:
        k = f"cameras at {rate:g} fps: "
        r = med[k + "station fps/cam"] / med[k + "4 processes fps/cam"]
        print(f"{k}station vs 4 processes, frames/s per camera: {r:.2f}x")
    r3 = med["station 4 cams frames/CPU-s"] / med["4 processes frames/CPU-s"]
    print(f"station vs 4 processes, frames per CPU second: {r3:.2f}x (load-independent)")
    print(f"station 4 cams e2e p99 / one camera alone: {r2:.2f}x (target <= 2x)")
    for tag in ("640x480", "1280x720"):
        r = med[f"live {tag} e2e p50"] / med[f"live {tag} trunk+heads p50"]
        print(
            f"live {tag}: e2e p50 / (trunk+heads) p50 = {r:.2f}x (target <= 1.3x); "
            f"preprocess p50 {med[f'live {tag} preprocess p50']:.3f} ms (target <= 0.3)"
        )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
