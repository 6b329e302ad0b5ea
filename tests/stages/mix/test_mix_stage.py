"""Stage ``mix`` on the local runner (METHODS §6.5 #2, #3, #5): target mixtures realised per domain,
shortfalls repeated up to the epoch cap and the rest reported, phases covering their token
fractions, the independence product, quality ranking inside each domain's budget, determinism.

The pool is 2,000 real weborganizer-dclm pages (ids, model-assigned topic and format, token counts
under the bundled tokenizer; ``tests/data/mix/README.md``); texts are not needed to mix.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections import Counter, defaultdict
from typing import Any

import apache_beam as beam
import pytest
from conftest import DATA, collect, local_pipeline, run_stage

from winnow.beam.contract import KEPT, REJECTED, REMOVED
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import uniform
from winnow.stages.mix.config import MixConfig
from winnow.stages.mix.mixing import MixtureGeneration, generate_mixtures, total_variation
from winnow.stages.mix.stage import NOT_SELECTED, SUMMARY, Mix, prepare_mix

UPSAMPLED = ("Science & Tech.", "Software Dev.", "Education & Jobs")


@pytest.fixture(scope="module")
def pool() -> list[dict[str, Any]]:
    with gzip.open(DATA / "mix" / "weborganizer_pool.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [
        {
            "id": r["id"],
            "text": f"page {r['id']}",
            "url": None,
            "source": "weborganizer-dclm",
            "metadata": {"format": r["format"]},  # the stage reads tags at top level or in metadata
            "topic": r["topic"],
            "n_tokens": r["n_tokens"],
            # a quality score that has nothing to do with the topic
            "quality": math.sqrt(-2 * math.log(uniform(r["id"], "quality", 7)))
            * math.cos(2 * math.pi * uniform(r["id"], "quality-angle", 7)),
        }
        for r in rows
    ]


def run_mix(config: MixConfig, docs: list[dict[str, Any]], seed: int = 0, tokenizer: Any = None) -> dict[str, Any]:
    """The stage's four outputs and its counters; the driver-side ``prepare_mix`` step runs first, as in a run."""
    pipeline = local_pipeline()
    stage = Mix(config, seed=seed, tokenizer=tokenizer, **prepare_mix(config))
    result = pipeline | beam.Create(docs, reshuffle=False) | stage
    outputs = {name: collect(result[name], f"mix_{name}") for name in (KEPT, REMOVED, REJECTED, SUMMARY)}
    outcome = pipeline.run()
    outcome.wait_until_finish()
    out = {name: list(rows) for name, rows in outputs.items()}
    out["counters"] = {c.key.metric.name: c.committed for c in outcome.metrics().query()["counters"]}
    return out


def tokens_by(rows: list[dict], key: Any) -> dict[Any, int]:
    totals: dict[Any, int] = defaultdict(int)
    for row in rows:
        totals[key(row)] += row["n_tokens"]
    return dict(totals)


def topic_weights(pool: list[dict], boost: float) -> dict[str, float]:
    """The pool's topic shares with a few topics multiplied by ``boost`` (and the rest shrunk)."""
    totals = tokens_by(pool, lambda d: d["topic"])
    weights = {t: v * (boost if t in UPSAMPLED else 1.0) for t, v in totals.items()}
    return {t: w / sum(weights.values()) for t, w in weights.items()}


def assert_nothing_lost(pool: list[dict], out: dict[str, Any]) -> None:
    originals = [d["id"] for d in out[KEPT] if d["epoch"] == 0]
    removed = [d["id"] for d in out[REMOVED]]
    assert len(originals) == len(set(originals))
    assert sorted(originals + removed) == sorted(d["id"] for d in pool)
    assert all(d["reason"] == NOT_SELECTED for d in out[REMOVED])
    assert out["counters"].get(NOT_SELECTED, 0) == len(removed)


