"""The pipeline: trunk once + due heads equals fused; schedules decide which heads run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.core.errors import ScheduleError
from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input, opencv_threads
from edge.data.demo_line import render_frame
from edge.runtime.backends.ort import OnnxRuntimeBackend
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.latency import StageStats
from edge.runtime.pipeline import Pipeline
from edge.runtime.schedule import Schedule, build_schedule
from tiny_models import make_tiny_bundle

FRAMES = [render_frame(i).image for i in range(12)]


def fused_reference(bundle: Path, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    spec = load_bundle(bundle).input
    with OnnxRuntimeBackend().load(bundle / "fused.onnx") as fused:
        return [fused.run({"image": frames_to_input([f], spec)}) for f in frames]


def test_split_pipeline_matches_fused_frame_by_frame(tiny_bundle: Path) -> None:
    ref = fused_reference(tiny_bundle, FRAMES)
    decoders = decoders_from_manifest(load_bundle(tiny_bundle).manifest)
    with Pipeline(tiny_bundle) as p:
        for i, (img, raw) in enumerate(zip(FRAMES, ref)):
            r = p.process(img, frame_id=100 + i)
            assert r.frame_id == 100 + i and r.index == i and r.ran == list(decoders)
            for task, dec in decoders.items():
                out = load_bundle(tiny_bundle).tasks[task].output
                want, got = dec.decode(raw[out][0]), r.results[task]
                assert got is not None and got.type == want.type
                if want.mask is not None:
                    assert got.mask is not None
                    assert (got.mask != want.mask).mean() < 0.01  # argmax ties at most
                for key in ("label", "on"):
                    if key in want.data:
                        assert got.data[key] == want.data[key]
                for key in ("prob", "value", "fraction"):
                    if key in want.data:
                        assert got.data[key] == pytest.approx(want.data[key], abs=1e-4)
            # every task due: the merged heads graph runs them all in one call
            assert set(r.timings_ns) == {"preprocess", "trunk", "heads", "postprocess"}
            assert all(v >= 0 for v in r.timings_ns.values())


def test_deferred_decode_gives_the_same_results_later(tiny_bundle: Path) -> None:
    """defer_decode (the run loop's inference thread) leaves a merged-heads frame's outputs raw;
    finish() (its sink thread) decodes them to exactly what decoding at once gives."""
    with Pipeline(tiny_bundle) as now, Pipeline(tiny_bundle) as later:
        for img in FRAMES[:4]:
            a = now.process(img)
            b = later.process(img, defer_decode=True)
            assert b.ran == [] and set(b.pending) == set(a.results)
            assert "postprocess" not in b.timings_ns
            t_raw = b.t_result_ns
            assert b.finish() is b and not b.pending and b.ran == a.ran
            assert b.t_result_ns >= t_raw and b.timings_ns["postprocess"] > 0
            for task, want in a.results.items():
                got = b.results[task]
                assert want is not None and got is not None and got.data == want.data
                if want.mask is not None:
                    assert got.mask is not None and np.array_equal(got.mask, want.mask)
            b.finish()  # a second call changes nothing
            assert b.timings_ns["postprocess"] > 0 and b.ran == a.ran


def test_deferred_decode_never_defers_what_a_condition_reads(tiny_bundle: Path) -> None:
    decoders = decoders_from_manifest(load_bundle(tiny_bundle).manifest)
    sched = build_schedule(decoders, tasks=["mask", "angle"], when=["mask: angle > -1e9"])
    with Pipeline(tiny_bundle, schedule=sched) as p:
        r = p.process(FRAMES[0], defer_decode=True)
    assert not r.pending and set(r.ran) == {"mask", "angle"}


def test_opencv_threads_is_restored_even_after_an_error() -> None:
    import cv2

    before = cv2.getNumThreads()
    with pytest.raises(RuntimeError), opencv_threads(1):
        assert cv2.getNumThreads() == 1
        raise RuntimeError("inside")
    assert cv2.getNumThreads() == before


def test_one_task_runs_the_trunk_and_only_its_head(tiny_bundle: Path) -> None:
    decoders = decoders_from_manifest(load_bundle(tiny_bundle).manifest)
    with Pipeline(tiny_bundle, schedule=build_schedule(decoders, tasks=["defect"])) as p:
        assert [s.task for s in p.steps] == ["defect"]  # only that head is loaded
        r = p.process(FRAMES[0])
        assert set(r.timings_ns) == {"preprocess", "trunk", "head:defect", "postprocess"}
        assert r.ran == ["defect"] and r.results["mask"] is None
        assert (
            p.trunk is not None
            and p.trunk.runs == 1
            and p.parts is not None
            and list(p.parts.heads) == ["defect"]
        )
        assert p.parts.heads["defect"].runs == 1


def test_conditional_head_runs_exactly_where_the_condition_holds(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    decoders = decoders_from_manifest(bundle.manifest)
    ref = fused_reference(tiny_bundle, FRAMES)
    # the untrained model's angle varies from frame to frame: split the frames at the median
    angles = [decoders["angle"].decode(r["angle_value"][0]).data["value"] for r in ref]
    cut = float(np.median(angles))
    expect = [i for i, a in enumerate(angles) if a > cut]
    assert 0 < len(expect) < len(FRAMES)
    sched = build_schedule(decoders, tasks=["mask", "angle"], when=[f"mask: angle > {cut!r}"])
    with Pipeline(bundle, schedule=sched) as p:
        results = [p.process(f) for f in FRAMES]
    ran = [r.index for r in results if r.results["mask"] is not None]
    assert ran == expect
    for r in results:
        assert ("head:mask" in r.timings_ns) == (r.index in expect)
        assert "head:angle" in r.timings_ns and r.results["defect"] is None


def test_every_nth_frame_skips_the_trunk_when_nothing_is_due(tiny_bundle: Path) -> None:
    decoders = decoders_from_manifest(load_bundle(tiny_bundle).manifest)
    sched = build_schedule(decoders, tasks=["defect", "mask"], every=["defect=2", "mask=3"])
    with Pipeline(tiny_bundle, schedule=sched) as p:
        rs = [p.process(f) for f in FRAMES[:7]]
        assert [r.ran for r in rs] == [
            ["defect", "mask"],
            [],
            ["defect"],
            ["mask"],
            ["defect"],
            [],
            ["defect", "mask"],
        ]
        assert [("trunk" in r.timings_ns) for r in rs] == [
            True,
            False,
            True,
            True,
            True,
            False,
            True,
        ]
        assert p.trunk is not None and p.trunk.runs == 5


def test_fused_mode_decodes_the_due_tasks(tiny_bundle: Path) -> None:
    decoders = decoders_from_manifest(load_bundle(tiny_bundle).manifest)
    sched = build_schedule(decoders, every=["angle=2"])
    with (
        Pipeline(tiny_bundle, schedule=sched) as split,
        Pipeline(tiny_bundle, schedule=sched, split=False) as fused,
    ):
        assert fused.trunk is None and fused.describe()["mode"] == "fused"
        for img in FRAMES[:4]:
            a, b = split.process(img), fused.process(img)
            assert a.ran == b.ran
            assert "fused" in b.timings_ns and "trunk" not in b.timings_ns
            for t in a.ran:
                assert a.results[t].get() == pytest.approx(b.results[t].get(), abs=1e-4)  # type: ignore[union-attr]
    only_every_2 = build_schedule(decoders, tasks=["angle"], every=["angle=2"])
    with Pipeline(tiny_bundle, schedule=only_every_2, split=False) as p:
        assert [bool(p.process(FRAMES[0]).timings_ns) for _ in range(4)] == [
            True,
            False,
            True,
            False,
        ]


def test_schedule_for_another_model_is_refused(tiny_bundle: Path) -> None:
    with pytest.raises(ScheduleError, match=r"\['part'\].*does not have"):
        Pipeline(tiny_bundle, schedule=Schedule.every_frame(["defect", "part"]))


def test_fixed_batch_bundle_pads_the_single_frame(tmp_path: Path, tiny_bundle: Path) -> None:
    b2 = make_tiny_bundle(tmp_path, batch=2)
    with Pipeline(b2) as p2, Pipeline(tiny_bundle) as p1:
        assert p2.batch == 2 and p2.preprocess(FRAMES[0]).shape == (2, 32, 32, 3)
        r2, r1 = p2.process(FRAMES[3]), p1.process(FRAMES[3])
        assert r2.results["angle"].get() == pytest.approx(r1.results["angle"].get(), abs=1e-4)  # type: ignore[union-attr]


def test_stage_stats_percentiles_within_one_percent() -> None:
    s = StageStats()
    values = np.arange(1, 1001) * 1000  # 1 us .. 1 ms, uniform
    for v in values:
        s.add({"trunk": int(v)})
    s.add_one("sink", 5_000_000)
    summ = s.summary()
    t = summ["trunk"]
    assert t["count"] == 1000 and t["min_ms"] == 0.001 and t["max_ms"] == 1.0
    assert t["mean_ms"] == pytest.approx(0.5005)
    assert t["p50_ms"] == pytest.approx(0.5, rel=0.01)
    assert t["p99_ms"] == pytest.approx(0.99, rel=0.01)
    assert summ["sink"]["p50_ms"] == summ["sink"]["p99_ms"] == 5.0
    assert s.stages == ["trunk", "sink"]


def test_rehearse_runs_the_last_frame_again_without_counting_it(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle) as p:
        p.rehearse()  # no frame yet: nothing to run
        assert p.parts is not None and p.parts.trunk.runs == 0
        first = p.process(FRAMES[0])
        runs = p.parts.trunk.runs
        p.rehearse()
        assert p.parts.trunk.runs == runs + 1 and p.frames == 1
        again = p.process(FRAMES[0])
        assert again.index == 1
        for task, r in first.results.items():
            r2 = again.results[task]
            assert r is not None and r2 is not None and r2.to_json() == r.to_json()
