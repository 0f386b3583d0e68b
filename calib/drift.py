"""Is the calibration data like the data the model will see? Per tensor and per task.

``compare`` sets the statistics of the calibration frames against those of the evaluation
frames (both ``collect.collect_bundle`` results, every activation tensor of every part), per
tensor:

- ``range_ratio``: calibration absmax / evaluation absmax. Above ``RANGE_FLAG`` the scales are
  too coarse for the real data (photos as --data for a factory line: a Resize output reached
  186.5 where the line's frames reach 31.6); below ``1 / RANGE_FLAG`` real values get clipped;
- ``divergence``: the Jensen-Shannon divergence (base 2, 0 = same, 1 = disjoint) of the two |x|
  histograms, on a common range, in ``COARSE_BINS`` bins. Above ``DIVERGENCE_FLAG`` the shapes
  differ even if the ranges agree.

A flagged tensor flags the tasks that depend on it (a trunk tensor: every task). ``warnings``
turns the result, the calibration set's size and the image conversions into sentences for
report.md, report.json and the console.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from edge.calib.collect import PartStats
from edge.calib.histogram import TensorStats

RANGE_FLAG = 2.0
DIVERGENCE_FLAG = 0.15
COARSE_BINS = 128
ENTROPY_MIN_FRAMES = 500
"""Entropy calibration's histograms need many frames; below this the report warns."""
LISTED = 10


def divergence(a: TensorStats, b: TensorStats, bins: int = COARSE_BINS) -> float:
    """Jensen-Shannon divergence (base 2) of the |x| histograms of ``a`` and ``b``."""
    if a.count == 0 or b.count == 0:
        return 0.0
    top = max(a.range, b.range)
    group = max(1, a.num_bins // bins)
    p = a.counts_at(top).reshape(-1, group).sum(axis=1).astype(np.float64)
    q = b.counts_at(top).reshape(-1, group).sum(axis=1).astype(np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def compare(
    calib: Mapping[str, PartStats],
    held: Mapping[str, PartStats],
    tasks_of_part: Mapping[str, Collection[str]],
) -> dict[str, Any]:
    """Every tensor's range ratio and divergence, the flagged ones first; flagged tasks."""
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    flagged_tasks: dict[str, int] = {}
    for part, ps in calib.items():
        other = held.get(part)
        for name in ps.tensors:
            c = ps.stats[name]
            if id(c) in seen or other is None or name not in other.stats:
                continue
            seen.add(id(c))
            e = other.stats[name]
            if c.absmax == 0.0 and e.absmax == 0.0:
                continue
            ratio = c.absmax / e.absmax if e.absmax > 0 else float("inf")
            div = divergence(c, e)
            why = []
            if ratio > RANGE_FLAG or ratio < 1 / RANGE_FLAG:
                why.append(f"range ratio {ratio:.2f}")
            if div > DIVERGENCE_FLAG:
                why.append(f"divergence {div:.2f}")
            rows.append(
                {
                    "part": part,
                    "tensor": name,
                    "calib_absmax": c.absmax,
                    "eval_absmax": e.absmax,
                    "range_ratio": ratio,
                    "divergence": div,
                    "flagged": bool(why),
                    "why": ", ".join(why),
                }
            )
            if why:
                for t in tasks_of_part.get(part, ()):
                    flagged_tasks[t] = flagged_tasks.get(t, 0) + 1
    rows.sort(
        key=lambda r: (
            not r["flagged"],
            -max(r["divergence"], abs(np.log2(r["range_ratio"] or 1e-30)) / 8),
        )
    )
    return {
        "method": (
            f"per tensor: calibration absmax / evaluation absmax (flagged outside "
            f"[{1 / RANGE_FLAG:g}, {RANGE_FLAG:g}]) and the Jensen-Shannon divergence of the |x| "
            f"histograms (base 2, flagged above {DIVERGENCE_FLAG:g})"
        ),
        "tensors_compared": len(rows),
        "tensors_flagged": sum(r["flagged"] for r in rows),
        "tasks_flagged": flagged_tasks,
        "tensors": rows,
    }


def warnings(
    drift: Mapping[str, Any] | None,
    *,
    algorithm: str,
    frames: int,
    data_info: Mapping[str, Any],
) -> list[str]:
    """The report's warnings, one sentence each (empty: nothing to warn about)."""
    out: list[str] = []
    if algorithm == "entropy" and frames < ENTROPY_MIN_FRAMES:
        out.append(
            f"entropy calibration on {frames} frames: its histograms want at least "
            f"{ENTROPY_MIN_FRAMES}; pass more --frames or use --algorithm minmax"
        )
    images = data_info.get("images") or {}
    conv = {k: v["count"] for k, v in (images.get("converted") or {}).items() if v["count"]}
    if conv.get("16-bit") or conv.get("alpha") or images.get("sizes", 1) > 1:
        some = {k: v["files"][:3] for k, v in images["converted"].items() if v["count"]}
        out.append(
            "calibration images were converted to 8-bit colour frames of the model's size: "
            + ", ".join(f"{n} {k}" for k, n in conv.items())
            + f" ({images.get('sizes')} different sizes; e.g. {some}); "
            "deployment frames are not like that: calibrate on frames from the camera"
        )
    skipped = images.get("skipped") or {}
    if skipped.get("count"):
        out.append(
            f"{skipped['count']} file(s) in the calibration folder were skipped (not "
            f"an image type the folder source reads): {skipped['files']}"
        )
    if drift and drift.get("tensors_flagged"):
        tasks = drift["tasks_flagged"]
        top = [r for r in drift["tensors"] if r["flagged"]][:3]
        out.append(
            f"the calibration data is unlike the evaluation data: {drift['tensors_flagged']} of "
            f"{drift['tensors_compared']} tensors differ ("
            + "; ".join(f"{r['part']}:{r['tensor']} {r['why']}" for r in top)
            + f"); tasks affected: {', '.join(f'{t} ({n} tensors)' for t, n in tasks.items())}. "
            "Calibrate on frames like the ones the model will see"
        )
    return out


def warnings_markdown(report: Mapping[str, Any]) -> list[str]:
    """report.md's warnings (at the top) as lines."""
    warns = report.get("warnings") or []
    if not warns:
        return []
    return ["## Warnings", "", *(f"- **warning**: {w}" for w in warns), ""]


def drift_markdown(drift: Mapping[str, Any] | None) -> list[str]:
    """report.md's section on calibration vs evaluation statistics (the flagged tensors, or
    the closest ones when none is flagged)."""
    if not drift:
        return []
    rows = drift["tensors"][:LISTED]
    lines = [
        "",
        "## Calibration data vs evaluation data",
        "",
        f"{drift['tensors_flagged']} of {drift['tensors_compared']} tensors flagged; "
        f"{drift['method']}.",
        "",
        "| part | tensor | calib absmax | eval absmax | ratio | divergence | flag |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['part']} | `{r['tensor']}` | {r['calib_absmax']:.4g} | {r['eval_absmax']:.4g} "
            f"| {r['range_ratio']:.2f} | {r['divergence']:.3f} | {r['why'] or '-'} |"
        )
    return lines
