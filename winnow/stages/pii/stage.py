"""Stage ``pii``: redact e-mail addresses, IP addresses, phone, card and IBAN numbers (core: ``redact``).

Each kept document gets ``pii_redactions``: one ``{kind, start, end}`` per replaced value, the
offsets being those of the placeholder in the text as this stage wrote it (stages that later cut
text, paragraph dedup and decontamination's ``cut``, do not move them). Counts per kind are Beam
counters (``pii:email``, …) and the manifest's ``pii`` section (one record per kind: values
replaced, documents with one). The stage never removes a document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import pyarrow as pa

from winnow.beam.contract import KEPT, CountFn, Document, Outcome, PerDocumentStage, StageSpec
from winnow.core.batches import column_values
from winnow.stages.pii.config import PiiConfig
from winnow.stages.pii.redact import PiiRedactor

STAGE = "pii"
REDACTION = pa.struct([("kind", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
COLUMNS = (pa.field("pii_redactions", pa.list_(REDACTION)),)


class PiiStep:
    """Redacts each document; a document without PII passes unchanged (with an empty list)."""

    def __init__(self, config: PiiConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        c = self.config
        self.count = count
        self.redactor = PiiRedactor(
            kinds=tuple(c.kinds),
            replacement=c.replacement,
            phone_regions=tuple(c.phone_regions),
            ip_public_only=c.ip_public_only,
        )

    def __call__(self, docs: list[Document]) -> list[Outcome]:
        return [self._one(doc) for doc in docs]

    def _one(self, doc: Document) -> Outcome:
        result = self.redactor(doc["text"], self.count)
        if result.redactions:
            self.count("documents_redacted", 1)
        return {**doc, "text": result.text, "pii_redactions": [r.as_record() for r in result.redactions]}


class PiiTally(beam.CombineFn):
    """Per kind: values replaced and documents with at least one (the manifest's ``pii`` section)."""

    def __init__(self, kinds: Iterable[str]):
        self.kinds = list(dict.fromkeys(kinds))

    def create_accumulator(self) -> dict[str, list[int]]:
        return {kind: [0, 0] for kind in self.kinds}

    def add_input(self, acc: dict[str, list[int]], redactions: list[dict[str, Any]]) -> dict[str, list[int]]:
        seen: set[str] = set()
        for redaction in redactions:
            acc[redaction["kind"]][0] += 1
            seen.add(redaction["kind"])
        for kind in seen:
            acc[kind][1] += 1
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, list[int]]]) -> dict[str, list[int]]:
        merged = self.create_accumulator()
        for acc in accs:
            for kind, (values, documents) in acc.items():
                merged[kind][0] += values
                merged[kind][1] += documents
        return merged

    def extract_output(self, acc: dict[str, list[int]]) -> list[dict[str, Any]]:
        return [
            {"section": STAGE, "kind": kind, "redactions": values, "documents": documents}
            for kind, (values, documents) in acc.items()
        ]


class Pii(beam.PTransform):
    def __init__(self, config: PiiConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        outputs = dict(docs | "Redact" >> PerDocumentStage(STAGE, PiiStep(self.config), fields=COLUMNS))
        outputs["summary"] = (
            outputs[KEPT]
            | "Redactions" >> beam.FlatMap(lambda e: [v or [] for v in column_values(e, "pii_redactions")])
            | "Tally" >> beam.CombineGlobally(PiiTally(self.config.kinds))
            | "Records" >> beam.FlatMap(lambda records: records)
        )
        return outputs


SPEC = StageSpec(name=STAGE, config=PiiConfig, transform=Pii, columns=COLUMNS, batches=True, heavy=True)
