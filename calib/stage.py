"""``edge calibrate BUNDLE --data SRC``: INT8 calibration on the CPU, written into the bundle.

Writes (assembled in a temporary folder inside the bundle, then renamed into place; the
manifest's "calibration" section lists every file with its sha256)::

    calib/<part>.cache                             TensorRT calibration caches, one per part the
                                                   bundle has besides fused (trunk, heads/<task>,
                                                   heads_all) (+ .json sidecars: the sha256 of
                                                   the ONNX graph each belongs to, algorithm,
                                                   frames, seed, TensorRT target)
    int8/<part>.onnx                               explicit Q/DQ models of every part, fused
                                                   included (calib/qdq.py)
    calib/report.json, calib/report.md             FP32 vs INT8 per task (calib/report.py)

The manifest's own "files" (checked by ``Bundle.verify_hashes``) are not touched.

Where INT8 goes (``--placement``, ``edge.calib.placement``): the Q/DQ models quantize only the
weighted ops where INT8 pays on TensorRT (not tiny convs, not batch-1 Gemms, not an input that
concatenates very different ranges); the caches list every tensor, and TensorRT picks precisions
itself. report.md lists every weighted op's choice and its reason, the warnings about the
calibration data (``edge.calib.drift``) and where the evaluation frames came from.

Constant and pre-bias entries (see docs/architecture.md, "Calibration caches"): TensorRT's own
calibrator also records tensors it creates while parsing: constant layers (an initializer
used as a tensor, e.g. a Gemm weight), their broadcasts, and the MatMul output before a Gemm's
bias add. The caches written here do not: in implicit INT8, TensorRT asks the cache for a tensor
only when it considers an INT8 kernel that reads or writes it, and a tensor without a scale just
runs that layer in FP16/FP32. A constant's range is known at build time (weights are quantized
per channel from their own values, never from the cache), and the pre-bias product exists only
inside the fused Gemm/FullyConnected kernel, whose output scale is the Gemm output's, which the
cache has. So the missing entries change no kernel choice; ``cache.trt_tensor_origin`` makes
TensorRT-written caches that do have them read and check cleanly.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edge import __version__
from edge.calib.algorithms import ALGORITHMS, choose_mse, compute_amax
from edge.calib.cache import CalibrationCache, write_cache, write_cache_sidecar
from edge.calib.collect import (
    PartStats,
    calibration_tensors,
    collect_bundle,
    collect_stats,
    map_tensors,
)
from edge.calib.data import calibration_and_eval_frames
from edge.calib.drift import compare as compare_stats
from edge.calib.drift import warnings as data_warnings
from edge.calib.placement import Placement, exact_input_scales
from edge.calib.qdq import QdqPlan, check_qdq, quantize_model
from edge.calib.report import (
    REPORT_FORMAT,
    ReportInputs,
    build_report,
    write_report,
)
from edge.calib.taskwise import head_nodes, task_only_tensors
from edge.core.errors import BundleError, CalibrationError, EdgeError
from edge.core.files import clean_stale_temporaries, swap_in, temp_dir
from edge.core.manifest import MANIFEST, Bundle, file_entries, load_bundle, write_manifest
from edge.core.trt_version import DEFAULT_TARGET, TrtVersion

OUTPUT_DIRS = ("calib", "int8")
PLACEMENTS = {"tensorrt": Placement(), "all": Placement.everything()}
"""--placement -> the rules that keep weighted ops float (``edge.calib.placement``)."""


@dataclass(frozen=True)
class CalibConfig:
    """Options of ``edge calibrate`` (one flag each)."""

    data: str = "synthetic:"
    """Calibration frames: a video file, an image folder or ``synthetic:?seed=S`` (demo line)."""
    frames: int = 512
    batch: int = 32
    seed: int = 0
    algorithm: str = "entropy"
    """entropy (TensorRT EntropyCalibration2), minmax, percentile, or mse (per tensor, entropy or
    minmax, whichever quantizes its histogram with the lower error)."""
    percentile: float = 99.99
    dense_algorithm: str | None = None
    """Algorithm for the tensors only segmentation heads depend on (``task_only_tensors``: the
    dense decoder, not the trunk nor layers shared with other tasks); None: ``algorithm``."""
    target: TrtVersion | str = DEFAULT_TARGET
    """TensorRT version the caches are for (their header: 10.3.0 -> TRT-100300-...)."""
    keep_float: tuple[str, ...] = ()
    """Tensors (as named in the trunk/head graphs) left unquantized in the Q/DQ models."""
    keep_float_heads: tuple[str, ...] = ()
    """Tasks whose head stays entirely FP32 in the Q/DQ models."""
    eval_frames: int = 256
    eval_data: str | None = None
    """Held-out frames for the report (default: held-out demo-line frames, or frames of --data
    not used for calibration)."""
    sensitivity: bool = False
    placement: str = "tensorrt"
    """Which weighted ops get Q/DQ: ``tensorrt`` (where INT8 pays on TensorRT:
    ``edge.calib.placement``) or ``all``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        object.__setattr__(self, "keep_float_heads", tuple(self.keep_float_heads))
        try:
            object.__setattr__(self, "target", TrtVersion.parse(self.target))
        except (EdgeError, ValueError, TypeError) as e:
            raise CalibrationError(
                f"--target {self.target!r} is not a TensorRT version; expected e.g. 10.3.0 or 8.6.1"
            ) from e
        problems = []
        if self.batch < 1:
            problems.append(f"--batch {self.batch} must be >= 1")
        elif self.frames < self.batch:
            problems.append(
                f"--frames {self.frames} is less than --batch {self.batch}: not even one batch; "
                "pass more frames or a smaller batch"
            )
        if self.algorithm not in ALGORITHMS:
            problems.append(
                f"--algorithm {self.algorithm!r}: expected one of {', '.join(sorted(ALGORITHMS))}"
            )
        if self.dense_algorithm is not None and self.dense_algorithm not in ALGORITHMS:
            problems.append(
                f"--dense-algorithm {self.dense_algorithm!r}: expected one of "
                f"{', '.join(sorted(ALGORITHMS))}"
            )
        if not 0.0 < self.percentile <= 100.0:
            problems.append(f"--percentile {self.percentile} must be in (0, 100], e.g. 99.99")
        if self.eval_frames < 0:
            problems.append(f"--eval-frames {self.eval_frames} must be >= 0")
        if self.placement not in PLACEMENTS:
            problems.append(
                f"--placement {self.placement!r}: expected one of {', '.join(PLACEMENTS)}"
            )
        if self.sensitivity and self.eval_frames == 0:
            problems.append("--sensitivity needs evaluation frames (--eval-frames > 0)")
        if problems:
            raise CalibrationError("; ".join(problems))

    @property
    def target_version(self) -> TrtVersion:
        """``target`` as a version (``__post_init__`` has parsed it)."""
        return TrtVersion.parse(self.target)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = str(self.target)
        d["keep_float"], d["keep_float_heads"] = list(self.keep_float), list(self.keep_float_heads)
        return d


