"""etr-edge calibration vs NVIDIA ModelOpt's ONNX PTQ, same model, same frames (issue 17).

Both calibrate the demo bundle with entropy on the same calibration frames (``--frames``, of
``--data``; default 512 demo-line frames, seed 0):

- etr-edge: the full ``edge calibrate BUNDLE --eval-frames 0`` (every part: TensorRT caches of
  the trunk and heads, Q/DQ models of all parts, the fused one included), in a subprocess;
- ModelOpt: ``python -m modelopt.onnx.quantization --quantize_mode int8 --calibration_method
  entropy --calibration_eps cpu`` on the bundle's fused graph as it is (batch 1, the frames as
  one .npy), in a subprocess of its own virtual environment. (Given a dynamic-batch copy and
  ``--calibration_shapes image:32x128x128x3`` instead, its entropy scales came out near the
  absmax, and its mask IoU 0.3 higher; that is not how a bundle's graph is handed to it.)
  The benchmark creates that venv under ``--cache`` (default
  ``~/.cache/etr-edge/modelopt-venv``): ``torch==2.13.0`` first (the CPU build, so pip does not
  pull a CUDA one), then ``nvidia-modelopt[onnx]==--modelopt-version``.

Each runs ``--repeats`` times, alternately; wall time and peak RSS (sampled every 5 ms) are of
whole processes, interpreter and imports included: what a user waits for.
Then the FP32 fused graph and both INT8 fused graphs run on ``--eval-frames`` held-out demo-line
frames (indices from ``HOLDOUT_OFFSET`` on, never used in training) and are scored with the
project's metrics, with a paired bootstrap interval of etr-edge - ModelOpt
(``bench_calib_vs_ort.evaluate``). Last, ONNX Runtime CPU latency (batch 1, one thread,
interleaved rounds, median) of each INT8 graph relative to FP32.

    python bench/bench_calib_vs_modelopt.py [--checkpoint edge/assets/demo.pt] [--frames 512]
                                            [--eval-frames 512] [--repeats 2]
                                            [--algorithm entropy|minmax|percentile|mse]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calib_vs_ort import evaluate, prepare

MODELOPT_VERSION = "0.47.0"
TORCH_CPU = "torch==2.13.0"


def modelopt_python(cache: Path, version: str) -> Path:
    """The venv's python with ModelOpt installed (created on first use)."""
    venv = cache / "modelopt-venv"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import modelopt, onnxruntime; print(modelopt.__version__)"]
    if py.exists():
        got = subprocess.run(probe, capture_output=True, text=True)
        if got.returncode == 0 and got.stdout.strip() == version:
            return py
    print(f"installing nvidia-modelopt[onnx]=={version} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH_CPU], check=True)
    subprocess.run([*pip, f"nvidia-modelopt[onnx]=={version}"], check=True)
    subprocess.run(probe, check=True, capture_output=True)
    return py


def timed(cmd: list[str], cwd: Path | None = None, period: float = 0.005) -> dict[str, float]:
    """Run ``cmd``; its wall time and peak RSS in MB (its process tree's RSS sampled every
    ``period`` s: the child's own ``ru_maxrss`` would report this process's RSS, which Linux
    carries over fork and exec). Raises with its output if it fails."""
    import psutil

    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        ps, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass  # the process ended between poll() and the sample
            time.sleep(period)
        wall = time.perf_counter() - t0
        if proc.returncode:
            log.seek(0)
            out = log.read().decode(errors="replace")
            raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{out[-3000:]}")
    return {"wall_s": wall, "rss_mb": peak / 2**20}


def latency(models: dict[str, Path], rounds: int = 7, runs: int = 100) -> dict[str, float]:
    """Median ms per batch-1 run of each model, ONNX Runtime CPU, 1 thread, interleaved."""
    import onnx

    from edge.calib.collect import session, with_outputs

    sessions = {
        k: session(with_outputs(onnx.load(str(p)), []), threads=1) for k, p in models.items()
    }
    x = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    name = next(iter(sessions.values())).get_inputs()[0].name
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(10):
            s.run(None, {name: x})
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(None, {name: x})
            times[k].append((time.perf_counter() - t0) / runs * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="edge/assets/demo.pt")
    ap.add_argument("--bundle", help="an existing bundle (default: convert --checkpoint)")
    ap.add_argument("--data", default="synthetic:")
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-frames", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--algorithm",
        default="entropy",
        help="etr-edge's --algorithm (ModelOpt always calibrates with entropy)",
    )
    ap.add_argument("--dense-algorithm", help="etr-edge's --dense-algorithm")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "etr-edge"))
    ap.add_argument("--modelopt-version", default=MODELOPT_VERSION)
    args = ap.parse_args()
    mo_py = modelopt_python(Path(args.cache), args.modelopt_version)
    with tempfile.TemporaryDirectory(prefix="bench-modelopt-") as tmp:
        work = Path(tmp)
        bundle, held, _ = prepare(args, work)
        ours_bundle = work / "ours"
        shutil.copytree(bundle.root, ours_bundle)
        ours_cmd = [
            sys.executable,
            "-c",
            "import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))",
            "calibrate",
            str(ours_bundle),
            f"--data={args.data}",
            f"--frames={args.frames}",
            f"--batch={args.batch}",
            f"--seed={args.seed}",
            "--eval-frames=0",
            f"--algorithm={args.algorithm}",
            *([f"--dense-algorithm={args.dense_algorithm}"] if args.dense_algorithm else []),
        ]
        mo_out = work / "int8_modelopt.onnx"
        mo_cmd = [
            str(mo_py),
            "-m",
            "modelopt.onnx.quantization",
            f"--onnx_path={bundle.path('fused')}",
            "--quantize_mode=int8",
            "--calibration_method=entropy",
            f"--calibration_data_path={work / 'calib.npy'}",
            "--calibration_eps",
            "cpu",
            f"--output_path={mo_out}",
        ]
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "modelopt": []}
        load = os.getloadavg()
        for _ in range(args.repeats):
            runs["ours"].append(timed(ours_cmd))
            runs["modelopt"].append(timed(mo_cmd, cwd=work))
        models = {
            "fp32": work / "fused_dyn.onnx",
            "ours": ours_bundle / "int8" / "fused.onnx",
            "modelopt": mo_out,
        }
        metrics = evaluate(bundle, held, models, args.batch, baseline="modelopt")
        lat = latency(models)
        load_after = os.getloadavg()
    report(args, runs, metrics, lat, (load, load_after))


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, float]]],
    metrics: dict[str, Any],
    lat: dict[str, float],
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> None:
    def med(which: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[which])

    tasks = list(metrics)
    print(
        f"\n{args.frames} calibration frames of {args.data} (seed {args.seed}), etr-edge "
        f"{args.algorithm} (dense heads: {args.dense_algorithm or args.algorithm}), "
        "ModelOpt entropy; "
        f"{args.eval_frames} held-out demo-line frames; median of {args.repeats} runs; "
        f"load average {load[0][0]:.1f} before, {load[1][0]:.1f} after ({os.cpu_count()} CPUs)\n"
    )
    head = " | ".join(f"{t} {metrics[t]['metric']}" for t in tasks)
    print(f"| | {head} | calib wall s | peak RSS MB | ORT CPU vs FP32 |")
    print("|---|" + "---:|" * (len(tasks) + 3))
    rows = (
        ("fp32", "FP32"),
        ("ours", "etr-edge"),
        ("modelopt", f"ModelOpt {args.modelopt_version}"),
    )
    for key, label in rows:
        cells = " | ".join(f"{metrics[t][key]:.3f}" for t in tasks)
        wall = f"{med(key, 'wall_s'):.1f}" if key in runs else ""
        rss = f"{med(key, 'rss_mb'):.0f}" if key in runs else ""
        ratio = lat["fp32"] / lat[key]
        print(f"| {label} | {cells} | {wall} | {rss} | {ratio:.2f}x |")
    ci = " | ".join(
        f"{metrics[t]['ours'] - metrics[t]['modelopt']:+.3f} "
        f"[{metrics[t]['ci'][0]:+.3f}, {metrics[t]['ci'][1]:+.3f}]"
        if "ci" in metrics[t]
        else ""
        for t in tasks
    )
    print(f"| etr-edge - ModelOpt (95 % CI) | {ci} | | | |")
    speed = med("modelopt", "wall_s") / med("ours", "wall_s")
    mem = med("ours", "rss_mb") / med("modelopt", "rss_mb")
    print(
        f"\ncalibration: etr-edge {speed:.2f}x faster (goal >= 1.5x), peak RSS "
        f"{mem:.2f} of ModelOpt's (goal <= 0.75); ORT CPU ms/frame: "
        + ", ".join(f"{k} {v:.2f}" for k, v in lat.items())
        + f"; etr-edge / ModelOpt latency {lat['ours'] / lat['modelopt']:.2f} (goal <= 1)"
    )
    print("(MAE: lower is better, a negative difference favours etr-edge)")
    print(json.dumps({"runs": runs, "latency_ms": lat}))


if __name__ == "__main__":
    main()
