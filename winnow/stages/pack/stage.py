"""``Pack``: turn ranked documents into training sequences (the end of the ``order`` stage).

Input documents carry a unique int ``order_rank`` (the ICP traversal order, docs/icp.md#ordering).

* ``concat`` (ICP docs/icp.md#packing): the stream P is every document's tokens + EOS in ``order_rank`` order,
  cut into contexts of exactly L tokens; documents may span contexts. Global token offsets are
  prefix sums computed at scale: ranks are grouped into blocks of ``rank_block`` consecutive
  ranks, block totals come from a ``CombinePerKey`` and become a small side input of block
  offsets, and each block does its own prefix sum. Every document then emits one slice per
  context it touches, and a ``GroupByKey`` on ``context_id`` builds the ``contexts`` table.
  Contexts get a seeded ``position`` (a hash), so training in ascending position shuffles them.
* ``dd`` (Dataset Decomposition docs/dataset-decomposition.md): each document's tokens + EOT are split greedily into
  power-of-two pieces (``winnow.stages.pack.packing.decompose``); pieces are shuffled within their
  bucket by a hash and given dense ranks with the same block/prefix-sum trick, which assigns
  fixed-size shards; the last, partial shard of a bucket is kept but marked ``partial``.
  The ``dd`` table is partitioned by ``bucket`` (``dd/bucket=<i>/``).
* ``utk`` (Untie the Knots, docs/untie-the-knots.md): the same ranked stream, phase by phase, in
  contexts of L + 1 tokens, each cut, shuffled and knotted by ``winnow.stages.pack.utk``. With
  ``overflow: truncate`` a context is a fixed window of its phase's stream: windows come from the
  same blocked prefix sums as concat (offsets restart at each phase), slices carry their tokens,
  a ``GroupByKey`` on (phase, window) gathers one window (≤ L + 1 tokens) and a per-context map
  unties it. With ``overflow: defer`` a context's start depends on the previous one, so each rank
  block (``rank_block`` consecutive ranks of one phase, sorted in memory as concat does) is one
  bundle streamed by a ``UtkPacker``. The ``contexts`` table is partitioned by phase.
* ``none``: documents pass through untouched.

Kept documents gain ``context_id`` and ``token_offset`` (concat) or ``dd_pieces`` and
``dd_discarded_tokens`` (dd); with utk the ``contexts`` table names each context's documents
(``doc_ids``, ``chunk_table``). The ``summary`` output holds one ``"section": "packing"`` record
(per phase for concat and utk).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from winnow.beam.combiners import MergeFn
from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, rejected, side_copy
from winnow.beam.write import TableSpec
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.packing import (
    BucketTotals,
    concat_summary,
    context_position,
    context_slices,
    dd_summary,
    decompose,
    document_draws,
    merge_totals,
    prefix_offsets,
    shard_sequences,
)
from winnow.stages.pack.utk import (
    ROW_GROUP_CONTEXTS,
    UTK_CONTEXTS_SCHEMA,
    Segment,
    SpecialTokenInText,
    SpecialTokens,
    UtkPacker,
    UtkTotals,
    context_id,
    untie_context,
    utk_summary,
)

STAGE = "pack"
SUMMARY = "summary"
CONTEXTS = "contexts"
DD = "dd"
_SLICES = "slices"
_PIECES = "pieces"
_TOTALS = "totals"

CONTEXTS_SCHEMA = pa.schema(
    [
        pa.field("context_id", pa.int64(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
        pa.field("doc_order_ranks", pa.list_(pa.int64()), nullable=False),
        pa.field("doc_token_starts", pa.list_(pa.int64()), nullable=False),
        pa.field("doc_token_ends", pa.list_(pa.int64()), nullable=False),
    ]
)

DD_SCHEMA = pa.schema(
    [
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("shard", pa.int64(), nullable=False),
        pa.field("shard_position", pa.int64(), nullable=False),
        pa.field("partial", pa.bool_(), nullable=False),
        pa.field("seq_len", pa.int32(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("piece_index", pa.int32(), nullable=False),
        pa.field("token_start", pa.int64(), nullable=False),
        pa.field("token_end", pa.int64(), nullable=False),
        pa.field("tokens", pa.list_(pa.int32()), nullable=False),
        pa.field("order_rank", pa.int64()),  # the document's, so token provenance needs no join
    ]
)


def _context_sort_key(row: dict[str, Any]) -> tuple[int, int]:
    return (row["position"], row["context_id"])


def _dd_sort_key(row: dict[str, Any]) -> tuple[int, int, int]:
    return (row["bucket"], row["shard"], row["shard_position"])


# The UtK contexts table: the core's row plus the training phase it belongs to (its partition).
UTK_TABLE_SCHEMA = UTK_CONTEXTS_SCHEMA.append(pa.field("phase", pa.string()))

TABLES: dict[str, TableSpec] = {
    CONTEXTS: TableSpec(CONTEXTS_SCHEMA, _context_sort_key, shard_key=lambda row: str(row["context_id"]).encode()),
    DD: TableSpec(
        DD_SCHEMA,
        _dd_sort_key,
        partition_field="bucket",
        shard_key=lambda row: f"{row['shard']}".encode(),
    ),
}
UTK_TABLE = TableSpec(
    UTK_TABLE_SCHEMA,
    _context_sort_key,
    partition_field="phase",
    shard_key=lambda row: str(row["context_id"]).encode(),
    row_group_rows=ROW_GROUP_CONTEXTS,  # long contexts: a 192K-token row is ~0.8 MB
)


def _epoch(doc: Document) -> int:
    return int(doc.get("epoch") or 0)


def doc_key(doc: Document) -> str:
    """Identity of one copy of a document: repeats (epoch ≥ 1) get their own DD draws."""
    epoch = _epoch(doc)
    return str(doc["id"]) if epoch == 0 else f"{doc['id']}\x1fepoch={epoch}"


def _valid_rank(rank: Any) -> bool:
    return isinstance(rank, int) and not isinstance(rank, bool) and rank >= 0


def _missing_rank(doc: Document) -> Any:
    """A document the packer cannot place: rejected with the reason, never dropped."""
    return rejected(doc, STAGE, f"packing needs a non-negative int order_rank, got {doc.get('order_rank')!r}")


def _rank_key(doc: Document) -> tuple[int, str, int]:
    """Stream order: ``order_rank``, with (id, epoch) only to make accidental ties deterministic."""
    return (int(doc["order_rank"]), str(doc["id"]), _epoch(doc))


class _RankedTokensDoFn(beam.DoFn):
    """Base of the packer's tokenising steps: the tokenizer loads once per worker; a document
    without a valid ``order_rank`` or that fails to tokenise is rejected, never dropped."""

    def __init__(self, tokenizer: TokenizerConfig):
        self.tokenizer_config = tokenizer
        self._missing_rank = counter("order:pack_missing_rank")
        self._failed = counter("order:pack_tokenize_error")

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)

    def process(self, doc: Document) -> Iterator[Any]:
        rank = doc.get("order_rank")
        if not _valid_rank(rank):
            self._missing_rank.inc()
            yield _missing_rank(doc)
            return
        try:
            tokens = self.tokenize(doc)
        except Exception as error:  # one bad document must not kill the job
            self._failed.inc()
            yield rejected(doc, STAGE, error)
            return
        yield from self.emit(doc, rank, tokens)

    def tokenize(self, doc: Document) -> Any:
        raise NotImplementedError

    def emit(self, doc: Document, rank: int, tokens: Any) -> Iterator[Any]:
        raise NotImplementedError


class _CountTokens(_RankedTokensDoFn):
    """Tokens of each document in the stream (ids + EOS), keyed by its rank block."""

    def __init__(self, tokenizer: TokenizerConfig, rank_block: int):
        super().__init__(tokenizer)
        self.rank_block = rank_block

    def tokenize(self, doc: Document) -> int:
        n_tokens = doc.get("n_tokens")
        return int(self.tokenizer.count([doc["text"]])[0]) if n_tokens is None else n_tokens

    def emit(self, doc: Document, rank: int, n_tokens: int) -> Iterator[Any]:
        if doc.get("n_tokens") is None:
            doc = {**doc, "n_tokens": n_tokens}
        yield ((str(doc.get("phase") or ""), rank // self.rank_block), (int(n_tokens) + 1, doc))


def _block_offsets(totals: list[tuple[tuple[str, int], int]], context_tokens: int) -> dict[tuple[str, int], int]:
    """Start offset of each (phase, rank block) in the stream (one entry per block: small).

    Each training phase of a mix schedule starts a new context, so no context mixes phases."""
    offsets: dict[tuple[str, int], int] = {}
    running, phase = 0, None
    for key, tokens in sorted(totals):
        if phase is not None and key[0] != phase and running % context_tokens:
            running += context_tokens - running % context_tokens
        phase = key[0]
        offsets[key] = running
        running += tokens
    return offsets


class _PlaceDocuments(beam.DoFn):
    """Prefix sums inside one rank block: each document's global offset, context and slices."""

    def __init__(self, context_tokens: int):
        self.context_tokens = context_tokens

    def process(
        self, element: tuple[tuple[str, int], Iterable[tuple[int, Document]]], offsets: dict[tuple[str, int], int]
    ) -> Iterator[Any]:
        block, members = element
        ordered = sorted(members, key=lambda item: _rank_key(item[1]))
        starts = prefix_offsets([n for n, _ in ordered], base=offsets[block])
        for (n, doc), start in zip(ordered, starts, strict=True):
            slices = context_slices(start, n, self.context_tokens)
            for piece in slices:
                yield pvalue.TaggedOutput(
                    _SLICES,
                    (
                        piece.context_id,
                        (_rank_key(doc), str(doc["id"]), piece.doc_token_start, piece.doc_token_end),
                    ),
                )
            yield {**doc, "context_id": slices[0].context_id, "token_offset": start}


