"""A cost model: per-part latencies in, the per-frame latency of any schedule out.

The parts are measured on one split pipeline that runs every task on every frame, each part
timed on its own (:class:`PartsRunner`): ``preprocess``, ``trunk``, each ``head:<task>``, each
task's ``decode:<task>`` (postprocess) and the per-frame ``overhead`` (the frame's wall time
minus its parts: Python glue). A frame on which any head is due costs
``preprocess + trunk + overhead`` plus ``head + decode`` of each due task; a frame on which none
is due costs nothing (the trunk is skipped). So "mask on 10% of frames, the rest every frame"::

    preprocess + trunk + overhead + Σ_t≠mask (head_t + decode_t) + 0.1 · (head_mask + decode_mask)

When the bundle has merged heads (convert/merge.py) and no rule is conditional or off, a frame on
which every task is due runs the merged graph (measured as ``heads``) instead of the heads one by
one, exactly as the pipeline does; the model predicts that too.

:func:`predict_schedule` walks one cycle of a schedule's periods (every N-th frame) exactly;
``when`` rules need the share of frames on which their condition holds (``condition_rates``),
which depends on the images, not on the machine. :func:`predict_rates` takes per-task rates
directly. :func:`check_prediction` runs a schedule for real, interleaved with the part
measurement, and reports the relative error.

``statistic`` "mean" (default) compares means: by linearity of expectation, the mean of a sum
is the sum of the means even when the machine preempts the process now and then (the extra
time lands in whichever part was running, and interleaving spreads it evenly over the arms).
Medians are robust to a rare huge outlier but biased when interruptions are frequent — on a
busy 2-core machine a 4 ms preemption hits most 5 ms frames and few 0.3 ms parts. "median"
takes each part's median and compares against the measured run's *class-weighted median*
(frames grouped by the set of tasks that ran, each group's median weighted by its share).
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import ConfigError
from edge.core.manifest import Bundle, load_bundle
from edge.profile.arms import ArmRun, ArmSpec
from edge.profile.interleave import Warmup, run_interleaved
from edge.runtime.latency import Recorder
from edge.runtime.pipeline import Pipeline
from edge.runtime.schedule import Schedule

STATISTICS = ("median", "mean")
MAX_CYCLE = 100_000


def _lcm(a: int, b: int) -> int:
    """math.lcm of two (math.lcm is Python 3.9+)."""
    return a * b // math.gcd(a, b)


def _center(values: np.ndarray, statistic: str) -> float:
    if values.size == 0:
        return 0.0
    return float(np.median(values) if statistic == "median" else values.mean())


class PartsRunner:
    """Times every part of a split, all-tasks pipeline separately, one frame per step."""

    name = "parts"

    def __init__(self, pipeline: Pipeline) -> None:
        if pipeline.parts is None:
            raise ConfigError(
                "the cost model measures a split pipeline (trunk + heads), not a fused one",
                stage="profile",
            )
        self.pipeline = pipeline
        self.recorder = Recorder()

    def step(self, image: np.ndarray, record: bool) -> None:
        p = self.pipeline
        parts = p.parts
        assert parts is not None  # checked in __init__
        clock = time.perf_counter_ns
        t: dict[str, int] = {}
        start = clock()
        x = p.preprocess(image)
        t["preprocess"] = clock() - start
        taps = parts.taps({p.spec.name: x})
        t["trunk"] = parts.trunk.last_run_ns
        for s in p.steps:
            out = parts.head(s.task, taps, [s.output])
            t[f"head:{s.task}"] = parts.heads[s.task].last_run_ns
            t0 = clock()
            s.decoder.decode(out[s.output][0])
            t[f"decode:{s.task}"] = clock() - t0
        total = clock() - start
        if parts.merged is not None:  # timed on the same taps, outside the frame's total
            parts.all_heads(taps)
            t["heads"] = parts.merged.last_run_ns
        t["overhead"] = max(0, total - sum(t.values()))
        if record:
            self.recorder.add(t, start)

    def costs(self, statistic: str = "mean") -> PartCosts:
        return PartCosts.from_recorder(
            self.recorder,
            [s.task for s in self.pipeline.steps],
            statistic,
            merged=self.pipeline.merged is not None,
        )

    def close(self) -> None:
        self.pipeline.close()


@dataclass(frozen=True)
class PartCosts:
    """Per-part latency in ms (one statistic over ``frames`` measured frames)."""

    preprocess_ms: float
    trunk_ms: float
    overhead_ms: float
    heads_ms: dict[str, float]
    decode_ms: dict[str, float]
    statistic: str = "mean"
    frames: int = 0
    merged_ms: float | None = None
    """The merged heads graph (every task at once), when the pipeline has one."""

    @classmethod
    def from_recorder(
        cls, rec: Recorder, tasks: Sequence[str], statistic: str = "mean", merged: bool = False
    ) -> PartCosts:
        if statistic not in STATISTICS:
            raise ConfigError(f"statistic '{statistic}': use one of {STATISTICS}", stage="profile")

        def ms(stage: str) -> float:
            return round(_center(rec.values_ns(stage).astype(np.float64), statistic) / 1e6, 6)

        return cls(
            preprocess_ms=ms("preprocess"),
            trunk_ms=ms("trunk"),
            overhead_ms=ms("overhead"),
            heads_ms={t: ms(f"head:{t}") for t in tasks},
            decode_ms={t: ms(f"decode:{t}") for t in tasks},
            statistic=statistic,
            frames=rec.frames,
            merged_ms=ms("heads") if merged else None,
        )

    @property
    def frame_ms(self) -> float:
        """The fixed cost of a frame on which the trunk runs."""
        return self.preprocess_ms + self.trunk_ms + self.overhead_ms

    def task_ms(self, task: str) -> float:
        if task not in self.heads_ms:
            raise ConfigError(
                f"cost model: no measured head for task '{task}'; measured: "
                f"{sorted(self.heads_ms)}",
                stage="profile",
            )
        return self.heads_ms[task] + self.decode_ms[task]

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "frames": self.frames,
            "preprocess_ms": self.preprocess_ms,
            "trunk_ms": self.trunk_ms,
            "overhead_ms": self.overhead_ms,
            "heads_ms": dict(self.heads_ms),
            "decode_ms": dict(self.decode_ms),
            "merged_heads_ms": self.merged_ms,
        }


@dataclass(frozen=True)
class Prediction:
    """Predicted mean latency per frame (all frames, including those where nothing ran)."""

    mean_ms: float
    trunk_rate: float
    task_rates: dict[str, float]
    breakdown_ms: dict[str, float] = field(default_factory=dict)
    """Each part's share of ``mean_ms`` (rate × cost)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_ms": round(self.mean_ms, 6),
            "trunk_rate": round(self.trunk_rate, 6),
            "task_rates": {t: round(r, 6) for t, r in self.task_rates.items()},
            "breakdown_ms": {k: round(v, 6) for k, v in self.breakdown_ms.items()},
        }


