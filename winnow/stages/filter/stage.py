"""Stage ``filter``: C4, Gopher and FineWeb heuristics (rules in ``winnow.stages.filter.rules``).

Optionally per source (``by_source`` profiles: e.g. C4's line rules for web text only, since they
delete formula, table and verse lines that are normal in papers and books) and behind a licence
gate on a declared licence field (``license_allow``).

Every rule's drop reason is a Beam counter of the same name (``filter:gopher_word_count``);
the C4 line filter's edits are counted in ``filter:lines_removed`` / ``filter:chars_removed``
and stamped on the document (``filter_lines_removed``, ``filter_chars_removed``).
"""

from __future__ import annotations

import pyarrow as pa

from winnow.beam.contract import CountFn, Document, Drop, Outcome, PerDocumentStage, StageSpec, field_value
from winnow.core.sources import matching_key
from winnow.stages.filter.config import FilterConfig
from winnow.stages.filter.rules import FilterChain

STAGE = "filter"
DEFAULT_PROFILE = "default"  # the by_source profile of sources no other key names
COLUMNS = (pa.field("filter_lines_removed", pa.int32()), pa.field("filter_chars_removed", pa.int32()))


class FilterStep:
    """Runs the configured rule chain on each document."""

    def __init__(self, config: FilterConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        self.count = count
        self.chain = FilterChain(self.config)
        self.profiles = {name: FilterChain(self.config.profile(name)) for name in self.config.by_source}
        self._chain_of: dict[str, FilterChain] = {}
        allow = self.config.license_allow
        self.licenses = None if allow is None else {value.strip().casefold() for value in allow}

    def __call__(self, docs: list[Document]) -> list[Outcome]:
        return [self._one(doc) for doc in docs]

    def chain_for(self, source: str) -> FilterChain:
        """The source's ``by_source`` profile (first matching key, else ``default``), else the global rules."""
        if source not in self._chain_of:
            name = matching_key(source, [key for key in self.profiles if key != DEFAULT_PROFILE])
            if name is None and DEFAULT_PROFILE in self.profiles:
                name = DEFAULT_PROFILE
            self._chain_of[source] = self.profiles[name] if name is not None else self.chain
        return self._chain_of[source]

    def license_drop(self, doc: Document) -> Drop | None:
        """The licence gate: a declared licence outside ``license_allow``, or none declared."""
        if self.licenses is None:
            return None
        value = field_value(doc, self.config.license_field)
        if value is None or not str(value).strip():
            return Drop("license_missing")
        return None if str(value).strip().casefold() in self.licenses else Drop("license_not_allowed")

    def _one(self, doc: Document) -> Outcome:
        if (gate := self.license_drop(doc)) is not None:
            return gate
        result = self.chain_for(str(doc.get("source") or ""))(doc["text"])
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
