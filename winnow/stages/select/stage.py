"""Stage ``select``: keep documents by their scores (math in winnow.core.budget).

Rules (``SelectConfig.rule``):

* ``threshold``: keep metric ≥ threshold; one ParDo, no global state.
* ``top_k``: sort by metric, descending; keep the shortest prefix whose weight (characters or
  tokens) reaches the budget (docs/budgets.md#tokens). PreSelect is ``top_k`` on ``preselect_score`` with
  ``fraction: 0.1`` of characters (docs/preselect.md#scoring-and-selection).
* ``gumbel_top_k``: key = z/τ + Gumbel(u(doc_id)), z from the pool's mean and standard
  deviation (docs/qurating.md#selection); then the same budget cut.
* ``ingenious``: representative subsets by facility location over embeddings, per partition,
  drawn in rounds that become ``phase`` shard sets (docs/ingenious.md; the Beam wiring is in
  ``winnow.stages.select.ingenious_stage``).
* ``band``: SALT's difficulty band between two weighted quantiles of one column, tagged
  (``salt_selected``) or kept (docs/salt.md; the Beam wiring is in ``winnow.stages.select.band_stage``).

Nothing global is held in one process. The mean/std is a combiner with exact sums; the budget
(``fraction`` × pool weight, or ``budget``; per group ⌊T_d/T·B⌋ with ``balance_by``) comes from
a per-group sum; the cut (``winnow.beam.cuts.BudgetCuts``, shared with ``mix``) is found
in three passes over (key bits, weight) pairs: a 2^16-bin weight histogram of the top key bits,
a 2^24-bin histogram inside the boundary bin, then the few documents of that last bin (keys
equal to ~9 significant digits) are cut exactly by (key, H64(doc_id)). When that bin holds a
single key value (ties: integer ratings such as DataMan's), the same histogram cut runs on the
H64 tiebreaks instead, so a tie spanning much of the pool is never collected in one place. The
result is the exact docs/budgets.md#the-budget-cut cut: selected weight ≥ budget, and without the last kept document it
would be below (overshoot < one document). Dropped documents go to ``removed`` as
``select:<rule>``; kept ones get ``select_key``, the key they were ranked by.
Besides the three stage outputs, ``summary`` holds one record per group: pool weight, budget,
selected weight and overshoot.

DataMan's "Sample-with-DataMan" (docs/dataman.md#selection) adds: ``where`` (keep candidates whose columns meet
every condition, e.g. ``overall_score == 5``; others are removed as ``select:where`` and the
token totals are counted after it); ``balance_by`` as a list (hierarchical budgets: ⌊T_s/T·B⌋ per
source, then ⌊T_{s,d}/T_s·B_s⌋ per domain inside it); rule ``uniform`` (the key is a hash draw
u(doc_id), i.e. a random permutation, with no metric at all); and ``upsample`` (a group whose
candidates fall short of its budget gets repeats drawn with replacement from its documents). The
draws are exponential races: each document carries a rate-1 Poisson process of arrival times
from its own hashes, and the merged arrivals, earliest first, are i.i.d. uniform draws from the
group; the earliest arrivals whose tokens reach the shortfall are cut by the same histogram
machinery (overshoot under one document) and come out as copies with ``epoch`` 1, 2, …
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from winnow.beam.combiners import MeanStdFn
from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, field_value, rejected, removed
from winnow.beam.cuts import BudgetCuts
from winnow.core.budget import CutPoint, Narrowing, group_budgets, order_bits, selection_key
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64, uniform
from winnow.stages.select.band_stage import BandSelect, band_columns
from winnow.stages.select.config import SelectConfig
from winnow.stages.select.ingenious_stage import COLUMNS as INGENIOUS_COLUMNS
from winnow.stages.select.ingenious_stage import IngeniousSelect
from winnow.stages.select.where import WhereCondition

STAGE = "select"
SUMMARY = "summary"
VALID = "valid"
KEY_COLUMN = "select_key"
EPOCH_COLUMN = "epoch"
WHERE_REASON = "select:where"


class SelectError(ValueError):
    """A document this rule cannot rank (missing score, non-finite metric, bad token count)."""


def doc_metric(doc: Document, config: SelectConfig) -> float:
    """Sum of the configured score columns, negated for ``direction: bottom`` (0 for ``uniform`` and
    ``ingenious``, which rank by no score, and for ``band``, which reads its own column)."""
    if config.rule in ("uniform", "ingenious", "band"):
        return 0.0
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


def doc_cell(doc: Document, config: SelectConfig) -> tuple[str, ...]:
    """The ``balance_by`` values of a document (missing: ""); () when not balancing."""
    return tuple("" if (v := field_value(doc, f)) is None else str(v) for f in config.balance_fields)


def cell_name(cell: tuple[str, ...]) -> str:
    """A group's key: the value itself for one field (as before lists existed), JSON for several."""
    if not cell:
        return ""
    return cell[0] if len(cell) == 1 else json.dumps(list(cell), ensure_ascii=False)


