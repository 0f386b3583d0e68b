"""etr-edge calibration vs ONNX Runtime's ``quantize_static``, same model, same frames (issue 4).

Both calibrate the bundle's fused graph (dynamic batch, so both see the same batches) on the
same preprocessed frames and write a Q/DQ model:

- ours: ``collect_stats`` of the tensors the Q/DQ model needs (``qdq_tensors``; streaming |x|
  histograms) -> entropy amax -> ``quantize_model``;
- ORT: ``quantize_static(QDQ, QInt8 activations and weights, per_channel, ActivationSymmetric,
  WeightSymmetric, CalibrationMethod.Entropy)``.

Each runs in its own subprocess (clean peak memory), alternately, ``--repeats`` times. Measured
from after the imports and the frame loading to the saved model: wall time, peak RSS above the
process's baseline (psutil sampling every 2 ms, and ru_maxrss), tracemalloc's peak (Python and
numpy allocations; ORT's own C++ buffers are not seen by it). Then both INT8 models and the FP32
model run on held-out demo-line frames: each task's metric against its labels, scored as
``edge calibrate``'s report scores it, with a paired bootstrap interval of etr-edge - ORT (at
256 frames a mask IoU difference of 0.4 is within noise: the default is 1024).

Note on "entropy": ORT's entropy calibrator defaults to 128 histogram bins and 128 quantized
levels, which leaves one candidate threshold, the full range: its scales equal minmax's. Ours
is TensorRT's (2048 bins, thresholds from bin 128 up), which clips by design.

    python bench/bench_calib_vs_ort.py [--checkpoint edge/assets/demo.pt | --bundle DIR]
                                       [--frames 512] [--batch 32] [--eval-frames 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np


class PeakRss:
    """Samples the process's RSS in a thread; ``peak`` is the largest seen."""

    def __init__(self, period: float = 0.002) -> None:
        import psutil

        self.proc = psutil.Process()
        self.period, self.peak, self._stop = period, self.proc.memory_info().rss, False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.period)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.thread.join()


def child(which: str, work: Path) -> None:
    """Calibrate in this process and print one JSON line of measurements."""
    import onnx

    frames = np.load(work / "calib.npy")
    batch = int((work / "batch.txt").read_text())
    model_path = work / "fused_dyn.onnx"
    out_path = work / f"int8_{which}.onnx"
    if which == "ours":
        from edge.calib.collect import collect_stats
        from edge.calib.qdq import qdq_tensors, quantize_model
    else:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = (frames[i : i + batch] for i in range(0, len(frames), batch))

            def get_next(self) -> dict[str, np.ndarray] | None:
                b = next(self.it, None)
                return None if b is None else {"image": b}

    base_rss = PeakRss().proc.memory_info().rss
    tracemalloc.start()
    t0 = time.perf_counter()
    with PeakRss() as rss:
        if which == "ours":
            model = onnx.load(str(model_path))
            feeds = ({"image": frames[i : i + batch]} for i in range(0, len(frames), batch))
            # what the Q/DQ model needs (ORT's quantize_static likewise collects only the
            # tensors it quantizes); ``edge calibrate`` also writes TensorRT caches, which want
            # every tensor (about 2x the binning)
            stats = collect_stats(model, feeds, part="fused", tensors=qdq_tensors(model))
            q, _ = quantize_model(model, stats.amaxes("entropy"))
            onnx.save(q, str(out_path))
        else:
            quantize_static(
                str(model_path),
                str(out_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.Entropy,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
    wall = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "which": which,
                "wall_s": wall,
                "rss_peak_mb": (rss.peak - base_rss) / 2**20,
                "maxrss_mb": (maxrss - base_rss) / 2**20,
                "tracemalloc_mb": py_peak / 2**20,
                "baseline_mb": base_rss / 2**20,
            }
        )
    )


def prepare(args: argparse.Namespace, work: Path) -> tuple[Any, Any, Any]:
    import onnx

    from edge.calib.collect import with_outputs
    from edge.calib.data import demo_line_holdout, sample_frames
    from edge.core.manifest import load_bundle

    if args.bundle:
        root = Path(args.bundle)
    else:
        from edge.convert.bundle import ConvertConfig, convert_checkpoint

        root = convert_checkpoint(args.checkpoint, ConvertConfig(out=work / "bundle"))
    bundle = load_bundle(root)
    calib = sample_frames(args.data, bundle.input, count=args.frames, seed=args.seed)
    held = demo_line_holdout(args.data, bundle.input, args.eval_frames)
    np.save(work / "calib.npy", calib.inputs)
    (work / "batch.txt").write_text(str(args.batch))
    fused = onnx.load(str(bundle.path("fused")))
    onnx.save(with_outputs(fused, []), str(work / "fused_dyn.onnx"))
    return bundle, held, fused


