"""The TensorRT network and builder config of one build job.

``parse_onnx`` reads the job's ONNX into a network (with the job's creation flags) and names every
parser error; ``check_network`` compares its inputs and outputs with the manifest;
``configure_builder`` sets the memory pool, builder flags, optimization profile, INT8 calibrator and
DLA core (reporting the layers that fall back to the GPU); ``load_timing_cache`` and
``save_timing_cache`` keep the device's timing cache across builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.convert.engine.calibrator import make_calibrator
from edge.convert.engine.calibrators import CacheUse, cache_calibrator, calibration_batches
from edge.convert.engine.config import BuildJob
from edge.convert.engine.log import say
from edge.core.errors import EngineBuildError
from edge.core.files import write_bytes
from edge.core.lazy_trt import LOG

if TYPE_CHECKING:
    import tensorrt as trt  # noqa: TID251  (types only; the module is imported lazily)
else:
    from edge.core.lazy_trt import trt


def parser_errors(parser: trt.OnnxParser) -> list[str]:
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


def load_timing_cache(
    config: trt.IBuilderConfig, path: Path | None, label: str
) -> trt.ITimingCache | None:
    """Attach the timing cache file (a fresh cache when absent or from another device/TRT)."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        say(label, f"timing cache {path} is from another device or TensorRT; starting afresh")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def save_timing_cache(config: trt.IBuilderConfig, path: Path | None, label: str) -> None:
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
    say(label, f"timing cache saved to {path}")


def dla_fallbacks(network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> list[str]:
    """The layers DLA cannot run with this config (they go to the GPU), asked before building."""
    out: list[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not config.can_run_on_DLA(layer):
            out.append(f"{layer.name} ({layer.type.name})")
    return out


def configure_builder(
    job: BuildJob,
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    use: CacheUse,
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
        calibrator = cache_calibrator(data, job.calibration_algorithm, job.inputs[0].opt[0], use)
    elif job.calibrate_source is not None and job.calibrate_cache is not None:
        job.calibrate_cache.parent.mkdir(parents=True, exist_ok=True)
        calibrator = make_calibrator(
            job.calibrate_kind,
            calibration_batches(job),
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
        fallback = dla_fallbacks(network, config)
        total = network.num_layers
        shown = f": {', '.join(fallback[:20])}" if fallback else ""
        say(
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


def check_network(job: BuildJob, network: trt.INetworkDefinition) -> dict[str, Any]:
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


def parse_onnx(
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
        errors = parser_errors(parser) or LOG.errors or ["no error text"]
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
