"""What ``edge build`` is asked and what it decides: the options and the per-engine jobs.

``BuildConfig`` holds the options of ``edge build`` as the user gives them (checked on
construction); ``plan_build`` (convert/build_plan.py) turns them into one ``BuildJob`` per
part, with each input's ``ShapeRange`` for the optimization profile, and ``run_build_job``
(convert/build.py) builds exactly what the job says. Nothing here imports TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge.core.board import JetsonInfo
from edge.core.device_identity import GpuIdentity
from edge.core.errors import EngineBuildError
from edge.core.trt_version import TrtVersion


@dataclass(frozen=True)
class BuildConfig:
    """Options of ``edge build`` (one engine per selected part)."""

    precision: str = "fp16"
    int8_mode: str | None = None
    """'implicit' | 'explicit' | None (= implicit while it exists, explicit from TensorRT 11)."""
    dla_core: int | None = None
    workspace_mib: int | None = None
    """TensorRT workspace pool limit (None: TensorRT's default); small boards want 256-1024."""
    timing_cache: Path | None = None
    """None: ``engines/<slug>/timing.cache``."""
    use_timing_cache: bool = True
    parts: tuple[str, ...] | None = None
    """'trunk', 'heads', 'fused', 'heads/<task>' or '<task>'; None: every part that can be built."""
    calibrate_data: str | None = None
    """Implicit INT8 without a usable cache: calibrate on the spot from this source URI."""
    calibrate_frames: int = 256
    calibration_algorithm: str = "entropy"
    builder_optimization_level: int | None = None
    strongly_typed: bool | None = None
    """None: strongly typed only where TensorRT requires it (11.x)."""
    gpu_fallback: bool = True
    force: bool = False
    """Rebuild even when an engine with a matching sidecar exists."""
    progress: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.parts, str):
            object.__setattr__(self, "parts", tuple(p for p in self.parts.split(",") if p))
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise EngineBuildError(f"--workspace {self.workspace_mib}: expected MiB >= 1, e.g. 512")
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= 5:
            raise EngineBuildError(f"--opt-level {level}: TensorRT levels are 0..5 (default 3)")
        if self.calibrate_frames < 1:
            raise EngineBuildError("--calibrate-frames must be >= 1 (about 256-500 is typical)")
        if self.calibration_algorithm not in ("entropy", "minmax"):
            raise EngineBuildError(
                f"calibration algorithm '{self.calibration_algorithm}': TensorRT calibrates on "
                "the device with 'entropy' (EntropyCalibration2) or 'minmax'"
            )


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes (min == opt == max for a fixed batch)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def dynamic(self) -> bool:
        return self.min != self.max


@dataclass(frozen=True)
class BuildJob:
    """Everything ``run_build_job`` needs for one engine, decided by ``plan_build``."""

    part: str
    bundle_root: Path
    onnx: Path
    engine: Path
    precision: str
    int8_mode: str | None
    tensorrt: TrtVersion
    gpu: GpuIdentity
    device: JetsonInfo | None
    inputs: tuple[ShapeRange, ...]
    outputs: tuple[str, ...]
    strongly_typed: bool = False
    explicit_batch_flag: bool = False
    fp16_flag: bool = False
    int8_flag: bool = False
    calibration_cache: Path | None = None
    """Implicit INT8: the cache handed to TensorRT (read-only; never rewritten)."""
    calibration_algorithm: str | None = None
    """Header name of that cache: 'EntropyCalibration2' or 'MinMaxCalibration'."""
    calibrate_source: str | None = None
    """Implicit INT8 calibrated on the spot from this source (cache -> ``calibrate_cache``)."""
    calibrate_cache: Path | None = None
    calibrate_frames: int = 256
    calibrate_kind: str = "entropy"
    calibration_profile: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = True
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    optimization_level: int | None = None
    progress: bool = True
    verbose: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dynamic(self) -> bool:
        return any(s.dynamic for s in self.inputs)

    @property
    def label(self) -> str:
        return f"{self.part}.{self.precision}"

    def flags(self) -> list[str]:
        """Builder settings in words (for the log and the sidecar)."""
        out = ["STRONGLY_TYPED"] if self.strongly_typed else []
        out += ["EXPLICIT_BATCH"] if self.explicit_batch_flag else []
        out += ["FP16"] if self.fp16_flag else []
        out += ["INT8"] if self.int8_flag else []
        if self.dla_core is not None:
            out += [f"DLA{self.dla_core}"] + (["GPU_FALLBACK"] if self.gpu_fallback else [])
        return out

    def describe(self) -> str:
        mode = f" ({self.int8_mode})" if self.int8_mode else ""
        src = self.onnx.relative_to(self.bundle_root).as_posix()
        cache = ""
        if self.calibration_cache is not None:
            cache = f", cache {self.calibration_cache.relative_to(self.bundle_root).as_posix()}"
        elif self.calibrate_source is not None:
            cache = f", calibrating from {self.calibrate_source}"
        return f"{self.label}{mode} from {src}{cache} [{' '.join(self.flags()) or 'FP32'}]"
