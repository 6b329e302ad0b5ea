"""Stage ``select``: keep documents by their scores (math in winnow.scorers.selection).

Rules (``SelectConfig.rule``):

* ``threshold``: keep metric ≥ threshold; one ParDo, no global state.
* ``top_k``: sort by metric, descending; keep the shortest prefix whose weight (characters or
  tokens) reaches the budget (METHODS §0). PreSelect is ``top_k`` on ``preselect_score`` with
  ``fraction: 0.1`` of characters (§3.4).
* ``gumbel_top_k``: key = z/τ + Gumbel(u(doc_id)), z from the pool's mean and standard
  deviation (§1.6); then the same budget cut.

Nothing global is held in one process. The mean/std is a combiner with exact sums; the budget
(``fraction`` × pool weight, or ``budget``; per group ⌊T_d/T·B⌋ with ``balance_by``) comes from
a per-group sum; the cut is found in three passes over (key bits, weight) pairs: a 2^16-bin
weight histogram of the top key bits, a 2^24-bin histogram inside the boundary bin, then the
few documents of that last bin (keys equal to ~9 significant digits) are cut exactly by
(key, H64(doc_id)). The result is the exact §0 cut: selected weight ≥ budget, and without the
last kept document it would be below (overshoot < one document). Dropped documents go to
``removed`` as ``select:<rule>``; kept ones get ``select_key``, the key they were ranked by.
Besides the three stage outputs, ``summary`` holds one record per group: pool weight, budget,
selected weight and overshoot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue

from winnow.schemas.score import SelectConfig
from winnow.scorers.selection import (
    HISTOGRAM_LEVELS,
    CutPoint,
    MeanStd,
    Narrowing,
    group_budgets,
    h64,
    histogram_bin,
    order_bits,
    selection_key,
)
from winnow.transforms.base import KEPT, REJECTED, REMOVED, Document, counter, rejected, removed

STAGE = "select"
SUMMARY = "summary"
VALID = "valid"
KEY_COLUMN = "select_key"


class SelectError(ValueError):
    """A document this rule cannot rank (missing score, non-finite metric, bad token count)."""


def doc_metric(doc: Document, config: SelectConfig) -> float:
    """Sum of the configured score columns, negated for ``direction: bottom``."""
    total = 0.0
    for column in config.columns:
        value = doc.get(column)
        if value is None:
            raise SelectError(f"missing score column {column!r}")
        total += float(value)
    if not math.isfinite(total):
        raise SelectError(f"non-finite metric {total}")
    return -total if config.direction == "bottom" else total


def doc_weight(doc: Document, config: SelectConfig) -> int:
    if config.weight == "chars":
        return len(doc.get("text") or "")
    value = doc.get(config.tokens_field)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise SelectError(f"field {config.tokens_field!r} is not a token count: {value!r}")
    return int(value)


def doc_group(doc: Document, config: SelectConfig) -> str:
    """The ``balance_by`` value (top level, else in ``metadata``); one group when not balancing."""
    field = config.balance_by
    if field is None:
        return ""
    if field in doc and doc[field] is not None:
        return str(doc[field])
    metadata = doc.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = None
    if isinstance(metadata, dict) and metadata.get(field) is not None:
        return str(metadata[field])
    return ""


def doc_key(doc: Document, config: SelectConfig, stats: tuple[float, float] | None, seed: int) -> float:
    metric = doc_metric(doc, config)
    if config.rule != "gumbel_top_k":
        return metric
    assert stats is not None
    mean, std = stats
    return selection_key(
        metric, str(doc["id"]), mean=mean, std=std, temperature=config.temperature, seed=seed, purpose="select:gumbel"
    )


def tiebreak(doc: Document, seed: int) -> int:
    return h64(str(doc["id"]), "select:tiebreak", seed)


# --- DoFns and combiners ---------------------------------------------------------------------


class PrepareDoFn(beam.DoFn):
    """Routes documents whose metric or weight cannot be computed to ``rejected``."""

    def __init__(self, config: SelectConfig):
        self.config = config

    def process(self, doc: Document) -> Iterator[Any]:
        try:
            doc_metric(doc, self.config)
            doc_weight(doc, self.config)
        except (SelectError, TypeError, ValueError) as error:
            yield rejected(doc, STAGE, error)
            return
        yield doc


class ThresholdDoFn(beam.DoFn):
    def __init__(self, config: SelectConfig):
        self.config = config
        self._kept = counter("select:kept")
        self._removed = counter("select:removed")

    def process(self, doc: Document) -> Iterator[Any]:
        metric = doc_metric(doc, self.config)
        if metric >= float(self.config.threshold):  # type: ignore[arg-type]
            self._kept.inc()
            yield {**doc, KEY_COLUMN: metric}
        else:
            self._removed.inc()
            yield removed(doc, f"select:{self.config.rule}")


class MeanStdFn(beam.CombineFn):
    """Pool mean and standard deviation of the metric (exact sums: independent of merge order)."""

    def create_accumulator(self) -> MeanStd:
        return MeanStd()

    def add_input(self, acc: MeanStd, value: float) -> MeanStd:
        return acc.add(value)

    def merge_accumulators(self, accs: Iterable[MeanStd]) -> MeanStd:
        merged = MeanStd()
        for acc in accs:
            merged = merged.merge(acc)
        return merged

    def extract_output(self, acc: MeanStd) -> tuple[float, float]:
        return (acc.mean, acc.std)


class HistogramFn(beam.CombineFn):
    """Weight per bin, as a sparse dict (integer weights: exact sums)."""

    def create_accumulator(self) -> dict[int, int]:
        return {}

    def add_input(self, acc: dict[int, int], item: tuple[int, int]) -> dict[int, int]:
        bin_, weight = item
        acc[bin_] = acc.get(bin_, 0) + weight
        return acc

    def merge_accumulators(self, accs: Iterable[dict[int, int]]) -> dict[int, int]:
        accs = iter(accs)
        merged = dict(next(accs, {}))
        for acc in accs:
            for bin_, weight in acc.items():
                merged[bin_] = merged.get(bin_, 0) + weight
        return merged

    def extract_output(self, acc: dict[int, int]) -> dict[int, int]:
        return acc


class KeyDoFn(beam.DoFn):
    """(group, (key bits, tiebreak, weight)) per document: all the cut needs."""

    def __init__(self, config: SelectConfig, seed: int):
        self.config = config
        self.seed = seed

    def process(self, doc: Document, stats: tuple[float, float] | None = None) -> Iterator[Any]:
        key = doc_key(doc, self.config, stats, self.seed)
        yield doc_group(doc, self.config), (order_bits(key), tiebreak(doc, self.seed), doc_weight(doc, self.config))


def _in_region(item: tuple[str, tuple[int, int, int]], level: int, states: dict[str, Narrowing]) -> Iterator[Any]:
    group, (key_bits, _, weight) = item
    state = states.get(group)
    if state is not None and state.contains(key_bits):
        yield group, (histogram_bin(key_bits, level), weight)


def _members(item: tuple[str, tuple[int, int, int]], states: dict[str, Narrowing]) -> Iterator[Any]:
    group, element = item
    state = states.get(group)
    if state is not None and state.contains(element[0]):
        yield group, element


def _start_states(totals: list[tuple[str, int]], config: SelectConfig) -> list[tuple[str, Narrowing]]:
    by_group = dict(totals)
    budgets = _budgets(by_group, config)
    budget_counter = counter("select:budget")
    states = []
    for group in sorted(by_group):
        budget_counter.inc(math.ceil(budgets[group]))
        states.append((group, Narrowing.start(float(by_group[group]), budgets[group])))
    return states


def _advance(item: tuple[str, Narrowing], histograms: dict[str, dict[int, int]]) -> tuple[str, Narrowing]:
    group, state = item
    return group, state.advance(histograms.get(group, {}))


def _finish(item: tuple[str, Narrowing], members: dict[str, list[tuple[int, int, int]]]) -> tuple[str, CutPoint]:
    group, state = item
    return group, state.finish(members.get(group, []))


class ApplyCutDoFn(beam.DoFn):
    def __init__(self, config: SelectConfig, seed: int):
        self.config = config
        self.seed = seed
        self._kept = counter("select:kept")
        self._removed = counter("select:removed")
        self._kept_weight = counter("select:selected_weight")

    def process(
        self, doc: Document, cuts: dict[str, CutPoint], stats: tuple[float, float] | None = None
    ) -> Iterator[Any]:
        key = doc_key(doc, self.config, stats, self.seed)
        group = doc_group(doc, self.config)
        if cuts[group].keeps(order_bits(key), tiebreak(doc, self.seed)):
            self._kept.inc()
            self._kept_weight.inc(doc_weight(doc, self.config))
            yield {**doc, KEY_COLUMN: key}
        else:
            self._removed.inc()
            yield removed(doc, f"select:{self.config.rule}")


def _budgets(weights: dict[str, int], config: SelectConfig) -> dict[str, float]:
    grand = sum(weights.values())
    budget = float(config.budget) if config.budget is not None else float(config.fraction or 0) * grand
    return group_budgets(weights, budget) if config.balance_by is not None else {"": budget}


def _summary(item: tuple[str, int], weights: dict[str, int], kept: dict[str, int], config: SelectConfig) -> dict:
    group, pool_weight = item
    budget = _budgets(weights, config)[group]
    selected = kept.get(group, 0)
    return {
        "group": group,
        "rule": config.rule,
        "weight": config.weight,
        "pool_weight": pool_weight,
        "budget": budget,
        "selected_weight": selected,
        "overshoot": selected - budget,
    }


class Select(beam.PTransform):
    """Stage ``select`` (see the module docstring); ``seed`` is the run's seed."""

    def __init__(self, config: SelectConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = seed

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        config, seed = self.config, self.seed
        prepared = docs | "Prepare" >> beam.ParDo(PrepareDoFn(config)).with_outputs(REJECTED, main=VALID)
        valid = prepared[VALID]
        if config.rule == "threshold":
            out = valid | "Threshold" >> beam.ParDo(ThresholdDoFn(config)).with_outputs(REMOVED, main=KEPT)
            return {KEPT: out[KEPT], REMOVED: out[REMOVED], REJECTED: prepared[REJECTED]}

        stats = None
        if config.rule == "gumbel_top_k":
            stats = pvalue.AsSingleton(
                valid | "Metric" >> beam.Map(doc_metric, config) | "MeanStd" >> beam.CombineGlobally(MeanStdFn())
            )
        keyed = valid | "Keys" >> beam.ParDo(KeyDoFn(config, seed), stats=stats)
        totals = (
            keyed
            | "GroupWeight" >> beam.MapTuple(lambda group, element: (group, element[2]))
            | "SumWeight" >> beam.CombinePerKey(sum)
        )
        states = totals | "AllTotals" >> beam.combiners.ToList() | "Start" >> beam.FlatMap(_start_states, config)
        for level in range(len(HISTOGRAM_LEVELS)):
            histograms = (
                keyed
                | f"InRegion{level}" >> beam.FlatMap(_in_region, level, pvalue.AsDict(states))
                | f"Histogram{level}" >> beam.CombinePerKey(HistogramFn())
            )
            states = states | f"Narrow{level}" >> beam.Map(_advance, pvalue.AsDict(histograms))
        members = (
            keyed
            | "InLastBin" >> beam.FlatMap(_members, pvalue.AsDict(states))
            | "GroupLastBin" >> beam.GroupByKey()
            | "AsLists" >> beam.MapTuple(lambda group, items: (group, list(items)))
        )
        cuts = states | "Cut" >> beam.Map(_finish, pvalue.AsDict(members))
        applied = valid | "Apply" >> beam.ParDo(
            ApplyCutDoFn(config, seed), pvalue.AsDict(cuts), stats=stats
        ).with_outputs(REMOVED, main=KEPT)
        kept_weight = (
            applied[KEPT]
            | "KeptWeight" >> beam.Map(lambda doc: (doc_group(doc, config), doc_weight(doc, config)))
            | "SumKept" >> beam.CombinePerKey(sum)
        )
        summary = totals | "Summary" >> beam.Map(_summary, pvalue.AsDict(totals), pvalue.AsDict(kept_weight), config)
        return {KEPT: applied[KEPT], REMOVED: applied[REMOVED], REJECTED: prepared[REJECTED], SUMMARY: summary}
