"""Stage ``tag`` end to end (METHODS §6.1, §6.2, §6.5 #2): columns, determinism, dead letters, and
per-domain statistics whose sums equal the corpus totals."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from winnow.core.config import TokenizerConfig
from winnow.core.domains import DATAMAN_DOMAINS, FORMATS, TOPICS, dataman_domain_of_topic
from winnow.core.schemas import document_schema
from winnow.core.taggers import load_tagger
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.score.stage import SPEC as SCORE
from winnow.stages.tag.config import TagConfig
from winnow.stages.tag.stage import SPEC as TAG
from winnow.stages.tag.stage import Tag

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "tagging" / "heldout.jsonl.gz"


def run_tag(transform: Tag, docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Like conftest.run_stage, plus the ``summary`` output."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out_dir = tmp_path / f"out-{uuid.uuid4().hex}"
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    result = pipeline | beam.Create(docs, reshuffle=False) | transform
    names = [name for name in ("kept", "removed", "rejected", "summary") if name in result]
    for name in names:
        _ = (
            result[name]
            | f"{name}/json" >> beam.Map(lambda d: json.dumps(d, default=repr, sort_keys=True))
            | f"{name}/write" >> beam.io.WriteToText(str(out_dir / name))
        )
    pipeline.run().wait_until_finish()
    return {
        name: [json.loads(line) for path in sorted(out_dir.glob(f"{name}*")) for line in path.read_text().splitlines()]
        for name in names
    }


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    """60 real pages as pipeline documents: some scored, some with a DataMan domain, some counted."""
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:60]
    out = []
    for i, row in enumerate(rows):
        doc = {"id": row["id"], "text": row["text"], "url": row["url"], "source": "sample", "metadata": "{}"}
        if i % 2 == 0:
            doc["n_tokens"] = 1000 + i  # set by `score`: must be used as is, not recounted
            doc["preselect_score"] = float(np.float32(i / 60))
        if i % 5 == 0:
            doc["application_domain"] = "B"  # the DataMan scorer ran on this one
        out.append(doc)
    return out


@pytest.fixture(scope="module")
def tagged(docs, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    return run_tag(Tag(TagConfig(enabled=True, histogram_bins=16)), docs, tmp_path_factory.mktemp("tag"))


def test_every_document_gets_consistent_tags(docs, tagged) -> None:
    kept = {d["id"]: d for d in tagged["kept"]}
    assert set(kept) == {d["id"] for d in docs} and not tagged["removed"] and not tagged["rejected"]
    topic_tagger = load_tagger("topic", "local", TagConfig().topic.path)
    by_id = {d["id"]: d for d in docs}
    ids = sorted(kept)
    probabilities = topic_tagger.probabilities([by_id[i]["text"] for i in ids], [by_id[i]["url"] for i in ids])
    for row, doc_id in zip(probabilities, ids, strict=True):
        doc = kept[doc_id]
        assert doc["topic"] == TOPICS[doc["topic_id"]] and doc["format"] == FORMATS[doc["format_id"]]
        assert doc["topic_id"] == int(np.argmax(row))
        assert doc["topic_score"] == pytest.approx(float(row.max()), abs=1e-6)
        assert 0 < doc["format_score"] <= 1
        expected = "B" if "application_domain" in by_id[doc_id] else dataman_domain_of_topic(doc["topic"])
        assert doc["domain"] == expected and doc["domain"] in DATAMAN_DOMAINS
        assert "topic_probs" not in doc  # off by default
    # The columns fit the declared schema (the writer builds Parquet from it).
    schema = document_schema([*SCORE.columns, *TAG.columns])
    rows = [{f.name: doc.get(f.name) for f in schema} for doc in tagged["kept"]]
    table = pa.Table.from_pylist(rows, schema=schema)
    assert table.column("topic_id").type == pa.int32()


def test_statistics_sum_to_the_corpus_totals(docs, tagged) -> None:
    summary = tagged["summary"]
    assert all(r["section"] == "domains" for r in summary)
    (totals,) = [r for r in summary if r["kind"] == "totals"]
    tokenizer = load_tokenizer(TokenizerConfig().path)
    counted = tokenizer.count([d["text"] for d in docs if "n_tokens" not in d])
    expected_tokens = sum(d["n_tokens"] for d in docs if "n_tokens" in d) + int(counted.sum())
    assert totals["documents"] == len(docs)
    assert totals["characters"] == sum(len(d["text"]) for d in docs)
    assert totals["tokens"] == expected_tokens
    assert totals["domain_source"] == {"dataman": 12, "topic": 48}
    stats = [r for r in summary if r["kind"] == "stats"]
    for taxonomy in ("topic", "format", "topic_format", "domain"):
        rows = [r for r in stats if r["taxonomy"] == taxonomy]
        assert rows, taxonomy
        for key in ("documents", "characters", "tokens"):
            assert sum(r[key] for r in rows) == totals[key], (taxonomy, key)
        assert sum(r["scores"]["preselect_score"]["count"] for r in rows if "preselect_score" in r["scores"]) == 30
    kept = tagged["kept"]
    for row in (r for r in stats if r["taxonomy"] == "topic"):
        members = [d for d in kept if d["topic"] == row["value"]]
        assert row["documents"] == len(members)
        scored = [d["preselect_score"] for d in members if "preselect_score" in d]
        if scored:
            summary_of = row["scores"]["preselect_score"]
            assert summary_of["mean"] == pytest.approx(np.mean(scored), rel=1e-9)
            assert summary_of["min"] == min(scored) and summary_of["max"] == max(scored)
            assert summary_of["min"] <= summary_of["quantiles"]["p50"] <= summary_of["max"]
    priors = {r["taxonomy"]: r["prior"] for r in summary if r["kind"] == "prior"}
    assert set(priors) == {"topic", "format", "topic_format", "domain"}
    for values in priors.values():
        assert sum(v["documents"] for v in values) == len(docs)
        assert sum(v["weight"] for v in values) == pytest.approx(1.0)
        assert all(v["weight"] == v["tokens"] / totals["tokens"] for v in values)
    (taggers,) = [r for r in summary if r["kind"] == "taggers"]
    assert taggers["taggers"]["topic"]["mode"] == "local" and taggers["domain_from"] == "auto"


def test_tagging_is_deterministic(docs, tagged, tmp_path) -> None:
    again = run_tag(Tag(TagConfig(enabled=True, histogram_bins=16)), list(reversed(docs)), tmp_path)

    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    assert canonical(again["kept"]) == canonical(tagged["kept"])
    assert canonical(again["summary"]) == canonical(tagged["summary"])


def test_probabilities_on_request_topic_domains_and_dead_letters(docs, tmp_path) -> None:
    config = TagConfig(enabled=True, write_probabilities=True, domain_from="topic", format=None, statistics=False)
    bad = {"id": "bad", "text": 12345, "url": None, "source": "sample", "metadata": "{}"}
    out = run_tag(Tag(config), [*docs[:10], bad], tmp_path)
    assert "summary" not in out
    assert sorted(d["id"] for d in out["kept"]) == sorted(d["id"] for d in docs[:10])
    (dead,) = out["rejected"]  # the batch is retried one by one: only the bad document is lost to tagging
    assert dead["doc_id"] == "bad" and dead["stage"] == "tag"
    for doc in out["kept"]:
        assert len(doc["topic_probs"]) == 24 and sum(doc["topic_probs"]) == pytest.approx(1.0, abs=1e-5)
        assert doc["topic_id"] == int(np.argmax(doc["topic_probs"]))
        assert doc["domain"] == dataman_domain_of_topic(doc["topic"])  # application_domain ignored
        assert "format" not in doc


def test_domains_report_section_renders_the_summary(tagged) -> None:
    from winnow.report.domains import domains_html

    records = [{k: v for k, v in r.items() if k != "section"} for r in tagged["summary"]]  # as the manifest holds them
    page = domains_html(records)
    assert page.count("<img") >= 4  # token shares per taxonomy and the topic × format map
    assert "preselect_score" in page and "DataMan domain source: dataman: 12, topic: 48" in page
    top_topic = max(
        (r for r in records if r["kind"] == "stats" and r["taxonomy"] == "topic"),
        key=lambda r: (r["tokens"], r["value"]),
    )
    assert f"<td>{top_topic['value'].replace('&', '&amp;')}</td>" in page
