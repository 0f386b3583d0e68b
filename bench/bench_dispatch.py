"""Trunk-once dispatch vs independent single-task networks, ONNX Runtime CPU, one run.

Targets (issue 5): all four demo tasks through the trunk once + four heads at least 2.5x faster
than four independent single-task networks of the same per-task width (each its own trunk + its
head); one head of four at most 1.3x the trunk alone.

The multi-task bundle is the demo model (``edge.core.config.demo_config()``: widths 16-32-64-96,
gamma 0.9, 128x128). Each single-task network is the same ``ModelConfig`` with one task (same
widths, gamma, primitives, seed), converted the same way (folded, exported, simplified).
Untrained weights are fine for speed. Every arm runs through the runtime's backend API
(``run_taps`` / ``run_from_taps``, validation included), interleaved per iteration so drift
hits all arms alike, with the same session options; medians are reported.

    python bench/bench_dispatch.py [--iters 300] [--sweep] [--workdir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.convert.bundle import ConvertConfig, convert_checkpoint
from edge.core.config import ModelConfig
from edge.core.errors import EdgeError
from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input
from edge.data.demo_line import demo_config
from edge.family.checkpoint import save_checkpoint
from edge.family.model import ETRNLP
from edge.runtime.backends.ort import OnnxRuntimeBackend, OrtOptions


def build_bundle(config: ModelConfig, folder: Path) -> Path:
    out = folder / "bundle"
    if (out / "manifest.json").is_file():
        try:
            if load_bundle(out).merged_heads or len(config.tasks) == 1:
                return out  # reuse a --workdir bundle, unless an older convert made it
        except EdgeError:
            pass  # unreadable: build it again
        import shutil

        shutil.rmtree(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    ckpt = save_checkpoint(folder / "model.pt", ETRNLP(config).eval(), {"metrics": {}})
    return convert_checkpoint(ckpt, ConvertConfig(out=out, verify_frames=2))


class Split:
    """A bundle's trunk and heads on the ORT backend."""

    def __init__(self, bundle: Path, opts: OrtOptions) -> None:
        b = load_bundle(bundle)
        self.trunk = OnnxRuntimeBackend(opts).load(b.path("trunk"))
        self.heads = {t: OnnxRuntimeBackend(opts).load(b.path(o.head)) for t, o in b.tasks.items()}
        self.fused = OnnxRuntimeBackend(opts).load(b.path("fused"))
        self.merged = (
            OnnxRuntimeBackend(opts).load(b.path(b.merged_heads)) if b.merged_heads else None
        )

    def trunk_and(self, x: np.ndarray, tasks: list[str]) -> None:
        taps = self.trunk.run_taps({"image": x})
        for t in tasks:
            self.heads[t].run_from_taps(taps)

    def trunk_and_merged(self, x: np.ndarray) -> None:
        assert self.merged is not None
        self.merged.run_from_taps(self.trunk.run_taps({"image": x}))

    def close(self) -> None:
        for b in [self.trunk, self.fused, *self.heads.values()]:
            b.close()
        if self.merged is not None:
            self.merged.close()


def run_arms(
    arms: dict[str, Callable[[], object]], iters: int, warmup: int = 30
) -> dict[str, float]:
    """Median ms per arm, the arms interleaved within each iteration."""
    for _ in range(warmup):
        for f in arms.values():
            f()
    times: dict[str, list[int]] = {k: [] for k in arms}
    order = list(arms)
    for i in range(iters):
        for name in order[i % len(order) :] + order[: i % len(order)]:  # rotate the order
            t0 = time.perf_counter_ns()
            arms[name]()
            times[name].append(time.perf_counter_ns() - t0)
    return {k: statistics.median(v) / 1e6 for k, v in times.items()}


def bench(multi: Path, singles: dict[str, Path], opts: OrtOptions, iters: int) -> dict[str, Any]:
    m = Split(multi, opts)
    s = {t: Split(p, opts) for t, p in singles.items()}
    tasks = list(m.heads)
    spec = load_bundle(multi).input
    from edge.data.demo_line import render_frame

    x = frames_to_input([render_frame(0).image], spec)

    def singles_split() -> None:
        for t in tasks:
            s[t].trunk_and(x, [t])

    def singles_fused() -> None:
        for t in tasks:
            s[t].fused.run({"image": x})

    arms: dict[str, Callable[[], object]] = {
        "trunk": lambda: m.trunk_and(x, []),
        **{f"trunk+{t}": partial(m.trunk_and, x, [t]) for t in tasks},
        "trunk+4 heads": lambda: m.trunk_and(x, tasks),
        "trunk+merged heads": lambda: m.trunk_and_merged(x),
        "4 single-task nets": singles_split,
        "fused (4 tasks)": lambda: m.fused.run({"image": x}),
        "4 single-task fused": singles_fused,
    }
    ms = run_arms(arms, iters)
    one_head = {t: ms[f"trunk+{t}"] / ms["trunk"] for t in tasks}
    result = {
        "options": dataclasses.asdict(opts),
        "median_ms": {k: round(v, 4) for k, v in ms.items()},
        # what the pipeline runs when all four tasks are due: the trunk once + the merged heads
        "speedup_4_tasks": round(ms["4 single-task nets"] / ms["trunk+merged heads"], 3),
        "speedup_4_tasks_heads_one_by_one": round(
            ms["4 single-task nets"] / ms["trunk+4 heads"], 3
        ),
        "one_head_over_trunk": {t: round(v, 3) for t, v in one_head.items()},
        "fused_speedup_4_tasks": round(ms["4 single-task fused"] / ms["fused (4 tasks)"], 3),
    }
    for b in [m, *s.values()]:
        b.close()
    return result


