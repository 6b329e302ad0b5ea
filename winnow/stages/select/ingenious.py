"""INGENIOUS, Beam-free: facility-location gains per partition → Taylor-softmax probabilities → draws.

One call of ``select_partition`` is one partition (the later Beam DoFn after a GroupByKey on the
partition key): it gets ``(doc_id, tokens, vector)`` triples and returns per-document column values
(``ing_partition``, ``ing_rank``, ``ing_gain``, ``ing_prob``, ``ing_rounds``) and a small summary
per (sub-)partition for the manifest. The method and winnow's departures from the reference are in
docs/ingenious.md.

Determinism. The kernel and gains only feed rankings and probabilities, but those are written out,
so they must not depend on the order the documents arrive in, on BLAS or on the CPU:

* documents are sorted by id first; every tie (equal gains, equal keys) breaks by that order or
  by an id hash;
* each vector is L2-normalised with a norm summed in a fixed order (float32 squares are exact in
  float64; the sum runs coordinate by coordinate as elementwise adds, never a SIMD reduction) and
  quantised to integers ``q = round(2047·v)``;
* the Gram matrix ``Q Qᵀ`` is computed by float32 BLAS, which is *exact*: every product and every
  partial sum is an integer bounded by ``|q_i|·|q_j| ≤ max |q|² < 2^24`` (Cauchy–Schwarz), whatever
  order or blocking the library uses;
* the cosine of the quantised vectors becomes a fixed-point integer
  ``K_ij = rint(2^20 · ip_ij / sqrt(|q_i|²·|q_j|²))`` with IEEE-exact elementwise operations;
* gains and facility-location values are int64 sums of non-negative integers, exact in any order,
  so lazy and naive greedy agree bit for bit;
* the floats that are written (gain, probability) come from those integers through Python's
  ``math`` functions (``math.fsum``, ``math.log``), never numpy transcendental ufuncs.
The price is a cosine of vectors quantised to 2047 levels per coordinate: within 0.001 of the
float cosine for 384-d embeddings, far below the noise of any embedder.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from winnow.core.budget import exact_cut, order_bits
from winnow.core.hashing import h64, uniform
from winnow.stages.select.ingenious_config import IngeniousConfig

# Unit vectors become integers in [-2047, 2047]. Any scale s keeps the float32 Gram matrix exact
# while |q|² ≤ s² + s·√dim + dim/4 < 2^24 (true for s = 2047 up to millions of dimensions); 127
# (int8) would too, but moves 384-d cosines by up to ~0.013, 2047 by under 0.001.
QUANT_SCALE = 2047
KERNEL_ONE = 1 << 20  # fixed-point unit of the kernel: cosine 1.0 == 2^20
_EXACT_LIMIT = 1 << 24  # float32 integers are exact below this
_ROW_BLOCK = 512  # rows of the kernel built (and summed) at once: bounds the float64 temporaries

PART_PURPOSE = "ingenious-part"
SPLIT_PURPOSE = "ingenious-split"
STOCHASTIC_PURPOSE = "ingenious-stochastic"
RANDOM_PURPOSE = "ingenious-random"
TIEBREAK_PURPOSE = "ingenious-tiebreak"


def round_purpose(round_index: int) -> str:
    """The hash purpose of round r's Gumbel noise: keys are (doc_id, "ingenious", seed, round)."""
    return f"ingenious\x1f{round_index}"


