"""PerDocumentStage on Arrow batches: a step's column path, its per-document path and dicts agree."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from conftest import collect, local_pipeline

from winnow.beam.contract import KEPT, REJECTED, REMOVED, BatchOutcome, Drop, PerDocumentStage
from winnow.core.batches import as_documents, batch_of

DOCS = [{"id": f"d{i}", "text": "word " * i, "source": "s", "metadata": "{}"} for i in range(12)]


class ShortTextRule:
    """Drops texts under 20 characters and adds ``n_chars``; ``columns`` is the same rule on columns."""

    def __init__(self, by_columns: bool, fail_on_columns: bool = False):
        self.by_columns, self.fail_on_columns = by_columns, fail_on_columns

    def setup(self, count) -> None:
        self.count = count

    def __call__(self, docs):
        out = []
        for doc in docs:
            doc = {**doc, "n_chars": len(doc["text"])}
            out.append(Drop("short") if doc["n_chars"] < 20 else doc)
        return out

    def __getattr__(self, name):
        if name == "columns" and self.by_columns:
            return self._columns
        raise AttributeError(name)

    def _columns(self, batch: pa.RecordBatch) -> BatchOutcome:
        if self.fail_on_columns:
            raise RuntimeError("column path fails: the batch goes document by document")
        lengths = pc.utf8_length(batch.column("text")).cast(pa.int64())
        drops = ["short" if n < 20 else None for n in lengths.to_pylist()]
        return BatchOutcome(columns={"n_chars": lengths}, drops=drops)


def _run(elements: list, step: ShortTextRule, name: str) -> tuple[list[dict], list[dict], list]:
    fields = [pa.field("n_chars", pa.int64())]
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create(elements, reshuffle=False) | PerDocumentStage("rule", step, fields=fields)
        kept, removed, rejected = (collect(out[k], f"{name}_{k}") for k in (KEPT, REMOVED, REJECTED))
    docs = sorted((d for e in kept for d in as_documents(e)), key=lambda d: d["id"])
    return docs, sorted(removed, key=lambda d: d["id"]), list(rejected)


def test_column_path_per_document_path_and_dicts_give_the_same_outcomes():
    batches = [batch_of(DOCS[:5]), batch_of(DOCS[5:])]
    by_columns = _run(batches, ShortTextRule(by_columns=True), "columns")
    by_rows = _run(batches, ShortTextRule(by_columns=False), "rows")
    fallback = _run(batches, ShortTextRule(by_columns=True, fail_on_columns=True), "fallback")
    dicts = _run([dict(d) for d in DOCS], ShortTextRule(by_columns=False), "dicts")
    assert by_columns == by_rows == fallback == dicts
    kept, removed, rejected = by_columns
    assert [d["id"] for d in kept] == sorted(f"d{i}" for i in range(4, 12))
    assert all(d["n_chars"] == 5 * int(d["id"][1:]) for d in kept)
    assert [(d["id"], d["reason"]) for d in removed] == [(f"d{i}", "rule:short") for i in range(4)]
    assert rejected == []
