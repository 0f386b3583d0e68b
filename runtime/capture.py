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

A live source that stops delivering (``read()`` raises, or returns nothing for longer than
``options.read_timeout_s``) is closed and reopened with exponential backoff (``backoff_initial_s``
doubling up to ``backoff_max_s``); frame ids continue and a :class:`GapEvent` is recorded. A
finite source is never reopened: when it ends, the consumer drains the buffer, then ``get()``
returns None and ``ended`` is True. If capture fails for good (a finite source's read error, or
a live one with ``reconnect=False``), ``get()`` raises that error once the buffer is drained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from edge.core.errors import ConfigError, EdgeError, SourceError
from edge.runtime.sources.base import Frame, Source

POLICY_FORMS = "'latest' (keep the newest frame, count drops) or 'fifo:N' (N >= 1, bounded queue)"


@dataclass(frozen=True)
class FramePolicy:
    """``kind`` "latest" (capacity 1) or "fifo" (capacity N)."""

    kind: str
    capacity: int = 1

    def __str__(self) -> str:
        return "latest" if self.kind == "latest" else f"fifo:{self.capacity}"


def parse_policy(text: str) -> FramePolicy:
    """Parse "latest" or "fifo:N"; raises :class:`ConfigError` otherwise."""
    t = str(text).strip().lower()
    if t == "latest":
        return FramePolicy("latest", 1)
    kind, _, n = t.partition(":")
    if kind == "fifo" and n.strip().isdigit() and int(n) >= 1:
        return FramePolicy("fifo", int(n))
    raise ConfigError(f"frame policy {text!r} is not valid: expected {POLICY_FORMS}")


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """Reopen delays: initial, doubling, capped at ``max_s`` (endless)."""
    delay = initial_s
    while True:
        yield min(delay, max_s)
        delay = min(delay * 2, max_s)


@dataclass(frozen=True)
class GapEvent:
    """A live source stopped delivering and was reopened.

    ``start_ns`` is the capture time of the last frame before the failure (or of the open, if
    none came), ``end_ns`` that of the first frame after recovery (the stop time if the source
    had not recovered when capture stopped; then ``first_id_after`` is None).
    ``frames_missed_estimate`` uses the source's nominal fps (None when unknown).
    """

    start_ns: int
    end_ns: int
    last_id_before: int | None
    first_id_after: int | None
    reopen_attempts: int
    frames_missed_estimate: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CaptureStats:
    """A consistent snapshot of the capture counters (ids lists hold the most recent ids)."""

    policy: str
    captured: int
    delivered: int
    dropped: int
    overruns: int
    queued: int
    max_queued: int
    discarded: int
    backpressure_waits: int
    read_failures: int
    reopens: int
    reopen_attempts: int
    dropped_ids: tuple[int, ...]
    overrun_ids: tuple[int, ...]
    gaps: tuple[GapEvent, ...]
    ended: bool
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gaps"] = [g.to_dict() for g in self.gaps]
        return d


@dataclass
class _PendingGap:
    start_ns: int
    last_id_before: int | None
    reason: str
    attempts: int = 0


