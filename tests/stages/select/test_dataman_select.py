"""Sample-with-DataMan (METHODS §2.6) in the ``select`` stage: the ``where`` filter, hierarchical
source → domain budgets, the uniform rule, upsampling short cells, determinism (§2.8 #4, #5)."""

from __future__ import annotations

import math
from collections import Counter

import apache_beam as beam
import pytest
from conftest import collect, local_pipeline

from winnow.beam.contract import KEPT, REJECTED, REMOVED
from winnow.core.budget import exact_cut, order_bits
from winnow.core.hashing import h64, uniform
from winnow.stages.select.config import SelectConfig
from winnow.stages.select.stage import SUMMARY, Select, hierarchical_budgets

SOURCES = ("CommonCrawl", "C4", "Book")
DOMAINS = ("A", "B", "E", "O")


def synthetic_pool() -> list[dict]:
    """3 sources × 4 domains with unequal cell sizes; ratings 1–5 and token counts from hashes."""
    docs = []
    for s, source in enumerate(SOURCES):
        for d, domain in enumerate(DOMAINS):
            for i in range(12 + 9 * s + 5 * d):
                doc_id = f"{source}-{domain}-{i}"
                docs.append(
                    {
                        "id": doc_id,
                        "text": doc_id,
                        "source": source,
                        "metadata": {"subset": source},
                        "application_domain": domain,
                        "overall_score": 1 + h64(doc_id, "test:score", 0) % 5,
                        "n_tokens": 20 + h64(doc_id, "test:tokens", 0) % 60,
                    }
                )
    return docs


def run_select(docs: list[dict], config: SelectConfig, seed: int = 0, tag: str = "x", parts: int = 1) -> dict:
    """Run the stage; ``parts`` > 1 feeds the input as several flattened PCollections (another shard layout)."""
    pipeline = local_pipeline()
    chunks = [docs[i::parts] for i in range(parts)]
    inputs = [pipeline | f"Create{i}" >> beam.Create(chunk) for i, chunk in enumerate(chunks)]
    pcoll = inputs[0] if parts == 1 else inputs | beam.Flatten()
    out = pcoll | Select(config, seed=seed)
    sinks = {k: collect(out[k], f"dm_{tag}_{k}") for k in out}
    pipeline.run().wait_until_finish()
    return {k: list(v) for k, v in sinks.items()}


def hierarchy_config(**extra) -> SelectConfig:
    return SelectConfig(
        enabled=True,
        rule="uniform",
        weight="tokens",
        balance_by=["subset", "application_domain"],
        where=[{"field": "overall_score", "op": "==", "value": 5}],
        **extra,
    )


def test_hierarchical_budgets_floor_per_level():
    totals = {("s1", "a"): 300, ("s1", "b"): 100, ("s2", "a"): 600}
    budgets = hierarchical_budgets(totals, 500)
    # B_s1 = ⌊400/1000·500⌋ = 200 → ⌊300/400·200⌋ = 150, ⌊100/400·200⌋ = 50; B_s2 = 300 → 300.
    assert budgets == {("s1", "a"): 150.0, ("s1", "b"): 50.0, ("s2", "a"): 300.0}
    assert hierarchical_budgets({("x",): 7, ("y",): 3}, 5) == {("x",): 3.0, ("y",): 1.0}


def test_where_conditions_validate():
    with pytest.raises(ValueError, match="needs a list"):
        SelectConfig(where=[{"field": "application_domain", "op": "in", "value": "A"}])
    with pytest.raises(ValueError, match="upsample"):
        SelectConfig(rule="threshold", threshold=1, upsample=True)


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    return synthetic_pool()


@pytest.fixture(scope="module")
def hierarchy_run(pool) -> dict:
    fives = [d for d in pool if d["overall_score"] == 5]
    budget = sum(d["n_tokens"] for d in fives) // 2
    return {"budget": budget, "out": run_select(pool, hierarchy_config(budget=budget), seed=3, tag="hier")}