def _context_row(element: tuple[int, Iterable[tuple]], shuffle: bool, seed: int) -> dict[str, Any]:
    context_id, members = element
    ordered = sorted(members)
    return {
        "context_id": context_id,
        "position": context_position(context_id, seed) if shuffle else context_id,
        "n_tokens": sum(end - start for _, _, start, end in ordered),
        "doc_ids": [doc_id for _, doc_id, _, _ in ordered],
        "doc_order_ranks": [rank[0] for rank, _, _, _ in ordered],
        "doc_token_starts": [start for _, _, start, _ in ordered],
        "doc_token_ends": [end for _, _, _, end in ordered],
    }


class _SumPairs(beam.CombineFn):
    """(documents, tokens) over the whole collection."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add_input(self, acc: tuple[int, int], n_tokens: int) -> tuple[int, int]:
        return (acc[0] + 1, acc[1] + n_tokens)

    def merge_accumulators(self, accs: Iterable[tuple[int, int]]) -> tuple[int, int]:
        docs = tokens = 0
        for d, t in accs:
            docs += d
            tokens += t
        return (docs, tokens)

    def extract_output(self, acc: tuple[int, int]) -> tuple[int, int]:
        return acc


class _Decompose(_RankedTokensDoFn):
    """Tokenise a document, append EOT and split it into DD pieces (one output per piece)."""

    def __init__(self, tokenizer: TokenizerConfig, config: PackConfig, seed: int):
        super().__init__(tokenizer)
        self.config = config
        self.seed = seed
        self._discarded = counter("order:dd_discarded_tokens")

    def tokenize(self, doc: Document) -> list[int]:
        return self.tokenizer.encode([doc["text"]])[0]

    def emit(self, doc: Document, rank: int, ids: list[int]) -> Iterator[Any]:
        cfg = self.config
        stream = [*ids, self.tokenizer.eos_id]
        key = doc_key(doc)
        parts = decompose(
            len(stream),
            i_min=cfg.i_min,
            i_max=cfg.i_max,
            randomized=cfg.randomized,
            target_token=cfg.target_token,
            draw=document_draws(key, self.seed),
        )
        totals = BucketTotals()
        totals.add(len(stream), parts)
        yield pvalue.TaggedOutput(_TOTALS, totals)
        self._discarded.inc(parts.discarded)
        for index, piece in enumerate(parts.pieces):
            yield pvalue.TaggedOutput(
                _PIECES,
                {
                    "bucket": piece.bucket,
                    "seq_len": piece.length,
                    "doc_id": str(doc["id"]),
                    "epoch": _epoch(doc),
                    "piece_index": index,
                    "token_start": piece.start,
                    "token_end": piece.end,
                    "tokens": stream[piece.start : piece.end],
                    "order_rank": rank,
                    # Shuffle within the bucket: a hash, so the order does not depend on sharding.
                    "shuffle_key": h64(f"{key}\x1f{index}", f"dd_shuffle:{piece.bucket}", self.seed),
                },
            )
        out = {**doc, "dd_pieces": len(parts.pieces), "dd_discarded_tokens": parts.discarded}
        if out.get("n_tokens") is None:
            out["n_tokens"] = len(ids)
        yield out


class _MergeTotals(beam.CombineFn):
    def create_accumulator(self) -> BucketTotals:
        return BucketTotals()

    def add_input(self, acc: BucketTotals, item: BucketTotals) -> BucketTotals:
        return acc.merge(item)

    def merge_accumulators(self, accs: Iterable[BucketTotals]) -> BucketTotals:
        return merge_totals(accs)

    def extract_output(self, acc: BucketTotals) -> BucketTotals:
        return acc


def _shuffle_order(piece: dict[str, Any]) -> tuple[int, str, int, int]:
    return (piece["shuffle_key"], piece["doc_id"], piece["epoch"], piece["piece_index"])


class _ShardBlock(beam.DoFn):
    """Dense shuffled ranks inside one (bucket, hash block); rank → shard and position."""

    def __init__(self, shard_tokens_log2: int, max_shard_sequences: int):
        self.shard_tokens_log2 = shard_tokens_log2
        self.max_shard_sequences = max_shard_sequences

    def process(
        self,
        element: tuple[tuple[int, int], Iterable[dict[str, Any]]],
        offsets: dict[tuple[int, int], int],
        counts: dict[int, int],
    ) -> Iterator[dict[str, Any]]:
        (bucket, block), pieces = element
        per_shard = shard_sequences(bucket, self.shard_tokens_log2, self.max_shard_sequences)
        first_partial_rank = counts[bucket] // per_shard * per_shard
        for rank, piece in enumerate(sorted(pieces, key=_shuffle_order), start=offsets[(bucket, block)]):
            row = {k: v for k, v in piece.items() if k != "shuffle_key"}
            row["shard"], row["shard_position"] = divmod(rank, per_shard)
            row["partial"] = rank >= first_partial_rank
            yield row


def _hash_block(piece: dict[str, Any], blocks: dict[int, int]) -> tuple[tuple[int, int], dict[str, Any]]:
    bucket = piece["bucket"]
    return ((bucket, (piece["shuffle_key"] * blocks[bucket]) >> 64), piece)


def _blocks_per_bucket(counts: dict[int, int], shard_tokens_log2: int, max_shard_sequences: int) -> dict[int, int]:
    """About one hash block per shard: a block is what one worker sorts in memory."""
    return {
        bucket: max(1, math.ceil(n / shard_sequences(bucket, shard_tokens_log2, max_shard_sequences)))
        for bucket, n in counts.items()
    }


def _block_starts(sizes: list[tuple[tuple[int, int], int]]) -> dict[tuple[int, int], int]:
    starts: dict[tuple[int, int], int] = {}
    running: dict[int, int] = {}
    for (bucket, block), size in sorted(sizes):
        starts[(bucket, block)] = running.get(bucket, 0)
        running[bucket] = running.get(bucket, 0) + size
    return starts


# --- Untie the Knots ------------------------------------------------------------------------------

_ROWS = "rows"


def utk_bundle(phase: str, block: int | None = None) -> str:
    """A UtK bundle's name, the prefix of its context ids: ``phase=<name>`` (``stream`` without a
    schedule), plus ``/block=<b>`` when ``overflow: defer`` packs each rank block on its own."""
    name = f"phase={phase}" if phase else "stream"
    return name if block is None else f"{name}/block={block}"


class _UtkTokens(_RankedTokensDoFn):
    """Tokenise a document for UtK: ``((phase, rank block), (rank key, doc, ids + EOS as int32))``.

    A document whose ids contain a special token id is rejected (possible only when ``special_ids``
    pins an ordinary id, or the tokenizer parses an added token of that name out of text): a knot
    inside text would be ambiguous."""

    def __init__(self, tokenizer: TokenizerConfig, config: PackConfig):
        super().__init__(tokenizer)
        self.config = config

    def setup(self) -> None:
        super().setup()
        self._special_ids = SpecialTokens.from_tokenizer(self.config.utk, self.tokenizer).ids

    def tokenize(self, doc: Document) -> np.ndarray:
        ids = np.asarray(self.tokenizer.encode([doc["text"]])[0], dtype=np.int64)
        found = ids[np.isin(ids, self._special_ids)]
        if len(found):
            raise SpecialTokenInText(f"the text encodes to special token id(s) {sorted(set(found.tolist()))}")
        return np.append(ids, self.tokenizer.eos_id).astype(np.int32)

    def emit(self, doc: Document, rank: int, stream: np.ndarray) -> Iterator[Any]:
        if doc.get("n_tokens") is None:
            doc = {**doc, "n_tokens": len(stream) - 1}
        phase = str(doc.get("phase") or "")
        yield ((phase, rank // self.config.rank_block), (_rank_key(doc), doc, stream))


def _phase_block_offsets(totals: list[tuple[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """Start of each (phase, rank block) in its phase's stream: every phase is a bundle of its own."""
    offsets: dict[tuple[str, int], int] = {}
    running, phase = 0, None
    for key, tokens in sorted(totals):
        if key[0] != phase:
            running, phase = 0, key[0]
        offsets[key] = running
        running += tokens
    return offsets


