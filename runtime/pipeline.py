"""One frame in, every due task's decoded result out: preprocess -> trunk once -> due heads.

Split mode (the default) loads the trunk and the heads of the tasks the schedule can run. Per
frame, the heads are visited in schedule order; the first due head triggers preprocessing and the
trunk (so a frame on which nothing is due costs nothing), every due head reads the trunk's taps,
and its output is decoded at once, so a later task's condition can read it. On a frame where every
task is due and no head is conditional, the bundle's merged heads graph (convert/merge.py: all task
branches as one dense + one grouped conv per layer) runs instead of the heads one by one, when the
backend has that artifact (``merge_heads=False`` turns this off). Fused mode runs
``fused.onnx`` (every task in one graph) and decodes the tasks the schedule says are due.

Each frame carries its stage timings in nanoseconds (``FrameResult.timings_ns``); a stage that
did not happen has no key, and the cost is a few dict writes per frame:

=============  =================================================================================
capture        source read done (``t_capture``) -> frame in the capture queue (includes waiting
               for space under ``fifo`` backpressure on files/folders)   [run loop]
queue_wait     in the capture queue, and (overlap) waiting for the inference thread   [run loop]
preprocess     resize (+ normalise without in-graph preprocessing)
trunk          the trunk backend call (wall time, feed validation included)
head:<task>    one head's backend call, on the trunk's taps
heads          the merged heads graph's call (every task due), instead of head:<task>
fused          the fused graph's call (fused mode, instead of trunk and heads)
postprocess    decoding every result of the frame (``edge run`` decodes a merged-heads frame on
               its sink thread: ``FrameResult.finish``)
sink           every sink for the frame (the JSONL line holds the time up to its own write; the
               summary's includes the write)   [run loop]
=============  =================================================================================

The run summary adds ``e2e``: capture -> all sinks done; the JSONL line's ``latency_ms`` is
capture -> results ready. :class:`StageStats` aggregates timings in constant memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge.core.errors import EdgeError, ScheduleError
from edge.core.manifest import Bundle, load_bundle
from edge.core.preprocess import frames_to_input
from edge.runtime.backends.base import Backend, Taps
from edge.runtime.backends.registry import create_backend
from edge.runtime.decode import Decoder, TaskResult, decoders_from_manifest
from edge.runtime.schedule import Schedule, TaskRule

NOT_RUN = "not run"


@dataclass(eq=False)
class FrameResult:
    """The outcome of one processed frame. ``results[task]`` is None when the task did not run."""

    frame_id: int
    index: int
    """Position among processed frames (0, 1, ...): what ``every N`` counts."""
    t_capture_ns: int
    t_result_ns: int
    results: dict[str, TaskResult | None]
    timings_ns: dict[str, int]
    image: np.ndarray | None = field(default=None, repr=False)
    source_index: int | None = None
    pending: dict[str, tuple[Decoder, np.ndarray]] = field(default_factory=dict, repr=False)
    """Raw outputs left undecoded by ``Pipeline.process(defer_decode=True)``: ``finish``."""

    def finish(self) -> FrameResult:
        """Decode the outputs ``process(defer_decode=True)`` left raw (a no-op when there are
        none): ``results`` complete, their time added to ``postprocess``, ``t_result_ns`` now.
        The run loop calls it on its sink thread, off the inference thread's critical path."""
        if self.pending:
            t0 = time.perf_counter_ns()
            for task, (decoder, raw) in self.pending.items():
                self.results[task] = decoder.decode(raw)
            self.pending.clear()
            spent = time.perf_counter_ns() - t0
            self.timings_ns["postprocess"] = self.timings_ns.get("postprocess", 0) + spent
            self.t_result_ns = time.monotonic_ns()
        return self

    @property
    def ran(self) -> list[str]:
        return [t for t, r in self.results.items() if r is not None]

    @property
    def latency_ns(self) -> int:
        return self.t_result_ns - self.t_capture_ns

    def timings_ms(self) -> dict[str, float]:
        return {k: round(v / 1e6, 4) for k, v in self.timings_ns.items()}


@dataclass(frozen=True)
class _Step:
    task: str
    rule: TaskRule
    decoder: Decoder
    output: str
    backend: Backend | None


