"""The report: telemetry summary and plot from real tegrastats lines, the Markdown tables, the
documented keys, the plots, and the missing-matplotlib message."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.core.errors import MissingDependencyError
from edge.jetson.tegrastats import TegrastatsSampler
from edge.profile.plots import histogram_cut, plot_histograms, plot_telemetry
from edge.profile.report import (
    KEYS,
    PlotData,
    keys_markdown,
    render_markdown,
    stats_table,
    write_report,
)
from edge.runtime.latency import summarize_ns

DATA = Path(__file__).parents[2] / "jetson" / "data" / "tegrastats"
PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG, f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _sampler(name: str, n: int = 6) -> TegrastatsSampler:
    line = (DATA / name).read_text().strip()
    return TegrastatsSampler.from_lines([line] * n)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.txt")))
def test_telemetry_summary_and_plot_for_every_module(name: str, tmp_path: Path) -> None:
    s = _sampler(name)
    summary = s.summary()
    assert summary["samples"] == 6 and summary["skipped_lines"] == 0
    assert summary["duration_s"] == 5.0
    md = "\n".join(
        render_markdown(
            _report({"available": True, "source": "tegrastats", "reason": None, "summary": summary})
        ).splitlines()
    )
    assert "From tegrastats: 6 samples over 5.0 s" in md
    for rail, p in summary["power_mw"].items():
        assert f"| {rail} | {p['mean'] / 1000:.2f} |" in md
    out = plot_telemetry(tmp_path / "telemetry.png", s.samples, 0.0, [("inference", 0, 3)])
    w, h = _png_size(out)
    assert w > 600 and h > 500


def test_telemetry_total_power_per_module() -> None:
    orin_nano = _sampler("orin_nano_jp6.txt").summary()
    assert orin_nano["power_mw"]["total"]["mean"] == 5704  # VDD_IN, not VDD_IN + sub-rails
    agx = _sampler("agx_orin_64gb.txt").summary()
    assert agx["power_mw"]["total"]["mean"] == 2340 + 390 + 4025
    assert agx["temps_max_c"]["tj"] == 44.343 and "GPU" not in agx["temps_max_c"]  # -256C


def test_unavailable_telemetry_is_stated() -> None:
    md = render_markdown(
        _report(
            {"available": False, "source": None, "reason": "no tegrastats on PATH", "summary": None}
        )
    )
    assert "Telemetry unavailable: no tegrastats on PATH." in md


def _stats(ms: list[float]) -> dict:
    return summarize_ns(np.array(ms) * 1e6)


def _report(telemetry: dict) -> dict:
    e2e = _stats([2.0, 3.0, 4.0])
    arm = {
        "name": "base",
        "spec": {"precision": "fp32", "backend": "onnxruntime", "mode": "split"},
        "pipeline": {"schedule": {"defect": "every"}},
        "frames": 3,
        "stages": {"trunk": _stats([1.0, 1.5, 2.0])},
        "e2e": e2e,
        "throughput_fps": 333.3,
    }
    return {
        "format": "etr-edge-profile",
        "version": 1,
        "created": "2025-01-01T00:00:00+00:00",
        "mode": "inference",
        "bundle": {"path": "/b", "model": "demo-line", "tasks": ["defect"], "input": [32, 32]},
        "config": {
            "backend": "onnxruntime",
            "precision": "fp32",
            "mode": "split",
            "warmup": {"frames": 5, "seconds": 0.0},
        },
        "machine": {"cpu": "Test CPU", "cpu_cores": 2, "jetson": None},
        "stages": arm["stages"],
        "e2e": e2e,
        "throughput_fps": 333.3,
        "drops": None,
        "inference": {
            "rounds": 3,
            "warmup_rounds": 5,
            "frames_in_memory": 4,
            "frame_source": "demo line",
            "baseline": "base",
            "arms": [arm],
            "ratios": [],
        },
        "pipeline": None,
        "cost_model": None,
        "telemetry": telemetry,
        "notes": ["a note"],
        "plots": {},
    }


def test_markdown_tables() -> None:
    rows = stats_table({"trunk": _stats([1.0, 2.0, 3.0])}, _stats([5.0]))
    assert rows[0].startswith("| stage | count | mean ms | p50 ms | p90 ms | p99 ms | max ms |")
    assert rows[2] == "| trunk | 3 | 2.000 | 2.000 | 2.800 | 2.980 | 3.000 |"
    assert rows[3].startswith("| **end to end** | 1 | 5.000")
    md = render_markdown(
        _report({"available": False, "source": None, "reason": "x", "summary": None})
    )
    assert "p50 **3.000 ms**" in md and "warm-up 5 frames discarded" in md
    assert "| cpu | Test CPU |" in md and "- a note" in md


def test_write_report_and_documented_keys(tmp_path: Path) -> None:
    report = _report({"available": False, "source": None, "reason": "x", "summary": None})
    top = {k for k in KEYS if "." not in k}
    assert top == set(report), "the example report and KEYS disagree"
    rng = np.random.default_rng(0)
    t = np.arange(50, dtype=np.int64) * 1_000_000
    data = PlotData(
        t0_ns=0,
        arms={"base": (t, rng.integers(1, 9, 50) * 1_000_000)},
        arm_stages={"base": {"trunk": rng.integers(1, 5, 50) * 1_000_000}},
    )
    out = write_report(tmp_path / "r", report, data)
    written = json.loads((out / "report.json").read_text())
    assert set(written) == top
    assert set(written["plots"]) == {"latency_histogram", "latency_over_time"}
    for rel in written["plots"].values():
        _png_size(out / rel)
    md = (out / "report.md").read_text()
    assert "![latency_histogram](plots/latency_histogram.png)" in md
    assert not list(out.glob(".*tmp*")) and not list((out / "plots").glob(".*"))
    table = keys_markdown()
    assert all(f"| `{k}` |" in table for k in KEYS)


def test_histogram_cuts_only_a_far_outlier(tmp_path: Path) -> None:
    vals = np.full(2000, 2_000_000)  # enough frames that one stray frame is above the p99.9
    vals[:1000] = 1_000_000
    vals[-1] = 500_000_000
    hi, beyond = histogram_cut(vals / 1e6)
    assert beyond == 1 and 2.0 <= hi < 500.0  # the stray frame is cut, the rest is shown
    assert histogram_cut(vals[:-1] / 1e6) == (2.0, 0)  # no far outlier: nothing is cut
    close = vals.copy()
    close[-1] = 3_000_000  # within twice the 99.9th percentile: kept
    assert histogram_cut(close / 1e6) == (3.0, 0)
    _png_size(plot_histograms(tmp_path / "h.png", {"trunk": vals}, "t"))


def test_missing_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"etr-edge\[profile\]"):
        plot_histograms(tmp_path / "h.png", {"trunk": np.ones(5)}, "t")
