"""The TensorRT backend.

Without TensorRT (here): the registry's error, the module importing neither tensorrt nor pycuda,
option validation, and every sidecar refusal happening *before* TensorRT is imported.
With TensorRT, pycuda and a GPU (marked ``tensorrt``, skipped elsewhere with the reason): the
tiny bundle's FP32 engines are built with ``edge build`` and checked against ONNX Runtime,
by-name binding, zero-copy taps (the head's input address is the trunk's output buffer), CUDA
graph replay and the refusal of a modified engine. Nothing is faked.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.core import lazy_trt
from edge.core.board import probe_jetson
from edge.core.device_identity import gpu_identity
from edge.core.errors import (
    BundleError,
    ConfigError,
    EngineMismatchError,
    InputContractError,
    MissingDependencyError,
)
from edge.core.manifest import load_bundle
from edge.core.sidecar import write_sidecar
from edge.runtime.backends.registry import backend_class, create_backend
from edge.runtime.backends.trt import TensorRTBackend, TrtOptions
from edge.runtime.backends.trt_cuda import cudart_module
from edge.runtime.backends.trt_selftest import TOLERANCES, compare_with_onnxruntime

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
no_trt = pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: this checks its absence")


def _engine(
    folder: Path,
    *,
    device: dict[str, str] | None = None,
    name: str = "trunk.fp32.engine",
    **over: Any,
) -> Path:
    """A file with a sidecar that matches this machine (unless ``device`` says otherwise)."""
    gpu = gpu_identity(probe_jetson())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"not a real engine: TensorRT must never see these bytes" * 100)
    info = {
        "part": "trunk",
        "precision": "fp32",
        "tensorrt": "10.3.0",
        "device": device or {"name": gpu.name, "compute_capability": gpu.compute_capability},
        "onnx": "trunk.onnx",
        "onnx_sha256": "0" * 64,
        **over,
    }
    write_sidecar(path, info)
    return path


# ---------------------------------------------------------------------------- without TensorRT


@no_trt
def test_registry_says_tensorrt_is_missing() -> None:
    for name in ("tensorrt", "trt"):
        with pytest.raises(MissingDependencyError, match="tensorrt") as e:
            backend_class(name)
        assert "--backend onnxruntime" in str(e.value)


def test_module_imports_neither_tensorrt_nor_pycuda(tmp_path: Path) -> None:
    code = (
        "import sys, edge.runtime.backends.trt\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'pycuda', 'cuda')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "[]"


def test_options_are_validated() -> None:
    assert TensorRTBackend(precision="int8").options == TrtOptions(precision="int8")
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        TensorRTBackend(precision="fp8")
    with pytest.raises(ConfigError, match="onnxruntime options"):
        TensorRTBackend(intra_op_threads=2)
    assert TensorRTBackend().last_gpu_ms == 0.0


def test_modified_engine_is_refused_before_tensorrt_is_imported(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "engines" / "gpu")
    engine.write_bytes(engine.read_bytes() + b"tampered")
    code = (
        "import sys\n"
        "from edge.core.errors import EngineMismatchError\n"
        "from edge.runtime.backends.trt import TensorRTBackend\n"
        "try:\n"
        f"    TensorRTBackend().load({str(engine)!r})\n"
        "except EngineMismatchError as e:\n"
        "    print('REFUSED', 'tensorrt' in sys.modules, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.startswith("REFUSED False "), out.stdout + out.stderr
    assert "replaced or corrupted" in out.stdout and "rebuild" in out.stdout


def test_engine_without_sidecar_is_refused(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    engine.with_name(engine.name + ".json").unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        TensorRTBackend().load(engine)


def test_engine_for_another_gpu_is_refused(tmp_path: Path) -> None:
    engine = _engine(tmp_path, device={"name": "Imaginary GPU 9000", "compute_capability": "9.9"})
    with pytest.raises(EngineMismatchError, match="Imaginary GPU 9000") as e:
        TensorRTBackend().load(engine)
    assert "compute capability" in str(e.value) and "edge build" in str(e.value)


def test_engine_of_a_reconverted_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    engine = _engine(root / "engines" / "gpu")  # sidecar: onnx_sha256 "000..." != manifest's
    with pytest.raises(EngineMismatchError, match="converted again"):
        TensorRTBackend().load(engine)


@no_trt
def test_verified_engine_then_needs_cuda_and_tensorrt(tmp_path: Path) -> None:
    engine = _engine(tmp_path)  # matches this machine: verification passes, imports come next
    with pytest.raises(MissingDependencyError, match=r"pycuda|TensorRT's Python bindings"):
        TensorRTBackend().load(engine)


def test_stale_explicit_int8_engine_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    """Issue 13 item 9: an engine built from int8/trunk.onnx (listed in the manifest's
    calibration section, not its files) was accepted with a stale onnx_sha256."""
    root = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (root / "int8").mkdir()
    shutil.copyfile(root / "trunk.onnx", root / "int8" / "trunk.onnx")
    folder = root / "engines" / "gpu"
    engine = _engine(
        folder, name="trunk.int8.engine", onnx="int8/trunk.onnx", precision="int8"
    )  # onnx_sha256: 64 zeros
    with pytest.raises(EngineMismatchError, match="converted again"):
        TensorRTBackend(precision="int8").load(engine)


def test_dla_core_is_set_before_deserializing(tmp_path: Path, monkeypatch: Any) -> None:
    """Issue 12 item 5: ``Runtime.DLA_core`` comes from the sidecar before the engine is
    deserialized. The stand-in ``tensorrt`` module has only what the binding defines and this
    path uses: ``Runtime.DLA_core`` is a read/write property (pyCore.cpp 10.3:1544
    ``.def_property("DLA_core", &IRuntime::getDLACore, &IRuntime::setDLACore)``) and
    ``deserialize_cuda_engine`` returns None when TensorRT refuses the bytes."""
    seen: list[Any] = []

    class Runtime:
        DLA_core = -1

        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> None:
            seen.append(self.DLA_core)

    class ILogger:
        ERROR, WARNING = 1, 2

        def __init__(self) -> None:
            pass

    fake = types.ModuleType("tensorrt")
    fake.__dict__.update(
        __version__="10.3.0", Runtime=Runtime, ILogger=ILogger, init_libnvinfer_plugins=print
    )
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(lazy_trt, "_LOGGER", [])
    engine = _engine(tmp_path, name="trunk.fp32.dla1.engine", dla_core=1)
    backend = TensorRTBackend(precision="fp32", dla_core=1)
    backend.sidecar = {"tensorrt": "10.3.0", "precision": "fp32", "dla_core": 1}
    with pytest.raises(EngineMismatchError, match="could not deserialize"):
        backend._open_engine(engine)
    assert seen == [1]


def test_compare_without_engines_says_what_to_build(tiny_bundle: Path, tmp_path: Path) -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(BundleError, match="edge build"):
        compare_with_onnxruntime(tiny_bundle, tmp_path, [frame], precisions=["fp16"])


# ---------------------------------------------------------------------------- with TensorRT


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> tuple[Path, Path]:
    """The tiny bundle with FP32 engines for every part: (bundle root, engine folder)."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it exists on the device)")
    cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    cuda.init()
    if cuda.Device.count() < 1:
        pytest.skip("no CUDA device")
    from edge.convert.engine.build import BuildConfig, build_engines

    root = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("trt") / "bundle"))
    engines = build_engines(root, BuildConfig(precision="fp32", workspace_mib=256))
    return root, engines[0].parent


