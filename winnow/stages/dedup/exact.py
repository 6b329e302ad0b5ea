"""Exact duplicates, Beam-free (docs/dedup.md#exact-duplicates): the text hash, the keeper rule and
the choice of keepers among compact (hash, rank) records.

The compact records let the stage find exact copies without moving text: a document's rank is its
``keeper_rank`` with the text replaced by a 128-bit digest of all identity fields, so the keeper is
the same one unless two inputs share id, source, URL and metadata and differ only in raw text (then
the digest breaks the tie), and documents with equal digests are the same document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import xxhash

from winnow.core.schemas import identity_key
from winnow.core.text import dedup_key_text

Document = dict[str, Any]
CompactRank = tuple[Any, ...]


def text_hash(text: str, key: str) -> str:
    """SHA-256 of the text in its matching form (docs/dedup.md#exact-duplicates: exact dedup before MinHash)."""
    material = dedup_key_text(text) if key == "normalized" else text
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def keeper_rank(doc: Document, keep: str) -> tuple[Any, ...]:
    """Smaller ranks are kept; ties end on the document's identity (id, source, URL, metadata, text)
    so the choice never depends on order, even when an input reuses an id."""
    if keep == "longest":
        return (-len(doc["text"]), *identity_key(doc))
    return identity_key(doc)


def identity_digest(doc: Document, fields: Sequence[str] | None = None) -> bytes:
    """128-bit hash of the document's identity fields, length-prefixed so no two field splits collide."""
    hasher = xxhash.xxh3_128()
    for part in identity_key(doc) if fields is None else fields:
        raw = part.encode("utf-8", "surrogatepass")
        hasher.update(len(raw).to_bytes(8, "little"))
        hasher.update(raw)
    return hasher.digest()


def compact_rank(doc: Document, keep: str) -> tuple[CompactRank, bytes]:
    """The keeper rank without the text, and the identity digest that stands in for it.

    It orders like ``keeper_rank`` unless two documents agree on id, source, URL and metadata and
    differ only in raw text; equal compact ranks mean equal documents.
    """
    fields = identity_key(doc)
    digest = identity_digest(doc, fields)
    rank = (*fields[:4], digest)
    return ((-len(doc["text"]), *rank) if keep == "longest" else rank), digest


def exact_keepers(hashes: Sequence[str], ranks: Sequence[CompactRank]) -> list[int]:
    """For each record, the position of the record kept for its hash (its own position when kept).

    The smallest rank of a hash wins; equal ranks are equal documents, of which the first in the
    sorted order stays, so the outcome's bytes never depend on arrival order.
    """
    order = sorted(range(len(hashes)), key=lambda i: (hashes[i], ranks[i]))
    keeper_of = [0] * len(hashes)
    current_hash: str | None = None
    keeper = -1
    for i in order:
        if hashes[i] != current_hash:
            current_hash, keeper = hashes[i], i
        keeper_of[i] = keeper
    return keeper_of
