"""One frame in, every due task's decoded result out: preprocess -> trunk once -> due heads.

Split mode (the default) loads the trunk and the heads of the tasks the schedule can run. Per
frame, the heads are visited in schedule order; the first due head triggers preprocessing and the
trunk (so a frame on which nothing is due costs nothing), every due head reads the trunk's taps,
and its output is decoded at once, so a later task's condition can read it. On a frame where every
task is due and no head is conditional, the bundle's merged heads graph (convert/merge.py: all task
branches as one dense + one grouped conv per layer) runs instead of the heads one by one, when the
backend has that artifact (``merge_heads=False`` turns this off). Fused mode runs
``fused.onnx`` (every task in one graph) and decodes the tasks the schedule says are due.

Each frame carries its stage timings in nanoseconds (``FrameResult.timings_ns``; the stages are
listed in docs/architecture.md, "Stage timings"); a stage that did not happen has no key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
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
from edge.runtime.split import SplitRunner

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
    t_sensor_ns: int | None = None
    """The camera's exposure time on the host clock, when the source maps its clock onto it."""
    device: dict[str, Any] | None = None
    """Camera facts for the results: ``t_device_ns``, ``clock`` and source counters."""

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
        """Sensor -> result when the camera's time maps onto the host clock, else arrival ->
        result (:attr:`latency_clock` says which)."""
        start = self.t_capture_ns if self.t_sensor_ns is None else self.t_sensor_ns
        return self.t_result_ns - start

    @property
    def latency_clock(self) -> str:
        return "arrival" if self.t_sensor_ns is None else "sensor"

    def timings_ms(self) -> dict[str, float]:
        return {k: round(v / 1e6, 4) for k, v in self.timings_ns.items()}


@dataclass(frozen=True)
class TaskStep:
    """One task as the pipeline runs it: its rule, decoder and output tensor name."""

    task: str
    rule: TaskRule
    decoder: Decoder
    output: str


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

        self.steps = [
            TaskStep(t, self.schedule.rule(t), self.decoders[t], self.bundle.tasks[t].output)
            for t in self.schedule.order
        ]
        self.parts: SplitRunner | None = None
        """The loaded trunk, heads (by task) and merged heads, in split mode."""
        try:
            self.fused = None if split else load("fused")
            if split:
                trunk = load("trunk")
                heads = {s.task: load(self.bundle.tasks[s.task].head) for s in self.steps}
                merged = self._load_merged(load) if merge_heads else None
                self.parts = SplitRunner(trunk, heads, merged)
        except BaseException:
            self.close()
            raise
        self._roots = [s.rule for s in self.steps if s.rule.when is None]
        self._last_image: np.ndarray | None = None

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

    @property
    def trunk(self) -> Backend | None:
        return self.parts.trunk if self.parts is not None else None

    @property
    def merged(self) -> Backend | None:
        """The merged heads part when this pipeline runs it (every task due, none conditional)."""
        return self.parts.merged if self.parts is not None else None

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
        t_sensor_ns: int | None = None,
        device: dict[str, Any] | None = None,
    ) -> FrameResult:
        """Run the due tasks on one uint8 HxWx3 BGR frame. ``timings`` may carry earlier stages
        (capture, queue_wait) and is filled in place. ``prepared``: ``preprocess(image)``
        computed beforehand (e.g. on another thread); then no ``preprocess`` time is added.
        ``defer_decode``: on a frame that ran the merged heads (so no condition reads a result),
        leave the outputs raw for ``FrameResult.finish`` to decode on another thread."""
        t = timings if timings is not None else {}
        self._last_image = image
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
            t_sensor_ns=t_sensor_ns,
            device=device,
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
        assert self.parts is not None  # split mode
        taps = self.parts.taps({self.spec.name: x})
        t["trunk"] = self.parts.trunk.last_run_ns
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
        parts = self.parts
        assert parts is not None  # split mode
        if parts.merged is not None and all(s.rule.due(index, results) for s in self.steps):
            out = parts.all_heads(self._trunk(image, prepared, t))
            t["heads"] = parts.merged.last_run_ns
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
            out = parts.head(s.task, taps, [s.output])
            t[f"head:{s.task}"] = parts.heads[s.task].last_run_ns
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

    def rehearse(self) -> None:
        """Run the last processed frame again (preprocessing, trunk, the merged heads or every
        head, decoding); results discarded, not counted as a frame. Run just before the next
        frame is due, it brings the code and weights back into the CPU caches that the idle
        wait let other work evict (``RunConfig.keep_warm``). A no-op before the first frame."""
        image = self._last_image
        if image is None:
            return
        x = self.preprocess(image)
        feed = {self.spec.name: x}
        if self.parts is not None:
            taps = self.parts.taps(feed)
            if self.parts.merged is not None:
                out = self.parts.all_heads(taps)
            else:
                out = {}
                for s in self.steps:
                    out.update(self.parts.head(s.task, taps, [s.output]))
        else:
            assert self.fused is not None
            out = self.fused.run(feed)
        for s in self.steps:
            s.decoder.decode(out[s.output][0])

    def warmup(self, runs: int = 3) -> None:
        """Run every loaded part ``runs`` times on a black frame (first-run allocations and
        lazy initialisation stay out of the measurements). Does not count as frames."""
        x = self.preprocess(np.zeros((self.spec.height, self.spec.width, 3), np.uint8))
        for _ in range(max(0, runs)):
            if self.parts is not None:
                taps = self.parts.taps({self.spec.name: x})
                for task in self.parts.heads:
                    self.parts.head(task, taps)
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
