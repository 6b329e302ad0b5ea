"""Token output in Beam (``output.tokens``): the Beam side of ``winnow.core.tokens``.

A sequence travels as an *item* ``(dataset, block, order_key, record)``: its dataset (documents,
contexts or a DD bucket, per phase), a block of consecutive training positions, its key inside the
block and a compact record (ids as bytes, provenance spans). ``WriteTokenParts`` then

1. sums sequences and bytes per block (a combiner) and turns the block totals into each block's
   start in its dataset (a side input with one entry per block);
2. sorts each block on one worker and places every sequence by prefix sums: its global sequence
   number and its part, ``start_byte // target_bytes`` (``winnow.core.tokens.assign_parts``);
3. groups each part on one worker, writes it in every format with ``write_part`` into a private
   folder and moves the files into the staging tree (temporary name, then rename: a retried or
   crashed worker never leaves a half file under a final name).

No step holds more than one block or one part; ``FinalizeTokens`` sees only the part results (file
names, counts, hashes) and writes what exists once per dataset (MDS ``index.json``).

``TokenizeDocuments`` encodes each kept row once (``encode_batch_fast`` on batches); documents and
packed contexts are both cut from that one encoding.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import xxhash
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import counter
from winnow.beam.write import id_shard_key, partition_dir, shard_index
from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import Span, assign_parts, encode_texts, write_part
from winnow.core.tokens import finalize as finalize_tokens
from winnow.core.tokens.index import DatasetKey, PartResult, TokenSequence

TOKENS = "tokens"
DOCUMENTS = "documents"
BLOCK_BYTES = 64 << 20  # token bytes a placement block aims at: what one worker sorts in memory

# A dataset as a GroupByKey key (plain values, so Beam's deterministic coder takes it).
DatasetRef = tuple[str, str, int]
# (sequence id, ids as bytes in the output dtype, spans, order rank, phase); spans are
# (doc_id, doc_start, doc_end, url, source).
SequenceRecord = tuple[str, bytes, tuple[tuple[str, int, int, str | None, str | None], ...], int, str]
Item = tuple[DatasetRef, int, Any, SequenceRecord]


def dataset_ref(kind: str, phase: str = "", bucket: int | None = None) -> DatasetRef:
    return (kind, phase, -1 if bucket is None else bucket)


def dataset_key(ref: DatasetRef) -> DatasetKey:
    kind, phase, bucket = ref
    return DatasetKey(kind, phase, None if bucket < 0 else bucket)


def as_ids(values: Any, dtype: np.dtype) -> np.ndarray:
    """``values`` as ids of ``dtype``; an id the type cannot hold is an error, never a wrap-around."""
    array = np.asarray(values)
    if array.dtype == dtype:
        return array
    limit = np.iinfo(dtype).max
    if array.size and (int(array.min()) < 0 or int(array.max()) > limit):
        raise ValueError(f"token ids outside {np.dtype(dtype).name}")
    return array.astype(dtype)


def sequence_record(
    sequence_id: str, tokens: np.ndarray, spans: Iterable[Span], order_rank: int, phase: str
) -> SequenceRecord:
    return (
        sequence_id,
        np.ascontiguousarray(tokens).tobytes(),
        tuple((s.doc_id, s.doc_start, s.doc_end, s.url, s.source) for s in spans),
        int(order_rank),
        phase,
    )


def to_sequence(record: SequenceRecord, dtype: np.dtype) -> TokenSequence:
    sequence_id, raw, spans, order_rank, phase = record
    tokens = np.frombuffer(raw, dtype=dtype)
    return TokenSequence(sequence_id, tokens, tuple(Span(*span) for span in spans), order_rank, phase)


def phase_of(partition: str) -> str:
    """The phase name of a data partition folder (``phase=final`` → ``final``; '' → '')."""
    return partition.split("=", 1)[1] if partition else ""


# --- tokenising -----------------------------------------------------------------------------


class TokenizeDocuments(beam.DoFn):
    """Each kept row's token ids with the tokenizer's EOS appended, plus the fields the sequence
    writers need (the text itself stays behind: only a hash of it, as a tie-break).

    A text ``tokenizers`` refuses (a lone surrogate) is encoded with the surrogate replaced and
    counted: the row is already counted as kept, so it is never dropped here."""

    def __init__(self, tokenizer_path: str, eos_token: str, dtype: str):
        self.tokenizer_path = tokenizer_path
        self.eos_token = eos_token
        self.dtype = np.dtype(dtype)
        self._replaced = counter("tokens:replaced_unencodable_text")

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_path, self.eos_token)

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        try:
            return encode_texts(self.tokenizer, texts, append_eos=True, dtype=self.dtype)
        except Exception:
            out = []
            for text in texts:
                try:
                    out += encode_texts(self.tokenizer, [text], append_eos=True, dtype=self.dtype)
                except Exception:
                    self._replaced.inc()
                    clean = text.encode("utf-8", "replace").decode("utf-8")
                    out += encode_texts(self.tokenizer, [clean], append_eos=True, dtype=self.dtype)
            return out

    def process(self, batch: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        texts = [doc.get("text") or "" for doc in batch]
        for doc, text, tokens in zip(batch, texts, self._encode(texts), strict=True):
            yield {
                "id": str(doc["id"]),
                "epoch": int(doc.get("epoch") or 0),
                "phase": doc.get("phase"),
                "source": doc.get("source"),
                "url": doc.get("url"),
                "order_rank": doc.get("order_rank"),
                "n_tokens": doc.get("n_tokens"),
                "context_id": doc.get("context_id"),
                "token_offset": doc.get("token_offset"),
                "text_hash": xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass")),
                "tokens": tokens.tobytes(),  # ids + EOS in the output dtype
            }


def sequence_id_of(doc_id: str, epoch: int) -> str:
    """A repeat (epoch ≥ 1) is its own sequence; the provenance keeps the document's id."""
    return doc_id if epoch == 0 else f"{doc_id}#epoch={epoch}"


