"""Provenance of token sequences and the manifest's ``tokens`` section.

Every sequence a format writer writes is described by spans: which tokens of the sequence came
from which tokens of which document. One index row per span (``tokens/index.parquet``) lets any
token of any file be traced back to its document, URL and source. The index is written per part
(``index.parquet/<dataset>.part-NNNNN.parquet``, a Parquet dataset directory) so no process ever
holds the whole corpus; ``pyarrow.parquet.read_table("tokens/index.parquet")`` reads it whole.

The same part numbering is used by every format, so one index row names the sequence in all of
them: ``<format>/<file>.<ext>`` at ``position``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

INDEX_DIR = "index.parquet"

INDEX_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),  # "<dataset>/part-NNNNN", no format, no extension
        pa.field("position", pa.int64(), nullable=False),  # sequence number inside that file
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("seq_token_start", pa.int64(), nullable=False),
        pa.field("seq_token_end", pa.int64(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_token_start", pa.int64(), nullable=False),  # within the document's ids (+ EOS)
        pa.field("doc_token_end", pa.int64(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("source", pa.string()),
        pa.field("order_rank", pa.int64(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class Span:
    """Tokens ``[doc_start, doc_end)`` of one document's token stream (its ids, then EOS when
    appended) that sit next to each other in a sequence."""

    doc_id: str
    doc_start: int
    doc_end: int
    url: str | None = None
    source: str | None = None

    @property
    def length(self) -> int:
        return self.doc_end - self.doc_start


@dataclass(frozen=True, slots=True)
class TokenSequence:
    """One training sequence in training order: a document (with its EOS), a packed context or a
    Dataset Decomposition piece. ``spans`` cover ``tokens`` exactly, in order."""

    id: str
    tokens: np.ndarray
    spans: tuple[Span, ...]
    order_rank: int
    phase: str = ""


@dataclass(frozen=True, slots=True)
class DatasetKey:
    """One output dataset: a kind (documents, contexts, dd), optionally a mix-schedule phase and a
    DD bucket. Phases and buckets never share a file, so each is its own dataset."""

    kind: str
    phase: str = ""
    bucket: int | None = None

    @property
    def path(self) -> str:
        parts = [self.kind]
        if self.phase:
            parts.append(f"phase={self.phase}")
        if self.bucket is not None:
            parts.append(f"bucket={self.bucket}")
        return "/".join(parts)


def part_stem(dataset: DatasetKey, part: int) -> str:
    """``<dataset>/part-NNNNN``: the file of a part in every format, without the extension."""
    return f"{dataset.path}/part-{part:05d}"


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A written file, its path relative to the ``tokens/`` root, size and SHA-256."""

    path: str
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class PartResult:
    """What one ``write_part`` call wrote: per format its files, plus the part's counts and its
    index file. ``extra`` carries format metadata the dataset-level finaliser needs (MDS shard
    entries for ``index.json``)."""

    dataset: DatasetKey
    part: int
    sequences: int
    tokens: int
    files: dict[str, list[FileInfo]]
    index_file: FileInfo
    index_rows: int
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_info(root: Path, path: Path) -> FileInfo:
    return FileInfo(path.relative_to(root).as_posix(), path.stat().st_size, sha256_file(path))


class IndexWriter:
    """Writes one part's index rows, flushed every ``batch_rows`` rows, so a part of millions of
    documents never holds its whole index in Python lists."""

    def __init__(self, root: Path, dataset: DatasetKey, part: int, batch_rows: int = 1 << 16):
        self.root = root
        self.file = part_stem(dataset, part)
        self.path = index_part_path(root, dataset, part)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_rows = batch_rows
        self.rows = 0
        self._writer = pq.ParquetWriter(self.path, INDEX_SCHEMA, compression="zstd")
        self._reset()

    def _reset(self) -> None:
        self._columns: dict[str, list[Any]] = {name: [] for name in INDEX_SCHEMA.names if name != "file"}

    def add(self, position: int, sequence: TokenSequence) -> None:
        columns = self._columns
        offset = 0
        for span in sequence.spans:
            columns["position"].append(position)
            columns["sequence_id"].append(sequence.id)
            columns["seq_token_start"].append(offset)
            offset += span.length
            columns["seq_token_end"].append(offset)
            columns["doc_id"].append(span.doc_id)
            columns["doc_token_start"].append(span.doc_start)
            columns["doc_token_end"].append(span.doc_end)
            columns["url"].append(span.url)
            columns["source"].append(span.source)
            columns["order_rank"].append(sequence.order_rank)
            columns["phase"].append(sequence.phase)
        if len(columns["position"]) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        n = len(self._columns["position"])
        if not n:
            return
        arrays = [pa.array([self.file] * n, pa.string())]
        arrays += [pa.array(self._columns[f.name], f.type) for f in INDEX_SCHEMA if f.name != "file"]
        self._writer.write_batch(pa.record_batch(arrays, schema=INDEX_SCHEMA))
        self.rows += n
        self._reset()

    def close(self) -> FileInfo:
        self._flush()
        self._writer.close()
        return file_info(self.root, self.path)


