"""``edge run``: a bundle on a source until N frames, a duration, the end of the source or a
signal; results to JSONL / annotated video; a summary at the end.

Threads: the source is read on its own thread (:class:`~edge.runtime.capture.CaptureThread`)
under the frame policy; with ``overlap`` (the default) a prefetch thread preprocesses frame k+1
and a sink thread writes frame k-1 while the calling thread runs frame k's trunk, due heads and
decoding (ONNX Runtime and OpenCV release the GIL, so these really overlap). Without it, the
calling thread does everything after capture.

SIGINT/SIGTERM set a stop flag (when called from the main thread; a second Ctrl-C stops at once):
the current frame finishes, every processed frame's line is written, so the JSONL ends with
complete lines, the summary is written, and the previous handlers are restored. Frames taken
from the capture queue but not processed are reported (``unprocessed`` event and summary).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import numpy as np

from edge.core.errors import ConfigError
from edge.core.files import write_json
from edge.core.manifest import load_bundle
from edge.core.preprocess import opencv_threads
from edge.runtime.capture import CaptureThread, parse_policy
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.latency import StageStats
from edge.runtime.pipeline import FrameResult, Pipeline
from edge.runtime.schedule import build_schedule, read_schedule_file
from edge.runtime.sinks import (
    AnnotatedSink,
    JsonlSink,
    RunSummary,
    Sink,
    SinkWorker,
    TaskTally,
)
from edge.runtime.sources.base import Frame, Source, SourceOptions
from edge.runtime.sources.uri import open_source

GAP_POLL_S = 1.0


@dataclass(frozen=True)
class RunConfig:
    """Options of ``edge run`` (one flag each).

    ``policy`` None picks ``latest`` for live sources (cameras, streams, ``synthetic:?live=1``)
    and ``fifo:4`` for files, folders and the synthetic line (which then wait for the consumer:
    every frame is processed). ``summary`` defaults to ``<out>.summary.json`` when ``out`` is set.
    """

    source: str
    tasks: tuple[str, ...] | None = None
    schedule: Path | None = None
    every: tuple[str, ...] = ()
    when: tuple[str, ...] = ()
    policy: str | None = None
    frames: int | None = None
    duration_s: float | None = None
    out: Path | None = None
    video: Path | None = None
    summary: Path | None = None
    backend: str = "onnxruntime"
    split: bool = True
    warmup: int = 3
    overlap: bool = True
    """Pipeline the stages on worker threads: the next frame is preprocessed and the previous
    frame's sinks run while this frame is inferred (throughput; under ``latest`` one extra
    frame may wait). False: everything after capture in the calling thread."""
    source_options: SourceOptions = field(default_factory=SourceOptions)
    backend_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"--frames {self.frames}: must be >= 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration {self.duration_s}: must be > 0 seconds")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup}: must be >= 0")
        if self.policy is not None:
            parse_policy(self.policy)
        for name in ("tasks", "every", "when"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(v))

    @property
    def summary_path(self) -> Path | None:
        if self.summary is not None:
            return Path(self.summary)
        if self.out is not None:
            out = Path(self.out)
            return out.with_name(out.stem + ".summary.json")
        return None


class _StopFlag:
    """SIGINT/SIGTERM -> a flag, while installed (main thread only); restores the old handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.signal = signum
        self.event.set()

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


