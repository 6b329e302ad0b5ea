"""Training-ready token output (``output.tokens``), free of Beam.

Sequences arrive in training order with their provenance (``TokenSequence``); ``write_part``
writes one part of one dataset in every requested format (Megatron ``.bin``/``.idx``, MDS shard,
Parquet) plus the part's provenance index, from a single pass over the sequences. Parts are cut by
token payload bytes (``assign_parts``): a sequence goes to part ``start_byte // target_bytes``, where
``start_byte`` is where it starts in the dataset's concatenated ids. That rule needs only prefix
sums, so a Beam pipeline can place every sequence in parallel, and it gives every format the same
parts, so one index row names a sequence in all of them. ``finalize`` writes what exists once per
dataset (MDS ``index.json``) and returns the manifest's ``tokens`` section.

Layout under the ``tokens/`` root: ``<format>/<kind>[/phase=<name>][/bucket=<i>]/part-NNNNN.<ext>``
and ``index.parquet/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

# The one place this package imports the tokenizer (it is moving to winnow.core.tokenizer).
from winnow.core.tokenizer import BUNDLED_TOKENIZER, Tokenizer, load_tokenizer
from winnow.core.tokens import megatron
from winnow.core.tokens.index import (
    DatasetKey,
    FileInfo,
    IndexWriter,
    PartResult,
    Span,
    TokenSequence,
    part_stem,
    read_index,
    tokens_section,
)
from winnow.core.tokens.mds import MDSPartWriter, write_index_json
from winnow.core.tokens.megatron import MegatronPartWriter
from winnow.core.tokens.parquet import ParquetPartWriter

__all__ = [
    "BUNDLED_TOKENIZER",
    "FORMATS",
    "DatasetKey",
    "FileInfo",
    "PartResult",
    "Span",
    "TokenSequence",
    "Tokenizer",
    "assign_parts",
    "document_sequence",
    "encode_texts",
    "finalize",
    "id_bound",
    "load_tokenizer",
    "megatron_prefixes",
    "read_index",
    "resolve_dtype",
    "write_dataset",
    "write_part",
]

FORMATS = ("megatron", "mds", "parquet")
TokenDType = Literal["auto", "uint16", "uint32"]
UINT16_ID_BOUND = 1 << 16  # ids 0 … 65,535: a vocabulary of exactly 65,536 still fits


def id_bound(tokenizer: Tokenizer) -> int:
    """One past the largest token id the tokenizer can emit (added tokens included).

    Not ``get_vocab_size()``: a tokenizer.json may leave gaps in its ids, and the dtype must hold
    the largest id, not the count."""
    vocab = tokenizer._tokenizer.get_vocab(with_added_tokens=True)
    return max(vocab.values()) + 1


def resolve_dtype(setting: TokenDType | str, bound: int) -> np.dtype:
    """``auto``: uint16 when every id fits (``bound`` ≤ 65,536), else uint32; an explicit uint16
    that cannot hold the ids is an error, never a silent wrap-around."""
    if setting == "auto":
        return np.dtype(np.uint16 if bound <= UINT16_ID_BOUND else np.uint32)
    dtype = np.dtype(setting)
    if dtype not in (np.uint16, np.uint32):
        raise ValueError(f"token dtype must be auto, uint16 or uint32, got {setting!r}")
    if bound - 1 > np.iinfo(dtype).max:
        raise ValueError(f"token ids go up to {bound - 1}, which {dtype} cannot hold; use dtype auto or uint32")
    return dtype


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], *, append_eos: bool, dtype: np.dtype) -> list[np.ndarray]:
    """Token ids of each text (no special tokens), plus the tokenizer's EOS when ``append_eos``."""
    if not texts:
        return []
    encodings = tokenizer._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    dtype = np.dtype(dtype)
    if not append_eos:
        return [np.array(e.ids, dtype=dtype) for e in encodings]
    eos = tokenizer.eos_id
    out = []
    for encoding in encodings:
        ids = encoding.ids
        array = np.empty(len(ids) + 1, dtype=dtype)
        array[:-1] = ids
        array[-1] = eos
        out.append(array)
    return out


def document_sequence(
    doc_id: str,
    tokens: np.ndarray,
    *,
    order_rank: int,
    phase: str = "",
    url: str | None = None,
    source: str | None = None,
    sequence_id: str | None = None,
) -> TokenSequence:
    """A whole document as one sequence. ``sequence_id`` tells repeats of a document apart (the
    provenance keeps the document's own id)."""
    span = Span(doc_id, 0, int(tokens.shape[0]), url, source)
    return TokenSequence(sequence_id or doc_id, tokens, (span,), order_rank, phase)


def _writer(fmt: str, root: Path, stem: str, dtype: np.dtype, target_bytes: int | None) -> Any:
    if fmt == "megatron":
        return MegatronPartWriter(root, f"{fmt}/{stem}", dtype)
    if fmt == "mds":
        return MDSPartWriter(root, f"{fmt}/{stem}", dtype, size_limit=target_bytes)
    if fmt == "parquet":
        return ParquetPartWriter(root, f"{fmt}/{stem}", dtype)
    raise ValueError(f"unknown token format {fmt!r}; expected one of {FORMATS}")


