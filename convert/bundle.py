"""``edge convert CKPT --out BUNDLE``: checkpoint -> bundle (fold, export, simplify, verify).

The bundle is assembled in a temporary folder beside ``out`` and renamed into place only when
every graph has passed the checker and the numerical verification, so a failed conversion leaves
nothing behind (and an existing bundle is only replaced with ``force``).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edge import __version__
from edge.convert.export import ExportOptions, export_parts, output_name, tap_names
from edge.convert.fold import fold_model
from edge.convert.simplify import simplify_and_check
from edge.convert.verify import check_parts, demo_frames, enforce_tolerance
from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import BundleError, ExportError
from edge.core.files import clean_stale_temporaries, staged_dir
from edge.core.manifest import (
    MANIFEST,
    Manifest,
    PartEntry,
    Tap,
    TaskEntry,
    file_entries,
    read_manifest,
    write_manifest,
)
from edge.core.preprocess import InputSpec
from edge.family.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ConvertConfig:
    """Options of ``edge convert`` (one flag each)."""

    out: Path
    input_size: tuple[int, int] | None = None
    """(height, width); default: the size the model was trained at."""
    opset: int = 17
    batch: int = 1
    dynamic_batch: bool = False
    max_batch: int = 8
    in_graph_preprocessing: bool = True
    tolerance: float = 1e-4
    verify_frames: int = 8
    fold_form: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 21:
            raise ExportError(f"--opset {self.opset}: supported opsets are 13..21")
        if self.batch < 1 or (self.dynamic_batch and self.max_batch < self.batch):
            raise ExportError("--batch must be >= 1 and <= --max-batch")
        if self.tolerance <= 0 or self.verify_frames < 1:
            raise ExportError("--tolerance must be > 0 and --verify-frames >= 1")


def decode_spec(task: TaskSpec) -> dict[str, Any]:
    """How the runtime turns the task's raw output into a result."""
    if task.kind == "classification":
        return {"type": "softmax_argmax", "labels": list(task.labels), "axis": 1}
    if task.kind == "multilabel":
        return {
            "type": "sigmoid_threshold",
            "labels": list(task.labels),
            "threshold": task.threshold,
        }
    if task.kind == "regression":
        return {
            "type": "affine",
            "names": list(task.labels),
            "scale": task.scale,
            "offset": task.offset,
            "unit": task.unit,
        }
    return {"type": "argmax_mask", "labels": list(task.labels), "axis": 1}


def _versions() -> dict[str, str]:
    import onnxruntime
    import onnxsim
    import torch

    return {
        "etr-edge": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxsim": str(getattr(onnxsim, "__version__", "?")),
        "onnxruntime": onnxruntime.__version__,
    }


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ExportError(
            f"{out} is a folder but not a bundle (no {MANIFEST}); --force replaces only a bundle "
            "(or an empty folder): "
            "choose another --out (or move that folder away yourself)"
        )
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise ExportError(
            f"--out {out} is the current folder (or holds it) and cannot be replaced; "
            "give a bundle folder inside it, e.g. --out bundle"
        )
    if out.exists() and os.path.ismount(resolved):
        raise ExportError(f"--out {out} is a mount point and cannot be replaced; use a subfolder")
    parent = resolved.parent
    if not parent.is_dir():
        raise ExportError(f"{parent}: the folder for --out does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{parent}: not writable; choose another --out")


