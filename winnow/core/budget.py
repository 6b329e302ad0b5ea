"""Selection math shared by every scoring method (docs/budgets.md#the-budget-cut and docs/qurating.md#selection),
Beam-free.

* Deterministic randomness: ``uniform(doc_id, purpose, seed)`` is the counter-based draw of
  docs/budgets.md#the-budget-cut, so a selection never depends on how Beam shards the work.
* Normalisation: ``MeanStd`` is a mergeable accumulator with exact sums, so the pool mean and
  standard deviation come from a combiner (not one process holding all scores) and do not depend
  on how Beam splits and merges the work.
* Keys: ``z = (m − mean) / std``, ``key = z / τ + Gumbel`` (τ = 0: no noise, top-k).
* The budget cut: keep the shortest prefix, in descending (key, H64(doc_id)) order, whose weight
  (characters or tokens) reaches the budget; the document that crosses the budget is included.
  ``exact_cut`` does it by sorting (the reference); the Beam stage finds the same cut with a
  three-level weighted histogram over the order-preserving bits of the key (``HISTOGRAM_LEVELS``),
  never holding more than the last, tiny bin in one place. Both give the identical cut:
  selected weight ≥ budget, and dropping the last kept document falls below it (overshoot less
  than one document's weight).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from winnow.core.hashing import gumbel, uniform, uniforms


def z_normalise(values: float | np.ndarray, mean: float, std: float) -> float | np.ndarray:
    """(m − mean) / std; a constant pool (std 0) maps to 0 rather than dividing by zero."""
    if std <= 0 or not math.isfinite(std):
        return np.zeros_like(values, dtype=np.float64) if isinstance(values, np.ndarray) else 0.0
    return (values - mean) / std


def selection_key(
    metric: float, doc_id: str, *, mean: float, std: float, temperature: float, seed: int, purpose: str = "select"
) -> float:
    """QuRating's sampling key ``z / τ + G`` (docs/qurating.md#selection); τ = 0 gives the plain z (top-k)."""
    z = float(z_normalise(metric, mean, std))
    if temperature == 0:
        return z
    return z / temperature + gumbel(uniform(doc_id, purpose, seed))


def selection_keys(
    metrics: np.ndarray,
    doc_ids: Sequence[str],
    *,
    mean: float,
    std: float,
    temperature: float,
    seed: int,
    purpose: str = "select",
) -> np.ndarray:
    """``selection_key`` for many documents at once: the same bits as calling it one by one."""
    z = z_normalise(np.asarray(metrics, dtype=np.float64), mean, std)
    if temperature == 0:
        return z
    return z / temperature + gumbel(uniforms(doc_ids, purpose, seed))


# --- the budget cut ------------------------------------------------------------------------


def order_bits(key: float) -> int:
    """A float64 as an unsigned 64-bit integer with the same order (−0.0 sorts just below +0.0)."""
    (bits,) = struct.unpack("<Q", struct.pack("<d", key))
    return (bits ^ 0xFFFFFFFFFFFFFFFF) if bits >> 63 else (bits | (1 << 63))


def order_bits_array(keys: np.ndarray) -> np.ndarray:
    bits = np.asarray(keys, dtype=np.float64).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


@dataclass(frozen=True, order=True)
class CutPoint:
    """Keep a document iff (order_bits(key), tiebreak) ≥ (key_bits, tiebreak) of the cut."""

    key_bits: int
    tiebreak: int

    def keeps(self, key_bits: int, tiebreak: int) -> bool:
        return (key_bits, tiebreak) >= (self.key_bits, self.tiebreak)


KEEP_ALL = CutPoint(0, 0)
KEEP_NONE = CutPoint(1 << 64, 0)  # above every 64-bit key


def exact_cut(key_bits: Sequence[int], tiebreaks: Sequence[int], weights: Sequence[float], budget: float) -> CutPoint:
    """The reference cut by sorting: the element whose cumulative weight first reaches ``budget``."""
    if budget <= 0:
        return KEEP_NONE
    order = sorted(range(len(key_bits)), key=lambda i: (key_bits[i], tiebreaks[i]), reverse=True)
    total = 0.0
    for i in order:
        total += weights[i]
        if total >= budget:
            return CutPoint(int(key_bits[i]), int(tiebreaks[i]))
    return KEEP_ALL


def nearest_cut(elements: Iterable[tuple[int, int, float]], budget: float) -> CutPoint:
    """Like ``exact_cut`` in descending (key, tiebreak) order, but a document is kept only while
    the budget lies past its midpoint: the boundary between two phases lands on the nearest
    document edge, so no phase gains the crossing document systematically."""
    items = sorted(elements, reverse=True)
    total = 0.0
    last: tuple[int, int, float] | None = None
    for item in items:
        if total + item[2] / 2 >= budget:
            break
        total += item[2]
        last = item
    if last is not None:
        return CutPoint(int(last[0]), int(last[1]))
    if not items:
        return KEEP_ALL
    return CutPoint(int(items[0][0]), int(items[0][1]) + 1)  # nothing of this bin, all above it


