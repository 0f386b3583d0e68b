"""profile_bundle end to end on the tiny bundle, the arms and their interleaving, the config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.core.errors import BundleError, ConfigError
from edge.core.manifest import file_entries, load_bundle
from edge.jetson.tegrastats import TegrastatsSampler
from edge.profile.arms import ArmSpec, arm_bundle, open_arm, parse_arm
from edge.profile.config import ProfileConfig
from edge.profile.interleave import Warmup, run_interleaved
from edge.profile.report import KEYS
from edge.profile.stage import profile_bundle, resolve_arms, summarize_for_cli

TOP_KEYS = {k for k in KEYS if "." not in k}


def test_profile_inference_with_comparisons(tiny_bundle: Path, tmp_path: Path) -> None:
    cfg = ProfileConfig(
        frames=30,
        warmup="5",
        report=tmp_path / "r",
        progress=False,
        compare=("fused", "tasks=defect", "m2: every=mask=2"),
        predict=("mask=0.5",),
        memory_frames=4,
    )
    out = profile_bundle(tiny_bundle, cfg)
    r = json.loads((out / "report.json").read_text())
    assert set(r) == TOP_KEYS
    assert r["format"] == "etr-edge-profile" and r["mode"] == "inference"
    assert r["pipeline"] is None and r["drops"] is None
    inf = r["inference"]
    assert inf["rounds"] == 30 and inf["warmup_rounds"] == 5 and inf["frames_in_memory"] == 4
    arms = {a["name"]: a for a in inf["arms"]}
    assert list(arms) == ["base", "fused", "tasks=defect", "m2"]
    for a in arms.values():
        assert {"name", "spec", "pipeline", "frames", "stages", "e2e", "throughput_fps"} <= set(a)
        assert a["frames"] == a["e2e"]["count"] == 30
    # every 2nd frame every task is due: the merged heads graph runs them all at once
    assert arms["m2"]["stages"]["heads"]["count"] == 15
    assert "head:mask" not in arms["m2"]["stages"]
    assert "head:mask" not in arms["tasks=defect"]["stages"]
    assert "fused" in arms["fused"]["stages"] and "trunk" not in arms["fused"]["stages"]
    assert r["stages"] == arms["base"]["stages"] and r["e2e"] == arms["base"]["e2e"]
    ratios = {row["arm"]: row for row in inf["ratios"]}
    assert ratios["base"]["mean_ratio"] == 1.0 and ratios["base"]["speedup"] == 1.0
    base_mean = arms["base"]["e2e"]["mean_ms"]
    for name in ("fused", "m2"):
        assert ratios[name]["mean_ratio"] == round(arms[name]["e2e"]["mean_ms"] / base_mean, 4)
    assert "trunk" in ratios["m2"]["stage_mean_ratio"]
    cm = r["cost_model"]
    assert [c["arm"] for c in cm["checks"]] == ["base", "tasks=defect", "m2"]  # split arms
    m2 = next(c for c in cm["checks"] if c["arm"] == "m2")
    assert m2["task_rates"]["mask"] == 0.5 and m2["measured_ms"] > 0
    assert cm["predictions"][0]["task_rates"] == {
        "defect": 1.0,
        "attrs": 1.0,
        "mask": 0.5,
        "angle": 1.0,
    }
    assert set(r["plots"]) == {"latency_histogram", "latency_over_time", "arms"}
    assert all((out / p).stat().st_size > 10_000 for p in r["plots"].values())
    assert r["machine"]["cpu_cores"] and "threads" in r["machine"]
    if not TegrastatsSampler.available():
        assert r["telemetry"]["available"] is False and r["telemetry"]["reason"]
    md = (out / "report.md").read_text()
    assert "### Ratios against `base`" in md and "## Cost model" in md
    assert "m2" in summarize_for_cli(out)


def test_profile_pipeline_from_a_source(tiny_bundle: Path, tmp_path: Path) -> None:
    cfg = ProfileConfig(
        source="synthetic:?frames=80&width=96&height=64",
        frames=40,
        warmup=Warmup(frames=5),
        report=tmp_path / "p",
        progress=False,
        memory_frames=3,
        plots=False,
    )
    r = json.loads((profile_bundle(tiny_bundle, cfg) / "report.json").read_text())
    assert r["mode"] == "pipeline"
    p = r["pipeline"]
    assert p["frames"] == 40 and p["warmup_frames"] == 5 and p["stopped_by"] == "frames"
    for stage in (
        "capture",
        "queue_wait",
        "preprocess",
        "trunk",
        "heads",  # all tasks every frame: the merged heads graph
        "postprocess",
        "sink",
    ):
        assert p["stages"][stage]["count"] == 40
    assert p["e2e"]["count"] == 40 and p["e2e"]["p99_ms"] >= p["e2e"]["p50_ms"] > 0
    assert p["drops"] == 0 == r["drops"]  # a finite source waits for the consumer
    assert p["capture"]["policy"] == "fifo:4" and "dropped_ids" not in p["capture"]
    assert r["stages"] == p["stages"] and r["throughput_fps"] == p["throughput_fps"]
    assert r["inference"]["frame_source"] == "first 3 frames of the source"
    assert r["plots"] == {}


def test_int8_arm_reads_the_qdq_models(tiny_bundle: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    cfg = ProfileConfig(compare=("int8",), report=tmp_path / "r", progress=False)
    bundle = load_bundle(root)
    with pytest.raises(ConfigError, match="edge calibrate"):
        resolve_arms(bundle, cfg)
    arms, notes = resolve_arms(bundle, ProfileConfig(compare=("precisions",)))
    assert [a.name for a in arms] == ["base"] and "edge calibrate" in notes[0]
    (root / "int8" / "heads").mkdir(parents=True)
    for part in bundle.parts:  # stand-ins: any ONNX model ORT runs will do for the path test
        shutil.copy(root / f"{part}.onnx", root / "int8" / f"{part}.onnx")
    arms, notes = resolve_arms(bundle, ProfileConfig(compare=("precisions",)))
    assert [a.name for a in arms] == ["base", "int8"] and not notes
    with pytest.raises(BundleError, match="not listed in the manifest's calibration"):
        open_arm(bundle, parse_arm("int8", ArmSpec()))  # nothing vouches for the stand-ins
    listed = file_entries(root, ["int8"])
    bundle.manifest = bundle.manifest.with_calibration(
        {"files": {rel: f.to_dict() for rel, f in listed.items()}}
    )
    with open_arm(bundle, parse_arm("int8", ArmSpec())) as p:
        assert p.trunk is not None and p.trunk.path == root / "int8" / "trunk.onnx"
        assert p.parts is not None and {b.path for b in p.parts.heads.values()} == {
            root / "int8" / "heads" / f"{t}.onnx" for t in bundle.tasks
        }


def test_tensorrt_arm_looks_for_engines(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    view = arm_bundle(bundle, parse_arm("trt,fp16", ArmSpec()))
    with pytest.raises(BundleError, match=r"edge build .* --precision fp16"):
        view.path("trunk")


def test_parse_arm() -> None:
    base = ArmSpec(tasks=("defect",), every=("defect=2",))
    a = parse_arm("fast: int8, fused", base)
    assert (a.name, a.precision, a.split, a.tasks, a.every) == (
        "fast",
        "int8",
        False,
        ("defect",),
        ("defect=2",),
    )
    b = parse_arm("tasks=defect+mask,every=mask=4", base)
    assert b.name == "tasks=defect+mask,every=mask=4"
    assert b.tasks == ("defect", "mask") and b.every == ("mask=4",)
    c = parse_arm("when=mask: defect in [scratch, hole]", base)
    assert c.when == ("mask: defect in [scratch, hole]",) and c.tasks is None and c.every == ()
    assert parse_arm("all", base).tasks is None
    assert parse_arm("trt", base).backend == "tensorrt"
    with pytest.raises(ConfigError, match="cannot read item"):
        parse_arm("int9", base)
    with pytest.raises(ConfigError, match="fp16 needs the tensorrt backend"):
        parse_arm("fp16", base)


def test_warmup_and_config_validation(tiny_bundle: Path) -> None:
    assert Warmup.parse("20") == Warmup(frames=20)
    assert Warmup.parse("2s") == Warmup(seconds=2.0)
    assert Warmup.parse("500ms") == Warmup(seconds=0.5)
    assert ProfileConfig(warmup="3").warmup == Warmup(frames=3)
    assert ProfileConfig().count == 300 and ProfileConfig(duration_s=2).count is None
    for bad in ("2.5", "x", "-1"):
        with pytest.raises(ConfigError, match="warmup"):
            Warmup.parse(bad)
    with pytest.raises(ConfigError, match="not both"):
        ProfileConfig(frames=10, duration_s=1.0)
    with pytest.raises(ConfigError, match="telemetry"):
        ProfileConfig(telemetry="maybe")
    with pytest.raises(ConfigError, match="not an arm"):
        resolve_arms(load_bundle(tiny_bundle), ProfileConfig(baseline="nope"))
    with pytest.raises(ConfigError, match="unique"):
        resolve_arms(load_bundle(tiny_bundle), ProfileConfig(compare=("fused", "fused")))


class _Log:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def step(self, image: np.ndarray, record: bool) -> None:
        self.log.append((self.name, int(image[0, 0, 0]), record))

    def close(self) -> None:
        pass


def test_interleaving_rotates_and_discards_warmup() -> None:
    log: list = []
    runners = [_Log(n, log) for n in "abc"]
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(4)]
    t = run_interleaved(runners, frames, warmup=Warmup(frames=2), count=4)
    assert t["rounds"] == 4 and t["warmup_rounds"] == 2
    rounds = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert [[name for name, _, _ in r] for r in rounds] == [
        list("abc"),
        list("bca"),
        list("cab"),
        list("abc"),
        list("bca"),
        list("cab"),
    ]
    assert all(len({f for _, f, _ in r}) == 1 for r in rounds)  # same frame for every arm
    assert [r[0][1] for r in rounds] == [0, 1, 2, 3, 0, 1]
    assert [r[0][2] for r in rounds] == [False, False, True, True, True, True]
    log.clear()
    t = run_interleaved(runners[:1], frames, warmup=Warmup(seconds=0.02), count=3)
    assert t["warmup_s"] >= 0.02 and t["warmup_rounds"] >= 1 and t["rounds"] == 3
