"""Packing cores, free of Beam: concat-and-chunk contexts (ICP, docs/icp.md#packing) and Dataset
Decomposition (DD, docs/dataset-decomposition.md): power-of-two pieces per document, shard sizing, constant-token
batches
and the bucket-sampling curriculum a trainer replays.

Everything here works on token counts and plain Python/NumPy values, so the Beam wrapper
(``winnow.stages.pack.stage``) and the tests share one implementation.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from winnow.core.hashing import h64, uniform

# ---------------------------------------------------------------------------------------------
# Concat-and-chunk (ICP docs/icp.md#packing)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextSlice:
    """The part of one document's token stream (ids + EOS) that falls into one context."""

    context_id: int
    doc_token_start: int
    doc_token_end: int


def context_slices(token_offset: int, n_tokens: int, context_tokens: int) -> list[ContextSlice]:
    """Cut a document that starts at global stream offset ``token_offset`` and holds ``n_tokens``
    tokens (EOS included) at every multiple of ``context_tokens``: documents may span contexts."""
    slices = []
    start = 0
    while start < n_tokens:
        global_start = token_offset + start
        context_id = global_start // context_tokens
        end = min(n_tokens, (context_id + 1) * context_tokens - token_offset)
        slices.append(ContextSlice(context_id, start, end))
        start = end
    return slices


def prefix_offsets(lengths: Sequence[int], base: int = 0) -> list[int]:
    """Exclusive prefix sums: each item's start offset when the items are laid end to end."""
    offsets = []
    running = base
    for length in lengths:
        offsets.append(running)
        running += int(length)
    return offsets


def context_position(context_id: int, seed: int) -> int:
    """Seeded training position of a context (sort ascending to train): a hash, so no process
    has to hold all contexts to shuffle them, and adjacent contexts stop being related (ICP)."""
    return h64(str(context_id), "context_shuffle", seed) >> 1  # fits a signed int64 column


# ---------------------------------------------------------------------------------------------
# Dataset Decomposition (docs/dataset-decomposition.md#decomposition)
# ---------------------------------------------------------------------------------------------


class Piece(NamedTuple):
    """One DD sequence: tokens ``[start, end)`` of a document's stream (EOT included), bucket ``k``;
    ``overflow`` when k came from the overflow rule (more than 2^i_max tokens were left)."""

    bucket: int
    start: int
    end: int
    overflow: bool

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Decomposition:
    pieces: list[Piece]
    discarded: int  # remainder tokens shorter than the smallest bucket


def piece_length(k: int, target_token: bool) -> int:
    """Tokens in a bucket-``k`` piece: ``2^k + 1`` (reference: 2^k prediction targets) or ``2^k``."""
    return (1 << k) + (1 if target_token else 0)


def largest_exponent(n: int, target_token: bool) -> int:
    """Largest k whose piece fits in ``n`` tokens: ⌊log2(n − 1)⌋ with the +1 convention, ⌊log2 n⌋
    without; −1 when nothing fits."""
    m = n - 1 if target_token else n
    return m.bit_length() - 1 if m >= 1 else -1


def overflow_cdf(i_min: int, i_max: int) -> tuple[float, ...]:
    """CDF over k = i_min..i_max with P(k) ∝ 2^(i_max − k): each bucket gets the same expected
    number of tokens from the overflow of long documents (DD reference default)."""
    weights = [2.0 ** (i_max - k) for k in range(i_min, i_max + 1)]
    total = sum(weights)
    cdf = [float(c) / total for c in np.cumsum(weights)]
    cdf[-1] = 1.0
    return tuple(cdf)


def decompose(
    n_tokens: int,
    *,
    i_min: int,
    i_max: int,
    randomized: bool,
    target_token: bool,
    draw: Callable[[int], float] | None = None,
) -> Decomposition:
    """Greedy DD split of a token stream of ``n_tokens`` (EOT included) from the front.

    At each step k is the largest exponent that fits; below ``i_min`` the rest is discarded;
    above ``i_max`` it is ``i_max`` (deterministic) or drawn with P(k) ∝ 2^(i_max − k) from
    ``draw(piece_index)`` (randomised). ``draw`` must be a per-document deterministic uniform
    stream (see ``document_draws``) so results do not depend on how work is sharded.
    """
    if i_min > i_max:
        raise ValueError(f"i_min ({i_min}) > i_max ({i_max})")
    cdf = overflow_cdf(i_min, i_max) if randomized else None
    if cdf is not None and draw is None:
        raise ValueError("randomized decomposition needs a draw function")
    extra = 1 if target_token else 0
    pieces: list[Piece] = []
    start = 0
    while True:
        k = largest_exponent(n_tokens - start, target_token)
        if k < i_min:
            return Decomposition(pieces, n_tokens - start)
        overflow = k > i_max
        if overflow:
            k = i_max if cdf is None else i_min + bisect.bisect_right(cdf, draw(len(pieces)))
        end = start + (1 << k) + extra
        pieces.append(Piece(k, start, end, overflow))
        start = end


