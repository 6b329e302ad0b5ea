"""QuRating (docs/qurating.md): pairwise judgments → Bradley–Terry rater → chunked document ratings. Beam-free.

* Judgments (docs/qurating.md#judgments): groups of k texts with, per criterion, a k×k matrix whose entry (a, b) is
  P(text_b ≻ text_a); −100 marks the diagonal and missing votes. ``read_judgments`` reads it.
* Training (docs/qurating.md#training): the confidence filter keeps a label when |y − ½| ≥ threshold/2, an optional
  label temperature tempers it (y ← σ(logit(y)/T)), and the Bradley–Terry loss
  BCE(σ(s_j − s_i), y_ij) is averaged over every valid ordered pair of a group (both orders,
  diagonal and −100 masked). The paper fine-tunes a 1.3B LM; local mode keeps the loss and the
  4-output bias-free linear head and freezes the features: hashed word n-grams of each window's
  text by default (no model to fetch or distil, byte-identical everywhere), hashed token n-grams of
  the window's ids (no decode; compared and not shipped, see the model README), or static/MiniLM
  embeddings.
* Inference (docs/qurating.md#rating-documents): the whole document is tokenised, cut into consecutive 512-token windows
  (the last may be shorter), every window is rated, and the document rating per criterion is
  the token-weighted mean. Columns match the reference annotator: ``<criterion>_chunks``,
  ``<criterion>_average``, ``chunk_lengths``, ``length``.
* Reference mode: a local QuRater checkpoint directory (``LlamaForSequenceClassification``,
  4 labels), windows of its own tokenizer, logits read at each window's final token.
* ``derived_pair_groups``: the bootstrap when no judgments exist; pointwise good/bad labels per
  criterion become pairs, and the model and its report say ``derived-pairs``.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import math
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.core import exact
from winnow.core.config import TokenizerConfig
from winnow.core.embedders import is_static, sentence_encoder, torch_device
from winnow.core.hashing import h64, uniform
from winnow.core.models import file_digest, resolve_model_path
from winnow.core.tokenizer import BUNDLED_TOKENIZER, Tokenizer
from winnow.stages.score.scorer import ScoreColumn, ScorerOptions, TokenizedTexts

CRITERIA: tuple[str, ...] = ("writing_style", "required_expertise", "facts_and_trivia", "educational_value")
MISSING = -100.0
WINDOW_TOKENS = 512
MODEL_FORMAT = "winnow-qurater/1"
BUNDLED_QURATER = "winnow:models/qurating/qurater-hashed.npz"


def qurating_columns(criteria: Sequence[str] = CRITERIA) -> tuple[ScoreColumn, ...]:
    """The annotator's output columns (docs/qurating.md#rating-documents), in the reference order."""
    columns = []
    for criterion in criteria:
        columns.append(ScoreColumn(f"{criterion}_chunks", pa.list_(pa.float32())))
        columns.append(ScoreColumn(f"{criterion}_average", pa.float32()))
    columns.append(ScoreColumn("chunk_lengths", pa.list_(pa.int32())))
    columns.append(ScoreColumn("length", pa.int64()))
    return tuple(columns)


def qurating_fields(criteria: Sequence[str] = CRITERIA) -> list[pa.Field]:
    return [column.field() for column in qurating_columns(criteria)]


# --- judgments ---------------------------------------------------------------------------------


@dataclass
class JudgmentGroup:
    """k texts and, per criterion, the k×k matrix of P(text_b ≻ text_a) (−100: missing)."""

    texts: list[str]
    labels: dict[str, np.ndarray]
    group_id: str = ""


def _open_text(path: str | os.PathLike[str]) -> io.TextIOBase:
    text = os.fspath(path)
    if text.endswith(".gz"):
        return gzip.open(text, "rt", encoding="utf-8")  # type: ignore[return-value]
    return open(text, encoding="utf-8")


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def group_from_record(record: Mapping[str, Any], criteria: Sequence[str] = CRITERIA, index: int = 0) -> JudgmentGroup:
    """One docs/qurating.md#judgments record; a criterion without its ``<criterion>_average`` matrix is all missing."""
    texts = [str(t) for t in record["texts"]]
    k = len(texts)
    labels = {}
    for criterion in criteria:
        raw = record.get(f"{criterion}_average")
        matrix = np.full((k, k), MISSING) if raw is None else np.asarray(raw, dtype=np.float64)
        if matrix.shape != (k, k):
            raise ValueError(f"record {index}: {criterion}_average has shape {matrix.shape}, expected ({k}, {k})")
        np.fill_diagonal(matrix, MISSING)
        labels[criterion] = matrix
    return JudgmentGroup(texts, labels, str(record.get("id", index)))


def read_judgments(path: str | os.PathLike[str], criteria: Sequence[str] = CRITERIA) -> list[JudgmentGroup]:
    """Groups from a JSONL (optionally .gz) file in the released judgments' format."""
    return [group_from_record(record, criteria, i) for i, record in enumerate(iter_jsonl(path))]


def valid(matrix: np.ndarray) -> np.ndarray:
    """Entries that hold a probability (not −100, not the diagonal)."""
    mask = (matrix >= 0.0) & (matrix <= 1.0)
    np.fill_diagonal(mask, False)
    return mask


def confidence(y: np.ndarray | float) -> np.ndarray | float:
    """|2y − 1|: 0 for a coin flip, 1 for a unanimous judgment (the reference's confidence)."""
    return np.abs(2.0 * np.asarray(y) - 1.0)