class Pipeline:
    """``Pipeline(bundle, backend="onnxruntime", schedule=None, split=True)``.

    ``bundle``: a :class:`Bundle` or its folder. ``schedule``: default every task on every
    frame. ``backend_options``: passed to the backend's constructor (e.g. ``intra_op_threads``).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        backend: str = "onnxruntime",
        schedule: Schedule | None = None,
        split: bool = True,
        backend_options: Mapping[str, Any] | None = None,
        merge_heads: bool = True,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.decoders = decoders_from_manifest(self.bundle.manifest)
        self.tasks = list(self.bundle.tasks)
        self.schedule = schedule or Schedule.every_frame(self.tasks)
        unknown = [r.task for r in self.schedule.rules if r.task not in self.bundle.tasks]
        if unknown:
            raise ScheduleError(
                f"schedule names task(s) {unknown} that bundle "
                f"{self.bundle.root} does not have; its tasks: {self.tasks}"
            )
        self.backend_name, self.split = backend, split
        self.spec = self.bundle.input
        batch = self.bundle.batch
        self.batch = 1 if batch.get("dynamic") else int(batch.get("size", 1))
        self.frames = 0
        opts = dict(backend_options or {})
        self._options = opts
        self._loaded: list[Backend] = []

        def load(part: str) -> Backend:
            b = create_backend(backend, **opts)
            b.load(b.artifact_path(self.bundle, part))
            self._loaded.append(b)
            return b

        try:
            self.trunk = load("trunk") if split else None
            self.fused = None if split else load("fused")
            self.steps = [
                _Step(
                    t,
                    self.schedule.rule(t),
                    self.decoders[t],
                    self.bundle.tasks[t].output,
                    load(self.bundle.tasks[t].head) if split else None,
                )
                for t in self.schedule.order
            ]
            self.merged = self._load_merged(load) if split and merge_heads else None
        except BaseException:
            self.close()
            raise
        self._roots = [s.rule for s in self.steps if s.rule.when is None]

    def _load_merged(self, load: Any) -> Backend | None:
        """The all-heads graph (convert/merge.py), used on frames where every task is due
        unconditionally; None when the bundle (or this backend's artifacts) has none."""
        part = self.bundle.merged_heads
        if part is None or len(self.steps) != len(self.tasks):
            return None
        if any(s.rule.when is not None for s in self.steps):
            return None  # conditional heads are decided one by one, in dependency order
        probe = create_backend(self.backend_name, **self._options)
        try:
            probe.artifact_path(self.bundle, part)
        except EdgeError:
            return None  # e.g. no INT8 / engine artifact of the merged part: per-task heads
        return cast(Backend, load(part))

    # -- running --------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """One frame -> the graph's input (resized; padded to a fixed batch size > 1)."""
        x = frames_to_input([image], self.spec)
        return np.repeat(x, self.batch, axis=0) if self.batch > 1 else x

    def process(
        self,
        image: np.ndarray,
        *,
        frame_id: int | None = None,
        t_capture_ns: int | None = None,
        timings: dict[str, int] | None = None,
        source_index: int | None = None,
        prepared: np.ndarray | None = None,
        defer_decode: bool = False,
    ) -> FrameResult:
        """Run the due tasks on one uint8 HxWx3 BGR frame. ``timings`` may carry earlier stages
        (capture, queue_wait) and is filled in place. ``prepared``: ``preprocess(image)``
        computed beforehand (e.g. on another thread); then no ``preprocess`` time is added.
        ``defer_decode``: on a frame that ran the merged heads (so no condition reads a result),
        leave the outputs raw for ``FrameResult.finish`` to decode on another thread."""
        t = timings if timings is not None else {}
        index = self.frames
        self.frames += 1
        results: dict[str, TaskResult | None] = dict.fromkeys(self.tasks)
        pending: dict[str, tuple[Decoder, np.ndarray]] = {}
        if self.split:
            self._run_split(image, index, results, t, prepared, pending if defer_decode else None)
        else:
            self._run_fused(image, index, results, t, prepared)
        now = time.monotonic_ns()
        return FrameResult(
            frame_id=index if frame_id is None else frame_id,
            index=index,
            t_capture_ns=now if t_capture_ns is None else t_capture_ns,
            t_result_ns=now,
            results=results,
            timings_ns=t,
            image=image,
            source_index=source_index,
            pending=pending,
        )

    def _prepare(
        self, image: np.ndarray, prepared: np.ndarray | None, t: dict[str, int]
    ) -> np.ndarray:
        if prepared is not None:
            return prepared
        t0 = time.perf_counter_ns()
        x = self.preprocess(image)
        t["preprocess"] = time.perf_counter_ns() - t0
        return x

    def _trunk(self, image: np.ndarray, prepared: np.ndarray | None, t: dict[str, int]) -> Taps:
        x = self._prepare(image, prepared, t)
        assert self.trunk is not None  # split mode always loads the trunk
        taps = self.trunk.run_taps({self.spec.name: x})
        t["trunk"] = self.trunk.last_run_ns
        return taps

    def _run_split(
        self,
        image: np.ndarray,
        index: int,
        results: dict[str, TaskResult | None],
        t: dict[str, int],
        prepared: np.ndarray | None,
        pending: dict[str, tuple[Decoder, np.ndarray]] | None = None,
    ) -> None:
        taps = None
        post = 0
        if self.merged is not None and all(s.rule.due(index, results) for s in self.steps):
            out = self.merged.run_from_taps(self._trunk(image, prepared, t))
            t["heads"] = self.merged.last_run_ns
            if pending is not None:  # every task due, none conditional: nothing reads a result
                pending.update((s.task, (s.decoder, out[s.output][0])) for s in self.steps)
                return
            t0 = time.perf_counter_ns()
            for s in self.steps:
                results[s.task] = s.decoder.decode(out[s.output][0])
            t["postprocess"] = time.perf_counter_ns() - t0
            return
        for s in self.steps:
            if not s.rule.due(index, results):
                continue
            if taps is None:
                taps = self._trunk(image, prepared, t)
            assert s.backend is not None
            out = s.backend.run_from_taps(taps, [s.output])
            t[f"head:{s.task}"] = s.backend.last_run_ns
            t0 = time.perf_counter_ns()
            results[s.task] = s.decoder.decode(out[s.output][0])
            post += time.perf_counter_ns() - t0
        if taps is not None:
            t["postprocess"] = post

    def _run_fused(
        self,
        image: np.ndarray,
        index: int,
        results: dict[str, TaskResult | None],
        t: dict[str, int],
        prepared: np.ndarray | None,
    ) -> None:
        # A conditional task can only be due when the task its condition reads is; the roots
        # of those chains have no condition, so nothing is due unless a root is.
        if not any(r.due(index, results) for r in self._roots):
            return
        assert self.fused is not None
        x = self._prepare(image, prepared, t)
        out = self.fused.run({self.spec.name: x}, [s.output for s in self.steps])
        t["fused"] = self.fused.last_run_ns
        t0 = time.perf_counter_ns()
        for s in self.steps:
            if s.rule.due(index, results):
                results[s.task] = s.decoder.decode(out[s.output][0])
        t["postprocess"] = time.perf_counter_ns() - t0

    def warmup(self, runs: int = 3) -> None:
        """Run every loaded part ``runs`` times on a black frame (first-run allocations and
        lazy initialisation stay out of the measurements). Does not count as frames."""
        x = self.preprocess(np.zeros((self.spec.height, self.spec.width, 3), np.uint8))
        for _ in range(max(0, runs)):
            if self.trunk is not None:
                taps = self.trunk.run_taps({self.spec.name: x})
                for s in self.steps:
                    assert s.backend is not None
                    s.backend.run_from_taps(taps)
            if self.fused is not None:
                self.fused.run({self.spec.name: x})

    def describe(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle.root),
            "backend": self.backend_name,
            "providers": sorted({p for b in self._loaded for p in getattr(b, "providers", ())}),
            "mode": "split" if self.split else "fused",
            "batch": self.batch,
            "schedule": self.schedule.describe(),
        }

    def close(self) -> None:
        for b in self._loaded:
            b.close()
        self._loaded.clear()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StageStats:
    """Per-stage count, mean, min, max (exact) and percentiles (within 1 %) of nanosecond
    durations, in constant memory: a log-spaced histogram per stage. Feed it every frame's
    ``timings_ns`` (the profiler can reuse it as is)."""

    _LOG_STEP = math.log(1.01)

    def __init__(self) -> None:
        self._hist: dict[str, dict[int, int]] = {}
        self._sum: dict[str, int] = {}
        self._min: dict[str, int] = {}
        self._max: dict[str, int] = {}

    def add(self, timings_ns: Mapping[str, int]) -> None:
        for stage, ns in timings_ns.items():
            self.add_one(stage, ns)

    def add_one(self, stage: str, ns: int) -> None:
        hist = self._hist.get(stage)
        if hist is None:
            hist = self._hist[stage] = {}
            self._sum[stage], self._min[stage], self._max[stage] = 0, ns, ns
        b = int(math.log(ns) / self._LOG_STEP) if ns > 0 else -1
        hist[b] = hist.get(b, 0) + 1
        self._sum[stage] += ns
        if ns < self._min[stage]:
            self._min[stage] = ns
        elif ns > self._max[stage]:
            self._max[stage] = ns

    @property
    def stages(self) -> list[str]:
        return list(self._hist)

    def count(self, stage: str) -> int:
        return sum(self._hist.get(stage, {}).values())

    def percentile(self, stage: str, q: float) -> float:
        """The q-th percentile (0..100) in nanoseconds (bucket centre, clamped to min/max)."""
        hist = self._hist[stage]
        n = sum(hist.values())
        rank = max(1, math.ceil(q / 100.0 * n))
        seen = 0
        for b in sorted(hist):
            seen += hist[b]
            if seen >= rank:
                centre = 0.0 if b < 0 else math.exp((b + 0.5) * self._LOG_STEP)
                return min(max(centre, self._min[stage]), self._max[stage])
        return float(self._max[stage])

    def summary(self, quantiles: Iterable[float] = (50, 90, 99)) -> dict[str, dict[str, float]]:
        """{stage: {count, mean_ms, min_ms, p50_ms, ..., max_ms}}."""
        out = {}
        for s in self._hist:
            n = self.count(s)
            d: dict[str, float] = {
                "count": n,
                "mean_ms": self._sum[s] / n / 1e6,
                "min_ms": self._min[s] / 1e6,
            }
            for q in quantiles:
                d[f"p{q:g}_ms"] = self.percentile(s, q) / 1e6
            d["max_ms"] = self._max[s] / 1e6
            out[s] = {k: (round(v, 4) if k != "count" else v) for k, v in d.items()}
        return out
