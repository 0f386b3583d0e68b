"""Percentile maths against numpy, summaries and the streaming collectors."""

from __future__ import annotations

import numpy as np
import pytest

from edge.core.errors import ConfigError
from edge.runtime.latency import (
    STAT_KEYS,
    Recorder,
    Series,
    percentile,
    percentiles,
    summarize_ns,
    throughput_fps,
)

QS = (0, 1, 10, 25, 50, 62.5, 90, 95, 99, 99.9, 100)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 101, 1000])
def test_percentiles_equal_numpy_on_random_data(n: int) -> None:
    rng = np.random.default_rng(n)
    for data in (rng.exponential(3.0, n), rng.integers(0, 5_000_000, n), rng.normal(0, 1, n)):
        got = percentiles(data, QS)
        want = np.percentile(data, QS)
        np.testing.assert_array_equal(got, want)


def test_percentile_edge_cases() -> None:
    assert percentile([4.2], 0) == percentile([4.2], 99) == 4.2  # one sample
    ties = [3, 3, 3, 3, 7]
    for q in QS:
        assert percentile(ties, q) == np.percentile(ties, q)
    assert percentile(ties, 50) == 3.0
    assert percentile([1, 2], 50) == 1.5  # interpolates between ranks
    assert percentile([5, 1, 3], 50) == 3.0  # order does not matter
    rng = np.random.default_rng(0)
    many_ties = rng.integers(0, 3, 500)
    for q in rng.uniform(0, 100, 50):
        assert percentile(many_ties, float(q)) == np.percentile(many_ties, q)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="empty"):
        percentile([], 50)
    with pytest.raises(ConfigError, match=r"0\.\.100"):
        percentile([1.0], 101)
    with pytest.raises(ConfigError, match=r"0\.\.100"):
        percentile([1.0], float("nan"))


def test_summarize_ns_in_milliseconds() -> None:
    ns = np.array([1_000_000, 2_000_000, 3_000_000, 4_000_000, 100_000_000])
    s = summarize_ns(ns)
    assert list(s) == list(STAT_KEYS)
    assert s["count"] == 5
    assert s["mean_ms"] == pytest.approx(22.0)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["p50_ms"] == 3.0
    assert s["p90_ms"] == pytest.approx(np.percentile(ns, 90) / 1e6)
    assert s["p99_ms"] == pytest.approx(np.percentile(ns, 99) / 1e6)
    empty = summarize_ns([])
    assert empty["count"] == 0 and all(empty[k] is None for k in STAT_KEYS[1:])


def test_series_and_recorder_collect_per_stage() -> None:
    s = Series()
    for i in range(5):
        s.append(i * 10, t_ns=100 + i)
    assert len(s) == 5
    np.testing.assert_array_equal(s.values, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(s.times, [100, 101, 102, 103, 104])
    assert s.values.dtype == np.int64

    rec = Recorder()
    rec.add({"preprocess": 1_000_000, "trunk": 2_000_000, "head:mask": 500_000}, 1)
    rec.add({"preprocess": 3_000_000, "trunk": 4_000_000}, 2)  # mask not due on this frame
    assert rec.frames == 2
    assert rec.stages == ["preprocess", "trunk", "head:mask"]
    summary = rec.summary()
    assert summary["head:mask"]["count"] == 1
    assert summary["trunk"]["mean_ms"] == 3.0
    assert summary["preprocess"]["p50_ms"] == 2.0
    assert rec.values_ns("absent").size == 0


def test_throughput() -> None:
    assert throughput_fps(100, 2.0) == 50.0
    assert throughput_fps(0, 1.0) is None
    assert throughput_fps(10, 0.0) is None
