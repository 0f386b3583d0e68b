from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge.calib.histogram import NUM_BINS, TensorStats, range_for_absmax
from edge.core.errors import CalibrationError


def _fed(name: str, *batches: np.ndarray) -> TensorStats:
    s = TensorStats(name)
    for b in batches:
        s.update(b)
    return s


def test_range_is_smallest_power_of_two_above_absmax() -> None:
    assert range_for_absmax(0.0) == 1.0
    assert range_for_absmax(1.0) == 2.0  # strictly greater: 1.0 must fall inside [0, range)
    assert range_for_absmax(0.99) == 1.0
    assert range_for_absmax(3.0) == 4.0
    assert range_for_absmax(1e-3) == 2.0**-9
    assert range_for_absmax(1000.0) == 1024.0


def test_basic_statistics_and_bins() -> None:
    s = _fed("t", np.array([[-3.0, 0.5], [1.0, 2.5]], dtype=np.float32))
    assert (s.min, s.max, s.absmax, s.count) == (-3.0, 2.5, 3.0, 4)
    assert s.range == 4.0 and s.bin_width == 4.0 / NUM_BINS
    counts = s.counts
    assert counts.sum() == 4
    w = s.bin_width
    for v in (3.0, 0.5, 1.0, 2.5):
        assert counts[int(v // w)] >= 1
    assert s.bin_edges[-1] == 4.0 and s.bin_edges.size == NUM_BINS + 1


def test_all_zero_first_batch_then_real_range() -> None:
    s = _fed("z", np.zeros(10))
    assert s.range == 1.0 and s.absmax == 0.0 and s.counts[0] == 10
    s.update(np.array([1e-3, -2e-3]))
    assert s.range == 2.0**-8  # the zeros did not pin the range at 1.0
    assert s.counts[0] == 10 and s.counts.sum() == 12


def test_range_growth_keeps_counts_and_equals_one_batch() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.3, 20_000)  # absmax ~1.3 -> range 2
    b = rng.normal(0, 2.0, 20_000)  # absmax ~8 -> range 16: three doublings
    s = _fed("t", a)
    r0 = s.range
    s.update(b)
    assert s.range > r0 and math.log2(s.range / r0).is_integer()
    assert s.counts.sum() == s.count == 40_000
    once = _fed("t", np.concatenate([a, b]))
    # Power-of-two ranges make re-binning exact: identical to one batch, not just within a bin.
    np.testing.assert_array_equal(s.counts, once.counts)
    assert s.range == once.range
    # And the percentile agrees with the exact one within a bin.
    exact = np.percentile(np.abs(np.concatenate([a, b])), 99.0)
    assert abs(s.percentile(99.0) - exact) <= s.bin_width


def test_batch_order_and_size_do_not_matter() -> None:
    rng = np.random.default_rng(2)
    data = rng.standard_t(3, 30_000)
    forward = _fed("t", *np.array_split(data, 7))
    backward = _fed("t", *np.array_split(data, 3)[::-1])
    np.testing.assert_array_equal(forward.counts, backward.counts)
    assert (forward.min, forward.max) == (backward.min, backward.max)


def test_merge_equals_one_stream() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.normal(0, s, 5_000) for s in (0.1, 5.0, 0.7, 30.0)]
    left = _fed("t", parts[0], parts[1])
    right = _fed("t", parts[2], parts[3])
    left.merge(right)
    whole = _fed("t", *parts)
    np.testing.assert_array_equal(left.counts, whole.counts)
    assert (left.count, left.min, left.max, left.range) == (
        whole.count,
        whole.min,
        whole.max,
        whole.range,
    )
    # merging a wider stream into a narrower one, and zeros / empty streams
    small = _fed("t", parts[0])
    small.merge(_fed("t", parts[3]))
    np.testing.assert_array_equal(small.counts, _fed("t", parts[0], parts[3]).counts)
    zeros = _fed("t", np.zeros(5))
    zeros.merge(_fed("t", parts[0]))
    assert zeros.counts.sum() == 5_005 and zeros.range == range_for_absmax(np.abs(parts[0]).max())
    wide = _fed("t", parts[1])
    wide.merge(_fed("t", np.zeros(3)))
    assert wide.counts[0] == _fed("t", parts[1]).counts[0] + 3
    empty = TensorStats("t")
    empty.merge(wide)
    np.testing.assert_array_equal(empty.counts, wide.counts)


def test_merge_rejects_another_tensor() -> None:
    with pytest.raises(CalibrationError, match="same tensor"):
        _fed("a", np.ones(2)).merge(_fed("b", np.ones(2)))


