"""The pure half of ``edge build``: which engines to build, from what, with which settings.

Nothing here imports TensorRT. ``plan_build`` turns a bundle, a ``BuildConfig``, a TensorRT
version (or the feature-tested ``Capabilities`` of the installed module) and the probed Jetson
into one ``BuildJob`` per part, refusing options that cannot work before anything slow happens:

- which ONNX: the float model, or ``int8/<part>.onnx`` (Q/DQ) for explicit INT8;
- which calibration cache (implicit INT8): ``calib/<part>.cache`` from ``edge calibrate``,
  checked against this TensorRT and the model, or one calibrated on the spot from frames;
- which network flags and builder flags (EXPLICIT_BATCH before 10, STRONGLY_TYPED on 11,
  FP16/INT8 only where the builder still has them), DLA core and GPU fallback;
- the optimization profile of a dynamic batch, from the manifest's batch range and shapes;
- the output path ``bundle/engines/<device-slug>/<part>.<precision>.engine``.

The slug names the module (or GPU), the compute capability and the TensorRT version, e.g.
``orin-nano-sm87-trt10.3.0``: engines are not portable across any of them, so a JetPack upgrade
builds into a new folder instead of overwriting engines another board may still use.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.errors import BundleError, CalibrationError, EngineBuildError, EngineMismatchError
from edge.files import sha256_file
from edge.jetson.probe import JetsonInfo
from edge.manifest import Bundle
from edge.runtime.sidecar import verify_engine
from edge.trt_version import Capabilities, TrtVersion, capabilities, validate_build_options

PART_GROUPS = ("trunk", "heads", "fused")
_AUTOCAST = (
    "python -m modelopt.onnx.autocast --onnx_path BUNDLE/trunk.onnx "
    "--low_precision_type fp16 --keep_io_types"
)


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
class GpuIdentity:
    """The CUDA device engines are built for: what the sidecar records and the runtime checks."""

    name: str
    compute_capability: str
    source: str
    """'pycuda' | 'cuda-python' | 'libcuda' | 'jetson-probe' | 'none'."""


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


# ---------------------------------------------------------------------------- device identity


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


# ---------------------------------------------------------------------------- planning (pure)


def _select_parts(bundle: Bundle, wanted: tuple[str, ...] | None) -> tuple[list[str], bool]:
    """The parts to build, in bundle order, and whether the user named them."""
    available = bundle.parts
    if not wanted:
        return available, False
    chosen: set[str] = set()
    for item in wanted:
        key = item.strip()
        if key == "heads":
            chosen.update(p for p in available if p.startswith("heads/"))
            if bundle.merged_heads:
                chosen.add(bundle.merged_heads)
        elif key in available:
            chosen.add(key)
        elif f"heads/{key}" in available:
            chosen.add(f"heads/{key}")
        else:
            raise EngineBuildError(
                f"--parts: '{key}' is not a part of {bundle.root}; expected trunk, heads, fused, "
                f"or one of {', '.join(available)}"
            )
    return [p for p in available if p in chosen], True


def _input_ranges(bundle: Bundle, part: str) -> tuple[ShapeRange, ...]:
    """Each input's shape range from the manifest: the image spec or the trunk's tap shapes."""
    try:
        names = list(bundle.manifest["parts"][part]["inputs"])
    except (KeyError, TypeError) as e:
        raise BundleError(
            f"{bundle.root}: manifest has no inputs for part '{part}'; re-run edge convert"
        ) from e
    spec = bundle.input
    taps = {t.name: t.shape for t in bundle.taps}
    batch = bundle.batch
    if batch.get("dynamic"):
        lo, opt, hi = int(batch["min"]), int(batch["opt"]), int(batch["max"])
    else:
        lo = opt = hi = int(batch.get("size", 1))
    ranges = []
    for name in names:
        if name == spec.name:
            rest: tuple[int, ...] = (
                (spec.height, spec.width, spec.channels)
                if spec.in_graph
                else (spec.channels, spec.height, spec.width)
            )
        elif name in taps:
            rest = tuple(int(d) for d in taps[name][1:])
        else:
            raise BundleError(
                f"{bundle.root}: input '{name}' of part '{part}' is neither the "
                f"image ('{spec.name}') nor a tap; re-run edge convert"
            )
        ranges.append(ShapeRange(name, (lo, *rest), (opt, *rest), (hi, *rest)))
    return tuple(ranges)


def _check_calibration_file(bundle: Bundle, path: Path) -> None:
    """An ``edge calibrate`` output must still have the sha256 the manifest lists for it."""
    rel = path.relative_to(bundle.root).as_posix()
    listed = (bundle.manifest.get("calibration") or {}).get("files", {}).get(rel)
    if listed and listed.get("sha256") != sha256_file(path):
        raise EngineBuildError(
            f"{bundle.root}/{rel} changed after edge calibrate wrote it (its sha256 differs from "
            "the manifest's calibration section); re-run edge calibrate"
        )


def _check_cache(
    bundle: Bundle, part: str, cache_path: Path, caps: Capabilities, dla: bool
) -> tuple[str, list[str]]:
    """Validate a bundle calibration cache for this TensorRT; return (header algorithm, notes)."""
    from edge.calib.cache import read_cache, read_cache_sidecar

    _check_calibration_file(bundle, cache_path)
    cache = read_cache(cache_path)
    rel = cache_path.relative_to(bundle.root).as_posix()
    notes: list[str] = []
    if cache.version.key[:2] != caps.version.key[:2]:
        raise EngineBuildError(
            f"{rel} is for TensorRT {cache.version} (header {cache.header}) but this is TensorRT "
            f"{caps.version}, which would ignore it and try to calibrate; re-run edge calibrate "
            f"for TensorRT {caps.version}, or pass --calibrate-data SOURCE to calibrate here"
        )
    if cache.version != caps.version:
        notes.append(
            f"{rel} was written for TensorRT {cache.version}, this is {caps.version}; "
            "if TensorRT rejects it the build stops and says so"
        )
    if dla and cache.algorithm != "EntropyCalibration2":
        raise EngineBuildError(
            f"{rel} is a {cache.algorithm} cache; DLA needs EntropyCalibration2 (TensorRT: "
            "'required for DLA'); re-run edge calibrate with the entropy algorithm"
        )
    try:
        meta = read_cache_sidecar(cache_path)
    except CalibrationError:
        notes.append(f"{rel} has no readable metadata; its match with the model is unchecked")
        return cache.algorithm, notes
    expected = meta.get("onnx_sha256")
    if expected and expected != sha256_file(bundle.path(part)):
        raise EngineBuildError(
            f"{rel} was calibrated for another {part}.onnx (sha256 {str(expected)[:12]}...); "
            "the bundle was converted again: re-run edge calibrate"
        )
    return cache.algorithm, notes


def plan_build(
    bundle: Bundle,
    cfg: BuildConfig,
    version: str | TrtVersion,
    device: JetsonInfo | None,
    *,
    gpu: GpuIdentity | None = None,
    caps: Capabilities | None = None,
) -> list[BuildJob]:
    """Decide every engine build (no TensorRT). Raises EngineBuildError with advice.

    ``caps`` defaults to the version table (``capabilities(version)``); ``build_engines`` passes
    the feature-tested capabilities of the installed module. ``gpu`` defaults to the probed
    Jetson's identity.
    """
    caps = caps or capabilities(version)
    v = caps.version
    if not caps.tensor_api:
        raise EngineBuildError(
            f"TensorRT {v} is older than 8.5 (JetPack 5.1), the oldest etr-edge builds for: its "
            "runtime lacks set_tensor_address/execute_async_v3; upgrade JetPack, or run the "
            "bundle with --backend onnxruntime"
        )
    precision = str(cfg.precision).strip().lower()
    validate_build_options(
        caps, precision=precision, int8_mode=cfg.int8_mode, dla_core=cfg.dla_core, device=device
    )
    mode = (cfg.int8_mode or caps.default_int8_mode).lower() if precision == "int8" else None
    strongly = caps.strongly_typed_only or bool(cfg.strongly_typed)
    if cfg.strongly_typed and not caps.strongly_typed_available:
        raise EngineBuildError(f"--strongly-typed needs TensorRT 10 or later, this is {v}")
    if strongly and mode == "implicit":
        raise EngineBuildError(
            "implicit INT8 (calibrator) needs a weakly typed network; drop "
            "--strongly-typed or use --int8-mode explicit"
        )
    if precision == "fp16" and (strongly or not caps.builder_precision_flags):
        why = (
            f"TensorRT {v} has no FP16 builder flag (strongly typed networks only)"
            if not caps.builder_precision_flags
            else "a strongly typed network keeps FP32"
        )
        raise EngineBuildError(
            f"--precision fp16: {why}, so the precision must come from the ONNX and the bundle's "
            f"models are FP32. Make FP16 models with ModelOpt AutoCast ({_AUTOCAST}), or use "
            "--precision int8 (explicit Q/DQ) or --precision fp32"
        )
    gpu = gpu or (
        GpuIdentity(device.model, device.compute_capability or "unknown", "jetson-probe")
        if device
        else GpuIdentity("unknown GPU", "unknown", "none")
    )
    engines = bundle.root / "engines" / device_slug(gpu, device, v)
    timing = None
    if cfg.use_timing_cache:
        timing = cfg.timing_cache or engines / "timing.cache"
    parts, named = _select_parts(bundle, cfg.parts)
    common: list[str] = []
    if cfg.builder_optimization_level == 0 and timing is not None:
        common.append("optimization level 0 does not use the timing cache")
    if mode == "implicit" and caps.implicit_int8_deprecated:
        common.append(
            f"implicit INT8 is deprecated in TensorRT {v} (removed in 11): "
            "--int8-mode explicit is the path forward"
        )
    if (
        mode == "implicit"
        and cfg.dla_core is not None
        and cfg.calibrate_data is not None
        and cfg.calibration_algorithm != "entropy"
    ):
        raise EngineBuildError("DLA needs the entropy calibrator (EntropyCalibration2), not minmax")
    jobs: list[BuildJob] = []
    skipped: list[str] = []
    for part in parts:
        notes = list(common)
        onnx = bundle.path(part)
        cache = algo = source = spot = None
        if mode == "explicit":
            onnx = bundle.root / "int8" / f"{part}.onnx"
            if not onnx.is_file():
                raise EngineBuildError(
                    f"explicit INT8 needs the Q/DQ model int8/{part}.onnx, which {bundle.root} "
                    "lacks; run edge calibrate first (it writes int8/*.onnx)"
                )
            _check_calibration_file(bundle, onnx)
            if cfg.dla_core is not None and not caps.dla_requires_strongly_typed:
                notes.append("DLA with Q/DQ models: layers DLA cannot run fall back to the GPU")
        elif mode == "implicit":
            candidate = bundle.root / "calib" / f"{part}.cache"
            usable = candidate.is_file()
            if usable:
                try:
                    algo, more = _check_cache(
                        bundle, part, candidate, caps, cfg.dla_core is not None
                    )
                    notes += more
                    cache = candidate
                except (EngineBuildError, CalibrationError) as e:
                    if cfg.calibrate_data is None:
                        raise
                    notes.append(f"not using calib/{part}.cache ({e}); calibrating here instead")
                    usable = False
            if not usable:
                if cfg.calibrate_data is None:
                    if not named and part in ("fused", bundle.merged_heads):
                        skipped.append(  # edge calibrate writes caches for trunk and heads
                            f"{part} skipped: implicit INT8 has no calib/{part}.cache; build it "
                            "with --int8-mode explicit or --calibrate-data SOURCE"
                        )
                        continue
                    raise EngineBuildError(
                        f"implicit INT8 for {part} needs the calibration cache calib/{part}.cache, "
                        f"which {bundle.root} lacks; run edge calibrate first or pass "
                        "--calibrate-data SOURCE (frames to calibrate on here), or use "
                        "--int8-mode explicit"
                    )
                source = cfg.calibrate_data
                spot = engines / "calib" / f"{part}.cache"
                algo = (
                    "MinMaxCalibration"
                    if cfg.calibration_algorithm == "minmax"
                    else "EntropyCalibration2"
                )
        inputs = _input_ranges(bundle, part)
        if cfg.dla_core is not None and any(s.dynamic for s in inputs):
            notes.append("DLA needs fixed shapes: layers with a dynamic batch fall back to the GPU")
        outputs = tuple(bundle.manifest["parts"][part]["outputs"])
        weak = not strongly
        jobs.append(
            BuildJob(
                part=part,
                bundle_root=bundle.root,
                onnx=onnx,
                engine=engines / f"{part}.{precision}.engine",
                precision=precision,
                int8_mode=mode,
                tensorrt=v,
                gpu=gpu,
                device=device,
                inputs=inputs,
                outputs=outputs,
                strongly_typed=strongly,
                explicit_batch_flag=caps.explicit_batch_flag_needed,
                fp16_flag=weak and precision in ("fp16", "int8"),
                int8_flag=weak and precision == "int8",
                calibration_cache=cache,
                calibration_algorithm=algo,
                calibrate_source=source,
                calibrate_cache=spot,
                calibrate_frames=cfg.calibrate_frames,
                calibrate_kind=cfg.calibration_algorithm,
                calibration_profile=mode == "implicit"
                and caps.calibration_profile
                and any(s.dynamic for s in inputs),
                dla_core=cfg.dla_core,
                gpu_fallback=cfg.gpu_fallback,
                workspace_bytes=cfg.workspace_mib * (1 << 20) if cfg.workspace_mib else None,
                timing_cache=timing,
                optimization_level=cfg.builder_optimization_level
                if caps.builder_optimization_level
                else None,
                progress=cfg.progress,
                verbose=cfg.verbose,
                notes=tuple(notes),
            )
        )
    if not jobs:
        raise EngineBuildError(f"nothing to build in {bundle.root} for {', '.join(parts)}")
    if skipped:
        jobs[0] = replace(jobs[0], notes=(*jobs[0].notes, *skipped))
    return jobs


def engine_is_current(job: BuildJob) -> bool:
    """True when ``job.engine`` exists and its sidecar matches this build exactly."""
    try:
        record = verify_engine(
            job.engine,
            tensorrt=job.tensorrt,
            device_name=job.gpu.name,
            compute_capability=job.gpu.compute_capability,
            expected_onnx_sha256=sha256_file(job.onnx),
        )
    except (EngineMismatchError, BundleError, OSError):
        return False
    cache = job.calibration_cache
    want = {
        "precision": job.precision,
        "int8_mode": job.int8_mode,
        "dla_core": job.dla_core,
        "strongly_typed": job.strongly_typed,
        "cache_sha256": sha256_file(cache) if cache is not None else None,
    }
    return job.calibrate_source is None and all(record.get(k) == v for k, v in want.items())
