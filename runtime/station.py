"""``edge run`` with several cameras: one process, engines loaded once, ready frames batched.

Threads: per camera a :class:`~edge.runtime.capture.CaptureThread` (its frame policy, drops,
gaps and reopen with backoff as in a one-camera run), which wakes the batcher when a frame is
buffered and, while the batcher waits, resizes that frame itself (``CameraFeed.lend``); the calling
thread collects a batch (the newest frame of each camera that is ready), resizes what is not
resized yet and runs its trunk (:class:`~edge.runtime.station_batch.BatchRunner`) and, on
ONNX Runtime, hands it to a heads thread (the heads of batch k run while batch k+1 is
collected, preprocessed and trunked), which hands the batch's results to a sink thread: the
handoffs are per batch (per chunk: at light load on the CPU a batch runs as two chunks), not
per frame. Batching deadline: the first ready frame waits at most ``batch_wait_ms`` (default
0 on the CPU, 4 ms on a GPU) for the other cameras, and only for those whose next frame is
due within that time, so a slow, stalled or dead camera never holds the others back; its gaps
are reported per camera. A live camera that cannot be opened at the start is retried in the
background for ``open_timeout_s`` while the others run: it joins when it opens. A camera
whose capture fails for good, or whose frame cannot be resized, ends alone.

Every JSONL line carries ``"camera"`` (the camera id) and ``"batch"`` (frames in its trunk
call); events (``gap``, ``drop``, ``overrun``, ``error``: a camera whose capture failed for
good, while the others go on) carry the camera id too. The summary has the
station totals and a one-camera summary per camera.

Line outputs (``StationConfig.line``: MQTT, OPC UA, metrics, reject rule) are shared by the
cameras, one connection / server per process, each camera under its own id
(:func:`~edge.runtime.line_sinks.open_station_line_sink`); each camera's part of their report
is in its summary (``cameras.<id>.line``), the shared part in ``line``.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.core.errors import EdgeError
from edge.core.files import write_json
from edge.core.manifest import load_bundle
from edge.core.preprocess import opencv_threads
from edge.core.signing import verify_bundle
from edge.runtime.capture import CaptureThread
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.feed import arrival_timings, prepared
from edge.runtime.latency import StageStats
from edge.runtime.line_sinks import LineSink, check_line_config, open_station_line_sink
from edge.runtime.outputs import (
    OutputLock,
    check_output_paths,
    parse_rotate,
    run_header,
    run_precision,
    strict_json,
)
from edge.runtime.pipeline import FrameResult, Pipeline
from edge.runtime.schedule import Schedule, build_schedule
from edge.runtime.sinks import JsonlSink, SinkWorker, TaskTally, WallClock, frame_record
from edge.runtime.sources.base import Source, redact_uri
from edge.runtime.sources.uri import open_source
from edge.runtime.station_batch import BatchRunner, Ready, Trunked, task_order
from edge.runtime.station_config import GPU_BATCH_WAIT_MS, StationConfig
from edge.runtime.station_feed import Batcher, CameraFeed

if TYPE_CHECKING:
    from edge.runtime.feed import Item


def _report(camera: str, message: str) -> None:
    print(f"[capture {camera}] {message}", file=sys.stderr, flush=True)


@dataclass
class _Cam:
    id: str
    capture: CaptureThread
    feed: CameraFeed
    stats: StageStats
    tally: TaskTally
    processed: int = 0
    gaps_seen: int = 0
    last_id: int | None = None
    failed: bool = False
    unprocessed: list[int] = field(default_factory=list)


def run_station(
    bundle_path: str | Path,
    cfg: StationConfig,
    *,
    sources: Mapping[str, Source] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the bundle on every camera of ``cfg``; returns (and writes) the summary dict.

    ``sources``: unopened :class:`Source` objects by camera id, used instead of opening that
    camera's URI. ``stop``: an event that ends the run like a signal."""
    if cfg.verify_key is not None:
        verify_bundle(bundle_path, cfg.verify_key)  # before anything is loaded from it
    bundle = load_bundle(bundle_path)
    for camera in cfg.cameras:  # outputs that are a camera's file or each other are refused
        check_output_paths(camera.source, cfg.out, None, cfg.summary_path)
    decoders = decoders_from_manifest(bundle.manifest)
    check_line_config(cfg.line, decoders)  # a bad line option fails before the engines load
    schedules: list[Schedule] = [
        build_schedule(decoders, tasks=c.tasks, every=c.every, when=c.when) for c in cfg.cameras
    ]
    order = task_order(schedules, list(bundle.tasks))
    srcs = dict(sources or {})
    opened = [
        srcs.get(c.id) or open_source(c.source, options=cfg.source_options) for c in cfg.cameras
    ]
    batch = bundle.batch
    cap = int(batch.get("max", 1)) if batch.get("dynamic") else int(batch.get("size", 1))
    if cfg.max_batch is not None:
        cap = min(cap, cfg.max_batch)
    with Pipeline(
        bundle,
        backend=cfg.backend,
        schedule=Schedule.every_frame(order),
        backend_options=cfg.backend_options,
    ) as pipeline:
        runner = BatchRunner(pipeline, schedules, cap)
        runner.warmup(cfg.warmup)
        # the output safety of edge run: header line, lock, appended whole lines
        uris = ",".join(redact_uri(c.source) for c in cfg.cameras)
        header = run_header(
            bundle.root, cfg.backend, run_precision(cfg.backend, cfg.backend_options), True, uris
        )
        lock = OutputLock(cfg.out) if cfg.out is not None else None
        line: LineSink | None = None
        jsonl: JsonlSink | None = None
        try:
            # line outputs: servers started before any file is opened, each camera under its id
            tasks = {c.id: s.order for c, s in zip(cfg.cameras, schedules)}
            line = open_station_line_sink(cfg.line, run=header, decoders=decoders, cameras=tasks)
            if cfg.out is not None:
                rotate = parse_rotate(cfg.rotate)
                jsonl = JsonlSink(cfg.out, header=header, rotate=rotate, keep=cfg.keep)
            with opencv_threads(1):
                return _Run(cfg, pipeline, runner, opened, jsonl, stop, line).run()
        finally:
            if line is not None:
                line.close()  # when the run never started (_close closed it otherwise)
            if jsonl is not None:
                jsonl.close()
            if lock is not None:
                lock.release()


