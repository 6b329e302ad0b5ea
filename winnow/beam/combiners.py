"""Combiners shared by several stages."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam

from winnow.core.stats import MeanStd


class MergeFn(beam.CombineFn):
    """Combines values that merge themselves (``a.merge(b)`` returns the union), starting from ``empty()``:
    the per-stage tallies and totals a manifest section is built from."""

    def __init__(self, empty: Callable[[], Any]):
        self.empty = empty

    def create_accumulator(self) -> Any:
        return self.empty()

    def add_input(self, acc: Any, value: Any) -> Any:
        return acc.merge(value)

    def merge_accumulators(self, accs: Iterable[Any]) -> Any:
        merged = self.empty()
        for acc in accs:
            merged = merged.merge(acc)
        return merged

    def extract_output(self, acc: Any) -> Any:
        return acc


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


class MinMaxFn(beam.CombineFn):
    """Global (min, max) of one score column: the fixed histogram range of pass 2."""

    def create_accumulator(self) -> tuple[float, float]:
        return (math.inf, -math.inf)

    def add_input(self, acc: tuple[float, float], value: float) -> tuple[float, float]:
        return (min(acc[0], value), max(acc[1], value))

    def merge_accumulators(self, accs: Iterable[tuple[float, float]]) -> tuple[float, float]:
        lows, highs = zip(*accs, strict=True)
        return (min(lows), max(highs))

    def extract_output(self, acc: tuple[float, float]) -> tuple[float, float]:
        return acc
