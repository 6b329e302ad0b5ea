"""The ``fasttext`` scorer backend: the probability of one label under a supervised fastText model.

The score is computed on the text with newlines replaced by spaces, as in training
(docs/preselect.md). This is PreSelect's reference mode (the released classifier) and its local
mode (the model winnow trains).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from winnow.core.models import file_digest, resolve_model_path
from winnow.stages.score.scorer import ScoreColumn, ScorerOptions, cut_texts


class FastTextScorer:
    """Probability of ``label`` under a supervised fastText model."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "fasttext",
        column: str | None = None,
        label: str = "__label__1",
        max_chars: int | None = None,
        cache_dir: str | None = None,
    ):
        import fasttext  # lazy: fastText only when its model is used

        local = resolve_model_path(path, cache_dir)
        self.model = fasttext.load_model(str(local))
        labels = list(self.model.get_labels())
        if label not in labels:
            raise ValueError(f"fastText model {path} has no label {label!r}; its labels: {labels[:10]}")
        self.name = name
        self.label = label
        self.max_chars = max_chars
        self.version = f"fasttext:{file_digest(local)}"
        self.columns = (ScoreColumn(column or f"{name}_score"),)
        self._k = len(labels)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        # multilinePredict is what model.predict calls for a list; calling it directly skips a
        # per-text check and copy. "replace" keeps one bad surrogate from failing the batch.
        lines = [t.replace("\n", " ") + "\n" for t in cut_texts(texts, self.max_chars)]
        labels, probs = self.model.f.multilinePredict(lines, self._k, 0.0, "replace")
        out = np.zeros(len(lines), dtype=np.float32)
        for row, (names, values) in enumerate(zip(labels, probs, strict=True)):
            for name, value in zip(names, values, strict=True):
                if name == self.label:
                    out[row] = value
                    break
        return {self.columns[0].name: out}


class FastTextOptions(ScorerOptions):
    """``backend: fasttext``: a supervised fastText model (.bin or .ftz)."""

    backend: Literal["fasttext"]
    columns: list[str] | None = Field(None, description="The one output column; default `<name>_score`.")
    label: str = Field("__label__1", description="The label whose probability is the score.")

    @field_validator("columns")
    @classmethod
    def _one_column(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(value) != 1:
            raise ValueError("a fasttext scorer writes exactly one column")
        return value

    def column(self) -> str:
        return self.columns[0] if self.columns else f"{self.name}_score"

    def build(self) -> FastTextScorer:
        return FastTextScorer(self.path, self.name, self.column(), self.label, self.max_chars, self.cache_dir)

    def fields(self) -> list[pa.Field]:
        return [pa.field(self.column(), pa.float32())]
