"""INT8 calibration algorithms: from a tensor's streamed statistics to its amax (and scale).

Every algorithm returns ``amax``, the clipping threshold of a symmetric int8 range [-amax, amax];
the scale TensorRT stores in its calibration cache is ``amax / 127``.

- ``entropy``: TensorRT's EntropyCalibration2 (KL divergence over the |x| histogram), following
  NVIDIA's reference ``_compute_amax_entropy`` (see ``kl_divergences``).
- ``minmax``: the largest |x| seen (TensorRT's MinMaxCalibration).
- ``percentile``: the given percentile of |x| (99.99 by default); TensorRT has no such calibrator
  (see ``edge.calib.cache.ALGORITHM_NAMES`` for how its caches are labelled).
- ``mse``: per tensor, whichever of ``MSE_CANDIDATES`` (entropy, minmax) gives the lower mean
  squared quantization error over the tensor's histogram (``quantization_mse``); no TensorRT
  calibrator either, labelled like percentile.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from edge.calib.histogram import TensorStats
from edge.core.errors import CalibrationError, ConfigError

START_BIN = 128
"""First candidate threshold bin of the entropy search (TensorRT / pytorch-quantization)."""

NUM_LEVELS = 128
"""Quantized levels of |x|: int8 is a sign plus 7 bits of magnitude."""

MIN_AMAX = 1e-8
"""Smallest amax turned into a scale: below FP16's smallest subnormal (6e-8), i.e. zero."""


def _require_data(stats: TensorStats) -> None:
    if stats.count == 0:
        raise CalibrationError(
            f"tensor '{stats.name}': no activations were collected, so it cannot be calibrated; "
            "check that the calibration frames reach this tensor"
        )


def _xlogx(v: np.ndarray) -> np.ndarray:
    """v * log(v) with 0 log 0 = 0 (float64)."""
    v = np.asarray(v, dtype=np.float64)
    out = np.zeros_like(v)
    pos = v > 0
    out[pos] = v[pos] * np.log(v[pos])
    return out


