"""Stage ``filter``: C4, Gopher and FineWeb heuristics (core in ``winnow.scorers.heuristics``).

Every rule's drop reason is a Beam counter of the same name (``filter:gopher_word_count``);
the C4 line filter's edits are counted in ``filter:lines_removed`` / ``filter:chars_removed``
and stamped on the document (``filter_lines_removed``, ``filter_chars_removed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from winnow.schemas.clean import FilterConfig
from winnow.scorers.heuristics import RULE_NAMES, FilterChain
from winnow.transforms.base import Document, counter, outcome_pardo, rejected, removed, split_outcomes

STAGE = "filter"


class FilterDoFn(beam.DoFn):
    def __init__(self, config: FilterConfig):
        self.config = config
        self._dropped = {rule: counter(f"{STAGE}:{rule}") for rule in RULE_NAMES}
        self._lines = counter(f"{STAGE}:lines_removed")
        self._chars = counter(f"{STAGE}:chars_removed")

    def setup(self) -> None:
        self.chain = FilterChain(self.config)

    def process(self, doc: Document) -> Iterator[Any]:
        try:
            result = self.chain(doc["text"])
        except Exception as error:  # a document must never kill the job
            yield rejected(doc, STAGE, error)
            return
        if result.drop is not None:
            rule = result.drop.rule
            (self._dropped.get(rule) or counter(f"{STAGE}:{rule}")).inc()
            yield removed(doc, f"{STAGE}:{rule}")
            return
        if result.lines_removed:
            self._lines.inc(result.lines_removed)
            self._chars.inc(result.chars_removed)
        yield {
            **doc,
            "text": result.text,
            "filter_lines_removed": result.lines_removed,
            "filter_chars_removed": result.chars_removed,
        }


class Filter(beam.PTransform):
    """Heuristic quality filters; returns ``{"kept", "removed", "rejected"}``."""

    def __init__(self, config: FilterConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        return split_outcomes(docs | outcome_pardo("Filter", FilterDoFn(self.config)))
