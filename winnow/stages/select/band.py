"""``select.rule: band``: keep the documents whose column lies between two weighted quantiles, Beam-free.

SALT selects sequences that are hard for the small LM but not hopeless (docs/salt.md). winnow cuts
that as a band on a difficulty column: with documents ordered by (value, H64(doc_id)) and weighted
by tokens, the band holds the weight between the ``lower`` and ``upper`` quantiles of the pool.

Both ends are budget cuts of the shared selection primitive (``winnow.scorers.selection``), taken
from the top: ``low`` keeps the heaviest-valued ``(1 − lower)·W`` of the weight, ``high`` keeps
``(1 − upper)·W``; the band is "kept by ``low`` and not by ``high``". Each cut includes the document
that crosses its budget, so the band's weight equals ``(upper − lower)·W`` within one document's
weight, and the same histogram machinery that finds a budget cut in Beam finds both ends (the
Beam wiring comes later; ``exact_band_cuts`` is the sorting reference). Documents without a value
(nothing scored) are outside the pool and never selected. ``require`` conditions are checked after
the cut: they only remove documents from the band and never move the quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from winnow.core.budget import CutPoint, exact_cut, order_bits
from winnow.core.hashing import h64
from winnow.stages.select.band_config import BandSelectConfig
from winnow.stages.select.where import WhereCondition

BAND_PURPOSE = "select:band"
FILTER_REASON = "select:band"
Label = Literal["below", "band", "above", "missing"]


@dataclass(frozen=True)
class BandCuts:
    """The band's two ends as budget cuts in descending (value, tiebreak) order."""

    low: CutPoint  # kept by ``low``: in the band or above it
    high: CutPoint  # kept by ``high``: above the band

    def label(self, value: float | None, tiebreak: int) -> Label:
        if value is None or not math.isfinite(value):
            return "missing"
        bits = order_bits(float(value))
        if self.high.keeps(bits, tiebreak):
            return "above"
        return "band" if self.low.keeps(bits, tiebreak) else "below"


@dataclass(frozen=True)
class BandDecision:
    label: Label
    selected: bool  # in the band and meeting every ``require`` condition


def band_tiebreak(doc_id: str, seed: int) -> int:
    return h64(doc_id, BAND_PURPOSE, seed)


def band_budgets(total_weight: float, lower_quantile: float, upper_quantile: float) -> tuple[float, float]:
    """Budgets (from the top) of the band's low and high cuts.

    The quantiles are read as the decimals they were written as (0.7 is 7/10, not 0.69999…), so
    ``(1 − 0.7) · 100`` documents is exactly 30 and the cut does not take a 31st.
    """

    def share_above(q: float) -> float:
        return float((1 - Fraction(repr(q))) * Fraction(total_weight))

    return share_above(lower_quantile), share_above(upper_quantile)


def exact_band_cuts(
    values: Sequence[float], tiebreaks: Sequence[int], weights: Sequence[float], lower: float, upper: float
) -> BandCuts:
    """Both cuts by sorting the pool (documents with a finite value); the reference for the Beam version."""
    pool = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    keys = [order_bits(float(values[i])) for i in pool]
    ties = [int(tiebreaks[i]) for i in pool]
    w = [float(weights[i]) for i in pool]
    low_budget, high_budget = band_budgets(math.fsum(w), lower, upper)
    return BandCuts(low=exact_cut(keys, ties, w, low_budget), high=exact_cut(keys, ties, w, high_budget))


def band_decision(value: float | None, tiebreak: int, cuts: BandCuts, requirements_met: bool) -> BandDecision:
    label = cuts.label(value, tiebreak)
    return BandDecision(label, label == "band" and requirements_met)


def meets(row: Mapping[str, Any], condition: WhereCondition) -> bool:
    """Whether a document's columns meet one condition; a missing or NaN value never does."""
    value = row.get(condition.field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return condition.holds(value)


def document_weight(row: Mapping[str, Any], config: BandSelectConfig) -> float:
    """A document's weight in the quantiles: its tokens, characters, or 1."""
    if config.weight == "docs":
        return 1.0
    if config.weight == "chars":
        return float(len(row.get("text") or ""))
    tokens = row.get(config.tokens_field)
    if tokens is None:
        raise ValueError(f"band weight `tokens` needs the field {config.tokens_field!r}")
    return float(tokens)


def decide_rows(
    rows: Sequence[Mapping[str, Any]], cuts: BandCuts, config: BandSelectConfig, seed: int, id_field: str = "id"
) -> list[BandDecision]:
    """The band decision of each document (a plain dict of its columns)."""
    decisions = []
    for row in rows:
        value = row.get(config.column)
        met = all(meets(row, c) for c in config.require)
        decisions.append(band_decision(value, band_tiebreak(str(row[id_field]), seed), cuts, met))
    return decisions


def tag_batch(
    batch: pa.RecordBatch | pa.Table, cuts: BandCuts, config: BandSelectConfig, seed: int, id_field: str = "id"
) -> tuple[pa.Table, np.ndarray]:
    """``tag_only``: the batch with ``tag_column`` added (every row kept); else the selected rows.

    Also returns the decision labels, one per input row, for counters.
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    decisions = decide_rows(table.to_pylist(), cuts, config, seed, id_field)
    selected = pa.array([d.selected for d in decisions], type=pa.bool_())
    labels = np.array([d.label for d in decisions], dtype=object)
    if config.tag_only:
        return table.append_column(config.tag_column, selected), labels
    return table.filter(selected), labels


def pool_cuts(rows: Sequence[Mapping[str, Any]], config: BandSelectConfig, seed: int, id_field: str = "id") -> BandCuts:
    """The band of an in-memory pool of documents (tests and benches; Beam uses the histogram cut)."""
    values = [row.get(config.column) for row in rows]
    ties = [band_tiebreak(str(row[id_field]), seed) for row in rows]
    weights = [document_weight(row, config) for row in rows]
    return exact_band_cuts(values, ties, weights, config.lower_quantile, config.upper_quantile)
