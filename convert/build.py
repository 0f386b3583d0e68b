"""``edge build``: TensorRT engines from a bundle, built on the device that will run them.

    bundle/engines/<device-slug>/<part>.<precision>.engine        the serialized engine
    bundle/engines/<device-slug>/<part>.<precision>.engine.json   its sidecar (runtime/sidecar.py)
    bundle/engines/<device-slug>/timing.cache                     the persistent timing cache
    bundle/engines/<device-slug>/calib/<part>.cache               caches calibrated on the spot

``plan_build`` (convert/build_plan.py, no TensorRT) decides the jobs; ``run_build_job`` here is
the only code that touches TensorRT. ``trt`` below is a lazy stand-in for the module, imported on
first use and typed as the real module, so mypy checks every call against the repaired stubs.

INT8 paths (anchors.md §1.4-§1.5): *implicit* (TensorRT 8.5-10.x) = ``BuilderFlag.INT8`` + a
calibrator that hands TensorRT the bundle's cache (``edge calibrate``) or calibrates on the spot
from a frame source; *explicit* = the Q/DQ models, the only INT8 path on TensorRT 11 (strongly
typed; 11 has no FP16/INT8 builder flags).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.convert.build_plan import (
    PART_GROUPS,
    BuildConfig,
    BuildJob,
    GpuIdentity,
    ShapeRange,
    device_slug,
    engine_is_current,
    gpu_identity,
    plan_build,
)
from edge.errors import CalibrationError, EngineBuildError, MissingDependencyError
from edge.files import sha256_file, write_bytes
from edge.jetson.probe import probe_jetson
from edge.manifest import load_bundle
from edge.runtime.sidecar import sidecar_path, write_sidecar
from edge.trt_version import feature_check

if TYPE_CHECKING:
    import numpy as np
    import tensorrt as trt  # noqa: TID251  (types only; the module is imported lazily)

__all__ = [
    "PART_GROUPS",
    "BuildConfig",
    "BuildJob",
    "GpuIdentity",
    "ShapeRange",
    "build_engines",
    "device_slug",
    "engine_is_current",
    "gpu_identity",
    "plan_build",
    "run_build_job",
]


def _import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as e:
        raise MissingDependencyError(
            f"edge build needs TensorRT's Python bindings, which are not importable here ({e}). "
            "Build engines on the device: JetPack ships them (jetson/setup.sh makes them visible "
            "in the venv); on a desktop GPU install NVIDIA's tensorrt wheel"
        ) from e


class _LazyTensorRT:
    """Stands in for the ``tensorrt`` module; imports it on the first attribute access."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_import_tensorrt(), name)


if not TYPE_CHECKING:
    trt = _LazyTensorRT()

# ---------------------------------------------------------------------------- TensorRT

_CACHE_ALGORITHMS = {
    "EntropyCalibration2": "ENTROPY_CALIBRATION_2",
    "MinMaxCalibration": "MINMAX_CALIBRATION",
}


def _say(label: str, msg: str) -> None:
    print(f"[build {label}] {msg}", file=sys.stderr, flush=True)


@dataclass
class _LogState:
    """What the process-wide logger reports to: the current job's label and its errors."""

    label: str = ""
    verbose: bool = False
    errors: list[str] = field(default_factory=list)


_LOG = _LogState()
_LOGGER: list[trt.ILogger] = []


def _logger(label: str, verbose: bool) -> trt.ILogger:
    """One TensorRT logger per process (TensorRT keeps the first one it is given); it prints
    warnings and errors (everything with ``verbose``) and keeps the errors for messages."""
    _LOG.label, _LOG.verbose, _LOG.errors = label, verbose, []
    if not _LOGGER:

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                if int(severity) <= int(trt.ILogger.ERROR):
                    _LOG.errors.append(msg)
                if int(severity) <= int(trt.ILogger.WARNING) or _LOG.verbose:
                    _say(_LOG.label, f"TensorRT {severity.name}: {msg}")

        _LOGGER.append(_Logger())
    return _LOGGER[0]


