"""The device engines are built for: the engine folder's slug (edge/core/device_identity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.core import device_identity
from edge.core.board import probe_jetson
from edge.core.device_identity import GpuIdentity, device_slug, gpu_identity

ORIN_NANO = probe_jetson(Path(__file__).parents[1] / "jetson" / "data" / "roots" / "orin-nano-jp62")


def test_device_slug_names_gpu_cc_and_tensorrt() -> None:
    h200 = GpuIdentity("NVIDIA H200", "9.0", "libcuda")
    # the full version: TensorRT refuses an engine of another build (8.6.1.6 vs 8.6.1.4)
    assert device_slug(h200, None, "10.13.0.35") == "nvidia-h200-sm90-trt10.13.0.35"
    assert device_slug(h200, None, "10.13.0.35") != device_slug(h200, None, "10.13.0.36")
    orin = GpuIdentity("Orin", "8.7", "pycuda")
    assert device_slug(orin, ORIN_NANO, "10.3") == "orin-nano-sm87-trt10.3.0"
    assert device_slug(GpuIdentity("x", "unknown", "none"), None, "8.6.2") == "x-trt8.6.2"


def test_identity_falls_back_to_the_board_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    for probe in ("_gpu_from_pycuda", "_gpu_from_cuda_python", "_gpu_from_libcuda"):
        monkeypatch.setattr(device_identity, probe, lambda: None)
    assert ORIN_NANO is not None
    gpu = gpu_identity(ORIN_NANO)
    assert (gpu.compute_capability, gpu.source) == ("8.7", "jetson-probe")
    assert gpu_identity(None).source == "none"
