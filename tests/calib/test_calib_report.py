from __future__ import annotations

from typing import Any

from edge.calib.report import WORST_TENSORS, report_markdown, sensitivity_by_task


def _row(tensor: str, recovered: float, **per_task: float) -> dict[str, Any]:
    return {
        "tensor": tensor,
        "parts": ["trunk"],
        "recovered": recovered,
        "tasks": {t: {"error_reduction": r, "metric": 50.0} for t, r in per_task.items()},
    }


def test_sensitivity_by_task_ranks_each_task_on_its_own_error() -> None:
    # sorted by the mean, as _sensitivity returns them: 'b' (only the mask cares) ranks last
    rows = [
        _row("a", 0.40, defect=0.70, mask=0.10),
        _row("c", 0.30, defect=0.55, mask=0.05),
        _row("b", 0.25, defect=0.00, mask=0.50),
    ]
    by_task = sensitivity_by_task(rows, ["defect", "mask"])
    assert [e["tensor"] for e in by_task["mask"]] == ["b", "a", "c"]
    assert [e["tensor"] for e in by_task["defect"]] == ["a", "c", "b"]
    assert by_task["mask"][0]["error_reduction"] == 0.50
    many = [_row(f"t{i}", 0.0, mask=i / 100) for i in range(WORST_TENSORS + 5)]
    top = sensitivity_by_task(many, ["mask"])["mask"]
    assert len(top) == WORST_TENSORS and top[0]["tensor"] == f"t{WORST_TENSORS + 4}"


def test_markdown_lists_the_most_sensitive_tensors_per_task() -> None:
    rows = [_row("a", 0.40, mask=0.10), _row("b", 0.25, mask=0.50)]
    report = {
        "evaluation": {"frames": 4, "uri": "synthetic:"},
        "tasks": {
            "mask": {
                "metric": "iou",
                "against": "labels",
                "fp32": 70.0,
                "int8": 69.5,
                "delta": -0.5,
                "int8_fused": 69.4,
                "delta_fused": -0.6,
                "agreement": 99.0,
            },
        },
        "worst_tensors": [],
        "sensitivity": {
            "method": "m",
            "ranking": rows,
            "by_task": sensitivity_by_task(rows, ["mask"]),
        },
    }
    md = report_markdown(report)
    assert "| mask | `b` 50.0, `a` 10.0 |" in md
    del report["sensitivity"]["by_task"]  # a report written before by_task existed still renders
    assert "| mask | `b`" not in report_markdown(report)
