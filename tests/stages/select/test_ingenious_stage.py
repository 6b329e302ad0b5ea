"""``select.rule: ingenious`` on the local runner: the Beam wiring of the INGENIOUS core (docs/ingenious.md).

The stage must hand each partition exactly what the core would get, join every decision back to its
document, write each round as a phase, keep the accounting, and give the same output whatever the
input order, batching or worker count (fidelity test 8 at the Beam level).
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import DATA, make_config, run

from winnow.config import ConfigError, parse_config
from winnow.core.cells import assign_cells, train_cells
from winnow.core.embedders import sentence_encoder
from winnow.core.hashing import h64
from winnow.run.execute import MANIFEST
from winnow.stages.select.config import SelectConfig
from winnow.stages.select.ingenious import partition_of, partition_samples, select_partition, subset_size
from winnow.stages.select.ingenious_stage import SAMPLE_PURPOSE, phase_name, pool_dimension, size_histogram
from winnow.stages.select.stage import Select

PAGES = DATA / "ordering" / "weborganizer_small.jsonl"


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    rows = [json.loads(line) for line in PAGES.read_text(encoding="utf-8").splitlines() if line]
    return [
        {
            "id": r["id"],
            "text": r["text"],
            "url": r["url"],
            "source": "web",
            "metadata": None,
            "n_tokens": len(r["text"].split()),
        }
        for r in rows
    ]


@pytest.fixture(scope="module")
def vectors(docs) -> dict[str, np.ndarray]:
    """The static embedder's vectors (exact integer sums: the same in any batch)."""
    encoded = sentence_encoder("static").encode([d["text"] for d in docs])
    return {d["id"]: np.asarray(v, dtype=np.float32) for d, v in zip(docs, encoded, strict=True)}


def select_config(**ingenious: Any) -> SelectConfig:
    block = {"partitions": {"count": 3}, "rounds": {"count": 4, "seed": 23}}
    for key, value in ingenious.items():
        block[key] = {**block[key], **value} if isinstance(value, dict) and key in block else value
    return SelectConfig(enabled=True, rule="ingenious", ingenious=block)


def run_select(
    docs: list[dict], config: SelectConfig, tmp_path: Path, options: list[str] | None = None
) -> dict[str, list]:
    """The select stage on ``docs``: its four outputs, JSON round-tripped through files."""
    out_dir = tmp_path / f"out-{uuid.uuid4().hex}"
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner", *(options or [])]))
    result = pipeline | beam.Create(docs, reshuffle=False) | Select(config, seed=0)
    for name in ("kept", "removed", "rejected", "summary"):
        _ = (
            result[name]
            | f"{name}/json" >> beam.Map(lambda d: json.dumps(d, default=repr, sort_keys=True))
            | f"{name}/write" >> beam.io.WriteToText(str(out_dir / name))
        )
    pipeline.run().wait_until_finish()
    return {
        name: [json.loads(line) for path in out_dir.glob(f"{name}*") for line in path.read_text().splitlines()]
        for name in ("kept", "removed", "rejected", "summary")
    }


def canonical(out: dict[str, list]) -> dict[str, list]:
    return {name: sorted(json.dumps(r, sort_keys=True) for r in rows) for name, rows in out.items()}


# --- rounds as phases, accounting, summary ---------------------------------------------------------


def test_rounds_become_phases_and_every_document_is_accounted_for(docs, tmp_path):
    out = run_select(docs, select_config(), tmp_path)
    kept, removed = out["kept"], out["removed"]
    assert not out["rejected"]
    kept_ids = {d["id"] for d in kept}
    removed_ids = {d["id"] for d in removed}
    assert kept_ids.isdisjoint(removed_ids) and kept_ids | removed_ids == {d["id"] for d in docs}
    assert {d["reason"] for d in removed} == {"select:ingenious"}
    # One row per round that drew a document, in its round's phase; the first draw is epoch 0.
    rows_of: dict[str, list[dict]] = {}
    for row in kept:
        rows_of.setdefault(row["id"], []).append(row)
    for _doc_id, rows in rows_of.items():
        rounds = rows[0]["ing_rounds"]
        assert rounds == sorted(rounds) and len(rows) == len(rounds)
        by_epoch = sorted(rows, key=lambda r: r["epoch"])
        assert [r["epoch"] for r in by_epoch] == list(range(len(rounds)))
        assert [r["phase"] for r in by_epoch] == [phase_name(r, 4) for r in rounds]
        assert all(r["ing_rank"] is not None and r["ing_prob"] > 0 for r in rows)
    # Every round draws the same number of documents: Σ_p k_p.
    per_phase = Counter(row["phase"] for row in kept)
    assert sorted(per_phase) == ["round-00", "round-01", "round-02", "round-03"]
    partitions = [r for r in out["summary"] if r["kind"] == "partition"]
    k = subset_size(len(docs), 0.25)
    expected = sum(partition_samples(p["size"], len(docs), k) for p in partitions)
    assert set(per_phase.values()) == {expected} and k <= expected <= k + len(partitions)
    assert len({frozenset(r["id"] for r in kept if r["phase"] == p) for p in per_phase}) == 4
    # The manifest section: partitions and an overview whose round totals match the rows written.
    (overview,) = [r for r in out["summary"] if r["kind"] == "overview"]
    assert all(r["section"] == "ingenious" for r in out["summary"])
    assert overview["partitions"] == len(partitions) == 3 and overview["documents"] == len(docs)
    assert [r["selected"] for r in overview["rounds"]] == [expected] * 4
    tokens_by_phase = Counter()
    for row in kept:
        tokens_by_phase[row["phase"]] += row["n_tokens"]
    assert [r["tokens"] for r in overview["rounds"]] == [tokens_by_phase[phase_name(r, 4)] for r in range(4)]
    assert all(r["fl"] > 0 and r["fl_random_mean"] > 0 for r in overview["rounds"])
    assert sum(b["partitions"] for b in overview["size_histogram"]) == 3


