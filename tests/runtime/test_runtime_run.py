"""run_bundle end to end: demo video vs fused.onnx, task subsets, overruns/drops in the JSONL,
SIGTERM, outputs, and that the runtime imports neither torch nor onnx."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.core.errors import ConfigError, ScheduleError
from edge.core.manifest import load_bundle
from edge.core.preprocess import frames_to_input
from edge.data.demo_line import write_video
from edge.runtime.backends.ort import OnnxRuntimeBackend
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.pipeline import FrameResult
from edge.runtime.replay import ReplaySource
from edge.runtime.run import RunConfig, run_bundle

REPO = Path(__file__).resolve().parents[2]


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    text = path.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0]["event"] == "run"  # each run starts with its header line
    events = [r for r in records[1:] if "event" in r]
    return [r for r in records if "event" not in r], events


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "line.mp4", 16)


def test_run_on_demo_video_matches_fused_frame_by_frame(
    tiny_bundle: Path, demo_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    s = run_bundle(tiny_bundle, RunConfig(source=str(demo_video), out=out, warmup=1))
    frames, events = read_jsonl(out)
    assert s.frames == len(frames) == 16 and s.stopped_by == "end" and events == []
    assert [f["frame"] for f in frames] == list(range(16))
    bundle = load_bundle(tiny_bundle)
    decoders = decoders_from_manifest(bundle.manifest)
    cap = cv2.VideoCapture(str(demo_video))
    with OnnxRuntimeBackend().load(tiny_bundle / "fused.onnx") as fused:
        for rec in frames:
            ok, img = cap.read()
            assert ok
            raw = fused.run({"image": frames_to_input([img], bundle.input)})
            for task, dec in decoders.items():
                want = dec.decode(raw[bundle.tasks[task].output][0]).to_json()
                got = rec["tasks"][task]
                assert set(got) == set(want)
                for key, value in want.items():
                    if isinstance(value, (str, list)):
                        assert got[key] == value, (rec["frame"], task, key)
                    else:
                        assert got[key] == pytest.approx(value, abs=1e-4), (task, key)
            assert rec["t_capture_ns"] <= rec["t_result_ns"]
            assert rec["t_result"].endswith("Z") and rec["latency_ms"] >= 0
            assert {"capture", "queue_wait", "preprocess", "trunk", "heads", "sink"} <= set(
                rec["timings_ms"]
            )
    cap.release()
    summary = json.loads(out.with_name("results.summary.json").read_text())
    assert summary["frames"] == 16 and summary["tasks"]["defect"]["runs"] == 16
    assert sum(summary["tasks"]["defect"]["labels"].values()) == 16
    assert summary["capture"]["captured"] == summary["capture"]["delivered"] == 16
    assert summary["stages"]["trunk"]["count"] == 16
    assert {"p50_ms", "p99_ms", "mean_ms"} <= set(summary["stages"]["e2e"])


def test_tasks_subset_runs_trunk_and_that_head_only(
    tiny_bundle: Path, demo_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "defect.jsonl"
    s = run_bundle(
        tiny_bundle,
        RunConfig(source=str(demo_video), tasks=("defect",), out=out, frames=5, warmup=0),
    )
    frames, _ = read_jsonl(out)
    assert len(frames) == 5 and s.stopped_by == "frames"
    for rec in frames:
        heads = {k for k in rec["timings_ms"] if k.startswith("head:")}
        assert heads == {"head:defect"} and "trunk" in rec["timings_ms"]
        assert rec["tasks"]["mask"] == rec["tasks"]["angle"] == "not run"
        assert "label" in rec["tasks"]["defect"]
    assert s.tasks["mask"]["runs"] == 0 and s.run["schedule"]["mask"] == "off"


def test_signal_handlers_are_restored(tiny_bundle: Path, demo_video: Path) -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        run_bundle(tiny_bundle, RunConfig(source=str(demo_video), frames=2, warmup=0))
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_schedule_file_and_bad_flags(tiny_bundle: Path, demo_video: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("angle: every 4\nattrs: off\n")
    s = run_bundle(tiny_bundle, RunConfig(source=str(demo_video), schedule=rules, warmup=0))
    assert s.tasks["angle"]["runs"] == 4 and s.tasks["attrs"]["runs"] == 0
    assert s.tasks["defect"]["runs"] == 16
    with pytest.raises(ScheduleError, match="okay"):
        run_bundle(tiny_bundle, RunConfig(source=str(demo_video), when=("mask: defect != okay",)))
    bad_flags: list[dict[str, Any]] = [
        dict(frames=0),
        dict(duration_s=0.0),
        dict(policy="newest"),
        dict(warmup=-1),
        dict(keep_warm=True, adaptive=False),
    ]
    for bad in bad_flags:
        with pytest.raises(ConfigError):
            RunConfig(source="synthetic:", **bad)  # type: ignore[arg-type]


class SlowSink:
    """A consumer slower than the camera (the behaviour under test is the run's accounting)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.frames, self.events = delay_s, 0, 0

    def write(self, result: FrameResult) -> None:
        self.frames += 1
        time.sleep(self.delay_s)

    def event(self, event: Any) -> None:
        self.events += 1

    def close(self) -> None:
        pass


def test_overruns_under_a_slow_consumer_are_in_jsonl_and_summary(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fifo.jsonl"
    slow = SlowSink(0.02)
    cfg = RunConfig(
        source="synthetic:?live=1&width=160&height=120",
        policy="fifo:1",
        frames=12,
        out=out,
        warmup=0,
        overlap=False,
    )
    s = run_bundle(tiny_bundle, cfg, sinks=[slow])
    frames, events = read_jsonl(out)
    overrun_ids = [i for e in events if e["event"] == "overrun" for i in e["frame_ids"]]
    c = s.capture
    assert c["overruns"] > 0 and len(overrun_ids) == c["overruns"]
    assert sorted(overrun_ids) == sorted(c["overrun_ids"])
    assert not set(overrun_ids) & {f["frame"] for f in frames}
    assert c["captured"] == c["delivered"] + c["overruns"] + c["queued"] + c["discarded"]
    assert slow.frames == len(frames) == 12 and slow.events == len(events)
    summary = json.loads(out.with_name("fifo.summary.json").read_text())
    assert summary["capture"]["overruns"] == c["overruns"] and summary["run"]["policy"] == "fifo:1"


def test_drops_under_latest_policy_are_recorded(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "latest.jsonl"
    s = run_bundle(
        tiny_bundle,
        RunConfig(  # the sink thread's queue fills, then capture drops
            source="synthetic:?live=1&width=160&height=120", frames=20, out=out, warmup=0
        ),
        sinks=[SlowSink(0.02)],
    )
    frames, events = read_jsonl(out)
    assert s.run["policy"] == "latest" and s.capture["dropped"] > 0
    dropped = {i for e in events if e["event"] == "drop" for i in e["frame_ids"]}
    ids = [f["frame"] for f in frames]
    assert set(range(ids[0], ids[-1] + 1)) == set(ids) | dropped
    assert dropped <= set(s.capture["dropped_ids"])


def test_annotated_video_and_frames(tiny_bundle: Path, demo_video: Path, tmp_path: Path) -> None:
    video = tmp_path / "annotated.mp4"
    run_bundle(tiny_bundle, RunConfig(source=str(demo_video), frames=6, video=video, warmup=0))
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6 and not list(tmp_path.glob(".*tmp*"))
    folder = tmp_path / "pngs"
    run_bundle(tiny_bundle, RunConfig(source=str(demo_video), frames=3, video=folder, warmup=0))
    pngs = sorted(p.name for p in folder.iterdir())
    assert pngs == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    img = cv2.imread(str(folder / pngs[0]))
    raw = cv2.VideoCapture(str(demo_video)).read()[1]
    assert img is not None and raw is not None and img.shape == raw.shape
    assert np.abs(img.astype(int) - raw).max() > 100  # text drawn


LOOPS = {  # the run loop's three forms (RunConfig fields)
    "adaptive": {},
    "threads": {"adaptive": False},
    "inline": {"overlap": False},
}


def test_every_loop_gives_the_same_results_and_accounts_for_every_frame(
    tiny_bundle: Path, demo_video: Path, tmp_path: Path
) -> None:
    outs = {}
    for loop, kw in LOOPS.items():
        out = tmp_path / f"{loop}.jsonl"
        s = run_bundle(
            tiny_bundle, RunConfig(source=str(demo_video), frames=5, out=out, warmup=0, **kw)
        )
        frames, events = read_jsonl(out)
        outs[loop] = [f["tasks"] for f in frames]
        unprocessed = [i for e in events if e["event"] == "unprocessed" for i in e["frame_ids"]]
        assert unprocessed == s.capture["unprocessed_ids"]
        # a finite source loses nothing: every frame taken is processed or reported
        assert s.capture["delivered"] == s.frames + len(unprocessed) and s.frames == 5
        assert not set(unprocessed) & {f["frame"] for f in frames}
        assert ("preprocess" in frames[0]["timings_ms"]) and "sink" in frames[0]["timings_ms"]
    assert outs["adaptive"] == outs["threads"] == outs["inline"]


class ThreadSink(SlowSink):
    """Records which thread wrote each frame and event, in order."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.calls: list[tuple[str, int | None]] = []

    def write(self, result: FrameResult) -> None:
        self.calls.append((threading.current_thread().name, result.frame_id))
        super().write(result)

    def event(self, event: Any) -> None:
        self.calls.append((threading.current_thread().name, None))
        super().event(event)


@pytest.mark.parametrize("loop", ["adaptive", "threads"])
def test_at_light_load_the_calling_thread_writes_the_sinks(
    tiny_bundle: Path, tmp_path: Path, loop: str
) -> None:
    """A frame every 100 ms: the adaptive loop hands nothing to the sink thread (a thread
    wake-up on the latency path); the fixed threaded loop hands it every frame."""
    sink = ThreadSink(0.0)
    frames = [np.full((120, 160, 3), 40 * i, np.uint8) for i in range(3)]
    cfg = RunConfig(source="replay", frames=6, warmup=2, out=tmp_path / "r.jsonl", **LOOPS[loop])
    s = run_bundle(tiny_bundle, cfg, sinks=[sink], source=ReplaySource(frames, fps=10))
    lines, _ = read_jsonl(tmp_path / "r.jsonl")
    assert s.frames == 6 and [f["frame"] for f in lines] == list(range(6))
    assert [i for _, i in sink.calls if i is not None] == list(range(6))
    writers = {name for name, _ in sink.calls}
    assert writers == ({"MainThread"} if loop == "adaptive" else {"edge-sinks"})


def test_under_load_the_sink_thread_writes_in_order(tiny_bundle: Path, tmp_path: Path) -> None:
    """A camera faster than a slow sink: the adaptive loop hands the sinks to their thread while
    it is busy, and every line and event stays in order (none lost, none twice)."""
    sink = ThreadSink(0.01)
    out = tmp_path / "busy.jsonl"
    frames = [np.full((120, 160, 3), 40 * i, np.uint8) for i in range(3)]
    cfg = RunConfig(source="replay", frames=30, warmup=0, out=out)
    s = run_bundle(tiny_bundle, cfg, sinks=[sink], source=ReplaySource(frames, fps=500))
    lines, events = read_jsonl(out)
    ids = [f["frame"] for f in lines]
    assert s.frames == 30 and ids == sorted(set(ids))
    assert [i for _, i in sink.calls if i is not None] == ids
    assert sink.events == len(events) and {e["event"] for e in events} <= {"drop", "unprocessed"}
    dropped = {i for e in events if e["event"] == "drop" for i in e["frame_ids"]}
    assert set(range(ids[0], ids[-1] + 1)) == set(ids) | dropped
    assert "edge-sinks" in {name for name, _ in sink.calls}


class FailingSink(SlowSink):
    def write(self, result: FrameResult) -> None:
        super().write(result)
        if self.frames == 3:
            raise OSError(28, "No space left on device")


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_failing_sink_stops_the_run_with_complete_lines_and_a_summary(
    tiny_bundle: Path, demo_video: Path, tmp_path: Path, loop: str
) -> None:
    out = tmp_path / "fail.jsonl"
    with pytest.raises(OSError, match="No space left"):
        run_bundle(
            tiny_bundle,
            RunConfig(source=str(demo_video), out=out, warmup=0, **LOOPS[loop]),
            sinks=[FailingSink(0.0)],
        )
    frames, _ = read_jsonl(out)
    summary = json.loads(out.with_name("fail.summary.json").read_text())
    # every processed frame keeps its line, the failing sink's frame 2 included
    assert [f["frame"] for f in frames] == list(range(summary["frames"]))
    assert summary["frames"] >= 3
    assert summary["stopped_by"] == "disk full" and "No space left" in summary["run"]["error"]


CHILD = """
import sys
from pathlib import Path
from edge.runtime.run import RunConfig, run_bundle
s = run_bundle(sys.argv[1], RunConfig(source="synthetic:?fps=100&width=160&height=120",
                                      out=Path(sys.argv[2]), warmup=0))
print("STOPPED", s.stopped_by, s.frames, flush=True)
"""


def test_sigterm_leaves_complete_jsonl_and_a_summary(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_bundle), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    frames, _ = read_jsonl(out)  # every line parses and the file ends with a newline
    summary = json.loads(out.with_name("live.summary.json").read_text())
    assert summary["stopped_by"] == "signal" and summary["frames"] == len(frames) >= 5
    assert f"STOPPED signal {len(frames)}" in stdout


IMPORT_CHECK = """
import sys
import edge.runtime, edge.runtime.run, edge.runtime.pipeline, edge.runtime.sinks
import edge.runtime.schedule, edge.runtime.decode, edge.runtime.capture, edge.runtime.sources
import edge.runtime.backends.base, edge.runtime.backends.ort
from edge.runtime.pipeline import Pipeline
import numpy as np
with Pipeline(sys.argv[1]) as p:
    r = p.process(np.zeros((48, 64, 3), np.uint8))
assert r.ran
heavy = sorted(m for m in ("torch", "onnx", "tensorrt", "pycuda") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_runtime_imports_neither_torch_nor_onnx(tiny_bundle: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, str(tiny_bundle)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
