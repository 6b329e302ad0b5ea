"""Dataset Decomposition cores (METHODS §5.5): conservation, binary property, token-balanced
randomised overflow, constant tokens per batch, curricula, accounting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from winnow.core.hashing import uniform
from winnow.stages.pack.packing import (
    BucketTotals,
    batch_sizes,
    cycle_schedule,
    dd_summary,
    decompose,
    decompose_many,
    document_draws,
    largest_exponent,
    piece_length,
    shard_sequences,
    simulate_cycle,
)

I_MIN, I_MAX = 8, 13


def _lengths(count: int, seed: int) -> list[int]:
    """Mostly short documents, some far longer than 2^i_max, plus the edge cases."""
    rng = np.random.default_rng(seed)
    edges = [1, 2, 255, 256, 257, 258, 511, 512, 513, 8192, 8193, 8194, 16385, 16386, 16387]
    return edges + rng.lognormal(7.0, 1.6, size=count).astype(int).clip(1, 300_000).tolist()


@pytest.mark.parametrize("target_token", [True, False])
@pytest.mark.parametrize("randomized", [True, False])
def test_pieces_conserve_tokens_and_never_overlap(target_token: bool, randomized: bool) -> None:
    extra = 1 if target_token else 0
    for d, n in enumerate(_lengths(400, seed=1)):
        parts = decompose(
            n,
            i_min=I_MIN,
            i_max=I_MAX,
            randomized=randomized,
            target_token=target_token,
            draw=document_draws(f"doc{d}", 7),
        )
        position = 0
        for piece in parts.pieces:
            assert piece.start == position  # contiguous from the front: no overlap, no gap
            assert I_MIN <= piece.bucket <= I_MAX
            assert piece.length == (1 << piece.bucket) + extra
            position = piece.end
        assert position + parts.discarded == n
        # Only a remainder too short for the smallest bucket is discarded.
        assert parts.discarded < piece_length(I_MIN, target_token)
        if not randomized:
            assert all(p.bucket == I_MAX for p in parts.pieces if p.overflow)


def test_binary_property_with_exact_powers() -> None:
    """target_token=False, deterministic, n ≤ 2^i_max: one piece per set bit of n that is ≥ i_min."""
    for n in range(1, (1 << I_MAX) + 1):
        parts = decompose(n, i_min=I_MIN, i_max=I_MAX, randomized=False, target_token=False)
        set_bits = [b for b in range(I_MAX, I_MIN - 1, -1) if n >> b & 1]
        assert [p.bucket for p in parts.pieces] == set_bits, n
        assert parts.discarded == n & ((1 << I_MIN) - 1)


def test_reference_convention_is_only_approximately_binary() -> None:
    """With 2^i + 1 pieces a length of exactly 2^i does not fit bucket i (the paper's caveat)."""
    assert largest_exponent(1 << 10, target_token=True) == 9
    assert largest_exponent((1 << 10) + 1, target_token=True) == 10
    parts = decompose(1 << 10, i_min=I_MIN, i_max=I_MAX, randomized=False, target_token=True)
    assert [p.bucket for p in parts.pieces] == [9, 8]


def test_randomised_overflow_is_token_balanced() -> None:
    """10,000 documents of 100K tokens: overflow tokens per bucket are equal (chi-square p > 0.01)."""
    n_docs = 10_000
    draws = np.random.default_rng(2024).random((n_docs, 400))
    pieces = decompose_many(
        np.full(n_docs, 100_000),
        i_min=I_MIN,
        i_max=I_MAX,
        randomized=True,
        target_token=True,
        uniforms=draws,
    )
    buckets = np.arange(I_MIN, I_MAX + 1)
    counts = np.bincount(pieces.bucket[pieces.overflow] - I_MIN, minlength=buckets.size)
    p = 2.0 ** (I_MAX - buckets)
    p /= p.sum()
    # Piece counts follow P(k) ∝ 2^(i_max − k), which is what makes E[tokens] equal per bucket.
    assert chisquare(counts, counts.sum() * p).pvalue > 0.01
    tokens = counts * (2**buckets)
    assert tokens.max() / tokens.min() < 1.02
    # Power check: the deterministic rule puts all overflow in i_max and must fail the same test.
    fixed = decompose_many(np.full(100, 100_000), i_min=I_MIN, i_max=I_MAX, randomized=False, target_token=True)
    fixed_counts = np.bincount(fixed.bucket[fixed.overflow] - I_MIN, minlength=buckets.size)
    assert chisquare(fixed_counts + 1, (fixed_counts.sum() + buckets.size) * p).pvalue < 1e-6


def test_hash_stream_overflow_is_balanced() -> None:
    """The per-document hash stream the Beam stage uses gives the same balance (smaller sample)."""
    counts = np.zeros(I_MAX - I_MIN + 1, dtype=np.int64)
    for d in range(400):
        parts = decompose(
            100_000, i_min=I_MIN, i_max=I_MAX, randomized=True, target_token=True, draw=document_draws(f"d{d}", 11)
        )
        for piece in parts.pieces:
            if piece.overflow:
                counts[piece.bucket - I_MIN] += 1
    p = 2.0 ** (I_MAX - np.arange(I_MIN, I_MAX + 1))
    assert chisquare(counts, counts.sum() * p / p.sum()).pvalue > 0.01


@pytest.mark.parametrize("target_token", [True, False])
def test_vectorised_decomposition_matches_per_document(target_token: bool) -> None:
    lengths = np.array(_lengths(150, seed=3))
    seed = 5
    draws = np.array([[uniform(f"d{d}", f"dd:{j}", seed) for j in range(1200)] for d in range(lengths.size)])
    many = decompose_many(lengths, i_min=I_MIN, i_max=I_MAX, randomized=True, target_token=target_token, uniforms=draws)
    for d, n in enumerate(lengths.tolist()):
        one = decompose(
            n,
            i_min=I_MIN,
            i_max=I_MAX,
            randomized=True,
            target_token=target_token,
            draw=document_draws(f"d{d}", seed),
        )
        mine = many.doc == d
        assert [(p.bucket, p.start, p.end, p.overflow) for p in one.pieces] == list(
            zip(
                many.bucket[mine].tolist(),
                many.start[mine].tolist(),
                many.end[mine].tolist(),
                many.overflow[mine].tolist(),
                strict=True,
            )
        )
        assert one.discarded == many.discarded[d]


def test_draws_are_per_document_and_seeded() -> None:
    def buckets(doc: str, seed: int) -> list[int]:
        parts = decompose(
            200_000, i_min=I_MIN, i_max=I_MAX, randomized=True, target_token=True, draw=document_draws(doc, seed)
        )
        return [p.bucket for p in parts.pieces]

    assert buckets("a", 1) == buckets("a", 1)
    assert buckets("a", 1) != buckets("a", 2)
    assert buckets("a", 1) != buckets("b", 1)


@pytest.mark.parametrize("b_max", [1, 3, 8])
def test_constant_tokens_per_batch(b_max: int) -> None:
    sizes = batch_sizes(I_MIN, I_MAX, b_max)
    assert {b * (1 << i) for i, b in sizes.items()} == {b_max << I_MAX}
    assert [sizes[i] // b_max for i in range(I_MIN, I_MAX + 1)] == [32, 16, 8, 4, 2, 1]


def test_shard_sizes_hold_about_a_million_tokens() -> None:
    assert [shard_sequences(i) for i in range(I_MIN, I_MAX + 1)] == [4096, 2048, 1024, 512, 256, 128]
    assert shard_sequences(2) == 65536  # the cap
    assert {shard_sequences(i) << i for i in range(5, 20)} == {1 << 20}


# Reference bucket token totals (DCLM subset, billions) scaled down so a cycle has ~5k steps.
REFERENCE_TOKENS = {8: 3.7, 9: 6.3, 10: 7.8, 11: 6.6, 12: 5.4, 13: 4.7}


def _reference_sequences(scale: float = 1e7) -> dict[int, int]:
    return {i: int(t * scale) >> i for i, t in REFERENCE_TOKENS.items()}


def _first_last_means(trace: np.ndarray) -> tuple[float, float]:
    lengths = 2.0**trace
    tenth = max(1, trace.size // 10)
    return float(lengths[:tenth].mean()), float(lengths[-tenth:].mean())


def test_grow_p2_grows_sequence_length_within_a_cycle() -> None:
    schedule = cycle_schedule(_reference_sequences(), i_min=I_MIN, i_max=I_MAX, b_max=1, curriculum="grow_p2", cycles=8)
    trace = simulate_cycle(schedule, seed=0)
    assert trace.size > 4000
    assert {i: int((trace == i).sum()) for i in schedule.batches} == schedule.batches  # every batch used once
    first, last = _first_last_means(trace)
    assert first < 0.5 * last


def test_uniform_curriculum_keeps_lengths_mixed() -> None:
    # ~50k steps: a tenth of them averages the bucket mix to within ~2%.
    schedule = cycle_schedule(
        _reference_sequences(1e8), i_min=I_MIN, i_max=I_MAX, b_max=1, curriculum="uniform", cycles=8
    )
    trace = simulate_cycle(schedule, seed=0)
    assert trace.size > 40_000
    first, last = _first_last_means(trace)
    assert abs(first - last) <= 0.1 * max(first, last)


def test_sampler_replays_from_seed() -> None:
    schedule = cycle_schedule(
        _reference_sequences(1e6), i_min=I_MIN, i_max=I_MAX, b_max=2, curriculum="grow_p2", cycles=4
    )
    assert np.array_equal(simulate_cycle(schedule, seed=3, cycle=1), simulate_cycle(schedule, seed=3, cycle=1))
    assert not np.array_equal(simulate_cycle(schedule, seed=3, cycle=1), simulate_cycle(schedule, seed=3, cycle=2))
    # Probabilities are w_i = tokens per cycle × c_i, normalised.
    weights = {i: schedule.batches[i] * schedule.batch_size[i] * 2**i * 2 ** (I_MAX - i) for i in schedule.batches}
    total = sum(weights.values())
    assert schedule.probabilities == pytest.approx({i: w / total for i, w in weights.items()})


def test_accounting_closes_with_partial_shards() -> None:
    totals = BucketTotals()
    input_tokens = 0
    for d, n in enumerate(_lengths(3000, seed=9)):
        totals.add(
            n,
            decompose(n, i_min=I_MIN, i_max=I_MAX, randomized=True, target_token=True, draw=document_draws(str(d), 1)),
        )
        input_tokens += n
    summary = dd_summary(
        totals,
        i_min=I_MIN,
        i_max=I_MAX,
        target_token=True,
        randomized=True,
        b_max=1,
        curriculum="grow_p2",
        cycles=8,
        shard_tokens_log2=20,
        max_shard_sequences=65536,
    )
    accounting = summary["accounting"]
    assert accounting["input_tokens"] == input_tokens
    assert accounting["closes"]
    assert (
        accounting["full_shard_tokens"]
        + accounting["dropped_partial_shard_tokens"]
        + accounting["discarded_remainder_tokens"]
        == input_tokens
    )
    buckets = summary["buckets"]
    assert sum(b["tokens"] for b in buckets.values()) == accounting["bucket_tokens"]
    for i, bucket in buckets.items():
        assert bucket["tokens"] == bucket["sequences"] * bucket["seq_len"]
        assert (
            bucket["full_shards"] * bucket["shard_sequences"] + bucket["partial_shard_sequences"] == bucket["sequences"]
        )
        assert bucket["batch_size"] << int(i) == 1 << I_MAX
    # A small corpus cannot fill the 4096-sequence shards of bucket 8: all of it is partial.
    assert (
        buckets["8"]["full_shards"] == 0 and buckets["8"]["dropped_partial_shard_tokens"] == buckets["8"]["tokens"] > 0
    )


def test_merging_totals_is_order_free() -> None:
    parts = []
    for d, n in enumerate(_lengths(200, seed=4)):
        one = BucketTotals()
        one.add(
            n,
            decompose(n, i_min=I_MIN, i_max=I_MAX, randomized=True, target_token=True, draw=document_draws(str(d), 1)),
        )
        parts.append(one)
    forward = BucketTotals()
    for part in parts:
        forward = forward.merge(part)
    backward = BucketTotals()
    for part in reversed(parts):
        backward = part.merge(backward)
    assert forward == backward
    assert forward.documents == len(parts)
