"""A live camera made of frames held in memory: station benchmarks and tests without cameras.

``ReplaySource(frames, fps=30)`` delivers the frames in a loop, paced like a free-running camera
(absolute schedule, no catch-up bursts), so reading costs nothing but the wait: unlike the
``synthetic:`` line, which renders every frame, it measures the consumer, not the renderer.
``stall=(k, s)``: after the k-th frame it delivers nothing for ``s`` seconds, as a camera that
hangs (the capture thread then reopens it after ``read_timeout_s`` and records a gap).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.core.errors import ConfigError
from edge.runtime.sources.base import RawFrame, Source, SourceOptions


class ReplaySource(Source):
    """``frames``: uint8 HxWx3 BGR images (delivered as read-only views, in a loop)."""

    kind = "replay"
    live = True

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        *,
        fps: float = 30.0,
        stall: tuple[int, float] | None = None,
        name: str = "replay",
        options: SourceOptions | None = None,
    ) -> None:
        if not frames or not fps > 0:
            raise ConfigError("ReplaySource needs at least one frame and fps > 0")
        super().__init__(f"replay:{name}", options)
        self.frames = [np.ascontiguousarray(f) for f in frames]
        for f in self.frames:
            f.flags.writeable = False
        self.fps, self.stall = float(fps), stall
        self.period_ns = int(1e9 / self.fps)
        self._count = 0
        self._next_ns: int | None = None
        self._stall_until: int | None = None

    @property
    def nominal_fps(self) -> float | None:
        return self.fps

    def _open_impl(self) -> None:
        self._next_ns = None

    def _read_impl(self) -> RawFrame | None:
        now = time.monotonic_ns()
        if self.stall is not None and self._count == self.stall[0]:
            if self._stall_until is None:
                self._stall_until = now + int(self.stall[1] * 1e9)
            if now < self._stall_until:
                time.sleep(min(0.01, (self._stall_until - now) / 1e9))
                return None
            self._next_ns = None
        if self._next_ns is None or now - self._next_ns > self.period_ns:
            self._next_ns = now
        elif self._next_ns > now:
            time.sleep((self._next_ns - now) / 1e9)
        self._next_ns += self.period_ns
        i = self._count
        self._count += 1
        return RawFrame(self.frames[i % len(self.frames)], i)

    def _close_impl(self) -> None:
        pass

    def _describe_impl(self) -> dict[str, Any]:
        h, w = self.frames[0].shape[:2]
        return {"frames": len(self.frames), "fps": self.fps, "width": w, "height": h}