def write_part(
    root: Path,
    dataset: DatasetKey,
    part: int,
    sequences: Iterable[TokenSequence],
    *,
    formats: Sequence[str],
    dtype: np.dtype,
    target_bytes: int | None = None,
) -> PartResult:
    """Write part ``part`` of ``dataset`` in every format from one ordered pass over ``sequences``.

    Checks what a reader relies on: ids fit ``dtype``, spans cover each sequence exactly and every
    sequence belongs to the dataset's phase (phases never share a file).
    """
    root = Path(root)
    dtype = np.dtype(dtype)
    stem = part_stem(dataset, part)
    writers = {fmt: _writer(fmt, root, stem, dtype, target_bytes) for fmt in dict.fromkeys(formats)}
    index = IndexWriter(root, dataset, part)
    n_sequences = n_tokens = 0
    limit = np.iinfo(dtype).max
    for sequence in sequences:
        tokens = sequence.tokens
        if tokens.ndim != 1:
            raise ValueError(f"sequence {sequence.id!r}: tokens must be one-dimensional")
        if tokens.dtype != dtype:
            if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > limit):
                raise ValueError(f"sequence {sequence.id!r}: token ids outside {dtype}")
            tokens = tokens.astype(dtype)
            sequence = TokenSequence(sequence.id, tokens, sequence.spans, sequence.order_rank, sequence.phase)
        covered = sum(span.length for span in sequence.spans)
        if covered != tokens.shape[0]:
            raise ValueError(f"sequence {sequence.id!r}: spans cover {covered} tokens of {tokens.shape[0]}")
        if sequence.phase != dataset.phase:
            raise ValueError(f"sequence {sequence.id!r} of phase {sequence.phase!r} in dataset {dataset.path}")
        for writer in writers.values():
            writer.add(sequence)
        index.add(n_sequences, sequence)
        n_sequences += 1
        n_tokens += tokens.shape[0]
    files = {fmt: writer.close() for fmt, writer in writers.items()}
    extra = {"mds_shard": writers["mds"].shard_entry} if "mds" in writers else {}
    index_file = index.close()
    return PartResult(dataset, part, n_sequences, n_tokens, files, index_file, index.rows, extra)


def assign_parts(
    lengths: Sequence[int] | np.ndarray, itemsize: int, target_bytes: int, base_bytes: int = 0
) -> np.ndarray:
    """Part of each sequence (given in training order): ``start_byte // target_bytes``.

    ``base_bytes`` is where the first given sequence starts in its dataset, so a block of a larger
    dataset is placed on its own once its start offset is known (the pack stage's block prefix
    sums give it). A part holds at most ``target_bytes`` plus one sequence; a single sequence larger
    than ``target_bytes`` leaves the numbers it spans unused.
    """
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    sizes = np.asarray(lengths, dtype=np.int64) * int(itemsize)
    starts = np.empty_like(sizes)
    if sizes.shape[0]:
        starts[0] = 0
        np.cumsum(sizes[:-1], out=starts[1:])
    return (starts + int(base_bytes)) // int(target_bytes)


def write_dataset(
    root: Path,
    dataset: DatasetKey,
    sequences: Iterable[TokenSequence],
    *,
    formats: Sequence[str],
    dtype: np.dtype,
    target_bytes: int,
) -> list[PartResult]:
    """All of one dataset in a single process: rolls over to a new part by ``assign_parts``' rule
    (the same parts a parallel writer makes), streaming ``sequences`` once."""
    itemsize = np.dtype(dtype).itemsize
    results: list[PartResult] = []
    iterator = iter(sequences)
    pending: list[TokenSequence | None] = [next(iterator, None)]
    offset = 0

    def one_part(part: int) -> Iterator[TokenSequence]:
        nonlocal offset
        while (sequence := pending[0]) is not None and offset // target_bytes == part:
            yield sequence
            offset += sequence.tokens.shape[0] * itemsize
            pending[0] = next(iterator, None)

    while pending[0] is not None:
        part = offset // target_bytes
        results.append(
            write_part(root, dataset, part, one_part(part), formats=formats, dtype=dtype, target_bytes=target_bytes)
        )
    return results


def finalize(
    root: Path,
    results: Iterable[PartResult],
    *,
    tokenizer: dict[str, str],
    dtype: np.dtype,
    append_eos: bool,
    target_bytes: int,
) -> dict[str, Any]:
    """After every part is written: each MDS dataset's ``index.json``, then the manifest section."""
    root = Path(root)
    results = list(results)
    dtype = np.dtype(dtype)
    shards: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        if "mds_shard" in result.extra:
            shards.setdefault(result.dataset.path, []).append(result.extra["mds_shard"])
    dataset_files = {("mds", path): [write_index_json(root, f"mds/{path}", shard)] for path, shard in shards.items()}
    storage = {"megatron": megatron.storage_dtype(dtype).name} if megatron.storage_dtype(dtype) != dtype else {}
    return tokens_section(
        results,
        tokenizer=tokenizer,
        dtype=dtype.name,
        append_eos=append_eos,
        target_bytes=target_bytes,
        dataset_files=dataset_files,
        storage_dtypes=storage,
    )


def megatron_prefixes(section: dict[str, Any], dataset: str) -> list[str]:
    """The part prefixes of one Megatron dataset (``contexts/phase=base``, say), in part order, relative
    to the ``tokens/`` root: what ``--data-path`` (or a ``--data-args-path`` file) lists, one per part."""
    entry = section["datasets"].get(f"megatron/{dataset}")
    if entry is None:
        raise KeyError(f"no megatron dataset {dataset!r}; the run wrote {sorted(section['datasets'])}")
    return sorted(f["path"][: -len(".bin")] for f in entry["files"] if f["path"].endswith(".bin"))
