from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edge.calib.algorithms import (
    ALGORITHMS,
    MIN_AMAX,
    amax_entropy,
    amax_minmax,
    amax_percentile,
    choose_mse,
    compute_amax,
    kl_divergences,
    quantization_mse,
    scale_from_amax,
)
from edge.calib.histogram import TensorStats
from edge.core.errors import CalibrationError, ConfigError


def _stats(*batches: np.ndarray, name: str = "t") -> TensorStats:
    s = TensorStats(name)
    for b in batches:
        s.update(b)
    return s


def _reference_divergences(hist: np.ndarray) -> np.ndarray:
    """A literal, loop-by-loop port of pytorch-quantization's _compute_amax_entropy (scipy's
    entropy written out: infinite where Q is 0 but P is not)."""
    bins = np.array(hist, dtype=np.float64)
    bins[0] = bins[1]
    out = []
    for i in range(128, len(bins) + 1):
        space = np.linspace(0, i, num=128 + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        level = np.zeros(128)
        for idx, d in enumerate(digitized):
            if d != -1:
                level[d] += bins[idx]
        for key, val in Counter(digitized).items():
            if key != -1:
                level[key] /= val
        q = np.array([level[d] if d != -1 else 0.0 for d in digitized])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        if q.sum() == 0:
            out.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        if np.any((q == 0) & (p > 0)):
            out.append(np.inf)
            continue
        m = p > 0
        out.append(float(np.sum(p[m] * np.log(p[m] / q[m]))))
    return np.array(out)


def test_divergences_match_the_reference_loop() -> None:
    rng = np.random.default_rng(0)
    # a 512-bin histogram with a gap and isolated outliers (candidates in the gap: infinite)
    hist = np.zeros(512, dtype=np.int64)
    hist[:200] = rng.poisson(np.linspace(500, 1, 200))
    hist[300] = 2
    hist[511] = 1
    ours = kl_divergences(hist)
    ref = _reference_divergences(hist)
    assert ours.shape == ref.shape == (512 - 128 + 1,)
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-9, atol=1e-12)
    # and a real 2048-bin histogram of Gaussian data
    s = _stats(rng.normal(size=50_000))
    np.testing.assert_allclose(
        kl_divergences(s.counts), _reference_divergences(s.counts), rtol=1e-9, atol=1e-12
    )


def test_divergence_is_infinite_with_nothing_below_threshold() -> None:
    hist = np.zeros(256, dtype=np.int64)
    hist[200] = 10
    div = kl_divergences(hist)
    assert np.isinf(div[: 200 - 128 + 1]).all()  # thresholds at or below bin 200 hold no data
    assert np.isfinite(div[200 - 128 + 1 :]).all()


def test_minmax_is_exact_absmax() -> None:
    s = _stats(np.array([0.1, -7.25, 3.0]), np.array([[7.0]]))
    assert amax_minmax(s) == 7.25
    assert compute_amax(s, "minmax") == 7.25


def test_percentile_close_to_numpy() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(0, 2, 200_000)
    s = _stats(*np.array_split(data, 5))
    for q in (99.0, 99.99):
        exact = np.percentile(np.abs(data), q)
        assert abs(amax_percentile(s, q) - exact) <= s.bin_width
    assert compute_amax(s, "percentile", percentile=99.0) == amax_percentile(s, 99.0)
    with pytest.raises(ConfigError, match="percentile"):
        amax_percentile(s, 101.0)


@pytest.mark.parametrize("a", [0.7, 1.5, 3.0, 100.0])
def test_entropy_of_uniform_is_its_bound(a: float) -> None:
    rng = np.random.default_rng(2)
    s = _stats(rng.uniform(-a, a, 300_000))
    assert amax_entropy(s) == pytest.approx(a, rel=0.02)
    assert amax_entropy(s) <= s.absmax


def test_entropy_keeps_a_light_tail_and_clips_a_heavy_one() -> None:
    rng = np.random.default_rng(3)
    gauss = _stats(*(rng.normal(size=100_000) for _ in range(4)))
    # as in the reference: the sparse end of a Gaussian is no reason to clip (its gap bins are
    # infinite, and the divergence of coarser levels over a smooth bulk is tiny)
    assert amax_entropy(gauss) == gauss.absmax
    heavy = _stats(*(rng.standard_t(3, size=100_000) for _ in range(4)))
    assert 10.0 < amax_entropy(heavy) < heavy.absmax / 2  # a long tail is clipped


def test_entropy_amax_matches_the_reference_loop() -> None:
    rng = np.random.default_rng(7)
    for data in (rng.laplace(size=80_000), np.maximum(rng.lognormal(0, 1, 80_000) - 1, 0)):
        s = _stats(data)
        div = _reference_divergences(s.counts)
        i = 128 + div.size - 1 - int(np.argmin(div[::-1]))  # last argmin, as the reference
        assert amax_entropy(s) == min(i * s.bin_width, s.absmax)


