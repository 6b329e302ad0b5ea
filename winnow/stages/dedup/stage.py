"""Stage ``dedup``: exact duplicates by a hash of the (normalised) text, then near-duplicates
(``near``), then (when enabled) repeated paragraphs across documents (core: ``paragraph``).

With MinHash on (the default), exact dedup runs inside MinHash's signing pass on compact records
and its removals meet the documents in MinHash's join (``near``, core: ``exact``), so text crosses
one shuffle for both. Alone, it is a keyed join (docs/dedup.md#exact-duplicates): group by text
hash, keep one copy by a deterministic rule, remove the rest with ``duplicate_of`` set. The grouped
values are iterated twice (find the keeper, then route), which Beam allows without materialising
the group on runners that page large groups (Dataflow).

Paragraph dedup runs last, so MinHash judges whole documents as they came in and its verified
removals are not affected by lines another page happens to share; it then strips what still
repeats. Its shuffle holds only (line hash, (order key, document key, line index)) records; the
decisions are grouped by document and joined back to it once. Documents without a line of
``min_chars`` skip the joins. The manifest's ``dedup`` section gets a ``paragraph`` record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import xxhash

from winnow.beam.contract import (
    KEPT,
    REJECTED,
    REMOVED,
    Document,
    StageSpec,
    counter,
    merge,
    outcome_pardo,
    rejected,
    removed,
)
from winnow.stages.dedup.config import DedupConfig, ExactDedupConfig, ParagraphDedupConfig
from winnow.stages.dedup.exact import keeper_rank, text_hash
from winnow.stages.dedup.near import MinHashDedup
from winnow.stages.dedup.paragraph import apply_paragraph_dedup, duplicates_for_key, paragraph_records

STAGE = "dedup"
PARAGRAPH_REASON = "dedup:paragraph"
PARAGRAPH_COLUMNS = (
    pa.field("paragraph_lines_removed", pa.int32()),
    pa.field("paragraph_chars_removed", pa.int32()),
)
_PARAGRAPHS, _KEYED_DOCS, _STATS = "paragraphs", "keyed_docs", "stats"
_DOC, _DUP = 0, 1


class HashText(beam.DoFn):
    def __init__(self, config: ExactDedupConfig):
        self.config = config

    def process(self, doc: Document) -> Iterator[Any]:
        try:
            digest = text_hash(doc["text"], self.config.key)
        except Exception as error:
            yield rejected(doc, STAGE, error)
            return
        yield (digest, {**doc, "text_hash": digest})


class KeepOnePerHash(beam.DoFn):
    def __init__(self, config: ExactDedupConfig):
        self.config = config
        self._duplicates = counter("dedup:exact")

    def process(self, element: tuple[str, Iterable[Document]]) -> Iterator[Any]:
        _, docs = element
        # (rank, position): two inputs may even share an id; the position keeps them apart.
        _, keeper_at, keeper_id = min(
            (keeper_rank(doc, self.config.keep), position, doc["id"]) for position, doc in enumerate(docs)
        )
        for position, doc in enumerate(docs):
            if position == keeper_at:
                yield doc
            else:
                self._duplicates.inc()
                yield removed(doc, "dedup:exact", duplicate_of=keeper_id)


class ExactDedup(beam.PTransform):
    def __init__(self, config: ExactDedupConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        hashed = docs | "HashText" >> beam.ParDo(HashText(self.config)).with_outputs(REJECTED, main="hashed")
        routed = (
            hashed["hashed"]
            | "GroupByHash" >> beam.GroupByKey()
            | "KeepOne" >> outcome_pardo(KeepOnePerHash(self.config))
        )
        rejects = (hashed[REJECTED], routed[REJECTED]) | "MergeRejected" >> beam.Flatten()
        return {KEPT: routed[KEPT], REMOVED: routed[REMOVED], REJECTED: rejects}


# --- paragraph dedup -------------------------------------------------------------------------


def document_key(doc: Document) -> str:
    """A document's key in the paragraph joins: its id and a hash of its text, so two inputs that share
    an id never mix their lines."""
    return f"{doc['id']}\x00{xxhash.xxh3_64_hexdigest(doc['text'].encode('utf-8', 'surrogatepass'))}"


def _doc_id(key: str) -> str:
    return key.split("\x00", 1)[0]


class KeyParagraphs(beam.DoFn):
    """A batch of documents → (line hash, (id, document key, line index)) per keyed line, the document
    keyed for the join back (documents without a keyed line are kept at once), input totals."""

    def __init__(self, config: ParagraphDedupConfig):
        self.config = config

    def process(self, batch: list[Document]) -> Iterator[Any]:
        documents = characters = 0
        for doc in batch:
            try:
                key = document_key(doc)
                records = list(paragraph_records(key, doc["text"], self.config.min_chars, order_key=doc["id"]))
            except Exception as error:  # a document must never kill the job
                yield rejected(doc, STAGE, error)
                continue
            documents += 1
            characters += len(doc["text"])
            if not records:
                yield {**doc, "paragraph_lines_removed": 0, "paragraph_chars_removed": 0}
                continue
            for record in records:
                yield beam.pvalue.TaggedOutput(_PARAGRAPHS, record)
            yield beam.pvalue.TaggedOutput(_KEYED_DOCS, (key, (_DOC, doc)))
        yield beam.pvalue.TaggedOutput(_STATS, (documents, characters, 0, 0, 0, 0, 0))


def _copies_to_remove(element: tuple[int, Iterable[tuple[str, str, int]]]) -> Iterator[tuple[str, tuple[int, Any]]]:
    for key, duplicate in duplicates_for_key(element[1]):
        yield key, (_DUP, duplicate)


class ApplyParagraphDedup(beam.DoFn):
    """One document with its (line index, keeper key) duplicates → rebuilt, or removed by the share rule."""

    def __init__(self, config: ParagraphDedupConfig):
        self.config = config

    def setup(self) -> None:
        self.removed_docs = counter(PARAGRAPH_REASON)
        self.lines = counter("dedup:paragraph_lines_removed")

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]]) -> Iterator[Any]:
        _, tagged = element
        duplicates = [(index, _doc_id(keeper)) for tag, (index, keeper) in _tagged(tagged, _DUP)]
        for _, doc in _tagged(tagged, _DOC):
            try:
                result = apply_paragraph_dedup(doc["text"], duplicates, self.config.max_removed_share)
            except Exception as error:
                yield rejected(doc, STAGE, error)
                continue
            if result.drop:
                self.removed_docs.inc()
                yield beam.pvalue.TaggedOutput(_STATS, (0, 0, 0, 0, 0, 1, len(doc["text"])))
                out = removed(doc, PARAGRAPH_REASON, duplicate_of=result.duplicate_of)
                out.value["detail"] = json.dumps(
                    {"lines_removed": result.removed_lines, "removed_share": result.removed_share}, sort_keys=True
                )
                yield out
                continue
            if result.removed_lines:
                self.lines.inc(result.removed_lines)
                yield beam.pvalue.TaggedOutput(_STATS, (0, 0, result.removed_lines, result.removed_chars, 1, 0, 0))
            yield {
                **doc,
                "text": result.text,
                "paragraph_lines_removed": result.removed_lines,
                "paragraph_chars_removed": result.removed_chars,
            }


def _tagged(tagged: Iterable[tuple[int, Any]], wanted: int) -> Iterator[tuple[int, Any]]:
    return ((tag, value) for tag, value in tagged if tag == wanted)


def _paragraph_record(totals: tuple[int, ...]) -> dict[str, Any]:
    documents, characters, lines, chars, edited, dropped, dropped_chars = totals
    return {
        "section": STAGE,
        "kind": "paragraph",
        "documents": documents,
        "characters": characters,
        "lines_removed": lines,
        "chars_removed_from_kept": chars,
        "documents_edited": edited,
        "documents_removed": dropped,
        "chars_of_removed_documents": dropped_chars,
        "share_removed": (chars + dropped_chars) / characters if characters else 0.0,
    }


def _sum_totals(rows: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    totals = [0] * 7
    for row in rows:
        for i, value in enumerate(row):
            totals[i] += value
    return tuple(totals)


class ParagraphDedup(beam.PTransform):
    def __init__(self, config: ParagraphDedupConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        keyed = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=256)
            | "KeyParagraphs"
            >> beam.ParDo(KeyParagraphs(self.config)).with_outputs(
                _PARAGRAPHS, _KEYED_DOCS, _STATS, REJECTED, main=KEPT
            )
        )
        copies = (
            keyed[_PARAGRAPHS]
            | "GroupByParagraph" >> beam.GroupByKey()
            | "CopiesToRemove" >> beam.FlatMap(_copies_to_remove)
        )
        applied = (
            (keyed[_KEYED_DOCS], copies)
            | "DocsAndCopies" >> beam.Flatten()
            | "GroupByDocument" >> beam.GroupByKey()
            | "Apply" >> beam.ParDo(ApplyParagraphDedup(self.config)).with_outputs(REMOVED, REJECTED, _STATS, main=KEPT)
        )
        summary = (
            (keyed[_STATS], applied[_STATS])
            | "AllStats" >> beam.Flatten()
            | "SumStats" >> beam.CombineGlobally(_sum_totals)
            | "Record" >> beam.Map(_paragraph_record)
        )
        return {
            KEPT: (keyed[KEPT], applied[KEPT]) | "AllKept" >> beam.Flatten(),
            REMOVED: applied[REMOVED],
            REJECTED: (keyed[REJECTED], applied[REJECTED]) | "AllRejected" >> beam.Flatten(),
            "summary": summary,
        }


class Dedup(beam.PTransform):
    """Exact dedup, then (when configured) MinHash near-dedup, then paragraph dedup, as one stage."""

    def __init__(self, config: DedupConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        steps: list[tuple[str, beam.PTransform]] = []
        exact, minhash = self.config.exact, self.config.minhash
        if exact.enabled and minhash.enabled:
            # One pass: exact copies are found from compact records inside MinHash's signing step,
            # so the text is joined back once for both instead of being grouped by hash first.
            steps.append(("ExactAndMinHash", MinHashDedup(minhash, exact=exact)))
        elif exact.enabled:
            steps.append(("Exact", ExactDedup(exact)))
        elif minhash.enabled:
            steps.append(("MinHash", MinHashDedup(minhash)))
        if self.config.paragraph.enabled:
            steps.append(("Paragraph", ParagraphDedup(self.config.paragraph)))
        removed_parts, rejected_parts, summaries = [], [], []
        for label, transform in steps:
            out = docs | label >> transform
            docs = out[KEPT]
            removed_parts.append(out[REMOVED])
            rejected_parts.append(out[REJECTED])
            if "summary" in out:
                summaries.append(out["summary"])
        pipeline = docs.pipeline
        outputs = {
            KEPT: docs,
            REMOVED: merge(pipeline, removed_parts, "Removed"),
            REJECTED: merge(pipeline, rejected_parts, "Rejected"),
        }
        if summaries:
            outputs["summary"] = merge(pipeline, summaries, "Summary")
        return outputs


def config_columns(config: DedupConfig) -> tuple[pa.Field, ...]:
    return PARAGRAPH_COLUMNS if config.paragraph.enabled else ()


SPEC = StageSpec(
    name=STAGE,
    config=DedupConfig,
    transform=Dedup,
    columns=(
        pa.field("text_hash", pa.string()),
        # MinHash clusters: the kept document's own id when it has near-duplicates, else null.
        pa.field("cluster_id", pa.string()),
        pa.field("cluster_size", pa.int64()),
    ),
    config_columns=config_columns,
)
