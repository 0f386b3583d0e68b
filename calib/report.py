"""The INT8 accuracy report: FP32 vs the Q/DQ models on held-out frames, per task.

- Each task's primary metric (``edge.data.metrics.PRIMARY``: accuracy, IoU x100, mean absolute
  error) under FP32 and under INT8, against the labels where the evaluation frames have them,
  otherwise as agreement with FP32 (``edge.data.metrics.agreement``; FP32 is then 100 by
  definition).
  INT8 is measured twice: the split deployment (INT8 trunk -> INT8 heads, what the caches and
  the per-part engines run) and the fused graph.
- The tensors with the worst quantization error: for every tensor that gets an activation Q/DQ,
  the SQNR of its fake-quantized FP32 values (``clip(round(x/s), -128, 127) * s``) against the
  values themselves, on the evaluation frames, and the share of values clipped.
- With ``sensitivity``: each Q/DQ tensor in turn is kept in float (fused graph) and ranked by how
  much of the INT8 output error that removes (mean over tasks of 1 - err_kept / err_int8, with
  err the relative squared error of the task's raw output against FP32), with each task's metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.calib.collect import BatchRunner
from edge.calib.data import FrameSet
from edge.calib.drift import drift_markdown, warnings_markdown
from edge.calib.placement import placement_markdown
from edge.core.config import TaskSpec
from edge.core.errors import CalibrationError
from edge.core.files import write_json
from edge.data.metrics import HIGHER_IS_BETTER, PRIMARY, TaskScorer, agreement
from edge.runtime.split import SplitRunner

REPORT_FORMAT = "etr-edge-calibration-report"
WORST_TENSORS = 10


@dataclass
class _ErrorSums:
    """Streaming SQNR of one tensor's fake quantization."""

    scale: float
    signal: float = 0.0
    noise: float = 0.0
    count: int = 0
    clipped: int = 0
    absmax: float = 0.0

    def update(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        q = np.round(x / self.scale)
        self.clipped += int(np.count_nonzero((q < -128) | (q > 127)))
        fq = np.clip(q, -128, 127) * self.scale
        self.signal += float(np.square(x).sum())
        self.noise += float(np.square(x - fq).sum())
        self.count += x.size
        self.absmax = max(self.absmax, float(np.abs(x).max(initial=0.0)))

    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)


@dataclass
class ReportInputs:
    """Everything the report needs besides the frames."""

    tasks: dict[str, TaskSpec]
    outputs: dict[str, str]
    """task -> output tensor name."""
    heads: dict[str, str]
    """task -> the part of its own head ('heads/<task>')."""
    input_name: str
    input_size: tuple[int, int]
    fp32: dict[str, onnx.ModelProto]
    """The split parts (trunk, heads/<task>, a merged-heads part), FP32."""
    int8: dict[str, onnx.ModelProto]
    """The same parts as Q/DQ models."""
    int8_fused: onnx.ModelProto
    qdq_scales: dict[str, dict[str, float]]
    """part -> activation tensor -> scale (the split Q/DQ models' plans)."""
    build_fused: Callable[[Collection[str]], onnx.ModelProto] | None = None
    """keep-float tensor names (split names) -> a fused Q/DQ model, for ``sensitivity``."""


def _run_split(
    models: Mapping[str, onnx.ModelProto],
    inp: ReportInputs,
    frames: FrameSet,
    batch: int,
    errors: dict[tuple[str, str], _ErrorSums] | None = None,
) -> dict[str, np.ndarray]:
    """Task outputs of trunk -> each task's head over all frames; with ``errors``, also the
    SQNR sums of those tensors (any part: a merged-heads part is run for them)."""
    want: dict[str, list[str]] = {p: [] for p in models}
    for part, name in errors or {}:
        want[part].append(name)
    task_parts = set(inp.heads.values())
    runners = {
        p: BatchRunner(m, [n for n in want[p] if n not in {i.name for i in m.graph.input}])
        for p, m in models.items()
        if p == "trunk" or p in task_parts or want[p]
    }
    split = SplitRunner(runners.pop("trunk"), runners)
    outs: dict[str, list[np.ndarray]] = {t: [] for t in inp.tasks}
    for x in frames.batches(batch):
        feed = {inp.input_name: x}
        part_outs = split.run(feed)
        tout = {**feed, **part_outs["trunk"]}
        for p in runners:
            hout = {**tout, **part_outs[p]}
            for t, head in inp.heads.items():
                if head == p:
                    outs[t].append(hout[inp.outputs[t]])
            for name in want[p] if errors is not None else ():
                errors[(p, name)].update(hout[name])  # type: ignore[index]
        for name in want["trunk"] if errors is not None else ():
            errors[("trunk", name)].update(tout[name])  # type: ignore[index]
    return {t: np.concatenate(v) for t, v in outs.items()}