def validation_us(multi: Path, iters: int = 2000) -> dict[str, float]:
    """What the backend API's checks cost per call (feed validation of the trunk, taps
    validation of a head): measured directly, as a noisy difference of medians would hide it."""
    b = load_bundle(multi)
    trunk = OnnxRuntimeBackend().load(b.path("trunk"))
    head = OnnxRuntimeBackend().load(b.path("heads/defect"))
    x = np.zeros((1, b.input.height, b.input.width, 3), np.uint8)
    taps = trunk.run_taps({"image": x})
    metas = [taps.meta[i.name] for i in head.inputs()]
    ms = run_arms(
        {
            "trunk feed": lambda: trunk.validate_feed({"image": x}),
            "head taps": lambda: head._validate_metas(metas),
        },
        iters,
    )
    trunk.close()
    head.close()
    return {k: round(v * 1e3, 2) for k, v in ms.items()}


def profile_parts(multi: Path, parts: list[str], runs: int = 300, top: int = 8) -> None:
    """ONNX Runtime's per-node profile (median us per node) of some parts, default options."""
    import onnxruntime as ort

    b = load_bundle(multi)
    x = np.zeros((1, b.input.height, b.input.width, 3), np.uint8)
    trunk = OnnxRuntimeBackend().load(b.path("trunk"))
    taps = trunk.run_taps({"image": x}).arrays()
    for part in parts:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.enable_profiling = 1, True
        so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "edge-bench-prof")
        sess = ort.InferenceSession(str(b.path(part)), so, providers=["CPUExecutionProvider"])
        feed = {"image": x} if part in ("trunk", "fused") else taps
        for _ in range(runs):
            sess.run(None, feed)
        prof = Path(sess.end_profiling())
        events = json.loads(prof.read_text())
        prof.unlink()
        nodes: dict[tuple[str, str], list[int]] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                key = (e["args"]["op_name"], e["name"].removesuffix("_kernel_time"))
                nodes.setdefault(key, []).append(e["dur"])
        med = {k: statistics.median(v) for k, v in nodes.items()}
        run = statistics.median(e["dur"] for e in events if e["name"] == "model_run")
        print(
            f"\n{part}: {run:.0f} us per run, {len(med)} nodes, {sum(med.values()):.0f} us "
            "in kernels; slowest:"
        )
        for (op, name), us in sorted(med.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {us:7.1f} us  {op:<14} {name}")
    trunk.close()


MODELS: dict[str, Callable[[], ModelConfig]] = {
    "demo": demo_config,
    "wide": lambda: demo_config(widths=(32, 64, 128, 192), input_size=(224, 224)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--sweep", action="store_true", help="also try other session options")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the bundles here")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="print ONNX Runtime's per-node profile of the trunk and two heads",
    )
    ap.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="demo",
        help="demo: the demo model at 128x128; wide: a deployment-sized variant (widths "
        "32-64-128-192, 224x224) where per-node overhead weighs less",
    )
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    base = MODELS[a.model]()
    print(
        f"model: {a.model}, widths {list(base.widths)}, gamma {base.gamma}, "
        f"input {base.input_size[0]}x{base.input_size[1]}"
    )
    t0 = time.monotonic()
    multi = build_bundle(base, work / "multi")
    singles = {
        t.name: build_bundle(dataclasses.replace(base, tasks=(t,)), work / t.name)
        for t in base.tasks
    }
    print(f"bundles ready in {time.monotonic() - t0:.0f} s under {work}")
    settings = [OrtOptions(intra_op_threads=a.threads)]
    if a.sweep:
        settings += [
            OrtOptions(intra_op_threads=2),
            OrtOptions(intra_op_threads=0),
            OrtOptions(graph_optimization="extended"),
            OrtOptions(graph_optimization="basic"),
            OrtOptions(graph_optimization="disable"),
        ]
        # Not in the sweep: sequential=False (inter-op pool) and spin=True. On 2 cores with a
        # dozen sessions each owning a pool, both were 10-50x slower (threads fight for cores).
    results = []
    for opts in settings:
        r = bench(multi, singles, opts, a.iters)
        results.append(r)
        o = r["options"]
        print(
            f"\n== intra_op_threads={o['intra_op_threads']} opt={o['graph_optimization']} "
            f"sequential={o['sequential']} spin={o['spin']}"
        )
        for k, v in r["median_ms"].items():
            print(f"  {k:>22}: {v:8.3f} ms")
        heads = r["one_head_over_trunk"]
        print(
            f"  4 tasks, trunk once + merged heads vs 4 single-task nets: "
            f"{r['speedup_4_tasks']:.2f}x (target >= 2.5x); heads one by one: "
            f"{r['speedup_4_tasks_heads_one_by_one']:.2f}x"
        )
        print(
            f"  one head of four / trunk alone: {heads} (target <= 1.3; worst "
            f"{max(heads.values()):.2f})"
        )
        print(
            f"  fused 4-task graph vs 4 single-task fused graphs: {r['fused_speedup_4_tasks']:.2f}x"
        )
    over = validation_us(multi)
    print(f"\nbackend API checks per call (us): {over}")
    if a.profile:
        profile_parts(multi, ["trunk", "heads/defect", "heads/mask"])
    if a.json:
        a.json.write_text(json.dumps({"results": results, "validation_us": over}, indent=2))


if __name__ == "__main__":
    main()
