"""Paragraph dedup inside the dedup stage on the local runner: same answer as the in-memory core,
any input order, the share rule, evidence and the manifest record."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from conftest import run_stage

from winnow.stages.dedup.config import DedupConfig, ParagraphDedupConfig
from winnow.stages.dedup.paragraph import dedup_paragraphs
from winnow.stages.dedup.stage import SPEC, Dedup, ParagraphDedup

DATA = Path(__file__).resolve().parents[2] / "data"


def doc(doc_id: str, text: str) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "url": None, "source": "test", "metadata": None}


def corpus() -> list[dict[str, Any]]:
    """Dolma's paragraph-dedup fixture (real pages with injected repeats) plus real news articles
    that share a site's header and footer lines, and one page that is mostly boilerplate."""
    with gzip.open(DATA / "paragraph_dedup" / "dedup_input_documents.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [doc(r["id"], r["text"]) for r in map(json.loads, handle)]
    with gzip.open(DATA / "text" / "english.jsonl.gz", "rt", encoding="utf-8") as handle:
        news = [r for r in map(json.loads, handle) if r["source"] == "lee-abc-news"][:12]
    header = "ABC News Online — the latest headlines from Australia and around the world, updated hourly."
    footer = "Copyright 2024 Australian Broadcasting Corporation. All rights reserved. Terms of use apply."
    for r in news:
        docs.append(doc(f"news-{r['id']}", f"{header}\n\n{r['text']}\n\n{footer}\n"))
    docs.append(doc("zz-mostly-boilerplate", f"{header}\nA short note of our own.\n{footer}\n"))
    return docs


def expected(docs: list[dict[str, Any]], config: ParagraphDedupConfig) -> dict[str, Any]:
    return dedup_paragraphs([(d["id"], d["text"]) for d in docs], config.min_chars, config.max_removed_share)


def test_stage_equals_the_core_in_any_order(tmp_path: Path) -> None:
    docs = corpus()
    config = ParagraphDedupConfig(enabled=True, min_chars=50)
    want = expected(docs, config)
    shuffled = docs[:]
    random.Random(4).shuffle(shuffled)
    first = run_stage(ParagraphDedup(config), docs, tmp_path)
    second = run_stage(ParagraphDedup(config), shuffled, tmp_path)
    for out in (first, second):
        assert out["rejected"] == [] and len(out["kept"]) + len(out["removed"]) == len(docs)
        kept = {d["id"]: d for d in out["kept"]}
        removed = {d["id"]: d for d in out["removed"]}
        for doc_id, result in want.items():
            if result.drop:
                record = removed[doc_id]
                assert (record["reason"], record["duplicate_of"]) == ("dedup:paragraph", result.duplicate_of)
                assert json.loads(record["detail"])["removed_share"] == result.removed_share
            else:
                assert kept[doc_id]["text"] == result.text
                assert kept[doc_id]["paragraph_lines_removed"] == result.removed_lines
    assert sorted(json.dumps(d, sort_keys=True) for d in first["kept"]) == sorted(
        json.dumps(d, sort_keys=True) for d in second["kept"]
    )
    removed = {d["id"]: d for d in first["removed"]}
    assert "zz-mostly-boilerplate" in removed  # it lost its header and footer: most of its text
    first_news = min(d["id"] for d in docs if d["id"].startswith("news-"))
    kept = {d["id"]: d for d in first["kept"]}
    assert kept[first_news]["text"].startswith("ABC News Online")  # the smallest id keeps the copy
    assert all("ABC News Online" not in d["text"] for i, d in kept.items() if i.startswith("news-") and i != first_news)

    (record,) = first["summary"]
    assert record["kind"] == "paragraph" and record["documents"] == len(docs)
    assert record["documents_removed"] == len(removed) == first["counters"]["dedup:paragraph"]
    assert record["lines_removed"] == sum(d["paragraph_lines_removed"] for d in first["kept"])
    assert record["chars_removed_from_kept"] == sum(d["paragraph_chars_removed"] for d in first["kept"])
    assert record["characters"] == sum(len(d["text"]) for d in docs)
    assert 0 < record["share_removed"] < 0.5


def test_dedup_stage_runs_paragraph_last_and_declares_its_columns(tmp_path: Path) -> None:
    docs = corpus()
    docs.append(doc("zzz-copy-of-first", docs[0]["text"]))  # exact dedup takes this one first
    config = DedupConfig(paragraph={"enabled": True}, minhash={"shards": 4, "max_rounds": 4})
    out = run_stage(Dedup(config), docs, tmp_path)
    reasons = {d["id"]: d["reason"] for d in out["removed"]}
    assert reasons["zzz-copy-of-first"] == "dedup:exact"
    assert reasons["zz-mostly-boilerplate"] == "dedup:paragraph"
    kinds = {r["kind"] for r in out["summary"]}
    assert {"paragraph", "minhash"} <= kinds
    assert [f.name for f in SPEC.config_columns(config)] == ["paragraph_lines_removed", "paragraph_chars_removed"]
    assert SPEC.config_columns(DedupConfig()) == ()
