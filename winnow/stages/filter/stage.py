"""Stage ``filter``: URL blocklists, then C4, Gopher and FineWeb heuristics (rules in ``winnow.stages.filter.rules``).

Optionally per source (``by_source`` profiles: e.g. C4's line rules for web text only, since they
delete formula, table and verse lines that are normal in papers and books) and behind a licence
gate on a declared licence field (``license_allow``).

Every rule's drop reason is a Beam counter of the same name (``filter:gopher_word_count``,
``filter:url_blocklist_adult``); the C4 line filter's edits are counted in ``filter:lines_removed`` /
``filter:chars_removed`` and stamped on the document (``filter_lines_removed``, ``filter_chars_removed``).

Annotate mode (``mode: annotate``) keeps every document and writes ``filter_flags``, the rules that
fired, so a user can set thresholds later (dolma's attributes idea); each flag is counted in
``filter:flagged:<rule>`` and the manifest's ``filter`` section lists documents flagged per rule.
Flagged documents are kept, so they count as kept in the run's accounting.

The URL blocklists are read once on the driver before the graph is built (``SPEC.prepare``), so
a missing, unreadable or empty list file stops the run before any data moves; workers read them
again when they set up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa

from winnow.beam.contract import KEPT, CountFn, Document, Drop, Outcome, PerDocumentStage, StageSpec, field_value
from winnow.core.batches import column_values
from winnow.core.sources import matching_key
from winnow.stages.filter.config import FilterConfig
from winnow.stages.filter.rules import FilterChain, load_url_blocklist

STAGE = "filter"
DEFAULT_PROFILE = "default"  # the by_source profile of sources no other key names
COLUMNS = (pa.field("filter_lines_removed", pa.int32()), pa.field("filter_chars_removed", pa.int32()))
FLAGS_COLUMN = pa.field("filter_flags", pa.list_(pa.string()))


class FilterStep:
    """Runs the configured rule chain on each document."""

    def __init__(self, config: FilterConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        self.count = count
        self.chain = FilterChain(self.config)
        # Profiles share the run's blocklist (read once): lists and the mode are per run, not per source.
        self.profiles = {
            name: FilterChain(self.config.profile(name), self.chain.blocklist) for name in self.config.by_source
        }
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
        result = self.chain_for(str(doc.get("source") or ""))(doc["text"], doc.get("url"))
        if result.drop is not None:
            return Drop(result.drop.rule)
        if result.lines_removed:
            self.count("lines_removed", result.lines_removed)
            self.count("chars_removed", result.chars_removed)
        out = {
            **doc,
            "text": result.text,
            "filter_lines_removed": result.lines_removed,
            "filter_chars_removed": result.chars_removed,
        }
        if self.chain.annotate:
            for flag in result.flags:
                self.count(f"{STAGE}:flagged:{flag}", 1)
            out["filter_flags"] = list(result.flags)
        return out


class FlagTally(beam.CombineFn):
    """Documents seen, documents with any flag, and documents per flag (annotate mode's manifest)."""

    def create_accumulator(self) -> tuple[int, int, Counter[str]]:
        return 0, 0, Counter()

    def add_input(self, acc: tuple[int, int, Counter[str]], flags: Sequence[str]) -> tuple[int, int, Counter[str]]:
        seen, flagged, per_rule = acc
        per_rule.update(set(flags))
        return seen + 1, flagged + bool(flags), per_rule

    def merge_accumulators(self, accs: Iterable[tuple[int, int, Counter[str]]]) -> tuple[int, int, Counter[str]]:
        seen, flagged, per_rule = 0, 0, Counter()
        for a_seen, a_flagged, a_rules in accs:
            seen, flagged = seen + a_seen, flagged + a_flagged
            per_rule.update(a_rules)
        return seen, flagged, per_rule

    def extract_output(self, acc: tuple[int, int, Counter[str]]) -> dict[str, Any]:
        seen, flagged, per_rule = acc
        return {
            "section": STAGE,
            "kind": "flags",
            "mode": "annotate",
            "documents": seen,
            "flagged": flagged,
            "by_rule": dict(sorted(per_rule.items())),
        }


class Filter(beam.PTransform):
    """The rule chain per document; in annotate mode also the manifest's per-rule flag counts."""

    def __init__(self, config: FilterConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        fields = (*COLUMNS, FLAGS_COLUMN)
        outputs = dict(docs | "Rules" >> PerDocumentStage(STAGE, FilterStep(self.config), fields=fields))
        if self.config.mode == "annotate":
            outputs["summary"] = (
                outputs[KEPT]
                | "Flags" >> beam.FlatMap(lambda e: [v or [] for v in column_values(e, "filter_flags")])
                | "TallyFlags" >> beam.CombineGlobally(FlagTally())
            )
        return outputs


def check_blocklists(config: FilterConfig) -> dict[str, Any]:
    """Driver-side, before the graph: read every blocklist file once (``BlocklistError`` on a bad one)."""
    load_url_blocklist(config)
    return {}


def config_columns(config: FilterConfig) -> Sequence[pa.Field]:
    return (FLAGS_COLUMN,) if config.mode == "annotate" else ()


SPEC = StageSpec(
    name=STAGE,
    heavy=True,
    config=FilterConfig,
    transform=Filter,
    columns=COLUMNS,
    config_columns=config_columns,
    prepare=check_blocklists,
    batches=True,
)
