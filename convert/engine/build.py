"""``edge build``: TensorRT engines from a bundle, built on the device that will run them.

    bundle/engines/<device-slug>/<part>.<precision>[.dla<N>].engine   the serialized engine
    bundle/engines/<device-slug>/<part>.<precision>[.dla<N>].engine.json   its sidecar
    bundle/engines/<device-slug>/timing.cache               the persistent timing cache
    bundle/engines/<device-slug>/calib/<part>.cache         caches calibrated on the spot

``plan_build`` (plan.py, no TensorRT) decides the jobs; ``run_build_job`` here builds one of them
with TensorRT: the network and builder config come from network.py, the INT8 calibrators from
calibrators.py and calibrator.py, the progress monitor from log.py, the logger from
edge.core.lazy_trt (the process's one), as is ``trt``, a lazy stand-in for the module typed as
the real one, so mypy checks every call against the repaired stubs.

INT8 paths (TensorRT developer guide, "Working with Quantized Types"): *implicit* (TensorRT
8.5-10.x) = ``BuilderFlag.INT8`` + a calibrator that hands TensorRT the bundle's cache (``edge
calibrate``) or calibrates on the spot from a frame source; *explicit* = the Q/DQ models, the
only INT8 path on TensorRT 11 (strongly typed; 11 has no FP16/INT8 builder flags).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.convert.engine.calibrators import CacheUse
from edge.convert.engine.config import BuildConfig, BuildJob
from edge.convert.engine.log import progress_monitor, say
from edge.convert.engine.network import (
    check_network,
    configure_builder,
    load_timing_cache,
    parse_onnx,
    save_timing_cache,
)
from edge.convert.engine.plan import engine_is_current, plan_build
from edge.core.board import probe_jetson
from edge.core.device_identity import gpu_identity
from edge.core.errors import EngineBuildError
from edge.core.files import sha256_file, write_bytes
from edge.core.lazy_trt import LOG, engine_version, import_tensorrt, trt_logger
from edge.core.manifest import load_bundle
from edge.core.sidecar import sidecar_path, write_sidecar
from edge.core.trt_version import feature_check

if TYPE_CHECKING:
    import tensorrt as trt  # noqa: TID251  (types only; the module is imported lazily)
else:
    from edge.core.lazy_trt import trt


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
            "dla_cores": dev.dla_cores if dev else 0,
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
        say(label, f"note: {note}")
    say(label, job.describe())
    logger = trt_logger(f"build {label}", job.verbose)
    builder = trt.Builder(logger)
    network, parser = parse_onnx(job, builder, logger)
    io = check_network(job, network)
    config = builder.create_builder_config()
    use = CacheUse()
    calibrator, fallback = configure_builder(job, builder, network, config, use)
    timing = load_timing_cache(config, job.timing_cache, label)  # kept alive until built
    monitor = None
    if job.progress and hasattr(trt, "IProgressMonitor"):
        monitor = progress_monitor(label)
        config.progress_monitor = monitor
    t0 = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    took = time.monotonic() - t0
    feeder = getattr(calibrator, "feeder", None)  # calibrating on the spot (calibrator.py)
    if feeder is not None:  # what TensorRT's binding swallowed, and short calibrations
        feeder.check(job.calibrate_frames)
    if plan is None or plan.nbytes == 0:
        why = "; ".join(LOG.errors[-4:]) or "TensorRT gave no reason"
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
    save_timing_cache(config, job.timing_cache, label)
    sidecar_path(job.engine).unlink(missing_ok=True)  # never a stale sidecar beside new bytes
    write_bytes(job.engine, memoryview(plan))
    write_sidecar(job.engine, _sidecar_info(job, io, fallback, took))
    say(label, f"wrote {job.engine} ({plan.nbytes / 1e6:.1f} MB) in {took:.1f} s")
    del parser, calibrator, timing, monitor
    return job.engine


def build_engines(bundle_path: str | os.PathLike[str], cfg: BuildConfig) -> list[Path]:
    """``edge build``: plan with the installed TensorRT (feature-tested) and this device, build
    every selected engine that is not already current (all of them with ``cfg.force``); returns
    the engine paths in bundle order."""
    caps = feature_check(import_tensorrt(), engine_version())
    device = probe_jetson()
    gpu = gpu_identity(device)
    bundle = load_bundle(Path(bundle_path))
    jobs = plan_build(bundle, cfg, caps.version, device, gpu=gpu, caps=caps)
    for job in jobs:
        if not cfg.force and engine_is_current(job):
            say(job.label, f"up to date: {job.engine} (pass --force to rebuild)")
        else:
            run_build_job(job)
    return [job.engine for job in jobs]