@dataclass(frozen=True)
class PieceArrays:
    """Pieces of many documents as parallel arrays (``decompose_many``)."""

    doc: np.ndarray  # index of the source document
    piece_index: np.ndarray
    bucket: np.ndarray
    start: np.ndarray
    end: np.ndarray
    overflow: np.ndarray
    discarded: np.ndarray  # per document


def decompose_many(
    lengths: np.ndarray,
    *,
    i_min: int,
    i_max: int,
    randomized: bool,
    target_token: bool,
    uniforms: np.ndarray | None = None,
) -> PieceArrays:
    """``decompose`` for many documents at once, vectorised over documents (for corpus-scale
    estimates and tests). ``uniforms[d, j]`` is document d's draw for piece j; with the hash
    stream of ``document_draws`` it gives exactly the pieces ``decompose`` gives."""
    remaining = np.asarray(lengths, dtype=np.int64).copy()
    n_docs = remaining.shape[0]
    if randomized and uniforms is None:
        raise ValueError("randomized decomposition needs uniforms")
    cdf = np.asarray(overflow_cdf(i_min, i_max)) if randomized else None
    extra = 1 if target_token else 0
    start = np.zeros(n_docs, dtype=np.int64)
    discarded = np.zeros(n_docs, dtype=np.int64)
    active = np.arange(n_docs)
    parts: list[tuple[np.ndarray, ...]] = []
    j = 0
    while active.size:
        fit = remaining[active] - extra
        _, exponent = np.frexp(np.maximum(fit, 1).astype(np.float64))
        k = np.where(fit >= 1, exponent.astype(np.int64) - 1, -1)
        done = k < i_min
        discarded[active[done]] = remaining[active[done]]
        active, k = active[~done], k[~done]
        if not active.size:
            break
        overflow = k > i_max
        if cdf is None:
            k = np.where(overflow, i_max, k)
        elif overflow.any():
            if uniforms is None or j >= uniforms.shape[1]:
                raise ValueError(f"uniforms has fewer than {j + 1} draws per document")
            drawn = i_min + np.searchsorted(cdf, uniforms[active[overflow], j], side="right")
            k = k.copy()
            k[overflow] = drawn
        length = (np.int64(1) << k) + extra
        begin = start[active]
        parts.append((active, np.full(active.size, j), k, begin, begin + length, overflow))
        start[active] += length
        remaining[active] -= length
        j += 1
    columns = [np.concatenate([p[c] for p in parts]) if parts else np.zeros(0, np.int64) for c in range(6)]
    return PieceArrays(*columns, discarded=discarded)


def document_draws(doc_key: str, seed: int) -> Callable[[int], float]:
    """The uniform stream of one document: draw ``j`` is ``u(doc_key, "dd:j", seed)``."""
    return lambda piece_index: uniform(doc_key, f"dd:{piece_index}", seed)


def shard_sequences(i: int, shard_tokens_log2: int = 20, max_shard_sequences: int = 65536) -> int:
    """Sequences per shard of bucket ``i``: min(2^(20 − i), 65,536), about 1M tokens (reference)."""
    return max(1, min(1 << max(shard_tokens_log2 - i, 0), max_shard_sequences))


def batch_sizes(i_min: int, i_max: int, b_max: int = 1) -> dict[int, int]:
    """Batch size per bucket, ``b_i = b_max · 2^(i_max − i)``: every step sees the same tokens."""
    return {i: b_max << (i_max - i) for i in range(i_min, i_max + 1)}


