"""Configuration of MinHash near-duplicate removal (docs/dedup.md#in-winnow).

A preset fills every setting the user leaves out; a setting given explicitly always wins.
``threshold`` without ``bands``/``rows`` derives them as datasketch's ``MinHashLSH`` does.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from winnow.core.config import Section
from winnow.stages.dedup.minhash import optimal_bands

PRESETS: dict[str, dict[str, Any]] = {
    # datatrove / FineWeb: 5-grams, 112 permutations as 14 bands × 8 rows (midpoint ≈ 0.72).
    "fineweb": {"ngram": 5, "num_perm": 112, "bands": 14, "rows": 8},
    # datasketch MinHashLSH(threshold=0.8, num_perm=128): 9 bands × 13 rows (midpoint ≈ 0.84).
    "datasketch-0.8-128": {"ngram": 5, "num_perm": 128, "threshold": 0.8},
    # SlimPajama: 13-grams, Jaccard 0.8, through MinHashLSH with 128 permutations (9 × 13).
    "slimpajama": {"ngram": 13, "num_perm": 128, "threshold": 0.8},
}

_KEEP = re.compile(r"^(lowest_id|longest|score:[A-Za-z_][A-Za-z0-9_.]*)$")


class MinHashConfig(Section):
    """MinHash LSH near-duplicate removal: signatures, banding, verification, clusters, keeper."""

    enabled: bool = Field(True, description="Run MinHash near-duplicate removal (after exact dedup).")
    preset: Literal["fineweb", "datasketch-0.8-128", "slimpajama"] = Field(
        "fineweb",
        description="Defaults for ngram, num_perm, bands/rows or threshold: `fineweb` (5-grams, 14 × 8), "
        "`datasketch-0.8-128` (threshold 0.8 → 9 × 13), `slimpajama` (13-grams, threshold 0.8 → 9 × 13). "
        "Explicit settings override the preset.",
    )
    ngram: int = Field(
        5, ge=1, le=64, description="Shingle size: words per word n-gram, or characters per character n-gram."
    )
    shingle: Literal["word", "char"] = Field(
        "word",
        description="`word`: n-grams of words of the datatrove-simplified text (characters of scripts "
        "written without spaces, such as Chinese, Japanese and Thai, count as one word each); "
        "`char`: n-grams of characters of the simplified text.",
    )
    hash: Literal["poly64", "xxh64"] = Field(
        "poly64",
        description="64-bit shingle hash. `poly64`: winnow's vectorised polynomial hash (the whole stage runs about "
        "1.8× faster); `xxh64`: xxhash of each shingle string, as datatrove and datasketch users do. "
        "Either way the signature equals datasketch 2.0 `MinHash(hashfunc=<that hash>)`.",
    )
    scheme: Literal["affine64", "mersenne61"] = Field(
        "affine64",
        description="Permutations. `affine64`: datasketch 2.0's 64-bit scheme (fmix64 pre-mix, then "
        "a·x + b mod 2^64, a odd), bit-equal to `MinHash(scheme='affine64')`; `mersenne61`: datatrove's "
        "(a·x + b) mod (2^61 − 1) with its parameter draw.",
    )
    num_perm: int = Field(112, ge=1, le=1024, description="Permutations per signature.")
    bands: int | None = Field(14, ge=1, description="LSH bands; null derives bands and rows from `threshold`.")
    rows: int | None = Field(8, ge=1, description="Rows (signature values) per band; bands × rows ≤ num_perm.")
    seed: int = Field(1, ge=0, description="Seed of the permutation parameters (datatrove and datasketch use 1).")
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Target Jaccard. With bands/rows unset, they are chosen to minimise the weighted "
        "false-positive and false-negative areas (datasketch's integral optimisation).",
    )
    fp_weight: float = Field(0.5, ge=0.0, description="Weight of the false-positive area when deriving bands/rows.")
    fn_weight: float = Field(0.5, ge=0.0, description="Weight of the false-negative area when deriving bands/rows.")
    verify: bool = Field(
        True,
        description="Keep a candidate pair only if its signatures agree on at least `verify_threshold` of "
        "the permutations (removes LSH false positives; datatrove and FineWeb do not verify).",
    )
    verify_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Minimum estimated Jaccard of a verified pair; null uses `threshold` if set, else the "
        "S-curve midpoint (1/bands)^(1/rows) (0.72 for 14 × 8).",
    )
    max_bucket_size: int = Field(
        1000,
        ge=2,
        description="A bucket (same band hash) with more members is split into sub-buckets of this size "
        "linked through their minima, so no document gets more than this many candidate edges; "
        "counted in `dedup:minhash_hot_buckets`.",
    )
    keep: str = Field(
        "lowest_id",
        description="Which document of a cluster is kept: `lowest_id`, `longest` (most characters), or "
        "`score:<column>` (highest value of a score a previous stage set; missing scores lose). Ties "
        "break by xxh64 of the id, then the id.",
    )
    index_dir: str | None = Field(
        None,
        description="Incremental index: band table of earlier runs (Parquet, `band=<i>/part-*.parquet`). "
        "New documents that match it are removed as duplicates of the indexed id, and the bands of "
        "this run's kept documents are appended.",
    )
    max_rounds: int = Field(
        8,
        ge=1,
        le=64,
        description="Rounds of the connected-components contraction (one grouping each). Chains of "
        "10^5 near-duplicates converge in 7 rounds at 8 shards, 10 at 32; stars in 1. Nodes left "
        "unconverged are counted in `dedup:components_unconverged` (their cluster stays split).",
    )
    min_words: int = Field(
        0,
        ge=0,
        description="Documents with fewer words than this are not deduplicated (a document with fewer "
        "words than `ngram` has no shingle and is never a near-duplicate anyway).",
    )
    verify_text: bool = Field(
        True,
        description="Remove a document only when its text-level similarity (`text_similarity`) with the kept "
        "document of its cluster reaches `text_threshold`; others stay, counted in `dedup:minhash_unverified`. "
        "Clusters are transitive (A~B, B~C joins A and C), so without this a chain of near-duplicates can "
        "remove documents that share little with the one kept (marin#6854). Matches to an earlier run's "
        "`index_dir` are not verified: the index holds bands, not text.",
    )
    text_similarity: Literal["jaccard", "containment"] = Field(
        "jaccard",
        description="`jaccard`: |A∩B| / |A∪B| of the two documents' shingle sets (the same shingles as the "
        "signatures, exact, not estimated); `containment`: |A∩B| / |A|, the share of the removed document's "
        "shingles found in the kept one (a short excerpt of a long page counts as a duplicate).",
    )
    text_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Minimum text-level similarity for a removal; null uses the verification threshold "
        "(`verify_threshold`, else `threshold`, else the S-curve midpoint).",
    )
    max_cluster_size: int = Field(
        1000,
        ge=2,
        description="Clusters with more documents are listed in the manifest's `dedup` section (largest first) "
        "and counted in `dedup:minhash_oversized_clusters`. They are verified like any cluster; with "
        "`verify_text: false` they are kept whole instead of collapsed onto one document.",
    )
    batch_size: int = Field(512, ge=1, description="Documents per vectorised signature batch.")
    shards: int = Field(
        8,
        ge=1,
        description="Keys per grouping of band entries, signatures and edges. A key holds about "
        "N / shards band entries and signatures, and a step emits up to shards² batches, so keep it "
        "small locally and raise it with the corpus (≈ N / 100,000 for N documents).",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = PRESETS.get(data.get("preset", "fineweb"), {})
        merged = {**preset, **data}
        if merged.get("threshold") is not None and "bands" not in data and "rows" not in data:
            # A threshold (the user's or the preset's) derives the banding unless the user
            # gave bands and rows explicitly.
            merged["bands"] = merged["rows"] = None
        return merged

    @model_validator(mode="after")
    def _check(self) -> MinHashConfig:
        if not _KEEP.match(self.keep):
            raise ValueError(f"keep must be lowest_id, longest or score:<column>, got {self.keep!r}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then threshold derives them)")
        if self.bands is None and self.threshold is None:
            raise ValueError("bands/rows are unset, so threshold is needed to derive them")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def banding(self) -> tuple[int, int]:
        """(bands, rows): as set, or derived from ``threshold``."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows

        assert self.threshold is not None
        return optimal_bands(self.threshold, self.num_perm, self.fp_weight, self.fn_weight)

    def effective_text_threshold(self) -> float:
        return self.text_threshold if self.text_threshold is not None else self.effective_verify_threshold()

    def effective_verify_threshold(self) -> float:
        if self.verify_threshold is not None:
            return self.verify_threshold
        if self.threshold is not None:
            return self.threshold
        bands, rows = self.banding()
        return (1.0 / bands) ** (1.0 / rows)


