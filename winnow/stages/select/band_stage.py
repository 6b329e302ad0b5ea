"""``select.rule: band`` in Beam: the band's two ends as budget cuts over the pool, then tag or drop.

The method and its core are in ``winnow.stages.select.band`` (docs/salt.md#the-difficulty-band-selectrule-band).
Here the two ends are found with the budget-cut machinery every selection shares
(``winnow.beam.cuts.BudgetCuts``): each pool document (one with a finite value in ``band.column``)
goes into two groups, ``low`` and ``high``, as ``(order_bits(value), H64(doc_id), weight)``; the
pool weight W is a global sum; ``low`` is cut at ``(1 − lower)·W`` and ``high`` at ``(1 − upper)·W``
from the top, by weighted histograms, so no worker holds the pool. The cuts reach every document as
a side input and each is labelled ``below``, ``band``, ``above`` or ``missing`` (no value) and
selected when in the band and meeting every ``require`` condition.

With ``tag_only`` (the default) every document is kept with ``<tag_column>`` (bool, default
``salt_selected``) and ``band`` (its label); otherwise the selected ones are kept and the rest are
removed as ``select:band`` with the label and value in ``detail``. Kept documents with a value get
``select_key`` = the value. ``summary`` holds one ``selection`` record: pool weight, the column's
values at both ends, documents per label, the band's and the selected weight.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, counter, rejected, removed, side_copy
from winnow.beam.cuts import BudgetCuts
from winnow.core.budget import CutPoint, Narrowing, order_bits
from winnow.stages.select.band import (
    FILTER_REASON,
    BandCuts,
    band_budgets,
    band_decision,
    band_tiebreak,
    meets,
)
from winnow.stages.select.band_config import BandSelectConfig

STAGE = "select"
SUMMARY = "summary"
LABEL_COLUMN = "band"
KEY_COLUMN = "select_key"
LOW, HIGH = "low", "high"
POOL = "pool"


class BandError(ValueError):
    """A pool document whose weight cannot be read."""


def band_value(doc: Document, config: BandSelectConfig) -> float | None:
    """The document's value in ``config.column``, or None when it has none (null, NaN, ±inf)."""
    value = doc.get(config.column)
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def band_weight(doc: Document, config: BandSelectConfig) -> int:
    """A pool document's weight as an integer (tokens, characters or 1): histogram sums stay exact."""
    if config.weight == "docs":
        return 1
    if config.weight == "chars":
        return len(doc.get("text") or "")
    value = doc.get(config.tokens_field)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise BandError(f"field {config.tokens_field!r} is not a token count: {value!r}")
    return int(value)


def value_of_bits(bits: int) -> float | None:
    """The float64 whose ``order_bits`` are ``bits`` (None for the keep-all / keep-none sentinels)."""
    if not 0 < bits < 1 << 64:
        return None
    raw = bits & ~(1 << 63) if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    return struct.unpack("<d", struct.pack("<Q", raw))[0]


class _PoolDoFn(beam.DoFn):
    """Documents on to ``kept`` (main), pool elements ``(low|high, (bits, tiebreak, weight))`` to
    ``pool``; a pool document whose weight cannot be read is rejected."""

    def __init__(self, config: BandSelectConfig, seed: int):
        self.config = config
        self.seed = seed

    def process(self, doc: Document) -> Iterator[Any]:
        value = band_value(doc, self.config)
        if value is not None:
            try:
                weight = band_weight(doc, self.config)
            except BandError as error:
                yield rejected(doc, STAGE, error)
                return
            element = (order_bits(value), band_tiebreak(str(doc["id"]), self.seed), weight)
            yield pvalue.TaggedOutput(POOL, (LOW, element))
            yield pvalue.TaggedOutput(POOL, (HIGH, element))
        yield doc


def _starts(total: int, config: BandSelectConfig) -> Iterator[tuple[str, Narrowing]]:
    low_budget, high_budget = band_budgets(float(total), config.lower_quantile, config.upper_quantile)
    yield LOW, Narrowing.start(float(total), low_budget)
    yield HIGH, Narrowing.start(float(total), high_budget)


