"""``edge export-triton``: a bundle -> a Triton Inference Server model repository.

    REPO/etr_trunk/{config.pbtxt, 1/model.onnx|model.plan|model.py+model.onnx}
    REPO/etr_head_<task>/...          one per task (the trunk's taps in, the task's output out)
    REPO/etr_heads_all/...            the merged heads, when the bundle has them
    REPO/etr_ensemble/{config.pbtxt, 1/}   image in, every task out: trunk once, heads on its taps
    REPO/etr_bls/{config.pbtxt, 1/model.py, 1/bls.json}   trunk, then only the requested heads
    REPO/etr_triton.json              what was exported from which bundle (hashes, flavor, engines)

Flavors: ``onnxruntime`` (Triton's ONNX Runtime backend), ``tensorrt`` (``tensorrt_plan`` from the
engines of ``edge build``, their sidecars checked against the bundle), ``python`` (Triton's Python
backend running the ONNX parts on ONNX Runtime: machines without those backends). Dims and dtypes
come from the manifest (image, taps) and the parts' ONNX graphs (task outputs). The repository is
written to a temporary folder beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.convert.triton.pbtxt import ModelSpec, Step, Tensor, render
from edge.core.errors import BundleError, ConfigError, EngineMismatchError
from edge.core.files import sha256_file, staged_dir, write_json, write_text
from edge.core.manifest import Bundle, load_bundle, part_file
from edge.core.sidecar import read_sidecar
from edge.core.trt_version import PRECISIONS
from edge.runtime.backends.registry import create_backend
from edge.runtime.backends.triton import (
    BLS,
    BLS_TASKS_PARAMETER,
    BLS_WHEN_PARAMETER,
    DEFAULT_PREFIX,
    ENSEMBLE,
    ONNX_SHA256_PARAMETER,
    TRITON_DTYPES,
    model_name,
)

FLAVORS = ("onnxruntime", "tensorrt", "python")
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
REPO_MANIFEST = "etr_triton.json"
_MODELS = Path(__file__).parent / "python_models"


@dataclass(frozen=True)
class TritonExportConfig:
    """Options of ``edge export-triton`` (one flag each).

    ``max_batch`` None: the bundle's largest batch (dynamic-batch bundles), 0 for fixed-batch
    ones (Triton then sends the bundle's own batch). ``queue_delay_us``: how long the dynamic
    batcher waits to fill a batch. ``kind``: auto (GPU for tensorrt, CPU for python) | cpu | gpu.
    ``engines``: folder of ``<part>.<precision>.engine`` (tensorrt; default the bundle's only
    ``engines/<device>/`` folder)."""

    out: Path
    flavor: str = "onnxruntime"
    max_batch: int | None = None
    queue_delay_us: int = 100
    instances: int = 1
    kind: str = "auto"
    prefix: str = DEFAULT_PREFIX
    version: int = 1
    precision: str = "fp16"
    engines: Path | None = None
    threads: int = 1
    """python flavor: ONNX Runtime intra-op threads per model instance."""
    force: bool = False

    def __post_init__(self) -> None:
        bad = []
        if self.flavor not in FLAVORS:
            bad.append(f"flavor '{self.flavor}' (expected one of {FLAVORS})")
        if self.max_batch is not None and self.max_batch < 0:
            bad.append(f"max_batch {self.max_batch} (expected >= 0)")
        if self.queue_delay_us < 0:
            bad.append(f"queue_delay_us {self.queue_delay_us} (expected >= 0)")
        if self.instances < 1 or self.threads < 1 or self.version < 1:
            bad.append("instances, threads and version must be >= 1")
        if self.kind not in KINDS:
            bad.append(f"kind '{self.kind}' (expected one of {sorted(KINDS)})")
        if self.precision not in PRECISIONS:
            bad.append(f"precision '{self.precision}' (expected one of {PRECISIONS})")
        if not self.prefix.replace("_", "").replace("-", "").isalnum():
            bad.append(f"prefix '{self.prefix}' (letters, digits, '_' and '-' only)")
        if bad:
            raise ConfigError("export-triton: invalid " + "; ".join(bad))


def _batching(bundle: Bundle, cfg: TritonExportConfig) -> tuple[int, int]:
    """(max_batch_size for Triton, the fixed batch dim kept in dims or -1 when batching)."""
    batch = bundle.batch
    if batch.get("dynamic"):
        top = int(batch.get("max", 1))
        want = top if cfg.max_batch is None else cfg.max_batch
        if want > top:
            raise ConfigError(
                f"export-triton: --max-batch {want} exceeds the bundle's largest batch {top}; "
                f"re-convert with edge convert --dynamic-batch --max-batch {want}"
            )
        return want, (-1 if want > 0 else 1)
    if cfg.max_batch:
        raise ConfigError(
            f"export-triton: bundle {bundle.root} has a fixed batch of {batch.get('size', 1)}, so "
            "Triton cannot batch requests; re-convert with edge convert --dynamic-batch, or "
            "drop --max-batch"
        )
    return 0, int(batch.get("size", 1))


def _dims(shape: tuple[Any, ...], mbs: int, fixed: int) -> tuple[int, ...]:
    rest = tuple(int(d) if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
    return rest if mbs > 0 else (fixed, *rest)


def _part_io(bundle: Bundle, part: str, mbs: int, fixed: int) -> tuple[list[Tensor], list[Tensor]]:
    """A part's inputs/outputs: the image and taps as the manifest states them, task outputs as
    the part's ONNX graph declares them (described through the ONNX Runtime backend)."""
    spec = bundle.input
    known = {spec.name: Tensor(spec.name, spec.dtype, _image_dims(bundle, mbs, fixed))}
    for tap in bundle.taps:
        known[tap.name] = Tensor(tap.name, "float32", _dims(tap.shape, mbs, fixed))
    with create_backend("onnxruntime").load(bundle.path(part)) as b:
        ins, outs = b.inputs(), b.outputs()
    for t in ins:
        if t.name not in known:
            raise BundleError(
                f"{bundle.root}: part '{part}' reads '{t.name}', which is neither the manifest's "
                f"input nor one of its taps {bundle.tap_names}; re-run edge convert"
            )
    outputs = [
        known.get(t.name) or Tensor(t.name, t.dtype, _dims(t.shape, mbs, fixed)) for t in outs
    ]
    for o in outputs:
        if o.dtype not in TRITON_DTYPES:
            raise BundleError(
                f"{bundle.root}: output '{o.name}' of '{part}' has dtype {o.dtype}, which "
                f"Triton cannot carry (one of {sorted(TRITON_DTYPES)}); re-run edge convert"
            )
    return [known[t.name] for t in ins], outputs


def _image_dims(bundle: Bundle, mbs: int, fixed: int) -> tuple[int, ...]:
    s = bundle.input
    dims = (
        (s.height, s.width, s.channels) if s.layout == "NHWC" else (s.channels, s.height, s.width)
    )
    return dims if mbs > 0 else (fixed, *dims)


def _engines_dir(bundle: Bundle, cfg: TritonExportConfig) -> Path:
    if cfg.engines is not None:
        return cfg.engines
    found = sorted(p for p in (bundle.root / "engines").glob("*") if p.is_dir())
    if len(found) != 1:
        raise BundleError(
            f"export-triton: {'no' if not found else 'several'} engine folders under "
            f"{bundle.root / 'engines'}; build them with edge build {bundle.root} on the server's "
            "GPU, and pass --engines FOLDER"
        )
    return found[0]


def _checked_engine(bundle: Bundle, folder: Path, part: str, precision: str) -> Path:
    """The part's engine, its sidecar read and checked against the file and the bundle."""
    engine = folder / f"{part}.{precision}.engine"
    if not engine.is_file():
        raise BundleError(
            f"export-triton: no {precision} engine for '{part}' ({engine}); build it with "
            f"edge build {bundle.root} --precision {precision}"
        )
    record = read_sidecar(engine)
    problems = []
    if record["part"] != part or record["precision"] != precision:
        problems.append(f"sidecar says {record['part']}/{record['precision']}")
    if record["onnx_sha256"] != bundle.file_hash(part_file(part)):
        problems.append("built from another ONNX than the bundle's (re-converted since)")
    if record["engine_sha256"] != sha256_file(engine):
        problems.append("the engine file changed after its build")
    if problems:
        raise EngineMismatchError(
            f"export-triton: engine {engine}: " + "; ".join(problems) + f"; rebuild it: edge "
            f"build {bundle.root} --precision {precision}"
        )
    return engine


def export_triton(bundle_path: str | Path, cfg: TritonExportConfig) -> Path:
    """Write the model repository ``cfg.out`` for the bundle; returns its path."""
    bundle = load_bundle(bundle_path)
    out = Path(cfg.out)
    root = bundle.root.resolve()
    if out.resolve() == root or root in out.resolve().parents:
        raise ConfigError(f"export-triton: --out {out} is inside the bundle; choose another folder")
    if out.exists() and not cfg.force:
        raise ConfigError(f"export-triton: {out} exists; pass --force to replace it")
    mbs, fixed = _batching(bundle, cfg)
    kind = cfg.kind
    if kind == "auto":
        kind = {"tensorrt": "gpu", "python": "cpu"}.get(cfg.flavor, "auto")
    heads = [t.head for t in bundle.tasks.values()]
    parts = ["trunk", *heads, *([bundle.merged_heads] if bundle.merged_heads else [])]
    io = {p: _part_io(bundle, p, mbs, fixed) for p in parts}
    sources: dict[str, Path] = {p: bundle.path(p) for p in parts}
    engines: dict[str, Any] = {}
    if cfg.flavor == "tensorrt":
        folder = _engines_dir(bundle, cfg)
        sources = {p: _checked_engine(bundle, folder, p, cfg.precision) for p in parts}
        engines = {p: read_sidecar(e) for p, e in sources.items()}
    names = {p: model_name(p, cfg.prefix) for p in parts}
    v = str(cfg.version)

    with staged_dir(out, replace=cfg.force) as tmp:
        for part in parts:
            ins, outs = io[part]
            spec = ModelSpec(
                name=names[part],
                inputs=ins,
                outputs=outs,
                max_batch_size=mbs,
                platform="tensorrt_plan" if cfg.flavor == "tensorrt" else "",
                backend="" if cfg.flavor == "tensorrt" else cfg.flavor,
                queue_delay_us=cfg.queue_delay_us,
                instances=cfg.instances,
                kind=KINDS[kind],
                parameters={
                    ONNX_SHA256_PARAMETER: bundle.file_hash(part_file(part)),
                    **({"intra_op_threads": str(cfg.threads)} if cfg.flavor == "python" else {}),
                },
            )
            folder = tmp / names[part] / v
            folder.mkdir(parents=True)
            write_text(tmp / names[part] / "config.pbtxt", render(spec))
            target = {"tensorrt": "model.plan", "onnxruntime": "model.onnx"}.get(
                cfg.flavor, "model.onnx"
            )
            shutil.copyfile(sources[part], folder / target)
            if cfg.flavor == "python":
                shutil.copyfile(_MODELS / "part_model.py", folder / "model.py")
        _write_composites(tmp, bundle, cfg, io, names, mbs, fixed)
        write_json(
            tmp / REPO_MANIFEST,
            {
                "format": "etr-edge-triton-repository",
                "bundle": str(root),
                "bundle_manifest_sha256": sha256_file(root / "manifest.json"),
                "flavor": cfg.flavor,
                "version": cfg.version,
                "max_batch_size": mbs,
                "models": dict(
                    names,
                    ensemble=model_name(ENSEMBLE, cfg.prefix),
                    bls=model_name(BLS, cfg.prefix),
                ),
                "engines": {
                    p: {k: r.get(k) for k in ("tensorrt", "device")} for p, r in engines.items()
                },
            },
        )
    return out


def _write_composites(
    tmp: Path,
    bundle: Bundle,
    cfg: TritonExportConfig,
    io: dict[str, tuple[list[Tensor], list[Tensor]]],
    names: dict[str, str],
    mbs: int,
    fixed: int,
) -> None:
    """The ensemble (trunk once, every head on its taps) and the BLS model."""
    image = Tensor(bundle.input.name, bundle.input.dtype, _image_dims(bundle, mbs, fixed))
    tasks = list(bundle.tasks.values())
    outputs = [next(t for t in io[task.head][1] if t.name == task.output) for task in tasks]
    trunk_out = [t.name for t in io["trunk"][1]]
    steps = [Step(names["trunk"], {image.name: image.name}, {n: n for n in trunk_out})]
    steps += [
        Step(names[t.head], {i.name: i.name for i in io[t.head][0]}, {t.output: t.output})
        for t in tasks
    ]
    ensemble = model_name(ENSEMBLE, cfg.prefix)
    spec = ModelSpec(ensemble, [image], outputs, mbs, platform="ensemble", steps=steps)
    (tmp / ensemble / str(cfg.version)).mkdir(parents=True)
    write_text(tmp / ensemble / "config.pbtxt", render(spec))

    bls = model_name(BLS, cfg.prefix)
    spec = ModelSpec(
        bls, [image], outputs, mbs, backend="python", instances=cfg.instances, kind="KIND_CPU"
    )
    folder = tmp / bls / str(cfg.version)
    folder.mkdir(parents=True)
    write_text(tmp / bls / "config.pbtxt", render(spec))
    shutil.copyfile(_MODELS / "bls_model.py", folder / "model.py")
    plan = {
        "input": image.name,
        "parameter": BLS_TASKS_PARAMETER,
        "when_parameter": BLS_WHEN_PARAMETER,
        "labels": {
            t.spec.name: list(t.spec.labels) for t in tasks if t.spec.kind == "classification"
        },
        "trunk": names["trunk"],
        "tasks": {
            t.spec.name: {
                "model": names[t.head],
                "inputs": [i.name for i in io[t.head][0]],
                "output": t.output,
            }
            for t in tasks
        },
    }
    write_json(folder / "bls.json", plan)
