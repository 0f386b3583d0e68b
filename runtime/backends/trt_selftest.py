"""Self-test of TensorRT engines: the same frames through ONNX Runtime and the engines.

``compare_with_onnxruntime`` runs the bundle's float ONNX models (the reference) and the
engines of one folder on the same frames and reports each output's largest absolute error;
``self_test`` turns that report into failures beyond a tolerance. The engines run on
:class:`~edge.runtime.backends.trt.TensorRTBackend`, imported when a comparison starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import BundleError, InputContractError
from edge.core.manifest import Bundle, load_bundle
from edge.core.preprocess import frames_to_input
from edge.core.trt_version import PRECISIONS
from edge.runtime.backends.registry import create_backend
from edge.runtime.backends.trt import TensorRTBackend


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


def _max_abs(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape or not np.all(np.isfinite(got)):
        return float("inf")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return float(diff.max()) if diff.size else 0.0


def _engine_outputs(
    engines: Mapping[str, TensorRTBackend], feed: dict[str, np.ndarray], ref_taps: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Every engine's outputs for one feed. Parts that read taps (heads, merged heads) run on
    the TensorRT trunk's device taps when there is a trunk engine, else on the reference taps."""
    trunk = engines.get("trunk")
    taps = trunk.run_taps(feed) if trunk is not None else None
    got = {"trunk": taps.arrays()} if taps is not None else {}
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
    precision: str | None = None,
) -> dict[str, dict[str, float]]:
    """Run the same frames through ONNX Runtime (the float ONNX models, the reference) and the
    engines in ``engines_dir``; return ``{"<precision>:<part>": {output: max abs error}}``.

    Heads run on the TensorRT trunk's device taps (zero-copy, as in the pipeline) when the
    trunk's engine is there, else on the reference taps. ``precision`` None: every precision
    with at least one engine. An output with another shape or a NaN/Inf scores ``inf``.
    """

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    root = Path(engines_dir)
    wanted = [precision] if precision else list(PRECISIONS)
    found = {p: [q for q in b.parts if (root / f"{q}.{p}.engine").is_file()] for p in wanted}
    found = {p: parts for p, parts in found.items() if parts}
    if not found:
        raise BundleError(f"no {'/'.join(wanted)} engines in {root}: run edge build {b.root}")
    ort = {p: create_backend("onnxruntime").load(b.path(p)) for p in b.parts}
    report: dict[str, dict[str, float]] = {}
    try:
        feeds = [{b.input.name: x} for x in _feeds(b, frames)]
        refs = []
        for feed in feeds:
            taps = ort["trunk"].run(feed)
            given = {**feed, **taps}
            ref = {p: ort[p].run({t.name: given[t.name] for t in ort[p].inputs()}) for p in b.parts}
            refs.append((taps, ref))
        for prec, parts in found.items():
            engines = {
                p: TensorRTBackend(precision=prec).load(root / f"{p}.{prec}.engine") for p in parts
            }
            try:
                for feed, (ref_taps, ref) in zip(feeds, refs):
                    for part, outs in _engine_outputs(engines, feed, ref_taps).items():
                        errs = report.setdefault(f"{prec}:{part}", {})
                        for name, value in ref[part].items():
                            err = _max_abs(value, outs[name]) if name in outs else float("inf")
                            errs[name] = max(errs.get(name, 0.0), err)
            finally:
                for engine in engines.values():
                    engine.close()
    finally:
        for backend in ort.values():
            backend.close()
    return report


def self_test(
    bundle: Bundle | str | Path,
    engines_dir: str | Path,
    frames: Sequence[np.ndarray],
    atol: float,
    *,
    precision: str | None = None,
) -> list[str]:
    """Failures of :func:`compare_with_onnxruntime` beyond ``atol`` (empty: passed)."""
    report = compare_with_onnxruntime(bundle, engines_dir, frames, precision=precision)
    return [
        f"{key} {name}: max abs error {err:.3g} > {atol:g}"
        for key, errs in report.items()
        for name, err in errs.items()
        if not err <= atol
    ]
