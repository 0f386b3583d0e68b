"""``edge run``: a bundle on a source until N frames, a duration, the end of the source or a
signal; results to JSONL / annotated video; a summary at the end.

Threads: the source is read on its own thread (:class:`~edge.runtime.capture.CaptureThread`)
under the frame policy; with ``overlap`` (the default) a prefetch thread preprocesses frame k+1
and a sink thread writes frame k-1 while the calling thread runs frame k's trunk, due heads and
decoding (ONNX Runtime and OpenCV release the GIL, so these really overlap). With ``adaptive``
(the default) a frame is handed to those threads only while the calling thread is busy: a frame
that arrives while it is idle is taken, preprocessed and written by the calling thread itself
(each handoff wakes a thread, which costs latency at light load; :mod:`edge.runtime.feed`).
``keep_warm`` (opt-in) also rehearses the last frame just before the next one is due.
Without ``overlap``, the calling thread does everything after capture.

SIGINT/SIGTERM/SIGHUP set a stop flag (when called from the main thread; a second Ctrl-C stops
at once): the current frame finishes, every processed frame's line is written, so the JSONL ends
with complete lines, the video is finished, the summary is written, and the previous handlers are
restored. SIGHUP (the terminal or SSH session closed) stops like SIGTERM; it does not reload.
Frames taken from the capture queue but not processed are reported (``unprocessed`` event).

Outputs (:mod:`edge.runtime.outputs`): checked before anything is opened (no two of source /
out / video / summary the same file), locked against a second run, opened only once the source
is open, and appended to: each run starts with a header line ``{"event": "run", "run_id",
"bundle_sha256", "backend", "precision", "started", ...}``. A write that fails (disk full,
read-only) stops the run with that reason in the summary and raises ``OutputError``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from edge.core.errors import ConfigError, SourceError
from edge.core.files import write_json
from edge.core.manifest import load_bundle
from edge.core.preprocess import opencv_threads
from edge.runtime.capture import CaptureThread, parse_policy, retry_first_open, retryable
from edge.runtime.decode import decoders_from_manifest
from edge.runtime.feed import END, DirectFeed, LendingFeed, PrefetchFeed, arrival_timings
from edge.runtime.latency import StageStats
from edge.runtime.line import LineOutputsConfig
from edge.runtime.line_sinks import open_line_sink
from edge.runtime.notify import ServiceNotifier
from edge.runtime.outputs import (
    OutputError,
    OutputLock,
    check_output_paths,
    clean_stale_outputs,
    parse_rotate,
    run_header,
    run_precision,
    stop_reason,
    strict_json,
    summary_path,
)
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
from edge.runtime.sources.base import (
    Source,
    SourceOptions,
    TriggerTimer,
    device_facts,
    redact_uri,
)
from edge.runtime.sources.uri import open_source

if TYPE_CHECKING:
    from edge.runtime.feed import Item

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
    adaptive: bool = True
    """With ``overlap``: hand a frame to those threads only while the calling thread is busy (a
    frame arrives during inference, a frame waits when the sinks are due); at light load the
    calling thread takes, preprocesses and writes it itself (fewer thread wake-ups: lower
    latency). False: every frame goes through both threads."""
    keep_warm: bool = False
    """Light load, a source at a steady rate: just before the next frame is due, run the last
    frame through the pipeline again (results discarded), so the frame finds the code and
    weights in the CPU caches instead of evicted by the idle wait (``bench/bench_live.py``).
    Costs one more pass per frame while idle; needs ``overlap`` and ``adaptive``."""
    source_options: SourceOptions = field(default_factory=SourceOptions)
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    rotate: str | None = None
    """Rotate ``out`` at a size ("100M", "2G") or "daily"; ``keep`` rotated files stay."""
    keep: int = 5
    verify_key: Path | None = None
    """A public key (``edge keygen``): refuse a bundle whose signature it does not verify."""
    trigger_every_ms: float | None = None
    """Fire the source's software trigger this often (``genicam://...?trigger=software``)."""
    line: LineOutputsConfig | None = None
    """MQTT / OPC UA / metrics outputs (:mod:`edge.runtime.line_sinks`); None: none."""
    open_timeout_s: float = 300.0
    """Live sources: retry a first open that fails for this long (a camera that boots after
    the Jetson), each attempt reported on stderr; 0: fail at once."""

    def __post_init__(self) -> None:
        if not self.open_timeout_s >= 0:
            raise ConfigError(f"--open-timeout {self.open_timeout_s}: must be >= 0 seconds")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"--frames {self.frames}: must be >= 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration {self.duration_s}: must be > 0 seconds")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup}: must be >= 0")
        if self.policy is not None:
            parse_policy(self.policy)
        if self.rotate is not None and self.out is None:
            raise ConfigError("--rotate applies to --out: give --out too")
        parse_rotate(self.rotate)
        if self.keep_warm and not (self.overlap and self.adaptive):
            raise ConfigError("keep_warm needs the adaptive loop: overlap and adaptive on")
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep}: must be >= 1")
        if self.trigger_every_ms is not None and not self.trigger_every_ms > 0:
            raise ConfigError(f"--trigger-every {self.trigger_every_ms}: must be > 0 ms")
        for name in ("tasks", "every", "when"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(v))

    @property
    def summary_path(self) -> Path | None:
        return summary_path(self.out, self.summary)