def confident_labels(matrix: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The matrix with labels below the confidence threshold set missing (0.5 keeps y ≤ ¼ or ≥ ¾)."""
    out = np.array(matrix, dtype=np.float64)
    mask = valid(out)
    # A tiny tolerance so 0.25 and 0.75 are kept at threshold 0.5 despite float rounding.
    out[mask & (confidence(out) < threshold - 1e-12)] = MISSING
    return out


def temper_labels(matrix: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """y ← σ(logit(y)/T) on valid entries; T = 1 leaves labels unchanged, T > 1 softens them."""
    out = np.array(matrix, dtype=np.float64)
    if temperature == 1.0:
        return out
    if temperature <= 0:
        raise ValueError("label temperature must be positive")
    mask = valid(out)
    y = np.clip(out[mask], 1e-12, 1 - 1e-12)
    out[mask] = 1.0 / (1.0 + np.exp(-(np.log(y) - np.log1p(-y)) / temperature))
    return out


def prepare_groups(
    groups: Iterable[JudgmentGroup], threshold: float = 0.5, temperature: float = 1.0
) -> tuple[list[JudgmentGroup], dict[str, int]]:
    """Filter and temper every label; drop groups left with no confident label (reference behaviour)."""
    kept: list[JudgmentGroup] = []
    stats = {"groups_in": 0, "groups_kept": 0, "labels_in": 0, "labels_kept": 0}
    for group in groups:
        stats["groups_in"] += 1
        labels = {}
        for criterion, matrix in group.labels.items():
            stats["labels_in"] += int(valid(matrix).sum())
            labels[criterion] = temper_labels(confident_labels(matrix, threshold), temperature)
            stats["labels_kept"] += int(valid(labels[criterion]).sum())
        if any(valid(m).any() for m in labels.values()):
            kept.append(JudgmentGroup(group.texts, labels, group.group_id))
            stats["groups_kept"] += 1
    return kept, stats


@dataclass
class Pairs:
    """Ordered pairs (i, j) on a flat text index, criterion column c and label y = P(j ≻ i)."""

    left: np.ndarray
    right: np.ndarray
    criterion: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.left[mask], self.right[mask], self.criterion[mask], self.label[mask])


def flatten(groups: Sequence[JudgmentGroup], criteria: Sequence[str] = CRITERIA) -> tuple[list[str], Pairs]:
    """All texts in one list and every valid ordered pair inside each group (never across groups)."""
    texts: list[str] = []
    left, right, column, label = [], [], [], []
    for group in groups:
        base = len(texts)
        texts.extend(group.texts)
        for c, criterion in enumerate(criteria):
            matrix = group.labels.get(criterion)
            if matrix is None:
                continue
            a, b = np.nonzero(valid(matrix))
            left.extend(base + a)
            right.extend(base + b)
            column.extend([c] * len(a))
            label.extend(matrix[a, b])
    pairs = Pairs(
        np.asarray(left, dtype=np.int64),
        np.asarray(right, dtype=np.int64),
        np.asarray(column, dtype=np.int64),
        np.asarray(label, dtype=np.float64),
    )
    return texts, pairs


def bt_loss(scores: np.ndarray, pairs: Pairs) -> float:
    """Mean BCE(σ(s_j − s_i), y) over the pairs (Bradley–Terry, docs/qurating.md#training)."""
    d = scores[pairs.right, pairs.criterion] - scores[pairs.left, pairs.criterion]
    return float(np.mean(np.logaddexp(0.0, d) - pairs.label * d))


def pairwise_accuracy(scores: np.ndarray, pairs: Pairs, levels: Sequence[float] = (0.0, 0.5, 0.8)) -> dict[str, Any]:
    """Accuracy of sign(s_j − s_i) against the label, upper triangle only, overall and by confidence.

    Ties (y = ½) have no right answer and are left out, as in the reference's metric.
    """
    upper = (pairs.left < pairs.right) & (pairs.label != 0.5)
    d = scores[pairs.right, pairs.criterion] - scores[pairs.left, pairs.criterion]
    correct = (d > 0) == (pairs.label > 0.5)
    conf = confidence(pairs.label)
    out: dict[str, Any] = {}
    for level in levels:
        mask = upper & (conf >= level - 1e-12)
        key = "overall" if level == 0 else f"confidence_ge_{round(level * 100)}"
        out[key] = {"accuracy": float(correct[mask].mean()) if mask.any() else None, "pairs": int(mask.sum())}
    return out


# --- features ----------------------------------------------------------------------------------


# HashingVectorizer's default token_pattern is (?u)\b\w\w+\b on the lower-cased text: the runs of ≥ 2 word
# characters. \w\w+ finds the same runs (a match starts at a run's start and takes all of it) ~25% faster.
_WORD = re.compile(r"\w\w+")


def _murmur_hashes(features: Iterable[str]) -> list[int]:
    """Signed 32-bit MurmurHash3 (x86, seed 0) of each feature's UTF-8 bytes: sklearn's ``murmurhash3_32``."""
    import mmh3  # lazy: only where hashed word features are computed

    return list(map(mmh3.hash, features))


@dataclass(frozen=True)
class HashedNgrams:
    """Word 1–2-gram counts hashed into ``n_features`` signed buckets, log(1+tf), L2-normalised.

    The features of sklearn's HashingVectorizer (lower-cased ``(?u)\\b\\w\\w+\\b`` words, their
    n-grams joined by a space, MurmurHash3 seed 0, bucket |h| mod n_features, sign of h, counts
    summed): a pure function of the text, so features and a trained head are identical on every
    machine; no vocabulary or model to ship. It is computed here rather than by the vectorizer
    (the same words, hashes and integer counts: the same bits) for a fraction of its cost: the
    batch's features are hashed in one pass of ``mmh3``'s C MurmurHash3 called straight from
    ``map``, with no Python frame per feature.
    """

    n_features: int = 1 << 18
    ngram_max: int = 2

    def describe(self) -> dict[str, Any]:
        return {"kind": "hashed", "n_features": self.n_features, "ngram_max": self.ngram_max}

    def counts(self, texts: Sequence[str]) -> Any:
        """The signed bucket counts (a float64 CSR matrix of integers), as ``HashingVectorizer(norm=None)``."""
        from scipy import sparse  # lazy: scipy only where this path runs

        per_text = [_WORD.findall(text.lower()) for text in texts]
        lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        words = list(itertools.chain.from_iterable(per_text))
        word_rows = np.repeat(np.arange(len(per_text), dtype=np.int64), lengths)
        # Every n-gram of the batch's words end to end, hashed in one C-speed pass; those that straddle
        # two texts are then dropped.
        features: list[Iterable[str]] = [words]
        rows = [word_rows]
        for n in range(2, self.ngram_max + 1):
            features.append(map(" ".join, zip(*(itertools.islice(words, i, None) for i in range(n)), strict=False)))
            starts = word_rows[: max(len(words) - n + 1, 0)]
            rows.append(np.where(starts == word_rows[n - 1 :], starts, -1))
        hashes = np.fromiter(_murmur_hashes(itertools.chain.from_iterable(features)), dtype=np.int64)
        all_rows = np.concatenate(rows)
        keep = all_rows >= 0
        hashes, all_rows = hashes[keep], all_rows[keep]
        signs = np.where(hashes >= 0, 1.0, -1.0)
        matrix = sparse.csr_matrix(
            (signs, (all_rows, np.abs(hashes) % self.n_features)), shape=(len(per_text), self.n_features)
        )
        matrix.sum_duplicates()  # integer sums of ±1: exact in any order
        return matrix

    def transform(self, texts: Sequence[str]) -> Any:
        matrix = self.counts(texts)
        # log(1 + |count|) from a correctly rounded table and an exactly rounded norm: the features
        # (and the ratings) are the same bits on every machine (winnow.core.exact).
        counts = np.abs(matrix.data).astype(np.int64)
        matrix.data = np.sign(matrix.data) * exact.log_of_counts(counts + 1)
        return exact.l2_normalise_rows(matrix)


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_SIGN_BIT = np.uint64(1 << 63)


def _mix64(keys: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 keys: wrap-around integer arithmetic, the same bits on every machine."""
    h = keys.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(30)
    h *= _MIX_1
    h ^= h >> np.uint64(27)
    h *= _MIX_2
    h ^= h >> np.uint64(31)
    return h


class HashedTokenNgrams:
    """Token 1–``ngram_max``-grams of a window's ids hashed into signed buckets, log(1+|count|), L2-normalised.

    With the score stage's shared run-tokenizer ids no window is decoded and split into words
    again; the bundled head does not use them (its required-expertise head was much weaker, see the
    model README), a head trained with ``--encoder hashed-tokens`` does. Hashing is
    splitmix64 on (id) and (id_a, id_b) keys in uint64 arithmetic and the counts are exact
    integers, so features, and ratings, are the same bits on every machine and in every batch.
    ``fold_case`` (off in the bundled head: it was compared on the choose split and not chosen)
    first maps each id to a canonical id for its text with case and surrounding whitespace
    removed, so " The", "the" and "THE" count as one feature, as they do in word features.

    ``tokenizer`` is the tokenizer the head was trained with (its content digest is recorded);
    windows cut by another run tokenizer are decoded and re-encoded with it.
    """

    def __init__(
        self,
        tokenizer: str = BUNDLED_TOKENIZER,
        n_features: int = 1 << 18,
        ngram_max: int = 2,
        fold_case: bool = False,
        tokenizer_sha256_16: str | None = None,
    ):
        if ngram_max not in (1, 2, 3):
            raise ValueError("hashed token n-grams are 1-, 1–2- or 1–3-grams")
        self.tokenizer_path = tokenizer
        self.n_features = int(n_features)
        self.ngram_max = int(ngram_max)
        self.fold_case = bool(fold_case)
        self.tokenizer = window_tokenizer(tokenizer)
        if tokenizer_sha256_16 is not None and tokenizer_sha256_16 != self.tokenizer.version:
            raise ValueError(
                f"the QuRater head was trained with tokenizer {tokenizer} of digest {tokenizer_sha256_16}, "
                f"but that path now holds {self.tokenizer.version}"
            )
        self._fold = _case_fold_table(tokenizer) if self.fold_case else None

    @property
    def tokenizer_version(self) -> str:
        return self.tokenizer.version

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hashed_tokens",
            "n_features": self.n_features,
            "ngram_max": self.ngram_max,
            "fold_case": self.fold_case,
            "tokenizer": self.tokenizer_path,
            "tokenizer_sha256_16": self.tokenizer.version,
        }

    def transform(self, texts: Sequence[str]) -> Any:
        """Features of whole texts (training excerpts; windows of another tokenizer)."""
        return self.from_ids(self.tokenizer.encode(list(texts)))

    def from_ids(self, windows: Sequence[Sequence[int]]) -> Any:
        """Features of windows given as ids of this featurizer's tokenizer (one CSR row per window)."""
        from scipy import sparse  # lazy: scipy only where this path runs

        n = len(windows)
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=n)
        ids = np.fromiter(itertools.chain.from_iterable(windows), dtype=np.int64, count=int(lengths.sum()))
        if self._fold is not None and len(ids):
            ids = self._fold[ids]
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        # Unigram keys are id + 1 (< 2^32); bigram keys put the first id in the high 32 bits, so the two never meet.
        keys = [ids.astype(np.uint64) + np.uint64(1)]
        key_rows = [rows]
        if self.ngram_max >= 2 and len(ids) > 1:
            pair = rows[1:] == rows[:-1]  # both tokens in the same window
            first, second = ids[:-1][pair].astype(np.uint64), ids[1:][pair].astype(np.uint64)
            keys.append(((first + np.uint64(1)) << np.uint64(32)) | (second + np.uint64(1)))
            key_rows.append(rows[:-1][pair])
        if self.ngram_max >= 3 and len(ids) > 2:
            triple = (rows[2:] == rows[1:-1]) & (rows[1:-1] == rows[:-2])
            a, b, c = (ids[i : len(ids) - 2 + i][triple].astype(np.uint64) for i in range(3))
            # A trigram key is the mixed bigram key folded with the third id (another domain than the two above).
            keys.append(_mix64(((a + np.uint64(1)) << np.uint64(32)) | (b + np.uint64(1))) ^ (c + np.uint64(1)))
            key_rows.append(rows[:-2][triple])
        hashed = _mix64(np.concatenate(keys))
        signs = np.where(hashed & _SIGN_BIT, -1, 1).astype(np.int64)
        buckets = ((hashed & ~_SIGN_BIT) % np.uint64(self.n_features)).astype(np.int64)
        counts = sparse.csr_matrix(
            (signs, (np.concatenate(key_rows), buckets)), shape=(n, self.n_features), dtype=np.int64
        )
        counts.sum_duplicates()
        counts.eliminate_zeros()
        # log(1 + |count|) from a correctly rounded table and an exactly rounded norm (winnow.core.exact).
        features = sparse.csr_matrix(
            (np.sign(counts.data) * exact.log_of_counts(np.abs(counts.data) + 1), counts.indices, counts.indptr),
            shape=counts.shape,
        )
        return exact.l2_normalise_rows(features)


@lru_cache(maxsize=4)
def _case_fold_table(path: str) -> np.ndarray:
    """id → the smallest id whose decoded text, stripped and lower-cased, is the same (the id itself when the
    token is whitespace only or not a whole character)."""
    tokenizer = window_tokenizer(path)
    size = tokenizer.vocab_size
    table = np.arange(size, dtype=np.int64)
    first: dict[str, int] = {}
    for token in range(size):
        text = tokenizer.decode([token])
        key = text.strip().lower()
        if not key or "\ufffd" in text:
            continue
        table[token] = first.setdefault(key, token)
    return table


@dataclass
class EmbeddingFeatures:
    """Frozen sentence embeddings (``static`` or ``minilm``) from ``winnow.core.embedders``."""

    encoder: str = "static"
    cache_dir: str | None = None
    _model: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"kind": "embedding", "encoder": self.encoder}

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model = sentence_encoder(self.encoder, self.cache_dir)
        return np.asarray(self._model.encode(list(texts)), dtype=np.float64)


Featurizer = HashedTokenNgrams | HashedNgrams | EmbeddingFeatures


def featurizer_from(spec: Mapping[str, Any], cache_dir: str | None = None) -> Featurizer:
    if spec.get("kind") == "hashed_tokens":
        return HashedTokenNgrams(
            str(spec["tokenizer"]),
            int(spec["n_features"]),
            int(spec.get("ngram_max", 2)),
            bool(spec.get("fold_case", False)),
            spec.get("tokenizer_sha256_16"),
        )
    if spec.get("kind") == "hashed":
        return HashedNgrams(int(spec["n_features"]), int(spec.get("ngram_max", 2)))
    if spec.get("kind") == "embedding":
        return EmbeddingFeatures(str(spec["encoder"]), cache_dir)
    raise ValueError(f"unknown featurizer {spec!r}")


def make_featurizer(encoder: str, cache_dir: str | None = None, tokenizer: str | None = None) -> Featurizer:
    """``hashed`` (default and the bundled head: word n-grams of each window's text), ``hashed-tokens``
    (n-grams of ``tokenizer``'s ids, the bundled BPE unless given: no decode, but a weaker
    required-expertise head, see the model README), ``static`` (``model2vec``, its former name) or ``minilm``."""
    if encoder == "hashed":
        return HashedNgrams()
    if encoder == "hashed-tokens":
        return HashedTokenNgrams(tokenizer or BUNDLED_TOKENIZER)
    if is_static(encoder) or encoder == "minilm":
        return EmbeddingFeatures(encoder, cache_dir)
    raise ValueError(f"unknown encoder {encoder!r}; use hashed, hashed-tokens, static or minilm")


# --- training ------------------------------------------------------------------------------------


def fit_bt_head(
    features: Any, pairs: Pairs, n_outputs: int = len(CRITERIA), l2: float = 1e-4, max_iter: int = 500
) -> np.ndarray:
    """The bias-free linear head W (d × n_outputs) minimising the BT loss + ½·l2·‖W‖².

    Full-batch L-BFGS from W = 0: deterministic, no learning-rate schedule to tune on a frozen
    backbone (the paper's AdamW recipe is for fine-tuning the whole LM). A bias would cancel in
    s_j − s_i, which is why the head has none.
    """
    from scipy import sparse  # lazy: scipy only where this path runs
    from scipy.optimize import minimize  # lazy: scipy only where this path runs

    n, d = features.shape
    # Pair-difference design matrix per output: row p = x_j − x_i; s_j − s_i = D_c · w_c.
    designs = []
    for c in range(n_outputs):
        mask = pairs.criterion == c
        rows = np.arange(int(mask.sum()))
        delta = sparse.csr_matrix(
            (
                np.concatenate([np.ones(len(rows)), -np.ones(len(rows))]),
                (np.concatenate([rows, rows]), np.concatenate([pairs.right[mask], pairs.left[mask]])),
            ),
            shape=(len(rows), n),
        )
        design = delta @ features
        designs.append((design, pairs.label[mask]))
    total = max(len(pairs), 1)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weights = flat.reshape(d, n_outputs)
        loss = 0.5 * l2 * float(np.sum(weights * weights))
        grad = l2 * weights.copy()
        for c, (design, y) in enumerate(designs):
            if design.shape[0] == 0:
                continue
            margin = np.asarray(design @ weights[:, c]).ravel()
            loss += float(np.sum(np.logaddexp(0.0, margin) - y * margin)) / total
            residual = 1.0 / (1.0 + np.exp(-margin)) - y
            grad[:, c] += np.asarray(design.T @ residual).ravel() / total
        return loss, grad.ravel()

    result = minimize(
        objective, np.zeros(d * n_outputs), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-9}
    )
    return result.x.reshape(d, n_outputs)


