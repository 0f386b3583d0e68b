"""``calibrate_bundle``: everything written, consistent, and nothing written on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge.calib.cache import check_cache_matches, read_cache, read_cache_sidecar
from edge.calib.collect import collect_bundle, map_tensors
from edge.calib.data import sample_frames
from edge.calib.qdq import qdq_problems
from edge.calib.stage import CalibConfig, calibrate_bundle
from edge.calib.taskwise import head_nodes
from edge.core.errors import CalibrationError
from edge.core.files import sha256_file
from edge.core.manifest import MANIFEST, load_bundle
from edge.core.trt_version import TrtVersion
from edge.data.demo_line import HOLDOUT_OFFSET

FAST = dict(data="synthetic:", frames=32, batch=16, eval_frames=16, placement="all")
"""placement "all": the tiny bundle's convs are all tiny, which the default keeps float."""
TASKS = ("defect", "attrs", "mask", "angle")


def _copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    return out


@pytest.fixture(scope="module")
def calibrated(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _copy(tiny_bundle, tmp_path_factory.mktemp("cal"))
    calibrate_bundle(root, CalibConfig(**FAST, target="8.6.1"))
    return root


def test_writes_every_file_and_lists_it_in_the_manifest(calibrated: Path) -> None:
    bundle = load_bundle(calibrated)  # the conversion's own hashes still verify
    expected = {"calib/report.json", "calib/report.md"}
    for part in bundle.parts:
        expected.add(f"int8/{part}.onnx")
        if part != "fused":
            expected |= {f"calib/{part}.cache", f"calib/{part}.cache.json"}
    assert {f"calib/heads/{t}.cache" for t in TASKS} <= expected
    found = [p for d in ("calib", "int8") for p in (calibrated / d).rglob("*") if p.is_file()]
    written = {p.relative_to(calibrated).as_posix() for p in found}
    assert written == expected
    files = (bundle.manifest.calibration or {})["files"]
    assert set(files) == expected
    for rel, info in files.items():
        assert sha256_file(calibrated / rel) == info["sha256"]
    assert "calib/trunk.cache" not in bundle.manifest.files
    assert not list(calibrated.glob(".calibrate.*"))  # no temporary folder left behind


def test_caches_match_the_bundle_and_share_tap_scales(calibrated: Path) -> None:
    bundle = load_bundle(calibrated)
    trunk = read_cache(calibrated / "calib/trunk.cache")
    assert trunk.header == "TRT-8601-EntropyCalibration2"
    # the trunk cache lists exactly the tensors collected, in collection order
    parts = {p: onnx.load(bundle.path(p)) for p in bundle.parts if p != "fused"}
    frames = sample_frames("synthetic:", bundle.input, count=16, seed=0)
    stats = collect_bundle(parts, frames.batches(16), input_name="image")
    assert list(trunk.scales) == stats["trunk"].tensors
    for t in TASKS:
        part = f"heads/{t}"
        cache = read_cache(calibrated / f"calib/{part}.cache")
        assert list(cache.scales) == stats[part].tensors
        expected = set(stats[part].tensors)
        v861 = TrtVersion(8, 6, 1)
        check_cache_matches(
            cache, expected_tensors=expected, target=v861, algorithm="entropy", source=part
        )
        for tap in bundle.tap_names:
            assert cache.scales[tap] == trunk.scales[tap]
        meta = read_cache_sidecar(calibrated / f"calib/{part}.cache")
        assert meta["onnx_sha256"] == sha256_file(calibrated / f"{part}.onnx")
        assert meta["algorithm"] == "entropy" and meta["frames"] == 32
        assert meta["seed"] == 0 and meta["target_tensorrt"] == "8.6.1"


def test_qdq_models_follow_the_rules_and_reuse_the_cache_scales(calibrated: Path) -> None:
    trunk_cache = read_cache(calibrated / "calib/trunk.cache")
    for rel in ["int8/trunk.onnx", "int8/fused.onnx", *(f"int8/heads/{t}.onnx" for t in TASKS)]:
        model = onnx.load(calibrated / rel)
        assert qdq_problems(model) == [], rel
    q = onnx.load(calibrated / "int8/trunk.onnx")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    for node in q.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in trunk_cache.scales:
            assert float(inits[node.input[1]]) == trunk_cache.scales[node.input[0]]


def test_report_has_every_task_and_a_table(calibrated: Path) -> None:
    report = json.loads((calibrated / "calib/report.json").read_text())
    assert set(report["tasks"]) == set(TASKS)
    assert report["tasks"]["defect"]["against"] == "labels"  # the demo line has defect labels
    assert report["tasks"]["attrs"]["against"] == "fp32"  # ... but none for attrs
    for entry in report["tasks"].values():
        assert 0.0 <= entry["agreement"] <= 100.0
    assert report["evaluation"]["first_index"] == HOLDOUT_OFFSET
    assert report["calibration"]["frames"] == 32 and report["calibration"]["seed"] == 0
    assert report["worst_tensors"] and report["sensitivity"] is None
    md = (calibrated / "calib/report.md").read_text()
    assert "| defect | accuracy | labels |" in md and "worst quantization error" in md


def test_holdout_frames_are_not_training_frames() -> None:
    from edge.family.train import demo_line_samples

    first_training = next(iter(demo_line_samples(0, 0)))[0]
    first_holdout = next(iter(demo_line_samples(HOLDOUT_OFFSET, 0)))[0]
    assert not np.array_equal(first_training, first_holdout)
    assert HOLDOUT_OFFSET >= 1_000_000  # far above any training run's frame count


def test_mixed_precision_keeps_a_head_float(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_bundle, tmp_path)
    cfg = CalibConfig(
        **{**FAST, "eval_frames": 8},
        keep_float_heads=("mask",),
        keep_float=("shared_2",),
        sensitivity=True,
    )
    calibrate_bundle(root, cfg)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    mask = onnx.load(root / "int8/heads/mask.onnx")
    assert not any(n.op_type in qdq for n in mask.graph.node)
    defect = onnx.load(root / "int8/heads/defect.onnx")
    assert any(n.op_type in qdq for n in defect.graph.node)
    for model in (defect, onnx.load(root / "int8/trunk.onnx")):
        assert not any(
            n.op_type == "QuantizeLinear" and n.input[0] == "shared_2" for n in model.graph.node
        )
    bundle = load_bundle(root)
    parts = {p: onnx.load(bundle.path(p)) for p in bundle.parts}
    where = map_tensors(parts["fused"], {p: m for p, m in parts.items() if p != "fused"})
    trunk_side = {f for f, (p, _n) in where.items() if p == "trunk"}
    graphs = {"fused": trunk_side, **({bundle.merged_heads: set()} if bundle.merged_heads else {})}
    for part, stop in graphs.items():
        q = onnx.load(root / f"int8/{part}.onnx")
        prod = {o: n for n in q.graph.node for o in n.output}
        mask_nodes = head_nodes(parts[part], ["mask_logits"], stop)
        defect_nodes = head_nodes(parts[part], ["defect_logits"], stop)
        assert mask_nodes
        for node in q.graph.node:
            reads_dq = any(i in prod and prod[i].op_type == "DequantizeLinear" for i in node.input)
            if node.output[0] in mask_nodes:
                assert not reads_dq, (part, node.name)
        # the defect head's own last layers are still INT8
        gemm = next(n for n in q.graph.node if n.op_type == "Gemm" and n.output[0] in defect_nodes)
        assert prod[gemm.input[0]].op_type == "DequantizeLinear"
    report = json.loads((root / "calib/report.json").read_text())
    assert report["calibration"]["keep_float_heads"] == ["mask"]
    ranking = report["sensitivity"]["ranking"]
    assert ranking and {"tensor", "recovered", "tasks"} <= set(ranking[0])
    assert "shared_2" not in {r["tensor"] for r in ranking}  # already float
    by_task = report["sensitivity"]["by_task"]
    assert set(by_task) == set(TASKS) and all(by_task[t] for t in TASKS)
    assert "most sensitive tensors" in (root / "calib/report.md").read_text()


def test_without_evaluation_frames(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_bundle, tmp_path)
    calibrate_bundle(root, CalibConfig(**{**FAST, "eval_frames": 0}, algorithm="percentile"))
    report = json.loads((root / "calib/report.json").read_text())
    assert report["tasks"] == {} and report["calibration"]["algorithm"] == "percentile"
    assert "not measured" in (root / "calib/report.md").read_text()
    meta = read_cache_sidecar(root / "calib/trunk.cache")
    assert meta["percentile"] == 99.99
    assert read_cache(root / "calib/trunk.cache").algorithm == "EntropyCalibration2"


def test_mse_records_the_choice_of_every_tensor(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_bundle, tmp_path)
    calibrate_bundle(root, CalibConfig(**{**FAST, "eval_frames": 0}, algorithm="mse"))
    cal = json.loads((root / "calib/report.json").read_text())["calibration"]
    trunk = read_cache(root / "calib/trunk.cache")
    assert cal["algorithm"] == "mse" and trunk.algorithm == "EntropyCalibration2"
    chosen = cal["mse_choice"]
    assert set(chosen["trunk"]) == set(trunk.scales)
    assert set().union(*(c.values() for c in chosen.values())) <= {"entropy", "minmax"}


def test_dense_algorithm_calibrates_only_the_segmentation_decoder(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    base, dense = _copy(tiny_bundle, tmp_path / "a"), _copy(tiny_bundle, tmp_path / "b")
    calibrate_bundle(base, CalibConfig(**{**FAST, "eval_frames": 0}))
    calibrate_bundle(dense, CalibConfig(**{**FAST, "eval_frames": 0}, dense_algorithm="minmax"))
    listed = json.loads((dense / "calib/report.json").read_text())["calibration"]
    listed = listed["dense_tensors"]
    assert "mask_logits" in listed["heads/mask"] and "mask_logits" in listed["fused"]
    assert listed["trunk"] == [] and listed["heads/defect"] == []
    assert not any(n.startswith("shared_") for ns in listed.values() for n in ns)
    for part in ("trunk", "heads/mask", "heads/defect"):
        a = read_cache(base / f"calib/{part}.cache").scales
        b = read_cache(dense / f"calib/{part}.cache").scales
        mine = set(listed[part])
        assert {n: a[n] for n in a if n not in mine} == {n: b[n] for n in b if n not in mine}
        assert all(b[n] >= a[n] for n in mine)  # minmax never clips below entropy
    assert any(
        read_cache(dense / "calib/heads/mask.cache").scales[n]
        > read_cache(base / "calib/heads/mask.cache").scales[n]
        for n in listed["heads/mask"]
    )


def test_float_input_dynamic_batch_bundle(tmp_path: Path) -> None:
    """Without in-graph preprocessing the float image itself is calibrated and quantized."""
    from tiny_models import make_tiny_bundle

    root = make_tiny_bundle(tmp_path, in_graph_preprocessing=False, dynamic_batch=True)
    calibrate_bundle(root, CalibConfig(**{**FAST, "eval_frames": 8}))
    trunk = read_cache(root / "calib/trunk.cache")
    assert "image" in trunk.scales and trunk.scales["shared_0"] == trunk.scales["image"]
    q = onnx.load(root / "int8/trunk.onnx")
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "image" for n in q.graph.node)
    assert q.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # still dynamic
    assert qdq_problems(q) == []


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (dict(data="nosuch:thing"), "unknown scheme"),
        (dict(data="synthetic:?frames=8"), "holds 8 frames, fewer than the 32"),
        (dict(keep_float_heads=("nope",)), "no such task"),
        (dict(keep_float=("not_a_tensor",)), "not a tensor"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    tiny_bundle: Path, tmp_path: Path, cfg: dict, match: str
) -> None:
    root = _copy(tiny_bundle, tmp_path)
    before = _snapshot(root)
    with pytest.raises(CalibrationError, match=match):
        calibrate_bundle(root, CalibConfig(**{**FAST, **cfg}))
    assert _snapshot(root) == before
    assert not list(root.glob(".calibrate.*"))


def test_config_and_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="less than --batch"):
        CalibConfig(frames=8, batch=16)
    with pytest.raises(CalibrationError, match="algorithm"):
        CalibConfig(algorithm="kl")
    with pytest.raises(CalibrationError, match="TensorRT version"):
        CalibConfig(target="ten")
    with pytest.raises(CalibrationError, match=r"no manifest\.json"):
        calibrate_bundle(tmp_path, CalibConfig(**FAST))
    assert not (tmp_path / MANIFEST).exists() and not list(tmp_path.iterdir())


def test_cli_placement_flag_and_warnings_on_the_console(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    root = _copy(tiny_bundle, tmp_path)
    args = ["calibrate", str(root), "--frames", "16", "--batch", "16", "--eval-frames", "8"]
    assert main([*args, "--placement", "all"]) == 0
    out = capsys.readouterr().out
    assert "entropy calibration on 16 frames" in out  # the warning, printed with report.md
    assert "## Placement (fused graph)" in out and "| int8 |" in out
    report = json.loads((root / "calib/report.json").read_text())
    assert report["calibration"]["config"]["placement"] == "all"
    assert main(args) == 0  # the default keeps the tiny bundle's tiny convs float
    default = capsys.readouterr().out
    assert "tiny conv" in default and default.count("| int8 |") < out.count("| int8 |")