def doc_group(doc: Document, config: SelectConfig) -> str:
    return cell_name(doc_cell(doc, config))


def meets(doc: Document, condition: WhereCondition) -> bool:
    """Whether ``doc`` meets one ``where`` condition; a missing column is an error, not a silent no."""
    value = field_value(doc, condition.field)
    if value is None:
        raise SelectError(f"missing column {condition.field!r} for `where`")
    try:
        return condition.holds(value)
    except (TypeError, ValueError) as error:
        raise SelectError(f"column {condition.field!r} = {value!r} is not a number for `{condition.op}`") from error


def doc_key(doc: Document, config: SelectConfig, stats: tuple[float, float] | None, seed: int) -> float:
    if config.rule == "uniform":  # a constant metric: the order is a random permutation by hash
        return uniform(str(doc["id"]), "select:uniform", seed)
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


# --- budgets ------------------------------------------------------------------------------------


def hierarchical_budgets(totals: dict[tuple[str, ...], int], budget: float) -> dict[tuple[str, ...], float]:
    """Budgets per cell, level by level: ⌊T_s/T·B⌋ for the first field, then ⌊T_{s,d}/T_s·B_s⌋
    inside each (docs/dataman.md#selection ``multi_domain``); one level is QuRating's ⌊T_d/T·B⌋
    (docs/qurating.md#domain-balancing)."""
    depth = max((len(cell) for cell in totals), default=0)
    budgets: dict[tuple[str, ...], float] = {(): float(budget)}
    for level in range(1, depth + 1):
        prefix_totals: dict[tuple[str, ...], int] = {}
        for cell, total in totals.items():
            prefix_totals[cell[:level]] = prefix_totals.get(cell[:level], 0) + total
        parents: dict[tuple[str, ...], dict[str, int]] = {}
        for prefix, total in prefix_totals.items():
            parents.setdefault(prefix[:-1], {})[prefix[-1]] = total
        next_budgets = {}
        for parent, children in parents.items():
            for value, share in group_budgets(children, budgets[parent]).items():
                next_budgets[(*parent, value)] = share
        budgets = next_budgets
    return {cell: budgets[cell] for cell in totals}


def _budgets(weights: dict[str, int], config: SelectConfig, cells: dict[str, tuple[str, ...]]) -> dict[str, float]:
    grand = sum(weights.values())
    budget = float(config.budget) if config.budget is not None else float(config.fraction or 0) * grand
    if not config.balance_fields:
        return dict.fromkeys(weights, budget)
    by_cell = hierarchical_budgets({cells[g]: w for g, w in weights.items()}, budget)
    return {group: by_cell[cells[group]] for group in weights}


# --- DoFns and combiners ---------------------------------------------------------------------


