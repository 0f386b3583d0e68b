"""The pipeline runs the merged heads graph exactly when every task is due unconditionally."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.data.demo_line import render_frame
from edge.runtime.pipeline import Pipeline
from edge.runtime.schedule import build_schedule


def _frames(n: int) -> list[np.ndarray]:
    return [render_frame(i).image for i in range(n)]


def test_all_tasks_due_runs_the_merged_graph_with_the_same_results(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as merged, Pipeline(tiny_bundle, merge_heads=False) as single:
        assert merged.merged is not None and single.merged is None
        for i, img in enumerate(_frames(3)):
            a, b = merged.process(img, frame_id=i), single.process(img, frame_id=i)
            assert "heads" in a.timings_ns and not any(k.startswith("head:") for k in a.timings_ns)
            assert "heads" not in b.timings_ns
            for t in a.results:
                ra, rb = a.results[t], b.results[t]
                assert ra is not None and rb is not None
                assert ra.brief() == rb.brief()


def test_periodic_task_uses_merged_only_when_all_are_due(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p:
        sched = build_schedule(p.decoders, every=("mask=2",))
    with Pipeline(tiny_bundle, schedule=sched) as p:
        keys = [set(p.process(img, frame_id=i).timings_ns) for i, img in enumerate(_frames(4))]
    assert ["heads" in k for k in keys] == [True, False, True, False]
    assert "head:mask" not in keys[1] and "head:defect" in keys[1]


def test_conditional_schedule_never_merges(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p:
        sched = build_schedule(p.decoders, when=("mask: defect != ok",))
    with Pipeline(tiny_bundle, schedule=sched) as p:
        assert p.merged is None
        r = p.process(_frames(1)[0], frame_id=0)
        assert "heads" not in r.timings_ns and "head:defect" in r.timings_ns