def on_cpu(cfg: StationConfig, pipeline: Pipeline) -> bool:
    """True on ONNX Runtime's CPU provider alone, where a batch costs about its frames' sum:
    the batching deadline defaults to 0 there (waiting for more cameras buys little and costs
    latency: bench/bench_station.py) and a batch at light load runs in two chunks."""
    providers = pipeline.describe()["providers"]
    return cfg.backend == "onnxruntime" and set(providers) <= {"CPUExecutionProvider"}


class _Run:
    def __init__(
        self,
        cfg: StationConfig,
        pipeline: Pipeline,
        runner: BatchRunner,
        sources: list[Source],
        jsonl: JsonlSink | None,
        stop: threading.Event | None,
        line: LineSink | None = None,
    ) -> None:
        self.cfg, self.pipeline, self.runner, self.jsonl = cfg, pipeline, runner, jsonl
        self.line = line
        self.stop = stop or threading.Event()
        self.clock = WallClock()
        self.cpu = on_cpu(cfg, pipeline)
        self.wait_ms = cfg.batch_wait_ms
        if self.wait_ms is None:
            self.wait_ms = 0.0 if self.cpu else GPU_BATCH_WAIT_MS
        self.batcher = Batcher(self.wait_ms / 1e3)
        self.cams: list[_Cam] = []
        for i, (c, src) in enumerate(zip(cfg.cameras, sources)):
            policy = c.policy or ("latest" if src.is_live else "fifo:4")
            cap = CaptureThread(
                src,
                policy,
                name=f"edge-capture-{c.id}",
                open_timeout_s=cfg.open_timeout_s,
                report=functools.partial(_report, c.id),
            )
            feed = CameraFeed(i, cap, pipeline)
            cap.on_frame = functools.partial(self.batcher.arrived, feed)
            self.cams.append(_Cam(c.id, cap, feed, StageStats(), TaskTally(pipeline.tasks)))
        self.batcher.feeds = [c.feed for c in self.cams]
        # one handoff per batch: this thread collects, preprocesses and trunks batch k+1 while,
        # on ONNX Runtime, the heads thread runs batch k (separate sessions that release the GIL;
        # a GPU backend runs the heads here, on the trunk's device buffers); the sink thread
        # writes the lines. (A third stage, a trunk thread, measured the same throughput on
        # 2 cores at twice the latency: bench/bench_station.py.)
        self.worker = SinkWorker(maxsize=8, name="edge-station-sinks")
        host = cfg.backend == "onnxruntime"
        self.heads = SinkWorker(maxsize=1, name="edge-station-heads") if host else None

    def _ready(self, batch: list[tuple[int, Item]]) -> list[Ready]:
        """The batch's frames preprocessed (those a reader has not), each with its timings."""
        items = []
        now = time.monotonic_ns()
        for i, (frame, x, pre) in batch:
            timings = arrival_timings(frame, pre, now)  # a frame a reader prepared: less wait
            if x is None:
                try:
                    _, x, pre = prepared(self.pipeline, frame)
                except Exception as e:  # a frame the model cannot take: its camera fails
                    self.cams[i].feed.fail(e)
                    continue
            timings["preprocess"] = pre
            items.append(
                Ready(
                    i,
                    x,
                    frame.image,
                    frame.id,
                    frame.t_capture_ns,
                    frame.t_buffered_ns,
                    frame.source_index,
                    timings,
                )
            )
        return items

    def _trunk(self, items: list[Ready]) -> None:
        """The trunk on the batch, in chunks of at most ``cap`` frames, each chunk's heads on
        the heads thread. Light load (the heads thread idle): two chunks, so the heads of the
        first run while the trunk runs the second (on a CPU a batch costs about its frames'
        sum: one chunk would keep the second core idle and double the batch's latency)."""
        n, cap = len(items), self.runner.cap
        split = self.cpu and self.heads is not None and self.heads.idle
        if split and n > 1 and not self.runner.fixed:
            cap = min(cap, (n + 1) // 2)
        for i in range(0, n, cap):
            tr = self.runner.trunk(items[i : i + cap], host=self.heads is not None)
            if self.heads is not None:
                self.heads.submit(self._heads, tr)
            else:
                self._heads(tr)

    def _heads(self, tr: Trunked) -> None:
        results = self.runner.heads(tr)
        self.worker.submit(self._sink, [self.cams[it.camera] for it in tr.items], results)

    def _line(self, record: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.event(record)
        if self.line is not None and "event" in record:  # frames: _sink feeds it the result
            self.line.event(record)

    def _sink(self, cams: list[_Cam], results: list[FrameResult]) -> None:
        n = len(results)  # the frames of their trunk call
        for cam, result in zip(cams, results):
            t0 = time.perf_counter_ns()
            cam.tally.add(result)
            if self.jsonl is not None:
                self.jsonl.event({"camera": cam.id, "batch": n, **frame_record(result, self.clock)})
            if self.line is not None:
                self.line.write(result, cam.id)
            result.timings_ns["sink"] = time.perf_counter_ns() - t0
            cam.stats.add(result.timings_ns)
            cam.stats.add_one("e2e", time.monotonic_ns() - result.t_capture_ns)

    def _events(self, final: bool = False) -> None:
        for cam in self.cams:
            overruns = cam.capture.pop_overruns()
            if overruns:
                self.worker.submit(
                    self._line, {"event": "overrun", "camera": cam.id, "frame_ids": overruns}
                )
            gaps = cam.capture.stats.gaps
            for g in gaps[cam.gaps_seen :]:
                event = {
                    "event": "gap",
                    "camera": cam.id,
                    "t_ns": time.monotonic_ns(),
                    **g.to_dict(),
                }
                self.worker.submit(self._line, event)
            cam.gaps_seen = len(gaps)

    def _failures(self, final: bool = False) -> None:
        """A camera whose capture failed for good (reconnect off, a file's read error) or whose
        frame cannot be preprocessed ends with an ``error`` event under its id; the others go
        on. All failed: the first error is raised (not when ``final``: the run is ending)."""
        for cam in self.cams:
            e = cam.feed.error
            if e is not None and not cam.failed:
                cam.failed = True
                event = {"event": "error", "camera": cam.id, "error": f"{type(e).__name__}: {e}"}
                self.worker.submit(self._line, event)
        if not final and all(c.failed for c in self.cams):
            first = self.cams[0].feed.error
            assert first is not None
            raise first

    def _done(self, t_start: int) -> str | None:
        cfg = self.cfg
        if self.stop.is_set():
            return "signal"
        if cfg.frames is not None and all(
            c.processed >= cfg.frames or c.feed.ended for c in self.cams
        ):
            return "frames"
        if cfg.duration_s is not None and time.monotonic_ns() - t_start >= cfg.duration_s * 1e9:
            return "duration"
        if all(c.feed.ended for c in self.cams):
            return "end"
        return None

    def run(self) -> dict[str, Any]:
        stopped_by, error = "end", None
        started: list[_Cam] = []
        t_start = time.monotonic_ns()
        try:
            for cam in self.cams:
                cam.capture.start()
                started.append(cam)
            t_start = time.monotonic_ns()
            last_poll = time.monotonic()
            while True:
                self._failures()
                why = self._done(t_start)
                if why is not None:
                    stopped_by = why
                    break
                batch = self.batcher.collect()
                if time.monotonic() - last_poll >= 1.0:
                    self._events()
                    last_poll = time.monotonic()
                items = self._ready(batch)
                for it in items:
                    cam = self.cams[it.camera]
                    cam.processed += 1
                    if self.cfg.frames is not None and cam.processed >= self.cfg.frames:
                        cam.feed.full = True  # the batcher takes no more of its frames
                    latest = cam.capture.policy.kind == "latest"  # fifo: overrun events
                    if latest and cam.last_id is not None and it.frame_id > cam.last_id + 1:
                        drop = list(range(cam.last_id + 1, it.frame_id))
                        self.worker.submit(
                            self._line, {"event": "drop", "camera": cam.id, "frame_ids": drop}
                        )
                    cam.last_id = it.frame_id
                if items:
                    self._trunk(items)
        except BaseException as e:
            stopped_by, error = "error", e
            raise
        finally:
            duration_s = (time.monotonic_ns() - t_start) / 1e9
            for cam in started:
                cam.capture.stop()
            for cam in started:
                cam.capture.join(timeout=5.0)
                cam.unprocessed = cam.feed.unprocessed()
            with contextlib.suppress(Exception):  # a failed sink thread: _close raises it
                self._failures(final=True)  # a camera that failed as the run ended: its event
            late = self._close()  # every collected batch's heads and lines
            if late is not None and error is None:
                stopped_by, error = "error", late
            summary = self._summary(stopped_by, duration_s, error)
            if self.cfg.summary_path is not None:
                write_json(self.cfg.summary_path, strict_json(summary))
            if late is not None and error is late:
                raise late
        return summary

    def _last_events(self) -> None:
        with contextlib.suppress(EdgeError):  # a worker that failed: its error is raised
            self._events(final=True)

    def _close(self) -> BaseException | None:
        """Drain and stop the heads and sink threads in that order; the first error."""
        first: BaseException | None = None
        steps = [self.heads.close] if self.heads is not None else []
        steps += [self._last_events, self.worker.close]
        for step in steps:
            try:
                step()
            except BaseException as e:
                first = first or e
        if self.line is not None:  # every line is queued: publish it, stop the servers
            try:
                self.line.close()
            except BaseException as e:
                first = first or e
        return first

    def _summary(
        self, stopped_by: str, duration_s: float, error: BaseException | None
    ) -> dict[str, Any]:
        cams = {}
        for c in self.cams:
            cams[c.id] = {
                "source": c.capture.source.describe(),
                "policy": str(c.capture.policy),
                "frames": c.processed,
                "prepared_on_arrival": c.feed.lent,
                "unprocessed_ids": c.unprocessed,
                "fps": round(c.processed / duration_s, 3) if duration_s > 0 else 0.0,
                "tasks": c.tally.result(),
                "capture": c.capture.stats.to_dict(),
                "stages": c.stats.summary(),
            }
            if c.feed.error is not None:
                e = c.feed.error
                cams[c.id]["error"] = f"{type(e).__name__}: {e}"
        total = sum(c.processed for c in self.cams)
        out: dict[str, Any] = {
            "frames": total,
            "duration_s": round(duration_s, 4),
            "fps": round(total / duration_s, 3) if duration_s > 0 else 0.0,
            "stopped_by": stopped_by,
            "batches": {str(k): v for k, v in sorted(self.runner.batches.items())},
            "max_batch": self.runner.cap,
            "batch_wait_ms": self.wait_ms,
            "run": {**self.pipeline.describe(), "order": self.runner.order},
            "cameras": cams,
        }
        if self.line is not None:
            report = self.line.report()
            for cam_id, part in report.pop("cameras", {}).items():
                cams[cam_id]["line"] = part
            out["line"] = report
        if error is not None:
            out["error"] = f"{type(error).__name__}: {error}"
        return out