def _progress_monitor(label: str) -> trt.IProgressMonitor:
    """An IProgressMonitor (TensorRT 10+) printing the top phases' start, steps and end.
    TensorRT calls it from several threads, hence the lock."""

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._depth: dict[str, int] = {}
            self._steps: dict[str, int] = {}
            self._t0: dict[str, float] = {}
            self._tty = sys.stderr.isatty()

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name], self._steps[phase_name] = depth, num_steps
                self._t0[phase_name] = time.monotonic()
                if depth <= 1:
                    _say(label, f"{'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                if self._tty and self._depth.get(phase_name, 9) <= 1:
                    total = max(self._steps.get(phase_name, 1), 1)
                    sys.stderr.write(f"\r[build {label}] {phase_name}: {step + 1}/{total}")
                    sys.stderr.flush()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                depth = self._depth.pop(phase_name, 0)
                took = time.monotonic() - self._t0.pop(phase_name, time.monotonic())
                if depth <= 1:
                    if self._tty:
                        sys.stderr.write("\r\033[K")
                    _say(label, f"{'  ' * depth}{phase_name} done in {took:.1f} s")

    return _Progress()


@dataclass
class _CacheUse:
    """Set by the cache-only calibrator when TensorRT asked it for batches."""

    asked_for_batches: bool = False


def _cache_calibrator(
    data: bytes, algorithm: str, batch: int, use: _CacheUse
) -> trt.IInt8Calibrator:
    """A calibrator that only hands TensorRT an existing cache.

    TensorRT calls ``read_calibration_cache`` first; when it accepts the cache (same TensorRT
    version and calibrator algorithm) it never asks for batches. If it rejects the cache it
    starts calibrating: ``get_batch`` then returns no data ("[] or None: no more batches"), the
    build fails ("Calibration failure occurred with no scaling factors detected"), and ``use``
    tells the caller why. Based on ``IInt8Calibrator`` with ``get_algorithm`` (the header's
    algorithm; DLA requires ENTROPY_CALIBRATION_2), as Polygraphy and Ultralytics do.
    """
    algo: trt.CalibrationAlgoType = getattr(trt.CalibrationAlgoType, _CACHE_ALGORITHMS[algorithm])

    class _CacheOnly(trt.IInt8Calibrator):
        def __init__(self) -> None:
            trt.IInt8Calibrator.__init__(self)

        def get_algorithm(self) -> trt.CalibrationAlgoType:
            return algo

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int]:
            use.asked_for_batches = True
            return []

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache: Any) -> None:
            return None  # the bundle's cache belongs to edge calibrate: never rewritten here

    return _CacheOnly()


def _calibration_batches(job: BuildJob) -> Iterator[dict[str, np.ndarray]]:
    """Feeds for calibrating ``job.part`` on the spot: frames through the runtime preprocessing;
    for a head, the trunk's taps computed with ONNX Runtime (the same tensors it will see)."""
    from edge.runtime.backends.base import create_backend
    from edge.runtime.preprocess import frames_to_input
    from edge.runtime.sources import open_source

    bundle = load_bundle(job.bundle_root, verify=False)
    batch = job.inputs[0].opt[0]
    trunk = None
    if job.part.startswith("heads/"):
        trunk = create_backend("onnxruntime").load(bundle.path("trunk"))
    names = [s.name for s in job.inputs]
    seen = 0
    with open_source(str(job.calibrate_source)) as source:
        while seen < job.calibrate_frames:
            frames: list[np.ndarray] = []
            while len(frames) < batch and (frame := source.read()) is not None:
                frames.append(frame.image)
            if len(frames) < batch:
                break
            seen += batch
            image = frames_to_input(frames, bundle.input)
            feed = trunk.run({bundle.input.name: image}) if trunk else {bundle.input.name: image}
            yield {n: feed[n] for n in names}
    if seen == 0:
        raise CalibrationError(
            f"--calibrate-data {job.calibrate_source} gave no full batch of {batch} frames; "
            "give a source with more frames"
        )


def _parser_errors(parser: trt.OnnxParser) -> list[str]:
    """Each ONNX parser error as 'node <name> (<op>): <description>' where TensorRT says."""
    out: list[str] = []
    for i in range(parser.num_errors):
        err: Any = parser.get_error(i)
        text = str(err.desc()) if hasattr(err, "desc") else str(err)
        node = str(err.node_name()) if hasattr(err, "node_name") else ""
        op = str(err.node_operator()) if hasattr(err, "node_operator") else ""
        out.append((f"node {node} ({op}): " if node else "") + text)
    return out


def _dims(shape: trt.Dims) -> list[int]:
    return [int(shape[i]) for i in range(len(shape))]


