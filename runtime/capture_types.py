"""The values of the capture thread (:mod:`edge.runtime.capture`): the frame policy, the reopen
backoff, gap events and the statistics snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge.core.errors import ConfigError

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
    stalls: int
    """Reads that blocked past the read timeout: their reader thread was abandoned."""
    abandoned_frames: int
    """Frames an abandoned read returned late (discarded: the source had been reopened)."""
    open_attempts: int
    """Attempts of the first open (1 when it opened at once; 0 when opened before start)."""
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
class PendingGap:
    """A gap still open (the source has not delivered since)."""

    start_ns: int
    last_id_before: int | None
    reason: str
    attempts: int = 0