def document_item(
    record: dict[str, Any],
    plan: dict[str, tuple[int, int, int]],
    *,
    partition_field: str | None,
    ordered: bool,
    append_eos: bool,
    dtype: np.dtype,
) -> Iterator[Item]:
    """A kept row as one documents sequence, placed where ``data/`` has it: its data shard is the
    block (the same plan and rule as ``WriteShards``) and the shard's row order is the key."""
    partition = partition_dir(partition_field, record.get(partition_field)) if partition_field else ""
    block = shard_index(record, plan[partition], id_shard_key, "order_rank" if ordered else None)
    tokens = np.frombuffer(record["tokens"], dtype=dtype)
    if not append_eos:
        tokens = tokens[:-1]
    if not tokens.shape[0]:
        return  # an empty text without EOS has no tokens to write (counted in the manifest)
    rank = record.get("order_rank")
    phase = phase_of(partition)
    key = (
        rank if ordered and rank is not None else -1,
        record["id"],
        record["epoch"],
        phase,
        record.get("source") or "",
        record["text_hash"],
        record.get("url") or "",
    )
    span = Span(record["id"], 0, int(tokens.shape[0]), record.get("url"), record.get("source"))
    yield (
        dataset_ref(DOCUMENTS, phase),
        block,
        key,
        sequence_record(
            sequence_id_of(record["id"], record["epoch"]), tokens, (span,), -1 if rank is None else rank, phase
        ),
    )


# --- placing and writing parts -----------------------------------------------------------------