def test_entropy_never_stops_in_an_empty_bin_of_the_tail() -> None:
    """Issue 4: a dense bulk, then a sparse tail with gaps holding < 1e-4 of the data. A gap
    candidate is infinite and the threshold ends on a non-empty bin (or past the data); the
    former single-bin smoothing (Q[i-1] = 1e-4) made gap bins cheap and clipped too much."""
    hist = np.zeros(2048, dtype=np.int64)
    hist[:900] = np.linspace(200_000, 1_000, 900).astype(np.int64)
    hist[900:1400:7] = 3  # sparse tail: one non-empty bin in seven
    hist[1500] = 1
    s = TensorStats.from_dict(
        {
            **TensorStats("t").to_dict(),
            "count": int(hist.sum()),
            "counts": hist.tolist(),
            "min": 0.0,
            "max": 1500.5 / 128,
            "range": 16.0,
        }
    )
    div = kl_divergences(hist)
    cand = np.arange(128, 2049)
    beyond = hist.sum() - np.concatenate(([0], np.cumsum(hist)))[cand]
    gap = (hist[cand - 1] == 0) & (beyond > 0)
    assert np.isinf(div[gap]).all() and np.isfinite(div[~gap]).all()
    i = round(amax_entropy(s) / s.bin_width)
    assert hist[i - 1] > 0 or hist[i:].sum() == 0


def test_entropy_clips_isolated_outliers() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(size=200_000)
    data[:3] = [40.0, -35.0, 50.0]
    s = _stats(data)
    amax = amax_entropy(s)
    assert amax_minmax(s) == 50.0
    assert amax < 10.0  # well below the outliers
    assert amax > 2.0  # but keeps the bulk of the distribution


def test_entropy_post_relu_and_zero_tensor() -> None:
    rng = np.random.default_rng(5)
    s = _stats(np.maximum(rng.normal(size=200_000), 0.0))  # half the values are exactly zero
    assert 2.5 < amax_entropy(s) < 5.0
    assert amax_entropy(_stats(np.zeros((4, 4)))) == 0.0


def test_entropy_independent_of_batching() -> None:
    rng = np.random.default_rng(6)
    data = rng.gamma(2.0, 1.0, 60_000)
    assert amax_entropy(_stats(data)) == amax_entropy(_stats(*np.array_split(data[::-1], 9)))


def test_no_data_and_unknown_algorithm() -> None:
    empty = TensorStats("head/tap")
    for name in ALGORITHMS:
        with pytest.raises(CalibrationError, match="head/tap"):
            compute_amax(empty, name)
    with pytest.raises(ConfigError, match="entropy, minmax, mse, percentile"):
        compute_amax(_stats(np.ones(3)), "kl")


def test_scale_from_amax() -> None:
    assert scale_from_amax(127.0) == 1.0
    assert scale_from_amax(1.0) == pytest.approx(1 / 127)
    assert scale_from_amax(0.0) == MIN_AMAX / 127 > 0
    with pytest.raises(CalibrationError):
        scale_from_amax(float("nan"))
    with pytest.raises(CalibrationError):
        scale_from_amax(-1.0)


def _fake_quant_mse(data: np.ndarray, amax: float) -> float:
    step = amax / 127
    return float(np.mean((np.clip(np.round(data / step), -127, 127) * step - data) ** 2))


def _tailed(outliers: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.concatenate([rng.laplace(size=400_000), rng.uniform(20.0, 60.0, outliers)])


def test_quantization_mse_matches_fake_quantized_samples() -> None:
    data = _tailed(20)
    s = _stats(*np.array_split(data, 3))
    for amax in (amax_entropy(s), amax_minmax(s), 4.0):
        assert quantization_mse(s, amax) == pytest.approx(_fake_quant_mse(data, amax), rel=0.01)
    assert quantization_mse(s, 0.0) == pytest.approx(float(np.mean(data**2)), rel=0.01)


@pytest.mark.parametrize(("outliers", "winner"), [(1, "entropy"), (100, "minmax")])
def test_mse_picks_the_lower_error_amax(outliers: int, winner: str) -> None:
    """One outlier: clipping it (entropy) costs less than the coarser steps minmax needs; a tail
    of 100: entropy clips it all (at ~10 of 60) and its clipping error dominates."""
    data = _tailed(outliers)
    s = _stats(data)
    amaxes = {"entropy": amax_entropy(s), "minmax": amax_minmax(s)}
    assert amaxes["entropy"] < amaxes["minmax"] / 3  # the two candidates really differ
    errors = {k: _fake_quant_mse(data, a) for k, a in amaxes.items()}
    assert min(errors, key=errors.__getitem__) == winner
    assert choose_mse(s) == (winner, amaxes[winner])
    assert compute_amax(s, "mse") == amaxes[winner]
