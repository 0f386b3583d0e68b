"""What ``edge build`` prints: its own lines, TensorRT's log and the build's progress.

Everything goes to stderr as ``[build <part>.<precision>] ...``. TensorRT's own log comes through
the process's one logger (edge.core.lazy_trt.trt_logger), pointed at the current job; the errors
it collects go into ``EngineBuildError`` messages. ``progress_monitor`` prints the top build
phases (TensorRT 9+).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt as trt  # noqa: TID251  (types only; the module is imported lazily)
else:
    from edge.core.lazy_trt import trt


def say(label: str, msg: str) -> None:
    print(f"[build {label}] {msg}", file=sys.stderr, flush=True)


def progress_monitor(label: str) -> trt.IProgressMonitor:
    """An IProgressMonitor (TensorRT 10+) printing the top phases' start, steps and end.
    TensorRT calls it from several threads, hence the lock."""

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._depth: dict[str, int] = {}
            self._steps: dict[str, int] = {}
            self._t0: dict[str, float] = {}
            self._tty = sys.stderr.isatty()

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name], self._steps[phase_name] = depth, num_steps
                self._t0[phase_name] = time.monotonic()
                if depth <= 1:
                    say(label, f"{'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                if self._tty and self._depth.get(phase_name, 9) <= 1:
                    total = max(self._steps.get(phase_name, 1), 1)
                    sys.stderr.write(f"\r[build {label}] {phase_name}: {step + 1}/{total}")
                    sys.stderr.flush()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                depth = self._depth.pop(phase_name, 0)
                took = time.monotonic() - self._t0.pop(phase_name, time.monotonic())
                if depth <= 1:
                    if self._tty:
                        sys.stderr.write("\r\033[K")
                    say(label, f"{'  ' * depth}{phase_name} done in {took:.1f} s")

    return _Progress()
