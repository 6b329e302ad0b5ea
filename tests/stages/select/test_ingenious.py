"""INGENIOUS core: the fidelity tests of docs/ingenious.md plus determinism."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from scipy.stats import chi2_contingency, chisquare

from winnow.core.hashing import uniform
from winnow.stages.select import ingenious
from winnow.stages.select.ingenious import (
    KERNEL_ONE,
    cosine_kernel,
    draw_round,
    facility_location_value,
    gumbel_key,
    lazy_greedy,
    naive_greedy,
    partition_of,
    partition_samples,
    quantise,
    random_fl_values,
    random_set_size,
    round_purpose,
    select_partition,
    split_partition,
    stochastic_greedy,
    subset_size,
    taylor_softmax,
    taylor_weight,
)
from winnow.stages.select.ingenious_config import IngeniousConfig


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def brute_force_fl(kernel: np.ndarray, subset: list[int]) -> int:
    """f(S) straight from the definition, in Python integers."""
    if not subset:
        return 0
    return sum(max(0, max(int(kernel[i, j]) for j in subset)) for i in range(kernel.shape[0]))


def config(**overrides) -> IngeniousConfig:
    data = {"partitions": {"count": 1, "max_size": 10_000}, "rounds": {"count": 3, "seed": 23}}
    data.update(overrides)
    return IngeniousConfig.model_validate(data)


def items_of(vectors: np.ndarray, tokens: list[int] | None = None) -> list[tuple[str, int, np.ndarray]]:
    tokens = tokens or [100] * len(vectors)
    return [(f"doc-{i:05d}", tokens[i], vectors[i]) for i in range(len(vectors))]


# --- the kernel --------------------------------------------------------------------------------


def test_kernel_is_exact_cosine_of_quantised_vectors():
    vectors = np.random.default_rng(1).normal(size=(300, 384)).astype(np.float32) * 3.7
    kernel = cosine_kernel(vectors)
    quantised, norms2 = quantise(vectors)
    exact_ip = quantised.astype(np.int64) @ quantised.astype(np.int64).T  # integer matmul, no BLAS
    expected = np.rint(exact_ip * KERNEL_ONE / np.sqrt(np.outer(norms2, norms2).astype(np.float64)))
    assert np.array_equal(kernel, expected.astype(np.int32))
    assert np.array_equal(kernel, kernel.T)
    assert (np.diag(kernel) == KERNEL_ONE).all()
    # Close to the float cosine: quantisation to 2047 levels moves it by under 0.001.
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.abs(kernel / KERNEL_ONE - unit @ unit.T).max() < 1e-3


def test_zero_vector_has_zero_similarity():
    vectors = unit_vectors(4, 8, 2)
    vectors[2] = 0
    kernel = cosine_kernel(vectors)
    assert (kernel[2] == 0).all() and (kernel[:, 2] == 0).all()
    with pytest.raises(ValueError):
        cosine_kernel(np.array([[np.nan, 1.0]], dtype=np.float32))


# --- 1. gains are exact -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_lazy_greedy_equals_naive_and_gains_are_exact(seed):
    vectors = unit_vectors(8, 16, seed)
    if seed % 4 == 0:  # duplicates force ties: both must break them the same way
        vectors[5] = vectors[1]
        vectors[7] = vectors[1]
    kernel = cosine_kernel(vectors)
    naive = naive_greedy(kernel, 7)
    lazy = lazy_greedy(kernel, 7)
    assert lazy.order == naive.order
    assert lazy.gains == naive.gains
    for t in range(1, 8):
        assert sum(lazy.gains[:t]) == brute_force_fl(kernel, lazy.order[:t])
        assert facility_location_value(kernel, lazy.order[:t]) == brute_force_fl(kernel, lazy.order[:t])
    assert all(a >= b for a, b in itertools.pairwise(lazy.gains))
    assert len(set(lazy.order)) == 7


def test_lazy_greedy_matches_naive_on_a_larger_partition_and_saves_evaluations():
    kernel = cosine_kernel(unit_vectors(150, 32, 7) + 0.3)
    naive = naive_greedy(kernel, 149)
    lazy = lazy_greedy(kernel, 149)
    assert (lazy.order, lazy.gains) == (naive.order, naive.gains)
    assert lazy.evaluations < naive.evaluations / 3


# --- 2. greedy bound ----------------------------------------------------------------------------


def test_greedy_is_within_one_minus_one_over_e_of_the_optimum():
    for seed in range(50):
        kernel = cosine_kernel(unit_vectors(12, 6, 100 + seed))
        greedy_value = facility_location_value(kernel, lazy_greedy(kernel, 4).order)
        best = max(brute_force_fl(kernel, list(s)) for s in itertools.combinations(range(12), 4))
        assert greedy_value >= (1 - 1 / math.e) * best


# --- 3. Taylor softmax --------------------------------------------------------------------------


def test_taylor_softmax_reference_values():
    assert [taylor_weight(x, 2) for x in (0.0, 1.0, 2.0)] == [1.0, 2.5, 5.0]
    assert taylor_softmax([0.0, 1.0, 2.0]) == pytest.approx([0.1176, 0.2941, 0.5882], abs=5e-5)
    assert taylor_softmax([0.0, 2.0, 4.0], temperature=2.0) == taylor_softmax([0.0, 1.0, 2.0])
    assert taylor_softmax([0.0, 1.0, 2.0], order=1) == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert taylor_softmax([0.0, 5.0], order=0) == [0.5, 0.5]
    assert taylor_weight(1.0, 12) == pytest.approx(math.e, rel=1e-9)
    assert min(taylor_weight(x / 10, 2) for x in range(-50, 50)) >= 0.5  # every ranked sample keeps a chance


# --- 4. sampling equivalence --------------------------------------------------------------------

SIX_PROBS = taylor_softmax([0.0, 1.0, 2.0, 0.5, 1.5, 3.0])


def numpy_choice_law(rng: np.random.Generator, p: np.ndarray, trials: int) -> np.ndarray:
    """``Generator.choice(6, 2, replace=False, p=p)`` for many trials at once, step for step as numpy
    does it: two draws from the cdf; if they coincide, one more from p with the first removed."""
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    x = rng.random((trials, 2))
    first = cdf.searchsorted(x[:, 0], side="right")
    second = cdf.searchsorted(x[:, 1], side="right")
    clash = np.flatnonzero(first == second)
    rest = np.tile(p, (len(clash), 1))
    rest[np.arange(len(clash)), first[clash]] = 0
    rest_cdf = np.cumsum(rest, axis=1)
    rest_cdf /= rest_cdf[:, -1:]
    redraw = rng.random(len(clash))
    second[clash] = (rest_cdf <= redraw[:, None]).sum(axis=1)
    return np.stack([first, second], axis=1)


def test_vectorised_choice_is_numpys_choice():
    p = np.array(SIX_PROBS)
    for seed in range(300):
        expected = np.random.default_rng(seed).choice(6, 2, replace=False, p=p)
        assert numpy_choice_law(np.random.default_rng(seed), p, 1)[0].tolist() == expected.tolist()


def pair_counts(pairs: np.ndarray) -> np.ndarray:
    low, high = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return np.bincount(low * 6 + high, minlength=36).reshape(6, 6)[np.triu_indices(6, 1)]


def test_gumbel_top_k_samples_like_numpy_choice_without_replacement():
    trials = 200_000
    ids = [f"doc-{i}" for i in range(6)]
    # The hash draws of 200K rounds; the key formula applied to them at once (checked against
    # gumbel_key itself on the first rounds), so the test stays fast.
    u = np.array([uniform(doc_id, round_purpose(r), 5) for r in range(trials) for doc_id in ids]).reshape(trials, 6)
    keys = np.log(SIX_PROBS) - np.log(-np.log(u))
    for r in range(500):
        assert keys[r].tolist() == pytest.approx([gumbel_key(SIX_PROBS[i], ids[i], 5, r) for i in range(6)], rel=1e-13)
    top2 = np.argpartition(-keys, 1, axis=1)[:, :2]
    gumbel = pair_counts(top2)
    reference = pair_counts(numpy_choice_law(np.random.default_rng(11), np.array(SIX_PROBS), trials))
    assert chi2_contingency(np.stack([gumbel, reference]))[1] > 0.01
    # Against the law itself: P({a, b}) = p_a p_b (1/(1 − p_a) + 1/(1 − p_b)) for successive sampling.
    p = SIX_PROBS
    law = np.array([p[a] * p[b] * (1 / (1 - p[a]) + 1 / (1 - p[b])) for a, b in itertools.combinations(range(6), 2)])
    assert law.sum() == pytest.approx(1.0)
    assert chisquare(gumbel, law * trials).pvalue > 0.01
    # The test can fail: sampling ∝ p² (keys 2·log p + G) is far from it.
    squared = pair_counts(np.argpartition(-(keys + np.log(SIX_PROBS)), 1, axis=1)[:, :2])
    assert chisquare(squared, law * trials).pvalue < 1e-6


def test_draw_round_takes_the_top_keys():
    ids = [f"doc-{i}" for i in range(6)]
    probs = [*SIX_PROBS[:5], 0.0]  # the last one is the unranked element
    chosen = draw_round(ids, probs, [1] * 6, 2, seed=5, round_index=9)
    keys = {i: gumbel_key(probs[i], ids[i], 5, 9) for i in range(5)}
    assert sorted(chosen) == sorted(sorted(keys, key=keys.get, reverse=True)[:2])


# --- 5. budgets ---------------------------------------------------------------------------------


def test_partition_sample_budgets():
    for size in range(1, 60):
        for total, k in ((1000, 250), (997, 249), (50, 13)):
            assert partition_samples(size, total, k) == min(math.ceil(size * k / total - 1e-12), size - 1)
    assert partition_samples(1, 100, 25) == 0
    assert subset_size(8939, 0.25) == 2235
    ids = [f"d{i}" for i in range(5000)]
    for count in (1, 4, 16, 60):
        sizes = np.bincount([partition_of(d, 23, count) for d in ids], minlength=count)
        k = subset_size(len(ids), 0.25)
        total = sum(partition_samples(int(s), len(ids), k) for s in sizes)
        assert k <= total <= k + count


def test_samples_rounds_draw_k_p_and_never_the_unranked_element():
    vectors = unit_vectors(40, 16, 3)
    out = select_partition(
        0, items_of(vectors), config(rounds={"count": 30, "seed": 4}), total_docs=160, total_tokens=16_000
    )
    k_p = partition_samples(40, 160, subset_size(160, 0.25))
    assert k_p == 10
    unranked = [row for row in out.rows if row.rank is None]
    assert len(unranked) == 1
    assert unranked[0].rounds == () and unranked[0].prob == 0.0 and unranked[0].gain is None
    for r in range(30):
        assert sum(r in row.rounds for row in out.rows) == k_p
    assert [s["selected"] for s in out.summaries[0]["rounds"]] == [k_p] * 30
    ranks = sorted(row.rank for row in out.rows if row.rank is not None)
    assert ranks == list(range(39))


def test_token_rounds_reach_the_budget_and_lose_it_without_the_last_document():
    vectors = unit_vectors(60, 16, 8)
    tokens = [50 + (i * 37) % 400 for i in range(60)]
    cfg = config(weight="tokens", fraction=0.3, rounds={"count": 12, "seed": 9})
    out = select_partition(7, items_of(vectors, tokens), cfg, total_docs=60, total_tokens=sum(tokens))
    budget = out.summaries[0]["budget"]
    assert budget == pytest.approx(0.3 * sum(tokens))
    for stat in out.summaries[0]["rounds"]:
        assert stat["tokens"] >= budget
    # Rebuild round 5 from the written probabilities' source: the last document in key order tips it.
    ids = [row.doc_id for row in out.rows]
    by_id = dict(zip([f"doc-{i:05d}" for i in range(60)], tokens, strict=True))
    probs = _probabilities(vectors, cfg)
    chosen = draw_round(ids, probs, [by_id[d] for d in ids], budget, 9, 5)
    assert sorted(ids[i] for i in chosen) == sorted(row.doc_id for row in out.rows if 5 in row.rounds)
    last = min(chosen, key=lambda i: gumbel_key(probs[i], ids[i], 9, 5))
    kept = sum(by_id[ids[i]] for i in chosen)
    assert kept >= budget > kept - by_id[ids[last]]


def _probabilities(vectors: np.ndarray, cfg: IngeniousConfig) -> list[float]:
    kernel = cosine_kernel(vectors)
    ranking = lazy_greedy(kernel, len(vectors) - 1)
    probs = [0.0] * len(vectors)
    for j, p in zip(ranking.order, taylor_softmax([g / KERNEL_ONE for g in ranking.gains]), strict=True):
        probs[j] = p
    return probs


# --- 6. representativeness ---------------------------------------------------------------------


def zipf_clusters(n: int = 2000, clusters: int = 20, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, clusters + 1)
    sizes = np.floor(weights / weights.sum() * n).astype(int)
    sizes[0] += n - sizes.sum()
    centres = rng.normal(size=(clusters, dim))
    labels = np.repeat(np.arange(clusters), sizes)
    points = centres[labels] + rng.normal(scale=0.6, size=(n, dim))
    return points.astype(np.float32), labels


def test_selection_is_representative():
    vectors, labels = zipf_clusters()
    cfg = config(rounds={"count": 1, "seed": 23})
    out = select_partition(0, items_of(vectors), cfg, total_docs=2000, total_tokens=200_000)
    chosen = [int(row.doc_id.split("-")[1]) for row in out.rows if row.rounds]
    assert len(chosen) == 500
    kernel = cosine_kernel(vectors)
    value = facility_location_value(kernel, chosen) / KERNEL_ONE
    ids = [f"doc-{i:05d}" for i in range(2000)]
    mean, std = random_fl_values(kernel, ids, [500], seed=1, trials=100)[500]
    assert value > mean + 3 * std
    assert out.summaries[0]["rounds"][0]["fl"] == pytest.approx(value)
    assert set(labels[chosen]) == set(range(20))


# --- 7. reference optimizer ----------------------------------------------------------------------


def test_stochastic_optimizer_evaluates_two_candidates_per_step():
    for n in range(5, 300):
        assert random_set_size(n, n - 1, 0.1) == math.floor(n / (n - 1) * math.log(10)) == 2
    kernel = cosine_kernel(unit_vectors(60, 16, 5))
    drawn: list[list[int]] = []
    base = ingenious.hash_draw("p", 23)

    def draw(step: int, i: int, r: int) -> int:
        value = base(step, i, r)
        assert 0 <= value < r
        drawn.append([step, i])
        return value

    ranking = stochastic_greedy(kernel, 59, 0.1, draw)
    assert ranking.step_evaluations == [2] * 59
    assert ranking.evaluations == 2 * 59
    assert len(drawn) == 2 * 59
    assert len(set(ranking.order)) == 59
    exact = lazy_greedy(kernel, 59)
    assert ranking.order != exact.order  # best of two is only weakly greedy
    assert any(a < b for a, b in itertools.pairwise(ranking.gains))  # and its gains are not monotone


def test_stochastic_step_keeps_the_better_of_its_two_candidates():
    kernel = cosine_kernel(unit_vectors(30, 8, 12))
    draws: dict[tuple[int, int], int] = {}
    base = ingenious.hash_draw("q", 3)

    def draw(step: int, i: int, r: int) -> int:
        draws[step, i] = base(step, i, r)
        return draws[step, i]

    ranking = stochastic_greedy(kernel, 29, 0.1, draw)
    remaining = list(range(30))
    cover = np.zeros(30, dtype=np.int64)
    for step, picked in enumerate(ranking.order):
        shuffled = list(remaining)  # a plain Fisher–Yates over the remaining candidates, two swaps deep
        for i in range(2):
            pick = i + draws[step, i]
            shuffled[i], shuffled[pick] = shuffled[pick], shuffled[i]
        candidates = shuffled[:2]
        gain = {x: int(np.maximum(kernel[x] - cover, 0).sum()) for x in candidates}
        best = max(candidates, key=lambda x: (gain[x], -x))
        assert picked == best and ranking.gains[step] == gain[best]
        cover = np.maximum(cover, kernel[picked])
        remaining.remove(picked)


def test_stochastic_partition_summary():
    out = select_partition(
        0, items_of(unit_vectors(25, 8, 3)), config(optimizer="stochastic"), total_docs=100, total_tokens=10_000
    )
    assert out.summaries[0]["evaluations"] == 2 * 24


# --- 8. rounds and determinism -------------------------------------------------------------------


def run_pool(items, cfg: IngeniousConfig, order_seed: int):
    """The Beam shape: key every document by partition, group, one call per partition, in any order."""
    shuffled = list(items)
    random.Random(order_seed).shuffle(shuffled)
    groups: dict[int, list] = {}
    for item in shuffled:
        groups.setdefault(partition_of(item[0], cfg.rounds.seed, cfg.partitions.count), []).append(item)
    keys = list(groups)
    random.Random(order_seed + 1).shuffle(keys)
    rows, summaries = [], []
    total_tokens = sum(item[1] for item in items)
    for key in keys:
        out = select_partition(key, groups[key], cfg, total_docs=len(items), total_tokens=total_tokens)
        rows += out.rows
        summaries += out.summaries
    return sorted(rows, key=lambda row: row.doc_id), sorted(summaries, key=lambda s: s["partition"])


def test_rounds_are_deterministic_differ_and_have_equal_size():
    vectors = unit_vectors(240, 24, 21)
    items = items_of(vectors, [30 + i % 17 for i in range(240)])
    cfg = config(partitions={"count": 3, "max_size": 10_000}, rounds={"count": 6, "seed": 5})
    first = run_pool(items, cfg, 1)
    assert run_pool(items, cfg, 2) == first
    rows, summaries = first
    per_round = [frozenset(row.doc_id for row in rows if r in row.rounds) for r in range(6)]
    assert len(set(per_round)) == 6
    assert len({len(s) for s in per_round}) == 1
    assert len(per_round[0]) == sum(partition_samples(s["size"], 240, 60) for s in summaries)
    other_seed = run_pool(items, config(partitions={"count": 3, "max_size": 10_000}, rounds={"count": 6, "seed": 6}), 1)
    assert other_seed[0] != rows


def test_input_order_batches_and_vector_types_do_not_change_output(monkeypatch):
    vectors = unit_vectors(90, 32, 13) + 0.2
    items = items_of(vectors, [10 + i for i in range(90)])
    cfg = config(rounds={"count": 4, "seed": 2})
    reference = select_partition(5, items, cfg, total_docs=300, total_tokens=20_000)
    shuffled = list(reversed(items))
    as_lists = [(d, t, [float(x) for x in v]) for d, t, v in shuffled]
    monkeypatch.setattr(ingenious, "_ROW_BLOCK", 7)  # kernel, gains and FL built in other row blocks
    assert select_partition(5, as_lists, cfg, total_docs=300, total_tokens=20_000) == reference
    assert lazy_greedy(cosine_kernel(vectors), 89, batch=1).order == lazy_greedy(cosine_kernel(vectors), 89).order


def test_oversized_partitions_split_into_near_equal_parts():
    ids = [f"x{i}" for i in range(103)]
    parts = split_partition(ids, 25, 23)
    assert len(parts) == 5 and sorted(len(p) for p in parts) == [20, 20, 21, 21, 21]
    assert sorted(i for p in parts for i in p) == list(range(103))
    vectors = unit_vectors(103, 8, 4)
    items = [(ids[i], 1, vectors[i]) for i in range(103)]
    out = select_partition(2, items, config(partitions={"count": 10, "max_size": 25}), total_docs=103, total_tokens=103)
    assert sorted(s["partition"] for s in out.summaries) == [2, 12, 22, 32, 42]
    assert sum(row.rank is None for row in out.rows) == 5
    assert len(out.rows) == 103


def test_duplicate_ids_are_refused():
    vectors = unit_vectors(3, 4, 0)
    with pytest.raises(ValueError):
        select_partition(0, [("a", 1, vectors[0]), ("a", 1, vectors[1])], config(), total_docs=2, total_tokens=2)


# --- config -------------------------------------------------------------------------------------

SECTION = """
fraction: 0.25
embedding: {source: model, model: static}
partitions: {strategy: random, count: 1500, max_size: 10000}
optimizer: lazy
epsilon: 0.1
temperature: 1.0
taylor_order: 2
weight: samples
rounds: {count: 40, seed: 23}
"""


def test_config_block_parses_and_defaults_match_it():
    parsed = IngeniousConfig.model_validate(yaml.safe_load(SECTION))
    assert parsed == IngeniousConfig()
    assert parsed.partitions.count == 1500 and parsed.rounds.count == 40 and parsed.rounds.seed == 23
    column = IngeniousConfig.model_validate({"embedding": {"source": "column", "column": "emb"}})
    assert column.embedding.column == "emb"
    for bad in ({"optimizer": "greedy"}, {"epsilon": 1.5}, {"fraction": 0}, {"temperature": 0}, {"extra": 1}):
        with pytest.raises(ValidationError):
            IngeniousConfig.model_validate(bad)
