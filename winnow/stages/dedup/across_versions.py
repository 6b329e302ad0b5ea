"""Dedup across refresh versions: drop texts an earlier version accepted (a keyed join on the text hash)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.parquetio import ReadAllFromParquet

from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, counter, outcome_pardo, rejected, removed
from winnow.stages.dedup.exact import text_hash


# -- Beam transforms ------------------------------------------------------------------------
class DropAccepted(beam.DoFn):
    """One text hash: its new documents and the (version, id) that accepted it before, if any."""

    def __init__(self) -> None:
        self._duplicates = counter("dedup:exact")

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        _, groups = element
        accepted = list(groups["accepted"])
        if not accepted:
            yield from groups["new"]
            return
        _, keeper_id = min(accepted)
        for doc in groups["new"]:
            self._duplicates.inc()
            yield removed(doc, "dedup:exact", duplicate_of=keeper_id)


class HashForJoin(beam.DoFn):
    def __init__(self, key: str):
        self.key = key

    def process(self, doc: Document) -> Iterator[Any]:
        try:
            digest = text_hash(doc["text"], self.key)
        except Exception as error:
            yield rejected(doc, "dedup", error)
            return
        yield (digest, doc)


class AcceptedHashJoin(beam.PTransform):
    """Remove documents whose text hash an earlier version accepted: a keyed join (CoGroupByKey)."""

    def __init__(self, accepted_files: list[str], key: str):
        super().__init__()
        self.accepted_files = accepted_files
        self.key = key

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        hashed = docs | "HashText" >> beam.ParDo(HashForJoin(self.key)).with_outputs(REJECTED, main="hashed")
        accepted = (
            docs.pipeline
            | "AcceptedFiles" >> beam.Create(self.accepted_files)
            | "ReadAccepted" >> ReadAllFromParquet(columns=["text_hash", "id", "version"])
            | "KeyAccepted" >> beam.Map(lambda row: (row["text_hash"], (row["version"], row["id"])))
        )
        routed = (
            {"new": hashed["hashed"], "accepted": accepted}
            | "JoinAccepted" >> beam.CoGroupByKey()
            | "DropAccepted" >> outcome_pardo(DropAccepted())
        )
        rejects = (hashed[REJECTED], routed[REJECTED]) | "MergeRejected" >> beam.Flatten()
        return {KEPT: routed[KEPT], REMOVED: routed[REMOVED], REJECTED: rejects}


class AcrossVersions(beam.PTransform):
    """The dedup stage of a refresh: drop texts accepted by earlier versions, then dedup the rest."""

    def __init__(self, inner: beam.PTransform, accepted_files: list[str], key: str):
        super().__init__()
        self.inner = inner
        self.accepted_files = accepted_files
        self.key = key
        self.tables = getattr(inner, "tables", {}) or {}  # the wrapped stage's extra outputs pass through

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        if not self.accepted_files:
            return docs | "Within" >> self.inner
        across = docs | "AgainstAccepted" >> AcceptedHashJoin(self.accepted_files, self.key)
        within = across[KEPT] | "Within" >> self.inner
        return {
            **within,
            KEPT: within[KEPT],
            REMOVED: (across[REMOVED], within[REMOVED]) | "MergeRemoved" >> beam.Flatten(),
            REJECTED: (across[REJECTED], within[REJECTED]) | "MergeRejected" >> beam.Flatten(),
        }
