"""Comparison arms: what each one runs, how it is loaded, what it measured, and the ratios.

An *arm* is one way to run the bundle: precision, backend, split (trunk + heads) or fused, and
which tasks run on which frames. The profile's own settings form the arm ``base``; each
``--compare`` text names another arm as overrides on ``base``::

    ARM  := [NAME ':'] ITEM (',' ITEM)*          e.g.  int8   fused   fast: int8,fused
    ITEM := fp32 | fp16 | int8 | precision=P     precision (ORT runs fp32 and int8 Q/DQ;
                                                  fp16/int8 engines need backend tensorrt)
          | ort | onnxruntime | trt | tensorrt | backend=B
          | split | fused | mode=split|fused
          | all                                   every task on every frame
          | tasks=T1+T2                           only these tasks (every frame)
          | every=TASK=N                          that task on every N-th frame
          | when=TASK: COND                       that task only when COND holds
          | schedule=FILE                         a schedule file (edge run --schedule)

Schedule items (all, tasks, every, when, schedule) replace ``base``'s schedule as a whole.
Commas inside ``[...]`` belong to the condition. The preset ``precisions`` adds one arm per
precision this machine can run for the base backend (skipping, with a note, those whose models
are absent).

INT8 on ONNX Runtime reads ``bundle/int8/<part>.onnx`` (the Q/DQ models of ``edge calibrate``);
the tensorrt backend reads ``bundle/engines/<device>/<part>.<precision>.engine``. The arms are
measured side by side by :func:`edge.profile.interleave.run_interleaved`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import BundleError, ConfigError
from edge.core.manifest import Bundle, part_file
from edge.core.trt_version import PRECISIONS
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.latency import Recorder, Series, summarize_ns, throughput_fps
from edge.runtime.pipeline import Pipeline
from edge.runtime.schedule import Schedule, build_schedule, read_schedule_file

BACKEND_NAMES = {
    "ort": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "trt": "tensorrt",
    "tensorrt": "tensorrt",
}
_NAME = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*:(?![=<>!])")


@dataclass(frozen=True)
class ArmSpec:
    """One arm. ``tasks``/``every``/``when``/``schedule`` build its schedule as in edge run."""

    name: str = "base"
    precision: str = "fp32"
    backend: str = "onnxruntime"
    split: bool = True
    tasks: tuple[str, ...] | None = None
    every: tuple[str, ...] = ()
    when: tuple[str, ...] = ()
    schedule: Path | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"arm '{self.name}': precision '{self.precision}' is not one of {PRECISIONS}",
                stage="profile",
            )
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(
                f"arm '{self.name}': unknown backend '{self.backend}'; use "
                f"{sorted(set(BACKEND_NAMES.values()))}",
                stage="profile",
            )
        object.__setattr__(self, "backend", BACKEND_NAMES[self.backend])
        if self.precision == "fp16" and self.backend != "tensorrt":
            raise ConfigError(
                f"arm '{self.name}': fp16 needs the tensorrt backend (engines from "
                "edge build --precision fp16); ONNX Runtime here runs fp32 and "
                "int8 (the Q/DQ models of edge calibrate)",
                stage="profile",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision,
            "backend": self.backend,
            "mode": "split" if self.split else "fused",
            "tasks": list(self.tasks) if self.tasks is not None else None,
            "every": list(self.every),
            "when": list(self.when),
            "schedule": str(self.schedule) if self.schedule else None,
            "text": self.text,
        }


def _split_items(text: str) -> list[str]:
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def parse_arm(text: str, base: ArmSpec) -> ArmSpec:
    """An arm from its ``--compare`` text, as overrides on ``base`` (see the module doc)."""
    m = _NAME.match(text)
    name = m.group(1) if m else None
    body = text[m.end() :] if m else text
    items = _split_items(body)
    if not items:
        raise ConfigError(
            f"--compare {text!r}: no settings; e.g. 'int8', 'fused', "
            "'tasks=defect', 'every=mask=4'",
            stage="profile",
        )
    kw: dict[str, Any] = {}
    sched: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq and key in PRECISIONS:
            kw["precision"] = key
        elif not eq and key in BACKEND_NAMES:
            kw["backend"] = key
        elif not eq and key in ("split", "fused"):
            kw["split"] = key == "split"
        elif not eq and key == "all":
            sched["all"] = True
        elif key == "precision" and value in PRECISIONS:
            kw["precision"] = value
        elif key == "backend":
            kw["backend"] = value
        elif key == "mode" and value in ("split", "fused"):
            kw["split"] = value == "split"
        elif key == "tasks" and value:
            sched["tasks"] = tuple(t.strip() for t in re.split(r"[+/ ]", value) if t.strip())
        elif key == "every" and value:
            sched.setdefault("every", []).append(value)
        elif key == "when" and value:
            sched.setdefault("when", []).append(value)
        elif key == "schedule" and value:
            sched["schedule"] = Path(value)
        else:
            raise ConfigError(
                f"--compare {text!r}: cannot read item {item!r}; items: fp32|fp16|int8, "
                "ort|trt, split|fused, all, tasks=A+B, every=TASK=N, when=TASK: COND, "
                "schedule=FILE (comma-separated, optionally 'NAME:' first)",
                stage="profile",
            )
    if sched:
        kw.update(
            tasks=sched.get("tasks"),
            every=tuple(sched.get("every", ())),
            when=tuple(sched.get("when", ())),
            schedule=sched.get("schedule"),
        )
    return dataclasses.replace(base, name=name or ",".join(items), text=text.strip(), **kw)


# -- loading an arm ---------------------------------------------------------------------------
class _Int8Bundle(Bundle):
    """The bundle with its parts read from ``int8/`` (the Q/DQ models of edge calibrate)."""

    def file(self, part_or_file: str) -> Path:
        name = part_or_file if part_or_file.endswith(".onnx") else part_file(part_or_file)
        return self.root / "int8" / name

    def path(self, part_or_file: str) -> Path:
        """The part's Q/DQ model, once the manifest's calibration section vouches for it."""
        p = self.file(part_or_file)
        name = p.relative_to(self.root / "int8").as_posix()
        if not p.is_file():
            raise BundleError(
                f"{self.root}: INT8 model 'int8/{name}' is missing: run edge "
                f"calibrate {self.root} first (it writes the Q/DQ models that "
                "ONNX Runtime runs in INT8)",
                stage="profile",
            )
        self.check_calibrated(p, required=True)
        return p


class _EngineBundle(Bundle):
    """The bundle with its parts read from ``engines/<device>/<part>.<precision>.engine``."""

    precision = "fp16"

    def path(self, part_or_file: str) -> Path:
        part = part_or_file[: -len(".onnx")] if part_or_file.endswith(".onnx") else part_or_file
        found = sorted(
            (self.root / "engines").glob(f"*/{part}.{self.precision}.engine"),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            raise BundleError(
                f"{self.root}: no {self.precision} TensorRT engine for part "
                f"'{part}' under engines/: build it on this machine with: edge "
                f"build {self.root} --precision {self.precision}",
                stage="profile",
            )
        return found[-1]  # the newest; the backend checks its sidecar against this machine


def _view(bundle: Bundle, cls: type[Bundle], **attrs: Any) -> Bundle:
    view = cls(**{f.name: getattr(bundle, f.name) for f in dataclasses.fields(bundle)})
    for k, v in attrs.items():
        setattr(view, k, v)
    return view


def arm_bundle(bundle: Bundle, arm: ArmSpec) -> Bundle:
    """The bundle as ``arm`` reads it: ONNX parts, ``int8/`` Q/DQ parts or TensorRT engines."""
    if arm.backend == "tensorrt":
        return _view(bundle, _EngineBundle, precision=arm.precision)
    return _view(bundle, _Int8Bundle) if arm.precision == "int8" else bundle


def arm_schedule(bundle: Bundle, arm: ArmSpec) -> Schedule:
    decoders = decoders_from_manifest(bundle.manifest)
    rules = read_schedule_file(arm.schedule) if arm.schedule is not None else None
    return build_schedule(decoders, tasks=arm.tasks, rules=rules, every=arm.every, when=arm.when)


def arm_parts(bundle: Bundle, arm: ArmSpec) -> list[str]:
    """The parts ``arm`` loads."""
    if not arm.split:
        return ["fused"]
    order = arm_schedule(bundle, arm).order
    return ["trunk", *[bundle.tasks[t].head for t in order]]


def missing_parts(bundle: Bundle, arm: ArmSpec) -> list[str]:
    """Parts of ``arm`` whose model file is absent (empty when it can run)."""
    view = arm_bundle(bundle, arm)
    out = []
    for part in arm_parts(bundle, arm):
        if isinstance(view, _Int8Bundle):  # present; whether it may run is open_arm's check
            if not view.file(part).is_file():
                out.append(part)
            continue
        try:
            view.path(part)
        except BundleError:
            out.append(part)
    return out


def open_arm(
    bundle: Bundle, arm: ArmSpec, backend_options: Mapping[str, Any] | None = None
) -> Pipeline:
    """A loaded :class:`Pipeline` for ``arm`` (raises a clear error when a part is missing)."""
    return Pipeline(
        arm_bundle(bundle, arm),
        backend=arm.backend,
        schedule=arm_schedule(bundle, arm),
        split=arm.split,
        backend_options=backend_options,
    )


# -- running ----------------------------------------------------------------------------------
@dataclass
class ArmRun:
    """One arm's pipeline and what it measured (stage timings, wall time of each frame)."""

    spec: ArmSpec
    pipeline: Pipeline
    recorder: Recorder = field(default_factory=Recorder)
    e2e: Series = field(default_factory=Series)
    ran_keys: list[tuple[str, ...]] = field(default_factory=list)
    """Per measured frame: the tasks that ran (the frame's class for the cost model)."""
    condition_counts: dict[str, list[int]] = field(default_factory=dict)
    """Conditional task -> [frames it was eligible for (its gating task ran, period due),
    frames its condition held]."""

    @property
    def name(self) -> str:
        return self.spec.name

    def step(self, image: np.ndarray, record: bool) -> None:
        t0 = time.perf_counter_ns()
        r = self.pipeline.process(image)
        dt = time.perf_counter_ns() - t0
        if not record:
            return
        self.recorder.add(r.timings_ns, t0)
        self.e2e.append(dt, t0)
        ran = tuple(r.ran)
        self.ran_keys.append(ran)
        for rule in self.pipeline.schedule.rules:
            if rule.when is None or rule.off or r.index % rule.period:
                continue
            if rule.when.task in ran:
                c = self.condition_counts.setdefault(rule.task, [0, 0])
                c[0] += 1
                c[1] += rule.task in ran

    def condition_rates(self) -> dict[str, float]:
        return {t: (held / n if n else 0.0) for t, (n, held) in self.condition_counts.items()}

    def result(self) -> dict[str, Any]:
        e2e = self.e2e.values
        return {
            "name": self.name,
            "spec": self.spec.to_dict(),
            "pipeline": self.pipeline.describe(),
            "frames": int(e2e.size),
            "stages": self.recorder.summary(),
            "e2e": summarize_ns(e2e),
            "throughput_fps": throughput_fps(int(e2e.size), float(e2e.sum()) / 1e9),
        }

    def close(self) -> None:
        self.pipeline.close()


