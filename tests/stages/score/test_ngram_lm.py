"""Character n-gram LM with interpolated modified Kneser–Ney: against a naive implementation,
normalisation, BPC (METHODS §3.6 test 2), data-size ordering, persistence, speed."""

from __future__ import annotations

import gzip
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from winnow.stages.score.ngram_lm import BOS, KneserNeyLM, heldout_bpc


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def english() -> dict[str, list[str]]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for row in _rows(DATA / "text" / "english.jsonl.gz"):
        by_source[row["source"]].append(row["text"])
    return by_source


class NaiveKN:
    """Interpolated modified Kneser–Ney written out with dicts, one probability at a time."""

    def __init__(self, texts: list[str], order: int):
        self.n = order
        seqs = [[BOS] * (order - 1) + [ord(c) for c in t] for t in texts if t]
        raw = [Counter() for _ in range(order + 1)]
        for seq in seqs:
            for i in range(order - 1, len(seq)):
                for k in range(1, order + 1):
                    raw[k][tuple(seq[i - k + 1 : i + 1])] += 1
        self.count: list[dict] = [{} for _ in range(order + 1)]
        self.count[order] = dict(raw[order])
        for k in range(order - 1, 0, -1):
            extensions: Counter = Counter()
            for gram in raw[k + 1]:
                extensions[gram[1:]] += 1
            self.count[k] = dict(extensions)
        self.d = [None] + [self._discounts(list(self.count[k].values())) for k in range(1, order + 1)]
        self.total: list[dict] = [defaultdict(float) for _ in range(order + 1)]
        self.gamma: list[dict] = [defaultdict(float) for _ in range(order + 1)]
        for k in range(1, order + 1):
            for gram, c in self.count[k].items():
                self.total[k][gram[:-1]] += c
                self.gamma[k][gram[:-1]] += self.d[k][min(c, 3)]
        self.vocab = len({s for seq in seqs for s in seq[order - 1 :]}) + 1

    @staticmethod
    def _discounts(counts: list[int]) -> list[float]:
        n1, n2, n3, n4 = (sum(1 for c in counts if c == r) for r in (1, 2, 3, 4))
        if min(n1, n2, n3, n4) == 0:
            return [0.0, 0.5, 1.0, 1.5]
        y = n1 / (n1 + 2 * n2)
        raw = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
        return [0.0] + [min(max(d, 0.0), float(r)) for r, d in zip((1, 2, 3), raw, strict=True)]

    def prob(self, history: list[int], symbol: int) -> float:
        p = 1.0 / self.vocab
        for k in range(1, self.n + 1):
            context = tuple(history[len(history) - (k - 1) :]) if k > 1 else ()
            total = self.total[k].get(context, 0.0)
            if total > 0:
                c = self.count[k].get((*context, symbol), 0)
                p = (c - self.d[k][min(c, 3)] + self.gamma[k][context] * p) / total
        return p

    def bits(self, text: str) -> float:
        seq = [BOS] * (self.n - 1) + [ord(c) for c in text]
        return sum(-math.log2(self.prob(seq[i - self.n + 1 : i], seq[i])) for i in range(self.n - 1, len(seq)))


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_match_a_naive_implementation(english, order):
    train = english["lee-abc-news"][:60]
    test = english["lee-abc-news"][300:305] + english["webtext"][:5] + ["Ünïcödé ✓ 日本語 text"]
    naive = NaiveKN(train, order)
    model = KneserNeyLM.train(train, order=order)
    assert model.vocab_size == naive.vocab
    np.testing.assert_allclose(model.total_bits(test), [naive.bits(t) for t in test], rtol=1e-10)


@pytest.mark.parametrize("order", [1, 3, 5])
def test_every_context_gives_a_distribution_that_sums_to_one(english, order):
    train = english["lee-abc-news"][:100]
    model = KneserNeyLM.train(train, order=order)
    vocabulary = sorted(set("".join(train)))
    unseen = "\u4e00"  # every unseen character shares the unknown class
    for context in ["", "The gover", "zq", "Prime Minister John Howard sa", "\u4e00\u4e01x"]:
        total = sum(model.prob(context, c) for c in vocabulary) + model.prob(context, unseen)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_bpc_is_per_character_and_invariant_to_self_concatenation_for_a_unigram_lm(english):
    """METHODS §3.6 test 2: a document concatenated with itself keeps its BPC (within 1%)."""
    model = KneserNeyLM.train(english["lee-abc-news"][:200], order=1)
    docs = english["lee-abc-news"][300:320] + english["webtext"][:20] + english["weborganizer-dclm"][:20]
    single = model.bpc(docs)
    double = model.bpc([d + d for d in docs])
    np.testing.assert_allclose(double, single, rtol=0.01)
    bits = model.total_bits(docs)
    np.testing.assert_allclose(single, bits / np.array([len(d) for d in docs]))


def test_empty_text_has_no_bpc_and_does_not_disturb_its_neighbours(english):
    model = KneserNeyLM.train(english["lee-abc-news"][:50], order=4)
    docs = ["hello world", "", "another document"]
    bpc = model.bpc(docs)
    assert math.isnan(bpc[1])
    np.testing.assert_allclose(bpc[[0, 2]], model.bpc([docs[0], docs[2]]))


def test_more_training_text_gives_lower_heldout_loss(english):
    news = english["lee-abc-news"]
    heldout = news[300:]
    losses = [heldout_bpc(KneserNeyLM.train(news[:n], order=5), heldout) for n in (3, 15, 75, 300)]
    assert losses == sorted(losses, reverse=True)
    assert losses[0] - losses[-1] > 0.3


def test_in_domain_text_is_cheaper_than_out_of_domain_text(english):
    model = KneserNeyLM.train(english["lee-abc-news"][:300], order=5)
    assert np.nanmean(model.bpc(english["lee-abc-news"][300:])) < np.nanmean(model.bpc(english["webtext"][:200]))


def test_save_and_load_give_the_same_scores(tmp_path, english):
    model = KneserNeyLM.train(english["brown"][:200], order=4)
    model.save(str(tmp_path / "lm.npz"))
    loaded = KneserNeyLM.load(str(tmp_path / "lm.npz"))
    docs = english["brown"][200:230]
    np.testing.assert_array_equal(loaded.bpc(docs), model.bpc(docs))


def test_long_inputs_are_scored_in_slices_with_the_same_result(english, monkeypatch):
    import winnow.stages.score.ngram_lm as ngram_lm

    model = KneserNeyLM.train(english["lee-abc-news"][:100], order=4)
    docs = english["weborganizer-dclm"][:50]
    whole = model.total_bits(docs)
    monkeypatch.setattr(ngram_lm, "_CHUNK", 500)
    np.testing.assert_allclose(model.total_bits(docs), whole, rtol=1e-12)


def test_scoring_is_vectorised_enough_for_the_sample(english):
    """The bundled sample has ~6M characters; one model must score ~1M characters in seconds."""
    model = KneserNeyLM.train(english["lee-abc-news"] + english["brown"], order=5)
    docs = (english["weborganizer-dclm"] + english["brown"]) * 2
    chars = sum(map(len, docs))
    started = time.perf_counter()
    model.bpc(docs)
    elapsed = time.perf_counter() - started
    assert chars / elapsed > 200_000, f"{chars / elapsed:,.0f} chars/s"