def _block_totals(phase: str, streams: list[np.ndarray]) -> pvalue.TaggedOutput:
    return pvalue.TaggedOutput(
        _TOTALS, (phase, UtkTotals(documents=len(streams), stream_tokens=sum(len(s) for s in streams)))
    )


class _PlaceWindows(beam.DoFn):
    """``overflow: truncate``: prefix sums inside one rank block, then each document's slices of the fixed
    windows of ``L + 1`` tokens of its phase's stream, tokens included."""

    def __init__(self, window: int):
        self.window = window

    def process(
        self, element: tuple[tuple[str, int], Iterable[tuple]], offsets: dict[tuple[str, int], int]
    ) -> Iterator[Any]:
        (phase, block), members = element
        ordered = sorted(members, key=lambda item: item[0])
        streams = [stream for _, _, stream in ordered]
        yield _block_totals(phase, streams)
        starts = prefix_offsets([len(s) for s in streams], base=offsets[(phase, block)])
        for (key, doc, stream), start in zip(ordered, starts, strict=True):
            for piece in context_slices(start, len(stream), self.window):
                part = stream[piece.doc_token_start : piece.doc_token_end]
                yield pvalue.TaggedOutput(
                    _SLICES, ((phase, piece.context_id), (key, str(doc["id"]), piece.doc_token_start, part))
                )
            yield doc