def _load_timing_cache(
    config: trt.IBuilderConfig, path: Path | None, label: str
) -> trt.ITimingCache | None:
    """Attach the timing cache file (a fresh cache when absent or from another device/TRT)."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        _say(label, f"timing cache {path} is from another device or TensorRT; starting afresh")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: trt.IBuilderConfig, path: Path | None, label: str) -> None:
    """Merge this build's timings into the file (a parallel build may have grown it since it
    was read) and replace it atomically."""
    if path is None:
        return
    ours = config.get_timing_cache()
    if ours is None:
        return
    merged = ours
    if path.is_file():
        disk = config.create_timing_cache(path.read_bytes())
        if disk is not None and disk.combine(ours, False):
            merged = disk
    write_bytes(path, bytes(memoryview(merged.serialize())))
    _say(label, f"timing cache saved to {path}")


def _dla_fallbacks(network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> list[str]:
    """The layers DLA cannot run with this config (they go to the GPU), asked before building."""
    out: list[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not config.can_run_on_DLA(layer):
            out.append(f"{layer.name} ({layer.type.name})")
    return out


def _configure(
    job: BuildJob,
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    use: _CacheUse,
) -> tuple[trt.IInt8Calibrator | None, list[str]]:
    """Pools, flags, profile, INT8 calibrator and DLA; returns (calibrator, DLA fallbacks)."""
    if job.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, job.workspace_bytes)
    if job.optimization_level is not None:
        config.builder_optimization_level = job.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if job.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if job.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if job.dynamic:
        profile = builder.create_optimization_profile()
        for s in job.inputs:
            profile.set_shape(
                s.name, trt.Dims(list(s.min)), trt.Dims(list(s.opt)), trt.Dims(list(s.max))
            )
        config.add_optimization_profile(profile)
    calibrator: trt.IInt8Calibrator | None = None
    if job.calibration_cache is not None and job.calibration_algorithm is not None:
        data = job.calibration_cache.read_bytes()
        calibrator = _cache_calibrator(data, job.calibration_algorithm, job.inputs[0].opt[0], use)
    elif job.calibrate_source is not None and job.calibrate_cache is not None:
        from edge.calib.trt_calibrator import make_calibrator

        job.calibrate_cache.parent.mkdir(parents=True, exist_ok=True)
        calibrator = make_calibrator(
            job.calibrate_kind,
            _calibration_batches(job),
            job.calibrate_cache,
            [s.name for s in job.inputs],
            target=job.tensorrt,
        )
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if job.calibration_profile:  # one fixed shape (TensorRT sets min = max = opt)
            calib = builder.create_optimization_profile()
            for s in job.inputs:
                calib.set_shape(s.name, *(trt.Dims(list(s.opt)),) * 3)
            config.set_calibration_profile(calib)
    fallback: list[str] = []
    if job.dla_core is not None:
        if job.dla_core >= builder.num_DLA_cores:
            raise EngineBuildError(
                f"--dla-core {job.dla_core}: TensorRT sees {builder.num_DLA_cores} DLA core(s) "
                "here; use a smaller index or drop --dla-core"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = job.dla_core
        if job.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        fallback = _dla_fallbacks(network, config)
        total = network.num_layers
        shown = f": {', '.join(fallback[:20])}" if fallback else ""
        _say(
            job.label,
            f"DLA core {job.dla_core}: {total - len(fallback)} of {total} layers "
            f"on DLA, {len(fallback)} fall back to the GPU{shown}",
        )
        if fallback and not job.gpu_fallback:
            raise EngineBuildError(
                f"{len(fallback)} layer(s) cannot run on DLA ({', '.join(fallback[:5])}) and GPU "
                "fallback is off; allow it (drop --no-gpu-fallback) or build for the GPU"
            )
    return calibrator, fallback


def _check_network(job: BuildJob, network: trt.INetworkDefinition) -> dict[str, Any]:
    """Compare the parsed network's I/O with the manifest; return it for the sidecar."""
    io: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io["inputs"].append({"name": t.name, "shape": _dims(t.shape), "dtype": t.dtype.name})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io["outputs"].append({"name": t.name, "shape": _dims(t.shape), "dtype": t.dtype.name})
    got_in = {t["name"] for t in io["inputs"]}
    got_out = {t["name"] for t in io["outputs"]}
    want_in = {s.name for s in job.inputs}
    if got_in != want_in or not set(job.outputs) <= got_out:
        raise EngineBuildError(
            f"{job.onnx.name}: network inputs {sorted(got_in)} / outputs {sorted(got_out)} do not "
            f"match the manifest's {sorted(want_in)} / {sorted(job.outputs)}; re-run edge "
            "convert (and edge calibrate) so the bundle is consistent"
        )
    if not job.dynamic and any(d < 0 for t in io["inputs"] for d in t["shape"]):
        raise EngineBuildError(
            f"{job.onnx.name} has dynamic dimensions but the manifest says a fixed batch; "
            "re-run edge convert"
        )
    return io


