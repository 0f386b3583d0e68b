"""``edge demo``: the whole pipeline on the embedded demo model, on CPU.

checkpoint (edge/assets/demo.pt) -> convert -> calibrate (INT8 caches, Q/DQ, report) ->
demo-line video -> run (trunk once per frame, heads as scheduled) -> per-task summary.
Each step is the same stage function the CLI calls; the demo only chains them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from edge.calib.stage import CalibConfig, calibrate_bundle
from edge.convert.bundle import ConvertConfig, convert_checkpoint
from edge.core.errors import EdgeError
from edge.data.datasets import read_video_labels
from edge.data.demo_line import LineConfig, write_video
from edge.family.info import describe_checkpoint
from edge.runtime.run import RunConfig, run_bundle

DEMO_CHECKPOINT = Path(__file__).parent / "assets" / "demo.pt"


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo-out")
    checkpoint: Path = DEMO_CHECKPOINT
    video_frames: int = 300
    calib_frames: int = 512
    calib_algorithm: str = "minmax"
    """On the demo model minmax keeps every task within 0.5 point of FP32; entropy (TensorRT's
    default for CNNs, and the one DLA needs) within 1 point, with less margin on the mask."""
    force: bool = True


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def score_against_labels(results: Path, video: Path) -> str:
    """Per-task agreement of a run's JSONL with the demo video's label sidecar."""
    import json

    labels = read_video_labels(video) or []
    by_frame = {int(str(x["frame"])): x for x in labels}
    hits = {"defect": [0, 0], "part": [0, 0]}
    angle_err: list[float] = []
    for line in results.read_text().splitlines():
        rec = json.loads(line)
        if "frame" not in rec or rec.get("source_index") not in by_frame:
            continue
        truth, tasks = by_frame[rec["source_index"]], rec["tasks"]
        for task in hits:
            if isinstance(tasks.get(task), dict):
                hits[task][0] += tasks[task]["label"] == truth[task]
                hits[task][1] += 1
        if isinstance(tasks.get("angle"), dict):
            angle_err.append(abs(tasks["angle"]["value"] - truth["angle"]))
    parts = [f"{t} accuracy {100 * h / n:.1f}% ({n} frames)" for t, (h, n) in hits.items() if n]
    if angle_err:
        parts.append(f"angle mean abs error {sum(angle_err) / len(angle_err):.2f} deg")
    return "against the video's labels: " + "; ".join(parts) if parts else "no labels to score"


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage that exists into ``cfg.out``; return the bundle path."""

    if not Path(cfg.checkpoint).is_file():
        raise EdgeError(
            f"demo checkpoint {cfg.checkpoint} is missing; reinstall etr-edge or "
            "train one with: edge train --out model.pt",
            stage="demo",
        )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe_checkpoint(cfg.checkpoint))
    bundle = out / "bundle"
    _say(f"convert {cfg.checkpoint} -> {bundle}")
    convert_checkpoint(cfg.checkpoint, ConvertConfig(out=bundle, force=cfg.force))
    print((bundle / "fold_report.md").read_text().rstrip())

    _say(
        f"calibrate {bundle} on {cfg.calib_frames} demo-line frames ({cfg.calib_algorithm}, "
        "caches for TensorRT 10.3)"
    )
    calibrate_bundle(
        bundle,
        CalibConfig(data="synthetic:", frames=cfg.calib_frames, algorithm=cfg.calib_algorithm),
    )
    print((bundle / "calib" / "report.md").read_text().rstrip())

    video = out / "line.mp4"
    _say(
        f"write {cfg.video_frames} frames of the demo line (seed 1, unseen in training) -> {video}"
    )
    write_video(video, cfg.video_frames, LineConfig(seed=1))
    results = out / "results.jsonl"
    _say(f"run {bundle} on {video}: trunk once per frame, mask only when defect != ok")
    summary = run_bundle(
        bundle,
        RunConfig(
            source=str(video),
            when=("mask: defect != ok",),
            out=results,
            video=out / "annotated.mp4",
        ),
    )
    print(summary.to_text())
    print(score_against_labels(results, video))
    _say(f"results: {results}, annotated video: {out / 'annotated.mp4'}")
    return bundle
