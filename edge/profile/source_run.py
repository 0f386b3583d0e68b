"""The pipeline phase of a profile: the bundle on a source through ``edge run``'s threaded
loop, every frame's stage timings recorded by a sink after the warm-up."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import ConfigError
from edge.profile.config import ProfileConfig
from edge.profile.interleave import ProgressLine, Warmup
from edge.runtime.latency import Recorder, Series, throughput_fps
from edge.runtime.pipeline import FrameResult
from edge.runtime.run import RunConfig, run_bundle


class PipelineRecorder:
    """A run sink that records every frame's stage timings after the warm-up. The run loop
    adds the ``sink`` time to a frame's timings after the sinks have been called, so a frame
    is recorded when the next one arrives (or at close)."""

    def __init__(
        self,
        warmup: Warmup,
        count: int | None,
        stop: threading.Event,
        progress: ProgressLine,
        duration_s: float | None = None,
    ) -> None:
        self.warmup, self.count, self.stop, self.progress = warmup, count, stop, progress
        self.duration_s = duration_s
        self.stopped_by: str | None = None
        self.t_measure: int | None = None
        self.recorder, self.e2e = Recorder(), Series()
        self.ids: list[int] = []
        self.results_ns: list[int] = []
        self.clocks: set[str] = set()
        self.seen = 0
        self.t_first: int | None = None
        self._pending: tuple[dict[str, int], int, int, int] | None = None

    def write(self, result: FrameResult) -> None:
        self._flush()
        if self.t_first is None:
            self.t_first = result.t_result_ns
        warm = not self.warmup.done(self.seen, (result.t_result_ns - self.t_first) / 1e9)
        self.seen += 1
        if warm:
            self.progress("pipeline warm-up", self.seen, self.warmup.frames or None)
            return
        self._pending = (
            result.timings_ns,
            result.t_result_ns - result.latency_ns,  # the sensor time when the camera gives it
            result.t_result_ns,
            result.frame_id,
        )
        self.clocks.add(result.latency_clock)
        if self.t_measure is None:
            self.t_measure = result.t_result_ns
        n = len(self.e2e) + 1
        self.progress("pipeline", n, self.count)
        if self.count is not None and n >= self.count:
            self.stopped_by = "frames"
            self.stop.set()
        elif self.duration_s is not None and (
            result.t_result_ns - self.t_measure >= self.duration_s * 1e9
        ):
            self.stopped_by = "duration"
            self.stop.set()

    def _flush(self) -> None:
        if self._pending is None:
            return
        timings, t_cap, t_res, fid = self._pending
        self._pending = None
        self.recorder.add(dict(timings), t_cap)
        self.e2e.append(t_res - t_cap, t_cap)
        self.ids.append(fid)
        self.results_ns.append(t_res)

    def event(self, event: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        self._flush()

    def result(self) -> dict[str, Any]:
        n = len(self.e2e)
        span = (self.results_ns[-1] - self.results_ns[0]) / 1e9 if n > 1 else 0.0
        ids = np.asarray(self.ids, np.int64)
        gaps = int(np.clip(np.diff(ids) - 1, 0, None).sum()) if n > 1 else 0
        return {
            "frames": n,
            "warmup_frames": self.seen - n,
            "measure_s": round(span, 4),
            "stages": self.recorder.summary(),
            "e2e": self.e2e.summary(),
            "e2e_clock": "mixed" if len(self.clocks) > 1 else next(iter(self.clocks), "arrival"),
            "throughput_fps": throughput_fps(n - 1, span),
            "drops": gaps,
        }


def run_pipeline_phase(
    bundle_path: Path, cfg: ProfileConfig, progress: ProgressLine
) -> tuple[dict[str, Any], PipelineRecorder]:

    base = cfg.base_arm()
    if base.precision != "fp32" and base.backend == "onnxruntime":
        raise ConfigError(
            f"--source profiles the bundle as edge run runs it, which reads the fp32 ONNX parts; "
            f"profile --precision {base.precision} without --source, or add --compare "
            f"{base.precision} to a fp32 profile",
            stage="profile",
        )
    stop = threading.Event()
    rec = PipelineRecorder(cfg.warmup, cfg.count, stop, progress, cfg.duration_s)
    frames = None
    if cfg.count is not None and not cfg.warmup.seconds:
        frames = cfg.count + cfg.warmup.frames
    # a backstop for a source that stalls; the recorder normally stops the run itself
    duration = None if cfg.duration_s is None else 2 * (cfg.duration_s + cfg.warmup.seconds) + 10
    run_cfg = RunConfig(
        source=cfg.source or "",
        tasks=cfg.tasks,
        schedule=cfg.schedule,
        every=cfg.every,
        when=cfg.when,
        policy=cfg.policy,
        frames=frames,
        duration_s=duration,
        out=cfg.jsonl,
        backend=base.backend,
        split=cfg.split,
        source_options=cfg.source_options,
        backend_options=cfg.backend_options,
    )
    summary = run_bundle(bundle_path, run_cfg, sinks=[rec], stop=stop)
    out = rec.result()
    capture = {k: v for k, v in summary.capture.items() if not k.endswith("_ids")}
    capture["gaps"] = len(capture.get("gaps") or [])
    out.update(
        source=summary.run.get("source"),
        policy=summary.run.get("policy"),
        stopped_by=rec.stopped_by or summary.stopped_by,
        capture=capture,
        run={k: v for k, v in summary.run.items() if k != "source"},
    )
    return out, rec