def test_sampling_realises_the_target_mixture(pool, tmp_path) -> None:
    weights = topic_weights(pool, boost=2.0)
    config = MixConfig(enabled=True, domain_field="topic", fraction=0.5, weights={"manual": weights})
    out = run_stage(Mix(config, seed=1), pool, tmp_path)
    assert not out[REJECTED]
    assert_nothing_lost(pool, out)
    budget = 0.5 * sum(d["n_tokens"] for d in pool)
    realised = tokens_by(out[KEPT], lambda d: d["topic"])
    total = sum(realised.values())
    largest = {t: max(d["n_tokens"] for d in pool if d["topic"] == t) for t in weights}
    for topic, weight in weights.items():
        planned = round(budget * weight)
        assert planned <= realised[topic] < planned + largest[topic]  # the §0 cut: overshoot < one doc
        assert abs(realised[topic] / total - weight) <= max(0.005, largest[topic] / total), topic
    # upsampled topics exceed their pool share; inside the pool, so no document repeats
    assert all(d["epoch"] == 0 and d["phase"] is None for d in out[KEPT])


def test_shortfalls_repeat_whole_epochs_up_to_the_cap_and_report_the_rest(pool) -> None:
    pool_tokens = tokens_by(pool, lambda d: d["topic"])
    travel, adult = pool_tokens["Travel"], pool_tokens["Adult"]
    demands = {"Travel": 2.5 * travel, "Adult": 5 * adult}  # 2.5 epochs; 5 epochs against a cap of 3
    budget = sum(demands.values())
    config = MixConfig(
        enabled=True,
        budget=round(budget),
        max_epochs=3,
        weights={"manual": {t: d / budget for t, d in demands.items()}},
    )
    out = run_mix(config, pool)
    assert_nothing_lost(pool, out)
    copies = Counter(d["id"] for d in out[KEPT])
    epochs = defaultdict(set)
    for d in out[KEPT]:
        epochs[d["id"]].add(d["epoch"])
    assert max(copies.values()) <= 3 and all(e == set(range(copies[i])) for i, e in epochs.items())
    topic_of = {d["id"]: d["topic"] for d in pool}
    assert {topic_of[i] for i in copies} == {"Travel", "Adult"}
    assert all(copies[d["id"]] == 3 for d in pool if d["topic"] == "Adult")
    travel_copies = [copies[d["id"]] for d in pool if d["topic"] == "Travel"]
    assert min(travel_copies) == 2 and max(travel_copies) == 3
    realised = tokens_by(out[KEPT], lambda d: d["topic"])
    largest_travel = max(d["n_tokens"] for d in pool if d["topic"] == "Travel")
    planned_travel = round(config.budget * config.weights.manual["Travel"] / sum(config.weights.manual.values()))
    assert planned_travel <= realised["Travel"] < planned_travel + largest_travel
    assert realised["Adult"] == 3 * adult
    rows = {r["domain"]: r for r in out[SUMMARY] if r["kind"] == "domain"}
    assert rows["Adult"]["epochs_used"] == 3 and rows["Travel"]["epochs_used"] == 3
    assert rows["Adult"]["unmet_tokens"] == pytest.approx(rows["Adult"]["planned_tokens"] - 3 * adult)
    assert rows["Travel"]["unmet_tokens"] == 0
    assert rows["Adult"]["realised_tokens"] == 3 * adult
    assert out["counters"]["mix:repeats"] == sum(copies.values()) - len(copies)


def test_schedule_phases_cover_their_token_fractions(pool) -> None:
    base = topic_weights(pool, boost=1.0)
    upsampled = topic_weights(pool, boost=6.0)
    config = MixConfig(
        enabled=True,
        fraction=0.9,
        max_epochs=2,
        schedule=[
            {"name": "base", "start_fraction": 0.0, "end_fraction": 0.85, "weights": {"scale": {}}},
            {
                "name": "upsampled",
                "start_fraction": 0.85,
                "end_fraction": 1.0,
                "weights": {"scale": dict.fromkeys(UPSAMPLED, 6.0)},  # the pool's mixture, three topics × 6
            },
        ],
    )
    out = run_mix(config, pool, seed=5)
    assert_nothing_lost(pool, out)
    budget = 0.9 * sum(d["n_tokens"] for d in pool)
    by_phase = tokens_by(out[KEPT], lambda d: d["phase"])
    total = sum(by_phase.values())
    assert set(by_phase) == {"base", "upsampled"}
    assert by_phase["base"] / total == pytest.approx(0.85, abs=0.005)
    largest = max(d["n_tokens"] for d in pool)
    for phase, weights, share in (("base", base, 0.85), ("upsampled", upsampled, 0.15)):
        realised = tokens_by([d for d in out[KEPT] if d["phase"] == phase], lambda d: d["topic"])
        for topic, weight in weights.items():
            planned = round(budget * share * weight)
            assert abs(realised.get(topic, 0) - planned) < largest, (phase, topic)
            assert abs(realised.get(topic, 0) / by_phase[phase] - weight) <= max(0.005, largest / by_phase[phase])
    # the upsampled topics need 1.25 pools across both phases (the others 0.85): repeats, within the cap
    copies = Counter(d["id"] for d in out[KEPT])
    assert max(copies.values()) == 2
    assert {d["topic"] for d in out[KEPT] if d["epoch"] == 1} <= set(UPSAMPLED)
    phase_rows = {r["phase"]: r for r in out[SUMMARY] if r["kind"] == "phase"}
    assert phase_rows["base"]["realised_tokens"] == by_phase["base"]
    assert phase_rows["upsampled"]["budget_tokens"] == pytest.approx(0.15 * budget)


