"""Streaming statistics of one activation tensor, for INT8 calibration.

``TensorStats`` consumes batches one at a time and keeps only O(NUM_BINS) numbers: min, max,
count and a histogram of |x| with NUM_BINS bins over ``[0, range)``. No batch is kept.

The range is always a power of two: the smallest ``2**k`` strictly greater than the absmax seen so
far (1.0 while every value seen is zero). When a batch exceeds it, the range doubles (as
TensorRT's calibrator does) as many times as needed, and the existing counts are re-binned by
summing groups of ``2**doublings`` adjacent bins. Because every range is a power of two and bin
``j`` at range ``R`` holds ``j * R/NUM_BINS <= |x| < (j+1) * R/NUM_BINS``, this merge is exact:
bin ``floor(|x| * NUM_BINS / R)`` at range ``2R`` is that index shifted right by one. So the
histogram is identical whatever the batch size, batch order, or the way streams are split and
``merge``d: feeding all data at once gives the same counts, bit for bit. (TensorRT's own entropy
calibrator is sensitive to batch size and order; this one is not.)

The price: the data can occupy as little as half the bins (absmax just above a power of two), so
the effective resolution is between NUM_BINS/2 and NUM_BINS bins over [0, absmax]. The maximum
always lies in the upper half of the histogram (bin >= NUM_BINS/2), so the entropy search (which
starts at bin 128) always sees the whole distribution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge.core.errors import CalibrationError, InternalError

NUM_BINS = 2048
"""Histogram bins over [0, range), as TensorRT and pytorch-quantization use."""

_CHUNK = 1 << 22
"""Elements binned at a time, so a huge batch needs only a bounded float64 temporary."""

_FORMAT = "etr-edge.tensor-stats"
_FORMAT_VERSION = 1


def range_for_absmax(absmax: float) -> float:
    """The histogram range for a stream whose largest |x| is ``absmax``.

    The smallest power of two strictly greater than ``absmax`` (so every value falls in
    ``[0, range)``); 1.0 when ``absmax`` is 0 (an all-zero tensor still gets a non-zero range).
    """
    if absmax <= 0.0:
        return 1.0
    mantissa, exponent = math.frexp(absmax)  # absmax = mantissa * 2**exponent, 0.5 <= m < 1
    del mantissa
    return math.ldexp(1.0, exponent)  # 2**exponent > absmax always


def _rebin(counts: np.ndarray, factor: int) -> np.ndarray:
    """Counts re-binned into a range ``factor`` (a power of two) times wider; totals kept exact."""
    if factor == 1:
        return counts
    n = counts.size
    out = np.zeros(n, dtype=np.int64)
    if factor >= n:
        out[0] = counts.sum()
        return out
    out[: n // factor] = counts.reshape(n // factor, factor).sum(axis=1)
    return out


class TensorStats:
    """Streaming min/max/absmax/count and |x| histogram of one tensor (O(NUM_BINS) memory).

    ``update(batch)`` may be called any number of times; ``merge(other)`` combines two streams of
    the same tensor exactly as if their batches had gone through one object.
    """

    __slots__ = ("_counts", "_max", "_min", "count", "name", "num_bins", "range")

    def __init__(self, name: str, *, num_bins: int = NUM_BINS) -> None:
        if num_bins < 2 or num_bins & (num_bins - 1):
            raise CalibrationError(
                f"tensor '{name}': num_bins={num_bins}; expected a power of two >= 2 "
                f"(the default is {NUM_BINS})"
            )
        self.name = name
        self.num_bins = num_bins
        self.count = 0
        self.range = 1.0
        self._min = math.inf
        self._max = -math.inf
        self._counts = np.zeros(num_bins, dtype=np.int64)

    # ---------------------------------------------------------------- read-only views
    @property
    def min(self) -> float:
        """Smallest value seen (signed); NaN before any data."""
        return self._min if self.count else math.nan

    @property
    def max(self) -> float:
        """Largest value seen (signed); NaN before any data."""
        return self._max if self.count else math.nan

    @property
    def absmax(self) -> float:
        """Largest |x| seen; 0.0 before any data."""
        return max(abs(self._min), abs(self._max)) if self.count else 0.0

    @property
    def counts(self) -> np.ndarray:
        """A copy of the histogram counts of |x| (int64, ``num_bins`` long)."""
        return self._counts.copy()

    @property
    def bin_width(self) -> float:
        return self.range / self.num_bins

    @property
    def bin_edges(self) -> np.ndarray:
        """The ``num_bins + 1`` bin edges, 0 .. range."""
        return np.arange(self.num_bins + 1, dtype=np.float64) * self.bin_width

    def __repr__(self) -> str:
        return (
            f"TensorStats({self.name!r}, count={self.count}, min={self.min:.6g}, "
            f"max={self.max:.6g}, range={self.range:.6g})"
        )

    # ---------------------------------------------------------------- updating
    def _grow_to(self, absmax: float) -> None:
        """Widen the range (power-of-two doublings) to cover ``absmax``; re-bin the counts."""
        new_range = range_for_absmax(absmax)
        if new_range == self.range:
            return
        if self.absmax == 0.0:
            # Everything so far is zero and sits in bin 0 whatever the range: free to re-pick
            # (this is how an all-zero first batch gets a proper range later, even a smaller one).
            self.range = new_range
            return
        if new_range < self.range:
            return
        factor = round(new_range / self.range)
        self._counts = _rebin(self._counts, factor)
        self.range = new_range

    def update(self, batch: np.ndarray) -> None:
        """Add one batch of activations (any shape, real numbers); the batch is not kept."""
        x = np.asarray(batch)
        if x.dtype == np.bool_ or not (
            np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
        ):
            raise CalibrationError(
                f"tensor '{self.name}': got a batch of dtype {x.dtype}; expected real numbers "
                "(float or int activations)"
            )
        if x.size == 0:
            return
        lo = float(x.min())
        hi = float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise CalibrationError(
                f"tensor '{self.name}': the batch contains NaN or infinite values "
                f"(min={lo}, max={hi}); calibration needs finite activations: check the model "
                "and the calibration frames (FP32 export, preprocessing)"
            )
        batch_absmax = max(abs(lo), abs(hi))
        self._grow_to(max(self.absmax, batch_absmax))
        scale = self.num_bins / self.range  # a power of two: x * scale is exact
        flat = x.reshape(-1)
        # float16/float32 activations are binned in float32: |x| * 2^k is exact in float32 (the
        # scale is a power of two and |x| * scale <= num_bins), and truncation equals floor for
        # non-negative values, so this gives the same bins as float64, about 3x faster. As the
        # range is a power of two strictly above every |x| (``_grow_to``), |x| * scale < num_bins:
        # no clamp is needed (``_add_counts`` checks it). A batch with no negative value (after a
        # ReLU, most of them) skips the abs.
        wide = np.float32 if x.dtype in (np.float16, np.float32) else np.float64
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK]
            if lo >= 0.0:
                part = np.multiply(chunk, wide(scale), dtype=wide)
            else:
                part = np.abs(chunk, dtype=wide)
                part *= wide(scale)
            self._add_counts(np.bincount(part.astype(np.intp), minlength=self.num_bins))
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)
        self.count += int(x.size)

    def _add_counts(self, counts: np.ndarray) -> None:
        if counts.size != self.num_bins:
            raise InternalError(
                f"tensor '{self.name}': a value fell outside the histogram range {self.range} "
                f"({counts.size} bins counted, expected {self.num_bins})"
            )
        self._counts += counts

    def merge(self, other: TensorStats) -> None:
        """Add another stream of the same tensor into this one (exact: as if one stream)."""
        if other.name != self.name or other.num_bins != self.num_bins:
            raise CalibrationError(
                f"cannot merge statistics of tensor '{other.name}' ({other.num_bins} bins) into "
                f"'{self.name}' ({self.num_bins} bins); expected the same tensor and bin count"
            )
        if other.count == 0:
            return
        theirs = other._counts
        if self.count == 0:
            self.range = other.range
        else:
            self._grow_to(max(self.absmax, other.absmax))
        if other.absmax == 0.0:
            theirs = _rebin(theirs, self.num_bins)  # all in bin 0 whatever the range
        else:
            theirs = _rebin(theirs, round(self.range / other.range))
        self._counts = self._counts + theirs
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self.count += other.count

    # ---------------------------------------------------------------- queries
    def counts_at(self, range_: float) -> np.ndarray:
        """The histogram re-binned (exactly) to a power-of-two range >= ``self.range``."""
        factor = round(range_ / self.range)
        if range_ < self.range or factor & (factor - 1) or factor * self.range != range_:
            raise InternalError(f"counts_at({range_}): not a power-of-two multiple of {self.range}")
        return _rebin(self._counts, factor)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q <= 100) of |x|, from the cumulative histogram.

        Linear interpolation inside the bin that holds the target rank; the result is within one
        bin width of the exact percentile of |x| and never above ``absmax``.
        """
        if not 0.0 < q <= 100.0:
            raise CalibrationError(
                f"tensor '{self.name}': percentile {q}; expected a number in (0, 100]"
            )
        if self.count == 0:
            raise CalibrationError(f"tensor '{self.name}': no data collected; nothing to compute")
        if self.absmax == 0.0:
            return 0.0
        target = q / 100.0 * self.count
        cum = np.cumsum(self._counts)
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, self.num_bins - 1)
        before = float(cum[b - 1]) if b > 0 else 0.0
        in_bin = float(self._counts[b])
        frac = (target - before) / in_bin if in_bin > 0 else 1.0
        value = (b + min(max(frac, 0.0), 1.0)) * self.bin_width
        return min(value, self.absmax)

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (exact: integer counts, float min/max/range)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "name": self.name,
            "num_bins": self.num_bins,
            "count": self.count,
            "min": self._min if self.count else None,
            "max": self._max if self.count else None,
            "range": self.range,
            "counts": [int(c) for c in self._counts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorStats:
        """Rebuild a ``TensorStats`` from ``to_dict()`` output; CalibrationError if malformed."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CalibrationError(
                f"not tensor statistics (expected a dict with format '{_FORMAT}'); "
                "re-run edge calibrate to collect them again"
            )
        name = str(data.get("name", "?"))
        if data.get("format_version") != _FORMAT_VERSION:
            raise CalibrationError(
                f"tensor '{name}': statistics format version {data.get('format_version')!r}; "
                f"this etr-edge reads version {_FORMAT_VERSION}: re-run edge calibrate"
            )
        try:
            stats = cls(name, num_bins=int(data["num_bins"]))
            counts = np.asarray(data["counts"], dtype=np.int64)
            count = int(data["count"])
            rng = float(data["range"])
            lo, hi = data["min"], data["max"]
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(
                f"tensor '{name}': malformed statistics ({e}); re-run edge calibrate"
            ) from e
        problems = []
        if counts.shape != (stats.num_bins,) or (counts < 0).any():
            problems.append(f"counts must be {stats.num_bins} non-negative integers")
        elif int(counts.sum()) != count:
            problems.append(f"counts sum to {int(counts.sum())}, not count={count}")
        if not (rng > 0 and math.isfinite(rng) and math.frexp(rng)[0] == 0.5):
            problems.append(f"range {rng} is not a positive power of two")
        if count and (lo is None or hi is None or not float(lo) <= float(hi)):
            problems.append(f"min/max {lo}/{hi} invalid")
        if problems:
            raise CalibrationError(
                f"tensor '{name}': inconsistent statistics: {'; '.join(problems)}; "
                "re-run edge calibrate"
            )
        stats._counts = counts
        stats.count = count
        stats.range = rng
        if count:
            stats._min, stats._max = float(lo), float(hi)
        return stats
