"""Mergeable statistics with results independent of how Beam splits and merges the work."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


def _add_exact(partials: list[float], x: float) -> None:
    """Add ``x`` to a sum kept as non-overlapping partials (Shewchuk's algorithm, as ``math.fsum``)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            partials[i] = low
            i += 1
        x = high
    partials[i:] = [x]


def _exact(partials: list[float]) -> Fraction:
    return sum((Fraction(p) for p in partials), Fraction(0))


@dataclass
class MeanStd:
    """Mergeable count, Σx and Σx², each sum kept exactly (a list of float partials).

    Exact sums make the pool mean and standard deviation independent of the order in which Beam
    adds and merges accumulators, so the keys (and the output bytes) are too. Population std.
    """

    count: int = 0
    sum1: list[float] = field(default_factory=list)
    sum2: list[float] = field(default_factory=list)

    def add(self, value: float) -> MeanStd:
        self.count += 1
        _add_exact(self.sum1, value)
        _add_exact(self.sum2, value * value)
        return self

    def merge(self, other: MeanStd) -> MeanStd:
        merged = MeanStd(self.count + other.count, list(self.sum1), list(self.sum2))
        for p in other.sum1:
            _add_exact(merged.sum1, p)
        for p in other.sum2:
            _add_exact(merged.sum2, p)
        return merged

    @property
    def mean(self) -> float:
        return float(_exact(self.sum1) / self.count) if self.count else 0.0

    @property
    def std(self) -> float:
        if not self.count:
            return 0.0
        mean = _exact(self.sum1) / self.count
        variance = _exact(self.sum2) / self.count - mean * mean
        return math.sqrt(max(float(variance), 0.0))

    @classmethod
    def of(cls, values: Iterable[float]) -> MeanStd:
        stats = cls()
        for value in values:
            stats.add(float(value))
        return stats


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def histogram_bin(value: float, low: float, high: float, bins: int) -> int:
    """Fixed-width bin of ``value`` in ``[low, high]`` (the top edge belongs to the last bin)."""
    if high <= low:
        return 0
    return min(max(int((value - low) / (high - low) * bins), 0), bins - 1)


def histogram_quantiles(counts: Sequence[int], low: float, high: float, qs: Sequence[float] = QUANTILES) -> list[float]:
    """Quantiles read off a fixed-bin histogram, interpolating linearly inside the bin."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return [float("nan")] * len(qs)
    if high <= low:
        return [float(low)] * len(qs)
    width = (high - low) / len(counts)
    cumulative = np.cumsum(counts)
    out = []
    for q in qs:
        target = q * total
        k = int(np.searchsorted(cumulative, target, side="left"))
        k = min(k, len(counts) - 1)
        before = cumulative[k - 1] if k else 0.0
        inside = (target - before) / counts[k] if counts[k] else 0.0
        out.append(float(low + (k + min(max(inside, 0.0), 1.0)) * width))
    return out


@dataclass
class ScoreSummary:
    """Count, exact mean/std, min, max and a fixed-bin histogram of one score column in one domain."""

    moments: Any  # winnow.core.budget.MeanStd
    low: float
    high: float
    minimum: float
    maximum: float
    counts: list[int]

    @classmethod
    def empty(cls, low: float, high: float, bins: int) -> ScoreSummary:

        return cls(MeanStd(), low, high, float("inf"), float("-inf"), [0] * bins)

    def add(self, value: float) -> None:
        self.moments.add(value)
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.counts[histogram_bin(value, self.low, self.high, len(self.counts))] += 1

    def merge(self, other: ScoreSummary) -> ScoreSummary:
        return ScoreSummary(
            self.moments.merge(other.moments),
            self.low,
            self.high,
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
            [a + b for a, b in zip(self.counts, other.counts, strict=True)],
        )

    def report(self) -> dict[str, Any]:
        # The bins span the whole corpus; clamping to this domain's own range keeps a quantile
        # read inside a wide bin from falling outside the values the domain actually has.
        quantiles = [
            min(max(q, self.minimum), self.maximum) for q in histogram_quantiles(self.counts, self.low, self.high)
        ]
        return {
            "count": self.moments.count,
            "mean": self.moments.mean,
            "std": self.moments.std,
            "min": self.minimum,
            "max": self.maximum,
            "quantiles": {f"p{round(q * 100):02d}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
            "histogram": {"low": self.low, "high": self.high, "counts": list(self.counts)},
        }