def test_l5_filter_and_source_then_domain_shares(pool, hierarchy_run):
    out, budget = hierarchy_run["out"], hierarchy_run["budget"]
    fives = [d for d in pool if d["overall_score"] == 5]
    assert out[KEPT] and all(d["overall_score"] == 5 for d in out[KEPT])
    assert {r["id"] for r in out[REMOVED] if r["reason"] == "select:where"} == {
        d["id"] for d in pool if d["overall_score"] != 5
    }
    assert len(out[KEPT]) + len(out[REMOVED]) == len(pool) and not out[REJECTED]
    biggest = max(d["n_tokens"] for d in fives)
    total = sum(d["n_tokens"] for d in fives)  # T counts tokens after the l = 5 filter
    for source in SOURCES:
        t_s = sum(d["n_tokens"] for d in fives if d["source"] == source)
        b_s = math.floor(t_s / total * budget)
        got_s = sum(d["n_tokens"] for d in out[KEPT] if d["source"] == source)
        assert b_s <= got_s < b_s + len(DOMAINS) * biggest  # each cell overshoots by under one document
        assert abs(got_s / sum(d["n_tokens"] for d in out[KEPT]) - t_s / total) < 0.05
        for domain in DOMAINS:
            cell = [d for d in fives if d["source"] == source and d["application_domain"] == domain]
            b_sd = math.floor(sum(d["n_tokens"] for d in cell) / t_s * b_s)
            kept = [d for d in out[KEPT] if d["source"] == source and d["application_domain"] == domain]
            got = sum(d["n_tokens"] for d in kept)
            assert b_sd <= got < b_sd + biggest
            # Uniform rule: the cell's kept documents are the head of the permutation by hash.
            keys = [order_bits(uniform(d["id"], "select:uniform", 3)) for d in cell]
            ties = [h64(d["id"], "select:tiebreak", 3) for d in cell]
            cut = exact_cut(keys, ties, [d["n_tokens"] for d in cell], b_sd)
            chosen = {d["id"] for d, k, t in zip(cell, keys, ties, strict=True) if cut.keeps(k, t)}
            assert {d["id"] for d in kept} == chosen
    summaries = {tuple(s["cell"].values()): s for s in out[SUMMARY]}
    assert len(summaries) == len(SOURCES) * len(DOMAINS) and all(
        s["section"] == "selection" for s in summaries.values()
    )
    assert sum(s["pool_weight"] for s in summaries.values()) == total
    assert "epoch" not in out[KEPT][0]


def test_uniform_rule_ignores_the_scores(pool):
    config = SelectConfig(enabled=True, rule="uniform", weight="tokens", fraction=0.3, columns=["overall_score"])
    out = run_select(pool, config, seed=1, tag="unif")
    kept_scores = Counter(d["overall_score"] for d in out[KEPT])
    # A top-k on overall_score would keep only 5s and 4s; a permutation keeps every rating.
    assert set(kept_scores) == {1, 2, 3, 4, 5}
    assert all(r["reason"] == "select:uniform" for r in out[REMOVED])


def test_short_cells_are_upsampled_with_counted_repeats(pool):
    fives = [d for d in pool if d["overall_score"] == 5]
    total = sum(d["n_tokens"] for d in fives)
    budget = int(total * 2.5)  # more than the filtered pool: every cell is short by 1.5 × its tokens
    out = run_select(pool, hierarchy_config(budget=budget, upsample=True), seed=3, tag="up")
    firsts = [d for d in out[KEPT] if d["epoch"] == 0]
    repeats = [d for d in out[KEPT] if d["epoch"] >= 1]
    assert {d["id"] for d in firsts} == {d["id"] for d in fives}  # the whole pool once
    assert {d["id"] for d in repeats} <= {d["id"] for d in fives}
    biggest = max(d["n_tokens"] for d in fives)
    for s in out[SUMMARY]:
        cell = [d for d in repeats if (d["metadata"]["subset"], d["application_domain"]) == tuple(s["cell"].values())]
        repeated = sum(d["n_tokens"] for d in cell)
        assert s["shortfall"] == s["budget"] - s["pool_weight"] > 0
        assert repeated == s["repeated_weight"] and s["shortfall"] <= repeated < s["shortfall"] + biggest
    # Each document's repeats are epochs 1..c; draws with replacement give unequal counts.
    epochs: dict[str, list[int]] = {}
    for d in repeats:
        epochs.setdefault(d["id"], []).append(d["epoch"])
    assert all(sorted(e) == list(range(1, len(e) + 1)) for e in epochs.values())
    counts = Counter(len(epochs.get(d["id"], [])) for d in fives)
    assert len(counts) >= 3 and 0 in counts


