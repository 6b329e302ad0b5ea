"""``select.rule: band`` on the local runner (docs/salt.md): the Beam cut equals the sorting reference
(``pool_cuts``), tagging keeps every record, dropping removes with the rule and the label, documents
without a value are outside the pool, a bad weight is rejected, and the input order changes nothing."""

from __future__ import annotations

import json
import math
import random

import pytest
from conftest import run_stage
from pydantic import ValidationError

from winnow.stages.select.band import FILTER_REASON, decide_rows, pool_cuts
from winnow.stages.select.band_stage import value_of_bits
from winnow.stages.select.config import SelectConfig
from winnow.stages.select.stage import Select, config_columns

SEED = 3


def pool(n: int = 600, seed: int = 7) -> list[dict]:
    """Documents with tied values (one decimal), a few without a value, and varied token counts."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        value = round(rng.gauss(3.0, 0.6), 1)
        if i % 50 == 0:
            value = None if i % 100 == 0 else math.nan
        docs.append(
            {
                "id": f"doc-{i:04d}",
                "text": "x" * rng.randint(1, 40),
                "source": "test",
                "n_tokens": rng.randint(1, 300),
                "slm_median_nll": value,
                "slm_topk_hit": rng.random(),
            }
        )
    return docs


def config(**band) -> SelectConfig:
    return SelectConfig(enabled=True, rule="band", band=band)


def reference(docs: list[dict], select: SelectConfig) -> dict[str, tuple[str, bool]]:
    """Labels by the core's sorting reference, on one process."""
    cuts = pool_cuts(docs, select.band, SEED)
    decisions = decide_rows(docs, cuts, select.band, SEED)
    return {d["id"]: (x.label, x.selected) for d, x in zip(docs, decisions, strict=True)}


@pytest.mark.parametrize("weight", ["tokens", "chars", "docs"])
def test_tag_mode_labels_every_document_as_the_sorting_reference(tmp_path, weight):
    docs = pool()
    select = config(lower_quantile=0.3, upper_quantile=0.8, weight=weight)
    out = run_stage(Select(select, seed=SEED), docs, tmp_path)
    assert out["removed"] == [] and out["rejected"] == []
    kept = {d["id"]: d for d in out["kept"]}
    assert len(kept) == len(docs)  # tag, not drop: records in = records out
    expected = reference(docs, select)
    assert {i: (d["band"], d["salt_selected"]) for i, d in kept.items()} == expected
    labels = {label for label, _ in expected.values()}
    assert labels == {"below", "band", "above", "missing"}
    assert all(kept[d["id"]]["band"] == "missing" for d in docs if d["slm_median_nll"] is None)
    assert all(not d["salt_selected"] for d in kept.values() if d["band"] != "band")
    # The default require (top-10 hit ≥ 0.5) only removes from the band.
    in_band = [d for d in kept.values() if d["band"] == "band"]
    assert 0 < sum(d["salt_selected"] for d in in_band) < len(in_band)
    assert all(d["salt_selected"] == (d["slm_topk_hit"] >= 0.5) for d in in_band)
    (summary,) = out["summary"]
    assert summary["rule"] == "band" and summary["weight"] == weight
    assert sum(summary["documents"].values()) == len(docs)
    assert summary["documents"]["missing"] == sum(1 for d in docs if not math.isfinite(d["slm_median_nll"] or math.nan))
    # The band's weight is the quantile gap within one document, and its values lie between the ends.
    largest = max({"tokens": d["n_tokens"], "chars": len(d["text"]), "docs": 1}[weight] for d in docs)
    assert abs(summary["band_weight"] - 0.5 * summary["pool_weight"]) <= largest
    band_values = [d["slm_median_nll"] for d in in_band]
    assert summary["low_value"] == min(band_values)
    assert all(v <= summary["high_value"] for v in band_values)


def test_drop_mode_removes_outside_the_band_with_rule_and_label(tmp_path):
    docs = pool()
    select = config(tag_only=False, require=[])
    out = run_stage(Select(select, seed=SEED), docs, tmp_path)
    expected = reference(docs, select)
    assert {d["id"] for d in out["kept"]} == {i for i, (label, selected) in expected.items() if selected}
    assert len(out["kept"]) + len(out["removed"]) == len(docs)
    for record in out["removed"]:
        assert record["reason"] == FILTER_REASON
        assert json.loads(record["detail"])["band"] == expected[record["id"]][0] != "band"
    assert {d["band"] for d in out["kept"]} == {"band"} and all(d["salt_selected"] for d in out["kept"])
    assert all(d["select_key"] == d["slm_median_nll"] for d in out["kept"])


def test_input_order_does_not_change_any_decision(tmp_path):
    docs = pool(seed=11)
    select = config(lower_quantile=0.5, upper_quantile=0.9)
    forward = run_stage(Select(select, seed=SEED), docs, tmp_path)
    backward = run_stage(Select(select, seed=SEED), docs[::-1], tmp_path)
    as_map = lambda out: {d["id"]: (d["band"], d["salt_selected"]) for d in out["kept"]}  # noqa: E731
    assert as_map(forward) == as_map(backward)
    assert forward["summary"] == backward["summary"]


def test_a_pool_document_without_a_token_count_is_rejected(tmp_path):
    docs = pool(n=100)
    docs[1]["n_tokens"] = None  # in the pool (it has a value)
    docs[0]["n_tokens"] = None  # no value: outside the pool, its weight is never read
    out = run_stage(Select(config(), seed=SEED), docs, tmp_path)
    assert [r["doc_id"] for r in out["rejected"]] == ["doc-0001"]
    assert "token count" in out["rejected"][0]["error"]
    assert len(out["kept"]) == 99


def test_config_columns_and_options():
    select = config(tag_column="kd_candidate")
    assert [f.name for f in config_columns(select)] == ["kd_candidate", "band"]
    with pytest.raises(ValidationError, match="balance_by"):
        SelectConfig(enabled=True, rule="band", balance_by="source")
    with pytest.raises(ValidationError, match="lower_quantile"):
        config(lower_quantile=0.6, upper_quantile=0.6)
    assert value_of_bits(0) is None and value_of_bits(1 << 64) is None