def curriculum_factors(curriculum: str, i_min: int, i_max: int) -> dict[int, float]:
    """``c_i``: 1 for ``uniform``; 2^(i_max − i) for Grow-P2 (short buckets drain first)."""
    if curriculum == "uniform":
        return {i: 1.0 for i in range(i_min, i_max + 1)}
    if curriculum == "grow_p2":
        return {i: float(1 << (i_max - i)) for i in range(i_min, i_max + 1)}
    raise ValueError(f"unknown curriculum {curriculum!r}")


@dataclass(frozen=True)
class CycleSchedule:
    """What a trainer needs to replay one curriculum cycle (docs/dataset-decomposition.md#training-side-contract)."""

    batches: dict[int, int]  # batches drawn from bucket i per cycle
    batch_size: dict[int, int]  # b_i
    weights: dict[int, float]  # w_i = tokens per cycle × c_i
    probabilities: dict[int, float]  # w_i normalised over all buckets (before any is exhausted)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            name: {str(i): value for i, value in sorted(getattr(self, name).items())}
            for name in ("batches", "batch_size", "weights", "probabilities")
        }


def cycle_schedule(
    bucket_sequences: Mapping[int, int],
    *,
    i_min: int,
    i_max: int,
    b_max: int,
    curriculum: str,
    cycles: int,
) -> CycleSchedule:
    """Per-cycle batches and sampling weights from the sequences available per bucket."""
    sizes = batch_sizes(i_min, i_max, b_max)
    factors = curriculum_factors(curriculum, i_min, i_max)
    batches = {i: int(bucket_sequences.get(i, 0)) // cycles // sizes[i] for i in sizes}
    weights = {i: batches[i] * sizes[i] * float(1 << i) * factors[i] for i in sizes}
    total = sum(weights.values())
    probabilities = {i: (w / total if total else 0.0) for i, w in weights.items()}
    return CycleSchedule(batches, sizes, weights, probabilities)


def simulate_cycle(schedule: CycleSchedule, seed: int, cycle: int = 0) -> np.ndarray:
    """Replay one cycle of bucket sampling and return the sequence-length exponent of each step.

    Each step picks a non-exhausted bucket with probability ∝ ``w_i`` and takes one batch; a
    bucket leaves the draw when its batches for the cycle are used up. Draws are hashed from
    (seed, cycle, step), so a trainer with the same schedule and seed gets the same trace.
    """
    remaining = {i: n for i, n in schedule.batches.items() if n > 0}
    steps = sum(remaining.values())
    trace = np.empty(steps, dtype=np.int64)
    buckets = sorted(remaining)
    cumulative = list(itertools.accumulate(schedule.weights[i] for i in buckets))
    for step in range(steps):
        u = uniform(str(step), f"dd_curriculum:{cycle}", seed) * cumulative[-1]
        position = min(bisect.bisect_right(cumulative, u), len(buckets) - 1)
        chosen = buckets[position]
        trace[step] = chosen
        remaining[chosen] -= 1
        if remaining[chosen] == 0:  # exhausted for this cycle: leaves the draw
            del remaining[chosen]
            buckets = sorted(remaining)
            cumulative = list(itertools.accumulate(schedule.weights[i] for i in buckets))
    return trace


@dataclass
class BucketTotals:
    """Per-bucket and global DD accounting; a commutative monoid so Beam can combine it."""

    input_tokens: int = 0
    documents: int = 0
    discarded_tokens: int = 0
    sequences: dict[int, int] | None = None
    tokens: dict[int, int] | None = None
    overflow_sequences: dict[int, int] | None = None

    def add(self, n_tokens: int, decomposition: Decomposition) -> None:
        self.sequences = self.sequences or {}
        self.tokens = self.tokens or {}
        self.overflow_sequences = self.overflow_sequences or {}
        self.input_tokens += n_tokens
        self.documents += 1
        self.discarded_tokens += decomposition.discarded
        for piece in decomposition.pieces:
            self.sequences[piece.bucket] = self.sequences.get(piece.bucket, 0) + 1
            self.tokens[piece.bucket] = self.tokens.get(piece.bucket, 0) + piece.length
            if piece.overflow:
                self.overflow_sequences[piece.bucket] = self.overflow_sequences.get(piece.bucket, 0) + 1

    def merge(self, other: BucketTotals) -> BucketTotals:
        out = BucketTotals(
            self.input_tokens + other.input_tokens,
            self.documents + other.documents,
            self.discarded_tokens + other.discarded_tokens,
        )
        for name in ("sequences", "tokens", "overflow_sequences"):
            merged: dict[int, int] = dict(getattr(self, name) or {})
            for key, value in (getattr(other, name) or {}).items():
                merged[key] = merged.get(key, 0) + value
            setattr(out, name, merged)
        return out


def merge_totals(parts: Iterable[BucketTotals]) -> BucketTotals:
    out = BucketTotals()
    for part in parts:
        out = out.merge(part)
    return out


def dd_summary(
    totals: BucketTotals,
    *,
    i_min: int,
    i_max: int,
    target_token: bool,
    randomized: bool,
    b_max: int,
    curriculum: str,
    cycles: int,
    shard_tokens_log2: int,
    max_shard_sequences: int,
) -> dict:
    """The manifest section of a DD run: per bucket sequences, tokens, shards, partial-shard
    tokens, batch size and curriculum weights, plus the token accounting that must close."""
    sizes = batch_sizes(i_min, i_max, b_max)
    factors = curriculum_factors(curriculum, i_min, i_max)
    sequences = totals.sequences or {}
    tokens = totals.tokens or {}
    buckets = {}
    partial_tokens = 0
    full_tokens = 0
    full_sequences: dict[int, int] = {}
    for i in range(i_min, i_max + 1):
        per_shard = shard_sequences(i, shard_tokens_log2, max_shard_sequences)
        n = sequences.get(i, 0)
        full_shards, partial_sequences = divmod(n, per_shard)
        length = piece_length(i, target_token)
        full_sequences[i] = full_shards * per_shard
        partial_tokens += partial_sequences * length
        full_tokens += full_sequences[i] * length
        buckets[str(i)] = {
            "seq_len": length,
            "sequences": n,
            "tokens": tokens.get(i, 0),
            "shard_sequences": per_shard,
            "full_shards": full_shards,
            "partial_shard_sequences": partial_sequences,
            "dropped_partial_shard_tokens": partial_sequences * length,
            "overflow_sequences": (totals.overflow_sequences or {}).get(i, 0),
            "batch_size": sizes[i],
            "batch_multiplier": sizes[i] // b_max,
            "curriculum_factor": factors[i],
        }
    schedule = cycle_schedule(
        full_sequences, i_min=i_min, i_max=i_max, b_max=b_max, curriculum=curriculum, cycles=cycles
    )
    bucket_tokens = sum(tokens.values())
    return {
        "section": "packing",
        "mode": "dd",
        "i_min": i_min,
        "i_max": i_max,
        "target_token": target_token,
        "randomized": randomized,
        "documents": totals.documents,
        "buckets": buckets,
        # Accounting (docs/dataset-decomposition.md#fidelity-tests): full-shard + partial-shard + discarded tokens =
        # input tokens,
        # where input tokens count each document's EOT; partial shards are kept but marked.
        "accounting": {
            "input_tokens": totals.input_tokens,
            "bucket_tokens": bucket_tokens,
            "full_shard_tokens": full_tokens,
            "dropped_partial_shard_tokens": partial_tokens,
            "discarded_remainder_tokens": totals.discarded_tokens,
            "closes": full_tokens + partial_tokens + totals.discarded_tokens == totals.input_tokens
            and bucket_tokens == full_tokens + partial_tokens,
        },
        "curriculum": {
            "name": curriculum,
            "cycles": cycles,
            "b_max": b_max,
            "tokens_per_step": b_max * (1 << i_max),
            "per_cycle": schedule.as_dict(),
            "sampler": "each step: pick a non-exhausted bucket with probability ∝ weights, take one batch",
        },
    }


def concat_summary(*, documents: int, tokens: int, context_tokens: int, shuffled: bool, seed: int) -> dict:
    """The manifest section of concat packing (ICP docs/icp.md#packing)."""
    contexts = math.ceil(tokens / context_tokens) if tokens else 0
    return {
        "section": "packing",
        "mode": "concat",
        "context_tokens": context_tokens,
        "documents": documents,
        "tokens": tokens,
        "contexts": contexts,
        "last_context_tokens": tokens - (contexts - 1) * context_tokens if contexts else 0,
        "shuffled": shuffled,
        "shuffle": "train in ascending `position` (h64(context_id, 'context_shuffle', seed))"
        if shuffled
        else "train in ascending context_id",
        "seed": seed,
    }
