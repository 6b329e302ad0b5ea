"""``BudgetCuts``: per group, the docs/budgets.md#the-budget-cut budget cut of a keyed PCollection, with nothing global
held in one process (used by ``select`` and ``mix``; the math is in winnow.core.budget).

Input ``(elements, starts)``: elements ``(group, (key bits, tiebreak, weight))``, one per document;
starts ``(group, Narrowing.start(pool weight, budget))``, one per group. Output ``(group, CutPoint)``.
A 2^16-bin weight histogram of the top key bits finds the boundary bin, a 2^24-bin histogram inside
it narrows further, and only the documents of the last bin (keys equal to ~9 significant digits)
are gathered and cut exactly by (key, tiebreak). When that bin holds one key value (ties: integer
ratings such as DataMan's), the same histogram cut runs on the tiebreak hashes instead, so a tie
spanning much of the pool is never collected in one place.

Side inputs and the local runner. Beam 2.77's FnApiRunner decides which stage *produces* a
side-input PCollection by taking the first stage with a transform that outputs it, and a stage that
reads a PCollection as its main input holds a ``Read`` transform that outputs it too. When such a
reader sorts before the real producer (the order depends on set iteration, so it varies from run to
run), the side input is committed from the reader and its consumers see it empty: a narrowing step
saw no histogram and kept a whole tied region. So here every PCollection used as a side input is
used only as one; the steps run over ``groups`` (main input) and read the states and histograms as
side inputs. ``tests/run/test_side_inputs.py`` checks the rule over whole pipelines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue

from winnow.beam.contract import counter, side_copy
from winnow.core.budget import HISTOGRAM_LEVELS, CutPoint, Narrowing, histogram_bin, nearest_cut

Element = tuple[int, int, int]  # (key bits, tiebreak, weight)


class HistogramFn(beam.CombineFn):
    """Weight per bin, as a sparse dict (integer weights: exact sums in any merge order)."""

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


class KeyRangeFn(beam.CombineFn):
    """(min, max) of the key bits in a group's last region: equal means one tied key value."""

    def create_accumulator(self) -> tuple[int, int] | None:
        return None

    def add_input(self, acc: tuple[int, int] | None, key_bits: int) -> tuple[int, int]:
        return (key_bits, key_bits) if acc is None else (min(acc[0], key_bits), max(acc[1], key_bits))

    def merge_accumulators(self, accs: Iterable[tuple[int, int] | None]) -> tuple[int, int] | None:
        present = [acc for acc in accs if acc is not None]
        return (min(a[0] for a in present), max(a[1] for a in present)) if present else None

    def extract_output(self, acc: tuple[int, int] | None) -> tuple[int, int] | None:
        return acc


def _in_region(item: tuple[Any, Element], level: int, states: dict[Any, Narrowing]) -> Iterator[Any]:
    group, (key_bits, _, weight) = item
    state = states.get(group)
    if state is not None and state.contains(key_bits):
        yield group, (histogram_bin(key_bits, level), weight)


def _members(item: tuple[Any, Element], states: dict[Any, Narrowing]) -> Iterator[Any]:
    group, element = item
    state = states.get(group)
    if state is not None and state.contains(element[0]):
        yield group, element


def _advance(group: Any, states: dict[Any, Narrowing], histograms: dict[Any, dict[int, int]]) -> tuple[Any, Narrowing]:
    return group, states[group].advance(histograms.get(group, {}))


def _tied(group: Any, ranges: dict[Any, tuple[int, int] | None]) -> bool:
    bounds = ranges.get(group)
    return bounds is not None and bounds[0] == bounds[1]


def _untied_members(
    item: tuple[Any, Element], states: dict[Any, Narrowing], ranges: dict[Any, tuple[int, int] | None]
) -> Iterator[Any]:
    if not _tied(item[0], ranges):
        yield from _members(item, states)


def _tied_members(
    item: tuple[Any, Element], states: dict[Any, Narrowing], ranges: dict[Any, tuple[int, int] | None]
) -> Iterator[Any]:
    """A tied region's documents keyed by their tiebreak alone (the order among equal keys)."""
    group, (key_bits, tiebreak, weight) = item
    state = states.get(group)
    if _tied(group, ranges) and state is not None and state.contains(key_bits):
        yield group, (tiebreak, 0, weight)


def _tie_start(item: tuple[Any, int], states: dict[Any, Narrowing]) -> tuple[Any, Narrowing]:
    group, region_weight = item
    return group, Narrowing.start(float(region_weight), states[group].remaining)


