"""The pack stage's sequences for the token output: packed contexts (concat) and DD pieces.

Contexts are cut from the kept documents' own encoding (``TokenizeDocuments``) at the offsets the
pack stage gave them (``token_offset``, with ``context_slices``, the rule that built the
``contexts`` table), so the token files hold exactly the stream ``contexts/`` describes without a
second encoding. Each context is grouped on its id (at most ``context_tokens`` tokens a group) and
becomes one sequence of exactly ``context_tokens`` tokens. The one shorter context a phase can end
with is left out, because a trainer that reads fixed-length samples (Megatron's ``GPTDataset``,
a collated MDS batch) would fall out of step behind it; the manifest lists it as
``dropped_tail_context``. Training order is ascending ``position`` (the seeded shuffle), else
``context_id``.

DD pieces come from the ``dd`` table rows, which carry their ids; each bucket is a dataset in
``(shard, shard_position)`` order, every sequence ``seq_len`` tokens (2^i, or 2^i + 1 with
``pack.target_token``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from winnow.beam.tokens import (
    BLOCK_BYTES,
    DatasetRef,
    Item,
    as_ids,
    dataset_ref,
    phase_of,
    sequence_id_of,
    sequence_record,
)
from winnow.beam.write import partition_dir
from winnow.core.tokens import Span
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.packing import context_position, context_slices, piece_length, shard_sequences

CONTEXTS = "contexts"
DD = "dd"
TAIL_NOTE = "dropped_tail_context"


def _slices(record: dict[str, Any], context_tokens: int, dtype: np.dtype) -> Iterator[tuple[int, tuple]]:
    """One document's pieces of the packed stream, keyed by context id."""
    offset = record.get("token_offset")
    if offset is None:
        return
    tokens = np.frombuffer(record["tokens"], dtype=dtype)  # ids + EOS: the stream's per-document unit
    n_tokens = record.get("n_tokens")
    if n_tokens is not None and int(n_tokens) + 1 != tokens.shape[0]:
        raise ValueError(
            f"document {record['id']!r}: the pack stage placed {n_tokens} tokens but the tokenizer gives "
            f"{tokens.shape[0] - 1}; token output and packing must use the same tokenizer"
        )
    phase = phase_of(partition_dir("phase", record.get("phase")))
    rank = record.get("order_rank")
    for piece in context_slices(int(offset), tokens.shape[0], context_tokens):
        span = (record["id"], piece.doc_token_start, piece.doc_token_end, record.get("url"), record.get("source"))
        yield (
            piece.context_id,
            (
                int(offset) + piece.doc_token_start,
                phase,
                tokens[piece.doc_token_start : piece.doc_token_end].tobytes(),
                span,
                rank,
            ),
        )


class _AssembleContext(beam.DoFn):
    """A context's slices in stream order → one sequence (or the phase's short tail, as a note)."""

    TAIL = "tail"

    def __init__(self, context_tokens: int, shuffled: bool, seed: int, dtype: np.dtype):
        self.context_tokens = context_tokens
        self.shuffled = shuffled
        self.seed = seed
        self.dtype = np.dtype(dtype)

    def process(self, element: tuple[int, Iterable[tuple]]) -> Iterator[Any]:
        context_id, members = element
        ordered = sorted(members, key=lambda member: member[0])
        phases = {member[1] for member in ordered}
        if len(phases) != 1:
            raise ValueError(f"context {context_id} mixes phases {sorted(phases)}")
        (phase,) = phases
        start = context_id * self.context_tokens
        for offset, _, raw, _, _ in ordered:
            if offset != start:
                raise ValueError(f"context {context_id}: tokens {start}..{offset} of the packed stream are missing")
            start += len(raw) // self.dtype.itemsize
        n_tokens = start - context_id * self.context_tokens
        dataset = dataset_ref(CONTEXTS, phase)
        if n_tokens != self.context_tokens:
            yield beam.pvalue.TaggedOutput(
                self.TAIL,
                ("note", (TAIL_NOTE, f"{CONTEXTS}/phase={phase}" if phase else CONTEXTS, {
                    "context_id": context_id, "tokens": n_tokens,
                    "doc_ids": [member[3][0] for member in ordered],
                })),
            )  # fmt: skip
            return
        tokens = np.frombuffer(b"".join(member[2] for member in ordered), dtype=self.dtype)
        position = context_position(context_id, self.seed) if self.shuffled else context_id
        spans = [Span(*member[3]) for member in ordered]
        first_rank = ordered[0][4]
        record = sequence_record(
            f"context-{context_id}", tokens, spans, -1 if first_rank is None else first_rank, phase
        )
        yield (dataset, position, context_id, record)


