"""``python -m edge.jetson.selftest BUNDLE``: TensorRT engines against ONNX Runtime, on the board.

For each precision asked (default fp16 and int8) and each part that has an engine in
``BUNDLE/engines/<this device's slug>/``, the same demo-line frames go through the float ONNX
model on ONNX Runtime (the reference) and through the engine on the TensorRT backend; heads are
fed the reference trunk's taps, so a head is judged on its own. Every output is compared with
``compare_outputs``: errors are relative to the reference output's range, and for task outputs
the decisions must agree (argmax for classification/segmentation logits, the sign of multilabel
logits). Prints one line per output and a verdict.

Exit status: 0 PASS, 1 FAIL, 3 when the TensorRT backend cannot be used here (message says why).
Both backends are taken from the runtime's registry by name ("tensorrt", "onnxruntime").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.core.board import probe_jetson
from edge.core.device_identity import device_slug, gpu_identity
from edge.core.errors import EdgeError, MissingDependencyError
from edge.core.lazy_trt import installed_tensorrt
from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input
from edge.runtime.backends.registry import create_backend
from edge.runtime.sources.uri import open_source


@dataclass(frozen=True)
class Tolerance:
    """Limits for one precision: errors relative to the reference range, decision agreement."""

    max_err: float
    mean_err: float
    agreement: float


TOLERANCES = {
    "fp32": Tolerance(max_err=1e-3, mean_err=1e-4, agreement=0.999),
    "fp16": Tolerance(max_err=2e-2, mean_err=2e-3, agreement=0.99),
    "int8": Tolerance(max_err=0.25, mean_err=0.03, agreement=0.90),
}
"""INT8 is compared with the FP32 reference, so it gets room; its accuracy per task is what
``edge calibrate``'s report measures."""

DECISION_KINDS = ("classification", "segmentation", "multilabel")


@dataclass(frozen=True)
class Comparison:
    """One output of one part at one precision."""

    part: str
    output: str
    precision: str
    ok: bool
    max_err: float
    mean_err: float
    agreement: float | None
    reason: str = ""

    def line(self) -> str:
        agree = "" if self.agreement is None else f" agree {self.agreement:6.2%}"
        return (
            f"{'ok  ' if self.ok else 'FAIL'} {self.precision:5s} {self.part:16s} "
            f"{self.output:18s} max {self.max_err:.2e} mean {self.mean_err:.2e}{agree}"
            + (f"  <- {self.reason}" if self.reason else "")
        )


def _agreement(ref: np.ndarray, got: np.ndarray, kind: str | None) -> float | None:
    """Fraction of decisions that agree: argmax over channels, or the sign for multilabel."""
    if kind in ("classification", "segmentation") and ref.ndim >= 2 and ref.shape[1] > 1:
        return float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1)))
    if kind == "multilabel":
        return float(np.mean((ref > 0) == (got > 0)))
    return None


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    precision: str,
    *,
    part: str = "",
    kinds: Mapping[str, str] | None = None,
) -> list[Comparison]:
    """Compare every reference output with the candidate's output of the same name.

    ``kinds`` maps task output names to their task kind (for the decision agreement). An output
    fails when it is missing, has another shape, is not finite, or exceeds the precision's
    ``TOLERANCES``.
    """
    tol = TOLERANCES[precision]
    kinds = kinds or {}
    out = []
    for name, ref_any in reference.items():
        ref = np.asarray(ref_any, dtype=np.float64)
        got = np.asarray(candidate[name], dtype=np.float64) if name in candidate else None
        problem = (
            "missing from the TensorRT outputs"
            if got is None
            else f"shape {got.shape}, expected {ref.shape}"
            if got.shape != ref.shape
            else "NaN or Inf in the TensorRT output"
            if not np.all(np.isfinite(got))
            else None
        )
        if problem is not None or got is None:
            reason = problem or "missing from the TensorRT outputs"
            out.append(Comparison(part, name, precision, False, np.inf, np.inf, None, reason))
            continue
        scale = max(float(ref.max() - ref.min()) if ref.size else 0.0, 1e-6)
        diff = np.abs(got - ref) / scale
        max_err = float(diff.max()) if diff.size else 0.0
        mean_err = float(diff.mean()) if diff.size else 0.0
        agree = _agreement(ref, got, kinds.get(name))
        reasons = []
        if max_err > tol.max_err:
            reasons.append(f"max error {max_err:.2e} > {tol.max_err:.0e}")
        if mean_err > tol.mean_err:
            reasons.append(f"mean error {mean_err:.2e} > {tol.mean_err:.0e}")
        if agree is not None and agree < tol.agreement:
            reasons.append(f"decisions agree {agree:.2%} < {tol.agreement:.0%}")
        out.append(
            Comparison(
                part, name, precision, not reasons, max_err, mean_err, agree, "; ".join(reasons)
            )
        )
    return out


