"""Several cameras' frames through one trunk call, each head on the frames that want it.

:class:`BatchRunner` takes the preprocessed frames of one batch (one per camera, any number) and
returns one :class:`~edge.runtime.pipeline.FrameResult` per frame. Per chunk of at most
``cap`` frames (a dynamic-batch bundle's maximum; a fixed-batch bundle's size, padded): the trunk
runs once; when every frame wants every task unconditionally the merged heads graph runs on the
whole chunk; otherwise each task's head runs on the sub-batch of frames whose camera schedule
wants it (its ``every N`` counting that camera's frames, its ``when`` reading that frame's
earlier results), in one task order valid for every camera.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.core.errors import ScheduleError
from edge.runtime.backends.base import Taps
from edge.runtime.decode import TaskResult
from edge.runtime.pipeline import FrameResult, Pipeline
from edge.runtime.schedule import Schedule, TaskRule


@dataclass(eq=False)
class Ready:
    """One camera's preprocessed frame waiting for a batch."""

    camera: int
    x: np.ndarray
    """(1, H, W, C) uint8 or (1, C, H, W) float32: ``frames_to_input`` of the frame."""
    image: np.ndarray
    frame_id: int
    t_capture_ns: int
    t_ready_ns: int
    source_index: int | None
    timings: dict[str, int]


@dataclass(eq=False)
class Trunked:
    """A batch after the trunk: its frames, their per-camera indices, the trunk's input rows
    (padding included) and its taps (and their host arrays when the heads run elsewhere)."""

    items: list[Ready]
    idx: list[int]
    rows: int
    taps: Taps
    arrays: dict[str, np.ndarray] | None


def task_order(schedules: Sequence[Schedule], tasks: Sequence[str]) -> list[str]:
    """One run order of every task any camera runs, in which each condition's task comes
    before the task it gates, for every camera. Raises :class:`ScheduleError` when two cameras
    need opposite orders."""
    deps: dict[str, set[str]] = {t: set() for t in tasks}
    used = {t for s in schedules for t in s.order}
    for s in schedules:
        for r in s.rules:
            if not r.off and r.when is not None:
                deps[r.task].add(r.when.task)
    order: list[str] = []
    left = [t for t in tasks if t in used]
    while left:
        free = [t for t in left if not (deps[t] - set(order))]
        if not free:
            raise ScheduleError(
                f"the cameras' conditions order tasks {left} in opposite ways; a station runs "
                "each task once per batch in one order: make the conditions agree"
            )
        order.append(free[0])
        left.remove(free[0])
    return order


