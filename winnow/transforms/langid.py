"""Stage ``langid``: language and score per document, kept by per-language thresholds.

The model loads once per worker (``DoFn.setup``) and predicts a batch per call: fastText's
per-call overhead is larger than its per-document cost on short texts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from winnow.schemas.clean import LangIdConfig
from winnow.scorers.langid import keep_decision, make_identifier
from winnow.transforms.base import Document, counter, outcome_pardo, rejected, removed, split_outcomes

STAGE = "langid"


class LangIdDoFn(beam.DoFn):
    def __init__(self, config: LangIdConfig):
        self.config = config
        self._dropped = {rule: counter(f"{STAGE}:{rule}") for rule in ("language", "low_score")}

    def setup(self) -> None:
        c = self.config
        self.identifier = make_identifier(c.backend, c.model_path, c.max_chars)

    def process(self, batch: list[Document]) -> Iterator[Any]:
        try:
            predictions = self.identifier.predict([doc["text"] for doc in batch])
        except Exception:
            predictions = None  # find the bad document one by one below
        for i, doc in enumerate(batch):
            if predictions is not None:
                language, score = predictions[i]
            else:
                try:
                    language, score = self.identifier.predict([doc["text"]])[0]
                except Exception as error:
                    yield rejected(doc, STAGE, error)
                    continue
            out = {**doc, "language": language, "language_score": score}
            rule = keep_decision(language, score, self.config.keep) if self.config.filter else None
            if rule is not None:
                self._dropped[rule].inc()
                yield removed(out, f"{STAGE}:{rule}")
            else:
                yield out


class LangId(beam.PTransform):
    """Adds ``language`` / ``language_score``; returns ``{"kept", "removed", "rejected"}``."""

    def __init__(self, config: LangIdConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        batches = docs | "BatchForLangId" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.config.batch_size)
        return split_outcomes(batches | outcome_pardo("LangId", LangIdDoFn(self.config)))