def verdict(
    comparisons: Sequence[Comparison], problems: Sequence[str] = ()
) -> tuple[bool, list[str]]:
    """PASS when there was something to compare, nothing failed and no problem was reported."""
    reasons = list(problems)
    reasons += [f"{c.precision} {c.part} {c.output}: {c.reason}" for c in comparisons if not c.ok]
    if not comparisons and not reasons:
        reasons.append("no engines were compared")
    return not reasons, reasons


# ------------------------------------------------------------------------------ on the board


def _frames(bundle_batch: int, count: int) -> list[np.ndarray]:

    n = max(count - count % bundle_batch, bundle_batch)
    with open_source(f"synthetic:?frames={n}&seed=11") as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame.image)
    return frames


def run_selftest(
    bundle_path: Path, precisions: Sequence[str], frames: int, engines: Path | None = None
) -> tuple[list[Comparison], list[str]]:
    """Compare every engine found with ONNX Runtime; returns (comparisons, problems)."""

    bundle = load_bundle(bundle_path)
    version = installed_tensorrt()
    if version is None:
        raise MissingDependencyError(
            "TensorRT's Python bindings are not importable here; run "
            "jetson/setup.sh (it makes JetPack's tensorrt visible)"
        )
    if engines is None:
        device = probe_jetson()
        engines = bundle.root / "engines" / device_slug(gpu_identity(device), device, version)
    batch = bundle.batch.get("size") or bundle.batch.get("opt") or 1
    images = _frames(int(batch), frames)
    feeds = [
        frames_to_input(images[i : i + batch], bundle.input) for i in range(0, len(images), batch)
    ]
    kinds = {t.output: t.spec.kind for t in bundle.tasks.values()}
    ort = {p: create_backend("onnxruntime").load(bundle.path(p)) for p in bundle.parts}
    reference: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in bundle.parts}
    head_feeds = []
    for image in feeds:
        taps = ort["trunk"].run({bundle.input.name: image})
        head_feeds.append(taps)
        for part in bundle.parts:
            inputs = bundle.manifest.parts[part].inputs
            feed = {bundle.input.name: image} if bundle.input.name in inputs else taps
            reference[part].append(ort[part].run({n: feed[n] for n in inputs}))
    comparisons: list[Comparison] = []
    problems: list[str] = []
    for precision in precisions:
        found = [p for p in bundle.parts if (engines / f"{p}.{precision}.engine").is_file()]
        if not found:
            problems.append(
                f"no {precision} engines in {engines}: run edge build "
                f"{bundle.root} --precision {precision}"
            )
            continue
        for part in found:
            inputs = bundle.manifest.parts[part].inputs
            with create_backend("tensorrt").load(engines / f"{part}.{precision}.engine") as trt:
                for k, image in enumerate(feeds):
                    feed = (
                        {bundle.input.name: image} if bundle.input.name in inputs else head_feeds[k]
                    )
                    got = trt.run({n: feed[n] for n in inputs})
                    comparisons += compare_outputs(
                        reference[part][k], got, precision, part=part, kinds=kinds
                    )
    return comparisons, problems


def _jsonable(c: Comparison) -> dict[str, object]:
    return {
        k: (None if isinstance(v, float) and not np.isfinite(v) else v)
        for k, v in asdict(c).items()
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m edge.jetson.selftest`` (jetson/selftest.sh calls it)."""
    p = argparse.ArgumentParser(
        prog="python -m edge.jetson.selftest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", type=Path)
    p.add_argument(
        "--precision",
        action="append",
        choices=sorted(TOLERANCES),
        help="repeatable; default: fp16 and int8",
    )
    p.add_argument("--frames", type=int, default=16, help="demo-line frames to compare")
    p.add_argument("--engines", type=Path, help="engine folder (default: this device's)")
    p.add_argument("--json", type=Path, help="also write the comparisons here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        comparisons, problems = run_selftest(
            args.bundle, args.precision or ["fp16", "int8"], args.frames, args.engines
        )
    except MissingDependencyError as e:
        print(f"selftest: the TensorRT backend cannot run here: {e}", file=sys.stderr)
        print(
            "selftest: (edge.runtime.backends 'tensorrt' needs tensorrt + pycuda; if this "
            "etr-edge has no TensorRT backend yet, only edge build can be checked)",
            file=sys.stderr,
        )
        return 3
    except EdgeError as e:
        print(f"selftest: {e}", file=sys.stderr)
        return 1
    worst: dict[tuple[str, str, str], Comparison] = {}
    for c in comparisons:  # one line per output: its worst batch
        key = (c.precision, c.part, c.output)
        if key not in worst or (not c.ok, c.max_err) > (not worst[key].ok, worst[key].max_err):
            worst[key] = c
    for c in worst.values():
        print(c.line())
    ok, reasons = verdict(comparisons, problems)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "pass": ok,
                    "reasons": reasons,
                    "comparisons": [_jsonable(c) for c in worst.values()],
                },
                indent=2,
            )
            + "\n"
        )
    print("selftest: PASS" if ok else "selftest: FAIL\n  " + "\n  ".join(reasons))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