# --- kernel ----------------------------------------------------------------------------------


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer unit vectors ``round(QUANT_SCALE · v/|v|)`` (float32 holding integers) and their squared norms (int64).

    A zero (or all-but-zero) vector quantises to zeros: its cosine with everything is 0, as
    sklearn's ``cosine_similarity`` gives for a zero row.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a 2-d matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors hold NaN or infinity")
    wide = matrix.astype(np.float64)
    columns = np.ascontiguousarray(wide.T)
    sum_squares = np.zeros(len(wide), dtype=np.float64)
    for column in columns:  # a fixed left-to-right order of elementwise adds, not a SIMD reduction
        sum_squares += column * column  # each square is exact: a float32 square fits in float64
    norms = np.sqrt(sum_squares)
    safe = np.where(norms > 0, norms, 1.0)
    quantised = np.rint(wide * QUANT_SCALE / safe[:, None])
    norms2 = (quantised * quantised).sum(axis=1).astype(np.int64)  # exact: integers far below 2^53
    if len(norms2) and int(norms2.max()) >= _EXACT_LIMIT:
        raise ValueError("quantised vectors too long for an exact float32 Gram matrix")
    return quantised.astype(np.float32), norms2


def cosine_kernel(vectors: np.ndarray) -> np.ndarray:
    """The dense kernel of one partition: fixed-point cosines ``K_ij ≈ 2^20·cos(v_i, v_j)`` (int32, symmetric).

    Exact and CPU-independent (see the module docstring); costs O(n²·dim) time and n²×4 bytes.
    """
    quantised, norms2 = quantise(vectors)
    n = len(quantised)
    kernel = np.empty((n, n), dtype=np.int32)
    norms2_float = norms2.astype(np.float64)
    norms2_float[norms2_float == 0] = 1.0  # zero rows have ip 0 everywhere
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        products = (quantised[start:stop] @ quantised.T).astype(np.float64)  # exact integers
        denominators = np.sqrt(norms2_float[start:stop, None] * norms2_float[None, :])
        kernel[start:stop] = np.rint(products * KERNEL_ONE / denominators)
    return kernel


def to_cosine(value: int) -> float:
    """A fixed-point kernel sum (gain or FL value) in cosine units."""
    return int(value) / KERNEL_ONE


# --- facility location and its greedy maximisation ------------------------------------------


def facility_location_value(kernel: np.ndarray, subset: Sequence[int]) -> int:
    """``f(S) = Σ_i max(0, max_{j∈S} K_ij)`` (fixed point, exact); f(∅) = 0."""
    if len(subset) == 0:
        return 0
    best = np.zeros(kernel.shape[0], dtype=np.int32)
    for start in range(0, len(subset), _ROW_BLOCK):
        rows = kernel[np.asarray(subset[start : start + _ROW_BLOCK], dtype=np.int64)]
        np.maximum(best, rows.max(axis=0), out=best)
    return int(best.sum(dtype=np.int64))


@dataclass
class GreedyRanking:
    """A greedy order: ``order[t]`` picked at step t with gain ``gains[t]`` (fixed point, at pick time).

    ``evaluations`` counts marginal-gain evaluations (one per candidate row); ``step_evaluations``
    is the per-step count (the stochastic optimizer's instrumentation; empty for the others).
    """

    order: list[int]
    gains: list[int]
    evaluations: int
    step_evaluations: list[int] = field(default_factory=list)


class _Coverage:
    """``m_i(S) = max(0, max_{j∈S} K_ij)`` and exact marginal gains against it."""

    def __init__(self, kernel: np.ndarray):
        self.kernel = kernel
        self.cover = np.zeros(kernel.shape[0], dtype=np.int32)
        self.evaluations = 0

    def gain(self, j: int) -> int:
        self.evaluations += 1
        diff = self.kernel[j] - self.cover  # K symmetric: row j is column j
        return int(np.maximum(diff, 0, out=diff).sum(dtype=np.int64))

    def gains(self, rows: Sequence[int]) -> list[int]:
        self.evaluations += len(rows)
        diff = self.kernel[np.asarray(rows, dtype=np.int64)] - self.cover[None, :]
        return np.maximum(diff, 0, out=diff).sum(axis=1, dtype=np.int64).tolist()

    def add(self, j: int) -> None:
        np.maximum(self.cover, self.kernel[j], out=self.cover)