class ExactDedupConfig(Section):
    """Exact duplicates: documents whose normalised text hashes the same."""

    enabled: bool = Field(True, description="Run exact dedup.")
    key: Literal["text", "normalized"] = Field(
        "normalized",
        description="`normalized` hashes casefolded NFKC text with whitespace collapsed; `text` hashes the text as is.",
    )
    keep: Literal["lowest_id", "longest"] = Field(
        "lowest_id", description="Which copy is kept: the lowest id, or the longest text (ties by id)."
    )


class ParagraphDedupConfig(Section):
    """Cross-document paragraph (line) dedup, C4/Dolma style: a repeated line keeps one copy."""

    enabled: bool = Field(
        False,
        description="Run paragraph dedup after MinHash. Off by default: it rewrites documents based on the "
        "rest of the corpus (a page's text depends on which other pages were read) and costs one shuffle "
        "record per line; docs/release-safety.md has the measured share removed.",
    )
    min_chars: int = Field(
        50,
        ge=1,
        description="Lines shorter than this (after whitespace folding) are never keyed or removed "
        '("Home", "Share", "Read more" repeat across unrelated pages).',
    )
    max_removed_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A document that loses more than this share of its characters is removed as "
        "`dedup:paragraph`, a duplicate of the document holding most of its removed text (`[ours]`).",
    )


class DedupConfig(Section):
    """Deduplication: exact first, then MinHash near-duplicates, then (when enabled) repeated paragraphs."""

    enabled: bool = Field(True, description="Run this stage.")
    exact: ExactDedupConfig = Field(default_factory=ExactDedupConfig, description="Exact-hash dedup.")
    minhash: MinHashConfig = Field(
        default_factory=MinHashConfig,
        description="MinHash LSH near-duplicate removal (docs/dedup.md#minhash-near-duplicates).",
    )
    paragraph: ParagraphDedupConfig = Field(
        default_factory=ParagraphDedupConfig, description="Cross-document repeated-paragraph removal."
    )
