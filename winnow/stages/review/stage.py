"""Stage ``review``: reviewers' decisions (``review.decisions``) removed like any filter, as ``review:<label>``.

The sheet is read once on the driver (``read_decisions``) and its decisions travel with the
DoFns (a reviewed sheet is thousands of rows, not millions). Per document, in this order:

1. a document decision ``drop`` removes it (``keep`` protects it from its source's decision);
2. its source's ``drop_source`` removes it;
3. its source's ``cap_tokens``: the source's documents are ranked by ``u(doc_id, "review:cap",
   seed)`` and the shortest prefix whose tokens reach the cap is kept (the docs/budgets.md#tokens cut through
   the shared ``BudgetCuts``: the kept tokens reach the cap and exceed it by less than one
   document); the rest are removed.

``summary`` holds the ``review`` manifest section: per decision, the documents (and, for caps,
the tokens) it removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, rejected, removed
from winnow.beam.cuts import BudgetCuts
from winnow.core.budget import CutPoint, Narrowing, order_bits
from winnow.core.config import TokenizerConfig, local_config_file
from winnow.core.hashing import h64, uniform
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.review.config import ReviewConfig
from winnow.stages.review.decisions import ReviewDecisions, SourceDecision, parse_decisions

STAGE = "review"
SUMMARY = "summary"
CAPPED = "capped"
TALLY = "tally"  # (source key, (1, tokens)) per document a cap keeps


def read_decisions(path: str) -> ReviewDecisions:
    """The decisions sheet, local, package data or on any Beam filesystem."""
    local = local_config_file(path)
    if local is not None:
        return parse_decisions(local.read_text(encoding="utf-8"), path)
    with FileSystems.open(path) as handle:
        return parse_decisions(handle.read().decode("utf-8"), path)


def reason(label: str | None) -> str:
    return f"{STAGE}:{label}"


class DecideDoFn(beam.DoFn):
    """Document and source decisions; documents of a capped source go to ``capped`` with their tokens."""

    def __init__(self, decisions: ReviewDecisions, tokens_field: str, tokenizer: TokenizerConfig):
        self.decisions = decisions
        self.tokens_field = tokens_field
        self.tokenizer_config = tokenizer
        self._tokenizer: Any = None
        self._counters: dict[str, Any] = {}

    def _count(self, name: str) -> None:
        if name not in self._counters:
            self._counters[name] = counter(name)
        self._counters[name].inc()

    def _tokens(self, doc: Document) -> int:
        value = doc.get(self.tokens_field)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
                raise ValueError(f"field {self.tokens_field!r} is not a token count: {value!r}")
            return int(value)
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)
        return int(self._tokenizer.count([doc.get("text") or ""])[0])

    def process(self, doc: Document) -> Iterator[Any]:
        verdict = self.decisions.document(str(doc["id"]))
        if verdict is not None:
            decision, label = verdict
            if decision == "drop":
                self._count(reason(label))
                yield removed(doc, reason(label))
                return
            self._count("review:kept_by_reviewer")
            yield doc  # a reviewer kept it: its source's decision does not apply
            return
        source = self.decisions.source(str(doc.get("source") or ""))
        if source is None:
            yield doc
        elif source.decision == "drop_source":
            self._count(reason(source.label))
            yield removed(doc, reason(source.label))
        else:
            try:
                tokens = self._tokens(doc)
            except (TypeError, ValueError) as error:
                yield rejected(doc, STAGE, error)
                return
            yield pvalue.TaggedOutput(CAPPED, (source.key, tokens, doc))


def cap_element(item: tuple[str, int, Document], seed: int) -> tuple[str, tuple[int, int, int]]:
    key, tokens, doc = item
    doc_id = str(doc["id"])
    return key, (order_bits(uniform(doc_id, "review:cap", seed)), h64(doc_id, "review:tiebreak", seed), tokens)


def _cap_start(item: tuple[str, int], caps: dict[str, SourceDecision]) -> tuple[str, Narrowing]:
    key, pool = item
    return key, Narrowing.start(float(pool), float(caps[key].tokens or 0))


class ApplyCapDoFn(beam.DoFn):
    def __init__(self, caps: dict[str, SourceDecision], seed: int):
        self.caps = caps
        self.seed = seed

    def process(self, item: tuple[str, int, Document], cuts: dict[str, CutPoint]) -> Iterator[Any]:
        key, tokens, doc = item
        _, (key_bits, tiebreak, _) = cap_element(item, self.seed)
        if cuts[key].keeps(key_bits, tiebreak):
            yield pvalue.TaggedOutput(TALLY, (key, (1, tokens)))
            yield doc
        else:
            counter(reason(self.caps[key].label)).inc()
            yield removed(doc, reason(self.caps[key].label))


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    docs = tokens = 0
    for d, t in pairs:
        docs += d
        tokens += t
    return docs, tokens


def summary_records(
    removed_counts: list[tuple[str, int]], caps: list[tuple[str, tuple[int, int]]], decisions: ReviewDecisions
) -> Iterator[dict[str, Any]]:
    """One record per decision kind: documents removed per reason; per cap, pool and kept tokens."""
    kept = dict(caps)
    yield {
        "section": STAGE,
        "kind": "documents",
        "decisions": len(decisions.documents),
        "removed": dict(sorted(removed_counts)),
    }
    for source in decisions.sources:
        record: dict[str, Any] = {
            "section": STAGE,
            "kind": "source",
            "source": source.key,
            "decision": source.decision,
            "reason": reason(source.label),
        }
        if source.decision == "cap_tokens":
            docs, tokens = kept.get(source.key, (0, 0))
            record.update({"cap_tokens": source.tokens, "kept_documents": docs, "kept_tokens": tokens})
        yield record


class Review(beam.PTransform):
    """Stage ``review`` (see the module docstring); the sheet is read here, on the driver, unless given."""

    def __init__(
        self,
        config: ReviewConfig,
        seed: int = 0,
        tokenizer: TokenizerConfig | None = None,
        decisions: ReviewDecisions | None = None,
    ):
        super().__init__()
        self.config = config
        self.seed = seed
        self.tokenizer = tokenizer or TokenizerConfig()
        if decisions is None:
            decisions = read_decisions(config.decisions) if config.decisions else ReviewDecisions()
        self.decisions = decisions

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        decisions, seed = self.decisions, self.seed
        decided = docs | "Decide" >> beam.ParDo(
            DecideDoFn(decisions, self.config.tokens_field, self.tokenizer)
        ).with_outputs(CAPPED, REMOVED, REJECTED, main=KEPT)
        caps = {d.key: d for d in decisions.sources if d.decision == "cap_tokens"}
        capped = decided[CAPPED]
        elements = capped | "CapKeys" >> beam.Map(cap_element, seed)
        starts = (
            elements
            | "CapTokens" >> beam.MapTuple(lambda key, element: (key, element[2]))
            | "SumCap" >> beam.CombinePerKey(sum)
            | "CapStart" >> beam.Map(_cap_start, caps)
        )
        cuts = (elements, starts) | "Cut" >> BudgetCuts(STAGE)
        applied = capped | "ApplyCap" >> beam.ParDo(ApplyCapDoFn(caps, seed), pvalue.AsDict(cuts)).with_outputs(
            REMOVED, TALLY, main=KEPT
        )
        kept = (decided[KEPT], applied[KEPT]) | "Kept" >> beam.Flatten()
        removed_all = (decided[REMOVED], applied[REMOVED]) | "Removed" >> beam.Flatten()
        removed_counts = (
            removed_all
            | "Reasons" >> beam.Map(lambda doc: doc["reason"])
            | "CountReasons" >> beam.combiners.Count.PerElement()
            | "ReasonList" >> beam.combiners.ToList()
        )
        cap_totals = (
            applied[TALLY] | "SumCapKept" >> beam.CombinePerKey(_sum_pairs) | "CapList" >> beam.combiners.ToList()
        )
        summary = removed_counts | "Summary" >> beam.FlatMap(summary_records, pvalue.AsSingleton(cap_totals), decisions)
        return {KEPT: kept, REMOVED: removed_all, REJECTED: decided[REJECTED], SUMMARY: summary}


def load_review_decisions(config: ReviewConfig) -> dict[str, ReviewDecisions]:
    """The explicit driver-side step before the graph (``StageSpec.prepare``): read the sheet."""
    return {"decisions": read_decisions(config.decisions) if config.decisions else ReviewDecisions()}


SPEC = StageSpec(
    name=STAGE, config=ReviewConfig, transform=Review, needs=("seed", "tokenizer"), prepare=load_review_decisions
)
