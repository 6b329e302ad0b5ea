"""Stage ``score``: model scores as columns on every document (cores beside it in winnow.stages.score).

One DoFn for ``n_tokens`` and every configured scorer: it loads the models once per worker
(``setup``), takes documents in fixed-size batches (``BatchElements``), tokenises each batch once
with the run tokenizer (shared with the scorers that use it), and writes the scorers' columns,
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
    Document,
    StageSpec,
    counter,
    outcome_pardo,
    rejected,
    split_outcomes,
)
from winnow.core.config import TokenizerConfig
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.score.config import PRESELECT_COLUMN, ScoreConfig
from winnow.stages.score.scorer import Scorer, ScorerFactory, TokenizedTexts, checked_scores, score_tokenized

STAGE = "score"


class ScorerRun:
    """One scorer inside the stage's DoFn: its model, counters and column kinds."""

    def __init__(self, name: str, scorer: Scorer, batch_size: int):
        self.name = name
        self.scorer = scorer
        self.batch_size = batch_size
        self._scored = counter(f"score:{name}:scored")
        self._rejected = counter(f"score:{name}:rejected")
        self._batches = counter(f"score:{name}:batches")
        self._retried = counter(f"score:{name}:batches_retried")
        if hasattr(scorer, "count"):  # scorers that count events of their own (DataMan: malformed replies)
            scorer.count = self._count
        # Columns declared as strings or integers (DataMan's domain letter and ratings) keep their
        # type; everything else is a float32 score.
        self._kinds = {
            c.name: "str" if pa.types.is_string(c.type) else "int" if pa.types.is_integer(c.type) else "float"
            for c in scorer.columns
        }
        # List columns (QuRating's per-window ratings and window lengths) keep their element type.
        for c in scorer.columns:
            if pa.types.is_list(c.type):
                self._kinds[c.name] = "list_int" if pa.types.is_integer(c.type.value_type) else "list_float"

    def _count(self, name: str, n: int = 1) -> None:
        counter(name).inc(n)

    def score(self, batch: TokenizedTexts) -> list[dict[str, Any] | str]:
        """Each row's columns, or the reason it is rejected; a failing batch is retried row by row."""
        self._batches.inc()
        try:
            out = checked_scores(self.scorer, score_tokenized(self.scorer, batch), len(batch))
        except Exception:  # retry alone to find the one(s) at fault
            self._retried.inc()
            return [self._score_one(batch.take([i])) for i in range(len(batch))]
        return [self._columns({name: values[i] for name, values in out.items()}) for i in range(len(batch))]

    def _score_one(self, one: TokenizedTexts) -> dict[str, Any] | str:
        try:
            out = checked_scores(self.scorer, score_tokenized(self.scorer, one), 1)
        except Exception as error:
            self._rejected.inc()
            return f"{self.name}: {type(error).__name__}: {error}"
        return self._columns({name: values[0] for name, values in out.items()})

    def _columns(self, values: dict[str, Any]) -> dict[str, Any] | str:
        columns = {}
        for name, value in values.items():
            kind = self._kinds.get(name, "float")
            if kind.startswith("list_"):
                items = [int(v) for v in value] if kind == "list_int" else [_float32(float(v)) for v in value]
                if not all(math.isfinite(v) for v in items):
                    self._rejected.inc()
                    return f"{self.name}: non-finite score in column {name}"
                columns[name] = items
                continue
            if kind != "float":
                columns[name] = str(value) if kind == "str" else int(value)
                continue
            number = float(value)
            if not math.isfinite(number):
                self._rejected.inc()
                return f"{self.name}: non-finite score {number} in column {name}"
            columns[name] = _float32(number)
        self._scored.inc()
        return columns


class ScoreDoFn(beam.DoFn):
    """``n_tokens`` and every scorer, in order, on one batch; emits scored documents or rejected records.

    The batch is tokenised with the run tokenizer once (``TokenizedTexts``): ``n_tokens`` and the
    scorers that cut or truncate with the same tokenizer read the same ids. Each scorer sees the
    documents the previous ones kept, in slices of its own batch size.
    """

    def __init__(self, tokenizer: TokenizerConfig, factories: Sequence[tuple[str, Callable[[], Scorer], int]]):
        self.tokenizer_config = tokenizer
        self.factories = list(factories)

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)
        self.runs = [ScorerRun(name, factory(), size) for name, factory, size in self.factories]

    def process(self, batch: Sequence[Document]) -> Iterator[Any]:
        todo = [doc for doc in batch if not _unscorable(doc)]
        for doc in batch:
            if _unscorable(doc):  # raw HTML awaiting extract: nothing to score yet
                yield doc
        if not todo:
            return
        tokenized = TokenizedTexts([doc.get("text") or "" for doc in todo])
        columns: list[dict[str, Any]] = [{"n_tokens": len(ids)} for ids in tokenized.token_ids(self.tokenizer)]
        alive = list(range(len(todo)))
        for run in self.runs:
            survivors = []
            for start in range(0, len(alive), run.batch_size):
                rows = alive[start : start + run.batch_size]
                for row, outcome in zip(rows, run.score(tokenized.take(rows)), strict=True):
                    if isinstance(outcome, str):
                        yield rejected({**todo[row], **columns[row]}, STAGE, outcome)
                    else:
                        columns[row].update(outcome)
                        survivors.append(row)
            alive = survivors
        for row in alive:
            yield {**todo[row], **columns[row]}


def _unscorable(doc: Document) -> bool:
    return "html" in doc and not doc.get("text")


def _float32(value: float) -> float:

    return float(np.float32(value))


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
        # One batch size for the whole stage (each scorer slices it to its own), at least the 256 that
        # keeps the tokenizer's per-call cost small.
        size = max([256, *(size for _, _, size in self.factories)])
        batches = docs | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
        return split_outcomes(batches | outcome_pardo("Score", ScoreDoFn(self.tokenizer, self.factories)))


def scorer_fields(config: ScoreConfig) -> list[pa.Field]:
    """The columns the configured scorers write, in order."""
    return [field for entry in config.scorers for field in entry.fields()]


SPEC = StageSpec(
    name=STAGE,
    heavy=True,
    config=ScoreConfig,
    transform=Score,
    # preselect_score is always a column (the default scorer's), so shards of runs with and without
    # PreSelect share it; every configured scorer's columns follow all fixed columns.
    columns=(pa.field("n_tokens", pa.int64()), pa.field(PRESELECT_COLUMN, pa.float32())),
    config_columns=scorer_fields,
    needs=("tokenizer",),
)