def _frames(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def _feed(root: Path, frame: np.ndarray) -> dict[str, np.ndarray]:
    from edge.core.preprocess import frames_to_input

    bundle = load_bundle(root)
    return {bundle.input.name: frames_to_input([frame], bundle.input)}


@pytest.mark.tensorrt
def test_engines_match_onnxruntime(built: tuple[Path, Path]) -> None:
    root, engines = built
    bundle = load_bundle(root)
    frames = _frames()
    comparisons = compare_with_onnxruntime(root, engines, frames, precisions=["fp32"])
    assert {c.part for c in comparisons} == set(bundle.parts)
    assert {c.precision for c in comparisons} == {"fp32"}
    # TensorRT's FP32 runs convolutions in TF32 on Ampere and newer (BuilderFlag.TF32 is on by
    # default): errors up to 2% of the output's range, decisions as strict as FP32's
    agree = TOLERANCES["fp32"].agreement
    bad = [c.line() for c in comparisons if c.max_err > 2e-2 or (c.agreement or 1.0) < agree]
    assert not bad, bad
    heads = compare_with_onnxruntime(root, engines, frames, heads_from="reference")
    assert len(heads) == len(comparisons)
    assert all(c.max_err <= 2e-2 for c in heads), [c.line() for c in heads]


@pytest.mark.tensorrt
def test_binding_by_name_and_zero_copy_taps(built: tuple[Path, Path]) -> None:
    root, engines = built
    bundle = load_bundle(root)
    head_part = bundle.tasks["defect"].head
    output = bundle.tasks["defect"].output
    feed = _feed(root, _frames()[0])
    with (
        TensorRTBackend(precision="fp32").load(engines / "trunk.fp32.engine") as trunk,
        TensorRTBackend(precision="fp32").load(engines / f"{head_part}.fp32.engine") as head,
        create_backend("onnxruntime").load(bundle.path("trunk")) as ort_trunk,
        create_backend("onnxruntime").load(bundle.path(head_part)) as ort_head,
    ):
        parts = bundle.manifest.parts
        assert [t.name for t in trunk.inputs()] == list(parts["trunk"].inputs)
        assert {t.name for t in head.inputs()} == set(parts[head_part].inputs)
        for t in trunk.outputs():  # each output bound, by name, to its own buffer
            assert trunk.tensor_address(t.name) == trunk.device_ptr(t.name)

        ref_taps = ort_trunk.run(feed)
        ref = ort_head.run({t.name: ref_taps[t.name] for t in ort_head.inputs()})[output]
        taps = trunk.run_taps(feed)
        got = head.run_from_taps(taps, [output])[output]
        for t in head.inputs():  # the head reads the trunk's buffers: nothing was copied
            assert head.tensor_address(t.name) == trunk.device_ptr(t.name)
            assert head.tensor_address(t.name) == taps.device.ptrs[t.name]
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-3)
        assert trunk.last_gpu_ms > 0 and head.last_gpu_ms > 0

        reversed_feed = {t.name: ref_taps[t.name] for t in reversed(head.inputs())}
        np.testing.assert_allclose(head.run(reversed_feed)[output], ref, rtol=1e-2, atol=1e-3)
        for t in head.inputs():  # host-fed now: its own buffers are bound again
            assert head.tensor_address(t.name) == head.device_ptr(t.name)

        trunk.run_taps(feed)
        with pytest.raises(InputContractError, match="stale"):
            head.run_from_taps(taps)


