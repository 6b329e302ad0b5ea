"""Character n-gram language model with interpolated modified Kneser–Ney smoothing, Beam-free.

PreSelect's local mode (docs/preselect.md#local-mode) needs a ladder of language models of known, ordered
ability and each model's bits per character on every document. Character models suit that:
every model sees the same characters and there are no out-of-vocabulary words whose handling
would differ between models trained on different amounts of text.

Smoothing is Chen & Goodman's interpolated modified Kneser–Ney: three discounts per order
(counts 1, 2, 3+) from the counts of counts, raw counts at the highest order, continuation
counts (distinct left extensions) below it, and a uniform distribution over the training
characters plus one unknown-character class at the bottom. Each document is scored on its own
with ``order − 1`` beginning-of-document symbols as its first context.

Everything is vectorised with numpy: an n-gram is a 64-bit polynomial hash of its code points
(computed for all positions at once), counts come from ``np.unique`` and look-ups from
``np.searchsorted`` into one sorted key table per order. A table stores, for each k-gram, the
count used when predicting with it and the statistics it needs as the context of order k + 1,
so scoring costs one binary search per order and position. Hash collisions between distinct
n-grams of the same order are possible in principle (64-bit keys); at the sizes used here
(≤ 10⁸ distinct n-grams) the expected number is below 10⁻³.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Beginning-of-document symbol: one past the last Unicode code point, so no text can contain it.
BOS = 0x110000
# Odd 64-bit multiplier of the polynomial hash (the golden-ratio constant used by splitmix64).
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
# Score long inputs in slices of this many stream positions to bound memory (arrays of
# ``order`` uint64 hashes per position).
_CHUNK = 1 << 21
# Discounts used when an order has too few distinct n-grams for the counts-of-counts estimate.
_FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def codepoints(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as uint32 (UTF-32 is one code unit per character)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _stream(texts: Sequence[str], order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All texts as one code-point stream, each preceded by ``order − 1`` BOS symbols.

    Returns the stream, the positions of real characters and each text's character count.
    """
    pad = order - 1
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    total = int(lengths.sum()) + pad * len(texts)
    stream = np.full(total, BOS, dtype=np.uint32)
    real = np.ones(total, dtype=bool)
    at = 0
    for text, length in zip(texts, lengths, strict=True):
        real[at : at + pad] = False
        at += pad
        if length:
            stream[at : at + length] = codepoints(text)
        at += int(length)
    return stream, np.flatnonzero(real), lengths


