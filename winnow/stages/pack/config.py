"""Config section of the ``pack`` stage: ICP concat-and-chunk contexts, Dataset Decomposition buckets, or
Untie the Knots contexts (``pack.utk``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section
from winnow.stages.pack.utk_config import UtkConfig


class PackConfig(Section):
    """How ordered documents become training sequences (docs/icp.md#packing, docs/dataset-decomposition.md,
    docs/untie-the-knots.md)."""

    enabled: bool | None = Field(
        None, description="Run this stage; null (the default): whenever `order` runs, as packing always did."
    )

    mode: Literal["concat", "dd", "utk", "none"] = Field(
        "concat",
        description=(
            "concat: join docs in order_rank order with EOS and cut contexts of exactly "
            "context_tokens (ICP, docs/icp.md#packing); dd: split each doc into power-of-two pieces per "
            "bucket (Dataset Decomposition, docs/dataset-decomposition.md); utk: windows of context_tokens + 1 "
            "tokens of the same stream, cut, shuffled and knotted by Untie the Knots (`pack.utk`); none: no "
            "packing tables."
        ),
    )
    context_tokens: int = Field(
        8192,
        ge=2,
        description="Context length L in tokens (ICP paper: 8192). utk: each context holds L + 1 tokens "
        "(L predictions; UtK-192K for a 128K target is 196,608).",
    )
    shuffle_contexts: bool = Field(
        True,
        description="Give contexts a seeded training position, so adjacent contexts in a batch are unrelated (ICP).",
    )
    rank_block: int = Field(
        4096,
        ge=1,
        description="Consecutive order_ranks per block for the distributed prefix sum of token offsets. utk with "
        "`overflow: defer`: also the bundle one packer streams (displaced tokens never cross a block).",
    )
    i_min: int = Field(8, ge=1, le=30, description="Smallest DD bucket exponent (2^8 = 256 tokens).")
    i_max: int = Field(13, ge=1, le=30, description="Largest DD bucket exponent (2^13 = 8192 tokens).")
    randomized: bool = Field(
        True,
        description=(
            "Overflow pieces of long docs draw k in [i_min, i_max] with P(k) ∝ 2^(i_max-k) "
            "(reference default) instead of always i_max."
        ),
    )
    target_token: bool = Field(
        True,
        description="Pieces hold 2^i + 1 tokens (reference: 2^i prediction targets); false: exactly 2^i.",
    )
    curriculum: Literal["grow_p2", "uniform"] = Field(
        "grow_p2",
        description="Bucket sampling curriculum written to the manifest for the trainer "
        "(docs/dataset-decomposition.md#training-side-contract).",
    )
    cycles: int = Field(8, ge=1, description="Curriculum cycles (reference recipe: 8).")
    b_max: int = Field(1, ge=1, description="Batch size of the longest bucket; bucket i uses b_max * 2^(i_max - i).")
    shard_tokens_log2: int = Field(
        20, ge=1, description="Shard size is min(2^(shard_tokens_log2 - i), max_shard_sequences) sequences."
    )
    max_shard_sequences: int = Field(65536, ge=1, description="Cap on sequences per DD shard (reference: 65,536).")
    utk: UtkConfig = Field(
        default_factory=UtkConfig, description="mode utk: chunk law, knots, backtracing, overflow (Untie the Knots)."
    )

    @model_validator(mode="after")
    def _bucket_range_is_ordered(self) -> PackConfig:
        if self.i_min > self.i_max:
            raise ValueError(f"pack.i_min ({self.i_min}) must be <= pack.i_max ({self.i_max})")
        return self