def convert_checkpoint(
    checkpoint: str | Path, cfg: ConvertConfig, *, log: Callable[[str], None] | None = None
) -> Path:
    """Convert ``checkpoint`` into a bundle folder at ``cfg.out``; return its path.

    With ``force`` an existing *bundle* is replaced: the files convert writes are new, every
    other entry of the old folder (engines/, the user's own files) is carried over; calib/ and
    int8/ are kept when the graphs are unchanged and dropped otherwise. ``log`` hears what was
    kept, dropped and cleaned up.
    """
    say = log or (lambda _msg: None)
    out = Path(cfg.out)
    _check_out(out, cfg.force)
    for stale in clean_stale_temporaries(out.resolve().parent, (out.resolve().name,)):
        say(f"removed {stale}, left by an edge process that no longer runs")
    ckpt = load_checkpoint(checkpoint)
    config: ModelConfig = ckpt.config
    if cfg.input_size is not None and tuple(cfg.input_size) != tuple(config.input_size):
        config = ModelConfig.from_dict({**config.to_dict(), "input_size": list(cfg.input_size)})
        ckpt.model.config = config
    deploy, report = fold_model(ckpt.model, cfg.fold_form)
    opts = ExportOptions(
        opset=cfg.opset,
        batch=cfg.batch,
        dynamic_batch=cfg.dynamic_batch,
        in_graph=cfg.in_graph_preprocessing,
    )
    try:
        raw = export_parts(deploy, opts)
    except Exception as e:
        raise ExportError(f"{checkpoint}: torch.onnx.export failed: {type(e).__name__}: {e}") from e
    protos: dict[str, onnx.ModelProto] = {}
    simplified: dict[str, bool] = {}
    for part, data in raw.items():
        protos[part], simplified[part] = simplify_and_check(data, part)
    frames = demo_frames(config.input_size, cfg.verify_frames)
    vbatch = cfg.batch if not cfg.dynamic_batch else min(cfg.max_batch, 2)
    n = (len(frames) // vbatch) * vbatch or vbatch
    frames = frames[:n] if len(frames) >= vbatch else frames.repeat(vbatch, axis=0)[:vbatch]
    checks = check_parts(protos, ckpt.model, frames, cfg.in_graph_preprocessing, vbatch)
    enforce_tolerance(checks, cfg.tolerance)

    spec = InputSpec(
        height=config.input_size[0],
        width=config.input_size[1],
        channels=config.in_channels,
        mean=config.mean,
        std=config.std,
        in_graph=cfg.in_graph_preprocessing,
    )
    h, w = config.input_size
    taps = []
    for k, name in enumerate(tap_names(config)):
        stage = 0 if k == 0 else config.layers()[k - 1][0]
        ch = config.shared_channels(stage)
        n = -1 if cfg.dynamic_batch else cfg.batch
        taps.append(Tap(name, k, stage, ch, (n, ch, h >> stage, w >> stage)))
    manifest = Manifest(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        model={
            "name": config.name,
            "config": config.to_dict(),
            "checkpoint": {"file": Path(checkpoint).name, "sha256": ckpt.sha256},
            "metrics": ckpt.meta.get("metrics", {}),
        },
        input=spec,
        batch=(
            {"dynamic": True, "min": 1, "opt": cfg.batch, "max": cfg.max_batch}
            if cfg.dynamic_batch
            else {"dynamic": False, "size": cfg.batch}
        ),
        opset=cfg.opset,
        taps=tuple(taps),
        tasks={
            t.name: TaskEntry(t.kind, t.labels, output_name(t), f"heads/{t.name}", decode_spec(t))
            for t in config.tasks
        },
        parts={
            p: PartEntry(
                f"{p}.onnx",
                tuple(i.name for i in protos[p].graph.input),
                tuple(o.name for o in protos[p].graph.output),
                simplified[p],
            )
            for p in protos
        },
        merged_heads="heads_all" if "heads_all" in protos else None,
        fold=report.to_dict(),
        verification={
            "reference": "PyTorch, training form (unfolded), eval mode",
            "frames": len(frames),
            "source": "demo line, held-out indices",
            "tolerance": cfg.tolerance,
            "max_abs_error": {
                p: {c.output: c.max_abs_error for c in checks if c.part == p} for p in protos
            },
        },
        versions=_versions(),
    )
    _write_bundle(out, protos, manifest, report.to_markdown(), cfg.force, say)
    return out


def _write_bundle(
    out: Path,
    protos: dict[str, onnx.ModelProto],
    manifest: Manifest,
    report_md: str,
    force: bool,
    say: Callable[[str], None],
) -> None:
    try:
        with staged_dir(out, replace=force) as tmp:
            for part, proto in protos.items():
                path = tmp / f"{part}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                onnx.save(proto, str(path))
            (tmp / "fold_report.md").write_text(report_md + "\n")
            manifest = manifest.with_files(file_entries(tmp))
            if force and out.is_dir():
                manifest = _carry_over(out, tmp, manifest, say)
            write_manifest(tmp, manifest)
    except FileExistsError as e:
        raise ExportError(f"{out} appeared during conversion; pass --force to replace it") from e
    except OSError as e:
        raise ExportError(
            f"cannot write the bundle {out}: {e}; free space or choose a writable --out. "
            "Nothing was replaced"
        ) from e


DERIVED = ("calib", "int8")
"""Folders derived from the graphs by edge calibrate: valid only while the graphs are unchanged."""


def _carry_over(old: Path, new: Path, manifest: Manifest, say: Callable[[str], None]) -> Manifest:
    """Copy (hard-link where possible) the old bundle's other entries into the new one; the new
    manifest keeps the old calibration section when the graphs are unchanged."""
    try:
        old_m: Manifest | None = read_manifest(old)
    except BundleError:
        old_m = None
    old_files = old_m.files if old_m is not None else {}
    same = all(
        rel in old_files and old_files[rel].sha256 == info.sha256
        for rel, info in manifest.files.items()
        if rel.endswith(".onnx")
    )
    written = {rel.split("/", 1)[0] for rel in manifest.files} | {MANIFEST}
    for entry in sorted(old.iterdir()):
        if entry.name in written:
            continue
        if entry.name in DERIVED and not same:
            say(f"dropped {entry.name}/: made from the replaced graphs; re-run edge calibrate")
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(new / entry.name))
        say(f"kept {entry.name}{'/' if entry.is_dir() else ''} from the replaced bundle")
    if same and old_m is not None and old_m.calibration is not None:
        return manifest.with_calibration(old_m.calibration)
    return manifest


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst
