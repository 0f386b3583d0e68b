"""The profile report: report.json (stable keys, documented in :data:`KEYS`), report.md
(tables for people) and PNG plots (:mod:`edge.profile.plots`).

A STATS object (one stage's latencies) is ``{"count", "mean_ms", "min_ms", "p50_ms",
"p90_ms", "p99_ms", "max_ms"}``: count of frames, then milliseconds; percentiles by linear
interpolation (numpy's default). Stage names: ``capture`` (source read → frame queued),
``queue_wait`` (queued → taken by the pipeline), ``preprocess``, ``trunk``, ``head:<task>``,
``heads`` (the merged heads graph, on frames where every task is due), ``fused``,
``postprocess`` (decoding), ``sink`` (writing results). A stage that did not run on a frame has
no sample from it, so ``count`` tells how often each head ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.core.files import write_json, write_text
from edge.profile.plots import PlotData, write_plots

FORMAT = "etr-edge-profile"
VERSION = 1

KEYS: dict[str, str] = {
    "format": '"etr-edge-profile".',
    "version": "Report format version (1). Keys are only ever added; a removed or re-defined "
    "key bumps it.",
    "created": "UTC time the report was written (ISO 8601).",
    "mode": '"inference" (no --source: in-memory frames only) or "pipeline" (with --source: '
    "the threaded capture → sink loop as well).",
    "bundle": "{path, model, tasks, input: [height, width]}.",
    "config": "The profile's settings: source, warmup {frames, seconds}, frames, duration_s, "
    "backend, precision, mode, tasks, schedule_file, every, when, compare, "
    "baseline, predict, telemetry, policy, memory_frames, backend_options.",
    "machine": "Machine facts: cpu, cpu_cores, machine, os, python, numpy, onnxruntime, "
    "tensorrt (versions or null), threads {onnxruntime, opencv, cpu_affinity, env}, "
    "jetson {model, module, soc, l4t, jetpack, ...} or null; on a Jetson also "
    "power_mode {name, id} and clocks {locked, ...} (from jetson_clocks --show).",
    "stages": "Headline per-stage STATS {stage: STATS}: the pipeline phase with --source, "
    "else the baseline arm.",
    "e2e": "Headline end-to-end STATS: capture → result with --source; else one frame's "
    "preprocess → result (the wall time of Pipeline.process).",
    "throughput_fps": "Headline frames per second: results per second of the pipeline phase "
    "with --source; else the baseline arm's single-stream rate "
    "(frames / sum of their latencies).",
    "drops": "With --source: frames lost to the frame policy (dropped or overrun) during the "
    "measured window, from gaps in frame ids; null without --source.",
    "inference": "The in-memory phase: frames_in_memory, frame_source, rounds (measured "
    "frames per arm), warmup_rounds, warmup_s, measure_s, baseline, arms, ratios.",
    "inference.arms[]": "One per arm: name, spec {name, precision, backend, mode, tasks, every, "
    "when, schedule, text}, pipeline (as the runtime describes it), frames, "
    "stages {stage: STATS}, e2e STATS, throughput_fps.",
    "inference.ratios[]": "One per arm, against the baseline: arm, baseline, mean_ratio, "
    "p50_ratio, p90_ratio, p99_ratio (arm ÷ baseline latency: < 1 is "
    "faster), throughput_ratio (> 1 is faster), speedup (baseline mean ÷ "
    "arm mean), stage_mean_ratio {stage: ratio}.",
    "pipeline": "With --source (else null): frames, warmup_frames, measure_s, stages "
    "{stage: STATS}, e2e STATS (capture → result), e2e_clock (sensor: from the camera's "
    "timestamp on the host clock; arrival: from the frame's arrival; mixed), throughput_fps, "
    "drops, source, "
    "policy, stopped_by (frames, duration, end of the source, signal), "
    "capture (the capture thread's counters for the whole run, warm-up included: "
    "captured, delivered, dropped, overruns, queued, max_queued, "
    "backpressure_waits, read_failures, reopens, gaps (count), ...), run "
    "(backend, mode, batch, schedule, policy, outputs).",
    "cost_model": "Null when the split parts are absent; else parts_ms {statistic, frames, "
    "preprocess_ms, trunk_ms, overhead_ms, heads_ms {task: ms}, decode_ms "
    "{task: ms}, merged_heads_ms (every head at once; null without merged heads)}, statistic, "
    "checks[], predictions[].",
    "cost_model.checks[]": "Each split arm of the base precision/backend predicted from "
    "parts_ms and measured: arm, schedule, predicted_ms, measured_ms, "
    "rel_error ((predicted − measured) ÷ measured), frames, "
    "condition_rates, trunk_rate, task_rates, breakdown_ms.",
    "cost_model.predictions[]": "One per --predict: spec, predicted_ms, trunk_rate, "
    "task_rates, breakdown_ms.",
    "telemetry": 'available, source ("tegrastats", "jtop" or null), reason (why not '
    "available), interval_ms, summary {samples, skipped_lines, duration_s, "
    "power_mw {total|rail: {mean, max}}, total_power_source, temps_max_c, "
    "gpu_load_mean, emc_load_mean, ram_used_max_mb}; jtop {start, end} snapshots.",
    "notes": "Things the reader should know (arms skipped and why).",
    "plots": "{name: path relative to the report folder} of the PNG plots written.",
}
"""report.json's keys: dotted path -> meaning. ``[]`` marks the items of a list."""


