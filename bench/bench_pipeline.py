"""Threaded pipeline vs inference alone, ONNX Runtime CPU, one run.

Target (issue 5): the threaded pipeline (capture thread + preprocess + trunk/heads + decode +
JSONL sink + summary bookkeeping, i.e. ``run_bundle``) sustains at least 90 % of the frames/s of
inference alone (trunk + every head on inputs prepared in advance) on in-memory frames.

Arms, interleaved over several rounds, medians reported:

- inference alone: ``trunk.run_taps`` + the merged heads (or every head) on pre-resized inputs,
  i.e. exactly the inference the pipeline runs per frame;
- pipeline.process: preprocess + inference + decode in the calling thread (no capture, no sink);
- run_bundle: frames from an in-memory source through the capture thread (``fifo:4``, so every
  frame is processed), JSONL written to a temporary file; fps from the run's own summary. With
  ``overlap`` (the default) the next frame is preprocessed and the previous frame's sinks run
  on worker threads while this frame is inferred; "overlap off" does all of it in one thread.

The model is the demo model (untrained is fine for speed); frames are demo-line frames (320x240,
or 128x128 with ``--model-size-frames``).

    python bench/bench_pipeline.py [--frames 400] [--rounds 5] [--model-size-frames]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.core.manifest import load_bundle
from edge.core.preprocess import resize_frame
from edge.data.demo_line import demo_config, render_frame
from edge.runtime.pipeline import Pipeline
from edge.runtime.run import RunConfig, run_bundle
from edge.runtime.sources.base import RawFrame, Source


class MemorySource(Source):
    """``count`` frames cycled from a list in memory (a finite, non-live source)."""

    kind = "memory"

    def __init__(self, frames: list[np.ndarray], count: int) -> None:
        super().__init__("memory:")
        self.frames, self.count, self.i = frames, count, 0

    def _open_impl(self) -> None:
        pass

    def _read_impl(self) -> RawFrame | None:
        if self.i >= self.count:
            self._mark_ended()
            return None
        self.i += 1
        return RawFrame(self.frames[self.i % len(self.frames)], self.i - 1)

    def _close_impl(self) -> None:
        pass


def inference_alone_fps(p: Pipeline, inputs: list[np.ndarray], n: int) -> float:
    """The same inference the pipeline runs per frame (the trunk, then the merged heads when
    the bundle has them, else every head), on inputs resized in advance."""
    assert p.trunk is not None
    heads = [p.merged] if p.merged is not None else [s.backend for s in p.steps]
    t0 = time.perf_counter()
    for i in range(n):
        taps = p.trunk.run_taps({p.spec.name: inputs[i % len(inputs)]})
        for h in heads:
            h.run_from_taps(taps)  # type: ignore[union-attr]
    return n / (time.perf_counter() - t0)


def process_fps(p: Pipeline, frames: list[np.ndarray], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        p.process(frames[i % len(frames)])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the bundle here")
    ap.add_argument(
        "--model-size-frames",
        action="store_true",
        help="frames already at the model's input size (a camera scaled in "
        "hardware): the resize is a no-op, leaving threading and sink costs",
    )
    a = ap.parse_args()
    from bench_dispatch import build_bundle  # the same demo bundle as bench_dispatch.py

    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    bundle = build_bundle(demo_config(), work / "multi")
    spec = load_bundle(bundle).input
    frames = [render_frame(i).image for i in range(32)]
    if a.model_size_frames:
        frames = [np.ascontiguousarray(resize_frame(f, spec.height, spec.width)) for f in frames]
    fps: dict[str, list[float]] = {
        "inference alone": [],
        "pipeline.process": [],
        "run_bundle (threaded)": [],
        "run_bundle, overlap off": [],
    }
    with Pipeline(bundle) as p:
        p.warmup(20)
        inputs = [p.preprocess(f) for f in frames]
        assert inputs[0].shape == (1, spec.height, spec.width, 3)
        for r in range(a.rounds):
            fps["inference alone"].append(inference_alone_fps(p, inputs, a.frames))
            fps["pipeline.process"].append(process_fps(p, frames, a.frames))
            for overlap in (True, False):
                out = work / f"results-{r}.jsonl"
                s = run_bundle(
                    bundle,
                    RunConfig(source="memory:", out=out, warmup=20, overlap=overlap),
                    source=MemorySource(frames, a.frames),
                )
                assert s.frames == a.frames and s.stopped_by == "end"
                fps["run_bundle (threaded)" if overlap else "run_bundle, overlap off"].append(s.fps)
                if overlap:
                    stages = s.stages
    med = {k: statistics.median(v) for k, v in fps.items()}
    base = med["inference alone"]
    for k, v in med.items():
        print(
            f"{k:>22}: {v:7.1f} frames/s  ({100 * v / base:5.1f} % of inference alone)  "
            f"rounds: {[round(x, 1) for x in fps[k]]}"
        )
    # each round runs the arms back to back, so a per-round ratio cancels the machine's drift
    paired = [t / i for t, i in zip(fps["run_bundle (threaded)"], fps["inference alone"])]
    print(
        f"\nthreaded pipeline / inference alone: {med['run_bundle (threaded)'] / base:.3f} "
        f"(medians); per round {[round(r, 3) for r in paired]}, median "
        f"{statistics.median(paired):.3f} (target >= 0.90)"
    )
    print(
        "\nper-stage times of the last threaded run (ms; preprocess and sink ran on worker "
        "threads):"
    )
    for k, st in stages.items():
        print(
            f"  {k:>14}: mean {st['mean_ms']:.3f}  p50 {st['p50_ms']:.3f}  p99 {st['p99_ms']:.3f}"
        )


if __name__ == "__main__":
    main()