def initial_gains(kernel: np.ndarray) -> np.ndarray:
    """``gain(j | ∅) = Σ_i max(0, K_ij)`` for every j (int64), built in row blocks."""
    n = kernel.shape[0]
    totals = np.empty(n, dtype=np.int64)
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        totals[start:stop] = np.maximum(kernel[start:stop], 0).sum(axis=1, dtype=np.int64)
    return totals


def naive_greedy(kernel: np.ndarray, budget: int) -> GreedyRanking:
    """Textbook greedy: every step evaluates every remaining candidate; ties go to the lower index."""
    coverage = _Coverage(kernel)
    remaining = list(range(kernel.shape[0]))
    order: list[int] = []
    gains: list[int] = []
    for _ in range(min(budget, len(remaining))):
        values = coverage.gains(remaining)
        best = max(range(len(remaining)), key=lambda i: (values[i], -remaining[i]))
        j = remaining.pop(best)
        coverage.add(j)
        order.append(j)
        gains.append(values[best])
    return GreedyRanking(order, gains, coverage.evaluations)


def lazy_greedy(kernel: np.ndarray, budget: int, batch: int = 8) -> GreedyRanking:
    """Exact greedy with Minoux's lazy bounds: the same order and gains as ``naive_greedy``.

    Gains only shrink as S grows (submodularity), so a stale gain is an upper bound. The heap holds
    (−bound, index); a candidate on top whose gain is fresh for this step beats every other
    candidate's true gain, with ties to the lower index as in the naive loop. Stale entries on top
    are re-evaluated ``batch`` at a time in one vectorised call (integer sums: batching changes no
    value, only the count of evaluations). A bound of 0 needs no evaluation at all: gains are ≥ 0.
    """
    n = kernel.shape[0]
    coverage = _Coverage(kernel)
    start_gains = initial_gains(kernel).tolist()
    coverage.evaluations = n
    heap = [(-g, j) for j, g in enumerate(start_gains)]
    heapq.heapify(heap)
    fresh_at = [0] * n  # the step at which each bound was last computed
    order: list[int] = []
    gains: list[int] = []
    for step in range(min(budget, n)):
        while True:
            bound, j = heap[0]
            if fresh_at[j] == step or bound == 0:
                heapq.heappop(heap)
                order.append(j)
                gains.append(-bound)
                coverage.add(j)
                break
            stale = [heapq.heappop(heap)]
            while heap and len(stale) < batch and fresh_at[heap[0][1]] != step and heap[0][0] != 0:
                stale.append(heapq.heappop(heap))
            rows = [entry[1] for entry in stale]
            for row, value in zip(rows, coverage.gains(rows), strict=True):
                fresh_at[row] = step
                heapq.heappush(heap, (-value, row))
    return GreedyRanking(order, gains, coverage.evaluations)


def random_set_size(n: int, budget: int, epsilon: float) -> int:
    """LazierThanLazyGreedy's candidates per step, ``⌊(n/k)·ln(1/ε)⌋`` (2 for k = n − 1 ≥ 4 and ε = 0.1)."""
    if budget <= 0:
        return 0
    return max(1, int(n / budget * math.log(1 / epsilon)))


def stochastic_greedy(
    kernel: np.ndarray, budget: int, epsilon: float, draw: Callable[[int, int, int], int]
) -> GreedyRanking:
    """The reference optimizer's semantics (submodlib LazierThanLazyGreedy): each step draws
    ``random_set_size`` distinct remaining candidates uniformly and keeps the best of them
    (ties to the lower index). The reference walks lazy bounds to find that best; here every drawn
    candidate is evaluated, so ``step_evaluations`` counts exactly the drawn candidates.

    ``draw(step, i, r)`` returns an integer in [0, r): the i-th draw of a step among r positions
    (a partial Fisher–Yates over the remaining candidates in index order).
    """
    n = kernel.shape[0]
    size = random_set_size(n, budget, epsilon)
    coverage = _Coverage(kernel)
    remaining = list(range(n))
    order: list[int] = []
    gains: list[int] = []
    per_step: list[int] = []
    for step in range(min(budget, n)):
        r = len(remaining)
        count = min(size, r)
        moved: dict[int, int] = {}
        positions: list[int] = []
        for i in range(count):
            pick = i + draw(step, i, r - i)
            positions.append(moved.get(pick, pick))
            moved[pick] = moved.get(i, i)
        before = coverage.evaluations
        candidates = [remaining[p] for p in positions]
        values = coverage.gains(candidates)
        per_step.append(coverage.evaluations - before)
        best = max(range(count), key=lambda i: (values[i], -candidates[i]))
        j = candidates[best]
        remaining.pop(positions[best])
        coverage.add(j)
        order.append(j)
        gains.append(values[best])
    return GreedyRanking(order, gains, coverage.evaluations, per_step)


