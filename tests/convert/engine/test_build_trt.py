"""Real TensorRT builds of the tiny bundle (FP32 and FP16). Needs TensorRT and a CUDA GPU; skipped
with the reason everywhere else. Nothing here is faked: the engines are built, their sidecars
checked, and the serialized engines deserialized to compare their I/O with the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.convert.engine.build import build_engines
from edge.convert.engine.config import BuildConfig
from edge.core.board import probe_jetson
from edge.core.device_identity import gpu_identity
from edge.core.lazy_trt import module_version, trt_logger
from edge.core.manifest import load_bundle
from edge.core.sidecar import read_sidecar, verify_engine

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it exists on the device)")
pytestmark = pytest.mark.tensorrt


@pytest.fixture
def bundle_root(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_tiny_bundle(bundle_root: Path, precision: str) -> None:
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        pytest.skip(f"TensorRT {trt.__version__} has no FP16 builder flag (removed in 11)")
    cfg = BuildConfig(precision=precision, parts=("trunk", "defect", "fused"), workspace_mib=256)
    engines = build_engines(bundle_root, cfg)
    bundle = load_bundle(bundle_root)
    assert [e.name for e in engines] == [
        f"trunk.{precision}.engine",
        f"defect.{precision}.engine",
        f"fused.{precision}.engine",
    ]
    gpu = gpu_identity(probe_jetson())
    for engine, part in zip(engines, ["trunk", "heads/defect", "fused"]):
        record = verify_engine(
            engine,
            tensorrt=module_version(trt),
            device_name=gpu.name,
            compute_capability=gpu.compute_capability,
        )
        assert record["part"] == part and record["precision"] == precision
        assert record["io"]["inputs"][0]["name"] in bundle.manifest.parts[part].inputs
        runtime = trt.Runtime(trt_logger())
        cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
        assert cuda_engine is not None
        tensors = [cuda_engine.get_tensor_name(i) for i in range(cuda_engine.num_io_tensors)]
        names = {n: cuda_engine.get_tensor_mode(n) for n in tensors}  # the binding takes a name
        manifest = bundle.manifest.parts[part]
        inputs = {n for n, mode in names.items() if mode == trt.TensorIOMode.INPUT}
        assert inputs == set(manifest.inputs)
        assert set(manifest.outputs) <= set(names) - inputs
    assert (engines[0].parent / "timing.cache").stat().st_size > 0

    before = {e: e.stat().st_mtime_ns for e in engines}
    build_engines(bundle_root, cfg)  # everything current: nothing rebuilt
    assert {e: e.stat().st_mtime_ns for e in engines} == before
    sidecar = json.loads(engines[0].with_name(engines[0].name + ".json").read_text())
    assert sidecar == read_sidecar(engines[0])