class _SumPairs(beam.CombineFn):
    """(sequences, bytes) of one block."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add_input(self, acc: tuple[int, int], item: tuple[int, int]) -> tuple[int, int]:
        return (acc[0] + item[0], acc[1] + item[1])

    def merge_accumulators(self, accs: Iterable[tuple[int, int]]) -> tuple[int, int]:
        sequences = size = 0
        for a, b in accs:
            sequences += a
            size += b
        return (sequences, size)

    def extract_output(self, acc: tuple[int, int]) -> tuple[int, int]:
        return acc


def block_starts(totals: Sequence[tuple[tuple[DatasetRef, int], tuple[int, int]]]) -> dict:
    """Each block's (first sequence number, first byte) in its dataset: prefix sums over the blocks
    of a dataset in block order (one entry per block, so the side input stays small)."""
    starts: dict[tuple[DatasetRef, int], tuple[int, int]] = {}
    running: dict[DatasetRef, tuple[int, int]] = {}
    for (ref, block), (sequences, size) in sorted(totals):
        first_sequence, first_byte = running.get(ref, (0, 0))
        starts[(ref, block)] = (first_sequence, first_byte)
        running[ref] = (first_sequence + sequences, first_byte + size)
    return starts


class _PlaceBlock(beam.DoFn):
    """Sort one block by its keys and give each sequence its number and part."""

    def __init__(self, itemsize: int, target_bytes: int):
        self.itemsize = itemsize
        self.target_bytes = target_bytes

    def process(self, element: tuple[tuple[DatasetRef, int], Iterable[tuple[Any, SequenceRecord]]], starts: dict):
        (ref, block), members = element
        ordered = sorted(members, key=lambda member: member[0])
        first_sequence, first_byte = starts[(ref, block)]
        lengths = [len(record[1]) // self.itemsize for _, record in ordered]
        parts = assign_parts(lengths, self.itemsize, self.target_bytes, base_bytes=first_byte)
        for number, ((_, record), part) in enumerate(zip(ordered, parts.tolist(), strict=True), start=first_sequence):
            yield ((ref, int(part)), (number, record))


def _is_remote(path: str) -> bool:
    return "://" in path


def publish(local_root: Path, relative: str, target_root: str) -> None:
    """Move ``local_root/relative`` to ``target_root/relative`` under a temporary name, then rename."""
    source = local_root / relative
    target = FileSystems.join(target_root, relative)
    temp = f"{target}.tmp-{uuid.uuid4().hex}"
    if not _is_remote(target_root):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(source, temp)
        os.replace(temp, target)
        return
    with open(source, "rb") as reader, FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        shutil.copyfileobj(reader, out, 1 << 22)
    if FileSystems.exists(target):
        FileSystems.delete([target])
    FileSystems.rename([temp], [target])
    source.unlink()


def work_dir(target_root: str) -> Path:
    """A private folder to write in: beside the target when it is local (the final move is a rename
    on one filesystem), else a local temporary folder."""
    if _is_remote(target_root):
        return Path(tempfile.mkdtemp(prefix="winnow-tokens-"))
    base = Path(target_root) / "_work"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="part-", dir=base))


class _WritePart(beam.DoFn):
    def __init__(self, target_root: str, formats: Sequence[str], dtype: str, target_bytes: int):
        self.target_root = target_root
        self.formats = list(formats)
        self.dtype = np.dtype(dtype)
        self.target_bytes = target_bytes
        self._sequences = counter("tokens:sequences")
        self._tokens = counter("tokens:tokens")

    def process(self, element: tuple[tuple[DatasetRef, int], Iterable[tuple[int, SequenceRecord]]]):
        (ref, part), members = element
        ordered = sorted(members, key=lambda member: member[0])
        local = work_dir(self.target_root)
        try:
            result = write_part(
                local,
                dataset_key(ref),
                part,
                (to_sequence(record, self.dtype) for _, record in ordered),
                formats=self.formats,
                dtype=self.dtype,
                target_bytes=self.target_bytes,
            )
            for info in [*(f for files in result.files.values() for f in files), result.index_file]:
                publish(local, info.path, self.target_root)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        self._sequences.inc(result.sequences)
        self._tokens.inc(result.tokens)
        yield result


class WriteTokenParts(beam.PTransform):
    """Items → one ``PartResult`` per part written (see the module docstring)."""

    def __init__(self, target_root: str, formats: Sequence[str], dtype: np.dtype, target_bytes: int):
        super().__init__()
        self.target_root = target_root
        self.formats = list(formats)
        self.dtype = np.dtype(dtype)
        self.target_bytes = target_bytes

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        itemsize = self.dtype.itemsize
        starts = beam.pvalue.AsSingleton(
            items
            | "BlockSizes" >> beam.Map(lambda item: ((item[0], item[1]), (1, len(item[3][1]))))
            | "SumBlocks" >> beam.CombinePerKey(_SumPairs())
            | "AllBlocks" >> beam.combiners.ToList()
            | "BlockStarts" >> beam.Map(block_starts)
        )
        return (
            items
            | "KeyBlocks" >> beam.Map(lambda item: ((item[0], item[1]), (item[2], item[3])))
            | "GroupBlocks" >> beam.GroupByKey()
            | "Place" >> beam.ParDo(_PlaceBlock(itemsize, self.target_bytes), starts)
            | "GroupParts" >> beam.GroupByKey()
            | "WritePart" >> beam.ParDo(_WritePart(self.target_root, self.formats, self.dtype.name, self.target_bytes))
        )


# --- once per run, after every part ------------------------------------------------------------


def finalize_parts(
    items: list[tuple[str, Any]],
    *,
    target_root: str,
    tokenizer: dict[str, str],
    dtype: str,
    append_eos: bool,
    target_bytes: int,
) -> list[tuple[str, Any]]:
    """Part results → MDS ``index.json`` files, the manifest's ``tokens`` section and one summary
    file entry per token file. ``("note", (name, dataset path, payload))`` items (a dropped tail
    context, say) are listed under ``name`` in every format's entry of that dataset."""
    results: list[PartResult] = [value for kind, value in items if kind == "part"]
    notes: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for kind, value in items:
        if kind == "note":
            name, dataset, payload = value
            notes.setdefault(name, []).append((dataset, payload))
    local = work_dir(target_root)
    try:
        section = finalize_tokens(
            local, results, tokenizer=tokenizer, dtype=np.dtype(dtype), append_eos=append_eos,
            target_bytes=target_bytes,
        )  # fmt: skip
        written = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        for relative in written:
            publish(local, relative, target_root)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    rows: dict[str, int] = {}
    for result in results:
        for files in result.files.values():
            for info in files:
                rows[info.path] = result.sequences
        rows[result.index_file.path] = result.index_rows
    out: list[tuple[str, Any]] = []
    listed = [f for dataset in section["datasets"].values() for f in dataset["files"]]
    for info in [*listed, *section["index"]["files"]]:
        out.append(
            (
                "file",
                {
                    "kind": TOKENS,
                    "file": f"{TOKENS}/{info['path']}",
                    "rows": rows.get(info["path"], 0),
                    "bytes": info["bytes"],
                    "sha256": info["sha256"],
                },
            )
        )
    for (fmt_path, entry), name in itertools.product(section["datasets"].items(), sorted(notes)):
        mine = [payload for dataset, payload in notes[name] if dataset == fmt_path.split("/", 1)[1]]
        if mine:
            entry[name] = sorted(mine, key=lambda payload: sorted(payload.items()))
    written_paths = {path.split("/", 1)[1] for path in section["datasets"]}
    for name, values in sorted(notes.items()):
        # A note of a dataset that has no file at all (a phase whose only context was its tail).
        orphans = [{"dataset": d, **payload} for d, payload in values if d not in written_paths]
        if orphans:
            section[name] = sorted(orphans, key=lambda payload: sorted(payload.items()))
    out.append(("section", {"section": TOKENS, "root": TOKENS, **section}))
    return out


class DocumentItems(beam.DoFn):
    """``document_item`` with the rows that have no token at all (an empty text without EOS) counted.

    Here rather than in ``winnow.run.tokens``: a worker that unpickles it then imports no run config."""

    EMPTY = "empty"

    def __init__(self, **options: Any):
        self.options = options

    def process(self, record: dict[str, Any], plan: dict) -> Any:
        produced = False
        for item in document_item(record, plan, **self.options):
            produced = True
            yield item
        if not produced:
            field = self.options["partition_field"]
            partition = partition_dir(field, record.get(field)) if field else ""
            path = dataset_key(dataset_ref(DOCUMENTS, phase_of(partition))).path
            yield beam.pvalue.TaggedOutput(self.EMPTY, (path, 1))
