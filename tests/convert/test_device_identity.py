"""The device engines are built for: the engine folder's slug (convert/device_identity.py)."""

from __future__ import annotations

from pathlib import Path

from edge.convert import build, build_plan
from edge.convert.device_identity import GpuIdentity, device_slug, gpu_identity
from edge.jetson.probe import probe_jetson

ORIN_NANO = probe_jetson(Path(__file__).parents[1] / "jetson" / "data" / "roots" / "orin-nano-jp62")


def test_device_slug_names_gpu_cc_and_tensorrt() -> None:
    h200 = GpuIdentity("NVIDIA H200", "9.0", "libcuda")
    assert device_slug(h200, None, "10.13.0.35") == "nvidia-h200-sm90-trt10.13.0"
    orin = GpuIdentity("Orin", "8.7", "pycuda")
    assert device_slug(orin, ORIN_NANO, "10.3") == "orin-nano-sm87-trt10.3.0"
    assert device_slug(GpuIdentity("x", "unknown", "none"), None, "8.6.2") == "x-trt8.6.2"


def test_build_modules_still_export_the_identity() -> None:
    for module in (build, build_plan):  # the names edge build used to define itself
        assert module.gpu_identity is gpu_identity and module.device_slug is device_slug
        assert module.GpuIdentity is GpuIdentity
