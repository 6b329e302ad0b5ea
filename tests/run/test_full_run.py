"""The later stages together, as the default run chains them: score → tag → select → mix (two
phases, repeats) → order (ICP) → packed contexts; accounting, phase shard sets and ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from conftest import DATA, make_config, run


def test_tag_mix_order_chain_writes_phased_ordered_packed_shards(tmp_path: Path):
    config = make_config(
        [str(DATA / "text" / "english.jsonl.gz")],
        tmp_path / "out",
        score={"enabled": True},
        tag={"enabled": True},
        select={"enabled": True, "fraction": 0.6},
        mix={
            "enabled": True,
            "domain_field": "topic",
            "fraction": 1.0,
            "schedule": [
                {"name": "base", "start_fraction": 0.0, "end_fraction": 0.8, "weights": {"scale": {}}},
                {
                    "name": "final",
                    "start_fraction": 0.8,
                    "end_fraction": 1.0,
                    "weights": {"scale": {"Science & Tech.": 4.0, "Health": 4.0}},
                },
            ],
        },
        order={"enabled": True, "method": "icp", "embedder": "model2vec"},
        pack={"context_tokens": 1024},
    )
    result = run(config)
    manifest = result.manifest
    counts = manifest["counts"]
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    assert manifest["ordered"] is True and manifest["tokenizer"]["name"] == "winnow-bpe-32k"
    assert {"domains", "mixture", "ordering", "packing"} <= set(manifest)

    out = tmp_path / "out"
    rows = []
    for phase in ("base", "final"):
        files = sorted((out / "data" / f"phase={phase}").glob("part-*.parquet"))
        assert files
        shard_rows = [row for f in files for row in pq.read_table(f).to_pylist()]
        ranks = [row["order_rank"] for row in shard_rows]
        assert ranks == sorted(ranks)  # shards in name order, rows in order: the ICP order
        assert {row["phase"] for row in shard_rows} == {phase}
        rows += shard_rows
    first_pass = [r for r in rows if not r["epoch"]]
    repeats = [r for r in rows if r["epoch"]]
    assert len(first_pass) == counts["kept"] and len(repeats) == counts["repeats"] > 0
    assert len({(r["id"], r["epoch"]) for r in rows}) == len(rows)
    ranks = sorted(r["order_rank"] for r in rows)
    assert ranks == list(range(len(rows)))  # one dense, phase-major order over every row

    by_rank = {r["order_rank"]: r["phase"] for r in rows}
    contexts = [row for f in sorted((out / "contexts").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
    assert contexts
    for context in contexts:
        assert len({by_rank[rank] for rank in context["doc_order_ranks"]}) == 1  # never mixes phases
    mixture = [r for r in manifest["mixture"] if r.get("kind") == "phase"]
    assert {r["phase"] for r in mixture} == {"base", "final"}
    assert json.loads((out / "manifest.json").read_text())["counts"] == counts
