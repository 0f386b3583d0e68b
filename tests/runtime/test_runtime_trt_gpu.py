"""The TensorRT backend's CUDA orchestration on a real GPU, with a stand-in for the engine.

This checks the CUDA side of ``TensorRTBackend`` (trt.py + trt_cuda.py), NOT TensorRT: the
engine and execution context are replaced by ``KernelEngine``, whose ``execute_async_v3`` runs a
small CUDA kernel (pycuda ``SourceModule``) on the addresses the backend bound, y = a*x + b.
Everything else is the backend's own code: device buffers, pinned staging, the one shared
stream, CUDA events, trunk outputs bound as head inputs without a copy, and CUDA-graph capture
and replay of trunk + head. Results are compared with numpy. Marked ``cuda``; skipped without a
CUDA GPU, pycuda or nvcc (and the graph case without cuda-python). bench/device_check_trt.sh
runs it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.runtime.backends.trt import TensorRTBackend
from edge.runtime.backends.trt_cuda import cudart_module, shared_runtime

pytestmark = pytest.mark.cuda
cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed (no CUDA here)")
N = 1024
KERNEL = r"""
extern "C" __global__ void affine(const float* x, float* y, float a, float b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + b;
}
"""


@dataclass(frozen=True)
class Enum:
    """A TensorRT enum member as the backend reads it: by ``name``."""

    name: str


class KernelEngine:
    """Stand-in for an ICudaEngine and its IExecutionContext: one float32 input ``inp`` of
    shape (1, N), one output ``out``; ``execute_async_v3`` launches ``out = a * inp + b`` on
    the bound addresses, on the stream whose handle it is given."""

    num_io_tensors = 2

    def __init__(self, inp: str, out: str, a: float, b: float, kernel: Any, rt: Any) -> None:
        self.inp, self.out, self.a, self.b, self.kernel, self.rt = inp, out, a, b, kernel, rt
        self.addresses: dict[str, int] = {}
        self.handles: list[int] = []

    def get_tensor_name(self, index: int) -> str:
        return (self.inp, self.out)[index]

    def get_tensor_mode(self, name: str) -> Enum:
        return Enum("INPUT" if name == self.inp else "OUTPUT")

    def get_tensor_location(self, name: str) -> Enum:
        return Enum("DEVICE")

    def get_tensor_format(self, name: str) -> Enum:
        return Enum("LINEAR")

    def get_tensor_dtype(self, name: str) -> Enum:
        return Enum("FLOAT")

    def get_tensor_shape(self, name: str) -> tuple[int, int]:
        return (1, N)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses[name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.handles.append(stream_handle)
        assert stream_handle == self.rt.stream_handle  # pycuda launches need the Stream object
        x, y = (np.uintp(self.addresses[n]) for n in (self.inp, self.out))
        args = (x, y, np.float32(self.a), np.float32(self.b), np.int32(N))
        self.kernel(*args, block=(256, 1, 1), grid=(N // 256, 1), stream=self.rt.stream)
        return True


class StandInBackend(TensorRTBackend):
    """The real backend with the engine (the only TensorRT part) replaced."""

    def __init__(self, engine: KernelEngine, capture_graph: bool) -> None:
        super().__init__(precision="fp32", capture_graph=capture_graph)
        self.stand_in = engine

    def _verify(self, path: Path) -> dict[str, Any]:
        return {"part": path.stem, "precision": "fp32", "dla_core": None}

    def _open_engine(self, path: Path) -> tuple[Any, Any]:
        return self.stand_in, self.stand_in


@pytest.fixture(scope="module")
def kernel() -> Any:
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as e:
        pytest.skip(f"no usable CUDA driver ({e})")
    if count < 1:
        pytest.skip("no CUDA device")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH (pycuda's SourceModule compiles the test kernel)")
    from pycuda.compiler import SourceModule  # noqa: TID251  (the test's kernel)

    with shared_runtime().active():
        return SourceModule(KERNEL, no_extern_c=True).get_function("affine")


@pytest.mark.parametrize("graph", [False, True], ids=["enqueue", "cuda-graph"])
def test_trunk_to_head_without_copies_on_one_stream(
    kernel: Any, graph: bool, tmp_path: Path
) -> None:
    if graph and cudart_module() is None:
        pytest.skip("CUDA-graph capture needs cuda-python (cuda.bindings.runtime)")
    rt = shared_runtime()
    trunk_engine = KernelEngine("image", "feat", 2.0, 1.0, kernel, rt)
    head_engine = KernelEngine("feat", "score", -3.0, 0.5, kernel, rt)
    for name in ("trunk", "head"):
        (tmp_path / f"{name}.fp32.engine").write_bytes(b"stand-in")
    rng = np.random.default_rng(0)
    trunk = StandInBackend(trunk_engine, graph).load(tmp_path / "trunk.fp32.engine")
    head = StandInBackend(head_engine, graph).load(tmp_path / "head.fp32.engine")
    with trunk, head:
        for _ in range(4):  # with graphs: warm-up, capture, then two replays on new frames
            x = rng.standard_normal((1, N)).astype(np.float32)
            taps = trunk.run_taps({"image": x})
            score = head.run_from_taps(taps)["score"]
            np.testing.assert_allclose(score, -3.0 * (2.0 * x + 1.0) + 0.5, rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(taps.arrays()["feat"], 2.0 * x + 1.0, rtol=1e-6)
        assert head.tensor_address("feat") == trunk.device_ptr("feat")  # bound, not copied
        assert set(trunk_engine.handles + head_engine.handles) == {rt.stream_handle}
        assert (trunk.graph_captured, head.graph_captured) == (graph, graph)
        # replays launch the graph, never execute_async_v3: 2 calls (warm-up, capture), else 4
        assert len(trunk_engine.handles) == len(head_engine.handles) == (2 if graph else 4)