def test_memory_does_not_grow_with_batches() -> None:
    rng = np.random.default_rng(4)
    s = TensorStats("t")
    s.update(rng.normal(size=1000))
    sizes = {k: np.asarray(getattr(s, k)).nbytes for k in ("_counts",)}
    for i in range(200):
        s.update(rng.normal(0, 1 + i, size=1000))
    assert s.count == 201_000
    assert {k: np.asarray(getattr(s, k)).nbytes for k in ("_counts",)} == sizes
    # the only array the object holds is the histogram
    arrays = [getattr(s, k) for k in TensorStats.__slots__ if isinstance(getattr(s, k), np.ndarray)]
    assert len(arrays) == 1 and arrays[0].size == NUM_BINS
    assert not hasattr(s, "__dict__")


def test_percentile_matches_numpy_within_a_bin() -> None:
    rng = np.random.default_rng(5)
    data = rng.laplace(0, 1, 100_000)
    s = _fed("t", *np.array_split(data, 4))
    for q in (50.0, 90.0, 99.0, 99.99):
        assert abs(s.percentile(q) - np.percentile(np.abs(data), q)) <= s.bin_width
    assert s.percentile(100.0) == pytest.approx(s.absmax)
    assert s.percentile(99.9999) <= s.absmax
    with pytest.raises(CalibrationError, match=r"\(0, 100\]"):
        s.percentile(0.0)


def test_to_dict_from_dict_round_trip_is_exact() -> None:
    rng = np.random.default_rng(6)
    s = _fed("conv1/out", rng.normal(size=3000), rng.normal(0, 4, size=100))
    d = json.loads(json.dumps(s.to_dict()))
    back = TensorStats.from_dict(d)
    np.testing.assert_array_equal(back.counts, s.counts)
    assert (back.name, back.count, back.min, back.max, back.range) == (
        s.name,
        s.count,
        s.min,
        s.max,
        s.range,
    )
    back.update(np.array([100.0]))  # still usable: grows like the original would
    s.update(np.array([100.0]))
    np.testing.assert_array_equal(back.counts, s.counts)
    empty = TensorStats.from_dict(TensorStats("e").to_dict())
    assert empty.count == 0 and math.isnan(empty.min)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("count", 7, "sum to"),
        ("range", 3.0, "power of two"),
        ("counts", [1, 2], "non-negative integers"),
        ("format", "other", "not tensor statistics"),
        ("format_version", 99, "format version"),
    ],
)
def test_from_dict_rejects_inconsistent(key: str, value: object, match: str) -> None:
    d = _fed("t", np.arange(5.0)).to_dict()
    d[key] = value
    with pytest.raises(CalibrationError, match=match):
        TensorStats.from_dict(d)


def test_rejects_nan_and_non_numeric_batches() -> None:
    s = TensorStats("t")
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        s.update(np.array([1.0, np.nan]))
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        s.update(np.array([1.0, np.inf]))
    with pytest.raises(CalibrationError, match="dtype"):
        s.update(np.array(["a"]))
    assert s.count == 0  # nothing half-applied
    s.update(np.array([], dtype=np.float32))
    assert s.count == 0


def test_integer_and_float16_batches() -> None:
    s = _fed("t", np.array([-5, 3], dtype=np.int8), np.array([0.5], dtype=np.float16))
    assert s.absmax == 5.0 and s.count == 3 and s.range == 8.0


def test_float32_binning_equals_float64_binning() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(200_000) * 5).astype(np.float32)
    edges = TensorStats("probe")
    edges.update(x)
    on_edges = (np.arange(-2048, 2048) * (edges.range / 2048)).astype(np.float32)
    data = np.concatenate([x, on_edges])  # values exactly on bin edges too
    a, b = TensorStats("t"), TensorStats("t")
    a.update(data)
    b.update(data.astype(np.float64))
    assert np.array_equal(a.counts, b.counts)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_narrow_floats_bin_like_float64(dtype: type, signed: bool) -> None:
    """float16/float32 batches are binned in float32 (non-negative ones without the abs): the
    same bins as the float64 path, including values on bin edges."""
    rng = np.random.default_rng(3)
    x = rng.gamma(0.5, 1.0, 50_000).astype(dtype)
    if signed:
        x[::3] *= -1
    edges = (np.arange(0, 2048, 7) * (4.0 / 2048)).astype(dtype)  # exact bin edges of range 4
    x = np.concatenate([x, edges, np.zeros(5, dtype)])
    x = x[np.abs(x.astype(np.float64)) < 4.0]
    narrow, wide = _fed("t", x), _fed("t", x.astype(np.float64))
    assert narrow.range == wide.range
    np.testing.assert_array_equal(narrow.counts, wide.counts)
