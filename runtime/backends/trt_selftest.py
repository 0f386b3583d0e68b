"""The one comparison of TensorRT engines with the reference, and its one tolerance table.

``compare_with_onnxruntime`` runs the same frames through the bundle's float ONNX models on ONNX
Runtime (the reference) and through the engines of one folder, and judges every output with
``compare_outputs``: errors relative to the reference output's range, and for task outputs the
decisions must agree (argmax of classification/segmentation logits, the sign of multilabel
logits), within the precision's ``TOLERANCES``. ``self_test`` lists the failures;
``python -m edge.jetson.selftest`` prints them on a board. The engines run on
:class:`~edge.runtime.backends.trt.TensorRTBackend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import BundleError, InputContractError
from edge.core.manifest import Bundle, load_bundle
from edge.core.preprocess import frames_to_input
from edge.core.trt_version import PRECISIONS
from edge.runtime.backends.registry import create_backend
from edge.runtime.backends.trt import TensorRTBackend
from edge.runtime.split import SplitRunner


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


def _feeds(bundle: Bundle, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frames -> model inputs in the bundle's batch size (the last batch padded by repetition)."""

    if not frames:
        raise InputContractError("compare_with_onnxruntime: give at least one frame")
    size = 1 if bundle.batch.get("dynamic") else int(bundle.batch.get("size", 1))
    out = []
    for i in range(0, len(frames), size):
        chunk = list(frames[i : i + size])
        chunk += [chunk[-1]] * (size - len(chunk))
        out.append(frames_to_input(chunk, bundle.input))
    return out


def _engine_outputs(
    engines: Mapping[str, TensorRTBackend],
    feed: dict[str, np.ndarray],
    ref_taps: dict[str, Any],
    heads_from: str,
) -> dict[str, dict[str, np.ndarray]]:
    """Every engine's outputs for one feed. Parts that read taps (heads, merged heads) run on
    the TensorRT trunk's device taps when there is a trunk engine and ``heads_from`` is
    'engine', else on the reference taps (a head judged on its own)."""
    trunk = engines.get("trunk")
    trunk_taps = trunk.run_taps(feed) if trunk is not None else None
    got = {"trunk": trunk_taps.arrays()} if trunk_taps is not None else {}  # always compared
    taps = trunk_taps if heads_from == "engine" else None
    for part, engine in engines.items():
        names = [t.name for t in engine.inputs()]
        if part == "trunk":
            continue
        if any(n in feed for n in names):
            got[part] = engine.run(feed)
        elif taps is not None:
            got[part] = engine.run_from_taps(taps)
        else:
            got[part] = engine.run({n: ref_taps[n] for n in names})
    return got


def compare_with_onnxruntime(
    bundle: Bundle | str | Path,
    engines_dir: str | Path,
    frames: Sequence[np.ndarray],
    *,
    precisions: Sequence[str] | None = None,
    heads_from: str = "engine",
) -> list[Comparison]:
    """Run the same frames through ONNX Runtime (the float ONNX models, the reference) and the
    engines ``<part>.<precision>.engine`` in ``engines_dir``; one Comparison per output, part,
    precision and batch of frames.

    ``precisions`` None: every precision. ``heads_from`` 'engine': heads run on the TensorRT
    trunk's device taps (zero-copy, as in the pipeline) when the trunk's engine is there;
    'reference': on the reference trunk's taps. BundleError when there is no engine at all.
    """
    if heads_from not in ("engine", "reference"):
        raise InputContractError(f"heads_from '{heads_from}': expected 'engine' or 'reference'")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    root = Path(engines_dir)
    wanted = list(precisions or PRECISIONS)
    found = {p: [q for q in b.parts if (root / f"{q}.{p}.engine").is_file()] for p in wanted}
    found = {p: parts for p, parts in found.items() if parts}
    if not found:
        raise BundleError(f"no {'/'.join(wanted)} engines in {root}: run edge build {b.root}")
    kinds = {t.output: t.spec.kind for t in b.tasks.values()}
    ort = {p: create_backend("onnxruntime").load(b.path(p)) for p in b.parts}
    out: list[Comparison] = []
    try:
        feeds = [{b.input.name: x} for x in _feeds(b, frames)]
        reference = SplitRunner(ort["trunk"], {p: ort[p] for p in b.parts if p != "trunk"})
        refs = []
        for feed in feeds:
            ref = reference.run(feed)  # every part; the fused graph reads the image from the feed
            refs.append((ref["trunk"], ref))
        for prec, parts in found.items():
            engines = {
                p: TensorRTBackend(precision=prec).load(root / f"{p}.{prec}.engine") for p in parts
            }
            try:
                for feed, (ref_taps, ref) in zip(feeds, refs):
                    got = _engine_outputs(engines, feed, ref_taps, heads_from)
                    for part, outs in got.items():
                        out += compare_outputs(ref[part], outs, prec, part=part, kinds=kinds)
            finally:
                for engine in engines.values():
                    engine.close()
    finally:
        for backend in ort.values():
            backend.close()
    return out


def self_test(
    bundle: Bundle | str | Path,
    engines_dir: str | Path,
    frames: Sequence[np.ndarray],
    *,
    precisions: Sequence[str] | None = None,
) -> list[str]:
    """The failures of :func:`compare_with_onnxruntime` (empty: passed)."""
    comparisons = compare_with_onnxruntime(bundle, engines_dir, frames, precisions=precisions)
    return [f"{c.precision} {c.part} {c.output}: {c.reason}" for c in comparisons if not c.ok]
