"""The cost model: prediction maths, and a prediction checked against a measured schedule run
on the demo model (untrained, 128x128, ONNX Runtime on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.core.errors import ConfigError
from edge.core.manifest import load_bundle
from edge.data.demo_line import demo_config, render_frame
from edge.profile.cost import (
    PartCosts,
    PartsRunner,
    check_prediction,
    parse_rates,
    predict_rates,
    predict_schedule,
)
from edge.profile.interleave import Warmup
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.pipeline import Pipeline
from edge.runtime.schedule import build_schedule
from tiny_models import make_tiny_bundle

COSTS = PartCosts(
    preprocess_ms=0.5,
    trunk_ms=2.0,
    overhead_ms=0.1,
    heads_ms={"defect": 0.3, "mask": 1.0, "angle": 0.2},
    decode_ms={"defect": 0.05, "mask": 0.4, "angle": 0.01},
)
FRAME = 0.5 + 2.0 + 0.1


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's config (128x128, four tasks), untrained."""
    return make_tiny_bundle(tmp_path_factory.mktemp("demo"), demo_config())


@pytest.fixture(scope="module")
def decoders(demo_bundle: Path) -> dict:
    return decoders_from_manifest(load_bundle(demo_bundle).manifest)


def _costs_for(tasks: list[str]) -> PartCosts:
    return PartCosts(
        0.5, 2.0, 0.1, {t: 0.3 + i for i, t in enumerate(tasks)}, {t: 0.05 for t in tasks}
    )


def test_predict_rates_mask_on_ten_percent() -> None:
    p = predict_rates(COSTS, {"defect": 1.0, "mask": 0.1, "angle": 1.0})
    assert p.trunk_rate == 1.0
    assert p.mean_ms == pytest.approx(FRAME + 0.35 + 0.21 + 0.1 * 1.4)
    assert p.breakdown_ms["head:mask"] == pytest.approx(0.1)
    assert sum(p.breakdown_ms.values()) == pytest.approx(p.mean_ms)
    # only a rare task: the trunk runs just on those frames
    assert predict_rates(COSTS, {"mask": 0.25}).mean_ms == pytest.approx(0.25 * (FRAME + 1.4))
    with pytest.raises(ConfigError, match="no measured head"):
        predict_rates(COSTS, {"nope": 1.0})
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        predict_rates(COSTS, {"mask": 1.5})


def test_predict_schedule_walks_the_period_cycle(decoders: dict) -> None:
    tasks = list(decoders)
    costs = _costs_for(tasks)
    per_task = {t: costs.task_ms(t) for t in tasks}
    every = predict_schedule(costs, build_schedule(decoders))
    assert every.mean_ms == pytest.approx(FRAME + sum(per_task.values()))
    mask4 = predict_schedule(costs, build_schedule(decoders, every=["mask=4"]))
    assert mask4.task_rates["mask"] == 0.25 and mask4.trunk_rate == 1.0
    assert mask4.mean_ms == pytest.approx(every.mean_ms - 0.75 * per_task["mask"])
    # two tasks on periods 2 and 3: the trunk runs on the union, 4 frames of every 6
    sparse = predict_schedule(
        costs, build_schedule(decoders, tasks=["defect", "angle"], every=["defect=2", "angle=3"])
    )
    assert sparse.trunk_rate == pytest.approx(4 / 6)
    assert sparse.mean_ms == pytest.approx(
        4 / 6 * FRAME + per_task["defect"] / 2 + per_task["angle"] / 3
    )


def test_predict_schedule_conditions_need_a_rate(decoders: dict) -> None:
    costs = _costs_for(list(decoders))
    sched = build_schedule(decoders, tasks=["defect", "mask"], when=["mask: defect != ok"])
    with pytest.raises(ConfigError, match="share of frames"):
        predict_schedule(costs, sched)
    p = predict_schedule(costs, sched, {"mask": 0.2})
    assert p.task_rates == {"defect": 1.0, "mask": 0.2}
    assert p.mean_ms == pytest.approx(FRAME + costs.task_ms("defect") + 0.2 * costs.task_ms("mask"))


def test_parse_rates() -> None:
    tasks = ["defect", "mask"]
    assert parse_rates("mask=0.1", tasks) == {"mask": 0.1}
    assert parse_rates("mask=10%, defect=1/4", tasks) == {"mask": 0.1, "defect": 0.25}
    for bad in ("mask", "nope=0.1", "mask=2", "mask=abc"):
        with pytest.raises(ConfigError):
            parse_rates(bad, tasks)


def test_parts_runner_refuses_a_fused_pipeline(demo_bundle: Path) -> None:
    with Pipeline(demo_bundle, split=False) as p, pytest.raises(ConfigError, match="split"):
        PartsRunner(p)


def test_prediction_within_15_percent_of_a_measured_schedule(demo_bundle: Path) -> None:
    bundle = load_bundle(demo_bundle)
    assert (bundle.input.height, bundle.input.width) == (128, 128)
    schedule = build_schedule(decoders_from_manifest(bundle.manifest), every=["mask=4"])
    frames = [render_frame(i).image for i in range(16)]
    errors = []
    for _ in range(2):  # a second try only if a burst of load from elsewhere spoiled the first
        check = check_prediction(bundle, schedule, frames, rounds=240, warmup=Warmup(frames=24))
        errors.append(check.rel_error)
        if abs(check.rel_error) < 0.15:
            break
    assert check.prediction.task_rates["mask"] == 0.25
    assert check.frames == 240
    assert check.costs.trunk_ms > 0 and check.costs.heads_ms["mask"] > 0
    assert min(abs(e) for e in errors) < 0.15, errors
