"""Folded vs unfolded trunk on ONNX Runtime CPU, side by side in one run (issue: convert).

The unfolded trunk is the training form exported as is (the fixed primitives as constant convs /
pools, concatenated, then the learnable 1x1; BN folded by the exporter); the folded trunk is what
``edge convert`` ships. Both run interleaved, same session options, same frames.

    python bench/bench_fold.py [--iters 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
import torch

from edge.convert.export import ExportOptions, export_trunk
from edge.convert.fold import fold_model
from edge.core.config import ModelConfig, TaskSpec
from edge.data.demo_line import demo_config
from edge.family.model import ETRNLP

TASK = (TaskSpec("defect", "classification", ("ok", "scratch", "hole", "stain")),)

CASES = {
    "4-primitive bank, constant width 64 (lbc, gauss, avgpool, identity)": ModelConfig(
        tasks=TASK,
        widths=(64, 64, 64, 64),
        depths=(1, 1, 1, 1),
        gamma=0.9,
        primitives=("lbc", "gauss", "avgpool", "identity"),
    ),
    "4-primitive bank, constant width 32 (lbc, gauss, avgpool, identity)": ModelConfig(
        tasks=TASK,
        widths=(32, 32, 32, 32),
        depths=(1, 1, 1, 1),
        gamma=0.9,
        primitives=("lbc", "gauss", "avgpool", "identity"),
    ),
    "4-primitive bank with dilated, constant width 32 (lbc, gauss, dilated, avgpool)": ModelConfig(
        tasks=TASK,
        widths=(32, 32, 32, 32),
        depths=(1, 1, 1, 1),
        gamma=0.9,
        primitives=("lbc", "gauss", "dilated", "avgpool"),
    ),
    "demo model (widths 16-32-64-96, lbc, gauss, avgpool, identity)": demo_config(),
}


def session(data: bytes, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def bench_case(config: ModelConfig, iters: int, threads: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = ETRNLP(config).eval()
    folded, report = fold_model(model)
    opts = ExportOptions()
    arms = {
        "unfolded": session(export_trunk(model, opts), threads),
        "folded": session(export_trunk(folded, opts), threads),
    }
    h, w = config.input_size
    frame = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(20):  # warm-up
        for s in arms.values():
            s.run(None, {"image": frame})
    for _ in range(iters):  # interleaved so drift hits both arms alike
        for name, s in arms.items():
            t = time.perf_counter_ns()
            s.run(None, {"image": frame})
            times[name].append((time.perf_counter_ns() - t) / 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    tot = report.totals("shared")
    return {
        "unfolded_ms": med["unfolded"],
        "folded_ms": med["folded"],
        "speedup": med["unfolded"] / med["folded"],
        "mac_ratio": tot["macs_before"] / tot["macs_after"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(
        f"ONNX Runtime {ort.__version__}, CPU, intra-op threads {args.threads}, "
        f"median of {args.iters} interleaved runs, batch 1"
    )
    print("| trunk | unfolded ms | folded ms | speed-up | MACs ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, cfg in CASES.items():
        r = bench_case(cfg, args.iters, args.threads)
        print(
            f"| {name} | {r['unfolded_ms']:.3f} | {r['folded_ms']:.3f} | "
            f"{r['speedup']:.2f}x | {r['mac_ratio']:.2f}x |"
        )


if __name__ == "__main__":
    main()
