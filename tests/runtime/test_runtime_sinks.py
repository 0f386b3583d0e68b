"""Sinks: JSONL records and events, the summary tally, the sink worker, annotation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.runtime.decode import Decoder
from edge.runtime.pipeline import NOT_RUN, FrameResult
from edge.runtime.sinks import (
    JsonlSink,
    RunSummary,
    SinkWorker,
    TaskTally,
    WallClock,
    annotate,
)

DEFECT = Decoder("defect", {"type": "softmax_argmax", "labels": ["ok", "scratch"]})
POSE = Decoder("pose", {"type": "affine", "names": ["x", "y"], "scale": 1.0, "unit": "mm"})
MASK = Decoder("mask", {"type": "argmax_mask", "labels": ["background", "defect"]})


def frame(i: int, defect: int, pose: tuple[float, float] | None, mask_px: int = 0) -> FrameResult:
    logits = np.zeros(2, np.float32)
    logits[defect] = 3.0
    raw_mask = np.zeros((2, 8, 8), np.float32)
    raw_mask[1].flat[:mask_px] = 1.0
    return FrameResult(
        frame_id=i,
        index=i,
        t_capture_ns=1_000_000 * i,
        t_result_ns=1_000_000 * i + 2_500_000,
        results={
            "defect": DEFECT.decode(logits),
            "pose": None if pose is None else POSE.decode(np.array(pose, np.float32)),
            "mask": MASK.decode(raw_mask),
        },
        timings_ns={"trunk": 1_234_567, "head:defect": 250_000},
        image=np.full((240, 320, 3), 40, np.uint8),
    )


def test_jsonl_lines_hold_every_task_or_not_run_and_events(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    sink = JsonlSink(path)
    sink.write(frame(0, 1, (1.0, 2.0)))
    sink.event({"event": "overrun", "frame_ids": [1, 2]})
    sink.write(frame(3, 0, None))
    sink.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x.get("frame", x.get("event")) for x in lines] == [0, "overrun", 3]
    first, _, last = lines
    assert first["tasks"]["defect"]["label"] == "scratch"
    assert first["tasks"]["pose"] == {"values": {"x": 1.0, "y": 2.0}, "unit": "mm"}
    assert last["tasks"]["pose"] == NOT_RUN
    assert first["timings_ms"] == {"trunk": 1.2346, "head:defect": 0.25}
    assert first["latency_ms"] == 2.5 and first["t_result"].endswith("Z")
    assert "mask" not in first["tasks"]["mask"]  # the array stays out of the line
    with pytest.raises(Exception, match="closed"):
        sink.write(frame(4, 0, None))


def test_wall_clock_maps_monotonic_to_utc() -> None:
    clock = WallClock()
    iso = clock.iso(time.monotonic_ns())
    assert iso.endswith("Z") and iso[:4].isdigit() and "T" in iso


def test_tally_counts_labels_values_and_masks() -> None:
    tally = TaskTally(["defect", "pose", "mask"])
    for i, (d, pose, px) in enumerate([(1, (1.0, -2.0), 0), (0, None, 4), (1, (3.0, 2.0), 8)]):
        tally.add(frame(i, d, pose, px))
    r = tally.result()
    assert r["defect"]["runs"] == 3 and r["defect"]["labels"] == {"scratch": 2, "ok": 1}
    assert r["pose"]["runs"] == 2 and r["pose"]["unit"] == "mm"
    assert r["pose"]["values"] == {
        "x": {"mean": 2.0, "min": 1.0, "max": 3.0},
        "y": {"mean": 0.0, "min": -2.0, "max": 2.0},
    }
    assert r["mask"]["frames_with_pixels"] == 2
    assert r["mask"]["mean_fraction"] == pytest.approx((4 + 8) / 64 / 3, abs=1e-6)
    summary = RunSummary(
        frames=3,
        duration_s=1.0,
        fps=3.0,
        stopped_by="end",
        tasks=r,
        capture={"dropped": 0, "overruns": 1, "gaps": []},
        stages={"trunk": {"count": 3, "mean_ms": 1.0, "p50_ms": 1.0, "p99_ms": 1.2}},
    )
    text = summary.to_text()
    assert "3 frames" in text and "overruns 1" in text and '"scratch": 2' in text
    assert json.loads(json.dumps(summary.to_dict()))["tasks"]["defect"]["runs"] == 3


def test_sink_worker_keeps_order_and_reraises() -> None:
    seen: list[int] = []
    threads: set[str] = set()

    def record(i: int) -> None:
        threads.add(threading.current_thread().name)
        seen.append(i)

    w = SinkWorker(maxsize=2)
    for i in range(20):
        w.submit(record, i)
    w.close()
    assert seen == list(range(20)) and threads == {"edge-sinks"}

    def boom(i: int) -> None:
        if i == 2:
            raise OSError("disk full")
        seen.append(100 + i)

    w2 = SinkWorker()
    for i in range(3):
        w2.submit(boom, i)
    with pytest.raises(OSError, match="disk full"):
        w2.close()
    assert seen[-2:] == [100, 101]


def test_annotate_tints_the_mask_and_writes_text() -> None:
    r = frame(0, 1, None, mask_px=16)  # the top two rows of the 8x8 mask: y < 60 of 240
    assert r.image is not None
    out = annotate(r.image, r)
    assert out.shape == (240, 320, 3) and (r.image == 40).all()  # the frame is not changed
    assert (out[160:, 220:] == 40).all()  # no text, no mask there
    band = out[5:50, 250:].astype(int)  # masked, right of the text
    assert band[..., 2].mean() > 100 and band[..., 0].mean() < 40  # red tint
    assert (out[:60, :150] > 220).all(axis=2).sum() > 100  # white text, top left


def test_sink_worker_is_idle_only_when_every_call_has_returned() -> None:
    gate, started = threading.Event(), threading.Event()

    def held() -> None:
        started.set()
        assert gate.wait(10)

    w = SinkWorker()
    assert w.idle
    w.submit(held)
    assert started.wait(10) and not w.idle  # running
    w.submit(lambda: None)
    gate.set()
    deadline = time.monotonic() + 10
    while not w.idle and time.monotonic() < deadline:
        time.sleep(0.001)
    assert w.idle

    def boom() -> None:
        raise OSError("disk full")

    w.submit(boom)
    with pytest.raises(OSError, match="disk full"):
        w.close()
    assert not w.idle  # a failed call: the next submit raises, nothing is written inline