def test_the_stage_hands_each_partition_what_the_core_gets(docs, vectors, tmp_path):
    config = select_config()
    out = run_select(docs, config, tmp_path)
    block = config.ingenious
    groups: dict[int, list] = {}
    for d in docs:
        groups.setdefault(partition_of(d["id"], 23, 3), []).append((d["id"], d["n_tokens"], vectors[d["id"]]))
    total_tokens = sum(d["n_tokens"] for d in docs)
    expected = {}
    for partition, items in groups.items():
        core = select_partition(partition, items, block, total_docs=len(docs), total_tokens=total_tokens)
        expected.update({row.doc_id: row for row in core.rows})
    seen = {}
    for row in out["kept"]:
        seen[row["id"]] = (row["ing_partition"], row["ing_rank"], row["ing_gain"], row["ing_prob"], row["ing_rounds"])
    for doc_id, row in expected.items():
        if row.rounds:
            assert seen[doc_id] == (row.partition, row.rank, row.gain, row.prob, list(row.rounds))
        else:
            assert doc_id not in seen
    assert len(seen) == sum(1 for row in expected.values() if row.rounds)


def test_same_output_under_any_input_order_batching_and_worker_count(docs, tmp_path):
    config = select_config(optimizer="stochastic")
    reference = canonical(run_select(docs, config, tmp_path))
    shuffled = list(docs)
    random.Random(7).shuffle(shuffled)
    small_batches = select_config(optimizer="stochastic", embedding={"batch_size": 7})
    assert canonical(run_select(shuffled, small_batches, tmp_path)) == reference
    threads = ["--direct_num_workers=3", "--direct_running_mode=multi_threading"]
    assert canonical(run_select(list(reversed(docs)), config, tmp_path, threads)) == reference
    other = canonical(run_select(docs, select_config(optimizer="stochastic", rounds={"seed": 24}), tmp_path))
    assert other["kept"] != reference["kept"]


# --- partitions ------------------------------------------------------------------------------------


def test_kmeans_partitions_are_the_grid_cells(docs, vectors, tmp_path):
    config = select_config(partitions={"strategy": "kmeans", "count": 3, "sample_size": 200})
    out = run_select(docs, config, tmp_path)
    ordered = sorted(docs, key=lambda d: (h64(d["id"], SAMPLE_PURPOSE, 23), d["id"]))[:200]
    cells = train_cells(np.stack([vectors[d["id"]] for d in ordered]), len(docs), 100, 23)
    index = {name: i for i, name in enumerate(cells.names())}
    names = assign_cells(np.stack([vectors[d["id"]] for d in docs]), cells)
    expected = {d["id"]: index[name] for d, name in zip(docs, names, strict=True)}
    partitions = {row["id"]: row["ing_partition"] for row in out["kept"]}
    assert partitions and all(expected[doc_id] == p for doc_id, p in partitions.items())
    assert len(set(expected.values())) >= 3  # the cells really cut the pool
    summaries = [r for r in out["summary"] if r["kind"] == "partition"]
    assert sorted(r["size"] for r in summaries) == sorted(Counter(expected.values()).values())


def test_user_vectors_are_used_unchanged_and_bad_ones_rejected(docs, vectors, tmp_path):
    with_vectors = []
    for i, d in enumerate(docs[:120]):
        vector = [float(x) for x in vectors[d["id"]]]
        doc = dict(d)
        if i == 3:
            vector = vector[:10]  # another model's length
        if i == 4:
            vector = None  # missing
        if i == 5:
            vector = [float("nan")] * len(vector)
        doc["metadata"] = json.dumps({"embedding": vector})  # input fields a reader does not map land here
        with_vectors.append(doc)
    config = select_config(embedding={"source": "column", "column": "embedding"})
    out = run_select(with_vectors, config, tmp_path)
    rejected = {r["doc_id"]: r["error"] for r in out["rejected"]}
    assert set(rejected) == {docs[3]["id"], docs[4]["id"], docs[5]["id"]}
    assert "dimensions" in rejected[docs[3]["id"]] and "missing" in rejected[docs[4]["id"]]
    assert "NaN" in rejected[docs[5]["id"]]
    good = [d for i, d in enumerate(docs[:120]) if i not in (3, 4, 5)]
    from_model = run_select(good, select_config(), tmp_path)
    assert canonical({"kept": out["kept"]})["kept"] != []
    strip = [{k: v for k, v in r.items() if k != "metadata"} for r in out["kept"]]
    assert canonical({"k": strip}) == canonical(
        {"k": [{k: v for k, v in r.items() if k != "metadata"} for r in from_model["kept"]]}
    )


