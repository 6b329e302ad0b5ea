"""Stage ``dedup``: exact duplicates by a hash of the (normalised) text, then near-duplicates.

Exact dedup is a keyed join (docs/dedup.md#exact-duplicates): group by text hash, keep one copy by a
deterministic rule, remove the rest with ``duplicate_of`` set. The grouped values are
iterated twice (find the keeper, then route), which Beam allows without materialising
the group on runners that page large groups (Dataflow).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from winnow.beam.contract import (
    KEPT,
    REJECTED,
    REMOVED,
    Document,
    StageSpec,
    chain,
    counter,
    outcome_pardo,
    rejected,
    removed,
)
from winnow.core.schemas import identity_key
from winnow.core.text import dedup_key_text
from winnow.stages.dedup.config import DedupConfig, ExactDedupConfig
from winnow.stages.dedup.near import MinHashDedup

STAGE = "dedup"


def text_hash(text: str, key: str) -> str:
    """SHA-256 of the text in its matching form (docs/dedup.md#exact-duplicates: exact dedup before MinHash)."""
    material = dedup_key_text(text) if key == "normalized" else text
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def keeper_rank(doc: Document, keep: str) -> tuple[Any, ...]:
    """Smaller ranks are kept; ties end on the document's identity (id, source, URL, metadata, text)
    so the choice never depends on order, even when an input reuses an id."""
    if keep == "longest":
        return (-len(doc["text"]), *identity_key(doc))
    return identity_key(doc)


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


class Dedup(beam.PTransform):
    """Exact dedup, then (when configured) MinHash near-dedup, as one stage."""

    def __init__(self, config: DedupConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        steps: list[tuple[str, beam.PTransform]] = []
        if self.config.exact.enabled:
            steps.append(("Exact", ExactDedup(self.config.exact)))
        if self.config.minhash.enabled:
            steps.append(("MinHash", MinHashDedup(self.config.minhash)))
        return chain(docs, steps)


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
)
