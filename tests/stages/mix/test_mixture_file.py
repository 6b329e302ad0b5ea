"""``mix.weights.manual_file``: a paper's per-source table as the target mixture (1.5-Pints fidelity test 4).

Realised per-source token shares match the file within max(0.5%, one document); a source the
epoch cap cannot fill is reported as unmet, never filled from the others.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from typing import Any

import apache_beam as beam
import pytest
from conftest import DATA, collect, local_pipeline

from winnow.beam.contract import INPUT_NAME, KEPT, field_value
from winnow.config import ConfigError, load_config, parse_config
from winnow.core.hashing import h64
from winnow.stages.mix.config import MixConfig
from winnow.stages.mix.mixing import parse_mixture_table
from winnow.stages.mix.stage import SUMMARY, Mix

SOURCES = ("arxiv", "wikipedia", "books_pd")


@pytest.fixture(scope="module")
def pool() -> list[dict[str, Any]]:
    """2,000 real pages with token counts, spread over three named inputs by id hash."""
    with gzip.open(DATA / "mix" / "weborganizer_pool.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [
        {
            "id": r["id"],
            "text": f"page {r['id']}",
            "url": None,
            "source": f"{SOURCES[h64(r['id'], 'test-source', 0) % 3]}/part-0.jsonl.gz",
            "metadata": None,
            "n_tokens": r["n_tokens"],
        }
        for r in rows
    ]


def run_mix(config: MixConfig, pool: list[dict]) -> tuple[list[dict], list[dict]]:
    """The stage's kept rows and manifest records."""
    pipeline = local_pipeline()
    result = pipeline | beam.Create(pool, reshuffle=False) | Mix(config, seed=3)
    kept, summary = collect(result[KEPT], "mixture_file_kept"), collect(result[SUMMARY], "mixture_file_summary")
    pipeline.run().wait_until_finish()
    return list(kept), list(summary)


def tokens_by_source(rows: list[dict]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[field_value(row, INPUT_NAME)] += row["n_tokens"]
    return dict(totals)


def test_table_formats():
    csv_table = "# the paper's table\nsource,tokens,epochs\narxiv,30_000,1\nwikipedia,10000,2\n"
    assert parse_mixture_table(csv_table, "t.csv") == {"arxiv": 30000.0, "wikipedia": 10000.0}
    tsv = "domain\tshare\nA\t0.25\nB\t0.75\n"
    assert parse_mixture_table(tsv, "t.tsv") == {"A": 0.25, "B": 0.75}
    assert parse_mixture_table("first,weight\nx,1\n", "t.csv") == {"x": 1.0}  # key: the first column
    assert parse_mixture_table('{"a": 1, "b": 3}', "t.json") == {"a": 1.0, "b": 3.0}
    assert parse_mixture_table("a: 2\nb: 2\n", "t.yaml") == {"a": 2.0, "b": 2.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source,weight\narxiv,lots\n", "t.csv row 2: weight 'lots' is not a number"),
        ("source,weight\narxiv,1\narxiv,2\n", "row 3: domain 'arxiv' listed twice"),
        ("source,weight\narxiv,-1\n", "must be finite and non-negative"),
        ("source,size\narxiv,1\n", "needs a weight column"),
        ("source,weight\narxiv,0\n", "sum to zero"),
        ("source,weight\narxiv\n", "row 2: expected 2 columns"),
    ],
)
def test_bad_tables_name_the_row(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mixture_table(text, "t.csv")


def test_the_file_is_checked_when_the_config_loads_relative_to_the_config(tmp_path):
    (tmp_path / "mixture.csv").write_text("source,weight\narxiv,1\nwikipedia,x\n", encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text("mix: {enabled: true, domain_field: input_name, weights: {manual_file: mixture.csv}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert "mix.weights.manual_file" in str(error.value) and "row 3: weight 'x'" in str(error.value)
    (tmp_path / "mixture.csv").write_text("source,weight\narxiv,1\n", encoding="utf-8")
    loaded = load_config(config)
    assert loaded.mix.weights.manual_file == str(tmp_path / "mixture.csv")
    with pytest.raises(ConfigError, match="mixture file not found"):
        parse_config({"mix": {"enabled": True, "weights": {"manual_file": "/nonexistent/m.csv"}}})
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_config({"mix": {"enabled": True, "weights": {"manual_file": str(tmp_path / "mixture.csv"), "scale": {}}}})


def test_realised_source_shares_follow_the_file(pool, tmp_path):
    table = tmp_path / "pints_mixture.csv"
    table.write_text("source,tokens\narxiv,50\nwikipedia,30\nbooks_pd,20\n", encoding="utf-8")
    pool_tokens = sum(d["n_tokens"] for d in pool)
    config = MixConfig(
        enabled=True,
        domain_field=INPUT_NAME,
        budget=int(0.6 * pool_tokens),
        weights={"manual_file": str(table)},
    )
    kept, _ = run_mix(config, pool)
    realised = tokens_by_source(kept)
    total = sum(realised.values())
    largest = max(d["n_tokens"] for d in pool)
    for source, weight in (("arxiv", 0.5), ("wikipedia", 0.3), ("books_pd", 0.2)):
        assert abs(realised[source] / total - weight) <= max(0.005, largest / total), source
    assert not [d for d in kept if d["epoch"] > 0]  # the budget fits inside the pool: no repeats


def test_a_short_source_is_reported_unmet_not_filled_by_the_others(pool, tmp_path):
    table = tmp_path / "skewed.csv"
    table.write_text("source,weight\narxiv,0.9\nwikipedia,0.05\nbooks_pd,0.05\n", encoding="utf-8")
    per_source = tokens_by_source(pool)
    budget = int(sum(per_source.values()))
    config = MixConfig(
        enabled=True, domain_field=INPUT_NAME, budget=budget, max_epochs=2, weights={"manual_file": str(table)}
    )
    kept, summary = run_mix(config, pool)
    realised = tokens_by_source(kept)
    assert realised["arxiv"] == 2 * per_source["arxiv"]  # the cap: two full epochs, no more
    for source in ("wikipedia", "books_pd"):
        assert realised[source] < round(0.05 * budget) + max(d["n_tokens"] for d in pool)  # no silent fill
    arxiv = next(r for r in summary if r.get("kind") == "domain" and r["domain"] == "arxiv")
    assert arxiv["unmet_tokens"] == pytest.approx(round(0.9 * budget) - 2 * per_source["arxiv"])
    assert arxiv["epochs_used"] == 2