def split_groups(groups: Sequence[JudgmentGroup], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, validation) groups: a group goes to validation when u(group) < fraction."""
    train, held = [], []
    for i, group in enumerate(groups):
        (held if uniform(group.group_id or str(i), "qurating:validation", seed) < fraction else train).append(i)
    return train, held


@dataclass
class QuRaterHead:
    """A trained local QuRater: featurizer spec, head W (d × 4), provenance."""

    weights: np.ndarray
    featurizer: dict[str, Any]
    criteria: tuple[str, ...] = CRITERIA
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """A .npz written with fixed zip timestamps, so retraining gives a byte-identical file."""
        header = {"format": MODEL_FORMAT, "criteria": list(self.criteria), "featurizer": self.featurizer, **self.meta}
        arrays = {
            "weights": np.ascontiguousarray(self.weights, dtype=np.float32),
            "meta": np.array(json.dumps(header, sort_keys=True)),
        }
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QuRaterHead:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            weights = np.asarray(data["weights"], dtype=np.float32)
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"{path} is not a winnow QuRater head (format {meta.get('format')!r})")
        criteria = tuple(meta.pop("criteria"))
        featurizer = meta.pop("featurizer")
        meta.pop("format")
        return cls(weights, featurizer, criteria, meta)


def excerpt(text: str, doc_id: str, tokenizer: Any, seed: int, max_tokens: int = WINDOW_TOKENS) -> str:
    """A docs/qurating.md#judgments excerpt: length 512 with probability ½, else uniform in [256, 512] tokens, random
    start.

    Draws come from the document id (``uniform``), so excerpts do not depend on file order.
    """
    ids = tokenizer.encode([text])[0]
    length = max_tokens
    if uniform(doc_id, "qurating:excerpt-full", seed) >= 0.5:
        length = max_tokens // 2 + int(uniform(doc_id, "qurating:excerpt-len", seed) * (max_tokens // 2 + 1))
    if len(ids) <= length:
        return text
    start = int(uniform(doc_id, "qurating:excerpt-start", seed) * (len(ids) - length + 1))
    return tokenizer.decode(ids[start : start + length])


def excerpt_records(
    records: Iterable[Mapping[str, Any]], tokenizer: Any, seed: int, per_doc: int = 1
) -> list[dict[str, Any]]:
    """Each pointwise record cut into up to ``per_doc`` docs/qurating.md#judgments excerpts (ids ``<id>#<k>``), labels
    kept."""
    out = []
    for record in records:
        for k in range(per_doc):
            doc_id = f"{record['id']}#{k}"
            text = excerpt(str(record["text"]), doc_id, tokenizer, seed)
            out.append({**record, "id": doc_id, "text": text})
            if text == record["text"]:  # short enough to be its own excerpt: once is enough
                break
    return out


def derived_pair_groups(
    records: Iterable[Mapping[str, Any]], criteria: Sequence[str] = CRITERIA, seed: int = 0, max_pairs: int = 4000
) -> list[JudgmentGroup]:
    """Judgment groups built from pointwise labels: per criterion, each high doc against a low doc.

    ``records`` hold ``text``, ``id`` and ``labels: {criterion: 1 (high) | 0 (low)}``. For a
    criterion, highs and lows are each put in hash order and paired round-robin (so every doc is
    used and no list order leaks in), up to ``max_pairs``; a pair is a k = 2 group whose matrix
    says the high text wins with probability 1 and whose other criteria are missing.
    """
    rows = list(records)
    groups: list[JudgmentGroup] = []
    for c, criterion in enumerate(criteria):
        high = [r for r in rows if r.get("labels", {}).get(criterion) == 1]
        low = [r for r in rows if r.get("labels", {}).get(criterion) == 0]
        if not high or not low:
            continue
        high.sort(key=lambda r: h64(str(r["id"]), f"qurating:pair:{criterion}", seed))
        low.sort(key=lambda r: h64(str(r["id"]), f"qurating:pair:{criterion}", seed))
        n = min(max(len(high), len(low)), max_pairs)
        for p in range(n):
            good, bad = high[p % len(high)], low[p % len(low)]
            # Order inside the group from a hash, so the winner is not always in the same slot.
            flip = h64(f"{good['id']}|{bad['id']}", "qurating:slot", seed + c) & 1
            texts = [str(bad["text"]), str(good["text"])] if flip else [str(good["text"]), str(bad["text"])]
            winner = 1 if flip else 0
            matrix = np.full((2, 2), MISSING)
            matrix[1 - winner, winner] = 1.0
            matrix[winner, 1 - winner] = 0.0
            labels = {name: np.full((2, 2), MISSING) for name in criteria}
            labels[criterion] = matrix
            groups.append(JudgmentGroup(texts, labels, f"{criterion}:{good['id']}|{bad['id']}"))
    return groups


def train_qurater(
    groups: Sequence[JudgmentGroup],
    featurizer: Featurizer,
    *,
    threshold: float = 0.5,
    temperature: float = 1.0,
    validation: float = 0.1,
    seed: int = 0,
    l2: float = 1e-4,
    criteria: Sequence[str] = CRITERIA,
    mode: str = "judgments",
) -> tuple[QuRaterHead, dict[str, Any]]:
    """Split 90/10 by group, filter the training labels, fit the BT head, report held-out accuracy.

    Held-out labels are not confidence-filtered, so the ≥50% / ≥80% confidence buckets of the
    diagnostics mean what they say and "overall" includes the hard, near-even pairs.
    """
    groups = list(groups)
    train_idx, held_idx = split_groups(groups, validation, seed)
    prepared, filter_stats = prepare_groups([groups[i] for i in train_idx], threshold, temperature)
    train_texts, train_pairs = flatten(prepared, criteria)
    if not len(train_pairs):
        raise ValueError("no confident training pairs left after the confidence filter")
    weights = fit_bt_head(featurizer.transform(train_texts), train_pairs, len(criteria), l2)
    report: dict[str, Any] = {
        "mode": mode,
        "criteria": list(criteria),
        "featurizer": featurizer.describe(),
        "confidence_threshold": threshold,
        "label_temperature": temperature,
        "validation_fraction": validation,
        "seed": seed,
        "l2": l2,
        "filter": filter_stats,
        "train_groups": len(prepared),
        "validation_groups": len(held_idx),
        "train_pairs": len(train_pairs),
        "train_loss": bt_loss(_scores(featurizer.transform(train_texts), weights), train_pairs),
    }
    if held_idx:
        held = [
            JudgmentGroup(
                groups[i].texts,
                {c: temper_labels(m, temperature) for c, m in groups[i].labels.items()},
                groups[i].group_id,
            )
            for i in held_idx
        ]
        held_texts, held_pairs = flatten(held, criteria)
        held_scores = _scores(featurizer.transform(held_texts), weights)
        report["validation_loss"] = bt_loss(held_scores, held_pairs) if len(held_pairs) else None
        report["validation"] = {
            criterion: pairwise_accuracy(held_scores, held_pairs.subset(held_pairs.criterion == c))
            for c, criterion in enumerate(criteria)
        }
        report["validation"]["all"] = pairwise_accuracy(held_scores, held_pairs)
    head = QuRaterHead(weights.astype(np.float32), featurizer.describe(), tuple(criteria), {"mode": mode})
    return head, report


def _scores(features: Any, weights: np.ndarray) -> np.ndarray:
    return np.asarray(features @ weights)


# --- inference -----------------------------------------------------------------------------------


def windows(ids: Sequence[int], size: int = WINDOW_TOKENS) -> list[Sequence[int]]:
    """Consecutive windows of ``size`` tokens; the last may be shorter; none for an empty document."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def assemble(
    window_scores: np.ndarray, owners: Sequence[int], lengths: Sequence[int], n_docs: int, criteria: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-document columns from the flat window scores (window w belongs to document owners[w]).

    The average is Σ n_w·s_w / Σ n_w over the float32 window ratings s_w and lengths n_w: each
    product is exact in float64 (24-bit ratings times lengths far below 2^29) and ``math.fsum``
    rounds their sum once, so it never depends on the CPU or the order. A document with no tokens
    gets its single (empty) window's rating.
    """
    order = np.argsort(np.asarray(owners, dtype=np.int64), kind="stable")  # windows of a doc together, in order
    bounds = np.concatenate([[0], np.cumsum(np.bincount(np.asarray(owners, dtype=np.int64), minlength=n_docs))])
    bounds_list = bounds.tolist()
    window_lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)[order]
    scores = np.asarray(window_scores, dtype=np.float32).reshape(len(order), -1)[order]
    ratings = scores.T.tolist()
    products = (scores.astype(np.float64) * window_lengths[:, None].astype(np.float64)).T.tolist()
    lengths_list = window_lengths.tolist()
    totals = [sum(lengths_list[bounds_list[d] : bounds_list[d + 1]]) for d in range(n_docs)]
    out: dict[str, np.ndarray] = {}
    for c, criterion in enumerate(criteria):
        chunks = np.empty(n_docs, dtype=object)
        average = np.zeros(n_docs, dtype=np.float32)
        rated, weighted = ratings[c], products[c]
        for d in range(n_docs):
            a, b = bounds_list[d], bounds_list[d + 1]
            chunks[d] = rated[a:b]
            if totals[d] > 0:
                average[d] = math.fsum(weighted[a:b]) / float(totals[d])
            else:  # no tokens: the single (empty) window's rating
                average[d] = rated[a] if b > a else 0.0
        out[f"{criterion}_chunks"] = chunks
        out[f"{criterion}_average"] = average
    chunk_lengths = np.empty(n_docs, dtype=object)
    for d in range(n_docs):
        chunk_lengths[d] = lengths_list[bounds_list[d] : bounds_list[d + 1]]
    out["chunk_lengths"] = chunk_lengths
    out["length"] = np.array(totals, dtype=np.int64)
    return out


def split_documents(token_ids: Sequence[Sequence[int]], size: int) -> tuple[list[Sequence[int]], list[int]]:
    """Every document's windows, flat, and the document each belongs to (an empty doc: one empty window)."""
    flat: list[Sequence[int]] = []
    owners: list[int] = []
    for d, ids in enumerate(token_ids):
        parts = windows(ids, size) or [ids[:0]]
        flat.extend(parts)
        owners.extend([d] * len(parts))
    return flat, owners


