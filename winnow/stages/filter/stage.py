"""Stage ``filter``: C4, Gopher and FineWeb heuristics (rules in ``winnow.stages.filter.rules``).

Every rule's drop reason is a Beam counter of the same name (``filter:gopher_word_count``);
the C4 line filter's edits are counted in ``filter:lines_removed`` / ``filter:chars_removed``
and stamped on the document (``filter_lines_removed``, ``filter_chars_removed``).
"""

from __future__ import annotations

import pyarrow as pa

from winnow.beam.contract import CountFn, Document, Drop, Outcome, PerDocumentStage, StageSpec
from winnow.stages.filter.config import FilterConfig
from winnow.stages.filter.rules import FilterChain

STAGE = "filter"
COLUMNS = (pa.field("filter_lines_removed", pa.int32()), pa.field("filter_chars_removed", pa.int32()))


class FilterStep:
    """Runs the configured rule chain on each document."""

    def __init__(self, config: FilterConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        self.count = count
        self.chain = FilterChain(self.config)

    def __call__(self, docs: list[Document]) -> list[Outcome]:
        return [self._one(doc) for doc in docs]

    def _one(self, doc: Document) -> Outcome:
        result = self.chain(doc["text"])
        if result.drop is not None:
            return Drop(result.drop.rule)
        if result.lines_removed:
            self.count("lines_removed", result.lines_removed)
            self.count("chars_removed", result.chars_removed)
        return {
            **doc,
            "text": result.text,
            "filter_lines_removed": result.lines_removed,
            "filter_chars_removed": result.chars_removed,
        }


def Filter(config: FilterConfig) -> PerDocumentStage:
    return PerDocumentStage(STAGE, FilterStep(config))


SPEC = StageSpec(name=STAGE, config=FilterConfig, transform=Filter, columns=COLUMNS)
