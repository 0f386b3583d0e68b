"""``edge demo``: the whole pipeline on the embedded demo model, on CPU.

checkpoint (edge/assets/demo.pt) -> convert -> calibrate (INT8 caches, Q/DQ, report) ->
demo-line video -> run (trunk once per frame, heads as scheduled) -> per-task summary.
Each step is the same stage function the CLI calls; the demo only chains them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

DEMO_CHECKPOINT = Path(__file__).parent / "assets" / "demo.pt"


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo-out")
    checkpoint: Path = DEMO_CHECKPOINT
    video_frames: int = 300
    calib_frames: int = 256
    force: bool = True


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage that exists into ``cfg.out``; return the bundle path."""
    from edge.convert.bundle import ConvertConfig, convert_checkpoint
    from edge.info import describe_checkpoint

    if not Path(cfg.checkpoint).is_file():
        raise EdgeError(f"demo checkpoint {cfg.checkpoint} is missing; reinstall etr-edge or "
                        "train one with: edge train --out model.pt", stage="demo")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe_checkpoint(cfg.checkpoint))
    bundle = out / "bundle"
    _say(f"convert {cfg.checkpoint} -> {bundle}")
    convert_checkpoint(cfg.checkpoint, ConvertConfig(out=bundle, force=cfg.force))
    print((bundle / "fold_report.md").read_text().rstrip())
    return bundle