class WindowTokenizer(Tokenizer):
    """The run tokenizer (``winnow.core.tokenizer.Tokenizer``, so ``length`` equals ``n_tokens``) that also cuts
    windows back into text, without an end-of-text requirement: any run tokenizer works, whatever its EOS is called.
    """

    def __init__(self, path: str):
        super().__init__(path, eos_token=None)
        self._byte_lengths = _token_byte_lengths(self._tokenizer) if self.round_trips else None

    def window_texts(self, texts: Sequence[str], token_ids: Sequence[Sequence[int]], size: int) -> list[str]:
        """``decode`` of every window ``split_documents(token_ids, size)`` cuts, in its order.

        A byte-level BPE that round-trips (``byte_level_round_trip``) decodes a window to the UTF-8
        bytes of the text it covers, read as UTF-8 (a character cut at the window's edge becomes
        U+FFFD): so a document of one window is its text, and a window whose bytes are valid UTF-8 is
        that slice of the text's bytes, found from the tokens' byte lengths. Other windows (a cut
        character) and other tokenizers are decoded.
        """
        out: list[str] = []
        table = self._byte_lengths
        for text, ids in zip(texts, token_ids, strict=True):
            if not len(ids):
                out.append("")
            elif table is not None and len(ids) <= size:
                out.append(text)
            else:
                out.extend(self._cut(text, ids, size) if table is not None else self._decoded(ids, size))
        return out

    def _decoded(self, ids: Sequence[int], size: int) -> list[str]:
        return [self.decode(ids[start : start + size]) for start in range(0, len(ids), size)]

    def _cut(self, text: str, ids: Sequence[int], size: int) -> list[str]:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let the tokenizer decode
            return self._decoded(ids, size)
        ends = np.cumsum(self._byte_lengths[np.asarray(ids, dtype=np.int64)])  # type: ignore[index]
        if int(ends[-1]) != len(data):  # not this text's ids: decode rather than guess
            return self._decoded(ids, size)
        bounds = [0, *ends[size - 1 :: size].tolist()]
        if bounds[-1] != len(data):
            bounds.append(len(data))
        texts = []
        for w in range(len(bounds) - 1):
            try:
                texts.append(data[bounds[w] : bounds[w + 1]].decode("utf-8"))
            except UnicodeDecodeError:  # a character split between windows: U+FFFD as the tokenizer writes it
                texts.append(self.decode(ids[w * size : (w + 1) * size]))
        return texts

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))