class _ApplyDoFn(beam.DoFn):
    """Label every document against the cuts; tag it, or keep / remove it."""

    def __init__(self, config: BandSelectConfig, seed: int):
        self.config = config
        self.seed = seed
        self._counters: dict[str, Any] = {}

    def _count(self, name: str) -> None:
        if name not in self._counters:
            self._counters[name] = counter(f"select:band_{name}")
        self._counters[name].inc()

    def process(self, doc: Document, cuts: dict[str, CutPoint]) -> Iterator[Any]:
        config = self.config
        value = band_value(doc, config)
        met = all(meets(doc, condition) for condition in config.require)
        decision = band_decision(value, band_tiebreak(str(doc["id"]), self.seed), BandCuts(cuts[LOW], cuts[HIGH]), met)
        self._count(decision.label)
        if decision.selected:
            self._count("selected")
        out = {**doc, config.tag_column: decision.selected, LABEL_COLUMN: decision.label, KEY_COLUMN: value}
        if config.tag_only or decision.selected:
            yield out
        else:
            detail = json.dumps({"band": decision.label, config.column: value}, sort_keys=True)
            yield removed({**out, "detail": detail}, FILTER_REASON)


def _tally(doc: Document, config: BandSelectConfig) -> tuple[tuple[str, bool], tuple[int, int]]:
    """((label, selected), (documents, pool weight)) of one labelled document."""
    label = doc[LABEL_COLUMN]
    weight = band_weight(doc, config) if label != "missing" else 0
    return (label, bool(doc[config.tag_column])), (1, weight)


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    documents = weight = 0
    for d, w in pairs:
        documents += d
        weight += w
    return documents, weight


def _summary(
    tallies: list[tuple[tuple[str, bool], tuple[int, int]]],
    total: int,
    cuts: dict[str, CutPoint],
    config: BandSelectConfig,
) -> dict[str, Any]:
    documents: dict[str, int] = {}
    weights: dict[str, int] = {}
    selected_documents = selected_weight = 0
    for (label, selected), (n, weight) in tallies:
        documents[label] = documents.get(label, 0) + n
        weights[label] = weights.get(label, 0) + weight
        if selected:
            selected_documents += n
            selected_weight += weight
    return {
        "section": "selection",
        "group": "",
        "rule": "band",
        "column": config.column,
        "weight": config.weight,
        "lower_quantile": config.lower_quantile,
        "upper_quantile": config.upper_quantile,
        "tag_only": config.tag_only,
        "pool_weight": total,
        # The column's values where the band starts and where the part above it starts.
        "low_value": value_of_bits(cuts[LOW].key_bits),
        "high_value": value_of_bits(cuts[HIGH].key_bits),
        "documents": dict(sorted(documents.items())),
        "band_weight": weights.get("band", 0),
        "band_share": weights.get("band", 0) / total if total else None,
        "selected_documents": selected_documents,
        "selected_weight": selected_weight,
    }


class BandSelect(beam.PTransform):
    """``select.rule: band`` over documents; ``{"kept", "removed", "rejected", "summary"}``."""

    def __init__(self, config: BandSelectConfig, seed: int):
        super().__init__()
        self.config = config
        self.seed = seed

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        config, seed = self.config, self.seed
        pooled = docs | "Pool" >> beam.ParDo(_PoolDoFn(config, seed)).with_outputs(POOL, REJECTED, main=KEPT)
        elements = pooled[POOL]
        total = (
            elements
            | "LowOnly" >> beam.Filter(lambda item: item[0] == LOW)
            | "Weight" >> beam.Map(lambda item: item[1][2])
            | "PoolWeight" >> beam.CombineGlobally(sum)
        )
        starts = total | "Starts" >> beam.FlatMap(_starts, config)
        cuts = (elements, starts) | "Cut" >> BudgetCuts(STAGE)
        # Each side input is a copy used only as one (see winnow.beam.cuts on Beam 2.77's local runner).
        apply_cuts = pvalue.AsDict(side_copy(cuts, "CutsApply"))
        labelled = pooled[KEPT] | "Apply" >> beam.ParDo(_ApplyDoFn(config, seed), apply_cuts).with_outputs(
            REMOVED, main=KEPT
        )
        every = (labelled[KEPT], labelled[REMOVED]) | "Labelled" >> beam.Flatten()
        summary = (
            every
            | "Tally" >> beam.Map(_tally, config)
            | "SumTally" >> beam.CombinePerKey(_sum_pairs)
            | "AllTallies" >> beam.combiners.ToList()
            | "Summary"
            >> beam.Map(
                _summary,
                pvalue.AsSingleton(side_copy(total, "TotalSide")),
                pvalue.AsDict(side_copy(cuts, "CutsSummary")),
                config,
            )
        )
        return {KEPT: labelled[KEPT], REMOVED: labelled[REMOVED], REJECTED: pooled[REJECTED], SUMMARY: summary}


def band_columns(config: BandSelectConfig) -> tuple[pa.Field, ...]:
    """The columns rule ``band`` adds to kept documents."""
    return (pa.field(config.tag_column, pa.bool_()), pa.field(LABEL_COLUMN, pa.string()))
