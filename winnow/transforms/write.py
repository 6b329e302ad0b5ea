"""Writers: sized, deterministic, atomically written Parquet shards.

The shard count comes from the collection's total size (a combiner, so no worker sees
the whole corpus); each row goes to shard ``xxh64(id) mod N`` and rows are sorted inside
their shard, so the same input gives the same bytes however Beam splits the work. A
shard is written to a temporary name and renamed, so a crash never leaves a half file
under its final name.
"""

from __future__ import annotations

import hashlib
import io
import math
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems

from winnow.schemas.config import ShardingConfig
from winnow.schemas.records import metadata_json
from winnow.transforms.base import counter

SHARD_DIGITS = 5


def shard_name(directory: str, index: int, count: int) -> str:
    return FileSystems.join(directory, f"part-{index:0{SHARD_DIGITS}d}-of-{count:0{SHARD_DIGITS}d}.parquet")


def row_bytes(row: dict[str, Any]) -> int:
    """Uncompressed size estimate of a row: its text plus a small fixed overhead."""
    text = row.get("text")
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else 0
    raw = row.get("raw")
    if isinstance(raw, bytes):
        size += len(raw)
    return size + 64


def to_row(record: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """Project a record onto ``schema``: metadata as JSON, unknown keys dropped, missing as null."""
    row = {}
    for name in schema.names:
        value = record.get(name)
        if name == "metadata":
            value = metadata_json(value)
        row[name] = value
    return row


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see a partial file."""
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temp) as handle:
        handle.write(payload)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temp], [path])


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema, sharding: ShardingConfig) -> bytes:
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="zstd",
        compression_level=sharding.compression_level,
        row_group_size=sharding.row_group_rows,
        write_statistics=True,
    )
    return buffer.getvalue()


def shard_count(total_rows: int, total_bytes: int, sharding: ShardingConfig) -> int:
    if total_rows == 0:
        return 0
    if sharding.target_rows:
        return max(1, math.ceil(total_rows / sharding.target_rows))
    return max(1, math.ceil(total_bytes / (sharding.target_bytes or total_bytes)))


class _SizeFn(beam.CombineFn):
    """(rows, bytes) of a collection, in one pass."""

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add_input(self, acc: tuple[int, int], row: dict[str, Any]) -> tuple[int, int]:
        return (acc[0] + 1, acc[1] + row_bytes(row))

    def merge_accumulators(self, accs: Iterable[tuple[int, int]]) -> tuple[int, int]:
        rows = size = 0
        for r, s in accs:
            rows += r
            size += s
        return (rows, size)

    def extract_output(self, acc: tuple[int, int]) -> tuple[int, int]:
        return acc


class _WriteShard(beam.DoFn):
    def __init__(self, kind: str, directory: str, schema: pa.Schema, sharding: ShardingConfig, sort_key: Callable):
        self.kind = kind
        self.directory = directory
        self.schema = schema
        self.sharding = sharding
        self.sort_key = sort_key
        self._rows = counter(f"write:{kind}_rows")

    def process(self, element: tuple[int, Iterable[dict[str, Any]]], count: int) -> Iterator[dict[str, Any]]:
        index, records = element
        rows = sorted((to_row(r, self.schema) for r in records), key=self.sort_key)
        payload = parquet_bytes(rows, self.schema, self.sharding)
        path = shard_name(self.directory, index, count)
        atomic_write_bytes(path, payload)
        self._rows.inc(len(rows))
        yield {
            "kind": self.kind,
            "file": f"{self.kind}/{path.rsplit('/', 1)[-1]}",
            "rows": len(rows),
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }


class WriteShards(beam.PTransform):
    """Write a collection as ``<directory>/part-NNNNN-of-MMMMM.parquet``; yields one stats dict per file."""

    def __init__(
        self,
        kind: str,
        directory: str,
        schema: pa.Schema,
        sharding: ShardingConfig,
        sort_key: Callable[[dict[str, Any]], Any],
        shard_key: Callable[[dict[str, Any]], bytes] | None = None,
    ):
        super().__init__()
        self.kind = kind
        self.directory = directory
        self.schema = schema
        self.sharding = sharding
        self.sort_key = sort_key
        self.shard_key = shard_key or (lambda row: str(row.get("id", "")).encode())

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        sharding = self.sharding
        counts = (
            records
            | "Size" >> beam.CombineGlobally(_SizeFn())
            | "ShardCount" >> beam.Map(lambda size: shard_count(size[0], size[1], sharding))
        )
        count_side = beam.pvalue.AsSingleton(counts)
        shard_key = self.shard_key
        return (
            records
            | "AssignShard" >> beam.Map(lambda r, n: (xxhash.xxh64_intdigest(shard_key(r)) % n, r), count_side)
            | "GroupShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(_WriteShard(self.kind, self.directory, self.schema, sharding, self.sort_key), count_side)
        )


def document_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["id"], row.get("source") or "", row.get("text") or "")


def removed_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["id"], row["reason"], row.get("source") or "", row.get("text") or "")


def rejected_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    offset = row.get("offset")
    return (row["source"], -1 if offset is None else offset, row["stage"], row["error"], row["raw"])
