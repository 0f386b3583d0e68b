"""``edge profile``: where the time goes, per stage, with comparisons, a cost model, machine
facts and telemetry — written as report.json, report.md and PNG plots.

Two phases, both after a discarded warm-up:

1. **inference** (always): the arms (``base`` and each ``--compare``) and the cost model's part
   timer run interleaved, round-robin, on frames held in memory — the demo line's frames, or the
   first frames read from ``--source``. This is the trtexec-like floor: no capture, no queue.
2. **pipeline** (with ``--source``): the ``base`` arm as ``edge run`` runs it — capture thread,
   frame policy, preprocess, trunk, heads, postprocess, sinks — timed per stage and end to end
   (capture → result), with drops and overruns.

Telemetry (tegrastats, or a jtop snapshot) is sampled across both phases when available.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import ConfigError, SourceError, require
from edge.core.manifest import Bundle, load_bundle
from edge.data.demo_line import LineConfig, render_frame
from edge.jetson.probe import machine_facts
from edge.profile.arms import ArmRun, ArmSpec, missing_parts, open_arm, parse_arm, ratio_table
from edge.profile.config import ProfileConfig
from edge.profile.cost import PartsRunner, check_arm, parse_rates, predict_rates
from edge.profile.interleave import ProgressLine, run_interleaved
from edge.profile.plots import PlotData
from edge.profile.report import FORMAT, VERSION, write_report
from edge.profile.source_run import PipelineRecorder, run_pipeline_phase
from edge.profile.telemetry import Telemetry, thread_facts
from edge.runtime.sources.uri import open_source


# -- frames -----------------------------------------------------------------------------------
def memory_frames(cfg: ProfileConfig) -> tuple[list[np.ndarray], str]:
    """The in-memory frames: the first frames of ``cfg.source``, else the demo line's."""
    n = cfg.memory_frames
    if cfg.source is None:
        return [render_frame(i, LineConfig()).image for i in range(n)], "demo line"
    frames: list[np.ndarray] = []
    with open_source(cfg.source, options=cfg.source_options) as src:
        deadline = time.monotonic() + 30.0
        while len(frames) < n and not src.ended and time.monotonic() < deadline:
            f = src.read()
            if f is not None:
                frames.append(np.array(f.image, copy=True))
    if not frames:
        raise SourceError(f"profile: no frame could be read from {cfg.source!r} within 30 s")
    return frames, f"first {len(frames)} frames of the source"


# -- the stage --------------------------------------------------------------------------------
def resolve_arms(bundle: Bundle, cfg: ProfileConfig) -> tuple[list[ArmSpec], list[str]]:
    """``base`` and the compare arms, checked before anything runs; notes for skipped ones."""
    base = cfg.base_arm()
    arms, notes = [base], []
    for text in cfg.compare:
        if text.strip().lower() == "precisions":
            for p in (
                ("fp32", "int8") if base.backend == "onnxruntime" else ("fp32", "fp16", "int8")
            ):
                if p == base.precision:
                    continue
                arm = dataclasses.replace(base, name=p, precision=p, text="precisions")
                if missing := missing_parts(bundle, arm):
                    notes.append(
                        f"arm '{p}' skipped: {missing} missing"
                        + (" (run edge calibrate first)" if p == "int8" else "")
                    )
                else:
                    arms.append(arm)
            continue
        arms.append(parse_arm(text, base))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"--compare: arm names must be unique, got {names}; name them 'NAME: ...'",
            stage="profile",
        )
    if (cfg.baseline or "base") not in names:
        raise ConfigError(
            f"--baseline '{cfg.baseline}' is not an arm; arms: {names}", stage="profile"
        )
    for a in arms:
        if a.backend == "onnxruntime" and a.precision == "int8" and missing_parts(bundle, a):
            raise ConfigError(
                f"arm '{a.name}' runs INT8 on ONNX Runtime, which needs the Q/DQ "
                f"models of {missing_parts(bundle, a)} in {bundle.root}/int8/: "
                f"run edge calibrate {bundle.root} first",
                stage="profile",
            )
    return arms, notes


