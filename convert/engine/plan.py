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
- the output path ``bundle/engines/<device-slug>/<part>.<precision>[.dla<N>].engine``.

The slug names the module (or GPU), the compute capability and the full TensorRT version, e.g.
``orin-nano-sm87-trt10.3.0.30``: engines are not portable across any of them (TensorRT refuses
another build number), so a JetPack upgrade builds into a new folder instead of overwriting
engines another board may still use. The options and jobs are defined in config.py, the device
identity and the slug in edge.core.device_identity.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge.calib.cache import read_cache, read_cache_sidecar
from edge.convert.engine.config import BuildConfig, BuildJob, ShapeRange
from edge.core.board import JetsonInfo
from edge.core.device_identity import GpuIdentity, device_slug
from edge.core.errors import BundleError, CalibrationError, EngineBuildError, EngineMismatchError
from edge.core.files import sha256_file
from edge.core.manifest import Bundle
from edge.core.sidecar import engine_file_name, verify_engine
from edge.core.trt_version import Capabilities, TrtVersion, capabilities, validate_build_options

_AUTOCAST = (
    "python -m modelopt.onnx.autocast --onnx_path BUNDLE/trunk.onnx "
    "--low_precision_type fp16 --keep_io_types"
)


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
        names = list(bundle.manifest.parts[part].inputs)
    except KeyError as e:
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


def _check_cache(
    bundle: Bundle, part: str, cache_path: Path, caps: Capabilities, dla: bool
) -> tuple[str, list[str]]:
    """Validate a bundle calibration cache for this TensorRT; return (header algorithm, notes)."""

    bundle.check_calibrated(cache_path, error=EngineBuildError)
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
    if cfg.strongly_typed and not caps.strongly_typed_available:
        raise EngineBuildError(
            f"--strongly-typed needs TensorRT 9 or later (on a Jetson: the TensorRT 10 of "
            f"JetPack 6), this is {v}"
        )
    # 10.12+ deprecates the FP16/INT8 builder flags in favour of strong typing: where the
    # precision is in the ONNX (FP32, Q/DQ models), build strongly typed unless told not to
    prefer_strong = caps.precision_flags_deprecated and (precision == "fp32" or mode == "explicit")
    wanted = prefer_strong if cfg.strongly_typed is None else cfg.strongly_typed
    strongly = caps.strongly_typed_only or bool(wanted)
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
    once: list[str] = []  # said with the first job only
    if cfg.builder_optimization_level == 0 and timing is not None:
        common.append("optimization level 0 does not use the timing cache")
    weak_flags = [
        f for f, on in (("FP16", precision != "fp32"), ("INT8", mode == "implicit")) if on
    ]
    if caps.precision_flags_deprecated and not strongly and weak_flags:
        once.append(
            f"BuilderFlag.{'/'.join(weak_flags)} is deprecated in TensorRT {v} (since 10.12, "
            "superseded by strong typing); it still works here. The path forward: precision "
            "in the ONNX (--int8-mode explicit, or FP16 models from ModelOpt AutoCast)"
        )
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
            bundle.check_calibrated(onnx, error=EngineBuildError)
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
        outputs = bundle.manifest.parts[part].outputs
        weak = not strongly
        jobs.append(
            BuildJob(
                part=part,
                bundle_root=bundle.root,
                onnx=onnx,
                engine=engines / engine_file_name(part, precision, cfg.dla_core),
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
    if skipped or once:
        jobs[0] = replace(jobs[0], notes=(*jobs[0].notes, *once, *skipped))
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