# Histogram levels of the Beam cut: (shift, width) of the key bits a level bins on. Level 0 bins
# the top 16 bits (sign, exponent, 4 mantissa bits: 1/16 of a binade per bin) of every document;
# level 1 the next 24 bits of the documents in level 0's boundary bin; the documents that share
# level 1's boundary bin (keys equal in their top 40 bits, i.e. to a relative 2^-28 ≈ 4·10⁻⁹:
# in practice ties) are then collected and cut exactly by (key, tiebreak).
HISTOGRAM_LEVELS: tuple[tuple[int, int], ...] = ((48, 16), (24, 24))


def histogram_bin(key_bits: int, level: int) -> int:
    """The bin of a key at histogram ``level``."""
    shift, width = HISTOGRAM_LEVELS[level]
    return (key_bits >> shift) & ((1 << width) - 1)


def region(key_bits: int, level: int) -> int:
    """The key bits fixed before ``level`` (level ``len(HISTOGRAM_LEVELS)``: the final collect)."""
    return key_bits >> (64 if level == 0 else HISTOGRAM_LEVELS[level - 1][0])


@dataclass(frozen=True)
class Narrowing:
    """Where a cut search stands: the key region still open (``region`` at ``level``) and the
    budget left for it, or the final ``cut`` once known."""

    level: int = 0
    prefix: int = 0
    remaining: float = 0.0
    cut: CutPoint | None = None

    @classmethod
    def start(cls, total: float, budget: float) -> Narrowing:
        if budget <= 0:
            return cls(cut=KEEP_NONE)
        if total < budget:  # the whole pool does not reach the budget
            return cls(cut=KEEP_ALL)
        return cls(0, 0, float(budget))

    def contains(self, key_bits: int) -> bool:
        return self.cut is None and region(key_bits, self.level) == self.prefix

    def advance(self, histogram: Mapping[int, float]) -> Narrowing:
        """The next state, given the weight histogram of the open region at this level."""
        if self.cut is not None:
            return self
        chosen, above = boundary_bin(histogram, self.remaining)
        if chosen < 0:
            return Narrowing(cut=KEEP_ALL)
        width = HISTOGRAM_LEVELS[self.level][1]
        return Narrowing(self.level + 1, (self.prefix << width) | chosen, self.remaining - above)

    def finish(self, elements: Iterable[tuple[int, int, float]]) -> CutPoint:
        """The exact cut among the documents of the final region (key_bits, tiebreak, weight)."""
        return self.cut if self.cut is not None else resolve_cut(elements, self.remaining)


def boundary_bin(histogram: Mapping[int, float], remaining: float) -> tuple[int, float]:
    """(bin, weight in higher bins) of the bin where the cumulative weight, from the top, reaches ``remaining``.

    Returns bin −1 when the histogram's total is below ``remaining`` (everything is kept).
    """
    above = 0.0
    for bin_ in sorted(histogram, reverse=True):
        weight = histogram[bin_]
        if above + weight >= remaining:
            return bin_, above
        above += weight
    return -1, above


def resolve_cut(elements: Iterable[tuple[int, int, float]], remaining: float) -> CutPoint:
    """Exact cut inside the last bin: ``elements`` are (key_bits, tiebreak, weight)."""
    items = list(elements)
    return exact_cut([e[0] for e in items], [e[1] for e in items], [e[2] for e in items], remaining)


def histogram_cut(
    key_bits: Sequence[int], tiebreaks: Sequence[int], weights: Sequence[float], budget: float
) -> tuple[CutPoint, int]:
    """The Beam stage's cut on one process, level by level as its combiners compute it.

    Returns the cut and how many documents the final step had to collect.
    """
    state = Narrowing.start(float(sum(weights)), budget)
    for level in range(len(HISTOGRAM_LEVELS)):
        histogram: dict[int, float] = {}
        for k, w in zip(key_bits, weights, strict=True):
            if state.contains(k):
                b = histogram_bin(k, level)
                histogram[b] = histogram.get(b, 0.0) + w
        state = state.advance(histogram)
    members = [(k, t, w) for k, t, w in zip(key_bits, tiebreaks, weights, strict=True) if state.contains(k)]
    return state.finish(members), len(members)


def group_budgets(totals: Mapping[str, float], budget: float) -> dict[str, float]:
    """Per-group budgets ``B_d = ⌊T_d / T · B⌋`` (QuRating's domain-proportional mode,
    docs/qurating.md#domain-balancing)."""
    grand = sum(totals.values())
    if grand <= 0:
        return dict.fromkeys(totals, 0.0)
    return {group: float(math.floor(total / grand * budget)) for group, total in totals.items()}


def selected_weight(
    key_bits: Sequence[int], tiebreaks: Sequence[int], weights: Sequence[float], cut: CutPoint
) -> float:
    return float(sum(w for k, t, w in zip(key_bits, tiebreaks, weights, strict=True) if cut.keeps(k, t)))
