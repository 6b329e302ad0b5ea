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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from winnow.core.causal_lm import LogitsModel, PositionStats, load_causal_lm
from winnow.stages.score.causal_lm_config import CausalLMScorerConfig
from winnow.stages.score.scorer import ScoreColumn

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
    """A scorer (``winnow.scorers.base.Scorer``) writing ``<prefix>_mean_nll`` … ``<prefix>_model``."""

    def __init__(self, config: CausalLMScorerConfig, model: LogitsModel | None = None):
        self.config = config
        self.model = model or load_causal_lm(
            config.path,
            gguf_file=config.gguf_file,
            device=config.device,
            threads=config.threads,
            bos=config.bos,
            batch_tokens=config.batch_tokens,
        )
        self.name = config.name
        self.model_label = self.model.describe()
        self.version = self.model_label
        p = config.column_prefix
        self.columns = (
            *(ScoreColumn(f"{p}_{s}", pa.float32()) for s in STATISTICS),
            ScoreColumn(f"{p}_tokens", pa.int32()),
            ScoreColumn(f"{p}_model", pa.string()),
        )

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Statistics of each text (``unit: document``)."""
        return self.score_token_sequences(self.model.encode(list(texts)))

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
