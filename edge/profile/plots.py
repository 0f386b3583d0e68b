"""PNG plots of a profile: latency histogram per stage, latency over time, the arms side by
side, telemetry over time. matplotlib (the ``profile`` extra) is imported lazily, Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import require
from edge.runtime.latency import percentiles

DPI = 110


@dataclass
class PlotData:
    """The raw series behind the plots. Times in ``time.monotonic_ns`` units."""

    t0_ns: int
    arms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """arm -> (frame start times, e2e ns)."""
    arm_stages: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pipeline: tuple[np.ndarray, np.ndarray] | None = None
    pipeline_stages: dict[str, np.ndarray] | None = None
    telemetry: list[tuple[float, Any]] = field(default_factory=list)
    """(time.monotonic() seconds, TegraSample)."""
    phases: list[tuple[str, int, int]] = field(default_factory=list)


def _plt() -> Any:
    mpl: Any = require("matplotlib", extra="profile", purpose="the profile's PNG plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)
    return path


def _rolling_median(y: np.ndarray, window: int) -> np.ndarray:
    if y.size < window:
        return np.full(y.shape, np.median(y)) if y.size else y
    pad = window // 2
    padded = np.pad(y, (pad, window - 1 - pad), mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, window)
    return np.median(view, axis=1)


def histogram_cut(ms: np.ndarray) -> tuple[float, int]:
    """Where a latency histogram's x axis stops, and how many values lie beyond: the maximum,
    unless the slowest value lies beyond twice the 99.9th percentile (then that percentile)."""
    p999 = percentiles(ms, (99.9,))[0]
    hi = float(ms.max()) if ms.max() <= 2 * p999 else p999
    return hi, int((ms > hi).sum())


def plot_histograms(path: Path, stages: Mapping[str, np.ndarray], title: str) -> Path:
    """One histogram per stage (ns in, ms shown), with p50/p90/p99 marked. The x axis stops at
    the 99.9th percentile when the slowest frame lies beyond twice that, so one stray frame
    does not squash the rest; what lies beyond is counted in the panel title."""
    plt = _plt()
    items = [(k, np.asarray(v, np.float64) / 1e6) for k, v in stages.items() if len(v)]
    ncols = 2 if len(items) <= 4 else 3
    nrows = max(1, -(-len(items) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax, (name, ms) in zip(axes.flat, items):
        p50, p90, p99 = percentiles(ms, (50, 90, 99))
        hi, beyond = histogram_cut(ms)
        shown = ms[ms <= hi]
        ax.hist(shown, bins=min(50, max(10, shown.size // 8)), color="#4C72B0", alpha=0.85)
        for v, style, label in ((p50, "-", "p50"), (p90, ":", "p90"), (p99, "--", "p99")):
            ax.axvline(
                v, color="#C44E52", linestyle=style, linewidth=1.3, label=f"{label} {v:.3f} ms"
            )
        ax.set_title(
            f"{name}  (n={ms.size}"
            + (f", {beyond} above {hi:.2f} ms not shown)" if beyond else ")"),
            fontsize=9,
        )
        ax.set_xlabel("latency (ms)", fontsize=8)
        ax.set_ylabel("frames", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    for ax in list(axes.flat)[len(items) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_over_time(path: Path, data: PlotData) -> Path:
    """Per-frame end-to-end latency against time since the profile started: every arm of the
    in-memory phase (dots, with a rolling median line) and, with a source, the pipeline."""
    plt = _plt()
    panels = [("in-memory inference (preprocess → result), interleaved arms", data.arms)]
    if data.pipeline is not None:
        panels.append(("pipeline from the source (capture → result)", {"pipeline": data.pipeline}))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12.5, 3.6 * len(panels)), squeeze=False)
    for ax, (title, series) in zip(axes[:, 0], panels):
        ys = []
        for i, (name, (t, v)) in enumerate(series.items()):
            if not len(v):
                continue
            x = (np.asarray(t, np.float64) - data.t0_ns) / 1e9
            y = np.asarray(v, np.float64) / 1e6
            ys.append(y)
            color = f"C{i % 10}"
            ax.plot(x, y, ".", markersize=2.5, alpha=0.35, color=color)
            ax.plot(
                x,
                _rolling_median(y, 25),
                "-",
                linewidth=1.6,
                color=color,
                label=f"{name} (rolling median; p50 {np.median(y):.2f} ms)",
            )
        top = max((percentiles(y, (99.5,))[0] * 1.25 for y in ys), default=0.0)
        clipped = sum(int((y > top).sum()) for y in ys)
        if top > 0:
            ax.set_ylim(0, top)
        more = f" — {clipped} point{'s' if clipped > 1 else ''} above the axis" if clipped else ""
        ax.set_title(title + more, fontsize=10)
        ax.set_xlabel("time since the profile started (s)", fontsize=9)
        ax.set_ylabel("latency (ms)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_arms(path: Path, arms: Sequence[Mapping[str, Any]], baseline: str) -> Path:
    """Each arm's end-to-end p50 (bar), p90 and p99 (whisker) and mean, side by side."""
    plt = _plt()
    names = [a["name"] for a in arms]
    p50 = np.array([a["e2e"]["p50_ms"] for a in arms])
    p90 = np.array([a["e2e"]["p90_ms"] for a in arms])
    p99 = np.array([a["e2e"]["p99_ms"] for a in arms])
    mean = np.array([a["e2e"]["mean_ms"] for a in arms])
    base_mean = mean[names.index(baseline)] if baseline in names else None
    fig, ax = plt.subplots(figsize=(10, 0.7 * len(arms) + 1.6))
    y = np.arange(len(arms))[::-1]
    colors = ["#DD8452" if n == baseline else "#4C72B0" for n in names]
    ax.barh(y, p50, color=colors, height=0.55)
    ax.fill_between([], [], color="#9a9a9a", label="p50 (bar)")  # a neutral legend entry
    ax.errorbar(
        p50,
        y,
        xerr=[np.zeros_like(p50), p99 - p50],
        fmt="none",
        ecolor="black",
        capsize=4,
        linewidth=1,
        label="p50 → p99",
    )
    ax.plot(p90, y, "|", color="black", markersize=12, label="p90")
    ax.plot(mean, y, "D", color="#C44E52", markersize=5, label="mean")
    for yi, m in zip(y, mean):
        ratio = f"  ×{m / base_mean:.2f} of {baseline}" if base_mean else ""
        ax.text(p99.max() * 1.02, yi, f"mean {m:.3f} ms{ratio}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlim(0, p99.max() * 1.55)
    ax.set_xlabel("end-to-end latency per frame (ms)", fontsize=9)
    ax.set_title(f"Arms side by side (baseline '{baseline}' in orange)", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_telemetry(
    path: Path,
    samples: Sequence[tuple[float, Any]],
    t0_s: float,
    phases: Sequence[tuple[str, float, float]] = (),
) -> Path:
    """Power (W) per rail and total, temperatures (°C) and GPU/EMC/CPU load (%) over time."""
    plt = _plt()
    t = np.array([s for s, _ in samples], np.float64) - t0_s
    tele = [x for _, x in samples]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ax_p, ax_t, ax_l = axes
    total = [x.total_power_mw for x in tele]
    source = next((x.total_power_source for x in tele if x.total_power_source), None) or ""
    total_rail = source.split()[0] if "module input rail" in source else None
    if any(v is not None for v in total):
        label = f"total ({total_rail})" if total_rail else "total (sum of the input rails)"
        ax_p.plot(
            t,
            [np.nan if v is None else v / 1000 for v in total],
            "-",
            color="black",
            linewidth=2,
            label=label,
        )
    for name in sorted({n for x in tele for n in x.rails} - {total_rail}):
        ax_p.plot(
            t,
            [x.rails[name][0] / 1000 if name in x.rails else np.nan for x in tele],
            "-",
            linewidth=1,
            label=name,
        )
    ax_p.set_ylabel("power (W)")
    ax_p.set_title("Jetson telemetry (tegrastats)", fontsize=10)
    for name in sorted({n for x in tele for n in x.temps}):
        ax_t.plot(t, [x.temps.get(name, np.nan) for x in tele], "-", linewidth=1, label=name)
    ax_t.set_ylabel("temperature (°C)")
    for label, values in (
        ("GPU load", [x.gpu_load for x in tele]),
        ("EMC load", [x.emc_load for x in tele]),
        (
            "CPU load (mean of online cores)",
            [np.mean([c[0] for c in x.cpu if c]) if any(x.cpu) else None for x in tele],
        ),
    ):
        if any(v is not None for v in values):
            ax_l.plot(t, [np.nan if v is None else v for v in values], "-", label=label)
    ax_l.set_ylabel("load (%)")
    ax_l.set_ylim(0, 105)
    ax_l.set_xlabel("time since the profile started (s)")
    for ax in axes:
        for i, (name, start, end) in enumerate(phases):
            ax.axvspan(start - t0_s, end - t0_s, color=f"C{i}", alpha=0.07)
            if ax is ax_p:
                ax.text(
                    start - t0_s,
                    1.0,
                    f" {name}",
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    fontsize=8,
                    color=f"C{i}",
                )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def write_plots(folder: Path, report: Mapping[str, Any], data: PlotData) -> dict[str, Path]:
    """Every plot the data allows; {name: path}."""
    out: dict[str, Path] = {}
    inf = report["inference"]
    baseline = inf["baseline"]
    if data.pipeline is not None and data.pipeline_stages is not None:
        stages = {**data.pipeline_stages, "capture → result": data.pipeline[1]}
        title = "Latency per stage: pipeline from the source"
    else:
        empty = np.zeros(0, np.int64)
        stages = {
            **data.arm_stages.get(baseline, {}),
            "preprocess → result": data.arms.get(baseline, (empty, empty))[1],
        }
        title = f"Latency per stage: arm '{baseline}' on in-memory frames"
    out["latency_histogram"] = plot_histograms(folder / "latency_histogram.png", stages, title)
    out["latency_over_time"] = plot_over_time(folder / "latency_over_time.png", data)
    if len(inf["arms"]) > 1:
        out["arms"] = plot_arms(folder / "arms.png", inf["arms"], baseline)
    if data.telemetry:
        out["telemetry"] = plot_telemetry(
            folder / "telemetry.png",
            data.telemetry,
            data.t0_ns / 1e9,
            [(n, a / 1e9, b / 1e9) for n, a, b in data.phases],
        )
    return out