def hash_draw(partition_key: str, seed: int) -> Callable[[int, int, int], int]:
    """The stochastic optimizer's draws from the hash RNG, keyed by partition, step and draw."""

    def draw(step: int, i: int, r: int) -> int:
        return h64(f"{partition_key}\x1f{step}\x1f{i}", STOCHASTIC_PURPOSE, seed) % r

    return draw


# --- probabilities and draws ------------------------------------------------------------------


def taylor_weight(x: float, order: int) -> float:
    """``Σ_{k=0}^{order} x^k / k!`` by Horner's rule, in plain float arithmetic."""
    weight = 1.0
    for k in range(order, 0, -1):
        weight = 1.0 + x / k * weight
    return weight


def taylor_softmax(gains: Sequence[float], temperature: float = 1.0, order: int = 2) -> list[float]:
    """``p_j = w(g_j/T) / Σ_l w(g_l/T)`` with w the order-n Taylor polynomial of exp (reference: n = 2).

    For even n, w > 0 for every real x (n = 2: w ≥ 1/2), so every ranked document keeps a chance.
    The sum is ``math.fsum``: exactly rounded, whatever the order of the gains.
    """
    weights = [taylor_weight(g / temperature, order) for g in gains]
    total = math.fsum(weights)
    return [w / total for w in weights]


def gumbel_key(probability: float, doc_id: str, seed: int, round_index: int) -> float:
    """``log p + G`` with G = −log(−log u(doc_id, round)): sorting by it samples ∝ p without replacement."""
    u = uniform(doc_id, round_purpose(round_index), seed)
    return math.log(probability) - math.log(-math.log(u))


def subset_size(total_docs: int, fraction: float) -> int:
    """The global sample budget ``k = round(N · fraction)`` (the reference's ``int(round(N·f, 0))``)."""
    return round(total_docs * fraction)