@functools.lru_cache(maxsize=8)
def _level_edges(n: int, start_bin: int, num_levels: int) -> tuple[np.ndarray, ...]:
    """For candidates ``i`` in ``start_bin .. n``: the first and one-past-last bin of each level
    (level k spans bins [ceil(k*i/L), ceil((k+1)*i/L))), (C, L) each, and the level of bin i-1.
    The same for every tensor of a calibration run, so computed once (read-only arrays)."""
    cand = np.arange(start_bin, n + 1, dtype=np.int64)
    k = np.arange(num_levels + 1, dtype=np.int64)
    edges = (k[None, :] * cand[:, None] + num_levels - 1) // num_levels  # (C, L+1)
    out = (edges[:, :-1].copy(), edges[:, 1:].copy(), ((cand - 1) * num_levels) // cand)
    for a in out:
        a.flags.writeable = False
    return out


def kl_divergences(
    hist: np.ndarray, *, start_bin: int = START_BIN, num_levels: int = NUM_LEVELS
) -> np.ndarray:
    """KL(P || Q) for every candidate threshold bin ``i`` in ``start_bin .. len(hist)``.

    Follows ``_compute_amax_entropy`` in NVIDIA/TensorRT
    tools/pytorch-quantization/pytorch_quantization/calib/histogram.py (the algorithm of the GTC
    2017 talk S7310 "8-bit Inference with TensorRT"):

    - ``bins[0] = bins[1]`` (the near-zero bin, often a huge post-ReLU spike, is replaced);
    - P = bins[:i] with every count of bins[i:] added to P[i-1];
    - Q: bin j < i belongs to level ``floor(j * num_levels / i)`` (the reference's
      ``np.digitize(range(i), np.linspace(0, i, num_levels + 1)) - 1``); each level's count (of
      bins[:i], outliers not included) is spread evenly over its bins that are non-zero; bins
      that are zero stay zero in Q;
    - both normalised; divergence = sum P log(P/Q) (scipy.stats.entropy in the reference).

    No deviation from the reference: when P[i-1] > 0 but Q[i-1] == 0 (an empty last bin that
    got the outliers) the divergence is infinite, as scipy's entropy gives, so a threshold never
    lands in an empty bin of the tail; a candidate with no data below it is infinite too. The
    last candidate (``len(hist)``, nothing beyond it) is always finite when there is data. (An
    earlier version smoothed that one bin to Q[i-1] = 1e-4 instead. That is no smoothing any port
    uses, and it *rewards* the candidate whenever less than 1e-4 of the data lies beyond it, as
    P log(P / 1e-4) is then negative: on the demo model it picked such a gap bin for 17 of the 19
    Q/DQ tensors and clipped up to 30 % below the reference, costing mask IoU; issue 4.)

    Vectorised: with level sums G_k and non-zero bin counts n_k taken from cumulative sums,
    sum_j P_j log Q_j collapses to sum_k G_k log(G_k / n_k) (plus the last-bin outlier term), so
    all candidates cost one (candidates x levels) array; index ``i - start_bin`` of the result is
    candidate ``i``.
    """
    bins = np.asarray(hist, dtype=np.float64).copy()
    n = bins.size
    if n < max(start_bin, 2):
        raise CalibrationError(f"histogram of {n} bins; expected at least {max(start_bin, 2)}")
    bins[0] = bins[1]
    total = bins.sum()
    cand = np.arange(start_bin, n + 1, dtype=np.int64)
    if total <= 0:
        return np.full(cand.size, np.inf)

    csum = np.concatenate(([0.0], np.cumsum(bins)))  # csum[m] = sum bins[:m]
    cnz = np.concatenate(([0], np.cumsum(bins > 0)))  # non-zero bins among bins[:m]
    cxlx = np.concatenate(([0.0], np.cumsum(_xlogx(bins))))  # sum b log b over bins[:m]

    lo, hi, last_level = _level_edges(n, start_bin, num_levels)
    g = csum[hi] - csum[lo]  # level sums G_k
    nz = cnz[hi] - cnz[lo]  # non-zero bins per level n_k
    with np.errstate(divide="ignore", invalid="ignore"):
        glog = np.where(g > 0, g * np.log(np.where(g > 0, g, 1.0) / np.maximum(nz, 1)), 0.0)
    sum_p_log_qraw = glog.sum(axis=1)  # sum_{j<i} b_j log Qraw_j

    s = csum[cand]  # mass below the threshold, S
    out = total - s  # outliers folded into P[i-1]
    last = bins[cand - 1]  # b_{i-1}
    head_xlx = cxlx[cand - 1]  # sum_{j<i-1} b_j log b_j
    # Qraw of the last bin: its level's mean over non-zero bins (only used where last > 0).
    rows = np.arange(cand.size)
    g_last = g[rows, last_level]
    n_last = np.maximum(nz[rows, last_level], 1)
    q_last = np.where(last > 0, g_last / n_last, 1.0)

    log_t = math.log(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(np.where(s > 0, s, 1.0))
        kl = (head_xlx + _xlogx(last + out) - sum_p_log_qraw - out * np.log(q_last)) / total + (
            log_s - log_t
        )
    # Q[i-1] = 0 < P[i-1] (an empty last bin that received outliers): infinite, as the reference
    kl = np.where((last == 0) & (out > 0), np.inf, kl)
    kl = np.where(s > 0, kl, np.inf)
    return np.maximum(kl, 0.0)  # exact arithmetic gives >= 0; clear float noise


def amax_entropy(stats: TensorStats) -> float:
    """TensorRT EntropyCalibration2: the threshold minimising KL(P||Q) (see ``kl_divergences``).

    Threshold = upper edge of bin i-1 (``i * bin_width``) for the min-KL candidate ``i``; among
    equal divergences the largest ``i`` wins, as in the reference. The result is capped at the
    observed absmax (the reference can return up to one bin above it; a threshold above every
    value only wastes range). 0.0 for an all-zero tensor.
    """
    _require_data(stats)
    if stats.absmax == 0.0:
        return 0.0
    div = kl_divergences(stats.counts, start_bin=min(START_BIN, stats.num_bins))
    best = div.size - 1 - int(np.argmin(div[::-1]))
    i = best + min(START_BIN, stats.num_bins)
    return min(i * stats.bin_width, stats.absmax)


def amax_minmax(stats: TensorStats) -> float:
    """TensorRT MinMaxCalibration: the largest |x| seen (exact, not from the histogram)."""
    _require_data(stats)
    return float(stats.absmax)


def amax_percentile(stats: TensorStats, percentile: float = 99.99) -> float:
    """The ``percentile`` of |x| (0 < percentile <= 100), within one histogram bin."""
    _require_data(stats)
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(
            f"calibration percentile {percentile}; expected a number in (0, 100], e.g. 99.99"
        )
    return float(stats.percentile(percentile))


def quantization_mse(stats: TensorStats, amax: float) -> float:
    """Mean squared error of symmetric int8 fake quantization at ``amax`` over ``stats``'s |x|.

    Each histogram bin stands for its centre: it rounds to the nearest multiple of
    ``amax / 127`` (rounding error) or, above ``amax``, is clipped to it (clipping error). 0.0
    for an all-zero tensor; ``amax`` <= 0 quantizes everything to zero.
    """
    _require_data(stats)
    counts = np.asarray(stats.counts, dtype=np.float64)
    centres = (np.arange(counts.size) + 0.5) * stats.bin_width
    if stats.absmax == 0.0:
        return 0.0
    if amax <= 0.0:
        q = np.zeros_like(centres)
    else:
        step = amax / (NUM_LEVELS - 1)
        q = np.minimum(np.round(centres / step), NUM_LEVELS - 1) * step
    return float(np.dot(counts, (q - centres) ** 2) / counts.sum())


MSE_CANDIDATES = ("entropy", "minmax")
"""The algorithms ``mse`` chooses between, per tensor (the first wins a tie)."""


def choose_mse(stats: TensorStats) -> tuple[str, float]:
    """(name, amax) of the ``MSE_CANDIDATES`` algorithm with the lowest ``quantization_mse``."""
    _require_data(stats)
    best: tuple[str, float, float] | None = None
    for name in MSE_CANDIDATES:
        amax = ALGORITHMS[name](stats)
        err = quantization_mse(stats, amax)
        if best is None or err < best[2]:
            best = (name, amax, err)
    assert best is not None  # MSE_CANDIDATES is not empty
    return best[0], best[1]


def amax_mse(stats: TensorStats) -> float:
    """amax of ``choose_mse``: per tensor, the candidate with the lower quantization error."""
    return choose_mse(stats)[1]


ALGORITHMS: dict[str, Callable[..., float]] = {
    "entropy": amax_entropy,
    "minmax": amax_minmax,
    "percentile": amax_percentile,
    "mse": amax_mse,
}
"""etr-edge algorithm name -> function(stats) -> amax."""


def compute_amax(stats: TensorStats, algorithm: str, *, percentile: float = 99.99) -> float:
    """amax of one tensor by the named algorithm ('entropy', 'minmax', 'percentile' or 'mse')."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"unknown calibration algorithm '{algorithm}'; expected one of "
            f"{', '.join(sorted(ALGORITHMS))}"
        )
    if algorithm == "percentile":
        return amax_percentile(stats, percentile)
    return ALGORITHMS[algorithm](stats)


def scale_from_amax(amax: float) -> float:
    """The int8 scale TensorRT stores for ``amax``: ``amax / 127``.

    ``amax`` below ``MIN_AMAX`` (a tensor that was always zero) gives ``MIN_AMAX / 127``, a tiny
    positive scale instead of 0: a zero scale is invalid for Q/DQ (QuantizeLinear divides by it),
    and at that scale any value still quantizes to (almost exactly) zero. A negative or non-finite
    amax is a bug upstream and raises.
    """
    amax = float(amax)
    if not math.isfinite(amax) or amax < 0.0:
        raise CalibrationError(
            f"amax {amax}; expected a finite non-negative number (the calibration statistics "
            "are broken: re-run edge calibrate)"
        )
    return max(amax, MIN_AMAX) / 127.0