class PrepareDoFn(beam.DoFn):
    """Routes documents whose metric, weight or ``where`` columns cannot be read to ``rejected``,
    and those failing ``where`` to ``removed``."""

    def __init__(self, config: SelectConfig):
        self.config = config
        self._where = counter(WHERE_REASON)

    def process(self, doc: Document) -> Iterator[Any]:
        try:
            doc_metric(doc, self.config)
            if self.config.rule != "band":  # the band weighs only documents in its pool, by its own rule
                doc_weight(doc, self.config)
            candidate = all(meets(doc, condition) for condition in self.config.where)
        except (SelectError, TypeError, ValueError) as error:
            yield rejected(doc, STAGE, error)
            return
        if not candidate:
            self._where.inc()
            yield removed(doc, WHERE_REASON)
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


class KeyDoFn(beam.DoFn):
    """(group, (key bits, tiebreak, weight)) per document: all the cut needs."""

    def __init__(self, config: SelectConfig, seed: int):
        self.config = config
        self.seed = seed

    def process(self, doc: Document, stats: tuple[float, float] | None = None) -> Iterator[Any]:
        key = doc_key(doc, self.config, stats, self.seed)
        yield doc_group(doc, self.config), (order_bits(key), tiebreak(doc, self.seed), doc_weight(doc, self.config))


def group_cell(group: str, config: SelectConfig) -> tuple[str, ...]:
    """Inverse of ``cell_name``."""
    fields = config.balance_fields
    if not fields:
        return ()
    return (group,) if len(fields) == 1 else tuple(json.loads(group))


def _plan(totals: list[tuple[str, int]], config: SelectConfig) -> Iterator[Any]:
    """(group, (pool weight, budget)) for every group, from all groups' totals (a small list)."""
    weights = dict(totals)
    budgets = _budgets(weights, config, {group: group_cell(group, config) for group in weights})
    budget_counter = counter("select:budget")
    for group in sorted(weights):
        budget_counter.inc(math.ceil(budgets[group]))
        yield group, (weights[group], budgets[group])


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
            out = {**doc, KEY_COLUMN: key}
            if self.config.upsample:
                out[EPOCH_COLUMN] = 0
            yield out
        else:
            self._removed.inc()
            yield removed(doc, f"select:{self.config.rule}")


# --- upsampling (docs/dataman.md#selection step 4) -------------------------------------------------------------


def upsample_horizon(shortfall: float, pool_weight: int) -> float:
    """Arrival time up to which each document's draws are generated.

    The cut needs about ``shortfall / pool_weight`` time units of the merged race; twice that plus
    4 makes running out (a Poisson count far below its mean) negligible even for a single document.
    """
    return 2.0 * shortfall / max(pool_weight, 1) + 4.0


def arrivals(doc_id: str, horizon: float, seed: int) -> Iterator[tuple[int, float]]:
    """(draw number k ≥ 1, time) of a rate-1 Poisson process from the document's own hashes."""
    time, k = 0.0, 0
    while True:
        k += 1
        time += -math.log(uniform(doc_id, f"select:upsample:{k}", seed))
        if time > horizon:
            return
        yield k, time


def _repeat_tiebreak(doc_id: str, k: int, seed: int) -> int:
    return h64(f"{doc_id}\x1f{k}", "select:upsample", seed)


class RepeatDrawsDoFn(beam.DoFn):
    """Every draw a short group's document could contribute: (group, (key bits, tiebreak, weight))."""

    def __init__(self, config: SelectConfig, seed: int):
        self.config = config
        self.seed = seed

    def process(self, doc: Document, short: dict[str, tuple[int, float]]) -> Iterator[Any]:
        group = doc_group(doc, self.config)
        if group not in short:
            return
        pool, shortfall = short[group]
        weight, doc_id = doc_weight(doc, self.config), str(doc["id"])
        for k, time in arrivals(doc_id, upsample_horizon(shortfall, pool), self.seed):
            yield group, (order_bits(-time), _repeat_tiebreak(doc_id, k, self.seed), weight)