def partition_samples(size: int, total_docs: int, k: int) -> int:
    """``k_p = min(⌈|V_p|/N · k⌉, |V_p| − 1)``, the ceiling taken exactly in integers."""
    if size <= 1 or total_docs <= 0:
        return 0
    return min(-(-size * k // total_docs), size - 1)


def partition_tokens_budget(partition_tokens: int, total_tokens: int, budget: float) -> float:
    """``B_p = B · T_p / T``, exactly rounded from the integers."""
    if total_tokens <= 0:
        return 0.0
    return float(Fraction(budget) * partition_tokens / total_tokens)


def draw_round(
    doc_ids: Sequence[str],
    probabilities: Sequence[float],
    weights: Sequence[int],
    budget: float,
    seed: int,
    round_index: int,
) -> list[int]:
    """Indices drawn in one round: candidates (probability > 0) in descending (Gumbel key, H64) order
    up to and including the one whose cumulative weight reaches ``budget`` (the token-budget
    primitive; weight 1 per document and budget k_p is "draw k_p samples")."""
    candidates = [i for i, p in enumerate(probabilities) if p > 0]
    key_bits = [order_bits(gumbel_key(probabilities[i], doc_ids[i], seed, round_index)) for i in candidates]
    tiebreaks = [h64(doc_ids[i], TIEBREAK_PURPOSE, seed) for i in candidates]
    cut = exact_cut(key_bits, tiebreaks, [float(weights[i]) for i in candidates], budget)
    return [i for i, k, t in zip(candidates, key_bits, tiebreaks, strict=True) if cut.keeps(k, t)]


# --- partitions -------------------------------------------------------------------------------


def partition_of(doc_id: str, seed: int, count: int) -> int:
    """The random partition ``H64(doc_id, "ingenious-part", seed) mod P``."""
    return h64(doc_id, PART_PURPOSE, seed) % count


def split_partition(doc_ids: Sequence[str], max_size: int, seed: int) -> list[list[int]]:
    """Indices of ⌈n/max_size⌉ near-equal parts of an oversized partition, cut in the order of
    ``H64(doc_id, "ingenious-split", seed)``; each part is returned in index order."""
    n = len(doc_ids)
    parts = max(1, -(-n // max_size))
    if parts == 1:
        return [list(range(n))]
    shuffled = sorted(range(n), key=lambda i: (h64(doc_ids[i], SPLIT_PURPOSE, seed), doc_ids[i]))
    return [sorted(shuffled[p * n // parts : (p + 1) * n // parts]) for p in range(parts)]


# --- one partition, end to end ------------------------------------------------------------------


@dataclass(frozen=True)
class IngeniousRow:
    """The columns one document gets. ``rank`` and ``gain`` are None for the partition's unranked
    element, whose probability is 0."""

    doc_id: str
    partition: int
    rank: int | None
    gain: float | None
    prob: float
    rounds: tuple[int, ...]


@dataclass
class PartitionOutput:
    rows: list[IngeniousRow]
    summaries: list[dict[str, Any]]


def rank_partition(kernel: np.ndarray, config: IngeniousConfig, partition_key: str) -> GreedyRanking:
    """Rank all but one element (the reference's budget |V_p| − 1) with the configured optimizer."""
    budget = kernel.shape[0] - 1
    if config.optimizer == "stochastic":
        return stochastic_greedy(kernel, budget, config.epsilon, hash_draw(partition_key, config.rounds.seed))
    return lazy_greedy(kernel, budget)


def random_fl_values(
    kernel: np.ndarray, doc_ids: Sequence[str], sizes: Iterable[int], seed: int, trials: int
) -> dict[int, tuple[float, float]]:
    """Mean and population std (cosine units) of f over ``trials`` random subsets of each size.

    Trial t orders the partition by ``H64(doc_id, "ingenious-random", seed ⊕ t)``; a subset of size s
    is that order's first s documents, so one permutation serves every size.
    """
    permutations = [
        sorted(range(len(doc_ids)), key=lambda i, t=t: (h64(doc_ids[i], f"{RANDOM_PURPOSE}\x1f{t}", seed), doc_ids[i]))
        for t in range(trials)
    ]
    stats: dict[int, tuple[float, float]] = {}
    for size in sorted(set(sizes)):
        values = [to_cosine(facility_location_value(kernel, perm[:size])) for perm in permutations]
        mean = math.fsum(values) / len(values) if values else 0.0
        var = math.fsum((v - mean) ** 2 for v in values) / len(values) if values else 0.0
        stats[size] = (mean, math.sqrt(var))
    return stats


class _PhaseClock:
    """Context manager factory reporting each phase's wall time to an optional callback."""

    def __init__(self, timer: Callable[[str, float], None] | None):
        self.timer = timer

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.timer is not None:
                self.timer(phase, time.perf_counter() - start)


def select_partition(
    partition: int,
    items: Iterable[tuple[str, int, Sequence[float] | np.ndarray]],
    config: IngeniousConfig,
    *,
    total_docs: int,
    total_tokens: int,
    token_budget: float | None = None,
    partition_count: int | None = None,
    random_trials: int = 10,
    timer: Callable[[str, float], None] | None = None,
) -> PartitionOutput:
    """INGENIOUS on one partition: kernel, greedy ranking, probabilities, every round's draw.

    ``items`` are (doc_id, tokens, vector) in any order. ``total_docs``/``total_tokens`` are the
    pool's totals (side inputs); the token budget defaults to ``fraction · total_tokens``. A
    partition larger than ``partitions.max_size`` is split; part s gets id ``partition + P·s``.
    ``timer(phase, seconds)`` receives the wall time of each phase (kernel, rank, draw, fl): it is
    for logs and benchmarks, never for the manifest, which stays deterministic.
    """
    clock = _PhaseClock(timer)
    rows_in = sorted(items, key=lambda item: item[0])
    doc_ids = [str(item[0]) for item in rows_in]
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError(f"partition {partition} holds duplicate doc ids")
    if not doc_ids:
        return PartitionOutput([], [])
    tokens = [int(item[1]) for item in rows_in]
    vectors = np.stack([np.asarray(item[2], dtype=np.float32) for item in rows_in])
    seed = config.rounds.seed
    count = partition_count if partition_count is not None else config.partitions.count
    k_total = subset_size(total_docs, config.fraction)
    budget_total = config.fraction * total_tokens if token_budget is None else token_budget

    rows: list[IngeniousRow] = []
    summaries: list[dict[str, Any]] = []
    for part_index, members in enumerate(split_partition(doc_ids, config.partitions.max_size, seed)):
        part_id = partition + count * part_index
        ids = [doc_ids[i] for i in members]
        part_tokens = [tokens[i] for i in members]
        with clock("kernel"):
            kernel = cosine_kernel(vectors[members])
        with clock("rank"):
            ranking = rank_partition(kernel, config, f"{part_id}")
        gains_cos = [to_cosine(g) for g in ranking.gains]
        ranked_probs = taylor_softmax(gains_cos, config.temperature, config.taylor_order)
        probabilities = [0.0] * len(ids)
        ranks: list[int | None] = [None] * len(ids)
        gain_of: list[float | None] = [None] * len(ids)
        for position, (j, g, p) in enumerate(zip(ranking.order, gains_cos, ranked_probs, strict=True)):
            probabilities[j], ranks[j], gain_of[j] = p, position, g

        if config.weight == "samples":
            weights, budget = [1] * len(ids), float(partition_samples(len(ids), total_docs, k_total))
        else:
            weights, budget = part_tokens, partition_tokens_budget(sum(part_tokens), total_tokens, budget_total)
        drawn_by: list[list[int]] = [[] for _ in ids]
        draws = []
        with clock("draw"):
            for r in range(config.rounds.count):
                chosen = draw_round(ids, probabilities, weights, budget, seed, r)
                for i in chosen:
                    drawn_by[i].append(r)
                draws.append(chosen)
        with clock("fl"):
            round_stats = [
                {
                    "round": r,
                    "selected": len(chosen),
                    "tokens": sum(part_tokens[i] for i in chosen),
                    "fl": to_cosine(facility_location_value(kernel, chosen)),
                }
                for r, chosen in enumerate(draws)
            ]
            random_stats = random_fl_values(kernel, ids, [s["selected"] for s in round_stats], seed, random_trials)
            for stat in round_stats:
                stat["fl_random_mean"], stat["fl_random_std"] = random_stats[stat["selected"]]
        del kernel

        for i, doc_id in enumerate(ids):
            gain = gain_of[i]
            rows.append(
                IngeniousRow(
                    doc_id=doc_id,
                    partition=part_id,
                    rank=ranks[i],
                    gain=None if gain is None else float(np.float32(gain)),
                    prob=float(np.float32(probabilities[i])),
                    rounds=tuple(drawn_by[i]),
                )
            )
        summaries.append(
            {
                "partition": part_id,
                "size": len(ids),
                "tokens": sum(part_tokens),
                "weight": config.weight,
                "budget": budget,
                "optimizer": config.optimizer,
                "evaluations": ranking.evaluations,
                "fl_ranked": to_cosine(sum(ranking.gains)),
                "rounds": round_stats,
            }
        )
    return PartitionOutput(rows, summaries)
