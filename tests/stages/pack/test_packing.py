"""Concat-and-chunk packing cores (METHODS §4.6, §4.9 #5): slices of documents into contexts of
exactly L tokens, prefix offsets, the seeded context shuffle, the summary."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.stages.pack.packing import concat_summary, context_position, context_slices, prefix_offsets


def test_prefix_offsets_lay_items_end_to_end() -> None:
    assert prefix_offsets([3, 0, 5, 2]) == [0, 3, 3, 8]
    assert prefix_offsets([4, 1], base=10) == [10, 14]
    assert prefix_offsets([]) == []


def test_a_document_spanning_contexts_is_cut_at_each_boundary() -> None:
    # 25 tokens starting at stream offset 6 with L = 8: contexts 0..3.
    slices = context_slices(6, 25, 8)
    assert [(s.context_id, s.doc_token_start, s.doc_token_end) for s in slices] == [
        (0, 0, 2),
        (1, 2, 10),
        (2, 10, 18),
        (3, 18, 25),
    ]
    # A document that starts exactly on a boundary and ends on one touches only its contexts.
    assert [(s.context_id, s.doc_token_start, s.doc_token_end) for s in context_slices(16, 8, 8)] == [(2, 0, 8)]


@pytest.mark.parametrize("context_tokens", [1, 7, 64, 8192])
def test_contexts_are_exactly_l_tokens_and_rebuild_the_stream(context_tokens: int) -> None:
    rng = np.random.default_rng(context_tokens)
    lengths = rng.integers(1, 300, size=500).tolist()
    stream = [(d, t) for d, n in enumerate(lengths) for t in range(n)]  # (doc, token index) pairs
    contexts: dict[int, list[tuple[int, int]]] = {}
    for d, (offset, n) in enumerate(zip(prefix_offsets(lengths), lengths, strict=True)):
        for piece in context_slices(offset, n, context_tokens):
            contexts.setdefault(piece.context_id, []).extend(
                (d, t) for t in range(piece.doc_token_start, piece.doc_token_end)
            )
    ids = sorted(contexts)
    assert ids == list(range(len(ids)))
    assert all(len(contexts[c]) == context_tokens for c in ids[:-1])
    assert 1 <= len(contexts[ids[-1]]) <= context_tokens
    assert [item for c in ids for item in contexts[c]] == stream


def test_context_positions_are_a_seeded_shuffle() -> None:
    positions = [context_position(c, seed=1) for c in range(2000)]
    assert len(set(positions)) == len(positions)
    assert all(0 <= p < 2**63 for p in positions)
    assert positions == [context_position(c, seed=1) for c in range(2000)]
    assert positions != [context_position(c, seed=2) for c in range(2000)]
    order = np.argsort(positions)
    # Neighbours in training order are rarely neighbours in the stream (ICP: adjacent contexts unrelated).
    adjacent = np.mean(np.abs(np.diff(order)) == 1)
    assert adjacent < 0.01


def test_concat_summary_counts_contexts_and_the_short_last_one() -> None:
    summary = concat_summary(documents=3, tokens=20, context_tokens=8, shuffled=True, seed=0)
    assert summary["section"] == "packing"
    assert (summary["contexts"], summary["last_context_tokens"]) == (3, 4)
    exact = concat_summary(documents=2, tokens=16, context_tokens=8, shuffled=False, seed=0)
    assert (exact["contexts"], exact["last_context_tokens"]) == (2, 8)
    assert concat_summary(documents=0, tokens=0, context_tokens=8, shuffled=True, seed=0)["contexts"] == 0