class EmitRepeatsDoFn(beam.DoFn):
    """Copies of a document for its draws inside the cut, with ``epoch`` 1, 2, …"""

    def __init__(self, config: SelectConfig, seed: int):
        self.config = config
        self.seed = seed
        self._repeats = counter("select:repeats")
        self._repeat_weight = counter("select:repeated_weight")

    def process(
        self,
        doc: Document,
        short: dict[str, tuple[int, float]],
        cuts: dict[str, CutPoint],
        stats: tuple[float, float] | None = None,
    ) -> Iterator[Document]:
        group = doc_group(doc, self.config)
        if group not in short or group not in cuts:
            return
        pool, shortfall = short[group]
        doc_id, cut = str(doc["id"]), cuts[group]
        key = doc_key(doc, self.config, stats, self.seed)
        for k, time in arrivals(doc_id, upsample_horizon(shortfall, pool), self.seed):
            if not cut.keeps(order_bits(-time), _repeat_tiebreak(doc_id, k, self.seed)):
                break  # a document's draws are in time order: the kept ones are a prefix
            self._repeats.inc()
            self._repeat_weight.inc(doc_weight(doc, self.config))
            yield {**doc, KEY_COLUMN: key, EPOCH_COLUMN: k}


def _short_groups(plan: list[tuple[str, tuple[int, float]]]) -> Iterator[tuple[str, tuple[int, float]]]:
    """(group, (pool weight, shortfall)) of the groups whose pool is below their budget."""
    for group, (total, budget) in plan:
        if 0 < total < budget:
            yield group, (total, budget - total)


def _repeat_start(item: tuple[str, int], short: dict[str, tuple[int, float]]) -> tuple[str, Narrowing]:
    """The budget cut over a group's draws: all generated draws' weight, cut at its shortfall."""
    group, draw_weight = item
    return group, Narrowing.start(float(draw_weight), short[group][1])


def _summary(
    item: tuple[str, tuple[int, float]],
    kept: dict[str, int],
    repeated: dict[str, int],
    config: SelectConfig,
) -> dict:
    group, (pool_weight, budget) = item
    selected = kept.get(group, 0)
    record = {
        "section": "selection",
        "group": group,
        "rule": config.rule,
        "weight": config.weight,
        "pool_weight": pool_weight,
        "budget": budget,
        "selected_weight": selected,
        "overshoot": selected - budget,
    }
    if config.balance_fields:
        record["cell"] = dict(zip(config.balance_fields, group_cell(group, config), strict=True))
    if config.upsample:
        shortfall = max(budget - pool_weight, 0.0)
        record["repeated_weight"] = repeated.get(group, 0)
        record["shortfall"] = shortfall
        record["overshoot"] = selected + repeated.get(group, 0) - budget
    return record