def _run_fused(
    model: onnx.ModelProto, inp: ReportInputs, frames: FrameSet, batch: int
) -> dict[str, np.ndarray]:
    runner = BatchRunner(model)
    outs: dict[str, list[np.ndarray]] = {t: [] for t in inp.tasks}
    for x in frames.batches(batch):
        out = runner.run({inp.input_name: x})
        for t in inp.tasks:
            outs[t].append(out[inp.outputs[t]])
    return {t: np.concatenate(v) for t, v in outs.items()}


def task_targets(spec: TaskSpec, frames: FrameSet, size: tuple[int, int]) -> np.ndarray | None:
    """The task's target array for every frame (``edge.family.train.encode_target``), or None."""
    if not frames.has_labels(spec.label_key):
        return None
    from edge.family.train import encode_target  # imports torch: only when labels are scored

    rows = []
    for k, lab in enumerate(frames.labels):
        assert lab is not None
        rows.append(encode_target(spec, lab[spec.label_key], size, f"evaluation frame {k}"))
    return np.stack(rows)


def _score(spec: TaskSpec, raw: np.ndarray, target: np.ndarray) -> dict[str, float]:
    scorer = TaskScorer(spec)
    scorer.update(raw, target)
    return scorer.result()


def _rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    den = float(np.square(ref.astype(np.float64)).sum()) or 1.0
    return float(np.square(a.astype(np.float64) - ref).sum()) / den


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def build_report(
    inp: ReportInputs, frames: FrameSet, *, batch: int, sensitivity: bool = False
) -> dict[str, Any]:
    """Evaluate FP32 and INT8 on ``frames``; the report as a JSON-ready dict (see module doc)."""
    if len(frames) == 0:
        raise CalibrationError("no evaluation frames; pass --eval-frames > 0")
    errors = {
        (p, n): _ErrorSums(s) for p, scales in inp.qdq_scales.items() for n, s in scales.items()
    }
    # a tap quantized in a head is measured once, on the trunk side (same values, same scale)
    trunk_out = {o.name for o in inp.fp32["trunk"].graph.output}
    for key in [k for k in errors if k[0] != "trunk" and k[1] in trunk_out]:
        errors.setdefault(("trunk", key[1]), errors.pop(key))
    fp32 = _run_split(inp.fp32, inp, frames, batch, errors)
    int8 = _run_split(inp.int8, inp, frames, batch)
    fused = _run_fused(inp.int8_fused, inp, frames, batch)
    tasks: dict[str, Any] = {}
    targets: dict[str, np.ndarray | None] = {}
    for t, spec in inp.tasks.items():
        targets[t] = task_targets(spec, frames, inp.input_size)
        tasks[t] = _task_entry(spec, fp32[t], int8[t], fused[t], targets[t])
    worst = sorted(errors.items(), key=lambda kv: kv[1].sqnr_db())[:WORST_TENSORS]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": 1,
        "evaluation": {**frames.info, "frames": len(frames), "batch": batch},
        "tasks": tasks,
        "worst_tensors": [
            {
                "part": part,
                "tensor": name,
                "sqnr_db": _finite(round(e.sqnr_db(), 2)),
                "amax": e.scale * 127.0,
                "absmax": e.absmax,
                "clipped_percent": 100.0 * e.clipped / max(e.count, 1),
            }
            for (part, name), e in worst
        ],
        "sensitivity": None,
    }
    if sensitivity:
        report["sensitivity"] = _sensitivity(inp, frames, batch, fp32, fused, targets)
    return report