def test_product_of_topic_and_format_mixtures_reproduces_both_marginals(tmp_path) -> None:
    topics, formats = {"Health": 0.5, "Sports": 0.3, "Travel": 0.2}, {"Blog": 0.7, "News": 0.3}
    docs = []
    for topic in topics:
        for form in formats:
            for i in range(120):
                doc_id = f"{topic}-{form}-{i}"
                docs.append(
                    {
                        "id": doc_id,
                        "text": "x",
                        "url": None,
                        "source": "synthetic",
                        "metadata": {},
                        "topic": topic,
                        "format": form,
                        "n_tokens": 100 + int(400 * uniform(doc_id, "length", 0)),
                    }
                )
    config = MixConfig(
        enabled=True,
        domain_field="topic,format",
        fraction=0.25,
        weights={"product": {"topic": {"manual": topics}, "format": {"manual": formats}}},
    )
    out = run_mix(config, docs)
    assert_nothing_lost(docs, out)
    total = sum(d["n_tokens"] for d in out[KEPT])
    for field, marginal in (("topic", topics), ("format", formats)):
        realised = tokens_by(out[KEPT], lambda d, f=field: d[f])
        for name, weight in marginal.items():
            assert abs(realised[name] / total - weight) <= 0.01, (field, name)
    prior = next(r for r in out[SUMMARY] if r["kind"] == "prior")["prior"]
    assert sum(p["tokens"] for p in prior) == sum(d["n_tokens"] for d in docs)  # §6.5 #2 token accounting
    assert sum(p["documents"] for p in prior) == len(docs)
    assert {p["domain"] for p in prior} == {f"{t}|{f}" for t in topics for f in formats}


def test_quality_ranking_composes_with_domain_budgets(pool) -> None:
    weights = topic_weights(pool, boost=1.0)
    top_k = MixConfig(
        enabled=True, fraction=0.3, weights={"manual": weights}, quality={"column": "quality", "rule": "top_k"}
    )
    out = run_mix(top_k, pool)
    kept = {d["id"] for d in out[KEPT]}
    for topic in weights:
        members = [d for d in pool if d["topic"] == topic]
        chosen = [d["quality"] for d in members if d["id"] in kept]
        others = [d["quality"] for d in members if d["id"] not in kept]
        assert min(chosen) > max(others), topic  # top-k inside each domain
    gumbel = top_k.model_copy(update={"quality": top_k.quality.model_copy(update={"rule": "gumbel_top_k"})})
    sampled = run_mix(gumbel, pool)
    kept = {d["id"] for d in sampled[KEPT]}
    chosen = [d["quality"] for d in pool if d["id"] in kept]
    others = [d["quality"] for d in pool if d["id"] not in kept]
    # τ = 2 on z-scores: higher scores over-represented, but not a hard cut
    assert sum(chosen) / len(chosen) - sum(others) / len(others) > 0.25
    assert min(chosen) < max(others)
    realised = tokens_by(sampled[KEPT], lambda d: d["topic"])
    budget = 0.3 * sum(d["n_tokens"] for d in pool)
    for topic, weight in weights.items():
        assert realised[topic] >= round(budget * weight)


