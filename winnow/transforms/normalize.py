"""Stage ``normalize``: Unicode form, control characters and whitespace (core in scorers.normalize)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from winnow.schemas.config import NormalizeConfig
from winnow.scorers.normalize import TextNormalizer
from winnow.transforms.base import Document, counter, outcome_pardo, rejected, removed, split_outcomes

STAGE = "normalize"


class NormalizeDoFn(beam.DoFn):
    def __init__(self, config: NormalizeConfig):
        self.config = config
        self._emptied = counter("normalize:empty")
        self._changed = counter("normalize:changed")

    def setup(self) -> None:
        c = self.config
        self.normalizer = TextNormalizer(
            unicode_form=c.unicode_form,
            strip_control=c.strip_control,
            collapse_spaces=c.collapse_spaces,
            max_blank_lines=c.max_blank_lines,
            normalize_newlines=c.normalize_newlines,
        )

    def process(self, doc: Document) -> Iterator[Any]:
        if "html" in doc:  # not extracted yet: nothing to normalise (extract runs first when enabled)
            yield doc
            return
        try:
            text = self.normalizer(doc["text"])
        except Exception as error:  # a document must never kill the job
            yield rejected(doc, STAGE, error)
            return
        if not text:
            self._emptied.inc()
            yield removed(doc, "normalize:empty")
            return
        if text != doc["text"]:
            self._changed.inc()
            doc = {**doc, "text": text}
        yield doc


class Normalize(beam.PTransform):
    def __init__(self, config: NormalizeConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        return split_outcomes(docs | outcome_pardo("Normalize", NormalizeDoFn(self.config)))