def _parse(
    job: BuildJob, builder: trt.Builder, logger: trt.ILogger
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    flags = 0
    if job.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if job.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(job.onnx)):
        errors = _parser_errors(parser) or _LOG.errors or ["no error text"]
        hint = ""
        if any("UINT8" in e.upper() for e in errors):
            hint = (
                " (the bundle's uint8 image input needs an ONNX parser that accepts UINT8 "
                "inputs; otherwise convert with --no-preprocess for a float input)"
            )
        raise EngineBuildError(
            f"TensorRT {job.tensorrt} cannot parse {job.onnx}: " + "; ".join(errors[:8]) + hint
        )
    return network, parser


def _sidecar_info(
    job: BuildJob, io: dict[str, Any], fallback: list[str], took: float
) -> dict[str, Any]:
    cache = job.calibration_cache or job.calibrate_cache
    dev = job.device
    return {
        "part": job.part,
        "precision": job.precision,
        "int8_mode": job.int8_mode,
        "tensorrt": str(job.tensorrt),
        "device": {
            "name": job.gpu.name,
            "compute_capability": job.gpu.compute_capability,
            "source": job.gpu.source,
            "l4t": dev.l4t if dev else None,
            "jetpack": dev.jetpack if dev else None,
            "module": dev.module if dev else None,
        },
        "dla_core": job.dla_core,
        "dla_gpu_fallback_layers": fallback,
        "onnx": job.onnx.relative_to(job.bundle_root).as_posix(),
        "onnx_sha256": sha256_file(job.onnx),
        "cache": cache.relative_to(job.bundle_root).as_posix() if cache else None,
        "cache_sha256": sha256_file(cache) if cache is not None and cache.is_file() else None,
        "strongly_typed": job.strongly_typed,
        "builder_flags": job.flags(),
        "batch": {s.name: {"min": s.min, "opt": s.opt, "max": s.max} for s in job.inputs},
        "workspace_bytes": job.workspace_bytes,
        "optimization_level": job.optimization_level,
        "build_seconds": round(took, 2),
        "io": io,
    }


def run_build_job(job: BuildJob) -> Path:
    """Build one engine with TensorRT, write it and its sidecar atomically; return its path."""
    label = job.label
    for note in job.notes:
        _say(label, f"note: {note}")
    _say(label, job.describe())
    logger = _logger(label, job.verbose)
    builder = trt.Builder(logger)
    network, parser = _parse(job, builder, logger)
    io = _check_network(job, network)
    config = builder.create_builder_config()
    use = _CacheUse()
    calibrator, fallback = _configure(job, builder, network, config, use)
    timing = _load_timing_cache(config, job.timing_cache, label)  # kept alive until built
    monitor = None
    if job.progress and hasattr(trt, "IProgressMonitor"):
        monitor = _progress_monitor(label)
        config.progress_monitor = monitor
    t0 = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    took = time.monotonic() - t0
    if plan is None or plan.nbytes == 0:
        why = "; ".join(_LOG.errors[-4:]) or "TensorRT gave no reason"
        if use.asked_for_batches:
            raise EngineBuildError(
                f"TensorRT {job.tensorrt} rejected the calibration cache {job.calibration_cache} "
                f"and wanted to calibrate ({why}); re-run edge calibrate for this TensorRT, or "
                "pass --calibrate-data SOURCE to calibrate here"
            )
        raise EngineBuildError(
            f"building {label} failed: {why}. If the process was killed or ran out of memory, "
            "pass a smaller --workspace (e.g. 256), add swap, or close the desktop session"
        )
    _save_timing_cache(config, job.timing_cache, label)
    sidecar_path(job.engine).unlink(missing_ok=True)  # never a stale sidecar beside new bytes
    write_bytes(job.engine, memoryview(plan))
    write_sidecar(job.engine, _sidecar_info(job, io, fallback, took))
    _say(label, f"wrote {job.engine} ({plan.nbytes / 1e6:.1f} MB) in {took:.1f} s")
    del parser, calibrator, timing, monitor
    return job.engine


def build_engines(bundle_path: str | os.PathLike[str], cfg: BuildConfig) -> list[Path]:
    """``edge build``: plan with the installed TensorRT (feature-tested) and this device, build
    every selected engine that is not already current (all of them with ``cfg.force``); returns
    the engine paths in bundle order."""
    caps = feature_check(_import_tensorrt())
    device = probe_jetson()
    gpu = gpu_identity(device)
    bundle = load_bundle(Path(bundle_path))
    jobs = plan_build(bundle, cfg, caps.version, device, gpu=gpu, caps=caps)
    for job in jobs:
        if not cfg.force and engine_is_current(job):
            _say(job.label, f"up to date: {job.engine} (pass --force to rebuild)")
        else:
            run_build_job(job)
    return [job.engine for job in jobs]
