"""Live latency and throughput of one camera through ``edge run``'s loop, the loops side by side.

Loops (``RunConfig``): ``threads`` = overlap with every frame handed to the prefetch and sink
threads (the loop before issue 16's adaptive handoff, ``adaptive=False``); ``adaptive`` = the
default (the calling thread takes, preprocesses and writes a frame itself while nothing else
waits); ``inline`` = ``overlap=False`` (everything after capture on the calling thread);
``warm`` = ``adaptive`` with ``keep_warm`` (the last frame rehearsed just before the next is due;
not in the default ``--loops``: it spends a second pass per frame).

Per loop and round (rounds interleave the loops, A B C then C B A, medians reported):

- live: one camera (``ReplaySource``, in-memory demo-line frames) at 30 fps, 640x480 and
  1280x720: e2e p50 / p99 (capture -> results written) and trunk + heads p50 of the same run,
  and their ratio (issue 16's target: e2e p50 <= 1.3x trunk + heads p50);
- load: the same camera at ``--fast-fps`` (faster than inference), 640x480: frames/s.

The load average is printed before and after (other work on a shared CPU moves every figure).

    python bench/bench_live.py [--bundle B] [--seconds 4] [--rounds 3] [--loops a,b] [--jsonl]

Without ``--bundle`` the demo model is converted into a temporary folder (about 20 s).
``--jsonl`` also writes each run's results lines (to a temporary file), as ``--out`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.data.demo_line import LineConfig, render_frame
from edge.runtime.replay import ReplaySource
from edge.runtime.run import RunConfig, run_bundle

REPO = Path(__file__).resolve().parents[1]
LOOPS: dict[str, dict[str, Any]] = {
    "threads": {"overlap": True, "adaptive": False},
    "adaptive": {"overlap": True},
    "inline": {"overlap": False},
    "warm": {"overlap": True, "keep_warm": True},
}


def frames(width: int, height: int, n: int = 8) -> list[np.ndarray]:
    return [render_frame(i, LineConfig(width=width, height=height)).image for i in range(n)]


def one_run(
    bundle: Path, imgs: list[np.ndarray], fps: float, seconds: float, loop: str, out: Path | None
) -> dict[str, float]:
    kw = {k: v for k, v in LOOPS[loop].items() if k in _FIELDS}
    if out is not None:
        out.unlink(missing_ok=True)
    cfg = RunConfig(source="replay", duration_s=seconds, warmup=10, out=out, **kw)
    s = run_bundle(bundle, cfg, source=ReplaySource(imgs, fps=fps))
    st = s.stages
    infer = st["trunk"]["p50_ms"] + st.get("heads", {"p50_ms": 0.0})["p50_ms"]
    return {
        "fps": s.fps,
        "e2e_p50": st["e2e"]["p50_ms"],
        "e2e_p99": st["e2e"]["p99_ms"],
        "infer_p50": infer,
        "ratio": st["e2e"]["p50_ms"] / infer,
        "pre_p50": st["preprocess"]["p50_ms"],
        "wait_p50": st["queue_wait"]["p50_ms"],
    }


_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def build(work: Path) -> Path:
    from edge.convert.bundle import ConvertConfig, convert_checkpoint

    out = work / "bundle"
    if (out / "manifest.json").is_file():
        return out
    ckpt = REPO / "edge" / "assets" / "demo.pt"
    return convert_checkpoint(ckpt, ConvertConfig(out=out, verify_frames=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fast-fps", type=float, default=1000.0)
    ap.add_argument("--loops", default="threads,adaptive,inline")
    ap.add_argument("--jsonl", action="store_true", help="write results lines (--out)")
    ap.add_argument("--arms", default="live,load", help="live (30 fps), load (--fast-fps)")
    a = ap.parse_args()
    loops = [x for x in a.loops.split(",") if x]
    if "adaptive" not in _FIELDS:  # a tree before the adaptive loop: its default is "threads"
        loops = [x for x in loops if x != "adaptive"]
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    bundle = a.bundle or build(work)
    out = work / "results.jsonl" if a.jsonl else None
    print(f"bundle {bundle}; load average before: {load()} on {os.cpu_count()} CPUs")
    small, large = frames(640, 480), frames(1280, 720)
    arms: dict[str, tuple[list[np.ndarray], float]] = {}
    if "live" in a.arms:
        arms.update({"live 640x480": (small, 30.0), "live 1280x720": (large, 30.0)})
    if "load" in a.arms:
        arms["load 640x480"] = (small, a.fast_fps)
    res: dict[tuple[str, str], list[dict[str, float]]] = {}
    t0 = time.monotonic()
    for k in range(a.rounds):
        for loop in loops if k % 2 == 0 else loops[::-1]:  # A B C, C B A, ...
            for arm, (imgs, fps) in arms.items():
                r = one_run(bundle, imgs, fps, a.seconds, loop, out)
                res.setdefault((loop, arm), []).append(r)
    print(f"{a.rounds} rounds of {a.seconds:g} s runs in {time.monotonic() - t0:.0f} s")

    def med(loop: str, arm: str, key: str) -> float:
        return statistics.median(r[key] for r in res[(loop, arm)])

    print(
        f"{'arm':16s} {'loop':9s} {'e2e p50':>8s} {'e2e p99':>8s} {'t+h p50':>8s} {'ratio':>6s} "
        f"{'best':>5s} {'pre p50':>8s} {'wait p50':>8s} {'frames/s':>8s}"
    )
    for arm in arms:
        for loop in loops:
            rs = res[(loop, arm)]
            vals = [med(loop, arm, k) for k in ("e2e_p50", "e2e_p99", "infer_p50", "ratio")]
            print(
                f"{arm:16s} {loop:9s} {vals[0]:8.3f} {vals[1]:8.3f} {vals[2]:8.3f} {vals[3]:6.2f} "
                f"{min(r['ratio'] for r in rs):5.2f} {med(loop, arm, 'pre_p50'):8.3f} "
                f"{med(loop, arm, 'wait_p50'):8.3f} {med(loop, arm, 'fps'):8.1f}"
            )
    print(
        "(ms, medians over rounds; ratio = e2e p50 / (trunk + heads) p50 of the same run, best: "
        "its lowest round; frames/s: processed, the camera at 30 or --fast-fps)"
    )
    for arm in arms:  # paired per round (load drifts between rounds)
        key = "fps" if arm.startswith("load") else "e2e_p50"
        for loop in loops:
            if loop == "threads" or "threads" not in loops:
                continue
            pairs = [n[key] / o[key] for n, o in zip(res[(loop, arm)], res[("threads", arm)])]
            print(
                f"{loop} / threads, {arm} {key}: median {statistics.median(pairs):.3f} "
                f"(rounds: {', '.join(f'{x:.2f}' for x in pairs)})"
            )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
