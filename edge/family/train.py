"""``edge train``: train an ETR-NLP model on CPU, on the demo line or a labelled image folder.

Stage function: ``train(TrainConfig, ModelConfig) -> Path`` (the checkpoint). Frames go through
the runtime's own preprocessing (``edge.core.preprocess``) and the in-graph ``Preprocess``
module, so training sees exactly what deployment sees.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edge import __version__
from edge.core.config import ModelConfig, TaskSpec
from edge.core.errors import ConfigError, DatasetError
from edge.core.preprocess import resize_frame, resize_mask
from edge.data.datasets import LabelledFolder
from edge.data.demo_line import HOLDOUT_OFFSET, LineConfig, render_frame
from edge.data.metrics import TaskScorer
from edge.family.checkpoint import save_checkpoint
from edge.family.model import ETRNLP, Preprocess


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``edge train`` (one flag each)."""

    out: Path = Path("model.pt")
    data: str = "synthetic"
    """``synthetic`` (the demo line) or a folder with labels.jsonl (edge.data.datasets)."""
    train_frames: int = 4000
    val_frames: int = 500
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    line_seed: int = 0
    threads: int = 0
    """torch intra-op threads; 0 = torch's default."""
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("train_frames", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train: --{name.replace('_', '-')} must be >= 1")
        if self.val_frames < 0 or self.lr <= 0:
            raise ConfigError("train: --val-frames must be >= 0 and --lr > 0")


@dataclass
class ArrayDataset:
    """Frames at model size (N, H, W, 3) uint8 and one target array per task."""

    images: np.ndarray
    targets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def encode_target(spec: TaskSpec, value: Any, size: tuple[int, int], where: str) -> np.ndarray:
    """One label (class name, list of names, number, or mask array) -> the task's target array."""
    try:
        if spec.kind == "classification":
            idx = spec.labels.index(value) if isinstance(value, str) else int(value)
            if not 0 <= idx < spec.num_outputs:
                raise ValueError(idx)
            return np.asarray(idx, dtype=np.int64)
        if spec.kind == "multilabel":
            on = set(value)
            unknown = on - set(spec.labels)
            if unknown:
                raise ValueError(sorted(unknown))
            return np.asarray([lab in on for lab in spec.labels], dtype=np.float32)
        if spec.kind == "regression":
            v = np.atleast_1d(np.asarray(value, dtype=np.float32))
            if v.shape != (spec.num_outputs,):
                raise ValueError(v.shape)
            return (v - spec.offset) / spec.scale
        mask = np.asarray(value)
        if mask.ndim == 3:
            mask = mask[..., 0]
        mask = resize_mask(mask.astype(np.uint8), *size)
        if spec.num_outputs == 2:
            mask = (mask > 0).astype(np.uint8)
        if mask.max(initial=0) >= spec.num_outputs:
            raise ValueError(f"class id {mask.max()}")
        return mask.astype(np.int64)
    except (ValueError, TypeError) as e:
        raise DatasetError(
            f"{where}: label {value!r} for task '{spec.name}' ({spec.kind}) is not valid ({e}); "
            f"expected one of {list(spec.labels)}"
            if spec.kind != "segmentation"
            else f"{where}: mask for task '{spec.name}' is not valid ({e})"
        ) from e


def build_dataset(
    samples: Iterable[tuple[np.ndarray, dict[str, Any], str]],
    config: ModelConfig,
    count: int,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> ArrayDataset:
    """(image, labels, where) samples -> an ArrayDataset at the model's input size."""
    h, w = config.input_size
    images = np.empty((count, h, w, 3), dtype=np.uint8)
    targets: dict[str, list[np.ndarray]] = {t.name: [] for t in config.tasks}
    n = 0
    it = samples if progress is None else progress(samples)
    for n, (image, labels, where) in enumerate(it):
        if n >= count:
            break
        images[n] = resize_frame(image, h, w)
        for t in config.tasks:
            if t.label_key not in labels:
                raise DatasetError(f"{where}: no label '{t.label_key}' for task '{t.name}'")
            targets[t.name].append(encode_target(t, labels[t.label_key], (h, w), where))
    got = len(next(iter(targets.values())))
    if got < count:
        raise DatasetError(f"dataset has {got} samples, {count} were asked for; ask for fewer")
    return ArrayDataset(images, {k: np.stack(v) for k, v in targets.items()})


def demo_line_samples(start: int, seed: int) -> Iterable[tuple[np.ndarray, dict[str, Any], str]]:

    cfg = LineConfig(seed=seed)
    i = start
    while True:
        f = render_frame(i, cfg)
        yield f.image, {**f.labels(), "mask": f.mask}, f"synthetic frame {i}"
        i += 1


def folder_samples(
    folder: str, start: int, stop: int
) -> Iterable[tuple[np.ndarray, dict[str, Any], str]]:

    ds = LabelledFolder(folder)
    for i in range(start, min(stop, len(ds))):
        s = ds[i]
        yield s.image, s.labels, f"{folder} sample {i}"


def load_datasets(
    cfg: TrainConfig, config: ModelConfig, progress: Any = None
) -> tuple[ArrayDataset, ArrayDataset | None]:
    if cfg.data == "synthetic":
        train = build_dataset(
            demo_line_samples(0, cfg.line_seed), config, cfg.train_frames, progress
        )
        val = (
            build_dataset(demo_line_samples(HOLDOUT_OFFSET, cfg.line_seed), config, cfg.val_frames)
            if cfg.val_frames
            else None
        )
        return train, val
    if not Path(cfg.data).is_dir():
        raise DatasetError(f"--data {cfg.data}: expected 'synthetic' or a folder with labels.jsonl")
    n = cfg.train_frames + cfg.val_frames
    both = build_dataset(folder_samples(cfg.data, 0, n), config, n, progress)
    cut = cfg.train_frames
    train = ArrayDataset(both.images[:cut], {k: v[:cut] for k, v in both.targets.items()})
    val = ArrayDataset(both.images[cut:], {k: v[cut:] for k, v in both.targets.items()})
    return train, (val if cfg.val_frames else None)


def task_loss(spec: TaskSpec, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if spec.kind == "classification":
        return F.cross_entropy(out, target)
    if spec.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(out, target)
    if spec.kind == "regression":
        return F.smooth_l1_loss(out, target, beta=0.1)
    # segmentation: logits at stride 2, upsampled to the target; cross-entropy plus soft dice on
    # the foreground classes (defects are small)
    if out.shape[-2:] != target.shape[-2:]:
        out = F.interpolate(out, size=target.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(out, target)
    prob = out.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, spec.num_outputs).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1)
    return ce + dice.mean()


def evaluate(
    model: ETRNLP, pre: Preprocess, data: ArrayDataset, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Per-task metrics of ``model`` on ``data`` (eval mode, no gradients)."""
    model.eval()
    scorers = {t.name: TaskScorer(t) for t in model.config.tasks}
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            x = pre(torch.from_numpy(data.images[i : i + batch_size]))
            out = model(x)
            for name, s in scorers.items():
                s.update(out[name].numpy(), data.targets[name][i : i + batch_size])
    return {name: s.result() for name, s in scorers.items()}


def _bar(total: int, enabled: bool, desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the train extra; fall back to no bar
        return None
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def train(cfg: TrainConfig, config: ModelConfig, *, command: str = "") -> Path:
    """Train ``config`` per ``cfg``; write the checkpoint to ``cfg.out`` and return its path."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.monotonic()
    bar = _bar(cfg.train_frames, cfg.progress, "rendering frames")

    def progress(it: Iterable[Any]) -> Iterable[Any]:
        for x in it:
            if bar is not None:
                bar.update(1)
            yield x

    train_set, val_set = load_datasets(cfg, config, progress)
    if bar is not None:
        bar.close()
    model = ETRNLP(config)
    pre = Preprocess(config.mean, config.std)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    targets = {k: torch.from_numpy(v) for k, v in train_set.targets.items()}
    images = torch.from_numpy(train_set.images)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(train_set), generator=gen)
        bar = _bar(steps_per_epoch, cfg.progress, f"epoch {epoch}/{cfg.epochs}")
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            out = model(pre(images[idx]))
            loss = sum(task_loss(t, out[t.name], targets[t.name][idx]) for t in config.tasks)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
            total += float(loss.detach())  # type: ignore[union-attr]
            if bar is not None:
                bar.set_postfix(loss=f"{total / (b + 1):.3f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        entry: dict[str, Any] = {"epoch": epoch, "loss": total / steps_per_epoch}
        if val_set is not None:
            entry["val"] = evaluate(model, pre, val_set)
        history.append(entry)
        print(_format_epoch(entry), file=sys.stderr)
    model.eval()
    meta = {
        "command": command,
        "train": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "metrics": history[-1].get("val", {}),
        "held_out": (
            {
                "source": "demo line",
                "indices": [HOLDOUT_OFFSET, HOLDOUT_OFFSET + cfg.val_frames],
                "line_seed": cfg.line_seed,
            }
            if cfg.data == "synthetic"
            else {"source": cfg.data, "samples": cfg.val_frames}
        ),
        "history": history,
        "seconds": round(time.monotonic() - t0, 1),
        "versions": {"etr-edge": __version__, "torch": torch.__version__},
    }
    return save_checkpoint(cfg.out, model, meta)


def _format_epoch(entry: dict[str, Any]) -> str:
    parts = [f"epoch {entry['epoch']}: loss {entry['loss']:.4f}"]
    for task, m in entry.get("val", {}).items():
        parts.append(task + " " + " ".join(f"{k}={v:.2f}" for k, v in m.items()))
    return " | ".join(parts)