def _token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """Bytes each id decodes to under the ByteLevel decoder: one per character of a byte-level token, the UTF-8
    length of an added token's text (whose characters are not all byte symbols)."""
    from tokenizers.pre_tokenizers import ByteLevel  # lazy: tokenizers only when a tokenizer is loaded

    alphabet = set(ByteLevel.alphabet())
    lengths = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
        lengths[token_id] = len(token) if set(token) <= alphabet else len(token.encode("utf-8"))
    return lengths


@lru_cache(maxsize=4)
def window_tokenizer(path: str) -> WindowTokenizer:
    """One window tokenizer per process and path (scorers are built in ``DoFn.setup``)."""
    return WindowTokenizer(path)


class LocalQuRater:
    """A local-mode QuRater: run tokenizer windows → hashed/embedding features → BT head."""

    def __init__(
        self,
        path: str | os.PathLike[str] = BUNDLED_QURATER,
        name: str = "qurating",
        tokenizer: str | None = None,
        window_tokens: int = WINDOW_TOKENS,
        cache_dir: str | None = None,
    ):

        local = resolve_model_path(path, cache_dir)
        self.head = QuRaterHead.load(local)
        self.featurizer = featurizer_from(self.head.featurizer, cache_dir)
        self.tokenizer = window_tokenizer(tokenizer or BUNDLED_TOKENIZER)
        self.window_tokens = window_tokens
        self.name = name
        self.mode = str(self.head.meta.get("mode", "judgments"))
        self.version = f"qurating-local:{self.mode}:{file_digest(local)}:{self.tokenizer.version}:{window_tokens}"
        self.columns = qurating_columns(self.head.criteria)
        self._layer: exact.QuantizedLinear | None = None

    def _apply(self, features: Any) -> np.ndarray:
        if self._layer is None:
            self._layer = exact.QuantizedLinear(self.head.weights)
        return self._layer.apply(features)

    def rate_windows(self, texts: Sequence[str]) -> np.ndarray:
        """Ratings (n × 4) of texts that are already windows (an exact integer linear layer)."""
        return self._apply(self.featurizer.transform(list(texts)))

    def rate_token_windows(self, token_windows: Sequence[Sequence[int]]) -> np.ndarray:
        """Ratings (n × 4) of windows given as run-tokenizer ids: token features straight from the ids when the
        head was trained on this tokenizer, else the windows' text."""
        featurizer = self.featurizer
        if isinstance(featurizer, HashedTokenNgrams) and featurizer.tokenizer_version == self.tokenizer.version:
            return self._apply(featurizer.from_ids(token_windows))
        return self.rate_windows([self.tokenizer.decode(w) if len(w) else "" for w in token_windows])

    def score_tokenized(self, batch: TokenizedTexts) -> dict[str, np.ndarray]:
        """``score`` on a batch whose run-tokenizer ids may be computed already (the score stage's n_tokens)."""
        token_ids = batch.token_ids(self.tokenizer)
        flat, owners = split_documents(token_ids, self.window_tokens)
        featurizer = self.featurizer
        if isinstance(featurizer, HashedTokenNgrams) and featurizer.tokenizer_version == self.tokenizer.version:
            scores = self.rate_token_windows(flat)
        else:  # the windows' text, cut from the documents where that equals decoding them
            scores = self.rate_windows(self.tokenizer.window_texts(batch.texts, token_ids, self.window_tokens))
        return assemble(scores, owners, [len(w) for w in flat], len(batch), self.head.criteria)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.score_tokenized(TokenizedTexts(texts))


