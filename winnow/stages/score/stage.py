"""Stage ``score``: model scores as columns on every document (cores beside it in winnow.stages.score).

One DoFn per configured scorer, chained. Each loads its model once per worker (``setup``),
takes documents in fixed-size batches (``BatchElements``), and writes the scorer's columns,
rounded to float32 (the column type, so a document in flight carries what the Parquet file will
hold). A batch the model fails on is retried one document at a time, so a
document whose scoring raises, or yields a non-finite score, goes to ``rejected/`` with the
error and the rest of its batch is scored normally; nothing here can kill the job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from winnow.beam.contract import (
    KEPT,
    REJECTED,
    REMOVED,
    Document,
    StageSpec,
    chain,
    counter,
    outcome_pardo,
    rejected,
    split_outcomes,
)
from winnow.core.config import TokenizerConfig
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.score.config import PRESELECT_COLUMN, ScoreConfig
from winnow.stages.score.scorer import Scorer, ScorerFactory, checked_scores

STAGE = "score"


class ScoreDoFn(beam.DoFn):
    """Scores batches of documents with one scorer; emits scored documents or rejected records."""

    def __init__(self, factory: Callable[[], Scorer], name: str):
        self.factory = factory
        self.name = name
        self._scored = counter(f"score:{name}:scored")
        self._rejected = counter(f"score:{name}:rejected")
        self._batches = counter(f"score:{name}:batches")
        self._retried = counter(f"score:{name}:batches_retried")

    def setup(self) -> None:
        self.scorer = self.factory()
        if hasattr(self.scorer, "count"):  # scorers that count events of their own (DataMan: malformed replies)
            self.scorer.count = self._count
        # Columns declared as strings or integers (DataMan's domain letter and ratings) keep their
        # type; everything else is a float32 score.
        self._kinds = {
            c.name: "str" if pa.types.is_string(c.type) else "int" if pa.types.is_integer(c.type) else "float"
            for c in self.scorer.columns
        }
        # List columns (QuRating's per-window ratings and window lengths) keep their element type.
        for c in self.scorer.columns:
            if pa.types.is_list(c.type):
                self._kinds[c.name] = "list_int" if pa.types.is_integer(c.type.value_type) else "list_float"

    def _count(self, name: str, n: int = 1) -> None:
        counter(name).inc(n)

    def process(self, batch: Sequence[Document]) -> Iterator[Any]:
        todo = [doc for doc in batch if not _unscorable(doc)]
        for doc in batch:
            if _unscorable(doc):  # raw HTML awaiting extract: nothing to score yet
                yield doc
        if not todo:
            return
        self._batches.inc()
        try:
            out = checked_scores(self.scorer, self.scorer.score([doc.get("text") or "" for doc in todo]), len(todo))
        except Exception:  # retry alone to find the one(s) at fault
            self._retried.inc()
            for doc in todo:
                yield from self._score_one(doc)
            return
        for i, doc in enumerate(todo):
            yield self._emit(doc, {name: values[i] for name, values in out.items()})

    def _score_one(self, doc: Document) -> Iterator[Any]:
        try:
            out = checked_scores(self.scorer, self.scorer.score([doc.get("text") or ""]), 1)
        except Exception as error:
            self._rejected.inc()
            yield rejected(doc, STAGE, f"{self.name}: {type(error).__name__}: {error}")
            return
        yield self._emit(doc, {name: values[0] for name, values in out.items()})

    def _emit(self, doc: Document, values: dict[str, Any]) -> Any:
        columns = {}
        for name, value in values.items():
            kind = self._kinds.get(name, "float")
            if kind.startswith("list_"):
                items = [int(v) for v in value] if kind == "list_int" else [_float32(float(v)) for v in value]
                if not all(math.isfinite(v) for v in items):
                    self._rejected.inc()
                    return rejected(doc, STAGE, f"{self.name}: non-finite score in column {name}")
                columns[name] = items
                continue
            if kind != "float":
                columns[name] = str(value) if kind == "str" else int(value)
                continue
            number = float(value)
            if not math.isfinite(number):
                self._rejected.inc()
                return rejected(doc, STAGE, f"{self.name}: non-finite score {number} in column {name}")
            columns[name] = _float32(number)
        self._scored.inc()
        return {**doc, **columns}


def _unscorable(doc: Document) -> bool:
    return "html" in doc and not doc.get("text")


def _float32(value: float) -> float:

    return float(np.float32(value))


class ScoreWith(beam.PTransform):
    """One scorer over a PCollection of documents; ``{"kept", "removed", "rejected"}``."""

    def __init__(self, factory: Callable[[], Scorer], name: str, batch_size: int = 256):
        super().__init__()
        self.factory = factory
        self.name = name
        self.batch_size = batch_size

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        size = self.batch_size
        batches = docs | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
        return split_outcomes(batches | outcome_pardo("Score", ScoreDoFn(self.factory, self.name)))


class CountTokensDoFn(beam.DoFn):
    """Writes ``n_tokens`` (docs/budgets.md#tokens: every budget is in tokens) with the run's tokenizer."""

    def __init__(self, tokenizer: TokenizerConfig):
        self.tokenizer_config = tokenizer

    def setup(self) -> None:

        self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)

    def process(self, batch: Sequence[Document]) -> Iterator[Document]:
        counts = self.tokenizer.count([doc.get("text") or "" for doc in batch])
        for doc, count in zip(batch, counts, strict=True):
            yield {**doc, "n_tokens": int(count)} if not _unscorable(doc) else doc