def evaluate(
    bundle: Any,
    held: Any,
    models: dict[str, Path],
    batch: int,
    resamples: int = 2000,
    baseline: str = "ort",
) -> dict[str, Any]:
    """Each task's primary metric per model, scored as ``edge calibrate``'s report scores it
    (at the model's input size, masks from bilinearly upsampled logits), and a paired bootstrap
    over frames of ours - ``baseline`` (95 % interval): the same frames resampled for both."""
    import onnx

    from edge.calib.collect import BatchRunner
    from edge.calib.report import task_targets
    from edge.data.metrics import PRIMARY, agreement, frame_terms, primary_from_terms

    outs: dict[str, dict[str, np.ndarray]] = {}
    for name, path in models.items():
        runner = BatchRunner(onnx.load(str(path)))
        parts = [runner.run({"image": x}) for x in held.batches(batch)]
        outs[name] = {
            t: np.concatenate([p[o.output] for p in parts]) for t, o in bundle.tasks.items()
        }
    size = (bundle.input.height, bundle.input.width)
    rng = np.random.default_rng(0)
    table: dict[str, Any] = {}
    for t, o in bundle.tasks.items():
        spec = o.spec
        target = task_targets(spec, held, size)
        row: dict[str, Any] = {}
        if target is None:
            for name, per_task in outs.items():
                row[name] = agreement(spec, per_task[t], outs["fp32"][t])
            row["metric"] = "agreement"
            table[t] = row
            continue
        # per-frame terms (what TaskScorer sums): the metric of any resample of the frames
        terms = {name: frame_terms(spec, per_task[t], target) for name, per_task in outs.items()}
        for name, tt in terms.items():
            row[name] = float(primary_from_terms(spec, tt.sum(axis=0)))
        idx = rng.integers(0, len(target), size=(resamples, len(target)))
        diff = primary_from_terms(spec, terms["ours"][idx].sum(axis=1)) - primary_from_terms(
            spec, terms[baseline][idx].sum(axis=1)
        )
        row["ci"] = (float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5)))
        row["metric"] = PRIMARY[spec.kind]
        table[t] = row
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="edge/assets/demo.pt")
    ap.add_argument("--bundle", help="an existing bundle (default: convert --checkpoint)")
    ap.add_argument("--data", default="synthetic:")
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-frames", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=["ours", "ort"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.work))
        return
    with tempfile.TemporaryDirectory(prefix="bench-calib-") as tmp:
        work = Path(tmp)
        bundle, held, _ = prepare(args, work)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "ort": []}
        for _ in range(args.repeats):
            for which in ("ours", "ort"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", which, "--work", str(work)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[which].append(json.loads(out.stdout.strip().splitlines()[-1]))
        models = {
            "fp32": work / "fused_dyn.onnx",
            "ours": work / "int8_ours.onnx",
            "ort": work / "int8_ort.onnx",
        }
        metrics = evaluate(bundle, held, models, args.batch)

    def med(which: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[which])

    print(
        f"\nCalibration of the fused graph of {bundle.config.name}: {args.frames} frames "
        f"(batch {args.batch}) of {args.data}; median of {args.repeats} runs each\n"
    )
    print("| | wall s | peak RSS MB (sampled) | ru_maxrss MB | tracemalloc MB |")
    print("|---|---:|---:|---:|---:|")
    for which, label in (("ours", "etr-edge"), ("ort", "ORT quantize_static")):
        print(
            f"| {label} | {med(which, 'wall_s'):.2f} | {med(which, 'rss_peak_mb'):.0f} | "
            f"{med(which, 'maxrss_mb'):.0f} | {med(which, 'tracemalloc_mb'):.0f} |"
        )
    speed = med("ort", "wall_s") / med("ours", "wall_s")
    mem = med("ours", "rss_peak_mb") / max(med("ort", "rss_peak_mb"), 1e-9)
    print(
        f"\nours is {speed:.2f}x faster (target >= 3x); peak RSS ratio ours/ORT {mem:.2f} "
        f"(target <= 0.5)\n"
    )
    print(
        f"Held-out demo-line frames: {args.eval_frames}, scored as edge calibrate's report "
        "does (input size)\n"
    )
    print("| task | metric | FP32 | INT8 etr-edge | INT8 ORT | etr-edge - ORT (95 % CI) |")
    print("|---|---|---:|---:|---:|---|")
    for t, row in metrics.items():
        d = row["ours"] - row["ort"]
        ci = f"{d:+.2f} [{row['ci'][0]:+.2f}, {row['ci'][1]:+.2f}]" if "ci" in row else ""
        print(
            f"| {t} | {row['metric']} | {row['fp32']:.2f} | {row['ours']:.2f} | "
            f"{row['ort']:.2f} | {ci} |"
        )
    print("\n(for MAE lower is better: a negative difference favours etr-edge)")


if __name__ == "__main__":
    main()