def _prediction(
    costs: PartCosts, trunk_rate: float, rates: Mapping[str, float], merged_rate: float = 0.0
) -> Prediction:
    """``merged_rate``: share of frames on which the merged heads graph runs every head."""
    parts = {
        "preprocess": trunk_rate * costs.preprocess_ms,
        "trunk": trunk_rate * costs.trunk_ms,
        "overhead": trunk_rate * costs.overhead_ms,
    }
    if merged_rate:
        assert costs.merged_ms is not None
        parts["heads"] = merged_rate * costs.merged_ms
    for t, r in rates.items():
        parts[f"head:{t}"] = (r - merged_rate) * costs.heads_ms[t]
        parts[f"decode:{t}"] = r * costs.decode_ms[t]
    return Prediction(sum(parts.values()), trunk_rate, dict(rates), parts)


def _merges(costs: PartCosts, rules: Sequence[Any]) -> bool:
    """Whether the pipeline would use its merged heads on frames where every task is due."""
    return (
        costs.merged_ms is not None
        and {r.task for r in rules} == set(costs.heads_ms)
        and all(r.when is None and not r.off for r in rules)
    )


def predict_rates(
    costs: PartCosts, rates: Mapping[str, float], trunk_rate: float | None = None
) -> Prediction:
    """Mean latency when each task's head runs on ``rates[task]`` of the frames (0..1). The
    trunk runs on ``trunk_rate`` of them (default: the largest task rate, i.e. the rarer tasks
    run on frames where a more frequent one runs too)."""
    for t, r in rates.items():
        costs.task_ms(t)
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"cost model: rate {r} for '{t}' must be in 0..1", stage="profile")
    tr = max(rates.values(), default=0.0) if trunk_rate is None else trunk_rate
    everything = (
        costs.merged_ms is not None
        and set(rates) == set(costs.heads_ms)
        and all(r == 1.0 for r in rates.values())
    )
    return _prediction(costs, tr, rates, 1.0 if everything else 0.0)


