"""ONNX Runtime: the default backend and the reference the others are tested against.

It runs on the execution providers that this onnxruntime build has, best first: CUDA, then the
CPU (``onnxruntime-gpu``, e.g. the JetPack wheels, has CUDA and TensorRT; pip's ``onnxruntime``
only the CPU). The TensorRT provider is used only when asked for (``providers=("tensorrt",
"cuda", "cpu")``): it builds an engine for every new session, which takes minutes on a Jetson
(the ``tensorrt`` backend uses the engines of ``edge build`` instead). The providers a session
really got are in ``providers`` after ``load``.

``precision="int8"`` runs the bundle's ``int8/<part>.onnx`` Q/DQ models (written by ``edge
calibrate``; ONNX Runtime executes QuantizeLinear/DequantizeLinear) instead of the fp32 parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""Short names of the execution providers etr-edge uses (the full names are accepted too)."""
AUTO_ORDER = ("cuda", "cpu")
"""``providers=None``: these, in this order, where the build has them (TensorRT only on request)."""


def resolve_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Full provider names to give a session: ``requested`` (short or full names, in order) or,
    for None, the best of ``available`` (CUDA, then CPU). Raises :class:`ConfigError` for an
    unknown name or one this onnxruntime build lacks."""
    if requested is None:
        return [PROVIDERS[k] for k in AUTO_ORDER if PROVIDERS[k] in available]
    full_names = {v.lower(): v for v in PROVIDERS.values()}
    chosen: list[str] = []
    for name in requested:
        key = name.strip().lower()
        full = PROVIDERS.get(key) or full_names.get(key)
        if full is None:
            raise ConfigError(
                f"onnxruntime execution provider '{name}' is unknown: expected some of "
                f"{sorted(PROVIDERS)} (or their full names, e.g. CUDAExecutionProvider)"
            )
        if full not in available:
            raise ConfigError(
                f"onnxruntime execution provider '{name}' ({full}) is not in this onnxruntime "
                f"build (it has {list(available)}); for CUDA/TensorRT install onnxruntime-gpu "
                "(on a Jetson: the JetPack wheel from NVIDIA's Jetson AI Lab index), or leave "
                "the providers unset to use the best available"
            )
        if full not in chosen:
            chosen.append(full)
    if not chosen:
        raise ConfigError("onnxruntime providers: the list is empty; leave it unset for auto")
    return chosen


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
    providers: tuple[str, ...] | None = None
    """Execution providers in order of preference ("tensorrt", "cuda", "cpu" or full names);
    None: the best this onnxruntime build has (see the module docstring)."""

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
        if self.providers is not None:
            if isinstance(self.providers, str):
                names = tuple(p for p in self.providers.split(",") if p.strip())
                object.__setattr__(self, "providers", names)
            resolve_providers(self.providers, list(PROVIDERS.values()))  # names are known


class OnnxRuntimeBackend(Backend):
    """``OnnxRuntimeBackend(intra_op_threads=2).load("bundle/trunk.onnx")``."""

    name = "onnxruntime"

    def __init__(self, options: OrtOptions | None = None, **kw: Any) -> None:
        super().__init__()
        self.options = options if options is not None else OrtOptions(**kw)
        self._session: Any = None
        self.providers: tuple[str, ...] = ()
        """The execution providers the loaded session runs on (``session.get_providers()``)."""

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
        providers = resolve_providers(o.providers, ort.get_available_providers())
        self._session = ort.InferenceSession(str(path), so, providers=providers)
        self.providers = tuple(self._session.get_providers())

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
