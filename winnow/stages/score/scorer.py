"""The scorer contract and the options every scorer backend shares, Beam-free.

A scorer is anything with a ``name``, a ``version`` (for provenance: it changes when the model
bytes change), the ``columns`` it writes with their Arrow types, and ``score(texts)`` that maps a
batch of texts to one array per column. Keeping it this small is what lets one Beam DoFn
(``winnow.stages.score.stage``) run any model, and lets tests and benches call a scorer on a
plain list.

A scorer may also take a ``TokenizedTexts`` (``score_tokenized``): the batch's texts with their
token ids, computed once per tokenizer for the whole batch. The stage counts ``n_tokens`` with the
run tokenizer and hands the same object to every scorer, so a scorer cutting windows or
truncating with that tokenizer (QuRating, DataMan's local mode) does not tokenise the batch again.

A backend is one module holding its scorer class and its options (a ``ScorerOptions``
subclass whose ``backend`` literal is the config's tag, with ``build()`` and ``fields()``);
``winnow.stages.score.registry`` lists the backends. Models load from a local path, from this
package (``winnow:`` paths) or from any Beam filesystem (copied to a local cache), never from a
model hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.core.config import Section, TokenizerConfig


@dataclass(frozen=True)
class ScoreColumn:
    """An output column: its name in the document and its Arrow type."""

    name: str
    type: pa.DataType = field(default_factory=pa.float32)

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type)


@runtime_checkable
class Scorer(Protocol):
    """A model that scores a batch of texts into named columns, one value per text."""

    name: str
    version: str
    columns: tuple[ScoreColumn, ...]

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]: ...


class BatchTokenizer(Protocol):
    """What ``TokenizedTexts`` needs of a tokenizer: a content digest and batched ids."""

    version: str

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...


class TokenizedTexts:
    """One batch's texts and their token ids, computed at most once per tokenizer and shared.

    The ids are keyed by the tokenizer's content digest (``version``): two tokenizer objects
    loaded from the same file give the same ids, whoever loaded them. It lives for one batch
    only (no process-wide cache), and every row's ids depend on its own text alone.
    """

    def __init__(self, texts: Sequence[str], ids: dict[str, list[list[int]]] | None = None):
        self.texts = list(texts)
        self._ids: dict[str, list[list[int]]] = dict(ids or {})

    def __len__(self) -> int:
        return len(self.texts)

    def token_ids(self, tokenizer: BatchTokenizer) -> list[list[int]]:
        """Every text's ids under ``tokenizer``, encoded in one batched call the first time."""
        ids = self._ids.get(tokenizer.version)
        if ids is None:
            ids = self._ids[tokenizer.version] = tokenizer.encode(self.texts)
        return ids

    def cached_ids(self, tokenizer: BatchTokenizer) -> list[list[int]] | None:
        """The ids if some caller has encoded this batch with ``tokenizer`` already, else None."""
        return self._ids.get(tokenizer.version)

    def take(self, rows: Sequence[int]) -> TokenizedTexts:
        """The rows ``rows`` of this batch, with the ids computed so far."""
        return TokenizedTexts([self.texts[i] for i in rows], {k: [v[i] for i in rows] for k, v in self._ids.items()})


def score_tokenized(scorer: Scorer, batch: TokenizedTexts) -> dict[str, np.ndarray]:
    """``scorer.score_tokenized(batch)`` where the scorer has it (it reuses the batch's ids), else ``score``."""
    method = getattr(scorer, "score_tokenized", None)
    return method(batch) if method is not None else scorer.score(batch.texts)


def texts_of(batch: pa.RecordBatch | pa.Table | Sequence[str], text_column: str = "text") -> list[str]:
    """The texts of an Arrow batch (its ``text_column``) or of a plain sequence; nulls become ''."""
    if isinstance(batch, pa.RecordBatch | pa.Table):
        return [t if t is not None else "" for t in batch.column(text_column).to_pylist()]
    return [t if t is not None else "" for t in batch]


def score_batch(
    scorer: Scorer, batch: pa.RecordBatch | pa.Table | Sequence[str], text_column: str = "text"
) -> pa.RecordBatch:
    """Score an Arrow batch (or list of texts) into a RecordBatch of the scorer's columns."""
    texts = texts_of(batch, text_column)
    out = checked_scores(scorer, scorer.score(texts), len(texts))
    arrays = [pa.array(out[c.name], type=c.type) for c in scorer.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([c.field() for c in scorer.columns]))


def checked_scores(scorer: Scorer, out: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The scorer's output, verified: every declared column, one value per text."""
    checked = {}
    for column in scorer.columns:
        if column.name not in out:
            raise ValueError(f"scorer {scorer.name} returned no column {column.name!r}")
        values = np.asarray(out[column.name])
        if values.shape != (n,):
            raise ValueError(f"scorer {scorer.name} column {column.name!r} has shape {values.shape}, expected ({n},)")
        checked[column.name] = values
    return checked


def cut_texts(texts: Sequence[str], max_chars: int | None) -> list[str]:
    """The first ``max_chars`` characters of each text (all of it when None)."""
    return [t[:max_chars] for t in texts] if max_chars else list(texts)


class ScorerOptions(Section):
    """What every scorer entry in ``score.scorers`` has; each backend adds its own options.

    Subclasses set ``backend: Literal["<name>"]`` (the tag the config selects them by) and
    implement ``build`` (called once per worker, in ``DoFn.setup``) and ``fields`` (the columns
    the scorer writes, known before any data moves so every shard has the same schema).
    """

    name: str = Field(..., min_length=1, description="Scorer name, used in metric names and default column names.")
    path: str = Field(
        ...,
        description="Model file or directory. `winnow:` paths are package data; gs:// and s3:// files are copied "
        "locally once. Never a hub name.",
    )
    batch_size: int = Field(256, gt=0, description="Documents per model call.")
    max_chars: int | None = Field(
        None, gt=0, description="Score only the first N characters of a document (bounds cost on huge documents)."
    )
    cache_dir: str | None = Field(
        None, description="Where copied models are cached; default ~/.cache/winnow (or $WINNOW_CACHE)."
    )

    def build(self) -> Scorer:
        raise NotImplementedError

    def fields(self) -> list[pa.Field]:
        raise NotImplementedError

    def with_run_tokenizer(self, tokenizer: TokenizerConfig) -> Self:
        """This entry with the run's tokenizer filled in where the backend uses one (default: unchanged)."""
        return self


class ScorerFactory:
    """A picklable zero-argument callable that builds an entry's scorer (for ``DoFn.setup``)."""

    def __init__(self, entry: ScorerOptions):
        self.entry = entry

    def __call__(self) -> Scorer:
        scorer = self.entry.build()
        if not isinstance(scorer, Scorer):
            raise TypeError(f"backend {self.entry.backend!r} built {type(scorer).__name__}, which is not a Scorer")
        return scorer