def test_same_seed_same_selection_whatever_the_input_order(pool, tmp_path) -> None:
    config = MixConfig(
        enabled=True,
        fraction=0.8,
        max_epochs=3,
        schedule=[
            {
                "name": "base",
                "start_fraction": 0.0,
                "end_fraction": 0.9,
                "weights": {"manual": topic_weights(pool, 1.0)},
            },
            {
                "name": "final",
                "start_fraction": 0.9,
                "end_fraction": 1.0,
                "weights": {"manual": topic_weights(pool, 8.0)},
            },
        ],
    )

    def rows(docs: list[dict], seed: int) -> list[tuple]:
        out = run_stage(Mix(config, seed=seed), docs, tmp_path)
        return sorted((d["id"], d["epoch"], d["phase"]) for d in out[KEPT])

    first = rows(pool, seed=11)
    assert first == rows(list(reversed(pool)), seed=11)
    assert first != rows(pool, seed=12)


def test_unplaceable_documents_are_rejected_and_missing_counts_are_counted(pool) -> None:
    docs = [dict(d) for d in pool[:40]]
    docs[0]["n_tokens"] = -3
    del docs[1]["quality"]
    del docs[2]["n_tokens"]
    config = MixConfig(
        enabled=True, fraction=1.0, weights={"manual": {"Adult": 1.0}}, quality={"column": "quality", "rule": "top_k"}
    )
    out = run_mix(config, docs, tokenizer=TokenizerConfig())
    assert sorted(r["doc_id"] for r in out[REJECTED]) == sorted([docs[0]["id"], docs[1]["id"]])
    placed = {d["id"] for d in out[KEPT]} | {d["id"] for d in out[REMOVED]}
    assert docs[2]["id"] in placed
    counted = next(d for d in out[KEPT] + out[REMOVED] if d["id"] == docs[2]["id"])
    assert counted["n_tokens"] > 0


def test_a_mixture_is_required_and_phases_must_tile_the_budget() -> None:
    with pytest.raises(ValueError, match="weights"):
        MixConfig(enabled=True)
    with pytest.raises(ValueError, match="contiguous"):
        MixConfig(
            enabled=True,
            schedule=[
                {"name": "a", "start_fraction": 0.0, "end_fraction": 0.5, "weights": {"manual": {"x": 1}}},
                {"name": "b", "start_fraction": 0.6, "end_fraction": 1.0, "weights": {"manual": {"x": 1}}},
            ],
        )
    with pytest.raises(ValueError, match="exactly one"):
        MixConfig(enabled=True, weights={"manual": {"x": 1}, "product": {"topic": {"manual": {"x": 1}}}})


def test_regmix_target_is_fitted_on_the_driver_and_realised(pool, tmp_path) -> None:
    """A ``regmix`` mixture: proxy runs on a quadratic oracle around a known topic mixture; the stage
    fits it when the graph is built, samples to it, and files the fit in the summary."""
    prior = tokens_by(pool, lambda d: d["topic"])
    (tmp_path / "prior.json").write_text(json.dumps([{"domain": t, "tokens": v} for t, v in prior.items()]))
    domains, mixtures = generate_mixtures(prior, MixtureGeneration.regmix(count=256), seed=0)
    optimum = topic_weights(pool, boost=4.0)
    losses = ((mixtures - [optimum[d] for d in domains]) ** 2).sum(axis=1)
    with open(tmp_path / "runs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*domains, "loss"])
        writer.writerows([*row, loss] for row, loss in zip(mixtures.tolist(), losses, strict=True))
    regmix = {"runs_csv": str(tmp_path / "runs.csv"), "prior": str(tmp_path / "prior.json"), "targets": ["loss"]}
    config = MixConfig(enabled=True, fraction=0.5, weights={"regmix": {**regmix, "samples": 20_000}})
    with pytest.raises(ValueError, match="not fitted"):
        Mix(config)  # fitting is the prepare step's job, never the constructor's
    stage = Mix(config, **prepare_mix(config))
    (fit,) = stage.fitted.values()
    assert total_variation(fit.mixture, optimum) < total_variation(topic_weights(pool, 1.0), optimum)
    out = run_mix(config, pool)
    (record,) = [r for r in out[SUMMARY] if r["kind"] == "regmix"]
    assert record["heldout_spearman"]["loss"] > 0.5
    realised = tokens_by(out[KEPT], lambda d: d["topic"])
    total = sum(realised.values())
    largest = max(d["n_tokens"] for d in pool)
    for topic, weight in fit.mixture.items():
        assert abs(realised.get(topic, 0) / total - weight) <= max(0.005, largest / total), topic