def test_where_with_domain_list_and_missing_column(pool):
    docs = [dict(d) for d in pool[:80]]
    del docs[3]["application_domain"]
    config = SelectConfig(
        enabled=True,
        rule="top_k",
        columns=["overall_score"],
        weight="tokens",
        budget=10**9,
        where=[
            {"field": "overall_score", "op": ">=", "value": 4},
            {"field": "application_domain", "op": "in", "value": ["A", "B", "C"]},
        ],
    )
    out = run_select(docs, config, tag="where")
    assert [r["doc_id"] for r in out[REJECTED]] == [docs[3]["id"]]
    assert "application_domain" in out[REJECTED][0]["error"]
    expected = {d["id"] for d in docs[:3] + docs[4:] if d["overall_score"] >= 4 and d["application_domain"] in "ABC"}
    assert {d["id"] for d in out[KEPT]} == expected and expected
    assert all(r["reason"] == "select:where" for r in out[REMOVED])


def test_same_seed_same_ids_across_shard_layouts_and_other_seed_differs(pool, hierarchy_run):
    budget = hierarchy_run["budget"]
    config = hierarchy_config(budget=budget, upsample=False)
    first = sorted(d["id"] for d in hierarchy_run["out"][KEPT])
    resharded = run_select(list(reversed(pool)), config, seed=3, tag="reshard", parts=3)
    assert sorted(d["id"] for d in resharded[KEPT]) == first
    other = run_select(pool, config, seed=4, tag="seed4")
    assert sorted(d["id"] for d in other[KEPT]) != first


def test_single_criterion_top_k_on_tied_integer_ratings_cuts_by_hash_without_collecting(pool, tmp_path):
    from conftest import run_stage

    config = SelectConfig(
        enabled=True, rule="top_k", columns=["overall_score"], weight="tokens", fraction=0.5, balance_by="source"
    )
    out = run_stage(Select(config, seed=7), pool, tmp_path)
    expected: set[str] = set()
    total = sum(d["n_tokens"] for d in pool)
    for source in SOURCES:
        group = [d for d in pool if d["source"] == source]
        budget = math.floor(sum(d["n_tokens"] for d in group) / total * (0.5 * total))
        keys = [order_bits(float(d["overall_score"])) for d in group]
        ties = [h64(d["id"], "select:tiebreak", 7) for d in group]
        cut = exact_cut(keys, ties, [d["n_tokens"] for d in group], budget)
        expected |= {d["id"] for d, k, t in zip(group, keys, ties, strict=True) if cut.keeps(k, t)}
    assert {d["id"] for d in out["kept"]} == expected
    # Each source's boundary rating is shared by dozens of documents; the cut among them is found
    # by histograms over their tiebreak hashes, so a worker gathers only the last hash bin: the one
    # document whose hash agrees with the boundary's in its top 40 bits, per source.
    for source in SOURCES:
        boundary = min(d["overall_score"] for d in out["kept"] if d["source"] == source)
        assert sum(1 for d in pool if d["source"] == source and d["overall_score"] == boundary) >= 10
    assert out["counters"].get("select:cut_collected", 0) <= len(SOURCES)