def predict_schedule(
    costs: PartCosts, schedule: Schedule, condition_rates: Mapping[str, float] | None = None
) -> Prediction:
    """Mean latency of ``schedule``: exact over one cycle of its periods; a ``when`` task runs
    on ``condition_rates[task]`` of the frames its condition is checked on."""
    rates_in = dict(condition_rates or {})
    active = [r for r in schedule.rules if not r.off]
    for r in active:
        costs.task_ms(r.task)
        if r.when is not None and r.task not in rates_in:
            raise ConfigError(
                f"cost model: '{r.task}' runs '{r.describe()}'; give the share of frames its "
                f"condition holds on (e.g. {r.task}=0.1)",
                stage="profile",
            )
    cycle = functools.reduce(_lcm, [r.period for r in active], 1)
    cycle = min(cycle, MAX_CYCLE)
    trunk = merged = 0.0
    merges = _merges(costs, schedule.rules)
    runs = dict.fromkeys((r.task for r in active), 0.0)
    for i in range(cycle):
        p: dict[str, float] = {}
        for r in active:  # dependency order: a condition's task comes first
            if i % r.period:
                p[r.task] = 0.0
            elif r.when is None:
                p[r.task] = 1.0
            else:
                p[r.task] = rates_in[r.task] * p.get(r.when.task, 0.0)
            runs[r.task] += p[r.task]
        trunk += any(r.when is None and p[r.task] for r in active)
        merged += merges and all(p[r.task] == 1.0 for r in active)
    return _prediction(
        costs, trunk / cycle, {t: n / cycle for t, n in runs.items()}, merged / cycle
    )


def parse_rates(text: str, tasks: Sequence[str]) -> dict[str, float]:
    """``"mask=0.1,angle=1/4"`` -> {"mask": 0.1, "angle": 0.25} (a percentage: ``mask=10%``)."""
    out: dict[str, float] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        m = re.fullmatch(r"([\w-]+)\s*=\s*(\d*\.?\d+)\s*(?:/\s*(\d+)|(%))?", item)
        if m is None or m.group(1) not in tasks:
            raise ConfigError(
                f"--predict {text!r}: expected TASK=RATE items like 'mask=0.1', "
                f"'mask=10%' or 'mask=1/4' with TASK one of {list(tasks)}",
                stage="profile",
            )
        v = float(m.group(2))
        v = v / int(m.group(3)) if m.group(3) else v / 100 if m.group(4) else v
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"--predict {item!r}: the rate must be in 0..1", stage="profile")
        out[m.group(1)] = v
    return out


def measured_ms(run: ArmRun, statistic: str = "mean") -> float:
    """The measured mean latency per frame of an arm: the class-weighted median (frames grouped
    by the tasks that ran) for "median", the plain mean for "mean"."""
    e2e = run.e2e.values.astype(np.float64)
    if e2e.size == 0:
        return 0.0
    if statistic == "mean":
        return float(e2e.mean()) / 1e6
    keys = run.ran_keys
    total = 0.0
    for key, n in Counter(keys).items():
        idx = np.fromiter((i for i, k in enumerate(keys) if k == key), dtype=np.int64)
        total += n * float(np.median(e2e[idx]))
    return total / len(keys) / 1e6


@dataclass(frozen=True)
class PredictionCheck:
    predicted_ms: float
    measured_ms: float
    costs: PartCosts
    prediction: Prediction
    frames: int
    condition_rates: dict[str, float]

    @property
    def rel_error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_ms": round(self.predicted_ms, 6),
            "measured_ms": round(self.measured_ms, 6),
            "rel_error": round(self.rel_error, 6),
            "frames": self.frames,
            "condition_rates": self.condition_rates,
            **self.prediction.to_dict(),
        }


def check_arm(costs: PartCosts, run: ArmRun) -> PredictionCheck:
    """Predict a measured arm's latency from ``costs`` and compare (``when`` rates as observed
    in the arm's own run: they depend on the images, not the machine)."""
    rates = run.condition_rates()
    pred = predict_schedule(costs, run.pipeline.schedule, rates)
    return PredictionCheck(
        pred.mean_ms, measured_ms(run, costs.statistic), costs, pred, run.e2e.values.size, rates
    )


def check_prediction(
    bundle: Bundle | str | Path,
    schedule: Schedule,
    frames: Sequence[np.ndarray],
    *,
    rounds: int = 300,
    warmup: Warmup | None = None,
    statistic: str = "mean",
    backend: str = "onnxruntime",
    backend_options: Mapping[str, Any] | None = None,
) -> PredictionCheck:
    """Measure the parts and run ``schedule`` for real, interleaved frame by frame, then
    compare the predicted and the measured per-frame latency."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    parts = PartsRunner(Pipeline(b, backend=backend, backend_options=backend_options))
    try:
        run = ArmRun(
            ArmSpec(name="schedule", backend=backend),
            Pipeline(b, backend=backend, schedule=schedule, backend_options=backend_options),
        )
        try:
            run_interleaved([parts, run], frames, warmup=warmup or Warmup(frames=30), count=rounds)
            return check_arm(parts.costs(statistic), run)
        finally:
            run.close()
    finally:
        parts.close()