def _hashes(stream: np.ndarray, order: int) -> list[np.ndarray]:
    """``H[k][i]``: hash of the k-gram ending at stream position i (k = 1..order; ``H[0]`` unused).

    Positions too close to the stream start for a full k-gram get a hash of the shorter gram;
    they are never used because every text is padded with ``order − 1`` BOS symbols.
    """
    symbols = stream.astype(np.uint64) + np.uint64(1)
    hashes: list[np.ndarray] = [np.zeros(0, dtype=np.uint64), symbols]
    with np.errstate(over="ignore"):
        for _ in range(2, order + 1):
            previous = hashes[-1]
            current = symbols.copy()
            current[1:] += previous[:-1] * _MULTIPLIER
            hashes.append(current)
    return hashes


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified-KN discounts D(0)=0, D1, D2, D3+ from counts of counts (Chen & Goodman 1998)."""
    n = [int(np.count_nonzero(counts == r)) for r in (1, 2, 3, 4)]
    if min(n) == 0:
        d1, d2, d3 = _FALLBACK_DISCOUNTS
    else:
        y = n[0] / (n[0] + 2 * n[1])
        d1 = 1 - 2 * y * n[1] / n[0]
        d2 = 2 - 3 * y * n[2] / n[1]
        d3 = 3 - 4 * y * n[3] / n[2]
    # A discount must stay within [0, count] for the distribution to stay normalised.
    return np.array([0.0, min(max(d1, 0.0), 1.0), min(max(d2, 0.0), 2.0), min(max(d3, 0.0), 3.0)])


class _HashIndex:
    """Open-addressing hash table from uint64 keys to their row, with vectorised look-ups.

    Three to four times faster than ``np.searchsorted`` on tables of millions of keys: most
    look-ups touch one slot instead of ~20 cache lines. Load factor ≤ 0.5, linear probing,
    Fibonacci hashing of the (already hashed) keys so that the high bits pick the slot.
    """

    _MIX = np.uint64(0xD6E8FEB86659FD93)

    def __init__(self, keys: np.ndarray):
        self.keys = keys
        self.bits = max(4, math.ceil(math.log2(2 * len(keys) + 2)))
        self.mask = (1 << self.bits) - 1
        slots = np.full(1 << self.bits, -1, dtype=np.int64)
        rows = np.arange(len(keys))
        position = self._home(keys)
        while len(rows):  # each round places one key per free slot; the rest probe on
            free = np.flatnonzero(slots[position] < 0)
            taken, first = np.unique(position[free], return_index=True)
            slots[taken] = rows[free[first]]
            placed = np.zeros(len(rows), dtype=bool)
            placed[free[first]] = True
            rows, position = rows[~placed], (position[~placed] + 1) & self.mask
        self.slots = slots

    def _home(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((keys * self._MIX) >> np.uint64(64 - self.bits)).astype(np.int64)

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        out = np.full(len(queries), -1, dtype=np.int64)
        active = np.arange(len(queries))
        position = self._home(queries)
        while len(active):
            slot = self.slots[position]
            occupied = slot >= 0
            match = np.zeros(len(active), dtype=bool)
            match[occupied] = self.keys[slot[occupied]] == queries[active[occupied]]
            out[active[match]] = slot[match]
            probe_on = occupied & ~match  # an empty slot ends the probe: the key is absent
            active, position = active[probe_on], (position[probe_on] + 1) & self.mask
        return out


@dataclass
class _OrderTable:
    """Sorted k-gram keys with the k-gram's count and its statistics as a context of order k+1.

    The value arrays have one extra trailing 0: row -1 (an absent key) reads as zero counts.
    """

    keys: np.ndarray  # uint64, sorted, unique
    count: np.ndarray  # float64: raw count (highest order) or continuation count
    context_total: np.ndarray  # float64: sum of the counts of the (k+1)-grams that extend it
    context_gamma: np.ndarray  # float64: discount mass moved to the lower order (D1·N1 + D2·N2 + D3·N3+)
    _index: _HashIndex | None = None

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """Row of each query key in the table, or -1 where absent."""
        if self._index is None:
            self._index = _HashIndex(self.keys)
        return self._index.lookup(queries)


class KneserNeyLM:
    """A character n-gram LM; ``bpc(texts)`` gives bits per character for a batch of texts."""

    def __init__(
        self,
        order: int,
        tables: list[_OrderTable],
        discounts: np.ndarray,
        root_total: float,
        root_gamma: float,
        vocab_size: int,
        n_train_chars: int,
    ):
        self.order = order
        self.tables = tables  # tables[k - 1] holds the k-grams
        self.discounts = discounts  # shape (order, 4): row k-1 holds D(0..3+) of order k
        self.root_total = root_total
        self.root_gamma = root_gamma
        self.vocab_size = vocab_size
        self.n_train_chars = n_train_chars

    @classmethod
    def train(cls, texts: Iterable[str], order: int = 5) -> KneserNeyLM:
        """Count n-grams of ``texts`` (each a separate document) and fix the smoothing."""
        if order < 1:
            raise ValueError("order must be ≥ 1")
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError("no training text")
        stream, real, lengths = _stream(texts, order)
        hashes = _hashes(stream, order)
        vocab_size = len(np.unique(stream[real])) + 1  # + the unknown-character class

        # Per order k: unique k-grams at real positions, the count used to predict with them,
        # and (for k ≥ 2) the key of their context, the (k-1)-gram ending one position earlier.
        gram_keys: dict[int, np.ndarray] = {}
        gram_counts: dict[int, np.ndarray] = {}
        gram_first: dict[int, np.ndarray] = {}
        keys, first, counts = np.unique(hashes[order][real], return_index=True, return_counts=True)
        gram_keys[order], gram_counts[order], gram_first[order] = keys, counts.astype(np.float64), real[first]
        for k in range(order - 1, 0, -1):
            # Continuation count of a k-gram: distinct (k+1)-grams that end with it.
            suffixes = hashes[k][gram_first[k + 1]]
            keys, counts = np.unique(suffixes, return_counts=True)
            gram_keys[k], gram_counts[k] = keys, counts.astype(np.float64)
            _, first = np.unique(hashes[k][real], return_index=True)
            gram_first[k] = real[first]  # same key set, in the same sorted order

        discounts = np.zeros((order, 4))
        for k in range(1, order + 1):
            discounts[k - 1] = _discounts(gram_counts[k])

        tables: list[_OrderTable] = []
        for k in range(1, order + 1):
            # Context statistics of k-grams, gathered from the (k+1)-grams that extend them.
            if k < order:
                child_counts = gram_counts[k + 1]
                child_contexts = hashes[k][gram_first[k + 1] - 1]
                d = discounts[k]  # discounts of order k + 1
                mass = d[np.minimum(child_counts, 3).astype(np.int64)]
                context_keys, inverse = np.unique(child_contexts, return_inverse=True)
                totals = np.bincount(inverse, weights=child_counts)
                gammas = np.bincount(inverse, weights=mass)
            else:
                context_keys = np.zeros(0, dtype=np.uint64)
                totals = gammas = np.zeros(0)
            all_keys = np.union1d(gram_keys[k], context_keys)
            count = np.zeros(len(all_keys) + 1)
            count[np.searchsorted(all_keys, gram_keys[k])] = gram_counts[k]
            context_total = np.zeros(len(all_keys) + 1)
            context_gamma = np.zeros(len(all_keys) + 1)
            rows = np.searchsorted(all_keys, context_keys)
            context_total[rows] = totals
            context_gamma[rows] = gammas
            tables.append(_OrderTable(all_keys, count, context_total, context_gamma))

        unigram_counts = gram_counts[1]
        root_total = float(unigram_counts.sum())
        root_gamma = float(discounts[0][np.minimum(unigram_counts, 3).astype(np.int64)].sum())
        return cls(order, tables, discounts, root_total, root_gamma, vocab_size, int(lengths.sum()))

    def _log2_probs(self, stream: np.ndarray, real: np.ndarray) -> np.ndarray:
        """log2 p(character | up to order−1 previous characters) at each real position."""
        hashes = _hashes(stream, self.order)
        p = np.full(len(real), 1.0 / self.vocab_size)
        context_rows: np.ndarray | None = None
        for k in range(1, self.order + 1):
            table = self.tables[k - 1]
            # One look-up per position serves twice: the k-gram ending at i predicts i, and
            # the same k-gram is the context of order k + 1 for position i + 1.
            rows_all = table.lookup(hashes[k])
            rows = rows_all[real]
            count = table.count[rows]
            if k == 1:
                total = np.full(len(real), self.root_total)
                gamma = np.full(len(real), self.root_gamma)
            else:
                context_table = self.tables[k - 2]
                assert context_rows is not None
                total = context_table.context_total[context_rows]
                gamma = context_table.context_gamma[context_rows]
            discount = self.discounts[k - 1][np.minimum(count, 3).astype(np.int64)]
            seen = total > 0
            safe_total = np.where(seen, total, 1.0)
            p = np.where(seen, (count - discount + gamma * p) / safe_total, p)
            context_rows = rows_all[real - 1]
        return np.log2(p)

    def total_bits(self, texts: Sequence[str]) -> np.ndarray:
        """Σ −log2 p over each text's characters (float64, one value per text)."""
        out = np.zeros(len(texts))
        start = 0
        while start < len(texts):
            # Slices of whole texts of about _CHUNK characters (one long text is one slice).
            end, size = start, 0
            while end < len(texts) and (end == start or size + len(texts[end]) <= _CHUNK):
                size += len(texts[end]) + self.order - 1
                end += 1
            batch = texts[start:end]
            stream, real, lengths = _stream(batch, self.order)
            if len(real):
                bits = -self._log2_probs(stream, real)
                owner = np.repeat(np.arange(len(batch)), lengths)
                out[start:end] = np.bincount(owner, weights=bits, minlength=len(batch))
            start = end
        return out

    def bpc(self, texts: Sequence[str]) -> np.ndarray:
        """Bits per character of each text (docs/preselect.md#predictive-strength's normalised loss); NaN for empty
        text."""
        lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
        bits = self.total_bits(texts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(lengths > 0, bits / lengths, np.nan)

    def prob(self, context: str, char: str) -> float:
        """p(char | context), the context being a document's beginning: the slow path for tests."""
        stream, real, _ = _stream([context + char], self.order)
        return float(2.0 ** self._log2_probs(stream, real)[-1])

    def save(self, path: str) -> None:
        """Write the model as one .npz file."""
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(
                [self.order, self.root_total, self.root_gamma, self.vocab_size, self.n_train_chars], dtype=np.float64
            ),
            "discounts": self.discounts,
        }
        for k, table in enumerate(self.tables, start=1):
            arrays[f"keys{k}"] = table.keys
            arrays[f"count{k}"] = table.count
            arrays[f"total{k}"] = table.context_total
            arrays[f"gamma{k}"] = table.context_gamma
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        with open(path, "wb") as handle:
            handle.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str) -> KneserNeyLM:
        with np.load(path) as data:
            order, root_total, root_gamma, vocab_size, n_chars = data["meta"].tolist()
            order = int(order)
            tables = [
                _OrderTable(data[f"keys{k}"], data[f"count{k}"], data[f"total{k}"], data[f"gamma{k}"])
                for k in range(1, order + 1)
            ]
            return cls(order, tables, data["discounts"], root_total, root_gamma, int(vocab_size), int(n_chars))


def heldout_bpc(model: KneserNeyLM, texts: Sequence[str]) -> float:
    """Character-weighted bits per character over a set of texts (a model's "benchmark" loss)."""
    chars = sum(len(t) for t in texts)
    if chars == 0:
        return math.nan
    return float(model.total_bits(texts).sum() / chars)
