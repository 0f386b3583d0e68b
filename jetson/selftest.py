"""``python -m edge.jetson.selftest BUNDLE``: TensorRT engines against ONNX Runtime, on the board.

For each precision asked (default fp16 and int8) and each part that has an engine in
``BUNDLE/engines/<this device's slug>/``, the same demo-line frames go through the float ONNX
model on ONNX Runtime (the reference) and through the engine on the TensorRT backend; heads are
fed the reference trunk's taps, so a head is judged on its own. The comparison and its
tolerances are edge.runtime.backends.trt_selftest's (errors relative to the reference output's
range; task decisions must agree). Prints one line per output and a verdict.

Exit status: 0 PASS, 1 FAIL, 3 when the TensorRT backend cannot be used here (message says why).
Both backends are taken from the runtime's registry by name ("tensorrt", "onnxruntime").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.core.board import probe_jetson
from edge.core.device_identity import device_slug, gpu_identity
from edge.core.errors import EdgeError, MissingDependencyError
from edge.core.lazy_trt import installed_tensorrt
from edge.core.manifest import load_bundle
from edge.runtime.backends.trt_selftest import TOLERANCES, Comparison, compare_with_onnxruntime
from edge.runtime.sources.uri import open_source


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
    comparisons = compare_with_onnxruntime(
        bundle, engines, images, precisions=precisions, heads_from="reference"
    )
    problems = [
        f"no {p} engines in {engines}: run edge build {bundle.root} --precision {p}"
        for p in precisions
        if not any(c.precision == p for c in comparisons)
    ]
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