def _task_entry(
    spec: TaskSpec, fp: np.ndarray, q: np.ndarray, qf: np.ndarray, target: np.ndarray | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": spec.kind,
        "agreement": agreement(spec, q, fp),
        "agreement_fused": agreement(spec, qf, fp),
    }
    if target is not None:
        metric = PRIMARY[spec.kind]
        m_fp, m_q, m_f = (_score(spec, r, target) for r in (fp, q, qf))
        entry.update(
            against="labels",
            metric=metric,
            fp32=m_fp[metric],
            int8=m_q[metric],
            int8_fused=m_f[metric],
            all_metrics={"fp32": m_fp, "int8": m_q, "int8_fused": m_f},
        )
    else:
        entry.update(
            against="fp32",
            metric="agreement",
            fp32=100.0,
            int8=entry["agreement"],
            int8_fused=entry["agreement_fused"],
        )
    entry["higher_is_better"] = HIGHER_IS_BETTER[entry["metric"]]
    entry["delta"] = entry["int8"] - entry["fp32"]
    entry["delta_fused"] = entry["int8_fused"] - entry["fp32"]
    if spec.kind == "regression" and spec.unit:
        entry["unit"] = spec.unit
    return entry


def _sensitivity(
    inp: ReportInputs,
    frames: FrameSet,
    batch: int,
    fp32: Mapping[str, np.ndarray],
    fused: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray | None],
) -> dict[str, Any]:
    if inp.build_fused is None:
        raise CalibrationError("sensitivity needs a fused-model builder")
    base_err = {t: _rel_error(fused[t], fp32[t]) for t in inp.tasks}
    candidates = sorted({n for scales in inp.qdq_scales.values() for n in scales})
    rows: list[dict[str, Any]] = []
    for name in candidates:
        out = _run_fused(inp.build_fused([name]), inp, frames, batch)
        per_task: dict[str, Any] = {}
        recovered = []
        for t, spec in inp.tasks.items():
            err = _rel_error(out[t], fp32[t])
            rec = 1.0 - err / base_err[t] if base_err[t] > 0 else 0.0
            recovered.append(rec)
            row: dict[str, Any] = {"error_reduction": rec}
            tgt = targets[t]
            if tgt is not None:
                row["metric"] = _score(spec, out[t], tgt)[PRIMARY[spec.kind]]
            else:
                row["metric"] = agreement(spec, out[t], fp32[t])
            per_task[t] = row
        parts = sorted(p for p, scales in inp.qdq_scales.items() if name in scales)
        rows.append(
            {
                "tensor": name,
                "parts": parts,
                "recovered": float(np.mean(recovered)),
                "tasks": per_task,
            }
        )
    rows.sort(key=lambda r: -r["recovered"])
    return {
        "by_task": sensitivity_by_task(rows, inp.tasks),
        "method": "each Q/DQ tensor kept float in turn (fused graph); 'recovered' = mean over "
        "tasks of the share of the INT8 output error (relative squared error vs FP32) removed",
        "ranking": rows,
    }