def _load(bundle_path: str | Path) -> Bundle:
    try:
        return load_bundle(bundle_path)
    except BundleError as e:
        raise CalibrationError(f"cannot calibrate: {e}") from e


Algo = Callable[[str], str]
"""tensor name -> the algorithm that calibrates it."""


def dense_tensors(bundle: Bundle, model: onnx.ModelProto, stop: Collection[str] = ()) -> set[str]:
    """Tensors of ``model`` that only the bundle's segmentation tasks depend on."""
    dense = [t.output for t in bundle.tasks.values() if t.spec.kind == "segmentation"]
    other = [t.output for t in bundle.tasks.values() if t.spec.kind != "segmentation"]
    return task_only_tensors(model, dense, other, stop) if dense else set()


def _chooser(dense: Collection[str], cfg: CalibConfig) -> Algo:
    """tensor -> ``cfg.dense_algorithm`` for the ``dense`` tensors, ``cfg.algorithm`` else."""
    special = frozenset(dense) if cfg.dense_algorithm else frozenset()

    def algorithm(name: str) -> str:
        return cfg.dense_algorithm if name in special and cfg.dense_algorithm else cfg.algorithm

    return algorithm


def _algorithms(
    bundle: Bundle, parts: Mapping[str, onnx.ModelProto], cfg: CalibConfig, stop: Collection[str]
) -> dict[str, Algo]:
    """part -> (tensor -> algorithm): ``dense_algorithm`` on ``dense_tensors``, else
    ``algorithm`` (``stop``: the fused graph's trunk tensors)."""
    if not cfg.dense_algorithm:
        return {part: _chooser((), cfg) for part in parts}
    return {
        part: _chooser(dense_tensors(bundle, model, stop if part == "fused" else ()), cfg)
        for part, model in parts.items()
    }