class CaptureThread:
    """Reads ``source`` on a daemon thread; the consumer calls :meth:`get`.

    ``start()`` opens the source in the caller's thread, so a source that cannot be opened at
    all raises :class:`SourceError` there (no retries). Use as a context manager, or call
    ``start()`` / ``stop()`` / ``join()``.
    """

    def __init__(
        self,
        source: Source,
        policy: FramePolicy | str = "latest",
        *,
        max_recorded_ids: int = 10_000,
        name: str = "edge-capture",
    ) -> None:
        self.source = source
        self.policy = parse_policy(policy) if isinstance(policy, str) else policy
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._buf: deque[Frame] = deque()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = self._done = False
        self._error: BaseException | None = None
        self._n = dict.fromkeys(
            (
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
            ),
            0,
        )
        self._dropped_ids: deque[int] = deque(maxlen=max_recorded_ids)
        self._overrun_ids: deque[int] = deque(maxlen=max_recorded_ids)
        self._pending_overruns: deque[int] = deque(maxlen=max_recorded_ids)
        self._gaps: deque[GapEvent] = deque(maxlen=max_recorded_ids)
        self._gap: _PendingGap | None = None
        self._last_frame: tuple[int, int] | None = None  # (id, t_capture_ns)
        self._progress_ns = 0

    # -- consumer side ----------------------------------------------------------------------
    def start(self) -> CaptureThread:
        """Open the source (if not open yet) and start capturing."""
        if self._started:
            raise SourceError(f"capture of {self.source!r} was already started")
        if not self.source.is_open:
            self.source.open()
        self._progress_ns = time.monotonic_ns()
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
        while (frame := self.get()) is not None:
            yield frame

    def pop_overruns(self) -> list[int]:
        """Ids of frames overrun since the last call (mark those parts "not inspected")."""
        with self._cond:
            ids = list(self._pending_overruns)
            self._pending_overruns.clear()
            return ids

    def stop(self) -> None:
        """Ask the thread to finish (interrupts backoff and backpressure waits)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has finished (False if a read is still blocked)."""
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

    # -- producer side ----------------------------------------------------------------------
    def _failure(self) -> EdgeError:
        e = self._error
        if isinstance(e, EdgeError):
            return e
        err = SourceError(f"capture from {self.source!r} failed: {type(e).__name__}: {e}")
        err.__cause__ = e
        return err

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:
            self._error = e
        finally:
            if self._gap is not None:  # stopped while the source was still down
                self._close_gap(None, time.monotonic_ns())
            with contextlib.suppress(Exception):
                self.source.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _loop(self) -> None:
        src, opts = self.source, self.source.options
        reconnect = src.is_live and opts.reconnect
        stall_s = src.stall_timeout_s  # None: a triggered camera, silent between triggers
        timeout_ns = int(stall_s * 1e9) if stall_s is not None else None
        delays = backoff_delays(opts.backoff_initial_s, opts.backoff_max_s)
        while not self._stop.is_set():
            try:
                frame = src.read()
            except Exception as e:
                self._count("read_failures")
                if not reconnect:
                    raise
                self._reopen(f"read raised {type(e).__name__}: {e}", delays)
                continue
            if frame is None:
                if src.ended:
                    return
                if timeout_ns is not None and time.monotonic_ns() - self._progress_ns > timeout_ns:
                    reason = f"no frame for {stall_s:g} s"
                    self._count("read_failures")
                    if not reconnect:
                        raise SourceError(f"{src!r}: {reason} and reconnect is off")
                    self._reopen(reason, delays)
                else:
                    self._stop.wait(0.001)
                continue
            self._progress_ns = frame.t_capture_ns
            if self._gap is not None:
                self._close_gap(frame.id, frame.t_capture_ns)
                delays = backoff_delays(opts.backoff_initial_s, opts.backoff_max_s)
            self._last_frame = (frame.id, frame.t_capture_ns)
            self._push(frame)

    def _reopen(self, reason: str, delays: Iterator[float]) -> None:
        """Close the live source and reopen it, waiting the next backoff delay before each try."""
        if self._gap is None:
            last_id, last_ns = self._last_frame or (None, self._progress_ns)
            self._gap = _PendingGap(last_ns, last_id, reason)
        with contextlib.suppress(Exception):
            self.source.close()
        for delay in delays:
            if self._stop.wait(delay):
                return
            self._gap.attempts += 1
            self._count("reopen_attempts")
            try:
                self.source.open()
            except Exception:
                continue
            self._count("reopens")
            self._progress_ns = time.monotonic_ns()
            return

    def _close_gap(self, first_id: int | None, end_ns: int) -> None:
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

    def _push(self, frame: Frame) -> None:
        with self._cond:
            n = self._n
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