def test_duplicate_ids_are_rejected_not_ranked(docs, tmp_path):
    pool = [*docs[:60], dict(docs[0], text=docs[0]["text"] + " (copy)")]
    out = run_select(pool, select_config(partitions={"count": 1}), tmp_path)
    assert [r["doc_id"] for r in out["rejected"]] == [docs[0]["id"], docs[0]["id"]]
    assert all("duplicate document id" in r["error"] for r in out["rejected"])
    assert len({r["id"] for r in out["kept"]} | {r["id"] for r in out["removed"]}) == 59


def test_token_weight_reaches_each_partition_budget(docs, tmp_path):
    config = SelectConfig(
        enabled=True,
        rule="ingenious",
        budget=20_000,
        ingenious={"weight": "tokens", "partitions": {"count": 2}, "rounds": {"count": 2}},
    )
    out = run_select(docs, config, tmp_path)
    partitions = [r for r in out["summary"] if r["kind"] == "partition"]
    total = sum(d["n_tokens"] for d in docs)
    for summary in partitions:
        assert summary["budget"] == pytest.approx(20_000 * summary["tokens"] / total)
        for stat in summary["rounds"]:
            assert stat["tokens"] >= summary["budget"]
    for r in range(2):
        assert sum(row["n_tokens"] for row in out["kept"] if row["phase"] == phase_name(r, 2)) >= 20_000


# --- helpers and config ------------------------------------------------------------------------------


def test_helpers():
    assert [phase_name(r, 4) for r in (0, 3)] == ["round-00", "round-03"]
    assert phase_name(7, 1000) == "round-007"
    assert pool_dimension([(384, 10), (10, 2)]) == 384 and pool_dimension([(8, 3), (16, 3)]) == 16
    assert pool_dimension([]) == 0
    assert size_histogram([1, 2, 3, 4, 7, 8, 0]) == [
        {"min": 0, "max": 0, "partitions": 1},
        {"min": 1, "max": 1, "partitions": 1},
        {"min": 2, "max": 3, "partitions": 2},
        {"min": 4, "max": 7, "partitions": 2},
        {"min": 8, "max": 15, "partitions": 1},
    ]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"select": {"balance_by": "source"}}, "balance_by"),
        ({"select": {"upsample": True}}, "upsample"),
        ({"select": {"budget": 1000}}, "ingenious.weight: tokens"),
        ({"mix": {"enabled": True, "weights": {"scale": {}}}}, "disable mix"),
        ({"order": {"enabled": True}, "pack": {"enabled": True, "mode": "dd"}}, "INGENIOUS rounds"),
        ({"select": {"ingenious": {"partitions": {"strategy": "grid"}}}}, "select.ingenious.partitions.strategy"),
    ],
)
def test_config_errors_name_the_problem(sections, message):
    data: dict[str, Any] = {"select": {"enabled": True, "rule": "ingenious"}, "mix": {"enabled": False}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


# --- the whole run ------------------------------------------------------------------------------------


def test_a_run_from_config_writes_one_shard_set_per_round(tmp_path):
    sample = Path(__file__).resolve().parents[3] / "winnow" / "data" / "sample" / "web.jsonl.gz"
    config = make_config(
        [str(sample)],
        tmp_path / "out",
        select={
            "enabled": True,
            "rule": "ingenious",
            "ingenious": {"partitions": {"count": 4}, "rounds": {"count": 3}},
        },
    )
    result = run(config, stages=["normalize", "select"])
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    counts = manifest["counts"]
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    assert counts["filtered_by_reason"]["select:ingenious"] > 0 and counts["repeats"] > 0
    phases = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    assert phases == ["phase=round-00", "phase=round-01", "phase=round-02"]
    rows = [
        r
        for p in phases
        for f in sorted((tmp_path / "out" / "data" / p).glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    assert len({r["id"] for r in rows}) == counts["kept"] and len(rows) == counts["kept"] + counts["repeats"]
    assert {"ing_partition", "ing_rank", "ing_gain", "ing_prob", "ing_rounds", "phase"} <= set(manifest["columns"])
    section = manifest["ingenious"]
    (overview,) = [r for r in section if r["kind"] == "overview"]
    assert overview["partitions"] == 4 and len([r for r in section if r["kind"] == "partition"]) == 4
    per_round = Counter(r["phase"] for r in rows)
    assert [r["selected"] for r in overview["rounds"]] == [per_round[f"round-0{i}"] for i in range(3)]
    assert result.manifest == manifest
