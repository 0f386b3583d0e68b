"""``edge info CKPT``: a checkpoint's config, tasks, parameter counts and stored metrics."""

from __future__ import annotations

import json
from pathlib import Path

from edge.family.checkpoint import load_checkpoint
from edge.family.model import count_parameters


def describe_checkpoint(path: str | Path, *, as_json: bool = False) -> str:
    ckpt = load_checkpoint(path)
    cfg = ckpt.config
    counts = count_parameters(ckpt.model)
    if as_json:
        return json.dumps(
            {
                "config": cfg.to_dict(),
                "parameters": counts,
                "metrics": ckpt.meta.get("metrics", {}),
                "sha256": ckpt.sha256,
            },
            indent=2,
            sort_keys=True,
        )
    per_task = counts["per_task"]
    assert isinstance(per_task, dict)
    lines = [
        f"checkpoint  {ckpt.path}  (sha256 {ckpt.sha256[:16]}…)",
        f"model       {cfg.name}: {cfg.num_stages} stages, widths {list(cfg.widths)}, "
        f"depths {list(cfg.depths)}, γ = {cfg.gamma}",
        f"primitives  {', '.join(cfg.primitives)} ({'depthwise' if cfg.depthwise else 'full'} "
        f"convs, lbc density {cfg.lbc_density}, seed {cfg.seed})",
        f"input       {cfg.input_size[0]}x{cfg.input_size[1]} BGR, mean {list(cfg.mean)}, "
        f"std {list(cfg.std)}",
        "tasks",
    ]
    for t in cfg.tasks:
        extra = f", scale {t.scale} {t.unit}".rstrip() if t.kind == "regression" else ""
        lines.append(f"  {t.name:<10} {t.kind:<15} {', '.join(t.labels)}{extra}")
    lines += [
        "parameters",
        f"  learnable shared   {counts['shared']:>9,}",
        *(f"  learnable {n:<9}{c:>9,}" for n, c in per_task.items()),
        f"  learnable total    {counts['learnable']:>9,}",
        f"  fixed primitives   {counts['fixed']:>9,}  (buffers, not parameters)",
    ]
    metrics = ckpt.meta.get("metrics") or {}
    if metrics:
        lines.append("held-out metrics")
        for task, m in metrics.items():
            lines.append(f"  {task:<10} " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    if ckpt.meta.get("command"):
        lines.append(f"trained by  {ckpt.meta['command']}")
    return "\n".join(lines)