def _context_block(
    item: tuple[DatasetRef, int, int, tuple], blocks: dict[DatasetRef, int], per_block: int, shuffled: bool
) -> Item:
    dataset, position, context_id, record = item
    # position is a 63-bit hash when shuffled: equal hash ranges hold about equal numbers of contexts.
    block = (position * blocks[dataset]) >> 63 if shuffled else context_id // per_block
    return (dataset, block, (position, context_id), record)


class ContextSequences(beam.PTransform):
    """Tokenised kept documents (with ``token_offset``) → items of the ``contexts`` datasets, plus
    tail notes (output ``tails``)."""

    def __init__(self, config: PackConfig, seed: int, dtype: np.dtype):
        super().__init__()
        self.config = config
        self.seed = seed
        self.dtype = np.dtype(dtype)

    def expand(self, tokenized: beam.PCollection) -> dict[str, beam.PCollection]:
        length, dtype = self.config.context_tokens, self.dtype
        shuffled = self.config.shuffle_contexts
        context_bytes = length * dtype.itemsize
        assembled = (
            tokenized
            | "Slices" >> beam.FlatMap(_slices, length, dtype)
            | "GroupContexts" >> beam.GroupByKey()
            | "Assemble"
            >> beam.ParDo(_AssembleContext(length, shuffled, self.seed, dtype)).with_outputs(
                _AssembleContext.TAIL, main="contexts"
            )
        )
        contexts = assembled["contexts"]
        blocks = beam.pvalue.AsSingleton(
            contexts
            | "PerDataset" >> beam.Map(lambda item: (item[0], 1))
            | "CountContexts" >> beam.CombinePerKey(sum)
            | "AllCounts" >> beam.combiners.ToList()
            | "Blocks"
            >> beam.Map(lambda counts: {ref: max(1, math.ceil(n * context_bytes / BLOCK_BYTES)) for ref, n in counts})
        )
        per_block = max(1, BLOCK_BYTES // context_bytes)
        items = contexts | "Block" >> beam.Map(_context_block, blocks, per_block, shuffled)
        tails = (
            assembled[_AssembleContext.TAIL]
            | "TailDataset" >> beam.Map(lambda note: (note[1][1], note))
            | "GroupTails" >> beam.GroupByKey()
            | "OneTailEach" >> beam.FlatMap(_one_tail)
        )
        return {"items": items, "tails": tails}


def _one_tail(element: tuple[str, Iterable[tuple]]) -> Iterator[tuple]:
    """Only a phase's last context may be short; a second one means the stream has a hole."""
    dataset, notes = element
    notes = list(notes)
    if len(notes) > 1:
        ids = sorted(note[1][2]["context_id"] for note in notes)
        raise ValueError(f"{dataset}: contexts {ids} are shorter than context_tokens; only the last may be")
    yield from notes


def dd_item(row: dict[str, Any], config: PackConfig, dtype: np.dtype) -> Item:
    """One ``dd`` table row → an item of its bucket's dataset, in (shard, shard_position) order."""
    bucket = int(row["bucket"])
    shard_bytes = (
        shard_sequences(bucket, config.shard_tokens_log2, config.max_shard_sequences)
        * piece_length(bucket, config.target_token)
        * dtype.itemsize
    )
    shards_per_block = max(1, BLOCK_BYTES // shard_bytes)
    tokens = as_ids(row["tokens"], dtype)
    doc_id, epoch = str(row["doc_id"]), int(row.get("epoch") or 0)
    span = Span(doc_id, int(row["token_start"]), int(row["token_end"]))
    rank = row.get("order_rank")
    record = sequence_record(
        f"{sequence_id_of(doc_id, epoch)}/{row['piece_index']}", tokens, (span,), -1 if rank is None else rank, ""
    )
    shard, position = int(row["shard"]), int(row["shard_position"])
    return (dataset_ref(DD, "", bucket), shard // shards_per_block, (shard, position), record)
