"""The capture thread and the frame policy between a source and a slower consumer.

A :class:`CaptureThread` reads its :class:`~edge.runtime.sources.base.Source` as fast as the source
delivers, stamps each frame (``t_queued_ns``) and hands it to the consumer through the policy:

- ``latest`` — one slot holding the newest frame (free-running cameras): a frame overwritten
  before the consumer took it is *dropped*; drops are counted exactly and the most recent dropped
  ids are kept (``stats.dropped_ids``). Bounded latency, unbounded drops.
- ``fifo:N`` — a bounded queue of N frames (triggered inspection):
  - on a **live** source (a camera cannot be paused) a frame that arrives while the queue is full
    is an *overrun*: it is not queued, but its id is recorded (``stats.overrun_ids``,
    :meth:`CaptureThread.pop_overruns`) so the part it shows can be marked "not inspected" —
    never lost silently;
  - on a **finite** source (video file, image folder, synthetic line) the producer waits for
    space instead (backpressure), so no frame is lost at all.

Accounting always balances: ``captured == delivered + dropped + overruns + queued + discarded``
(``discarded``: frames in hand when ``stop()`` interrupted a backpressure wait).

Two threads: a *reader* calls ``source.read()``; the *monitor* (the capture thread proper) owns
the deadline. A live source that stops delivering — ``read()`` raises, returns nothing, or
blocks (OpenCV < 4.7 waits in GStreamer's ``pull_sample`` without a timeout) — for longer than
``options.read_timeout_s`` is noticed by the monitor without the read returning: it abandons that
reader (a read that returns later is discarded), closes the source (which unblocks a stuck
GStreamer read) and reopens it with exponential backoff (``backoff_initial_s`` doubling up to
``backoff_max_s``) on a fresh reader; frame ids continue and a :class:`GapEvent` is recorded. A
finite source is never reopened: when it ends, the consumer drains the buffer, then ``get()``
returns None and ``ended`` is True. If capture fails for good (a finite source's read error, or a
live one with ``reconnect=False``), ``get()`` raises that error once the buffer is drained.

:meth:`CaptureThread.heartbeat_age_s` says how long ago both the monitor and the consumer last
showed life: a service watchdog (:mod:`edge.runtime.notify`) stops pinging systemd when a
``close()``/``open()`` hangs the monitor or the consumer stops taking frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType

from edge.core.errors import EdgeError, SourceError, SourceSettingError
from edge.runtime.capture_types import (
    POLICY_FORMS,
    CaptureStats,
    FramePolicy,
    GapEvent,
    PendingGap,
    backoff_delays,
    parse_policy,
)
from edge.runtime.sources.base import Frame, Source

__all__ = [
    "POLICY_FORMS",
    "CaptureStats",
    "CaptureThread",
    "FramePolicy",
    "GapEvent",
    "backoff_delays",
    "parse_policy",
]

_COUNTERS = (
    "captured",
    "delivered",
    "dropped",
    "overruns",
    "max_queued",
    "discarded",
    "backpressure_waits",
    "read_failures",
    "reopens",
    "reopen_attempts",
    "stalls",
    "abandoned_frames",
    "open_attempts",
)
_TICK_S = 0.02  # the monitor's polling period (deadline resolution)


def _stderr(message: str) -> None:
    print(f"[capture] {message}", file=sys.stderr, flush=True)


class CaptureThread:
    """Reads ``source`` on daemon threads; the consumer calls :meth:`get`.

    ``start()`` opens the source in the caller's thread, so a source that cannot be opened
    raises :class:`SourceError` there — unless ``open_timeout_s`` > 0 and the source is live
    (a camera that boots after the Jetson): then failed opens are retried with the reopen
    backoff until that many seconds have passed, each attempt reported through ``report``
    (default: a line on stderr), and if it never opens ``get()`` raises the last error.
    ``on_frame``: called (on a capture thread, no lock held) after each buffered frame and once
    capture has ended, so one consumer can wait on several captures (a station's batcher).
    Use as a context manager, or call ``start()`` / ``stop()`` / ``join()``.
    """

    def __init__(
        self,
        source: Source,
        policy: FramePolicy | str = "latest",
        *,
        max_recorded_ids: int = 10_000,
        name: str = "edge-capture",
        open_timeout_s: float = 0.0,
        report: Callable[[str], None] = _stderr,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.on_frame = on_frame
        self.policy = parse_policy(policy) if isinstance(policy, str) else policy
        self.open_timeout_s = float(open_timeout_s)
        self.report = report
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()  # the reader signals the monitor (error, end)
        self._buf: deque[Frame] = deque()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._name = name
        self._started = self._done = False
        self._error: BaseException | None = None
        self._n = dict.fromkeys(_COUNTERS, 0)
        self._dropped_ids: deque[int] = deque(maxlen=max_recorded_ids)
        self._overrun_ids: deque[int] = deque(maxlen=max_recorded_ids)
        self._pending_overruns: deque[int] = deque(maxlen=max_recorded_ids)
        self._gaps: deque[GapEvent] = deque(maxlen=max_recorded_ids)
        self._gap: PendingGap | None = None
        self._last_frame: tuple[int, int] | None = None  # (id, t_capture_ns)
        self._progress_ns = 0
        self._first_open_error: BaseException | None = None
        # the current reader: its generation, thread, outcome and when its read() began
        self._gen = 0
        self._reader: threading.Thread | None = None
        self._reader_error: BaseException | None = None
        self._reader_ended = False
        self._read_since_ns: int | None = None
        now = time.monotonic_ns()
        self._beat_monitor_ns = self._beat_consumer_ns = now
        self._delays = backoff_delays(
            source.options.backoff_initial_s, source.options.backoff_max_s
        )

    # -- consumer side ----------------------------------------------------------------------
    def start(self) -> CaptureThread:
        """Open the source (if not open yet) and start capturing."""
        if self._started:
            raise SourceError(f"capture of {self.source!r} was already started")
        if not self.source.is_open:
            self._n["open_attempts"] += 1
            try:
                self.source.open()
            except SourceError as e:
                if not retryable(self.source, e, self.open_timeout_s):
                    raise
                self._first_open_error = e  # the monitor thread retries
        self._progress_ns = self._beat_monitor_ns = self._beat_consumer_ns = time.monotonic_ns()
        self._started = True
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame under the policy; None on timeout or once capture has ended."""
        if not self._started:
            raise SourceError(f"capture of {self.source!r} is not running: call start() first")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._beat_consumer_ns = time.monotonic_ns()
                if self._buf:
                    frame = self._buf.popleft()
                    self._n["delivered"] += 1
                    self._cond.notify_all()  # a producer may wait for space
                    return frame
                if self._done:
                    if self._error is not None:
                        raise self._failure()
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def __iter__(self) -> Iterator[Frame]:
        """Frames until capture ends (blocks while waiting for the next one)."""
        while True:
            frame = self.get()
            if frame is None:
                return
            yield frame

    def pop_overruns(self) -> list[int]:
        """Ids of frames overrun since the last call (mark those parts "not inspected")."""
        with self._cond:
            ids = list(self._pending_overruns)
            self._pending_overruns.clear()
            return ids

    def stop(self) -> None:
        """Ask the threads to finish (interrupts backoff, backpressure and open retries)."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture thread; True when it has finished. A reader stuck in ``read()``
        is abandoned, never waited for."""
        if self._started:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """True when capture has finished and every buffered frame has been taken."""
        with self._cond:
            return self._done and not self._buf

    @property
    def error(self) -> BaseException | None:
        return self._error

    def heartbeat_age_s(self) -> float:
        """Seconds since the monitor and the consumer (``get``) both last showed life; a hung
        ``open()``/``close()`` or a consumer that stopped taking frames makes this grow."""
        oldest = min(self._beat_monitor_ns, self._beat_consumer_ns)
        if self._done:
            return 0.0
        return max(0.0, (time.monotonic_ns() - oldest) / 1e9)

    @property
    def stats(self) -> CaptureStats:
        e = self._error
        with self._cond:
            return CaptureStats(
                policy=str(self.policy),
                queued=len(self._buf),
                dropped_ids=tuple(self._dropped_ids),
                overrun_ids=tuple(self._overrun_ids),
                gaps=tuple(self._gaps),
                ended=self._done and not self._buf,
                error=None if e is None else f"{type(e).__name__}: {e}",
                **self._n,
            )

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self.join(timeout=5.0)

    # -- the monitor (the capture thread) ----------------------------------------------------
    def _failure(self) -> EdgeError:
        e = self._error
        if isinstance(e, EdgeError):
            return e
        err = SourceError(f"capture from {self.source!r} failed: {type(e).__name__}: {e}")
        err.__cause__ = e
        return err

    def _run(self) -> None:
        try:
            if self._first_open_error is not None:
                self._retry_first_open(self._first_open_error)
            if not self._stop.is_set():
                self._monitor()
        except BaseException as e:
            self._error = e
        finally:
            if self._gap is not None:  # stopped while the source was still down
                self._close_gap(None, time.monotonic_ns())
            self._gen += 1  # a reader still running stops at its next check
            reader = self._reader
            if reader is not None:  # a finite read finishing normally: let it, then close
                reader.join(timeout=min(1.0, self.source.options.read_timeout_s))
            with contextlib.suppress(Exception):
                self.source.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()
            if self.on_frame is not None:
                self.on_frame()

    def _beat(self) -> None:
        self._beat_monitor_ns = time.monotonic_ns()

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (beating); True when stop() was called meanwhile."""
        end = time.monotonic() + seconds
        while True:
            self._beat()
            left = end - time.monotonic()
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(left, 0.5)):
                return True

    def _retry_first_open(self, first: BaseException) -> None:
        """The first open failed on a live source: retry with backoff for open_timeout_s."""
        if retry_first_open(
            self.source,
            first,
            self.open_timeout_s,
            report=self.report,
            sleep=self._sleep,
            attempted=lambda: self._count("open_attempts"),
            attempts=self._n["open_attempts"],
        ):
            self._progress_ns = time.monotonic_ns()

    def _monitor(self) -> None:
        src, opts = self.source, self.source.options
        reconnect = src.is_live and opts.reconnect
        stall_s = src.stall_timeout_s  # None: not live, or triggered (silent between triggers)
        timeout_ns = int(stall_s * 1e9) if stall_s is not None else None
        self._start_reader()
        while not self._stop.is_set():
            self._beat()
            self._wake.wait(_TICK_S)
            self._wake.clear()
            with self._cond:
                error, self._reader_error = self._reader_error, None
                ended = self._reader_ended
            if ended:
                return
            if error is not None:
                self._count("read_failures")
                if not reconnect:
                    raise error
                self._reopen(f"read raised {type(error).__name__}: {error}")
                continue
            stalled_ns = time.monotonic_ns() - self._progress_ns
            if timeout_ns is not None and stalled_ns > timeout_ns:
                reason = f"no frame for {stall_s:g} s"
                since = self._read_since_ns
                if since is not None and time.monotonic_ns() - since > timeout_ns:
                    reason += f" (read() blocked for {(time.monotonic_ns() - since) / 1e9:.1f} s)"
                self._count("read_failures")
                if not reconnect:
                    raise SourceError(f"{src!r}: {reason} and reconnect is off")
                self._reopen(reason)

    def _reopen(self, reason: str) -> None:
        """Abandon the reader, close the live source and reopen it on a fresh reader, waiting
        the next backoff delay before each try."""
        if self._gap is None:
            last_id, last_ns = self._last_frame or (None, self._progress_ns)
            self._gap = PendingGap(last_ns, last_id, reason)
        self._abandon_reader()
        with contextlib.suppress(Exception):
            self.source.close()  # also wakes a read blocked in GStreamer (pipeline to NULL)
        for delay in self._delays:
            if self._sleep(delay):
                return
            self._gap.attempts += 1
            self._count("reopen_attempts")
            try:
                self.source.open()
            except SourceSettingError:
                raise  # it answered and refuses a setting: reopening again cannot help
            except Exception:
                continue
            self._count("reopens")
            self._progress_ns = time.monotonic_ns()
            self._start_reader()
            return

    def _start_reader(self) -> None:
        with self._cond:
            self._reader_error, self._reader_ended = None, False
            gen = self._gen
        self._reader = threading.Thread(
            target=self._read_loop, args=(gen,), name=f"{self._name}-read{gen}", daemon=True
        )
        self._reader.start()

    def _abandon_reader(self) -> None:
        """Stop listening to the current reader; wait briefly for it to leave by itself (a read
        that returns), else leave it blocked: it exits when its read returns."""
        with self._cond:
            self._gen += 1
        reader = self._reader
        if reader is not None:
            reader.join(timeout=min(0.25, self.source.options.read_timeout_s))
            if reader.is_alive():
                self._count("stalls")
        self._reader = None
        self._read_since_ns = None

    # -- the reader ---------------------------------------------------------------------------
    def _read_loop(self, gen: int) -> None:
        src = self.source
        try:
            while not self._stop.is_set() and gen == self._gen:
                self._read_since_ns = time.monotonic_ns()
                frame = src.read()
                if gen != self._gen:  # abandoned while reading
                    if frame is not None:
                        self._count("abandoned_frames")
                    return
                self._read_since_ns = None
                if frame is None:
                    if src.ended:
                        self._signal(gen, ended=True)
                        return
                    self._stop.wait(0.001)
                    continue
                self._progress_ns = frame.t_capture_ns
                if self._gap is not None:
                    self._close_gap(frame.id, frame.t_capture_ns)
                    opts = src.options
                    self._delays = backoff_delays(opts.backoff_initial_s, opts.backoff_max_s)
                self._last_frame = (frame.id, frame.t_capture_ns)
                self._push(frame, gen)
        except BaseException as e:
            self._signal(gen, error=e)

    def _signal(self, gen: int, *, error: BaseException | None = None, ended: bool = False) -> None:
        with self._cond:
            if gen != self._gen:
                return
            self._reader_error, self._reader_ended = error, ended
        self._wake.set()

    def _close_gap(self, first_id: int | None, end_ns: int) -> None:
        with self._cond:
            g, self._gap = self._gap, None
        if g is None:
            return
        fps = self.source.nominal_fps
        missed = max(0, round((end_ns - g.start_ns) * fps / 1e9) - 1) if fps else None
        event = GapEvent(
            g.start_ns, end_ns, g.last_id_before, first_id, g.attempts, missed, g.reason
        )
        with self._cond:
            self._gaps.append(event)

    def _count(self, key: str) -> None:
        with self._cond:
            self._n[key] += 1

    def _push(self, frame: Frame, gen: int) -> None:
        with self._cond:
            n = self._n
            if gen != self._gen:  # abandoned between its read and here
                n["abandoned_frames"] += 1
                return
            n["captured"] += 1
            if self.policy.kind == "latest":
                if self._buf:
                    old = self._buf.popleft()
                    n["dropped"] += 1
                    self._dropped_ids.append(old.id)
            elif len(self._buf) >= self.policy.capacity:
                if self.source.is_live:  # a camera cannot wait: record the overrun
                    n["overruns"] += 1
                    self._overrun_ids.append(frame.id)
                    self._pending_overruns.append(frame.id)
                    return
                n["backpressure_waits"] += 1
                while len(self._buf) >= self.policy.capacity and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    n["discarded"] += 1
                    return
            self._buf.append(dataclasses.replace(frame, t_queued_ns=time.monotonic_ns()))
            n["max_queued"] = max(n["max_queued"], len(self._buf))
            self._cond.notify_all()
        if self.on_frame is not None:
            self.on_frame()


def retryable(src: Source, error: SourceError, open_timeout_s: float) -> bool:
    """Whether a failed first open is retried: a live source that may come up later, not a
    setting it refuses."""
    return src.is_live and open_timeout_s > 0 and not isinstance(error, SourceSettingError)


def _plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False  # nothing can ask it to stop (Ctrl-C raises)


def retry_first_open(
    src: Source,
    first: BaseException,
    limit_s: float,
    *,
    report: Callable[[str], None] = _stderr,
    sleep: Callable[[float], bool] | None = None,
    attempted: Callable[[], None] = lambda: None,
    attempts: int = 1,
) -> bool:
    """Retry opening ``src`` (whose first open failed with ``first``) with backoff for
    ``limit_s`` seconds, reporting each attempt: a camera that boots after the Jetson. True once
    open; False when ``sleep`` (True: stop asked) ends it; SourceError past the limit."""
    deadline = time.monotonic() + limit_s
    delays = backoff_delays(src.options.backoff_initial_s, src.options.backoff_max_s)
    pause = sleep if sleep is not None else _plain_sleep
    error = first
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SourceError(
                f"{src!r} did not open within --open-timeout {limit_s:g} s ({attempts} "
                f"attempts); last error: {error}. Check the camera's power, cable or "
                "address, or raise --open-timeout"
            ) from error
        delay = min(next(delays), left)
        report(
            f"open attempt {attempts} of {src!r} failed: {error}; next in {delay:.1f} s "
            f"(giving up {left:.0f} s from now)"
        )
        if pause(delay):
            return False
        attempted()
        attempts += 1
        try:
            src.open()
        except SourceSettingError:
            raise  # it answered this time, and refuses a setting
        except SourceError as e:
            error = e
            continue
        report(f"{src!r} opened on attempt {attempts}")
        return True