class _UtkContexts(beam.DoFn):
    """Base of the steps that untie contexts: tokenizer and special tokens once per worker, counters,
    and the table row (the core's row, its phase, and its bundle for unshuffled positions)."""

    def __init__(self, config: PackConfig, tokenizer: TokenizerConfig, seed: int):
        self.config = config
        self.tokenizer_config = tokenizer
        self.seed = seed
        self._counters: dict[str, Any] = {}

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)
        self.special = SpecialTokens.from_tokenizer(self.config.utk, self.tokenizer)

    def count(self, name: str, n: int) -> None:
        if name not in self._counters:
            self._counters[name] = counter(name)
        self._counters[name].inc(n)

    def row(self, context: Any, phase: str, block: int) -> pvalue.TaggedOutput:
        row = context.row(self.config.utk.emit, self.seed)
        row["phase"] = phase or None
        row["_bundle"] = (phase, block)
        return pvalue.TaggedOutput(_ROWS, row)


class _UntieWindows(_UtkContexts):
    """``overflow: truncate``: one window (≤ L + 1 tokens, the slices of its documents) untied on its own."""

    def process(self, element: tuple[tuple[str, int], Iterable[tuple]]) -> Iterator[Any]:
        (phase, index), members = element
        segments = [
            Segment(doc_id, start, np.asarray(tokens, dtype=np.int64))
            for _, doc_id, start, tokens in sorted(members, key=lambda item: item[0])
        ]
        context = untie_context(
            segments,
            context_key=context_id(utk_bundle(phase), index),
            context_index=index,
            config=self.config.utk,
            special=self.special,
            encode=self.tokenizer.encode,
            seed=self.seed,
        )
        totals = UtkTotals()
        totals.add_context(context, deferred=False)
        self.count("pack:utk_contexts", 1)
        self.count("pack:utk_augmented_contexts", int(context.utk_applied))
        self.count("pack:utk_truncated_tokens", context.truncated_tokens)
        yield pvalue.TaggedOutput(_TOTALS, (phase, totals))
        yield self.row(context, phase, -1)


