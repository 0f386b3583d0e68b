"""The interleaved run: arms visited round-robin, frame by frame, after a discarded warm-up.

:func:`run_interleaved` runs every :class:`Runner` on the same in-memory frame in each round,
and rotates which one goes first, so slow drift of the machine (clocks, temperature,
background load) and any cache advantage of going first hit every arm alike.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge.core.errors import ConfigError


@dataclass(frozen=True)
class Warmup:
    """Warm-up to discard: ``frames`` rounds, or rounds until ``seconds`` have passed."""

    frames: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str | int | float) -> Warmup:
        """``"20"`` -> 20 frames; ``"2s"`` / ``"500ms"`` -> a duration; ``"0"`` -> none."""
        t = str(text).strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", t)
        if m is None or (m.group(2) is None and "." in m.group(1)):
            raise ConfigError(
                f"--warmup {text!r}: expected a frame count (20) or a duration (2s, 500ms)",
                stage="profile",
            )
        if m.group(2) is None:
            return cls(frames=int(m.group(1)))
        value = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        return cls(seconds=value)

    def done(self, rounds: int, elapsed_s: float) -> bool:
        return rounds >= self.frames and elapsed_s >= self.seconds

    def describe(self) -> str:
        return f"{self.seconds:g} s" if self.seconds else f"{self.frames} frames"


class Runner(Protocol):
    """What :func:`run_interleaved` drives: one frame per ``step``; ``record`` is False
    during the warm-up."""

    @property
    def name(self) -> str: ...

    def step(self, image: np.ndarray, record: bool) -> None: ...

    def close(self) -> None: ...


class ProgressLine:
    """One status line on stderr: rewritten in place on a terminal, else a line every 5 s."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._dirty = False

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        text = f"profile: {phase} {done}" + (f"/{total}" if total else "") + " frames"
        if self.tty:
            self.stream.write("\r" + text.ljust(60))
            self._dirty = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        self.done()
        self.stream.write(f"profile: {text}\n")
        self.stream.flush()

    def done(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self._dirty = False


if TYPE_CHECKING:  # an alias for annotations only (Python 3.8 cannot subscript Callable)
    Progress = Callable[[str, int, int | None], None]


def run_interleaved(
    runners: Sequence[Runner],
    frames: Sequence[np.ndarray],
    *,
    warmup: Warmup,
    count: int | None = None,
    duration_s: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Round-robin over ``runners``, one in-memory frame per round, for ``count`` measured
    rounds or ``duration_s`` seconds after the warm-up. Returns counts and times."""
    if not runners or not frames:
        raise ConfigError("nothing to profile: no arms or no frames", stage="profile")
    if count is None and duration_s is None:
        raise ConfigError("give a frame count or a duration", stage="profile")
    n = len(runners)
    rounds = warm = 0
    t_start = time.monotonic()
    t_measure = t_start
    measuring = warmup.done(0, 0.0)
    while True:
        now = time.monotonic()
        if not measuring and warmup.done(warm, now - t_start):
            measuring, t_measure = True, now
        if measuring and (
            (count is not None and rounds >= count)
            or (duration_s is not None and now - t_measure >= duration_s)
        ):
            break
        i = rounds + warm
        image = frames[i % len(frames)]
        for k in range(n):
            runners[(i + k) % n].step(image, measuring)
        if measuring:
            rounds += 1
            if progress:
                progress("measure", rounds, count)
        else:
            warm += 1
            if progress:
                progress("warm-up", warm, warmup.frames or None)
    return {
        "rounds": rounds,
        "warmup_rounds": warm,
        "warmup_s": round(t_measure - t_start, 4),
        "measure_s": round(time.monotonic() - t_measure, 4),
    }