class BatchRunner:
    """``BatchRunner(pipeline, schedules, cap)``: ``pipeline`` (split mode) holds the loaded
    trunk, heads and merged heads; ``schedules[i]`` is camera i's schedule."""

    def __init__(self, pipeline: Pipeline, schedules: Sequence[Schedule], cap: int) -> None:
        if pipeline.parts is None:
            raise ScheduleError("a station runs split bundles (trunk + heads); drop --fused")
        self.pipeline, self.parts = pipeline, pipeline.parts
        self.tasks = list(pipeline.tasks)
        self.steps = {s.task: s for s in pipeline.steps}
        self.order = task_order(schedules, self.tasks)
        self.rules: list[dict[str, TaskRule]] = [
            {t: s.rule(t) for t in self.order} for s in schedules
        ]
        self.fixed = pipeline.batch if not pipeline.bundle.batch.get("dynamic") else 0
        self.cap = self.fixed or max(1, cap)
        self.index = [0] * len(schedules)
        """Per camera: frames processed so far (what ``every N`` counts)."""
        self.batches: dict[int, int] = {}
        """Trunk calls by the number of real frames in them."""

    def warmup(self, runs: int) -> None:
        """Run the trunk and every head at the largest batch (first-run allocations)."""
        spec = self.pipeline.spec
        x = self.pipeline.preprocess(np.zeros((spec.height, spec.width, 3), np.uint8))
        x = np.repeat(x[:1], self.cap, axis=0)
        for _ in range(runs):
            taps = self.parts.taps({spec.name: x})
            for task in self.parts.heads:
                self.parts.head(task, taps)
            if self.parts.merged is not None:
                taps = self.parts.taps({spec.name: x})
                self.parts.all_heads(taps)

    def run(self, items: Sequence[Ready]) -> list[FrameResult]:
        """The frames' results, in the order given (one trunk call per ``cap`` frames)."""
        out: list[FrameResult] = []
        for i in range(0, len(items), self.cap):
            out.extend(self.heads(self.trunk(items[i : i + self.cap])))
        return out

    def trunk(self, items: Sequence[Ready], host: bool = False) -> Trunked:
        """Stage 1 for at most ``cap`` frames: the trunk once. ``host``: keep the taps as host
        arrays, so :meth:`heads` may run on another thread while the trunk runs the next batch
        (ONNX Runtime: the trunk and the heads are separate sessions)."""
        n = len(items)
        self.batches[n] = self.batches.get(n, 0) + 1
        idx = [self.index[it.camera] for it in items]
        for it in items:
            self.index[it.camera] += 1
        x = np.concatenate([it.x[:1] for it in items])
        if self.fixed and n < self.fixed:
            x = np.concatenate([x, np.repeat(x[:1], self.fixed - n, axis=0)])
        taps = self.parts.taps({self.pipeline.spec.name: x})
        for it in items:
            it.timings["trunk"] = self.parts.trunk.last_run_ns
        return Trunked(list(items), idx, len(x), taps, taps.arrays() if host else None)

    def _run_part(self, part: Any, tr: Trunked, task: str | None, outputs: Any) -> Any:
        if tr.arrays is None:
            if task is None:
                return self.parts.all_heads(tr.taps)
            return self.parts.head(task, tr.taps, outputs)
        return part.run({name: tr.arrays[name] for name in part.input_names}, outputs)

    def heads(self, tr: Trunked) -> list[FrameResult]:
        """Stage 2: the due heads of a :meth:`trunk` batch, decoded; the frames' results."""
        items, idx, n = tr.items, tr.idx, len(tr.items)
        results: list[dict[str, TaskResult | None]] = [dict.fromkeys(self.tasks) for _ in items]
        ts = [it.timings for it in items]
        merged = self.parts.merged
        if merged is not None and all(
            r.period != 0 and k % r.period == 0 and r.when is None
            for it, k in zip(items, idx)
            for r in (self.rules[it.camera][task] for task in self.tasks)
        ):
            outs = self._run_part(merged, tr, None, None)
            t0 = time.perf_counter_ns()
            for task in self.tasks:
                s = self.steps[task]
                for res, r in zip(results, s.decoder.decode_batch(outs[s.output][:n])):
                    res[task] = r
            each = (time.perf_counter_ns() - t0) // n
            for t in ts:
                t["heads"], t["postprocess"] = merged.last_run_ns, each
            return self._results(items, idx, results)
        post = [0] * n
        for task in self.order:
            want = [
                j
                for j, (it, k) in enumerate(zip(items, idx))
                if self.rules[it.camera][task].due(k, results[j])
            ]
            if not want:
                continue
            s = self.steps[task]
            head = self.parts.heads[task]
            if len(want) == tr.rows or self.fixed:
                raw = self._run_part(head, tr, task, [s.output])[s.output]
                rows = want
            else:  # the sub-batch that wants this task: its rows of the taps, on the host
                src = tr.arrays
                feed = {
                    name: (src[name] if src is not None else tr.taps.host(name))[want]
                    for name in head.input_names
                }
                raw = head.run(feed, [s.output])[s.output]
                rows = list(range(len(want)))
            t0 = time.perf_counter_ns()
            decoded = s.decoder.decode_batch(raw[rows])
            each = (time.perf_counter_ns() - t0) // len(want)
            for j, r in zip(want, decoded):
                results[j][task] = r
                post[j] += each
                ts[j][f"head:{task}"] = head.last_run_ns
        for t, p in zip(ts, post):
            t["postprocess"] = p
        return self._results(items, idx, results)

    def _results(
        self,
        items: Sequence[Ready],
        idx: Sequence[int],
        results: Sequence[Mapping[str, TaskResult | None]],
    ) -> list[FrameResult]:
        now = time.monotonic_ns()
        return [
            FrameResult(
                frame_id=it.frame_id,
                index=k,
                t_capture_ns=it.t_capture_ns,
                t_result_ns=now,
                results=dict(res),
                timings_ns=it.timings,
                image=it.image,
                source_index=it.source_index,
            )
            for it, k, res in zip(items, idx, results)
        ]