def ratio_table(results: Sequence[Mapping[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Each arm's e2e mean/p50/p90/p99 and per-stage means as ratios to ``baseline``'s
    (< 1: faster), its throughput ratio (> 1: more frames/s) and speedup (baseline mean / mean)."""
    by_name = {r["name"]: r for r in results}
    if baseline not in by_name:
        raise ConfigError(
            f"--baseline '{baseline}' is not an arm; arms: {list(by_name)}", stage="profile"
        )
    b = by_name[baseline]

    def ratio(x: Any, y: Any) -> float | None:
        return round(x / y, 4) if x is not None and y else None

    rows = []
    for r in results:
        e, be = r["e2e"], b["e2e"]
        rows.append(
            {
                "arm": r["name"],
                "baseline": baseline,
                **{
                    f"{k}_ratio": ratio(e[f"{k}_ms"], be[f"{k}_ms"])
                    for k in ("mean", "p50", "p90", "p99")
                },
                "throughput_ratio": ratio(r["throughput_fps"], b["throughput_fps"]),
                "speedup": ratio(be["mean_ms"], e["mean_ms"]),
                "stage_mean_ratio": {
                    s: ratio(st["mean_ms"], b["stages"][s]["mean_ms"])
                    for s, st in r["stages"].items()
                    if s in b["stages"]
                },
            }
        )
    return rows
