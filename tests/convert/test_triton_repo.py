"""edge export-triton without a server: the repository's layout and config.pbtxt contents per
flavor, batching from the manifest, the ensemble's wiring, the BLS plan, the engines' sidecars
checked, and bad input refused before anything is written. (A real tritonserver loads and runs
the python flavor in tests/runtime/test_runtime_triton.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge.cli import main
from edge.convert.triton import TritonExportConfig, export_triton
from edge.core.errors import BundleError, ConfigError, EngineMismatchError
from edge.core.files import write_bytes
from edge.core.manifest import load_bundle, part_file
from edge.core.sidecar import write_sidecar
from tiny_models import make_tiny_bundle


@pytest.fixture(scope="module")
def dyn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("dyn"), dynamic_batch=True, max_batch=4)


def _config(repo: Path, model: str) -> str:
    return (repo / model / "config.pbtxt").read_text()


def test_python_flavor_layout_and_configs(dyn_bundle: Path, tmp_path: Path) -> None:
    cfg = TritonExportConfig(
        out=tmp_path / "repo", flavor="python", queue_delay_us=250, instances=2
    )
    repo = export_triton(dyn_bundle, cfg)
    bundle = load_bundle(dyn_bundle)
    heads = [f"etr_head_{t}" for t in bundle.tasks]
    models = {"etr_trunk", *heads, "etr_heads_all", "etr_ensemble", "etr_bls"}
    assert {p.name for p in repo.iterdir() if p.is_dir()} == models
    for m in ["etr_trunk", *heads, "etr_heads_all"]:
        assert {p.name for p in (repo / m / "1").iterdir()} == {"model.py", "model.onnx"}
    trunk = _config(repo, "etr_trunk")
    assert 'backend: "python"' in trunk and "max_batch_size: 4" in trunk
    assert '{ name: "image" data_type: TYPE_UINT8 dims: [ 32, 32, 3 ] }' in trunk
    assert '{ name: "shared_4" data_type: TYPE_FP32 dims: [ 12, 4, 4 ] }' in trunk
    assert "dynamic_batching { max_queue_delay_microseconds: 250 }" in trunk
    assert "instance_group [ { count: 2 kind: KIND_CPU } ]" in trunk
    sha = bundle.file_hash("trunk.onnx")
    assert f'parameters {{ key: "etr_onnx_sha256" value: {{ string_value: "{sha}" }} }}' in trunk
    mask = _config(repo, "etr_head_mask")
    assert '{ name: "mask_logits" data_type: TYPE_FP32 dims: [ 2, 16, 16 ] }' in mask
    assert (repo / "etr_trunk/1/model.onnx").read_bytes() == bundle.path("trunk").read_bytes()

    ens = _config(repo, "etr_ensemble")
    assert 'platform: "ensemble"' in ens and "dynamic_batching" not in ens
    steps = re.findall(r'model_name: "(\w+)"', ens)
    assert steps == ["etr_trunk", *heads]  # the trunk once, then every head
    for tap in bundle.tap_names:  # every tap wired by name from the trunk to the heads
        assert ens.count(f'output_map {{ key: "{tap}" value: "{tap}" }}') == 1
        assert ens.count(f'input_map {{ key: "{tap}" value: "{tap}" }}') == len(heads)
    for task in bundle.tasks.values():
        assert f'output_map {{ key: "{task.output}" value: "{task.output}" }}' in ens

    plan = json.loads((repo / "etr_bls/1/bls.json").read_text())
    assert plan["trunk"] == "etr_trunk" and plan["parameter"] == "tasks"
    assert plan["tasks"]["defect"] == {
        "model": "etr_head_defect",
        "inputs": bundle.tap_names,
        "output": "defect_logits",
    }
    meta = json.loads((repo / "etr_triton.json").read_text())
    assert meta["flavor"] == "python" and meta["max_batch_size"] == 4
    assert meta["models"]["heads/defect"] == "etr_head_defect"


def test_onnxruntime_flavor_and_fixed_batch(tiny_bundle: Path, tmp_path: Path) -> None:
    repo = export_triton(tiny_bundle, TritonExportConfig(out=tmp_path / "r", prefix="line1"))
    trunk = _config(repo, "line1_trunk")
    assert 'backend: "onnxruntime"' in trunk and "max_batch_size: 0" in trunk
    assert "dims: [ 1, 32, 32, 3 ]" in trunk  # the bundle's fixed batch stays in the dims
    assert "dynamic_batching" not in trunk and "kind: KIND_AUTO" in trunk
    assert (repo / "line1_trunk/1/model.onnx").is_file()
    assert not (repo / "line1_trunk/1/model.py").exists()
    with pytest.raises(ConfigError, match=r"fixed batch of 1.*--dynamic-batch"):
        export_triton(tiny_bundle, TritonExportConfig(out=tmp_path / "r2", max_batch=8))
    assert not (tmp_path / "r2").exists()


def _fake_engines(bundle_path: Path, folder: Path, precision: str = "fp16") -> None:
    bundle = load_bundle(bundle_path)
    for part in ["trunk", *(t.head for t in bundle.tasks.values()), bundle.merged_heads]:
        assert part is not None
        engine = folder / f"{part}.{precision}.engine"
        write_bytes(engine, f"not a real engine: {part}".encode())
        write_sidecar(
            engine,
            {
                "part": part,
                "precision": precision,
                "tensorrt": "10.3.0",
                "device": {"name": "Orin", "compute_capability": "8.7"},
                "onnx_sha256": bundle.file_hash(part_file(part)),
            },
        )


def test_tensorrt_flavor_checks_sidecars(dyn_bundle: Path, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    _fake_engines(dyn_bundle, engines)
    repo = export_triton(
        dyn_bundle, TritonExportConfig(out=tmp_path / "r", flavor="tensorrt", engines=engines)
    )
    trunk = _config(repo, "etr_trunk")
    assert 'platform: "tensorrt_plan"' in trunk and "backend:" not in trunk
    assert "kind: KIND_GPU" in trunk
    plan = (repo / "etr_head_defect/1/model.plan").read_bytes()
    assert plan == (engines / "heads/defect.fp16.engine").read_bytes()
    meta = json.loads((repo / "etr_triton.json").read_text())
    assert meta["engines"]["trunk"]["tensorrt"] == "10.3.0"

    write_bytes(engines / "heads/mask.fp16.engine", b"replaced after the build")
    with pytest.raises(EngineMismatchError, match=r"mask\.fp16\.engine.*changed after its build"):
        export_triton(
            dyn_bundle, TritonExportConfig(out=tmp_path / "r3", flavor="tensorrt", engines=engines)
        )
    with pytest.raises(BundleError, match="no int8 engine for 'trunk'"):
        cfg = TritonExportConfig(
            out=tmp_path / "r4", flavor="tensorrt", engines=engines, precision="int8"
        )
        export_triton(dyn_bundle, cfg)
    assert not (tmp_path / "r3").exists() and not (tmp_path / "r4").exists()


def test_outputs_never_overwrite(dyn_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    export_triton(dyn_bundle, TritonExportConfig(out=out, flavor="python"))
    with pytest.raises(ConfigError, match="exists; pass --force"):
        export_triton(dyn_bundle, TritonExportConfig(out=out))
    assert "python" in _config(out, "etr_trunk")
    export_triton(dyn_bundle, TritonExportConfig(out=out, force=True, version=2))
    assert 'backend: "onnxruntime"' in _config(out, "etr_trunk")
    assert (out / "etr_trunk/2/model.onnx").is_file() and not (out / "etr_trunk/1").exists()
    with pytest.raises(ConfigError, match="inside the bundle"):
        export_triton(dyn_bundle, TritonExportConfig(out=dyn_bundle / "triton"))
    with pytest.raises(ConfigError, match="exceeds the bundle's largest batch 4"):
        export_triton(dyn_bundle, TritonExportConfig(out=tmp_path / "x", max_batch=16))
    with pytest.raises(ConfigError, match="flavor 'docker'"):
        TritonExportConfig(out=tmp_path / "x", flavor="docker")


def test_cli_export_triton(
    dyn_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "repo"
    args = ["export-triton", str(dyn_bundle), "--out", str(out), "--flavor", "python"]
    assert main([*args, "--max-batch", "2", "--queue-delay-us", "500"]) == 0
    assert "max_batch_size: 2" in _config(out, "etr_head_angle")
    assert "max_queue_delay_microseconds: 500" in _config(out, "etr_head_angle")
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["export-triton", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a bundle" in capsys.readouterr().err