class _PackBlocks(_UtkContexts):
    """``overflow: defer``: one rank block of one phase, sorted, streamed through a ``UtkPacker``; what a
    context displaces opens the next context of the block."""

    def process(self, element: tuple[tuple[str, int], Iterable[tuple]]) -> Iterator[Any]:
        (phase, block), members = element
        ordered = sorted(members, key=lambda item: item[0])
        packer = UtkPacker(
            self.config.utk,
            self.special,
            self.tokenizer.encode,
            self.seed,
            context_tokens=self.config.context_tokens,
            bundle=utk_bundle(phase, block),
            count=self.count,
        )
        for _, doc, stream in ordered:
            for context in packer.add(str(doc["id"]), stream[:-1]):
                yield self.row(context, phase, block)
            yield doc
        for context in packer.finish():
            yield self.row(context, phase, block)
        yield pvalue.TaggedOutput(_TOTALS, (phase, packer.totals))


def _bundle_offsets(counts: list[tuple[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    """First training position of each bundle: bundles in (phase, block) order, contexts in stream order."""
    return dict(zip(sorted(dict(counts)), prefix_offsets([n for _, n in sorted(counts)]), strict=True))


def _place_row(row: dict[str, Any], offsets: dict[tuple[str, int], int] | None) -> dict[str, Any]:
    row = dict(row)
    bundle = row.pop("_bundle")
    if offsets is not None:
        row["position"] = offsets[bundle] + row["context_index"]
    return row


def _utk_summaries(
    items: list[tuple[str, UtkTotals]], config: PackConfig, tokenizer: TokenizerConfig, seed: int
) -> Iterator[dict[str, Any]]:
    """One ``packing`` record per phase (one with zeros for an empty input)."""
    loaded = load_tokenizer(tokenizer.path, tokenizer.eos_token)
    special = SpecialTokens.from_tokenizer(config.utk, loaded)
    defer = config.utk.overflow == "defer"
    for phase, totals in sorted(items, key=lambda item: item[0]) or [("", UtkTotals())]:
        yield {
            **utk_summary(totals, config.utk, special, seed, context_tokens=config.context_tokens),
            "phase": phase or None,
            "bundles": "rank_block" if defer else "phase",
            "rank_block": config.rank_block if defer else None,
            "shuffled": config.shuffle_contexts,
            "tokenizer": loaded.describe(),
        }


class Pack(beam.PTransform):
    """Pack ranked documents into ICP contexts or DD buckets (see the module docstring)."""

    def __init__(self, config: PackConfig, tokenizer: TokenizerConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.seed = seed
        self.tables: dict[str, TableSpec] = {
            "concat": {CONTEXTS: TABLES[CONTEXTS]},
            "dd": {DD: TABLES[DD]},
            "utk": {CONTEXTS: UTK_TABLE},
        }.get(config.mode, {})

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        pipeline = docs.pipeline
        if self.config.mode == "concat":
            return self._concat(docs)
        if self.config.mode == "dd":
            return self._dd(docs)
        if self.config.mode == "utk":
            return self._utk(docs)
        return {
            KEPT: docs,
            REMOVED: pipeline | "NoRemoved" >> beam.Create([]),
            REJECTED: pipeline | "NoRejected" >> beam.Create([]),
            SUMMARY: pipeline | "Summary" >> beam.Create([{"section": "packing", "mode": "none"}]),
        }

    def _concat(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg = self.config
        counted = docs | "CountTokens" >> beam.ParDo(_CountTokens(self.tokenizer, cfg.rank_block)).with_outputs(
            REJECTED, main=KEPT
        )
        blocks = counted[KEPT]
        offsets = beam.pvalue.AsSingleton(
            blocks
            | "BlockTokens" >> beam.Map(lambda item: (item[0], item[1][0]))
            | "SumBlocks" >> beam.CombinePerKey(sum)
            | "AllBlocks" >> beam.combiners.ToList()
            | "BlockOffsets" >> beam.Map(_block_offsets, cfg.context_tokens)
        )
        placed = (
            blocks
            | "GroupBlocks" >> beam.GroupByKey()
            | "Place" >> beam.ParDo(_PlaceDocuments(cfg.context_tokens), offsets).with_outputs(_SLICES, main=KEPT)
        )
        shuffle, seed = cfg.shuffle_contexts, self.seed
        contexts = (
            placed[_SLICES]
            | "GroupContexts" >> beam.GroupByKey()
            | "ContextRows" >> beam.Map(_context_row, shuffle, seed)
        )
        context_tokens = cfg.context_tokens
        tokenizer_path, eos_token = self.tokenizer.path, self.tokenizer.eos_token
        summary = (
            blocks
            | "DocTokens" >> beam.Map(lambda item: (item[0][0], item[1][0]))
            | "Totals" >> beam.CombinePerKey(_SumPairs())
            | "AllTotals" >> beam.combiners.ToList()
            | "ConcatSummary"
            >> beam.FlatMap(
                lambda totals: [
                    {
                        **concat_summary(
                            documents=acc[0], tokens=acc[1], context_tokens=context_tokens, shuffled=shuffle, seed=seed
                        ),
                        "phase": phase or None,
                        "tokenizer": load_tokenizer(tokenizer_path, eos_token).describe(),
                    }
                    for phase, acc in (sorted(totals) or [("", (0, 0))])
                ]
            )
        )
        return {
            KEPT: placed[KEPT],
            REMOVED: docs.pipeline | "NoRemoved" >> beam.Create([]),
            REJECTED: counted[REJECTED],
            SUMMARY: summary,
            CONTEXTS: contexts,
        }

    def _utk(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg, seed, tokenizer = self.config, self.seed, self.tokenizer
        tokenized = docs | "UtkTokens" >> beam.ParDo(_UtkTokens(tokenizer, cfg)).with_outputs(REJECTED, main=KEPT)
        blocks = tokenized[KEPT]
        grouped = blocks | "GroupBlocks" >> beam.GroupByKey()
        if cfg.utk.overflow == "truncate":
            offsets = beam.pvalue.AsSingleton(
                blocks
                | "BlockTokens" >> beam.Map(lambda item: (item[0], len(item[1][2])))
                | "SumBlocks" >> beam.CombinePerKey(sum)
                | "AllBlocks" >> beam.combiners.ToList()
                | "BlockOffsets" >> beam.Map(_phase_block_offsets)
            )
            placed = grouped | "PlaceWindows" >> beam.ParDo(
                _PlaceWindows(cfg.context_tokens + 1), offsets
            ).with_outputs(_SLICES, _TOTALS, main=KEPT)
            untied = (
                placed[_SLICES]
                | "GroupWindows" >> beam.GroupByKey()
                | "UntieWindows" >> beam.ParDo(_UntieWindows(cfg, tokenizer, seed)).with_outputs(_ROWS, _TOTALS)
            )
            kept, rows = placed[KEPT], untied[_ROWS]
            totals = (placed[_TOTALS], untied[_TOTALS]) | "AllUtkTotals" >> beam.Flatten()
        else:
            packed = grouped | "PackBlocks" >> beam.ParDo(_PackBlocks(cfg, tokenizer, seed)).with_outputs(
                _ROWS, _TOTALS, main=KEPT
            )
            kept, rows, totals = packed[KEPT], packed[_ROWS], packed[_TOTALS]
        offsets_by_bundle = None
        if not cfg.shuffle_contexts:
            offsets_by_bundle = beam.pvalue.AsSingleton(
                rows
                | "RowBundles" >> beam.Map(lambda row: (row["_bundle"], 1))
                | "CountBundles" >> beam.CombinePerKey(sum)
                | "AllBundles" >> beam.combiners.ToList()
                | "BundleOffsets" >> beam.Map(_bundle_offsets)
            )
        contexts = rows | "Position" >> beam.Map(_place_row, offsets_by_bundle)
        summary = (
            totals
            | "MergeUtkTotals" >> beam.CombinePerKey(MergeFn(UtkTotals))
            | "AllPhaseTotals" >> beam.combiners.ToList()
            | "UtkSummary" >> beam.FlatMap(_utk_summaries, cfg, tokenizer, seed)
        )
        return {
            KEPT: kept,
            REMOVED: docs.pipeline | "NoRemoved" >> beam.Create([]),
            REJECTED: tokenized[REJECTED],
            SUMMARY: summary,
            CONTEXTS: contexts,
        }

    def _dd(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg = self.config
        split = docs | "Decompose" >> beam.ParDo(_Decompose(self.tokenizer, cfg, self.seed)).with_outputs(
            _PIECES, _TOTALS, REJECTED, main=KEPT
        )
        pieces = split[_PIECES]
        counts_pc = (
            pieces | "PieceBuckets" >> beam.Map(lambda p: (p["bucket"], 1)) | "CountBuckets" >> beam.CombinePerKey(sum)
        )
        counts = beam.pvalue.AsDict(side_copy(counts_pc, "CountsSide"))
        log2, cap = cfg.shard_tokens_log2, cfg.max_shard_sequences
        blocks = beam.pvalue.AsSingleton(
            counts_pc
            | "AllCounts" >> beam.combiners.ToList()
            | "BlocksPerBucket" >> beam.Map(lambda items: _blocks_per_bucket(dict(items), log2, cap))
        )
        keyed = pieces | "HashBlock" >> beam.Map(_hash_block, blocks)
        starts = beam.pvalue.AsSingleton(
            keyed
            | "BlockKeys" >> beam.Map(lambda item: (item[0], 1))
            | "BlockSizes" >> beam.CombinePerKey(sum)
            | "AllBlockSizes" >> beam.combiners.ToList()
            | "BlockStarts" >> beam.Map(_block_starts)
        )
        rows = (
            keyed
            | "GroupHashBlocks" >> beam.GroupByKey()
            | "AssignShards" >> beam.ParDo(_ShardBlock(log2, cap), starts, counts)
        )
        summary_args = {
            "i_min": cfg.i_min,
            "i_max": cfg.i_max,
            "target_token": cfg.target_token,
            "randomized": cfg.randomized,
            "b_max": cfg.b_max,
            "curriculum": cfg.curriculum,
            "cycles": cfg.cycles,
            "shard_tokens_log2": log2,
            "max_shard_sequences": cap,
        }
        seed = self.seed
        tokenizer_path, eos_token = self.tokenizer.path, self.tokenizer.eos_token
        summary = (
            split[_TOTALS]
            | "MergeTotals" >> beam.CombineGlobally(_MergeTotals())
            | "DDSummary"
            >> beam.Map(
                lambda totals: {
                    **dd_summary(totals, **summary_args),
                    "seed": seed,
                    "tokenizer": load_tokenizer(tokenizer_path, eos_token).describe(),
                }
            )
        )
        return {
            KEPT: split[KEPT],
            REMOVED: docs.pipeline | "NoRemoved" >> beam.Create([]),
            REJECTED: split[REJECTED],
            SUMMARY: summary,
            DD: rows,
        }


def _pack(config: PackConfig, seed: int = 0, tokenizer: TokenizerConfig | None = None) -> Pack:
    return Pack(config, tokenizer or TokenizerConfig(), seed)


SPEC = StageSpec(
    name=STAGE,
    config=PackConfig,
    transform=_pack,
    # concat sets the context of the document's first token and its offset in the whole packed
    # stream; dd sets the piece/discard counts; utk sets none (its contexts table names the documents).
    columns=(
        pa.field("context_id", pa.int64()),
        pa.field("token_offset", pa.int64()),
        pa.field("dd_pieces", pa.int32()),
        pa.field("dd_discarded_tokens", pa.int32()),
    ),
    needs=("seed", "tokenizer"),
)