class _StopFlag:
    """SIGINT/SIGTERM/SIGHUP -> a flag, while installed (main thread only); restores the old
    handlers."""

    SIGNALS = tuple(
        getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)
    )

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
    check_output_paths(cfg.source, cfg.out, cfg.video, cfg.summary_path)
    if cfg.verify_key is not None:
        from edge.core.signing import verify_bundle

        verify_bundle(bundle_path, cfg.verify_key)
    bundle = load_bundle(bundle_path)
    decoders = decoders_from_manifest(bundle.manifest)
    rules = read_schedule_file(cfg.schedule) if cfg.schedule is not None else None
    schedule = build_schedule(
        decoders, tasks=cfg.tasks, rules=rules, every=cfg.every, when=cfg.when
    )
    if source is None:
        source = open_source(cfg.source, options=cfg.source_options)
    # triggered cameras: every triggered part is processed (fifo), overruns recorded per id
    policy = cfg.policy or ("latest" if source.is_live and not source.triggered else "fifo:4")
    trigger: Any = contextlib.nullcontext()
    if cfg.trigger_every_ms is not None:
        if not source.software_trigger:
            raise ConfigError(
                f"--trigger-every needs a source with a software trigger "
                f"(genicam://...?trigger=software); {source!r} has none"
            )
        trigger = TriggerTimer(source, cfg.trigger_every_ms / 1000)
    with Pipeline(
        bundle,
        backend=cfg.backend,
        schedule=schedule,
        split=cfg.split,
        backend_options=cfg.backend_options,
    ) as pipeline:
        pipeline.warmup(cfg.warmup)
        header = run_header(
            bundle.root,
            cfg.backend,
            run_precision(cfg.backend, cfg.backend_options),
            cfg.split,
            redact_uri(cfg.source),
        )
        locks: list[OutputLock] = []
        for path in (cfg.out, cfg.video):  # a second run on any of them is refused
            if path is not None:
                try:
                    locks.append(OutputLock(path))
                except BaseException:
                    for held in locks:
                        held.release()
                    raise
        outputs: list[Sink] = []
        jsonl: JsonlSink | None = None
        outputs_closed = False
        try:
            warnings = [
                f"removed {p}, left by an edge process that no longer runs"
                for p in clean_stale_outputs(cfg.out, cfg.video, cfg.summary_path)
            ]
            if not source.is_open:  # nothing is opened for writing before the source is open
                _open_source(source, cfg.open_timeout_s)
            # line outputs: options checked and servers started before any file is opened
            line = open_line_sink(
                cfg.line, run=header, decoders=decoders, source=source, tasks=pipeline.tasks
            )
            if line is not None:
                outputs.append(line)
            if cfg.out is not None:
                jsonl = JsonlSink(
                    cfg.out, header=header, rotate=parse_rotate(cfg.rotate), keep=cfg.keep
                )
            if cfg.video is not None:
                outputs.append(AnnotatedSink(cfg.video, source.nominal_fps or 30.0))
            outputs.extend(sinks)
            capture = CaptureThread(source, policy)  # the source is open: _open_source retried it
            loop = _Loop(cfg, pipeline, capture, jsonl, outputs, stop)
            loop.header, loop.warnings = header, warnings
            # overlap: one core resizes the next frame while ONNX Runtime infers on the other
            threads = opencv_threads(1) if cfg.overlap else contextlib.nullcontext()
            # under systemd (Type=notify): READY now, WATCHDOG while capture and pipeline live
            status = f"running {redact_uri(cfg.source)}"
            notifier = ServiceNotifier(capture.heartbeat_age_s, status=status)
            with _StopFlag() as flag, threads, trigger, notifier:
                loop.flag = flag.event
                outputs_closed = True  # from here the loop closes them, once
                summary = loop.run()
        finally:
            with contextlib.suppress(Exception):
                source.close()  # when the run never started; the capture thread closes it
            if not outputs_closed:  # the run never started: the loop closes (and reports) them
                for s in outputs:
                    with contextlib.suppress(Exception):
                        s.close()
            if jsonl is not None:
                jsonl.close()
            for held in locks:
                held.release()
    return summary