class ReferenceQuRater:
    """Reference mode: a local QuRater checkpoint (Llama sequence classifier, one logit per criterion).

    As the reference annotator: the checkpoint's own tokenizer without special tokens, 512-token
    windows, right padding, and each window's logits read at its final real token.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "qurating",
        window_tokens: int = WINDOW_TOKENS,
        batch_size: int = 16,
        device: str = "cpu",
        criteria: Sequence[str] = CRITERIA,
    ):
        import torch  # lazy: torch only for transformer models
        from transformers import (  # lazy: transformers only for reference-mode checkpoints
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        folder = resolve_model_path(path)
        self._torch = torch
        self.device = torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
        self.model.eval().to(self.device)
        if int(self.model.config.num_labels) != len(criteria):
            raise ValueError(f"checkpoint has {self.model.config.num_labels} labels, QuRating needs {len(criteria)}")
        self.criteria = tuple(criteria)
        self.window_tokens = window_tokens
        self.batch_size = batch_size
        self.name = name
        self.mode = "reference"
        self.version = f"qurating-reference:{file_digest(folder)}:{window_tokens}"
        self.columns = qurating_columns(self.criteria)

    def rate_windows(self, token_windows: Sequence[Sequence[int]]) -> np.ndarray:
        torch = self._torch
        scores = np.zeros((len(token_windows), len(self.criteria)), dtype=np.float64)
        order = sorted(range(len(token_windows)), key=lambda i: (len(token_windows[i]), i))
        backbone = self.model.base_model
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = [i for i in order[start : start + self.batch_size] if len(token_windows[i])]
                if not rows:
                    continue
                width = max(len(token_windows[i]) for i in rows)
                input_ids = torch.zeros((len(rows), width), dtype=torch.long)
                attention = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    input_ids[r, : len(token_windows[i])] = torch.tensor(list(token_windows[i]), dtype=torch.long)
                    attention[r, : len(token_windows[i])] = 1
                hidden = backbone(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), use_cache=False
                ).last_hidden_state
                last = torch.tensor([len(token_windows[i]) - 1 for i in rows], device=hidden.device)
                # The head reads the final real token (right padding), as LlamaForSequenceClassification does.
                pooled = hidden[torch.arange(len(rows), device=hidden.device), last]
                logits = self.model.score(pooled).float().cpu().numpy()
                scores[rows] = logits
        return scores

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=False, padding=False)["input_ids"]
        flat, owners = split_documents(ids, self.window_tokens)
        scores = self.rate_windows(flat)
        return assemble(scores, owners, [len(w) for w in flat], len(texts), self.criteria)


def is_reference_checkpoint(path: str | os.PathLike[str]) -> bool:
    local = Path(os.fspath(path))
    return local.is_dir() and (local / "config.json").exists()


def build_qurater(
    path: str,
    name: str = "qurating",
    tokenizer: str | None = None,
    window_tokens: int = WINDOW_TOKENS,
    batch_size: int = 16,
    device: str = "cpu",
    cache_dir: str | None = None,
) -> LocalQuRater | ReferenceQuRater:
    """Reference mode for a checkpoint directory, local mode for a winnow head file."""
    local = resolve_model_path(path, cache_dir)
    if is_reference_checkpoint(local):
        return ReferenceQuRater(local, name, window_tokens, batch_size, device)
    return LocalQuRater(local, name, tokenizer, window_tokens, cache_dir)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr  # lazy: scipy only where this path runs

    value = spearmanr(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).statistic
    return float(value) if value is not None and math.isfinite(float(value)) else float("nan")


class QuRatingOptions(ScorerOptions):
    """``backend: qurating``: a local QuRater checkpoint (reference mode) or a winnow head file (local mode)."""

    backend: Literal["qurating"]
    window_tokens: int = Field(
        WINDOW_TOKENS, gt=0, description="Tokens per rated window; a document's rating is the token-weighted mean."
    )
    tokenizer: str | None = Field(
        None,
        description="Local mode: tokenizer JSON that cuts the windows; default the run's tokenizer. Reference mode "
        "always uses the checkpoint's own tokenizer.",
    )
    device: str = Field("cpu", description="Reference mode: `cpu`, `cuda`, `cuda:N` or `auto`.")

    def build(self) -> LocalQuRater | ReferenceQuRater:
        return build_qurater(
            self.path,
            self.name,
            self.tokenizer,
            self.window_tokens,
            min(self.batch_size, 32),
            self.device,
            self.cache_dir,
        )

    def fields(self) -> list[pa.Field]:
        return qurating_fields()  # the fixed contract: per-criterion chunks and average, window lengths

    def with_run_tokenizer(self, tokenizer: TokenizerConfig) -> QuRatingOptions:
        # Local mode cuts its windows with the run's tokenizer unless the entry names another.
        return self if self.tokenizer is not None else self.model_copy(update={"tokenizer": tokenizer.path})
