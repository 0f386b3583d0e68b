"""Which CUDA device engines are built for, and the folder its engines go to.

``gpu_identity`` asks CUDA for device 0's name and compute capability (pycuda, cuda-python or
the driver library, whichever is there; the probed Jetson without any of them). ``edge build``
records it in each engine's sidecar and the runtime checks it with this same function, so an
engine is never loaded on a device it was not built for. ``device_slug`` names the engine
folder after the module (or GPU), the compute capability and the TensorRT version, e.g.
``orin-nano-sm87-trt10.3.0``. Nothing here imports TensorRT.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from edge.core.board import JetsonInfo
from edge.core.trt_version import TrtVersion


@dataclass(frozen=True)
class GpuIdentity:
    """The CUDA device engines are built for: what the sidecar records and the runtime checks."""

    name: str
    compute_capability: str
    source: str
    """'pycuda' | 'cuda-python' | 'libcuda' | 'jetson-probe' | 'none'."""


def _gpu_from_pycuda() -> GpuIdentity | None:
    try:
        cuda: Any = importlib.import_module("pycuda.driver")
        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return GpuIdentity(str(dev.name()), f"{major}.{minor}", "pycuda")
    except Exception:
        return None


def _gpu_from_cuda_python() -> GpuIdentity | None:
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            cudart: Any = importlib.import_module(module)
            err, props = cudart.cudaGetDeviceProperties(0)
            if int(err) != 0:
                return None
            name = (
                props.name.decode("utf-8", "replace")
                if isinstance(props.name, bytes)
                else props.name
            )
            return GpuIdentity(
                str(name).strip("\x00 "), f"{props.major}.{props.minor}", "cuda-python"
            )
        except Exception:
            continue
    return None


def _gpu_from_libcuda() -> GpuIdentity | None:
    """The CUDA driver API through ctypes: present wherever a GPU driver is, no Python package."""
    import ctypes

    for libname in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(libname)
        except OSError:
            continue
        dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        if (
            lib.cuInit(0) != 0
            or lib.cuDeviceGet(ctypes.byref(dev), 0) != 0
            or lib.cuDeviceGetName(name, 256, dev) != 0
            # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h)
            or lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) != 0
            or lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) != 0
        ):
            return None
        return GpuIdentity(
            name.value.decode("utf-8", "replace"), f"{major.value}.{minor.value}", "libcuda"
        )
    return None


def gpu_identity(device: JetsonInfo | None = None) -> GpuIdentity:
    """Name and compute capability of CUDA device 0, as CUDA reports them.

    Tried in order: pycuda, cuda-python, the driver library through ctypes; without any CUDA
    the probed Jetson stands in (model name, SoC compute capability). The runtime must use this
    same function so that a sidecar written here matches the machine there.
    """
    for probe in (_gpu_from_pycuda, _gpu_from_cuda_python, _gpu_from_libcuda):
        found = probe()
        if found is not None:
            return found
    if device is not None:
        return GpuIdentity(device.model, device.compute_capability or "unknown", "jetson-probe")
    return GpuIdentity("unknown GPU", "unknown", "none")


def device_slug(gpu: GpuIdentity, device: JetsonInfo | None, version: str | TrtVersion) -> str:
    """Folder name for this device's engines: ``<module|gpu>-sm<cc>-trt<version>``."""
    v = TrtVersion.parse(version)
    if device is not None and device.module != "unknown":
        base = device.module
    else:
        base = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-") or "gpu"
    cc = gpu.compute_capability.replace(".", "")
    return f"{base}{'-sm' + cc if cc.isdigit() else ''}-trt{v}"