def index_part_path(root: Path, dataset: DatasetKey, part: int) -> Path:
    """One flat file per part: ``/`` becomes ``.`` so readers do not take ``phase=``/``bucket=``
    folders for Hive partitions (the rows already carry ``file`` and ``phase``)."""
    name = f"{dataset.path.replace('/', '.')}.part-{part:05d}.parquet"
    return root / INDEX_DIR / name


def read_index(root: Path) -> pa.Table:
    """The whole provenance index, rows in (file, position, seq_token_start) order."""
    files = sorted((Path(root) / INDEX_DIR).glob("*.parquet"))
    if not files:
        return INDEX_SCHEMA.empty_table()
    table = pa.concat_tables([pq.read_table(path, schema=INDEX_SCHEMA) for path in files])
    return table.sort_by([("file", "ascending"), ("position", "ascending"), ("seq_token_start", "ascending")])


def dataset_sha256(files: Sequence[FileInfo]) -> str:
    """One digest per dataset: SHA-256 over ``path<TAB>sha256<LF>`` of its files in path order, so
    a consumer can check a whole dataset from the per-file hashes without rereading the files."""
    digest = hashlib.sha256()
    for info in sorted(files, key=lambda f: f.path):
        digest.update(f"{info.path}\t{info.sha256}\n".encode())
    return digest.hexdigest()


def tokens_section(
    results: Iterable[PartResult],
    *,
    tokenizer: dict[str, str],
    dtype: str,
    append_eos: bool,
    target_bytes: int,
    dataset_files: dict[tuple[str, str], list[FileInfo]] | None = None,
    storage_dtypes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest's ``tokens`` section from every part's result, in any order.

    ``dataset_files`` adds files written once per dataset (MDS ``index.json``), keyed by
    (format, dataset path). ``storage_dtypes`` names a format whose files hold another integer
    type than ``dtype`` (Megatron-Core has no uint32 code, so 32-bit ids are stored as int32).
    """
    ordered = sorted(results, key=lambda r: (r.dataset.path, r.part))
    datasets: dict[str, dict[str, Any]] = {}
    index_files: list[FileInfo] = []
    index_rows = 0
    for result in ordered:
        index_files.append(result.index_file)
        index_rows += result.index_rows
        for fmt, files in result.files.items():
            entry = datasets.setdefault(
                f"{fmt}/{result.dataset.path}",
                {
                    "format": fmt,
                    "kind": result.dataset.kind,
                    "phase": result.dataset.phase or None,
                    "bucket": result.dataset.bucket,
                    "dtype": (storage_dtypes or {}).get(fmt, dtype),
                    "files": [],
                    "sequences": 0,
                    "tokens": 0,
                },
            )
            entry["files"].extend(files)
            entry["sequences"] += result.sequences
            entry["tokens"] += result.tokens
    for (fmt, path), files in (dataset_files or {}).items():
        datasets[f"{fmt}/{path}"]["files"].extend(files)
    for entry in datasets.values():
        files = sorted(entry["files"], key=lambda f: f.path)
        entry["sha256"] = dataset_sha256(files)
        entry["files"] = [f.as_dict() for f in files]
    return {
        "tokenizer": dict(tokenizer),
        "dtype": dtype,
        "append_eos": append_eos,
        "target_bytes": target_bytes,
        "datasets": dict(sorted(datasets.items())),
        "index": {
            "path": INDEX_DIR,
            "rows": index_rows,
            "files": [f.as_dict() for f in index_files],
            "sha256": dataset_sha256(index_files),
        },
    }
