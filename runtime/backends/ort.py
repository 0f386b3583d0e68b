"""ONNX Runtime on the CPU: the default backend and the reference the others are tested against.

``precision="int8"`` runs the bundle's ``int8/<part>.onnx`` Q/DQ models (written by ``edge
calibrate``; ONNX Runtime executes QuantizeLinear/DequantizeLinear) instead of the fp32 parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import BundleError, ConfigError
from edge.core.manifest import Bundle, part_file
from edge.runtime.backends.base import Backend, TensorMeta

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
OPT_LEVELS = ("disable", "basic", "extended", "all")
ORT_PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class OrtOptions:
    """Session settings. Small graphs run fastest on few threads and sequentially: the defaults
    (1 intra-op thread, sequential, all graph optimisations) measured best for trunk and heads
    at batch 1 in bench/bench_dispatch.py. ``intra_op_threads=0`` lets ONNX Runtime decide."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    sequential: bool = True
    spin: bool = False
    """Let worker threads spin-wait between runs (lower latency, burns CPU); only matters with
    more than one intra-op thread."""
    precision: str = "fp32"
    """fp32: the bundle's ONNX parts; int8: its ``int8/`` Q/DQ models (edge calibrate)."""

    def __post_init__(self) -> None:
        if self.precision not in ORT_PRECISIONS:
            raise ConfigError(
                f"onnxruntime precision '{self.precision}': ONNX Runtime runs {ORT_PRECISIONS} "
                "(int8 = the Q/DQ models of edge calibrate); fp16 needs --backend tensorrt"
            )
        if self.graph_optimization not in OPT_LEVELS:
            raise ConfigError(
                f"onnxruntime graph_optimization '{self.graph_optimization}': "
                f"expected one of {OPT_LEVELS}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("onnxruntime thread counts must be >= 0 (0 = automatic)")


class OnnxRuntimeBackend(Backend):
    """``OnnxRuntimeBackend(intra_op_threads=2).load("bundle/trunk.onnx")``."""

    name = "onnxruntime"

    def __init__(self, options: OrtOptions | None = None, **kw: Any) -> None:
        super().__init__()
        self.options = options if options is not None else OrtOptions(**kw)
        self._session: Any = None

    def artifact_path(self, bundle: Bundle, part: str) -> Path:
        """The fp32 part, or with ``precision="int8"`` its Q/DQ model in ``int8/``."""
        if self.options.precision == "fp32":
            return bundle.path(part)
        path = bundle.root / "int8" / part_file(part)
        if not path.is_file():
            raise BundleError(
                f"{bundle.root}: no INT8 model 'int8/{part_file(part)}' for --precision int8 on "
                f"ONNX Runtime; run: edge calibrate {bundle.root} (or use --precision fp32)"
            )
        bundle.check_calibrated(path, required=True)
        return path

    def _load_impl(self, path: Path) -> None:
        import onnxruntime as ort

        o = self.options
        so = ort.SessionOptions()
        so.intra_op_num_threads = o.intra_op_threads
        so.inter_op_num_threads = o.inter_op_threads
        so.execution_mode = (
            ort.ExecutionMode.ORT_SEQUENTIAL if o.sequential else ort.ExecutionMode.ORT_PARALLEL
        )
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[o.graph_optimization]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if o.spin else "0")
        so.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def _describe_impl(self) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        def meta(args: Any) -> tuple[TensorMeta, ...]:
            return tuple(
                TensorMeta(a.name, tuple(a.shape), _DTYPES.get(a.type, a.type)) for a in args
            )

        return meta(self._session.get_inputs()), meta(self._session.get_outputs())

    def _run_impl(
        self, feed: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self._session.run(outputs, dict(feed))))

    def _close_impl(self) -> None:
        self._session = None