def _open_source(source: Source, open_timeout_s: float) -> None:
    """Open ``source``; a live one that fails is retried with backoff for ``open_timeout_s``
    (a camera that boots after the Jetson), each attempt reported on stderr."""
    try:
        source.open()
    except SourceError as e:
        if not retryable(source, e, open_timeout_s):
            raise
        retry_first_open(source, e, open_timeout_s)


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
        self.feeder = DirectFeed(capture)
        self.t_done = 0
        self._last_poll = time.monotonic()
        self.header: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.frame_warnings: dict[int, list[str]] = {}
        self.output_errors: list[str] = []
        self.failed: BaseException | None = None
        """The first error of a sink other than the JSONL; the loop stops on it."""
        self.failed_outputs: list[Sink] = []
        self.damaged: list[int] = []
        """Ids of frames whose source data was damaged (their lines carry "warnings")."""

    def _sink(self, result: FrameResult) -> None:
        """Every sink for one frame; its ``sink`` time is in the JSONL line without the line's
        own write, and in the summary with it."""
        result.finish()  # decode what the inference thread left raw (merged-heads frames)
        timings = result.timings_ns
        t0 = time.perf_counter_ns()
        for s in list(self.outputs):
            try:
                s.write(result)
            except Exception as e:  # lines are still written; the run loop stops on it
                self.outputs.remove(s)
                self.failed_outputs.append(s)
                self.failed = self.failed or e
        timings["sink"] = time.perf_counter_ns() - t0
        if self.jsonl is not None:
            warnings = self.frame_warnings.pop(result.frame_id, None)
            self.jsonl.write(result, {"warnings": warnings} if warnings else None)
            timings["sink"] = time.perf_counter_ns() - t0
        e2e = time.monotonic_ns() - result.t_capture_ns  # to published; bookkeeping after
        self.tally.add(result)
        self.stats.add(timings)
        self.stats.add_one("e2e", e2e)

    def _handoff(self) -> bool:
        """Whether the sink thread writes the next call: always without ``adaptive``; with it,
        while that thread is still busy (order) or a next frame already waits (throughput)."""
        w = self.worker
        if w is None:
            return False
        return not (self.cfg.adaptive and w.idle and not self.feeder.ready())

    def _event(self, event: dict[str, Any]) -> None:
        event.setdefault("t_ns", time.monotonic_ns())
        if self._handoff():
            assert self.worker is not None
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
        if not cfg.overlap:
            feeder: DirectFeed = DirectFeed(self.capture)
        elif cfg.adaptive:
            feeder = LendingFeed(self.capture, pipeline, keep_warm=cfg.keep_warm)
        else:
            feeder = PrefetchFeed(self.capture, pipeline)
        self.feeder = feeder
        self.worker = SinkWorker(maxsize=4) if cfg.overlap else None
        t_start = time.monotonic_ns()
        try:
            while True:
                if self.failed is not None:
                    raise self.failed
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
                if item is END:
                    break
                if item is None:
                    continue
                frame, prepared, pre_ns = cast("Item", item)
                if (
                    self.capture.policy.kind == "latest"
                    and self.last_id is not None
                    and frame.id > self.last_id + 1
                ):
                    self._event(
                        {"event": "drop", "frame_ids": list(range(self.last_id + 1, frame.id))}
                    )
                self.last_id = frame.id
                if frame.meta.get("warning"):  # e.g. a truncated image: said in its line
                    self.frame_warnings[frame.id] = [str(frame.meta["warning"])]
                    self.damaged.append(frame.id)
                timings = arrival_timings(frame, pre_ns, time.monotonic_ns())
                if prepared is not None:
                    timings["preprocess"] = pre_ns
                if cfg.frames is None or pipeline.frames + 1 < cfg.frames:
                    feeder.lend()  # the next frame that arrives meanwhile is taken and resized
                result = pipeline.process(
                    frame.image,
                    frame_id=frame.id,
                    t_capture_ns=frame.t_capture_ns,
                    timings=timings,
                    source_index=frame.source_index,
                    prepared=prepared,
                    defer_decode=feeder.lent,  # decoded on the sink thread, if it writes
                    t_sensor_ns=frame.t_sensor_ns,
                    device=device_facts(frame),
                )
                if self._handoff():
                    assert self.worker is not None
                    self.worker.submit(self._sink, result)
                else:
                    self._sink(result)
        except BaseException as e:
            stopped_by, error = stop_reason(e), e
            raise
        finally:
            late = self._finish(feeder, stopped_by)
            duration_s = (self.t_done - t_start) / 1e9
            if late is not None and error is None:
                stopped_by, error = stop_reason(late), late
            summary = self._summary(stopped_by, duration_s, error)
            path = cfg.summary_path
            if path is not None:
                try:
                    write_json(path, strict_json(summary.to_dict()))
                except OSError as e:
                    if error is None:
                        error = late = OutputError(f"cannot write the summary '{path}': {e}")
                    self.output_errors.append(f"summary not written to '{path}': {e}")
            if isinstance(error, OutputError):
                error.summary = summary
            if late is not None and error is late:
                raise late
        return summary

    def _finish(self, feeder: DirectFeed, stopped_by: str) -> BaseException | None:
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
        if late is None and self.failed is not None:
            late = self.failed  # a sink failed after the last frame was taken
        for s in self.outputs + self.failed_outputs:  # finish the video before the summary
            try:
                s.close()
            except BaseException as e:
                late = late or e
                with contextlib.suppress(Exception):
                    self._write_event({"event": "error", "message": str(e)})
        source = self.capture.source.describe()
        if source.get("truncated"):
            t = source["truncated"]
            self.warnings.append(
                f"the source ended after {t['read']} of the {t['declared']} frames its file "
                "declares: it is truncated or damaged"
            )
            with contextlib.suppress(Exception):
                self._write_event({"event": "truncated", **t})
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
        rehearsals = getattr(self.feeder, "rehearsals", 0)
        if cfg.keep_warm:  # the extra passes it cost
            run["keep_warm"] = {"rehearsals": rehearsals}
        run["run_id"] = self.header.get("run_id")
        run["bundle_sha256"] = self.header.get("bundle_sha256")
        run["precision"] = self.header.get("precision")
        if self.jsonl is not None:
            run["outputs"]["jsonl_lines"] = self.jsonl.lines
        for s in self.outputs:  # a sink with counters of its own (the line sink)
            report = getattr(s, "report", None)
            if report is not None:
                run["line"] = report()
        if error is not None:
            run["error"] = f"{type(error).__name__}: {error}"
        warnings = self.warnings + self.output_errors
        if self.damaged:
            shown = ", ".join(map(str, self.damaged[:10])) + (
                "..." if len(self.damaged) > 10 else ""
            )
            warnings.append(
                f"{len(self.damaged)} frame(s) came from damaged images (frames {shown}); "
                "their JSONL lines carry the reason in 'warnings'"
            )
        if warnings:
            run["warnings"] = warnings
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
