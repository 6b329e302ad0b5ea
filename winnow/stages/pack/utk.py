"""Untie the Knots (UtK) packing, Beam-free (docs/untie-the-knots.md).

Ordinary packing cuts the ranked document stream (ids + EOS) into contexts of ``context_tokens + 1``
tokens. In a share ``probability`` of contexts every document piece is cut into n chunks (n ~ π),
the chunks of all documents are shuffled together (the last chunk of the last piece stays last),
matching knot tokens mark where a chunk ends and where its continuation starts, and, with
backtracing, every chunk of a split document carries ``<D> id </D>`` and the document's chunk IDs
are listed in order, ``<S> id_0 <s> id_1 … </S>``, after whichever of its chunks comes last. The
insertions push the tail of the context past ``context_tokens + 1``: it is dropped and counted
(``overflow: truncate``, as the reference) or carried into the next context of the same bundle
(``overflow: defer``).

Pieces:

* ``untie_context`` — one context from its plain segments: a per-context map, O(L), for the Beam
  side when contexts are fixed windows of the stream (``overflow: truncate``).
* ``UtkPacker`` — streams one bundle's ranked documents (a phase, or a block of consecutive ranks)
  and yields contexts as they fill, holding one context plus what it carries: the shape for
  ``overflow: defer``, where a context's start depends on the previous one.
* ``UtkTotals`` — the manifest's counts as a mergeable accumulator; ``utk_summary`` formats them.
* ``apply_plan`` — what a trainer runs on ``emit: plan`` rows to get the materialised tokens back.

Randomness: ``rng: hash`` draws everything from ``winnow.core.hashing`` keyed by the context id, so a
context's output depends only on its plain tokens, its id and the seed. ``rng: reference`` replays
the released code's numpy MT19937 stream (seed·100000 + context index) call for call.
"""

from __future__ import annotations

import bisect
import itertools
import string
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.core.hashing import h64, uniform
from winnow.stages.pack.utk_config import UtkConfig

Encode = Callable[[Sequence[str]], list[list[int]]]
Count = Callable[[str, int], None]

ID_ALPHABET = string.ascii_letters + string.digits  # the reference's ID characters, in its order
_CONTENT, _KNOT, _BACKTRACE = 0, 1, 2
_TAG_CHARS_PER_HASH = 10  # 62^10 < 2^64: ten base-62 digits from one 64-bit hash


class SpecialTokenInText(ValueError):
    """A configured special token id occurs in ordinary text: knots would be ambiguous."""


