"""Triton (the repository of edge export-triton) vs the in-process runtime, one run.

Part 1, concurrency: 1, 2 and 4 clients, each a thread with its own ``Pipeline`` processing
demo-line frames as fast as it can (trunk once + merged heads, every task due): in-process on
ONNX Runtime (each client its own sessions) vs the same pipeline on ``--backend triton`` against
one server (its dynamic batcher shared by the clients), split mode (trunk, then the merged heads:
the taps travel back to the client) and fused mode (the ensemble: one request per frame). Reports
total frames/s and the per-frame latency p50/p99.

Part 2, one client: the ensemble (trunk once, every head in the server) vs every head requested
separately through the BLS model (one request per task: the trunk runs once per task), vs the
BLS model asked for every task (trunk once, heads in the server), vs the client calling the trunk
then each head (taps round-trip).

The server is the nvidia-pytriton wheel's tritonserver on this machine's CPU (python flavor: the
parts run on ONNX Runtime inside Triton's Python backend), so the figures show the serving
overhead and batching, not GPU speed. Needs the venv of docs/triton.md ($EDGE_TRITON_VENV or
.triton-venv) and torch (to convert the demo checkpoint with a dynamic batch).

    python bench/bench_triton.py [--frames 200] [--queue-delay-us 200] [--clients 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.convert.bundle import ConvertConfig, convert_checkpoint
from edge.convert.triton import TritonExportConfig, export_triton
from edge.convert.triton.server import VENV_ENV, LocalTritonServer
from edge.core.manifest import load_bundle
from edge.data.demo_line import render_frame
from edge.runtime.backends.triton import TritonClient
from edge.runtime.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def clients_arm(
    make: Callable[[], Pipeline], frames: list[np.ndarray], n_clients: int, per_client: int
) -> dict[str, float]:
    """n_clients threads, each its own pipeline, each processing per_client frames."""
    pipes = [make() for _ in range(n_clients)]
    for p in pipes:
        p.warmup(5)
    lat: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_clients + 1)

    def work(p: Pipeline, k: int) -> None:
        mine = []
        barrier.wait()
        for i in range(per_client):
            t0 = time.perf_counter()
            p.process(frames[(i + k) % len(frames)])
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=work, args=(p, k)) for k, p in enumerate(pipes)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for p in pipes:
        p.close()
    return {
        "fps": n_clients * per_client / wall,
        "p50_ms": 1e3 * _pct(lat, 0.5),
        "p99_ms": 1e3 * _pct(lat, 0.99),
    }


def one_client_arms(url: str, bundle_path: Path, frames: list[np.ndarray], n: int) -> None:
    bundle = load_bundle(bundle_path)
    c = TritonClient(url)
    with Pipeline(bundle_path) as p:
        inputs = [p.preprocess(f) for f in frames]
    name = bundle.input.name
    tasks = list(bundle.tasks)
    heads = {t: (f"etr_head_{t}", bundle.tasks[t].output) for t in tasks}

    def ensemble(x: np.ndarray) -> None:
        c.infer("etr_ensemble", {name: x})

    def bls_all(x: np.ndarray) -> None:
        c.infer("etr_bls", {name: x})

    def bls_each(x: np.ndarray) -> None:
        for t in tasks:
            c.infer("etr_bls", {name: x}, parameters={"tasks": t})

    def client_split(x: np.ndarray) -> None:
        taps = c.infer("etr_trunk", {name: x})
        for model, _ in heads.values():
            c.infer(model, taps)

    arms = {
        "ensemble (trunk once, heads in server)": ensemble,
        "BLS, every task in one request": bls_all,
        "BLS, one request per task (trunk x4)": bls_each,
        "client: trunk, then each head (taps round-trip)": client_split,
    }
    times: dict[str, list[float]] = {k: [] for k in arms}
    for fn in arms.values():
        for x in inputs[:3]:
            fn(x)
    for i in range(n):  # interleaved: each frame through every arm
        for key, fn in arms.items():
            t0 = time.perf_counter()
            fn(inputs[i % len(inputs)])
            times[key].append(time.perf_counter() - t0)
    base = statistics.median(times["ensemble (trunk once, heads in server)"])
    print("\none client, per frame (every task)        p50 ms   p99 ms   ÷ ensemble")
    for key, t in times.items():
        med = statistics.median(t)
        print(f"  {key:44s} {1e3 * med:6.2f}  {1e3 * _pct(t, 0.99):7.2f}   {med / base:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200, help="frames per client per arm")
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--queue-delay-us", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    venv = Path(os.environ.get(VENV_ENV) or ROOT / ".triton-venv")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-triton-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "bundle"
    if not (bundle / "manifest.json").is_file():
        convert_checkpoint(
            ROOT / "edge/assets/demo.pt",
            ConvertConfig(out=bundle, dynamic_batch=True, max_batch=8, verify_frames=2),
        )
    repo = export_triton(
        bundle,
        TritonExportConfig(
            out=work / "repo", flavor="python", queue_delay_us=a.queue_delay_us, force=True
        ),
    )
    frames = [render_frame(i).image for i in range(32)]
    spec = load_bundle(bundle).input
    print(
        f"demo model {spec.height}x{spec.width}, 4 tasks; {os.cpu_count()} CPUs; python flavor, "
        f"queue delay {a.queue_delay_us} us, {a.frames} frames per client"
    )
    with LocalTritonServer(repo, venv=venv) as server:
        url = server.url
        arms: dict[str, Callable[[], Pipeline]] = {
            "in-process (onnxruntime)": lambda: Pipeline(bundle),
            "triton split (trunk, merged heads)": lambda: Pipeline(
                bundle, backend="triton", backend_options={"server": url}
            ),
            "triton ensemble (--fused)": lambda: Pipeline(
                bundle, backend="triton", backend_options={"server": url}, split=False
            ),
        }
        print("\nclients  arm                                  frames/s   p50 ms   p99 ms")
        for n in [int(v) for v in a.clients.split(",")]:
            base = None
            for key, make in arms.items():
                r = clients_arm(make, frames, n, a.frames)
                base = base or r["fps"]
                print(
                    f"  {n}      {key:36s} {r['fps']:8.1f} ({r['fps'] / base:4.2f}x)"
                    f"  {r['p50_ms']:6.2f}  {r['p99_ms']:7.2f}"
                )
        client = TritonClient(url)
        for model in ("etr_trunk", "etr_heads_all"):
            stats = client.stats(model)["model_stats"][0]
            sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
            print(f"  {model}: executions by batch size {dict(sorted(sizes.items()))}")
        one_client_arms(url, bundle, frames, a.frames)


if __name__ == "__main__":
    main()