def profile_bundle(bundle_path: str | Path, cfg: ProfileConfig) -> Path:
    """Profile the bundle; write report.json, report.md and plots into ``cfg.report``.
    Returns the report folder. Everything is checked (arms, their models, matplotlib for the
    plots, telemetry when ``on``) before anything is measured."""
    bundle = load_bundle(bundle_path)
    specs, notes = resolve_arms(bundle, cfg)
    if cfg.plots:
        require("matplotlib", extra="profile", purpose="the profile's PNG plots (or --no-plots)")
    progress = ProgressLine(cfg.progress)
    telemetry = Telemetry(cfg.telemetry)
    facts = machine_facts()
    facts["threads"] = thread_facts(cfg.backend_options)
    frames, frame_source = memory_frames(cfg)
    runs: list[ArmRun] = []
    parts: PartsRunner | None = None
    t0_mono, t0_perf = time.monotonic_ns(), time.perf_counter_ns()
    pipeline_out: dict[str, Any] | None = None
    pipeline_rec: PipelineRecorder | None = None
    telemetry.start()
    try:
        for spec in specs:
            runs.append(ArmRun(spec, open_arm(bundle, spec, cfg.backend_options)))
        base = specs[0]
        cost_spec = dataclasses.replace(
            base, name="parts", split=True, tasks=None, every=(), when=(), schedule=None
        )
        if missing := missing_parts(bundle, cost_spec):
            notes.append(f"cost model skipped: parts {missing} missing")
        else:
            parts = PartsRunner(open_arm(bundle, cost_spec, cfg.backend_options))
        progress.say(
            f"{len(runs)} arm(s) interleaved on {len(frames)} in-memory frames "
            f"({frame_source}); warm-up {cfg.warmup.describe()}"
        )
        runners: list[Any] = [*runs, *([parts] if parts else [])]
        timing = run_interleaved(
            runners,
            frames,
            warmup=cfg.warmup,
            count=cfg.count,
            duration_s=cfg.duration_s,
            progress=progress,
        )
        for r in runners:
            r.close()
        t_inference_end = time.monotonic_ns()
        if cfg.source is not None:
            progress.say(f"pipeline on {cfg.source}")
            pipeline_out, pipeline_rec = run_pipeline_phase(Path(bundle_path), cfg, progress)
    finally:
        telemetry.stop()
        for r in runs:
            r.close()
        if parts is not None:
            parts.close()
        progress.done()
    arm_results = [r.result() for r in runs]
    baseline = cfg.baseline or "base"
    inference = {
        "frames_in_memory": len(frames),
        "frame_source": frame_source,
        **timing,
        "baseline": baseline,
        "arms": arm_results,
        "ratios": ratio_table(arm_results, baseline),
    }
    cost = _cost_model(parts, runs, cfg, bundle, notes)
    head = pipeline_out or next(a for a in arm_results if a["name"] == baseline)
    report: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "pipeline" if pipeline_out else "inference",
        "bundle": {
            "path": str(bundle.root),
            "model": bundle.config.name,
            "tasks": list(bundle.tasks),
            "input": [bundle.input.height, bundle.input.width],
        },
        "config": cfg.to_dict(),
        "machine": facts,
        "stages": head["stages"],
        "e2e": head["e2e"],
        "throughput_fps": head["throughput_fps"],
        "drops": pipeline_out["drops"] if pipeline_out else None,
        "inference": inference,
        "pipeline": pipeline_out,
        "cost_model": cost,
        "telemetry": telemetry.result(),
        "notes": notes,
        "plots": {},
    }
    perf_to_mono = t0_mono - t0_perf
    data = PlotData(
        t0_ns=t0_mono,
        arms={r.name: (r.e2e.times + perf_to_mono, r.e2e.values) for r in runs},
        arm_stages={r.name: {s: r.recorder.values_ns(s) for s in r.recorder.stages} for r in runs},
        pipeline=(
            None if pipeline_rec is None else (pipeline_rec.e2e.times, pipeline_rec.e2e.values)
        ),
        pipeline_stages=(
            None
            if pipeline_rec is None
            else {s: pipeline_rec.recorder.values_ns(s) for s in pipeline_rec.recorder.stages}
        ),
        telemetry=list(telemetry.sampler.samples) if telemetry.sampler else [],
        phases=[("inference", t0_mono, t_inference_end)]
        + ([("pipeline", t_inference_end, time.monotonic_ns())] if pipeline_out else []),
    )
    out = write_report(cfg.report, report, data, plots=cfg.plots)
    progress.say(f"wrote {out / 'report.md'}")
    return out


def _cost_model(
    parts: PartsRunner | None,
    runs: list[ArmRun],
    cfg: ProfileConfig,
    bundle: Bundle,
    notes: list[str],
) -> dict[str, Any] | None:
    if parts is None:
        return None
    costs = parts.costs("mean")
    base = runs[0]
    checks = []
    for r in runs:
        s = r.spec
        if s.split and s.precision == base.spec.precision and s.backend == base.spec.backend:
            checks.append(
                {
                    "arm": r.name,
                    "schedule": r.pipeline.schedule.describe(),
                    **check_arm(costs, r).to_dict(),
                }
            )
    predictions = []
    if cfg.predict:
        base_rates = (
            check_arm(costs, base).prediction.task_rates
            if base.spec.split
            else {t: 1.0 for t in bundle.tasks}
        )
        for text in cfg.predict:
            rates = {**base_rates, **parse_rates(text, list(bundle.tasks))}
            predictions.append({"spec": text, **predict_rates(costs, rates).to_dict()})
    return {
        "parts_ms": costs.to_dict(),
        "checks": checks,
        "predictions": predictions,
        "statistic": costs.statistic,
    }


def summarize_for_cli(report_dir: Path) -> str:
    """A few lines for the terminal from a written report."""
    import json

    r = json.loads((Path(report_dir) / "report.json").read_text())
    e = r["e2e"]
    lines = [
        f"{r['mode']}: e2e p50 {e['p50_ms']:.3f} ms, p99 {e['p99_ms']:.3f} ms, "
        f"{r['throughput_fps'] or 0:.1f} fps"
        + (f", drops {r['drops']}" if r["drops"] is not None else "")
    ]
    for row in r["inference"]["ratios"]:
        if row["arm"] != row["baseline"]:
            lines.append(f"  {row['arm']}: mean × {row['mean_ratio']} of {row['baseline']}")
    lines.append(f"report: {Path(report_dir) / 'report.md'}")
    return "\n".join(lines)