def sensitivity_by_task(
    rows: list[dict[str, Any]], tasks: Collection[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per task, the ``WORST_TENSORS`` tensors whose float copy removes the most of *that* task's
    INT8 output error (the overall ranking averages over tasks, so a tensor that only one head
    is sensitive to can rank low there): ``{task: [{"tensor", "error_reduction"}, ...]}``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        ranked = sorted(rows, key=lambda r: -r["tasks"][t]["error_reduction"])[:WORST_TENSORS]
        out[t] = [
            {"tensor": r["tensor"], "error_reduction": r["tasks"][t]["error_reduction"]}
            for r in ranked
        ]
    return out


# ------------------------------------------------------------------------------ markdown
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report_markdown(report: Mapping[str, Any]) -> str:
    """A readable version of the report: per-task table, worst tensors, sensitivity."""
    cal = report.get("calibration", {})
    ev = report.get("evaluation") or {}
    lines = ["# INT8 calibration report", ""]
    if cal:
        lines += [
            f"- calibration: {cal.get('frames')} frames of `{cal.get('data', {}).get('uri')}` "
            f"(seed {cal.get('seed')}, batch {cal.get('batch')}), algorithm "
            f"**{cal.get('algorithm')}**"
            + (f" ({cal.get('percentile')})" if cal.get("algorithm") == "percentile" else "")
            + f", cache header `{cal.get('header')}` (TensorRT {cal.get('target')})",
        ]
        if cal.get("keep_float") or cal.get("keep_float_heads"):
            lines.append(
                f"- kept in float: tensors {cal.get('keep_float') or []}, heads "
                f"{cal.get('keep_float_heads') or []}"
            )
        if cal.get("exact_input_scales"):
            exact = {
                t: s for scales in cal["exact_input_scales"].values() for t, s in scales.items()
            }
            lines.append(
                "- input quantized exactly (every uint8 value representable): "
                + ", ".join(f"`{t}` scale {s:g}" for t, s in exact.items())
            )
    tail = placement_markdown(cal.get("qdq") or {})
    lines = [*lines, "", *warnings_markdown(report)]
    if not report.get("tasks"):
        lines.append("- no evaluation (--eval-frames 0): INT8 accuracy not measured")
        return "\n".join([*lines, *tail]) + "\n"
    origin = ev.get("origin") or f"held-out frames of `{ev.get('uri')}`"
    lines += [f"- evaluation: {ev.get('frames')} frames: {origin}", ""]
    lines += [
        "| task | metric | against | FP32 | INT8 (trunk+heads) | Δ | INT8 fused | Δ fused | "
        "agreement % |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t, e in report["tasks"].items():
        unit = f" ({e['unit']})" if e.get("unit") else ""
        lines.append(
            f"| {t} | {e['metric']}{unit} | {e['against']} | {_fmt(e['fp32'])} | "
            f"{_fmt(e['int8'])} | {e['delta']:+.2f} | {_fmt(e['int8_fused'])} | "
            f"{e['delta_fused']:+.2f} | {_fmt(e['agreement'])} |"
        )
    lines += [
        "",
        "## Tensors with the worst quantization error",
        "",
        "| part | tensor | SQNR dB | amax | absmax | clipped % |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for w in report["worst_tensors"]:
        lines.append(
            f"| {w['part']} | `{w['tensor']}` | {_fmt(w['sqnr_db'], 1)} | {_fmt(w['amax'], 4)} "
            f"| {_fmt(w['absmax'], 4)} | {_fmt(w['clipped_percent'], 3)} |"
        )
    lines += drift_markdown(report.get("drift"))
    lines += tail
    sens = report.get("sensitivity")
    if sens:
        tasks = list(report["tasks"])
        lines += [
            "",
            "## Sensitivity (keeping one tensor in float)",
            "",
            sens["method"],
            "",
            "| tensor | parts | recovered % | " + " | ".join(tasks) + " |",
            "|---|---|---:|" + "---:|" * len(tasks),
        ]
        for r in sens["ranking"][:WORST_TENSORS]:
            cells = " | ".join(_fmt(r["tasks"][t]["metric"]) for t in tasks)
            lines.append(
                f"| `{r['tensor']}` | {', '.join(r['parts'])} | "
                f"{100 * r['recovered']:.1f} | {cells} |"
            )
        by_task = sens.get("by_task") or {}
        if by_task:
            lines += [
                "",
                "Per task, the tensors whose float copy removes the most of that "
                "task's INT8 output error:",
                "",
                "| task | most sensitive tensors (error removed %) |",
                "|---|---|",
            ]
            for t, top in by_task.items():
                cells = ", ".join(
                    f"`{e['tensor']}` {100 * e['error_reduction']:.1f}" for e in top[:3]
                )
                lines.append(f"| {t} | {cells} |")
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """``folder/report.json`` and ``folder/report.md`` (each written atomically)."""

    folder.mkdir(parents=True, exist_ok=True)
    js = write_json(folder / "report.json", _jsonable(report))
    md = folder / "report.md"
    tmp = folder / ".report.md.tmp"
    tmp.write_text(report_markdown(report), encoding="utf-8")
    tmp.replace(md)
    return js, md


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