class Select(beam.PTransform):
    """Stage ``select`` (see the module docstring); ``seed`` is the run's seed. ``tokenizer`` counts
    tokens where ``tokens_field`` is missing (rule ``ingenious`` only)."""

    def __init__(self, config: SelectConfig, seed: int = 0, tokenizer: TokenizerConfig | None = None):
        super().__init__()
        self.config = config
        self.seed = seed
        self.tokenizer = tokenizer

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        config, seed = self.config, self.seed
        prepared = docs | "Prepare" >> beam.ParDo(PrepareDoFn(config)).with_outputs(REJECTED, REMOVED, main=VALID)
        valid = prepared[VALID]
        if config.rule == "threshold":
            out = valid | "Threshold" >> beam.ParDo(ThresholdDoFn(config)).with_outputs(REMOVED, main=KEPT)
            removed_all = (out[REMOVED], prepared[REMOVED]) | "AllRemoved" >> beam.Flatten()
            return {KEPT: out[KEPT], REMOVED: removed_all, REJECTED: prepared[REJECTED]}
        if config.rule == "band":
            out = valid | "Band" >> BandSelect(config.band, seed)
            return {
                KEPT: out[KEPT],
                REMOVED: (out[REMOVED], prepared[REMOVED]) | "AllRemoved" >> beam.Flatten(),
                REJECTED: (out[REJECTED], prepared[REJECTED]) | "AllRejected" >> beam.Flatten(),
                SUMMARY: out[SUMMARY],
            }
        if config.rule == "ingenious":
            budget = float(config.budget) if config.budget is not None else None
            out = valid | "Ingenious" >> IngeniousSelect(config.ingenious, config.tokens_field, self.tokenizer, budget)
            return {
                KEPT: out[KEPT],
                REMOVED: (out[REMOVED], prepared[REMOVED]) | "AllRemoved" >> beam.Flatten(),
                REJECTED: (out[REJECTED], prepared[REJECTED]) | "AllRejected" >> beam.Flatten(),
                SUMMARY: out[SUMMARY],
            }

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
        plan = totals | "AllTotals" >> beam.combiners.ToList() | "Plan" >> beam.FlatMap(_plan, config)
        starts = plan | "Start" >> beam.MapTuple(lambda group, tb: (group, Narrowing.start(float(tb[0]), tb[1])))
        cuts = (keyed, starts) | "Cut" >> BudgetCuts(STAGE)
        applied = valid | "Apply" >> beam.ParDo(
            ApplyCutDoFn(config, seed), pvalue.AsDict(cuts), stats=stats
        ).with_outputs(REMOVED, main=KEPT)
        kept_docs = applied[KEPT]
        repeated_weight = docs.pipeline | "NoRepeats" >> beam.Create([])
        if config.upsample:
            short = plan | "PlanList" >> beam.combiners.ToList() | "Short" >> beam.FlatMap(_short_groups)
            draws = valid | "RepeatDraws" >> beam.ParDo(RepeatDrawsDoFn(config, seed), pvalue.AsDict(short))
            draw_totals = (
                draws
                | "DrawWeight" >> beam.MapTuple(lambda group, element: (group, element[2]))
                | "SumDrawWeight" >> beam.CombinePerKey(sum)
            )
            repeat_starts = draw_totals | "RepeatStart" >> beam.Map(_repeat_start, pvalue.AsDict(short))
            repeat_cuts = (draws, repeat_starts) | "RepeatCut" >> BudgetCuts(STAGE)
            repeats = valid | "Repeats" >> beam.ParDo(
                EmitRepeatsDoFn(config, seed), pvalue.AsDict(short), pvalue.AsDict(repeat_cuts), stats=stats
            )
            kept_docs = (kept_docs, repeats) | "KeptAndRepeats" >> beam.Flatten()
            repeated_weight = (
                repeats
                | "RepeatWeight" >> beam.Map(lambda doc: (doc_group(doc, config), doc_weight(doc, config)))
                | "SumRepeats" >> beam.CombinePerKey(sum)
            )
        kept_weight = (
            applied[KEPT]
            | "KeptWeight" >> beam.Map(lambda doc: (doc_group(doc, config), doc_weight(doc, config)))
            | "SumKept" >> beam.CombinePerKey(sum)
        )
        summary = plan | "Summary" >> beam.Map(
            _summary, pvalue.AsDict(kept_weight), pvalue.AsDict(repeated_weight), config
        )
        removed_all = (applied[REMOVED], prepared[REMOVED]) | "AllRemoved" >> beam.Flatten()
        return {KEPT: kept_docs, REMOVED: removed_all, REJECTED: prepared[REJECTED], SUMMARY: summary}


def config_columns(config: SelectConfig) -> tuple[pa.Field, ...]:
    """Rule ``ingenious`` adds its columns and the round's ``phase`` (docs/ingenious.md); rule ``band`` its
    tag and label (docs/salt.md)."""
    if config.rule == "band":
        return band_columns(config.band)
    return INGENIOUS_COLUMNS if config.rule == "ingenious" else ()


SPEC = StageSpec(
    name=STAGE,
    config=SelectConfig,
    transform=Select,
    # ``upsample: true``: 0 for a selected document, 1, 2, … for its repeats; rule ``ingenious``:
    # 0 for a document's first round, 1, 2, … for the later rounds that drew it again.
    columns=(pa.field("select_key", pa.float64()), pa.field("epoch", pa.int32())),
    config_columns=config_columns,
    needs=("seed", "tokenizer"),
)