# ---------------------------------------------------------------------------------------------
# Special tokens
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecialTokens:
    """Resolved ids: EOS, the knots (k0, k1, …) and the five backtracing tokens <D> </D> <S> <s> </S>."""

    eos: int
    knots: tuple[int, ...]
    backtrace: tuple[int, int, int, int, int]
    names: dict[str, int] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls, config: UtkConfig, *, eos_id: int, added_tokens: Mapping[str, int], vocab_size: int
    ) -> SpecialTokens:
        """Ids for the configured names: pinned in ``special_ids``, else the tokenizer's added (special)
        token of that name, else the next free id past the vocabulary, in config order. A name that is
        only an ordinary vocabulary entry gets a fresh id, so text can never produce it."""
        names = [*config.knot_tokens, *config.backtrace_tokens]
        taken = {*added_tokens.values(), *config.special_ids.values(), eos_id}
        next_free = max(vocab_size, max(taken) + 1)
        ids: dict[str, int] = {}
        for name in names:
            if name in config.special_ids:
                ids[name] = config.special_ids[name]
            elif name in added_tokens:
                ids[name] = added_tokens[name]
            else:
                ids[name] = next_free
                next_free += 1
        if len(set(ids.values())) != len(ids) or eos_id in ids.values():
            raise ValueError(f"special token ids must be distinct and differ from EOS: {ids}")
        knots = tuple(ids[n] for n in config.knot_tokens)
        d_open, d_close, s_open, s_sep, s_close = (ids[n] for n in config.backtrace_tokens)
        return cls(eos_id, knots, (d_open, d_close, s_open, s_sep, s_close), ids)

    @classmethod
    def from_tokenizer(cls, config: UtkConfig, tokenizer: Any) -> SpecialTokens:
        """From winnow's tokenizer wrapper (its ``tokenizers`` object gives the added tokens and size)."""
        backend = tokenizer._tokenizer  # the wrapper exposes no added-token API yet
        added = {token.content: int(i) for i, token in backend.get_added_tokens_decoder().items()}
        return cls.resolve(
            config,
            eos_id=tokenizer.eos_id,
            added_tokens=added,
            vocab_size=backend.get_vocab_size(with_added_tokens=True),
        )

    @property
    def ids(self) -> np.ndarray:
        return np.array([*self.knots, *self.backtrace], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# One context
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A run of one document's stream (its ids + EOS) inside a plain context."""

    doc_id: str
    doc_start: int  # offset of tokens[0] in the document's stream
    tokens: np.ndarray

    @property
    def doc_end(self) -> int:
        return self.doc_start + len(self.tokens)


@dataclass(slots=True)
class ChunkRow:
    """One chunk: where it was in the plain context (``src``), where its content landed in the augmented
    one (``dst``, positions before truncation, so ``dst_end`` may pass the context end), how many of its
    tokens survived, its backtracing ID and the exact tokens inserted before and after its content."""

    doc_id: str
    segment: int
    doc_start: int  # offset of the chunk's first token in the document's stream
    chunk_index: int
    n_chunks: int
    src_start: int
    src_end: int
    dst_start: int
    dst_end: int
    kept_tokens: int
    chunk_tag: str
    insert_before: list[int]
    insert_after: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Part:
    segment: int
    chunk_index: int
    n_chunks: int
    start: int
    end: int
    prefix: list[int]
    suffix: list[int]


@dataclass
class _Layout:
    parts: list[_Part]
    order: list[int]  # part index at each output position
    tags: list[tuple[str, list[int]] | None]  # per output position
    summaries: list[list[int] | None]  # per output position
    applied: bool


@dataclass
class UntiedContext:
    """A context after UtK: the augmented tokens and loss mask, the plain tokens, the chunk table."""

    context_id: str
    context_index: int
    plain: np.ndarray
    segments: list[Segment]
    tokens: np.ndarray
    loss_mask: np.ndarray  # uint8, one per prediction: input tokens[i], label tokens[i + 1]
    utk_applied: bool
    chunks: list[ChunkRow]
    inserted_tokens: int  # knots and backtracing tokens generated, before truncation
    knot_tokens: int  # knot tokens in the output
    backtrace_tokens: int  # backtracing tokens (markers and IDs) in the output
    truncated_tokens: int  # plain tokens not in the output (dropped or deferred)

    @property
    def n_split_docs(self) -> int:
        return len({c.segment for c in self.chunks if c.n_chunks > 1})

    def chunk_counts(self) -> dict[int, int]:
        """Segments by number of chunks (the chunk-count histogram)."""
        counts: dict[int, int] = {}
        for c in self.chunks:
            if c.chunk_index == 0:
                counts[c.n_chunks] = counts.get(c.n_chunks, 0) + 1
        return counts

    def displaced(self) -> list[Segment]:
        """The plain tokens that did not fit, in plain order, one segment per contiguous run of a document."""
        pieces: list[Segment] = []
        for c in sorted(self.chunks, key=lambda c: c.src_start):
            if c.kept_tokens == c.src_end - c.src_start:
                continue
            tokens = self.plain[c.src_start + c.kept_tokens : c.src_end]
            start = c.doc_start + c.kept_tokens
            last = pieces[-1] if pieces else None
            if last is not None and last.doc_id == c.doc_id and last.doc_end == start:
                pieces[-1] = Segment(c.doc_id, last.doc_start, np.concatenate([last.tokens, tokens]))
            else:
                pieces.append(Segment(c.doc_id, start, tokens))
        return pieces

    def row(self, emit: str, seed: int) -> dict[str, Any]:
        """The ``contexts`` table row (``UTK_CONTEXTS_SCHEMA``): augmented tokens and mask for ``materialize``,
        plain tokens and no mask for ``plan``; the chunk table in both."""
        materialize = emit == "materialize"
        return {
            "context_id": self.context_id,
            "context_index": self.context_index,
            "position": context_position(self.context_id, seed),
            "tokens": (self.tokens if materialize else self.plain).astype(np.int32).tolist(),
            "loss_mask": self.loss_mask.tolist() if materialize else None,
            "utk_applied": self.utk_applied,
            "n_docs": len(self.segments),
            "n_split_docs": self.n_split_docs,
            "n_chunks": len(self.chunks),
            "inserted_tokens": self.inserted_tokens,
            "truncated_tokens": self.truncated_tokens,
            "knot_tokens": self.knot_tokens,
            "backtrace_tokens": self.backtrace_tokens,
            "doc_ids": [s.doc_id for s in self.segments],
            "doc_token_starts": [s.doc_start for s in self.segments],
            "doc_token_ends": [s.doc_end for s in self.segments],
            "chunk_table": [c.as_dict() for c in self.chunks],
        }


def context_id(bundle: str, index: int) -> str:
    """The id of context ``index`` of a bundle: the key of every hash draw made for it."""
    return f"{bundle}/{index}"


def context_position(context_key: str, seed: int) -> int:
    """Seeded training position (sort ascending to train), as concat packing shuffles its contexts."""
    return h64(context_key, "context_shuffle", seed) >> 1


def untie_context(
    segments: Sequence[Segment],
    *,
    context_key: str,
    context_index: int,
    config: UtkConfig,
    special: SpecialTokens,
    encode: Encode,
    seed: int,
    augment: bool = True,
) -> UntiedContext:
    """UtK on one plain context (the concatenation of ``segments``); its length is kept.

    ``augment=False`` returns the context unchanged (identity chunk table), whatever the draws.
    ``rng: reference`` splits documents at EOS, as the released code does, so a segment without a
    trailing EOS runs into the next one there; the chunk table names the segment a chunk starts in.
    """
    segments = [s for s in segments if len(s.tokens)]
    plain = (
        np.concatenate([np.asarray(s.tokens, dtype=np.int64) for s in segments]) if segments else np.zeros(0, np.int64)
    )
    if np.isin(plain, special.ids).any():
        found = sorted({int(t) for t in plain[np.isin(plain, special.ids)]})
        raise SpecialTokenInText(f"context {context_key}: special token id(s) {found} occur in the text")
    starts = list(np.cumsum([0, *(len(s.tokens) for s in segments)])[:-1])
    if not augment or not len(plain):
        layout = _identity_layout(segments, starts)
    elif config.rng == "reference":
        rng = np.random.Generator(np.random.MT19937(config.corruption_seed * 100000 + context_index))
        row, applied = _reference_law(rng, config)
        layout = _reference_layout(plain, starts, rng, row, applied, config, special, encode)
    else:
        layout = _hash_layout(segments, starts, context_key, config, special, encode, seed)
    return _assemble(plain, segments, starts, layout, context_key, context_index, config, special)


def _identity_layout(segments: Sequence[Segment], starts: Sequence[int]) -> _Layout:
    parts = [_Part(i, 0, 1, int(starts[i]), int(starts[i]) + len(s.tokens), [], []) for i, s in enumerate(segments)]
    n = len(parts)
    return _Layout(parts, list(range(n)), [None] * n, [None] * n, False)


def _knot_parts(segment: int, base: int, cuts: Sequence[int], length: int, knots: Sequence[int]) -> list[_Part]:
    """Parts of one piece: chunk c gets knot 2c−1 before it (c > 0) and knot 2c after it (c < n−1)."""
    edges = [0, *cuts, length]
    n = len(edges) - 1
    return [
        _Part(
            segment,
            c,
            n,
            base + edges[c],
            base + edges[c + 1],
            [knots[2 * c - 1]] if c > 0 else [],
            [knots[2 * c]] if c < n - 1 else [],
        )
        for c in range(n)
    ]


def _draw_chunk_count(u: float, law: Sequence[float]) -> int:
    cumulative = 0.0
    for n, p in enumerate(law, start=1):
        cumulative += p
        if u < cumulative:
            return n
    return max(n for n, p in enumerate(law, start=1) if p > 0)


def _hash_cuts(length: int, n: int, key: str, segment: int, config: UtkConfig, seed: int) -> list[int]:
    if n <= 1 or length < n:
        return []
    if config.split == "equal":
        return [length // n * c for c in range(1, n)]
    chosen: set[int] = set()
    draw = 0
    while len(chosen) < n - 1:  # distinct points in [1, length): rejection, a few draws at most
        chosen.add(1 + int(uniform(key, f"utk:cut:{segment}:{draw}", seed) * (length - 1)))
        draw += 1
    return sorted(chosen)


def _hash_tag(key: str, segment: int, chunk: int, chars: int, seed: int) -> str:
    out = []
    for group in range(0, chars, _TAG_CHARS_PER_HASH):
        value = h64(key, f"utk:tag:{segment}:{chunk}:{group}", seed)
        for _ in range(min(_TAG_CHARS_PER_HASH, chars - group)):
            value, digit = divmod(value, len(ID_ALPHABET))
            out.append(ID_ALPHABET[digit])
    return "".join(out)


def _hash_layout(
    segments: Sequence[Segment],
    starts: Sequence[int],
    key: str,
    config: UtkConfig,
    special: SpecialTokens,
    encode: Encode,
    seed: int,
) -> _Layout:
    if not uniform(key, "utk:apply", seed) < config.probability:
        return _identity_layout(segments, starts)
    law = config.law
    parts: list[_Part] = []
    for i, segment in enumerate(segments):
        n = _draw_chunk_count(uniform(key, f"utk:n:{i}", seed), law)
        cuts = _hash_cuts(len(segment.tokens), n, key, i, config, seed)
        parts.extend(_knot_parts(i, int(starts[i]), cuts, len(segment.tokens), special.knots))
    # Every chunk but the pinned last one gets a slot by the order of its hash; with partial order
    # kept, a document's slots are handed to its chunks in chunk order.
    movable = list(range(len(parts) - 1))
    slot_of = sorted(movable, key=lambda p: (h64(key, f"utk:slot:{parts[p].segment}:{parts[p].chunk_index}", seed), p))
    position = {p: slot for slot, p in enumerate(slot_of)}
    if config.preserve_partial_order:
        by_segment: dict[int, list[int]] = {}
        for p in movable:
            by_segment.setdefault(parts[p].segment, []).append(p)
        for members in by_segment.values():
            for p, slot in zip(members, sorted(position[p] for p in members), strict=True):
                position[p] = slot
    order = [*sorted(movable, key=lambda p: position[p]), len(parts) - 1]
    tags: list[tuple[str, list[int]] | None] = [None] * len(order)
    summaries: list[list[int] | None] = [None] * len(order)
    if config.backtrace:
        split = [p for p in range(len(parts)) if parts[p].n_chunks > 1]
        names = [_hash_tag(key, parts[p].segment, parts[p].chunk_index, config.id_chars, seed) for p in split]
        ids = dict(zip(split, zip(names, encode(names) if names else [], strict=True), strict=True))
        out_position = {p: slot for slot, p in enumerate(order)}
        d_open, d_close, s_open, s_sep, s_close = special.backtrace
        for p in split:
            tags[out_position[p]] = (ids[p][0], [d_open, *ids[p][1], d_close])
        for segment in {parts[p].segment for p in split}:
            members = [p for p in split if parts[p].segment == segment]  # chunk order
            summary = [s_open]
            for j, p in enumerate(members):
                summary.extend(([s_sep] if j else []) + list(ids[p][1]))
            summary.append(s_close)
            summaries[max(out_position[p] for p in members)] = summary
    return _Layout(parts, order, tags, summaries, True)


def _reference_law(rng: np.random.Generator, config: UtkConfig) -> tuple[np.ndarray, bool]:
    """The released dataset's first draw: the context's chunk-count law, (1, 0, …) or π."""
    law = np.array(config.law)
    plain_row = np.zeros_like(law)
    plain_row[0] = 1.0
    row = rng.choice(np.array([plain_row, law]), 1, p=[1.0 - config.probability, config.probability])[0]
    return row, bool(np.array_equal(row, law)) and config.probability > 0


def untie_reference_sample(
    plain: np.ndarray,
    rng: np.random.Generator,
    law: Sequence[float],
    *,
    config: UtkConfig,
    special: SpecialTokens,
    encode: Encode,
) -> UntiedContext:
    """The released corruption function alone: a caller-made generator and law row, no law draw, no
    context id (for checking parity with the reference's function-level examples)."""
    plain = np.asarray(plain, dtype=np.int64)
    row = np.asarray(law, dtype=np.float64)
    layout = _reference_layout(plain, [0], rng, row, True, config, special, encode)
    segments = [Segment("", 0, plain)]
    return _assemble(plain, segments, [0], layout, "", 0, config, special)


def _reference_layout(
    plain: np.ndarray,
    starts: Sequence[int],
    rng: np.random.Generator,
    row: np.ndarray,
    applied: bool,
    config: UtkConfig,
    special: SpecialTokens,
    encode: Encode,
) -> _Layout:
    """The released code's draws after the law row, in its call order: n per EOS-delimited piece, cut points,
    one shuffle of the chunk indices, then one ID per output position (used or not).

    It keeps the released code's placement of the last piece's summary: that piece's final chunk is
    recorded at its chunk number rather than its output position, so its summary lands after output
    position max(earlier slots, n − 1) when the chunk there is its own, and is left out otherwise.
    """
    knots = special.knots
    bounds = [0, *(np.flatnonzero(plain == special.eos) + 1).tolist()]
    if bounds[-1] != len(plain):
        bounds.append(len(plain))
    parts_by_piece: list[list[_Part]] = []
    for piece, (start, end) in enumerate(itertools.pairwise(bounds)):
        length = end - start
        n = int(rng.choice(len(row), 1, p=row)[0]) + 1
        if n == 4:  # the released code's "hop" mode: a cut every 1,024 tokens, numbered knots
            edges = [0, *range(1024, length, 1024), length]
            parts = []
            for c, (a, b) in enumerate(itertools.pairwise(edges)):
                number = encode([str(c)])[0]
                prefix = [knots[0], *number, knots[1]] if a != 0 else []
                suffix = [knots[2], *number, knots[3]] if b != length else []
                parts.append(_Part(piece, c, len(edges) - 1, start + a, start + b, prefix, suffix))
            parts_by_piece.append(parts)
            continue
        if length < n:
            cuts: list[int] = []
        elif config.split == "uniform":
            cuts = sorted(rng.choice(range(1, length), n - 1, replace=False).tolist())
        else:
            cuts = [length // n * c for c in range(1, n)]
        parts_by_piece.append(_knot_parts(piece, start, cuts, length, knots))
    counts = [len(p) for p in parts_by_piece]
    counts[-1] -= 1
    slots = np.arange(sum(counts))
    rng.shuffle(slots)
    recorded: dict[int, list[int]] = {}
    at_slot: list[tuple[int, int] | None] = [None] * len(slots)
    begin = 0
    for piece, count in enumerate(counts):
        if count == 0:
            continue
        mine = slots[begin : begin + count]
        if config.preserve_partial_order:
            mine.sort()
        recorded[piece] = mine.tolist()
        for chunk, slot in enumerate(mine):
            at_slot[slot] = (piece, chunk)
        begin += count
    last = len(parts_by_piece) - 1
    at_slot.append((last, counts[-1]))
    recorded.setdefault(last, []).append(counts[-1])  # the chunk number, not its slot (as released)
    flat = [p for parts in parts_by_piece for p in parts]
    first_part = list(np.cumsum([0, *(len(p) for p in parts_by_piece)])[:-1])
    order = [int(first_part[piece]) + chunk for piece, chunk in at_slot]  # type: ignore[misc]
    tags: list[tuple[str, list[int]] | None] = [None] * len(order)
    summaries: list[list[int] | None] = [None] * len(order)
    if config.backtrace:
        names = ["".join(rng.choice(list(ID_ALPHABET), size=config.id_chars)) for _ in order]
        ids = encode(names)
        d_open, d_close, s_open, s_sep, s_close = special.backtrace
        for slot, (piece, _) in enumerate(at_slot):  # type: ignore[misc]
            mine = recorded[piece]
            if len(mine) == 1:
                continue
            tags[slot] = (names[slot], [d_open, *ids[slot], d_close])
            if slot == max(mine):
                summary = [s_open]
                for j, s in enumerate(mine):
                    summary.extend(([s_sep] if j else []) + list(ids[s]))
                summaries[slot] = [*summary, s_close]
    # Name each EOS-delimited piece after the packer segment it starts in.
    for part in flat:
        seg = bisect.bisect_right(starts, part.start) - 1
        part.segment = seg
    return _Layout(flat, order, tags, summaries, applied)


def _assemble(
    plain: np.ndarray,
    segments: Sequence[Segment],
    starts: Sequence[int],
    layout: _Layout,
    context_key: str,
    context_index: int,
    config: UtkConfig,
    special: SpecialTokens,
) -> UntiedContext:
    pieces: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    before: dict[int, list[int]] = {}
    after: dict[int, list[int]] = {}
    dst: dict[int, int] = {}
    at = 0

    def put(tokens: Sequence[int] | np.ndarray, kind: int) -> None:
        nonlocal at
        if len(tokens):
            pieces.append(np.asarray(tokens, dtype=np.int64))
            kinds.append(np.full(len(tokens), kind, dtype=np.int8))
            at += len(tokens)

    for slot, p in enumerate(layout.order):
        part = layout.parts[p]
        tag = layout.tags[slot]
        summary = layout.summaries[slot] or []
        tag_ids = tag[1] if tag else []
        put(tag_ids, _BACKTRACE)
        put(part.prefix, _KNOT)
        dst[p] = at
        put(plain[part.start : part.end], _CONTENT)
        put(part.suffix, _KNOT)
        put(summary, _BACKTRACE)
        before[p] = [*tag_ids, *part.prefix]
        after[p] = [*part.suffix, *summary]
    length = len(plain)
    full = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    kind = np.concatenate(kinds) if kinds else np.zeros(0, np.int8)
    tokens, kept_kind = full[:length], kind[:length]
    chunks = []
    tags_by_part = {p: layout.tags[slot] for slot, p in enumerate(layout.order)}
    for p, part in enumerate(layout.parts):
        size = part.end - part.start
        seg = segments[part.segment]
        tag = tags_by_part.get(p)
        chunks.append(
            ChunkRow(
                doc_id=seg.doc_id,
                segment=part.segment,
                doc_start=seg.doc_start + part.start - int(starts[part.segment]),
                chunk_index=part.chunk_index,
                n_chunks=part.n_chunks,
                src_start=part.start,
                src_end=part.end,
                dst_start=dst[p],
                dst_end=dst[p] + size,
                kept_tokens=int(min(max(length - dst[p], 0), size)),
                chunk_tag=tag[0] if tag else "",
                insert_before=before[p],
                insert_after=after[p],
            )
        )
    kept = sum(c.kept_tokens for c in chunks)
    return UntiedContext(
        context_id=context_key,
        context_index=context_index,
        plain=plain,
        segments=list(segments),
        tokens=tokens,
        loss_mask=loss_mask(tokens, config, special),
        utk_applied=layout.applied,
        chunks=chunks,
        inserted_tokens=int(len(full) - len(plain)),
        knot_tokens=int((kept_kind == _KNOT).sum()),
        backtrace_tokens=int((kept_kind == _BACKTRACE).sum()),
        truncated_tokens=length - kept,
    )


def loss_mask(tokens: np.ndarray, config: UtkConfig, special: SpecialTokens) -> np.ndarray:
    """One flag per prediction (input ``tokens[i]``, label ``tokens[i + 1]``), by token identity as in
    the reference: zero where the input or label is a knot; on each ``<D> … </D>`` input span (to the
    end when ``</D>`` fell off); where the label is ``<D>`` or ``<S>``; where the input is ``</S>``."""
    inputs, labels = tokens[:-1], tokens[1:]
    mask = np.ones(max(len(tokens) - 1, 0), dtype=np.uint8)
    if config.mask_special_in_loss and len(mask):
        knots = np.array(special.knots, dtype=np.int64)
        mask[np.isin(inputs, knots) | np.isin(labels, knots)] = 0
        if config.backtrace:
            d_open, d_close, s_open, _, s_close = special.backtrace
            opens = np.flatnonzero(inputs == d_open).tolist()
            closes = np.flatnonzero(inputs == d_close).tolist()
            if len(closes) == len(opens) - 1:
                closes.append(len(inputs) - 1)
            for a, b in zip(opens, closes, strict=False):
                mask[a : b + 1] = 0
            mask[labels == d_open] = 0
            mask[inputs == s_close] = 0
            mask[labels == s_open] = 0
    if config.mask_eos and len(mask):
        mask[inputs == special.eos] = 0
    return mask


def apply_plan(plain: np.ndarray, chunk_table: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The materialised tokens of an ``emit: plan`` row: chunks in ``dst_start`` order, each with its
    inserted tokens around it, truncated to the plain length (compute the mask with ``loss_mask``)."""
    out: list[int] = []
    for chunk in sorted(chunk_table, key=lambda c: c["dst_start"]):
        out.extend(chunk["insert_before"])
        out.extend(int(t) for t in plain[chunk["src_start"] : chunk["src_end"]])
        out.extend(chunk["insert_after"])
    return np.array(out[: len(plain)], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Streaming one bundle
# ---------------------------------------------------------------------------------------------


@dataclass
class UtkTotals:
    """The manifest's counts; ``merge`` is associative and commutative, so Beam can combine them."""

    documents: int = 0
    stream_tokens: int = 0  # documents' tokens + EOS fed to the packer
    contexts: int = 0
    utk_contexts: int = 0
    output_tokens: int = 0
    utk_output_tokens: int = 0
    kept_tokens: int = 0  # plain tokens that reached an output context
    inserted_tokens: int = 0
    knot_tokens: int = 0
    backtrace_tokens: int = 0
    truncated_tokens: int = 0  # dropped (overflow: truncate)
    deferred_tokens: int = 0  # carried to the next context (overflow: defer); counted once per carry
    segments: int = 0
    split_segments: int = 0
    no_room_contexts: int = 0  # defer: insertions left no room for the context's own tokens; kept plain
    tail_plain_contexts: int = 0  # defer: contexts packed after the bundle ended, kept plain
    chunk_histogram: dict[int, int] = field(default_factory=dict)

    def add_context(self, context: UntiedContext, deferred: bool) -> None:
        self.contexts += 1
        self.output_tokens += len(context.tokens)
        if context.utk_applied:
            self.utk_contexts += 1
            self.utk_output_tokens += len(context.tokens)
        self.kept_tokens += len(context.plain) - context.truncated_tokens
        self.inserted_tokens += context.inserted_tokens
        self.knot_tokens += context.knot_tokens
        self.backtrace_tokens += context.backtrace_tokens
        if deferred:
            self.deferred_tokens += context.truncated_tokens
        else:
            self.truncated_tokens += context.truncated_tokens
        self.segments += len(context.segments)
        self.split_segments += context.n_split_docs
        for n, count in context.chunk_counts().items():
            self.chunk_histogram[n] = self.chunk_histogram.get(n, 0) + count

    def merge(self, other: UtkTotals) -> UtkTotals:
        out = UtkTotals()
        for name in out.__dataclass_fields__:
            if name == "chunk_histogram":
                merged = dict(self.chunk_histogram)
                for n, count in other.chunk_histogram.items():
                    merged[n] = merged.get(n, 0) + count
                out.chunk_histogram = merged
            else:
                setattr(out, name, getattr(self, name) + getattr(other, name))
        return out


class UtkPacker:
    """Packs one bundle's documents, fed in rank order, into UtK contexts of ``context_tokens + 1`` tokens
    (``context_tokens`` is the pack stage's L).

    Holds at most one context of pending tokens plus the document being added and, with
    ``overflow: defer``, the displaced tokens of the last context, which open the next one (merged
    with their document's next piece when contiguous). Once the bundle ends, defer packs what is
    left without augmenting it, so the tail cannot keep displacing tokens. Context ids are
    ``<bundle>/<index>``; the output depends on the documents and their order only, not on how
    they are batched into ``add`` calls.
    """

    def __init__(
        self,
        config: UtkConfig,
        special: SpecialTokens,
        encode: Encode,
        seed: int,
        *,
        context_tokens: int,
        bundle: str = "",
        first_index: int = 0,
        count: Count | None = None,
    ):
        if context_tokens < 1:
            raise ValueError(f"context_tokens must be at least 1, got {context_tokens}")
        self.config = config
        self.context_tokens = context_tokens
        self.special = special
        self.encode = encode
        self.seed = seed
        self.bundle = bundle
        self.index = first_index
        self.count = count
        self.totals = UtkTotals()
        self._pending: deque[Segment] = deque()
        self._pending_tokens = 0

    def add(self, doc_id: str, ids: Sequence[int] | np.ndarray) -> list[UntiedContext]:
        """Append one document (its ids; EOS is added here) and return the contexts it completed."""
        stream = np.append(np.asarray(ids, dtype=np.int64), self.special.eos)
        self.totals.documents += 1
        self.totals.stream_tokens += len(stream)
        self._pending.append(Segment(str(doc_id), 0, stream))
        self._pending_tokens += len(stream)
        out = []
        while self._pending_tokens >= self.context_tokens + 1:
            out.append(self._emit(final=False))
        return out

    def finish(self) -> list[UntiedContext]:
        """Flush the bundle: the last, shorter context(s)."""
        out = []
        while self._pending_tokens:
            out.append(self._emit(final=True))
        return out

    def _take(self, size: int) -> list[Segment]:
        taken: list[Segment] = []
        while size and self._pending:
            head = self._pending.popleft()
            if len(head.tokens) <= size:
                taken.append(head)
                size -= len(head.tokens)
                self._pending_tokens -= len(head.tokens)
            else:
                taken.append(Segment(head.doc_id, head.doc_start, head.tokens[:size]))
                self._pending.appendleft(Segment(head.doc_id, head.doc_start + size, head.tokens[size:]))
                self._pending_tokens -= size
                size = 0
        return taken

    def _carry(self, pieces: Sequence[Segment]) -> None:
        for piece in reversed(pieces):
            head = self._pending[0] if self._pending else None
            if head is not None and head.doc_id == piece.doc_id and piece.doc_end == head.doc_start:
                self._pending[0] = Segment(piece.doc_id, piece.doc_start, np.concatenate([piece.tokens, head.tokens]))
            else:
                self._pending.appendleft(piece)
            self._pending_tokens += len(piece.tokens)

    def _emit(self, final: bool) -> UntiedContext:
        defer = self.config.overflow == "defer"
        segments = self._take(self.context_tokens + 1)
        key = context_id(self.bundle, self.index)
        args = {
            "context_key": key,
            "context_index": self.index,
            "config": self.config,
            "special": self.special,
            "encode": self.encode,
            "seed": self.seed,
        }
        augment = not (defer and final)
        context = untie_context(segments, augment=augment, **args)
        if defer and context.truncated_tokens == len(context.plain) and len(context.plain):
            context = untie_context(segments, augment=False, **args)
            self.totals.no_room_contexts += 1
        if defer and final:
            self.totals.tail_plain_contexts += 1
        if defer:
            self._carry(context.displaced())
        self.totals.add_context(context, deferred=defer)
        if self.count is not None:
            self.count("pack:utk_contexts", 1)
            self.count("pack:utk_augmented_contexts", int(context.utk_applied))
            self.count("pack:utk_deferred_tokens" if defer else "pack:utk_truncated_tokens", context.truncated_tokens)
        self.index += 1
        return context


def pack_bundle(
    documents: Iterable[tuple[int, str, Sequence[int]]],
    config: UtkConfig,
    special: SpecialTokens,
    encode: Encode,
    seed: int,
    *,
    context_tokens: int,
    bundle: str = "",
    count: Count | None = None,
) -> tuple[list[UntiedContext], UtkTotals]:
    """Pack a bounded bundle of ``(rank, doc_id, ids)`` given in any order: sorted by (rank, doc_id)
    first, as the Beam side sorts one rank block in memory."""
    packer = UtkPacker(config, special, encode, seed, context_tokens=context_tokens, bundle=bundle, count=count)
    contexts: list[UntiedContext] = []
    for _, doc_id, ids in sorted(documents, key=lambda d: (d[0], d[1])):
        contexts.extend(packer.add(doc_id, ids))
    contexts.extend(packer.finish())
    return contexts, packer.totals


# ---------------------------------------------------------------------------------------------
# Output schema and manifest
# ---------------------------------------------------------------------------------------------

CHUNK_STRUCT = pa.struct(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("doc_start", pa.int64(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("n_chunks", pa.int32(), nullable=False),
        pa.field("src_start", pa.int32(), nullable=False),
        pa.field("src_end", pa.int32(), nullable=False),
        pa.field("dst_start", pa.int32(), nullable=False),
        pa.field("dst_end", pa.int32(), nullable=False),
        pa.field("kept_tokens", pa.int32(), nullable=False),
        pa.field("chunk_tag", pa.string(), nullable=False),
        pa.field("insert_before", pa.list_(pa.int32()), nullable=False),
        pa.field("insert_after", pa.list_(pa.int32()), nullable=False),
    ]
)

UTK_CONTEXTS_SCHEMA = pa.schema(
    [
        pa.field("context_id", pa.string(), nullable=False),
        pa.field("context_index", pa.int64(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("tokens", pa.list_(pa.int32()), nullable=False),
        pa.field("loss_mask", pa.list_(pa.uint8()), nullable=True),  # null with emit: plan
        pa.field("utk_applied", pa.bool_(), nullable=False),
        pa.field("n_docs", pa.int32(), nullable=False),
        pa.field("n_split_docs", pa.int32(), nullable=False),
        pa.field("n_chunks", pa.int32(), nullable=False),
        pa.field("inserted_tokens", pa.int32(), nullable=False),
        pa.field("truncated_tokens", pa.int32(), nullable=False),
        pa.field("knot_tokens", pa.int32(), nullable=False),
        pa.field("backtrace_tokens", pa.int32(), nullable=False),
        pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
        pa.field("doc_token_starts", pa.list_(pa.int64()), nullable=False),
        pa.field("doc_token_ends", pa.list_(pa.int64()), nullable=False),
        pa.field("chunk_table", pa.list_(CHUNK_STRUCT), nullable=False),
    ]
)

ROW_GROUP_CONTEXTS = 64  # a 192K-token context is ~0.8 MB of int32 plus its mask


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def utk_summary(
    totals: UtkTotals, config: UtkConfig, special: SpecialTokens, seed: int, *, context_tokens: int
) -> dict[str, Any]:
    """The ``packing`` manifest section of a UtK run (``context_tokens``: L, the pack stage's)."""
    closes = (
        totals.kept_tokens + totals.truncated_tokens == totals.stream_tokens
        if config.overflow == "truncate"
        else totals.kept_tokens == totals.stream_tokens
    )
    return {
        "section": "packing",
        "mode": "utk",
        "context_tokens": context_tokens,
        "emit": config.emit,
        "rng": config.rng,
        "overflow": config.overflow,
        "seed": config.corruption_seed if config.rng == "reference" else seed,
        "special_tokens": dict(special.names),
        "documents": totals.documents,
        "contexts": totals.contexts,
        "contexts_with_utk": totals.utk_contexts,
        "contexts_without_utk": totals.contexts - totals.utk_contexts,
        "augmented_share": _share(totals.utk_contexts, totals.contexts),
        "tokens_with_utk": totals.utk_output_tokens,
        "tokens_without_utk": totals.output_tokens - totals.utk_output_tokens,
        "knot_tokens": totals.knot_tokens,
        "backtrace_tokens": totals.backtrace_tokens,
        "inserted_tokens_generated": totals.inserted_tokens,
        "inserted_share": _share(totals.knot_tokens + totals.backtrace_tokens, totals.output_tokens),
        "truncated_tokens": totals.truncated_tokens,
        "truncated_share": _share(totals.truncated_tokens, totals.stream_tokens),
        "deferred_tokens": totals.deferred_tokens,
        "no_room_contexts": totals.no_room_contexts,
        "tail_plain_contexts": totals.tail_plain_contexts,
        "chunk_histogram": {str(n): c for n, c in sorted(totals.chunk_histogram.items())},
        "accounting": {
            "stream_tokens": totals.stream_tokens,
            "kept_tokens": totals.kept_tokens,
            "truncated_tokens": totals.truncated_tokens,
            "closes": closes,
        },
    }
