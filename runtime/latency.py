"""Latency statistics, the one module for them: exact percentiles for the profiler
(:class:`Recorder`, :class:`Series`, :func:`summarize_ns`) and constant-memory ones for long runs
(:class:`StageStats`, ``edge run``'s summary), with the same summary keys.

Durations are collected in integer nanoseconds (``time.perf_counter_ns`` /
``time.monotonic_ns``) in compact ``array('q')`` buffers (8 bytes a value, O(1) append, no
Python object per value), and summarised on demand in milliseconds. Percentiles use numpy's
default ``'linear'`` method and reproduce ``np.percentile`` exactly: for the sorted values
``x[0..n-1]`` the q-th percentile is ``x[i] + (x[i+1] - x[i]) * g`` with ``i + g = (n-1)*q/100``
(the same interpolation formula, evaluated in the same order, as numpy).

Summary dict (one per stage, the ``stats`` object of report.json)::

    {"count": n, "mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"}

With no values, ``count`` is 0 and every other field is None.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edge.core.errors import ConfigError

QUANTILES = (50, 90, 99)
STAT_KEYS = ("count", "mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
"""The keys of one stage's summary, in order."""


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0..100) of ``values`` by linear interpolation between the closest
    ranks; equal to ``np.percentile(values, q)`` (numpy's default method)."""
    return percentiles(values, (q,))[0]


def percentiles(values: Sequence[float] | np.ndarray, qs: Iterable[float]) -> list[float]:
    """Several percentiles of the same values (sorted once)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ConfigError("percentile of an empty series: no samples were measured")
    out = []
    for q in qs:
        if not 0.0 <= q <= 100.0 or math.isnan(q):
            raise ConfigError(f"percentile {q!r} is not in 0..100")
        virtual = (n - 1) * (np.float64(q) / 100)
        lo = int(np.floor(virtual))
        hi = min(lo + 1, n - 1)
        gamma = virtual - lo
        a, b = x[lo], x[hi]
        diff = b - a
        value = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma  # numpy's _lerp
        out.append(float(value))
    return out


def summarize_ns(
    values_ns: Sequence[int] | np.ndarray, quantiles: Iterable[float] = QUANTILES
) -> dict[str, Any]:
    """count, mean, min, percentiles and max of nanosecond durations, in milliseconds."""
    x = np.asarray(values_ns, dtype=np.float64).ravel()
    qs = tuple(quantiles)
    if x.size == 0:
        return {
            "count": 0,
            "mean_ms": None,
            "min_ms": None,
            **{f"p{q:g}_ms": None for q in qs},
            "max_ms": None,
        }
    ps = percentiles(x, qs)
    d: dict[str, Any] = {
        "count": int(x.size),
        "mean_ms": float(x.mean()) / 1e6,
        "min_ms": float(x.min()) / 1e6,
    }
    for q, p in zip(qs, ps):
        d[f"p{q:g}_ms"] = p / 1e6
    d["max_ms"] = float(x.max()) / 1e6
    return {k: (v if k == "count" else round(v, 6)) for k, v in d.items()}


def throughput_fps(frames: int, seconds: float) -> float | None:
    """Frames per second, None when nothing was timed."""
    return round(frames / seconds, 3) if seconds > 0 and frames > 0 else None


class Series:
    """One stage's durations (ns) and, per value, the time it was recorded (ns, any clock)."""

    __slots__ = ("_t", "_v")

    def __init__(self) -> None:
        self._v = array("q")
        self._t = array("q")

    def append(self, ns: int, t_ns: int = 0) -> None:
        self._v.append(int(ns))
        self._t.append(int(t_ns))

    def __len__(self) -> int:
        return len(self._v)

    @property
    def values(self) -> np.ndarray:
        """The durations in ns (a copy, int64)."""
        return np.frombuffer(self._v, dtype=np.int64).copy() if self._v else np.zeros(0, np.int64)

    @property
    def times(self) -> np.ndarray:
        return np.frombuffer(self._t, dtype=np.int64).copy() if self._t else np.zeros(0, np.int64)

    def summary(self, quantiles: Iterable[float] = QUANTILES) -> dict[str, Any]:
        return summarize_ns(self.values, quantiles)


class Recorder:
    """Per-stage :class:`Series`, fed one frame's ``{stage: ns}`` at a time.

    Stages keep first-seen order; a frame that lacks a stage (a head that was not due) adds
    nothing to it, so each stage's count is the number of frames on which it ran.
    """

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.frames = 0

    def add(self, timings_ns: Mapping[str, int], t_ns: int = 0) -> None:
        self.frames += 1
        for stage, ns in timings_ns.items():
            s = self.series.get(stage)
            if s is None:
                s = self.series[stage] = Series()
            s.append(ns, t_ns)

    @property
    def stages(self) -> list[str]:
        return list(self.series)

    def values_ns(self, stage: str) -> np.ndarray:
        s = self.series.get(stage)
        return s.values if s is not None else np.zeros(0, np.int64)

    def summary(self, quantiles: Iterable[float] = QUANTILES) -> dict[str, dict[str, Any]]:
        return {name: s.summary(quantiles) for name, s in self.series.items()}


class StageStats:
    """Per-stage count, mean, min, max (exact) and percentiles (within 1 %) of nanosecond
    durations, in constant memory: a log-spaced histogram per stage. Feed it every frame's
    ``timings_ns`` (the profiler can reuse it as is)."""

    _LOG_STEP = math.log(1.01)

    def __init__(self) -> None:
        self._hist: dict[str, dict[int, int]] = {}
        self._sum: dict[str, int] = {}
        self._min: dict[str, int] = {}
        self._max: dict[str, int] = {}

    def add(self, timings_ns: Mapping[str, int]) -> None:
        for stage, ns in timings_ns.items():
            self.add_one(stage, ns)

    def add_one(self, stage: str, ns: int) -> None:
        hist = self._hist.get(stage)
        if hist is None:
            hist = self._hist[stage] = {}
            self._sum[stage], self._min[stage], self._max[stage] = 0, ns, ns
        b = int(math.log(ns) / self._LOG_STEP) if ns > 0 else -1
        hist[b] = hist.get(b, 0) + 1
        self._sum[stage] += ns
        if ns < self._min[stage]:
            self._min[stage] = ns
        elif ns > self._max[stage]:
            self._max[stage] = ns

    @property
    def stages(self) -> list[str]:
        return list(self._hist)

    def count(self, stage: str) -> int:
        return sum(self._hist.get(stage, {}).values())

    def percentile(self, stage: str, q: float) -> float:
        """The q-th percentile (0..100) in nanoseconds (bucket centre, clamped to min/max)."""
        hist = self._hist[stage]
        n = sum(hist.values())
        rank = max(1, math.ceil(q / 100.0 * n))
        seen = 0
        for b in sorted(hist):
            seen += hist[b]
            if seen >= rank:
                centre = 0.0 if b < 0 else math.exp((b + 0.5) * self._LOG_STEP)
                return min(max(centre, self._min[stage]), self._max[stage])
        return float(self._max[stage])

    def summary(self, quantiles: Iterable[float] = (50, 90, 99)) -> dict[str, dict[str, float]]:
        """{stage: {count, mean_ms, min_ms, p50_ms, ..., max_ms}}."""
        out = {}
        for s in self._hist:
            n = self.count(s)
            d: dict[str, float] = {
                "count": n,
                "mean_ms": self._sum[s] / n / 1e6,
                "min_ms": self._min[s] / 1e6,
            }
            for q in quantiles:
                d[f"p{q:g}_ms"] = self.percentile(s, q) / 1e6
            d["max_ms"] = self._max[s] / 1e6
            out[s] = {k: (round(v, 4) if k != "count" else v) for k, v in d.items()}
        return out