def run_bundle(
    bundle_path: str | Path,
    cfg: RunConfig,
    *,
    sinks: Sequence[Sink] = (),
    source: Source | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Run the bundle on ``cfg.source``; returns (and writes, when a path is set) the summary.

    ``sinks``: extra sinks (e.g. a message broker) fed after the built-in ones. ``source``: an
    unopened :class:`Source` to use instead of opening ``cfg.source`` (a custom camera class).
    ``stop``: an event another thread may set to end the run like a signal does.
    """
    bundle = load_bundle(bundle_path)
    decoders = decoders_from_manifest(bundle.manifest)
    rules = read_schedule_file(cfg.schedule) if cfg.schedule is not None else None
    schedule = build_schedule(
        decoders, tasks=cfg.tasks, rules=rules, every=cfg.every, when=cfg.when
    )
    if source is None:
        source = open_source(cfg.source, options=cfg.source_options)
    policy = cfg.policy or ("latest" if source.is_live else "fifo:4")
    with Pipeline(
        bundle,
        backend=cfg.backend,
        schedule=schedule,
        split=cfg.split,
        backend_options=cfg.backend_options,
    ) as pipeline:
        pipeline.warmup(cfg.warmup)
        outputs: list[Sink] = []
        jsonl = JsonlSink(cfg.out) if cfg.out is not None else None
        try:
            if cfg.video is not None:
                outputs.append(AnnotatedSink(cfg.video, source.nominal_fps or 30.0))
            outputs.extend(sinks)
            capture = CaptureThread(source, policy)
            loop = _Loop(cfg, pipeline, capture, jsonl, outputs, stop)
            # overlap: one core resizes the next frame while ONNX Runtime infers on the other
            threads = opencv_threads(1) if cfg.overlap else contextlib.nullcontext()
            with _StopFlag() as flag, threads:
                loop.flag = flag.event
                summary = loop.run()
        finally:
            for s in outputs:
                s.close()
            if jsonl is not None:
                jsonl.close()
    return summary


_END = object()
_Item = tuple[Frame, np.ndarray | None, int]
"""(frame, its preprocessed input or None, the preprocessing time in ns)"""


class _Direct:
    """Frames straight from the capture thread; the pipeline preprocesses when a head is due."""

    def __init__(self, capture: CaptureThread) -> None:
        self.capture = capture

    def get(self, timeout: float) -> _Item | object | None:
        frame = self.capture.get(timeout=timeout)
        if frame is None:
            return _END if self.capture.ended else None
        return (frame, None, 0)

    def stop(self) -> list[int]:
        return []


class _Prefetch:
    """A worker that takes frames from the capture thread and preprocesses them, so frame k+1
    is resized while frame k is inferred (OpenCV and ONNX Runtime release the GIL)."""

    def __init__(self, capture: CaptureThread, pipeline: Pipeline) -> None:
        self.capture, self.pipeline = capture, pipeline
        self.q: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.halt = threading.Event()
        self.unprocessed: list[int] = []
        self.taken = threading.Event()
        self.thread = threading.Thread(target=self._run, name="edge-prefetch", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.halt.is_set():
            try:
                self.q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        latest = self.capture.policy.kind == "latest"
        try:
            while not self.halt.is_set():
                # latest: take the next frame only once the last one was taken, so the frame
                # handed to inference is the newest, not one that aged in this queue
                if latest and not self.q.empty():
                    self.taken.wait(0.05)
                    self.taken.clear()
                    continue
                frame = self.capture.get(timeout=0.05)
                if frame is None:
                    if self.capture.ended:
                        self._put(_END)
                        return
                    continue
                t0 = time.perf_counter_ns()
                x = self.pipeline.preprocess(frame.image)
                if not self._put((frame, x, time.perf_counter_ns() - t0)):
                    self.unprocessed.append(frame.id)
        except BaseException as e:
            self._put(e)

    def get(self, timeout: float) -> _Item | object | None:
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        self.taken.set()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> list[int]:
        """Stop the worker; the ids of frames it took but that were never processed."""
        self.halt.set()
        self.thread.join(timeout=5.0)
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self.unprocessed.append(item[0].id)
        return sorted(self.unprocessed)


class _Loop:
    def __init__(
        self,
        cfg: RunConfig,
        pipeline: Pipeline,
        capture: CaptureThread,
        jsonl: JsonlSink | None,
        outputs: list[Sink],
        stop: threading.Event | None,
    ) -> None:
        self.cfg, self.pipeline, self.capture = cfg, pipeline, capture
        self.jsonl, self.outputs, self.stop = jsonl, outputs, stop
        self.flag = threading.Event()
        self.stats = StageStats()
        self.tally = TaskTally(pipeline.tasks)
        self.gaps_seen = 0
        self.last_id: int | None = None
        self.unprocessed: list[int] = []
        self.worker: SinkWorker | None = None
        self.t_done = 0
        self._last_poll = time.monotonic()

    def _sink(self, result: FrameResult) -> None:
        """Every sink for one frame; its ``sink`` time is in the JSONL line without the line's
        own write, and in the summary with it."""
        result.finish()  # decode what the inference thread left raw (merged-heads frames)
        timings = result.timings_ns
        t0 = time.perf_counter_ns()
        for s in self.outputs:
            s.write(result)
        self.tally.add(result)
        timings["sink"] = time.perf_counter_ns() - t0
        if self.jsonl is not None:
            self.jsonl.write(result)
            timings["sink"] = time.perf_counter_ns() - t0
        self.stats.add(timings)
        self.stats.add_one("e2e", time.monotonic_ns() - result.t_capture_ns)  # to published

    def _event(self, event: dict[str, Any]) -> None:
        event.setdefault("t_ns", time.monotonic_ns())
        if self.worker is not None:
            self.worker.submit(self._write_event, event)
        else:
            self._write_event(event)

    def _write_event(self, event: dict[str, Any]) -> None:
        for s in self.outputs:
            s.event(event)
        if self.jsonl is not None:
            self.jsonl.event(event)

    def _capture_events(self, final: bool = False) -> None:
        overruns = self.capture.pop_overruns()
        if overruns:
            self._event({"event": "overrun", "frame_ids": overruns})
        st = self.capture.stats if final or self.poll_due() else None
        if st is not None and len(st.gaps) > self.gaps_seen:
            for g in st.gaps[self.gaps_seen :]:
                self._event({"event": "gap", **g.to_dict()})
            self.gaps_seen = len(st.gaps)

    def poll_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_poll >= GAP_POLL_S:
            self._last_poll = now
            return True
        return False

    def run(self) -> RunSummary:
        cfg, pipeline = self.cfg, self.pipeline
        stopped_by, error = "end", None
        self.capture.start()
        feeder = _Prefetch(self.capture, pipeline) if cfg.overlap else _Direct(self.capture)
        self.worker = SinkWorker(maxsize=4) if cfg.overlap else None
        t_start = time.monotonic_ns()
        try:
            while True:
                if self.flag.is_set() or (self.stop is not None and self.stop.is_set()):
                    stopped_by = "signal"
                    break
                if cfg.frames is not None and pipeline.frames >= cfg.frames:
                    stopped_by = "frames"
                    break
                if (
                    cfg.duration_s is not None
                    and time.monotonic_ns() - t_start >= cfg.duration_s * 1e9
                ):
                    stopped_by = "duration"
                    break
                item = feeder.get(0.05)
                self._capture_events()
                if item is _END:
                    break
                if item is None:
                    continue
                frame, prepared, pre_ns = cast(_Item, item)
                if (
                    self.capture.policy.kind == "latest"
                    and self.last_id is not None
                    and frame.id > self.last_id + 1
                ):
                    self._event(
                        {"event": "drop", "frame_ids": list(range(self.last_id + 1, frame.id))}
                    )
                self.last_id = frame.id
                queued = frame.t_queued_ns or frame.t_capture_ns
                wait = time.monotonic_ns() - queued - pre_ns
                timings = {"capture": queued - frame.t_capture_ns, "queue_wait": max(0, wait)}
                if prepared is not None:
                    timings["preprocess"] = pre_ns
                result = pipeline.process(
                    frame.image,
                    frame_id=frame.id,
                    t_capture_ns=frame.t_capture_ns,
                    timings=timings,
                    source_index=frame.source_index,
                    prepared=prepared,
                    defer_decode=self.worker is not None,
                )
                if self.worker is not None:
                    self.worker.submit(self._sink, result)
                else:
                    self._sink(result)
        except BaseException as e:
            stopped_by, error = "error", e
            raise
        finally:
            late = self._finish(feeder, stopped_by)
            duration_s = (self.t_done - t_start) / 1e9
            if late is not None and error is None:
                stopped_by, error = "error", late
            summary = self._summary(stopped_by, duration_s, error)
            path = cfg.summary_path
            if path is not None:
                write_json(path, summary.to_dict())
            if late is not None and error is late:
                raise late
        return summary

    def _finish(self, feeder: _Direct | _Prefetch, stopped_by: str) -> BaseException | None:
        """Stop the threads, write every pending line and the last events; the first error."""
        self.capture.stop()
        self.unprocessed = feeder.stop()
        late: BaseException | None = None
        if self.worker is not None:
            try:
                self.worker.close()  # every processed frame's line is written
            except BaseException as e:
                late = e
            self.worker = None
        self.t_done = time.monotonic_ns()
        self.capture.join(timeout=5.0)
        try:
            self._capture_events(final=True)
            if self.unprocessed:
                self._event(
                    {
                        "event": "unprocessed",
                        "frame_ids": self.unprocessed,
                        "reason": "taken from the capture queue, not processed before "
                        f"the run stopped ({stopped_by})",
                    }
                )
        except BaseException as e:
            late = late or e
        return late

    def _summary(
        self, stopped_by: str, duration_s: float, error: BaseException | None
    ) -> RunSummary:
        cfg, n = self.cfg, self.pipeline.frames
        capture = self.capture.stats.to_dict()
        capture["unprocessed_ids"] = self.unprocessed
        run = {
            **self.pipeline.describe(),
            "source": self.capture.source.describe(),
            "policy": str(self.capture.policy),
            "outputs": {
                "jsonl": str(cfg.out) if cfg.out else None,
                "video": str(cfg.video) if cfg.video else None,
                "summary": str(cfg.summary_path) if cfg.summary_path else None,
            },
        }
        if error is not None:
            run["error"] = f"{type(error).__name__}: {error}"
        return RunSummary(
            frames=n,
            duration_s=round(duration_s, 4),
            fps=round(n / duration_s, 3) if duration_s > 0 else 0.0,
            stopped_by=stopped_by,
            tasks=self.tally.result(),
            capture=capture,
            stages=self.stats.summary(),
            run=run,
        )
