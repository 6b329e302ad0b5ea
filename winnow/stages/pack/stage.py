"""``Pack``: turn ranked documents into training sequences (the end of the ``order`` stage).

Input documents carry a unique int ``order_rank`` (the ICP traversal order, METHODS §4.4).

* ``concat`` (ICP §4.6): the stream P is every document's tokens + EOS in ``order_rank`` order,
  cut into contexts of exactly L tokens; documents may span contexts. Global token offsets are
  prefix sums computed at scale: ranks are grouped into blocks of ``rank_block`` consecutive
  ranks, block totals come from a ``CombinePerKey`` and become a small side input of block
  offsets, and each block does its own prefix sum. Every document then emits one slice per
  context it touches, and a ``GroupByKey`` on ``context_id`` builds the ``contexts`` table.
  Contexts get a seeded ``position`` (a hash), so training in ascending position shuffles them.
* ``dd`` (Dataset Decomposition §5): each document's tokens + EOT are split greedily into
  power-of-two pieces (``winnow.scorers.packing.decompose``); pieces are shuffled within their
  bucket by a hash and given dense ranks with the same block/prefix-sum trick, which assigns
  fixed-size shards; the last, partial shard of a bucket is kept but marked ``partial``.
  The ``dd`` table is partitioned by ``bucket`` (``dd/bucket=<i>/``).
* ``none``: documents pass through untouched.

Kept documents gain ``context_id`` and ``token_offset`` (concat) or ``dd_pieces`` and
``dd_discarded_tokens`` (dd). The ``summary`` output holds one ``"section": "packing"`` record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

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


TABLES: dict[str, TableSpec] = {
    CONTEXTS: TableSpec(CONTEXTS_SCHEMA, _context_sort_key, shard_key=lambda row: str(row["context_id"]).encode()),
    DD: TableSpec(
        DD_SCHEMA,
        _dd_sort_key,
        partition_field="bucket",
        shard_key=lambda row: f"{row['shard']}".encode(),
    ),
}


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


class Pack(beam.PTransform):
    """Pack ranked documents into ICP contexts or DD buckets (see the module docstring)."""

    def __init__(self, config: PackConfig, tokenizer: TokenizerConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.seed = seed
        self.tables: dict[str, TableSpec] = (
            {CONTEXTS: TABLES[CONTEXTS]} if config.mode == "concat" else {DD: TABLES[DD]} if config.mode == "dd" else {}
        )

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        pipeline = docs.pipeline
        if self.config.mode == "concat":
            return self._concat(docs)
        if self.config.mode == "dd":
            return self._dd(docs)
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
    # stream; dd sets the piece/discard counts.
    columns=(
        pa.field("context_id", pa.int64()),
        pa.field("token_offset", pa.int64()),
        pa.field("dd_pieces", pa.int32()),
        pa.field("dd_discarded_tokens", pa.int32()),
    ),
    needs=("seed", "tokenizer"),
)
