"""Selection math (METHODS §0, §1.6): hash draws, z-normalisation, Gumbel-top-k, the budget cut."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from winnow.core.budget import (
    KEEP_ALL,
    KEEP_NONE,
    exact_cut,
    group_budgets,
    histogram_cut,
    order_bits,
    order_bits_array,
    selected_weight,
    selection_key,
    z_normalise,
)
from winnow.core.hashing import gumbel, h64, uniform, uniforms
from winnow.core.stats import MeanStd


def test_uniform_is_a_deterministic_draw_in_the_open_unit_interval():
    ids = [f"doc-{i}" for i in range(20_000)]
    u = uniforms(ids, "select", 7)
    assert np.all((u > 0) & (u < 1))
    assert np.array_equal(u, uniforms(ids, "select", 7))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    # purpose and seed give independent streams
    assert abs(np.corrcoef(u, uniforms(ids, "other", 7))[0, 1]) < 0.03
    assert abs(np.corrcoef(u, uniforms(ids, "select", 8))[0, 1]) < 0.03
    assert uniform("x", "p", 0) == ((h64("x", "p", 0) >> 12) + 0.5) / 2**52


def test_the_extreme_hashes_do_not_round_to_zero_or_one():
    for h in (0, 2**64 - 1):
        u = ((h >> 12) + 0.5) / 2**52
        assert 0 < u < 1 and math.isfinite(gumbel(u))


def test_mean_std_matches_numpy_and_does_not_depend_on_merge_order():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.5, 5_000) * 1e3
    whole = MeanStd.of(values)
    assert whole.mean == pytest.approx(values.mean(), rel=1e-12)
    assert whole.std == pytest.approx(values.std(), rel=1e-9)
    for trial in range(5):
        parts = [MeanStd.of(values[i : i + 313]) for i in range(0, len(values), 313)]
        random.Random(trial).shuffle(parts)
        merged = MeanStd()
        for part in parts:
            merged = merged.merge(part)
        assert (merged.mean, merged.std) == (whole.mean, whole.std)  # bit for bit


def test_z_normalisation():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    stats = MeanStd.of(values)
    z = z_normalise(values, stats.mean, stats.std)
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert np.array_equal(z_normalise(values, 2.0, 0.0), np.zeros(4))


def test_gumbel_top_k_samples_without_replacement_in_proportion_to_exp_logit():
    """The first key is item i with probability ∝ exp(ℓ_i); the first two follow Plackett–Luce."""
    logits = np.array([0.0, 0.5, 1.0, 2.0])
    weights = np.exp(logits)
    trials = 30_000
    first = np.zeros(4)
    pairs: dict[tuple[int, int], int] = {}
    for trial in range(trials):
        keys = [logits[i] + gumbel(uniform(f"t{trial}-{i}", "gumbel", 0)) for i in range(4)]
        order = np.argsort(keys)[::-1]
        first[order[0]] += 1
        pairs[(order[0], order[1])] = pairs.get((order[0], order[1]), 0) + 1
    expected = weights / weights.sum()
    assert np.max(np.abs(first / trials - expected)) < 0.012
    for (a, b), count in pairs.items():
        p = weights[a] / weights.sum() * weights[b] / (weights.sum() - weights[a])
        assert abs(count / trials - p) < 0.012, (a, b)


def test_temperature_limits():
    metric = np.linspace(-2, 2, 50)
    stats = MeanStd.of(metric)
    ids = [f"d{i}" for i in range(50)]

    def keys(tau: float) -> np.ndarray:
        return np.array(
            [
                selection_key(m, d, mean=stats.mean, std=stats.std, temperature=tau, seed=1)
                for m, d in zip(metric, ids, strict=True)
            ]
        )

    # τ = 0: the z-score itself, i.e. top-k by the metric
    assert np.allclose(keys(0.0), z_normalise(metric, stats.mean, stats.std))
    assert list(np.argsort(keys(0.0))) == list(range(50))
    # τ → ∞: noise dominates; the top-10 is unrelated to the metric
    top = np.argsort(keys(1e9))[::-1][:10]
    assert 15 < np.mean(top) < 35
    # τ = 2: in between, still favours high metrics
    assert np.mean(np.argsort(keys(2.0))[::-1][:10]) > np.mean(top)


def test_order_bits_preserve_float_order():
    values = [-math.inf, -1e308, -2.5, -1e-300, -0.0, 0.0, 1e-300, 0.5, 1.0, 1e308, math.inf]
    bits = [order_bits(v) for v in values]
    assert bits == sorted(bits) and len(set(bits)) == len(bits)
    assert order_bits_array(np.array(values)).tolist() == bits
    rng = np.random.default_rng(2)
    x = rng.standard_cauchy(10_000)
    assert np.array_equal(np.argsort(x, kind="stable"), np.argsort(order_bits_array(x), kind="stable"))


def _case(rng: np.random.Generator, n: int, ties: bool) -> tuple[list[int], list[int], list[int]]:
    keys = rng.normal(size=n)
    if ties:
        keys = np.round(keys, 1)
    kb = order_bits_array(keys).tolist()
    tb = [h64(str(i), "tiebreak", 0) for i in range(n)]
    w = rng.integers(0, 3000, n).tolist()
    return kb, tb, w


def test_exact_cut_keeps_the_shortest_prefix_that_reaches_the_budget():
    """METHODS §0 and §3.6 test 6: ≥ budget, and dropping the last kept document falls below."""
    rng = np.random.default_rng(3)
    for trial in range(200):
        kb, tb, w = _case(rng, int(rng.integers(2, 400)), ties=trial % 2 == 0)
        budget = float(rng.uniform(1, sum(w)))
        cut = exact_cut(kb, tb, w, budget)
        kept = [i for i in range(len(kb)) if cut.keeps(kb[i], tb[i])]
        total = sum(w[i] for i in kept)
        assert total >= budget
        last = min(kept, key=lambda i: (kb[i], tb[i]))
        assert total - w[last] < budget
        assert total - budget < w[last] or w[last] == 0  # overshoot below one document
        # everything kept ranks above everything dropped
        dropped = [i for i in range(len(kb)) if i not in set(kept)]
        if dropped:
            assert min((kb[i], tb[i]) for i in kept) > max((kb[i], tb[i]) for i in dropped)


def test_exact_cut_edges():
    kb, tb, w = [order_bits(1.0), order_bits(2.0)], [1, 2], [5, 5]
    assert exact_cut(kb, tb, w, 0) == KEEP_NONE
    assert exact_cut(kb, tb, w, 11) == KEEP_ALL
    assert selected_weight(kb, tb, w, exact_cut(kb, tb, w, 5)) == 5
    assert selected_weight(kb, tb, w, exact_cut(kb, tb, w, 5.5)) == 10


@pytest.mark.parametrize("ties", [False, True])
def test_histogram_cut_is_the_exact_cut(ties):
    rng = np.random.default_rng(4)
    for _ in range(150):
        kb, tb, w = _case(rng, int(rng.integers(1, 500)), ties)
        budget = float(rng.uniform(0, sum(w) * 1.2))
        expected = exact_cut(kb, tb, w, budget)
        cut, collected = histogram_cut(kb, tb, w, budget)
        assert [cut.keeps(k, t) for k, t in zip(kb, tb, strict=True)] == [
            expected.keeps(k, t) for k, t in zip(kb, tb, strict=True)
        ]
        if not ties:
            assert collected <= 3  # continuous keys: the last bin holds (almost) only the boundary document


def test_histogram_cut_with_one_value_everywhere_breaks_ties_by_hash():
    n = 1000
    kb = [order_bits(0.5)] * n
    tb = [h64(str(i), "tiebreak", 0) for i in range(n)]
    w = [10] * n
    cut, collected = histogram_cut(kb, tb, w, 2_505)
    kept = [i for i in range(n) if cut.keeps(kb[i], tb[i])]
    assert len(kept) == 251 and collected == n
    assert sorted(kept) == sorted(sorted(range(n), key=lambda i: tb[i], reverse=True)[:251])


def test_group_budgets_are_proportional_and_floored():
    budgets = group_budgets({"a": 700, "b": 299, "c": 1}, 100)
    assert budgets == {"a": 70.0, "b": 29.0, "c": 0.0}
    assert group_budgets({"a": 0}, 10) == {"a": 0.0}