def _as_list(item: tuple[Any, Iterable[Element]], stage: str) -> tuple[Any, list[Element]]:
    group, members = item[0], list(item[1])
    counter(f"{stage}:cut_collected").inc(len(members))
    return group, members


def _last_cut(state: Narrowing, members: list[Element], nearest: bool) -> CutPoint:
    if nearest and state.cut is None:
        return nearest_cut(members, state.remaining)
    return state.finish(members)


def _finish(
    group: Any, states: dict[Any, Narrowing], members: dict[Any, list[Element]], nearest: bool
) -> tuple[Any, CutPoint]:
    return group, _last_cut(states[group], members.get(group, []), nearest)


def _finish_all(
    group: Any,
    states: dict[Any, Narrowing],
    members: dict[Any, list[Element]],
    tie_cuts: dict[Any, CutPoint],
    ranges: dict[Any, tuple[int, int] | None],
    nearest: bool,
) -> tuple[Any, CutPoint]:
    state = states[group]
    if state.cut is None and _tied(group, ranges) and group in tie_cuts:
        key_bits = ranges[group][0]  # type: ignore[index]
        inner = tie_cuts[group]
        # The inner cut ranked (tiebreak, 0): it keeps tiebreak t iff (t, 0) ≥ inner, i.e. t ≥ the
        # inner key (+1 when its own tiebreak is above 0: "nothing of that bin", from nearest_cut).
        return group, CutPoint(key_bits, inner.key_bits + (1 if inner.tiebreak > 0 else 0))
    return group, _last_cut(state, members.get(group, []), nearest)


class BudgetCuts(beam.PTransform):
    """``(elements, starts)`` → ``(group, CutPoint)`` (see the module docstring).

    ``nearest``: the boundary lands on the nearest document edge (``nearest_cut``) instead of
    including the crossing document. ``resolve_ties``: cut a tied last bin by histograms over the
    tiebreaks rather than gathering it. ``stage`` names the ``<stage>:cut_collected`` counter: how
    many documents a worker gathered to finish a cut (few, unless ties are not resolved).
    """

    def __init__(self, stage: str, nearest: bool = False, resolve_ties: bool = True):
        super().__init__()
        self.stage = stage
        self.nearest = nearest
        self.resolve_ties = resolve_ties

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        elements, starts = inputs
        groups = starts | "Groups" >> beam.MapTuple(lambda group, _: group)
        states = side_copy(starts, "States0")
        for level in range(len(HISTOGRAM_LEVELS)):
            histograms = (
                elements
                | f"InRegion{level}" >> beam.FlatMap(_in_region, level, pvalue.AsDict(states))
                | f"Histogram{level}" >> beam.CombinePerKey(HistogramFn())
            )
            states = groups | f"Narrow{level}" >> beam.Map(_advance, pvalue.AsDict(states), pvalue.AsDict(histograms))
        if not self.resolve_ties:
            members = self._gathered(elements | "InLastBin" >> beam.FlatMap(_members, pvalue.AsDict(states)))
            return groups | "Cut" >> beam.Map(_finish, pvalue.AsDict(states), pvalue.AsDict(members), self.nearest)
        ranges = pvalue.AsDict(
            elements
            | "LastBinKeys" >> beam.FlatMap(_members, pvalue.AsDict(states))
            | "KeyOnly" >> beam.MapTuple(lambda group, element: (group, element[0]))
            | "KeyRange" >> beam.CombinePerKey(KeyRangeFn())
        )
        members = self._gathered(elements | "InLastBin" >> beam.FlatMap(_untied_members, pvalue.AsDict(states), ranges))
        tied = elements | "Tied" >> beam.FlatMap(_tied_members, pvalue.AsDict(states), ranges)
        tie_starts = (
            tied
            | "TiedWeight" >> beam.MapTuple(lambda group, element: (group, element[2]))
            | "SumTied" >> beam.CombinePerKey(sum)
            | "TieStart" >> beam.Map(_tie_start, pvalue.AsDict(states))
        )
        tie_cuts = (tied, tie_starts) | "Ties" >> BudgetCuts(self.stage, self.nearest, resolve_ties=False)
        return groups | "Cut" >> beam.Map(
            _finish_all, pvalue.AsDict(states), pvalue.AsDict(members), pvalue.AsDict(tie_cuts), ranges, self.nearest
        )

    def _gathered(self, last_bin: beam.PCollection) -> beam.PCollection:
        """(group, [elements]) of each group's last bin: the few documents one worker finishes."""
        return last_bin | "GroupLastBin" >> beam.GroupByKey() | "AsLists" >> beam.Map(_as_list, self.stage)