def keys_markdown() -> str:
    """The README table of report.json's keys."""
    rows = ["| key | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in KEYS.items()]
    return "\n".join(rows)


# -- markdown ---------------------------------------------------------------------------------
def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def stats_table(
    stages: Mapping[str, Mapping[str, Any]],
    e2e: Mapping[str, Any] | None = None,
    e2e_label: str = "**end to end**",
) -> list[str]:
    rows = [
        "| stage | count | mean ms | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    items = list(stages.items()) + ([(e2e_label, e2e)] if e2e else [])
    for name, s in items:
        rows.append(
            f"| {name} | {s['count']} | "
            + " | ".join(_f(s[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
            + " |"
        )
    return rows


def _machine_rows(m: Mapping[str, Any]) -> list[str]:
    rows = ["| fact | value |", "|---|---|"]
    for k in ("cpu", "cpu_cores", "machine", "os", "python", "numpy", "onnxruntime", "tensorrt"):
        rows.append(f"| {k} | {_f(m.get(k))} |")
    t = m.get("threads") or {}
    if t:
        ort = t.get("onnxruntime") or {}
        rows.append(
            f"| threads | onnxruntime intra {ort.get('intra_op_threads', '–')} / inter "
            f"{ort.get('inter_op_threads', '–')}, opencv {t.get('opencv')}, cpu "
            f"affinity {t.get('cpu_affinity')}, env {t.get('env') or '–'} |"
        )
    j = m.get("jetson")
    if j:
        rows.append(
            f"| jetson | {j.get('model')} ({j.get('module')}), L4T {_f(j.get('l4t'))}, "
            f"JetPack {_f(j.get('jetpack'))} |"
        )
        pm = m.get("power_mode") or {}
        rows.append(f"| power mode | {pm.get('name', 'unknown')} (id {pm.get('id', '–')}) |")
        ck = m.get("clocks") or {}
        rows.append(f"| clocks locked | {_f(ck.get('locked'))} |")
    else:
        rows.append("| jetson | no (not a Jetson, or not detectable here) |")
    return rows


def _telemetry_rows(t: Mapping[str, Any]) -> list[str]:
    if not t.get("available"):
        return [f"Telemetry unavailable: {t.get('reason')}."]
    s = t.get("summary") or {}
    if not s:
        return [f"Telemetry from {t['source']} (snapshots only; see report.json)."]
    rows = [
        f"From {t['source']}: {s.get('samples')} samples over "
        f"{_f(s.get('duration_s'), 1)} s; total power from "
        f"{s.get('total_power_source') or 'no total rail on this module'}.",
        "",
        "| rail | mean W | max W |",
        "|---|---:|---:|",
    ]
    for name, p in (s.get("power_mw") or {}).items():
        rows.append(f"| {name} | {p['mean'] / 1000:.2f} | {p['max'] / 1000:.2f} |")
    temps = ", ".join(f"{k} {v:.1f}" for k, v in (s.get("temps_max_c") or {}).items())
    rows += [
        "",
        f"Max temperatures °C: {temps or '–'}. GPU load mean "
        f"{_f(s.get('gpu_load_mean'), 1)} %, EMC load mean {_f(s.get('emc_load_mean'), 1)}"
        f" %, peak RAM {_f(s.get('ram_used_max_mb'))} MB.",
    ]
    return rows


def _warmup(w: Mapping[str, Any]) -> str:
    return f"{w['seconds']:g} s" if w.get("seconds") else f"{w.get('frames', 0)} frames"


def render_markdown(r: Mapping[str, Any]) -> str:
    """report.md from the report dict."""
    c, inf = r["config"], r["inference"]
    e = r["e2e"]
    out = [
        f"# Latency profile: {r['bundle']['model']} ({r['mode']})",
        "",
        f"Bundle `{r['bundle']['path']}`, input {r['bundle']['input'][0]}×"
        f"{r['bundle']['input'][1]}, tasks {', '.join(r['bundle']['tasks'])}. "
        f"Backend {c['backend']}, {c['precision']}, {c['mode']}; warm-up "
        f"{_warmup(c['warmup'])} discarded. "
        f"Created {r['created']}.",
        "",
        "## Summary",
        "",
        f"- end to end ({'capture → result' if r['pipeline'] else 'preprocess → result'}): "
        f"p50 **{_f(e['p50_ms'])} ms**, p90 {_f(e['p90_ms'])}, p99 **{_f(e['p99_ms'])} ms**, "
        f"max {_f(e['max_ms'])} (n={e['count']})",
        f"- throughput: **{_f(r['throughput_fps'], 1)} frames/s**"
        + (f"; drops in the measured window: **{r['drops']}**" if r["drops"] is not None else ""),
        "",
    ]
    if r["pipeline"]:
        p = r["pipeline"]
        cap = p.get("capture") or {}
        src = p.get("source") or {}
        out += [
            "## Pipeline (threaded, from the source)",
            "",
            f"Source `{src.get('uri')}` ({src.get('kind')}"
            f"{', live' if src.get('live') else ''}), policy {p.get('policy')}, stopped by "
            f"{p.get('stopped_by')}; {p['frames']} frames measured after {p['warmup_frames']}"
            f" warm-up frames. Capture: captured {cap.get('captured')}, delivered "
            f"{cap.get('delivered')}, dropped {cap.get('dropped')}, overruns "
            f"{cap.get('overruns')} (whole run, warm-up included).",
            "",
            *stats_table(p["stages"], p["e2e"], f"**{p.get('e2e_clock', 'arrival')} → result**"),
            "",
        ]
    out += [
        "## Inference on in-memory frames (interleaved)",
        "",
        f"{inf['rounds']} measured frames per arm ({inf['warmup_rounds']} warm-up) on "
        f"{inf['frames_in_memory']} frames ({inf['frame_source']}); arms run round-robin "
        "frame by frame so drift hits all alike.",
        "",
        "| arm | precision | backend | mode | schedule | mean ms | p50 ms | p90 ms | "
        "p99 ms | max ms | fps |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a in inf["arms"]:
        s, ae = a["spec"], a["e2e"]
        sched = ", ".join(f"{k}: {v}" for k, v in a["pipeline"]["schedule"].items())
        out.append(
            f"| {a['name']} | {s['precision']} | {s['backend']} | {s['mode']} | {sched} "
            f"| "
            + " | ".join(_f(ae[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
            + f" | {_f(a['throughput_fps'], 1)} |"
        )
    if len(inf["arms"]) > 1:
        out += [
            "",
            f"### Ratios against `{inf['baseline']}` (latency ratio < 1: faster)",
            "",
            "| arm | mean × | p50 × | p90 × | p99 × | fps × | speedup |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in inf["ratios"]:
            out.append(
                f"| {row['arm']} | "
                + " | ".join(
                    _f(row[k])
                    for k in (
                        "mean_ratio",
                        "p50_ratio",
                        "p90_ratio",
                        "p99_ratio",
                        "throughput_ratio",
                        "speedup",
                    )
                )
                + " |"
            )
    for a in inf["arms"]:
        out += [
            "",
            f"### Stages of arm `{a['name']}`",
            "",
            *stats_table(a["stages"], a["e2e"], "**preprocess → result**"),
        ]
    out += [
        "",
        *_cost_rows(r.get("cost_model")),
        "",
        "## Machine",
        "",
        *_machine_rows(r["machine"]),
        "",
        "## Telemetry",
        "",
        *_telemetry_rows(r["telemetry"]),
    ]
    if r.get("plots"):
        out += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in r["plots"].items()]
    if r.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(out) + "\n"


def _cost_rows(cm: Mapping[str, Any] | None) -> list[str]:
    if not cm:
        return ["## Cost model", "", "Not available (the split parts are missing)."]
    p = cm["parts_ms"]
    rows = [
        "## Cost model",
        "",
        f"Per-part {p['statistic']} latency (each part timed alone, {p['frames']} frames). "
        "A frame costs preprocess + trunk + overhead when any head is due, plus head + "
        "decode of each due task.",
        "",
        "| part | ms |",
        "|---|---:|",
        f"| preprocess | {_f(p['preprocess_ms'])} |",
        f"| trunk | {_f(p['trunk_ms'])} |",
        f"| overhead | {_f(p['overhead_ms'])} |",
    ]
    for t in p["heads_ms"]:
        rows.append(f"| head:{t} + decode | {_f(p['heads_ms'][t])} + {_f(p['decode_ms'][t])} |")
    if p.get("merged_heads_ms") is not None:
        rows.append(f"| heads (merged, every task) | {_f(p['merged_heads_ms'])} |")
    if cm["checks"]:
        rows += [
            "",
            "| arm | schedule | predicted ms | measured ms | error |",
            "|---|---|---:|---:|---:|",
        ]
        for ch in cm["checks"]:
            sched = ", ".join(
                f"{k}: {v}"
                + (
                    f" (held on {ch['condition_rates'][k] * 100:.0f} % of checks)"
                    if k in ch.get("condition_rates", {})
                    else ""
                )
                for k, v in ch["schedule"].items()
            )
            rows.append(
                f"| {ch['arm']} | {sched} | {_f(ch['predicted_ms'])} | "
                f"{_f(ch['measured_ms'])} | {ch['rel_error'] * 100:+.1f} % |"
            )
    if cm["predictions"]:
        rows += ["", "| prediction | task rates | predicted ms |", "|---|---|---:|"]
        for pr in cm["predictions"]:
            rates = ", ".join(f"{t} {v:g}" for t, v in pr["task_rates"].items())
            rows.append(f"| `{pr['spec']}` | {rates} | {_f(pr['predicted_ms'])} |")
    return rows


# -- writing ----------------------------------------------------------------------------------
def write_report(
    folder: str | Path, report: dict[str, Any], data: PlotData | None = None, *, plots: bool = True
) -> Path:
    """Write the plots (when ``plots`` and matplotlib is installed: a missing matplotlib
    raises MissingDependencyError), then report.json and report.md. Returns the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if plots and data is not None:
        report["plots"] = {
            k: str(p.relative_to(out)) for k, p in write_plots(out / "plots", report, data).items()
        }
    json.loads(json.dumps(report))  # fail before writing anything if it is not JSON
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    return out


def missing_keys(report: Mapping[str, Any], keys: Sequence[str] = tuple(KEYS)) -> list[str]:
    """Documented top-level keys absent from ``report`` (for tests and consumers)."""
    return [k for k in keys if "." not in k and k not in report]
