"""``select.rule: band`` (docs/salt.md): the band's weight, ``require`` only removing, tag-not-drop,
documents without a value, and order independence of the cut."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from winnow.core.budget import histogram_cut, order_bits
from winnow.stages.select.band import (
    FILTER_REASON,
    BandCuts,
    band_budgets,
    band_tiebreak,
    decide_rows,
    pool_cuts,
    tag_batch,
)
from winnow.stages.select.band_config import BandSelectConfig

SEED = 5


def synthetic_pool(n: int = 10_000, seed: int = 1, ties: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        value = round(rng.gauss(3.0, 0.8), 1) if ties else rng.gauss(3.0, 0.8)
        rows.append(
            {
                "id": f"doc-{i}",
                "n_tokens": rng.randint(20, 4000),
                "slm_median_nll": value,
                "slm_topk_hit": rng.random(),
            }
        )
    return rows


def band_weight(rows, decisions, selected_only=True) -> float:
    return sum(
        r["n_tokens"]
        for r, d in zip(rows, decisions, strict=True)
        if (d.selected if selected_only else d.label == "band")
    )


@pytest.mark.parametrize("lower,upper", [(0.5, 0.9), (0.1, 0.3), (0.0, 0.25), (0.8, 1.0)])
@pytest.mark.parametrize("ties", [False, True])
def test_band_weight_equals_quantile_gap_within_one_document(lower, upper, ties):
    rows = synthetic_pool(ties=ties)
    config = BandSelectConfig(lower_quantile=lower, upper_quantile=upper, require=[])
    cuts = pool_cuts(rows, config, SEED)
    decisions = decide_rows(rows, cuts, config, SEED)
    total = sum(r["n_tokens"] for r in rows)
    largest = max(r["n_tokens"] for r in rows)
    selected = band_weight(rows, decisions)
    assert abs(selected - (upper - lower) * total) <= largest
    # Everything in the band lies between everything below and everything above it.
    values = {
        label: [r["slm_median_nll"] for r, d in zip(rows, decisions, strict=True) if d.label == label]
        for label in ("below", "band", "above")
    }
    if values["below"] and values["band"]:
        assert max(values["below"]) <= min(values["band"])
    if values["above"] and values["band"]:
        assert max(values["band"]) <= min(values["above"])
    below = sum(r["n_tokens"] for r, d in zip(rows, decisions, strict=True) if d.label == "below")
    assert abs(below - lower * total) <= largest


def test_require_only_removes_and_does_not_move_the_cut():
    rows = synthetic_pool()
    plain = BandSelectConfig(require=[])
    learnable = BandSelectConfig()  # default: slm_topk_hit >= 0.5
    assert pool_cuts(rows, plain, SEED) == pool_cuts(rows, learnable, SEED)
    cuts = pool_cuts(rows, plain, SEED)
    without = decide_rows(rows, cuts, plain, SEED)
    with_require = decide_rows(rows, cuts, learnable, SEED)
    kept_without = {r["id"] for r, d in zip(rows, without, strict=True) if d.selected}
    kept_with = {r["id"] for r, d in zip(rows, with_require, strict=True) if d.selected}
    assert kept_with < kept_without
    assert all(r["slm_topk_hit"] >= 0.5 for r in rows if r["id"] in kept_with)
    assert {r["id"] for r in rows if r["id"] in kept_without and r["slm_topk_hit"] >= 0.5} == kept_with


def test_tag_only_keeps_every_record_and_drop_mode_keeps_the_band():
    rows = synthetic_pool(2000)
    table = pa.Table.from_pylist(rows)
    tagging = BandSelectConfig()
    cuts = pool_cuts(rows, tagging, SEED)
    tagged, labels = tag_batch(table, cuts, tagging, SEED)
    assert tagged.num_rows == table.num_rows
    assert tagged.column("salt_selected").type == pa.bool_()
    flags = tagged.column("salt_selected").to_pylist()
    assert 0 < sum(flags) < len(flags)
    assert all(label == "band" for label, flag in zip(labels, flags, strict=True) if flag)
    dropping = BandSelectConfig(tag_only=False)
    kept, _ = tag_batch(table, cuts, dropping, SEED)
    assert kept.column("id").to_pylist() == [r["id"] for r, f in zip(rows, flags, strict=True) if f]
    assert FILTER_REASON == "select:band"


def test_documents_without_a_value_are_outside_the_pool():
    rows = synthetic_pool(1000)
    missing = [
        {"id": f"empty-{i}", "n_tokens": 10_000, "slm_median_nll": v, "slm_topk_hit": 1.0}
        for i, v in enumerate([None, math.nan, math.nan])
    ]
    config = BandSelectConfig(require=[])
    assert pool_cuts(rows + missing, config, SEED) == pool_cuts(rows, config, SEED)
    decisions = decide_rows(missing, pool_cuts(rows, config, SEED), config, SEED)
    assert [d.label for d in decisions] == ["missing"] * 3 and not any(d.selected for d in decisions)
    # A missing `require` column never satisfies it.
    no_hit = [{"id": "x", "n_tokens": 5, "slm_median_nll": rows[0]["slm_median_nll"]}]
    assert not decide_rows(no_hit, pool_cuts(rows, config, SEED), BandSelectConfig(), SEED)[0].selected


def test_cut_is_independent_of_document_order_and_matches_the_histogram_cut():
    rows = synthetic_pool(5000, ties=True)
    config = BandSelectConfig()
    shuffled = rows[:]
    random.Random(9).shuffle(shuffled)
    cuts = pool_cuts(rows, config, SEED)
    assert pool_cuts(shuffled, config, SEED) == cuts
    # The Beam stage's histogram search finds the same two cuts.
    keys = [order_bits(r["slm_median_nll"]) for r in rows]
    ties = [band_tiebreak(r["id"], SEED) for r in rows]
    weights = [float(r["n_tokens"]) for r in rows]
    low_budget, high_budget = band_budgets(sum(weights), config.lower_quantile, config.upper_quantile)
    histogram = BandCuts(
        histogram_cut(keys, ties, weights, low_budget)[0], histogram_cut(keys, ties, weights, high_budget)[0]
    )
    assert histogram == cuts
    # A different seed only reorders ties: the band's weight stays within one document.
    other = decide_rows(rows, pool_cuts(rows, config, SEED + 1), BandSelectConfig(require=[]), SEED + 1)
    total = sum(weights)
    assert abs(band_weight(rows, other) - 0.4 * total) <= max(weights)


def test_weights_by_documents_and_characters():
    rows = [{"id": str(i), "text": "x" * (i + 1), "v": float(i)} for i in range(100)]
    by_docs = BandSelectConfig(column="v", weight="docs", require=[], lower_quantile=0.2, upper_quantile=0.7)
    selected = [
        r["v"]
        for r, d in zip(rows, decide_rows(rows, pool_cuts(rows, by_docs, 0), by_docs, 0), strict=True)
        if d.selected
    ]
    assert selected == [float(i) for i in range(20, 70)]
    by_chars = by_docs.model_copy(update={"weight": "chars"})
    chars = decide_rows(rows, pool_cuts(rows, by_chars, 0), by_chars, 0)
    total = sum(len(r["text"]) for r in rows)
    chosen = sum(len(r["text"]) for r, d in zip(rows, chars, strict=True) if d.selected)
    assert abs(chosen - 0.5 * total) <= 100
    assert np.isclose(total, 5050)


def test_config_rejects_an_empty_band():
    with pytest.raises(ValidationError):
        BandSelectConfig(lower_quantile=0.9, upper_quantile=0.5)