class CountTokens(beam.PTransform):
    """``n_tokens`` on every document, batched (the tokenizer has a per-call cost)."""

    def __init__(self, tokenizer: TokenizerConfig, batch_size: int = 256):
        super().__init__()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        size = self.batch_size
        counted = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | "Count" >> beam.ParDo(CountTokensDoFn(self.tokenizer))
        )
        empty = docs.pipeline | "NoRemoved" >> beam.Create([])
        return {KEPT: counted, REMOVED: empty, REJECTED: docs.pipeline | "NoRejected" >> beam.Create([])}


class Score(beam.PTransform):
    """Stage ``score``: ``n_tokens``, then every configured scorer in order (docs/preselect.md PreSelect and others).

    ``factories`` replaces the config's scorers with (name, zero-argument factory, batch size)
    triples, for scorers that are not config backends (tests, experiments).
    """

    def __init__(
        self,
        config: ScoreConfig,
        factories: Sequence[tuple[str, Callable[[], Scorer], int]] | None = None,
        tokenizer: TokenizerConfig | None = None,
    ):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else TokenizerConfig()
        if factories is None:
            factories = [
                (entry.name, ScorerFactory(entry.with_run_tokenizer(self.tokenizer)), entry.batch_size)
                for entry in config.scorers
            ]
        self.factories = list(factories)

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        steps: list[tuple[str, beam.PTransform]] = [("CountTokens", CountTokens(self.tokenizer))]
        steps += [(f"Score_{name}", ScoreWith(factory, name, size)) for name, factory, size in self.factories]
        return chain(docs, steps)


def scorer_fields(config: ScoreConfig) -> list[pa.Field]:
    """The columns the configured scorers write, in order."""
    return [field for entry in config.scorers for field in entry.fields()]


SPEC = StageSpec(
    name=STAGE,
    config=ScoreConfig,
    transform=Score,
    # preselect_score is always a column (the default scorer's), so shards of runs with and without
    # PreSelect share it; every configured scorer's columns follow all fixed columns.
    columns=(pa.field("n_tokens", pa.int64()), pa.field(PRESELECT_COLUMN, pa.float32())),
    config_columns=scorer_fields,
    needs=("tokenizer",),
)
