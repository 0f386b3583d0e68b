"""INT8 Q/DQ fused graph vs FP32 on ONNX Runtime CPU, interleaved in one run (issue 4).

Models (all the bundle's fused graph, dynamic batch):

- FP32: the graph ``edge convert`` wrote;
- INT8 etr-edge: ``int8/fused.onnx`` as ``edge calibrate`` writes it (TensorRT's placement: Q/DQ
  on the inputs of weighted ops and residual adds, outputs of weighted ops left float);
- INT8 ORT QDQ: ``quantize_static`` with QInt8 symmetric activations (the comparison model of
  ``bench_calib_vs_ort.py``), for reference;
- INT8 ORT U8S8: ``quantize_static`` with ONNX Runtime's own CPU recipe (asymmetric uint8
  activations, int8 per-channel weights), the fastest int8 form ORT's x86 kernels have;
- INT8 ORT U8S8 conv-only: the same with only the convolutions quantized (each becomes one
  QLinearConv, everything else stays float): what ORT's integer convolutions alone are worth.

Each iteration runs every model once on the same frames (order rotated), so the ratios come from
one run under the same machine load. Prints median latency per model and the ratio to FP32.

    python bench/bench_int8_speed.py [--checkpoint edge/assets/demo.pt | --bundle DIR]
                                     [--iters 200] [--threads 0] [--batches 1,8] [--profile]

``--profile`` also prints, per model and batch, ONNX Runtime's kernel time per op type (its own
profiler, separate sessions): where the time goes, e.g. ORT's INT8 convolution kernels
(QLinearConv) against its FP32 NCHWc ones (Conv / FusedConv and the layout reorders).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def _session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def op_profile(path: Path, x: np.ndarray, threads: int, runs: int = 50) -> dict[str, float]:
    """ms per run spent in each op type's kernels (ONNX Runtime's profiler)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    if threads:
        so.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        s.run(None, {"image": x})
    trace = s.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    return {op: us / runs / 1e3 for op, us in per_op.most_common()}


def _ort_quantized(
    fp32: Path, out: Path, frames: np.ndarray, uint8: bool, ops: list[str] | None = None
) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = (frames[i : i + 32] for i in range(0, len(frames), 32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.it, None)
            return None if b is None else {"image": b}

    extra = {} if uint8 else {"ActivationSymmetric": True, "WeightSymmetric": True}
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if uint8 else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax if uint8 else CalibrationMethod.Entropy,
        extra_options=extra,
        op_types_to_quantize=ops,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="edge/assets/demo.pt")
    ap.add_argument("--bundle", help="an existing bundle (default: convert --checkpoint)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: default)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--calib-frames", type=int, default=128)
    ap.add_argument("--profile", action="store_true", help="kernel time per op type too")
    args = ap.parse_args()

    from edge.calib.collect import with_outputs
    from edge.calib.data import sample_frames
    from edge.calib.stage import CalibConfig, calibrate_bundle
    from edge.core.manifest import load_bundle

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        work = Path(tmp)
        if args.bundle:
            import shutil

            root = Path(shutil.copytree(args.bundle, work / "bundle"))
        else:
            from edge.convert.bundle import ConvertConfig, convert_checkpoint

            root = convert_checkpoint(args.checkpoint, ConvertConfig(out=work / "bundle"))
        calibrate_bundle(root, CalibConfig(frames=args.calib_frames, eval_frames=0))
        bundle = load_bundle(root)
        frames = sample_frames("synthetic:", bundle.input, count=args.calib_frames, seed=1)
        paths: dict[str, Path] = {}
        for name, src in (
            ("FP32", root / "fused.onnx"),
            ("INT8 etr-edge", root / "int8/fused.onnx"),
        ):
            paths[name] = work / f"{len(paths)}.onnx"
            onnx.save(with_outputs(onnx.load(str(src)), []), str(paths[name]))
        paths["INT8 ORT QDQ (s8 sym)"] = _ort_quantized(
            paths["FP32"], work / "ort_s8.onnx", frames.inputs, uint8=False
        )
        paths["INT8 ORT U8S8"] = _ort_quantized(
            paths["FP32"], work / "ort_u8.onnx", frames.inputs, uint8=True
        )
        paths["INT8 ORT U8S8 conv-only"] = _ort_quantized(
            paths["FP32"], work / "ort_u8_conv.onnx", frames.inputs, uint8=True, ops=["Conv"]
        )
        sessions = {k: _session(p, args.threads) for k, p in paths.items()}
        threads = args.threads or "default"
        print(
            f"\n{bundle.config.name}, fused graph, ONNX Runtime {ort.__version__} CPU, "
            f"threads={threads}, {args.iters} interleaved iterations\n"
        )
        print("| batch | model | median ms | p90 ms | FP32 / model |")
        print("|---:|---|---:|---:|---:|")
        names = list(sessions)
        for b in (int(v) for v in args.batches.split(",")):
            x = frames.inputs[:b]
            times: dict[str, list[float]] = {k: [] for k in names}
            for s in sessions.values():
                for _ in range(5):
                    s.run(None, {"image": x})
            for i in range(args.iters):
                for k in names[i % len(names) :] + names[: i % len(names)]:
                    t = time.perf_counter()
                    sessions[k].run(None, {"image": x})
                    times[k].append(time.perf_counter() - t)
            base = statistics.median(times["FP32"])
            for k in names:
                med = statistics.median(times[k])
                p90 = sorted(times[k])[int(0.9 * len(times[k]))]
                print(f"| {b} | {k} | {med * 1e3:.2f} | {p90 * 1e3:.2f} | {base / med:.2f}x |")
        if args.profile:
            for b in (int(v) for v in args.batches.split(",")):
                print(f"\nkernel ms per run by op type, batch {b} (top 6; total):")
                for k, p in paths.items():
                    ops = op_profile(p, frames.inputs[:b], args.threads)
                    top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:6])
                    print(f"  {k}: {top}; total {sum(ops.values()):.2f}")


if __name__ == "__main__":
    main()
