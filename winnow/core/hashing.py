"""Counter-based randomness: every random draw tied to a document is a hash of (seed, purpose, id).

A draw never depends on how Beam shards, orders or batches the work, so the same input, config
and seed give the same selection on any runner (docs/determinism.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xxhash

from winnow.core import exact

_TWO_52 = float(1 << 52)


def h64(doc_id: str, purpose: str, seed: int) -> int:
    """H64(seed ‖ purpose ‖ doc_id): xxh64 of the three fields joined by U+001F (unit separator)."""
    return xxhash.xxh64_intdigest(f"{seed}\x1f{purpose}\x1f{doc_id}".encode("utf-8", "surrogatepass"))


def uniform(doc_id: str, purpose: str, seed: int) -> float:
    """u ∈ (0, 1) from the top 52 bits of H64: ``(⌊H64 / 2^12⌋ + 0.5) / 2^52``.

    ``(H64 + 0.5) / 2^64`` would round to exactly 1.0 in float64 for the largest hashes (so would
    53 bits), which makes Gumbel noise infinite. With 52 bits every value is exact and lies in
    [2^-53, 1 − 2^-53].
    """
    return ((h64(doc_id, purpose, seed) >> 12) + 0.5) / _TWO_52


def uniforms(doc_ids: Iterable[str], purpose: str, seed: int) -> np.ndarray:
    return np.array([uniform(doc_id, purpose, seed) for doc_id in doc_ids], dtype=np.float64)


def gumbel(u: float | np.ndarray) -> float | np.ndarray:
    """Standard Gumbel noise ``−log(−log u)``, with the machine-independent log of ``winnow.core.exact``."""
    if isinstance(u, float):
        return -exact.log(-exact.log(u))
    return -exact.log(-exact.log(np.asarray(u, dtype=np.float64)))
