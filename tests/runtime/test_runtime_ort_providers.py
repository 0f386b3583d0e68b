"""ONNX Runtime's execution providers: the best available by default (CUDA, then CPU), a list on
request, a clear error for one this build lacks, and the providers used are recorded."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from edge.core.errors import ConfigError
from edge.runtime.backends.ort import OnnxRuntimeBackend, OrtOptions, resolve_providers
from edge.runtime.pipeline import Pipeline

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_takes_cuda_then_cpu_never_tensorrt_unasked() -> None:
    assert resolve_providers(None, GPU_BUILD) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_a_requested_list_keeps_its_order_short_or_full_names() -> None:
    got = resolve_providers(("tensorrt", "CUDAExecutionProvider", "cpu", "cuda"), GPU_BUILD)
    assert got == GPU_BUILD  # duplicates dropped


def test_unknown_or_missing_providers_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'openvino' is unknown"):
        resolve_providers(("openvino",), GPU_BUILD)
    with pytest.raises(ConfigError, match=r"'cuda' \(CUDAExecutionProvider\) is not in this"):
        resolve_providers(("cuda",), ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        resolve_providers(("tensorrt", "cpu"), ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="unknown"):
        OrtOptions(providers=("gpu",))
    assert OrtOptions(providers="cuda,cpu").providers == ("cuda", "cpu")  # type: ignore[arg-type]


def test_the_session_gets_the_best_available_and_records_it(tiny_bundle: Path) -> None:
    expected = resolve_providers(None, ort.get_available_providers())
    with OnnxRuntimeBackend().load(tiny_bundle / "trunk.onnx") as b:
        assert list(b.providers) == expected
    with Pipeline(tiny_bundle) as pipeline:
        assert pipeline.describe()["providers"] == sorted(expected)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            OnnxRuntimeBackend(providers=("cuda",)).load(tiny_bundle / "trunk.onnx")