def _part_amaxes(
    stats: Mapping[str, PartStats], cfg: CalibConfig, algos: Mapping[str, Algo]
) -> dict[str, dict[str, float]]:
    """amax of every tensor of every part, computed once per statistics object (taps) and
    algorithm."""
    done: dict[tuple[int, str], float] = {}
    out: dict[str, dict[str, float]] = {}
    for part, ps in stats.items():
        out[part] = {}
        for name in ps.tensors:
            s, algo = ps.stats[name], algos[part](name)
            if (id(s), algo) not in done:
                done[id(s), algo] = compute_amax(s, algo, percentile=cfg.percentile)
            out[part][name] = done[id(s), algo]
    return out


def _mse_choices(stats: Mapping[str, PartStats]) -> dict[str, dict[str, str]]:
    """For ``--algorithm mse``: the algorithm chosen for each tensor of each part."""
    return {p: {n: choose_mse(ps.stats[n])[0] for n in ps.tensors} for p, ps in stats.items()}


def _dense_listing(
    algos: Mapping[str, Algo],
    stats: Mapping[str, PartStats],
    fused: Mapping[str, float],
    algorithm: str,
) -> dict[str, list[str]]:
    """For ``--dense-algorithm``: part -> the tensors it calibrated (the fused graph's too)."""
    names = {**{p: ps.tensors for p, ps in stats.items()}, "fused": list(fused)}
    return {p: sorted(n for n in ns if algos[p](n) != algorithm) for p, ns in names.items()}


EXACT_LEVELS = 127.0
"""amax = scale * 127: the cache and the Q/DQ models store amax / 127."""