@pytest.mark.tensorrt
def test_cuda_graph_replay_matches(built: tuple[Path, Path]) -> None:
    if cudart_module() is None:
        pytest.skip("cuda-python is not installed (needed for capture_graph)")
    root, engines = built
    head_part = load_bundle(root).tasks["defect"].head
    trunk_path, head_path = engines / "trunk.fp32.engine", engines / f"{head_part}.fp32.engine"
    results = {}
    for graph in (False, True):
        with (
            TensorRTBackend(precision="fp32", capture_graph=graph).load(trunk_path) as trunk,
            TensorRTBackend(precision="fp32", capture_graph=graph).load(head_path) as head,
        ):
            results[graph] = [head.run_from_taps(trunk.run_taps(_feed(root, f))) for f in _frames()]
            assert head.graph_captured is graph and trunk.graph_captured is graph
    for plain, replayed in zip(results[False], results[True]):
        for name, value in plain.items():
            np.testing.assert_allclose(replayed[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorrt
def test_pipeline_runs_on_engines(built: tuple[Path, Path]) -> None:
    from edge.runtime.pipeline import Pipeline

    root, _ = built
    frame = _frames(1)[0]
    outs = {}
    for backend, options in (("onnxruntime", {}), ("tensorrt", {"precision": "fp32"})):
        with Pipeline(root, backend=backend, backend_options=options) as pipe:
            outs[backend] = pipe.process(frame).results
    assert set(outs["tensorrt"]) == set(outs["onnxruntime"])
    assert all(r is not None for r in outs["tensorrt"].values())


@pytest.mark.tensorrt
def test_modified_engine_is_refused(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, engines = built
    copy = tmp_path / "trunk.fp32.engine"
    shutil.copy(engines / "trunk.fp32.engine", copy)
    shutil.copy(engines / "trunk.fp32.engine.json", tmp_path / "trunk.fp32.engine.json")
    TensorRTBackend(precision="fp32").load(copy).close()  # an exact copy loads
    copy.write_bytes(copy.read_bytes()[:-16] + bytes(16))
    with pytest.raises(EngineMismatchError, match="replaced or corrupted"):
        TensorRTBackend(precision="fp32").load(copy)
    sidecar = json.loads((tmp_path / "trunk.fp32.engine.json").read_text())
    assert sidecar["part"] == "trunk"