def _exact_inputs(
    parts: Mapping[str, onnx.ModelProto], amaxes: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Replace the calibrated amax of tensors computed from the uint8 input alone by the one
    whose scale represents every value exactly (``placement.exact_input_scales``), in every
    part (the fused graph's included, in the result); return part -> tensor -> scale."""
    out: dict[str, dict[str, float]] = {}
    for part, model in parts.items():
        scales = exact_input_scales(model, calibration_tensors(model))
        if scales:
            out[part] = scales
    # a head's input (a tap) is the trunk's tensor: the same scale
    trunk = out.get("trunk", {})
    for part, model in parts.items():
        taps = {i.name: trunk[i.name] for i in model.graph.input if i.name in trunk}
        if part not in ("trunk", "fused") and taps:
            out[part] = {**out.get(part, {}), **taps}
    for part, scales in out.items():
        if part in amaxes:
            amaxes[part].update({t: EXACT_LEVELS * s for t, s in scales.items()})
    return out


def _tasks_of_parts(bundle: Bundle, split: Collection[str]) -> dict[str, list[str]]:
    """Part -> the tasks whose output depends on it (the trunk and a merged part: all)."""
    own = {p: [t for t, o in bundle.tasks.items() if o.head == p] for p in split}
    return {p: tasks or list(bundle.tasks) for p, tasks in own.items()}


def _check_keep(cfg: CalibConfig, bundle: Bundle, split: Mapping[str, onnx.ModelProto]) -> None:
    unknown_heads = [t for t in cfg.keep_float_heads if t not in bundle.tasks]
    if unknown_heads:
        raise CalibrationError(
            f"--keep-float-head {unknown_heads}: no such task; the bundle's tasks are "
            f"{list(bundle.tasks)}"
        )
    known = {n for m in split.values() for n in calibration_tensors(m)}
    unknown = [n for n in cfg.keep_float if n not in known]
    if unknown:
        some = ", ".join(sorted(known)[:6])
        raise CalibrationError(
            f"--keep-float {unknown}: not a tensor of the trunk or a head; tensor names are "
            f"those of the calibration caches (e.g. {some}, ...)"
        )


@dataclass
class _Quantized:
    models: dict[str, onnx.ModelProto]
    """part -> its Q/DQ model (every part of the bundle)."""
    plans: dict[str, QdqPlan]


@dataclass(frozen=True)
class _FusedInputs:
    parts: Mapping[str, onnx.ModelProto]
    where: Mapping[str, tuple[str, str]]
    """fused tensor -> (part, tensor) of the split parts."""
    stats: Mapping[str, PartStats]
    amaxes: Mapping[str, Mapping[str, float]]
    algos: Mapping[str, Algo]


def _fused_amaxes(
    f: _FusedInputs, batches: Callable[[], Any], cfg: CalibConfig, input_name: str
) -> dict[str, float]:
    """The fused graph's amaxes: the split parts' wherever a tensor maps (recomputed where the
    fused graph's algorithm for it differs from its part's), a direct pass else."""
    fused, algo = f.parts["fused"], f.algos["fused"]
    out = {}
    for t, (p, n) in f.where.items():
        if n in f.amaxes.get(p, {}):
            same = algo(t) == f.algos[p](n)
            out[t] = (
                f.amaxes[p][n]
                if same
                else compute_amax(f.stats[p].stats[n], algo(t), percentile=cfg.percentile)
            )
    rest = [n for n in calibration_tensors(fused) if n not in out]
    if rest:
        extra = collect_stats(
            fused, ({input_name: x} for x in batches()), part="fused", tensors=rest
        )
        out.update(
            {n: compute_amax(extra.stats[n], algo(n), percentile=cfg.percentile) for n in rest}
        )
    return out


@dataclass(frozen=True)
class _QuantizeInputs:
    parts: Mapping[str, onnx.ModelProto]
    amaxes: Mapping[str, Mapping[str, float]]
    """part -> tensor -> amax (the fused graph's included)."""
    where: Mapping[str, tuple[str, str]]
    """fused tensor -> (part, tensor) of the split parts."""
    kept_outputs: frozenset[str]
    """Output tensors of the heads kept in float."""
    placement: Placement = field(default_factory=Placement)


def _quantize_part(
    part: str, q: _QuantizeInputs, keep: Collection[str]
) -> tuple[onnx.ModelProto, QdqPlan]:
    """One part's Q/DQ model; ``keep`` are tensor names of the split parts."""
    model = q.parts[part]
    outputs = {o.name for o in model.graph.output} & q.kept_outputs
    if part == "fused":
        keep_t = {f for f, (_p, n) in q.where.items() if n in keep} | set(keep)
        stop = {f for f, (p, _n) in q.where.items() if p == "trunk"}
    else:
        keep_t, stop = set(keep), set()
    return quantize_model(
        model,
        q.amaxes[part],
        keep_float=keep_t,
        keep_float_nodes=head_nodes(model, outputs, stop),
        placement=q.placement,
    )


def _quantize(q: _QuantizeInputs, cfg: CalibConfig) -> _Quantized:
    models, plans = {}, {}
    for part in q.parts:
        models[part], plans[part] = _quantize_part(part, q, cfg.keep_float)
    return _Quantized(models, plans)


def _write_outputs(
    tmp: Path,
    bundle: Bundle,
    caches: Mapping[str, CalibrationCache],
    q: _Quantized,
    meta: Mapping[str, Any],
) -> None:
    for part, cache in caches.items():
        path = write_cache(tmp / "calib" / f"{part}.cache", cache)
        onnx_file = f"{part}.onnx"
        write_cache_sidecar(
            path,
            {
                **meta,
                "part": part,
                "onnx": onnx_file,
                "onnx_sha256": bundle.file_hash(onnx_file),
                "header": cache.header,
                "tensors": len(cache.scales),
                "qdq_model": f"int8/{part}.onnx",
            },
        )
    for part, model in q.models.items():
        path = tmp / "int8" / f"{part}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))


def calibrate_bundle(
    bundle_path: str | Path, cfg: CalibConfig, *, log: Callable[[str], None] | None = None
) -> Path:
    """Calibrate the bundle at ``bundle_path`` for INT8 (see the module docstring); return it."""
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    bundle = _load(bundle_path)
    root = bundle.root
    if not os.access(root, os.W_OK):
        raise CalibrationError(f"{root}: the bundle folder is not writable")
    parts = {p: onnx.load(str(bundle.path(p))) for p in bundle.parts}
    split = {p: m for p, m in parts.items() if p != "fused"}
    _check_keep(cfg, bundle, split)
    say(f"reading {cfg.frames} calibration + {cfg.eval_frames} evaluation frames")
    calib, held = calibration_and_eval_frames(
        cfg.data,
        bundle.input,
        frames=cfg.frames,
        seed=cfg.seed,
        eval_frames=cfg.eval_frames,
        eval_data=cfg.eval_data,
    )
    t1 = time.perf_counter()
    say(f"collecting statistics of the trunk and {len(split) - 1} heads")
    stats = collect_bundle(split, calib.batches(cfg.batch), input_name=bundle.input.name)
    where = map_tensors(parts["fused"], split)
    algos = _algorithms(bundle, parts, cfg, {f for f, (p, _n) in where.items() if p == "trunk"})
    amaxes = _part_amaxes(stats, cfg, algos)
    exact = _exact_inputs(parts, amaxes)
    t2 = time.perf_counter()
    caches = {
        p: CalibrationCache.from_amaxes(cfg.target_version, cfg.algorithm, amaxes[p]) for p in stats
    }
    fused_amax = _fused_amaxes(
        _FusedInputs(parts, where, stats, amaxes, algos),
        lambda: calib.batches(cfg.batch),
        cfg,
        bundle.input.name,
    )
    fused_amax.update({t: EXACT_LEVELS * s for t, s in exact.get("fused", {}).items()})
    say("writing the Q/DQ models")
    qin = _QuantizeInputs(
        parts,
        {**amaxes, "fused": fused_amax},
        where,
        frozenset(bundle.tasks[t].output for t in cfg.keep_float_heads),
        PLACEMENTS[cfg.placement],
    )
    q = _quantize(qin, cfg)
    for part, model in q.models.items():
        check_qdq(model, float_nodes=q.plans[part].float_nodes, where=f"int8/{part}.onnx")
    meta = {
        "format": "etr-edge-calibration-cache",
        "etr_edge": __version__,
        "algorithm": cfg.algorithm,
        "target_tensorrt": str(cfg.target),
        "frames": len(calib),
        "batch": cfg.batch,
        "seed": cfg.seed,
        "data": calib.info,
        **({"percentile": cfg.percentile} if cfg.algorithm == "percentile" else {}),
    }
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": 1,
        "evaluation": None,
        "tasks": {},
        "worst_tensors": [],
        "sensitivity": None,
    }
    drift = None
    if held is not None:
        say(f"comparing calibration and evaluation statistics on {len(held)} frames")
        held_stats = collect_bundle(split, held.batches(cfg.batch), input_name=bundle.input.name)
        drift = compare_stats(stats, held_stats, _tasks_of_parts(bundle, split))
    warns = data_warnings(drift, algorithm=cfg.algorithm, frames=len(calib), data_info=calib.info)
    for w in warns:
        say(f"warning: {w}")
    if held is not None:
        say(f"evaluating FP32 vs INT8 on {len(held)} held-out frames")
        report = build_report(
            _report_inputs(bundle, qin, q, cfg), held, batch=cfg.batch, sensitivity=cfg.sensitivity
        )
    report["warnings"] = warns
    report["drift"] = drift
    report["calibration"] = {
        **meta,
        "config": cfg.to_dict(),
        "header": next(iter(caches.values())).header,
        "target": str(cfg.target),
        "keep_float": list(cfg.keep_float),
        "keep_float_heads": list(cfg.keep_float_heads),
        "tensors": {p: len(c.scales) for p, c in caches.items()},
        "qdq": {p: plan.summary() for p, plan in q.plans.items()},
        "exact_input_scales": exact,
        **({"mse_choice": _mse_choices(stats)} if cfg.algorithm == "mse" else {}),
        **(
            {"dense_tensors": _dense_listing(algos, stats, fused_amax, cfg.algorithm)}
            if cfg.dense_algorithm
            else {}
        ),
    }
    report["timing_s"] = {
        "frames": round(t1 - t0, 3),
        "statistics": round(t2 - t1, 3),
        "total": round(time.perf_counter() - t0, 3),
    }
    for stale in clean_stale_temporaries(root, ("calibrate", *OUTPUT_DIRS, MANIFEST)):
        say(f"removed {stale}, left by an edge process that no longer runs")
    tmp = temp_dir(root, "calibrate")
    try:
        _write_outputs(tmp, bundle, caches, q, meta)
        write_report(report, tmp / "calib")
        files = {rel: f.to_dict() for rel, f in file_entries(tmp, list(OUTPUT_DIRS)).items()}
        manifest = bundle.manifest.with_calibration(
            {
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "etr_edge": __version__,
                "config": cfg.to_dict(),
                "files": files,
                "summary": {
                    t: {k: e.get(k) for k in ("metric", "fp32", "int8", "delta")}
                    for t, e in report.get("tasks", {}).items()
                },
            }
        )
        write_manifest(tmp, manifest)
        swap_in(root, tmp, (*OUTPUT_DIRS, MANIFEST))
    except OSError as e:
        raise CalibrationError(
            f"{root}: cannot write the calibration outputs ({e}); free space or choose a "
            "writable bundle location, then re-run edge calibrate"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"wrote {root / 'calib'} and {root / 'int8'}")
    return root


def _report_inputs(
    bundle: Bundle, qin: _QuantizeInputs, q: _Quantized, cfg: CalibConfig
) -> ReportInputs:
    def build(keep: Any) -> onnx.ModelProto:
        return _quantize_part("fused", qin, set(cfg.keep_float) | set(keep))[0]

    split = [p for p in qin.parts if p != "fused"]
    return ReportInputs(
        tasks={t: o.spec for t, o in bundle.tasks.items()},
        outputs={t: o.output for t, o in bundle.tasks.items()},
        heads={t: o.head for t, o in bundle.tasks.items()},
        input_name=bundle.input.name,
        input_size=(bundle.input.height, bundle.input.width),
        fp32={p: qin.parts[p] for p in split},
        int8={p: q.models[p] for p in split},
        int8_fused=q.models["fused"],
        qdq_scales={p: dict(q.plans[p].activations) for p in split},
        build_fused=build,
    )
