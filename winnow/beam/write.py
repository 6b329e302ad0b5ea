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
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import counter
from winnow.core.config import ShardingConfig
from winnow.core.schemas import identity_key, metadata_json

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
    tokens = row.get("tokens")  # Dataset Decomposition pieces carry their token ids
    if isinstance(tokens, list | tuple):
        size += 4 * len(tokens)
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


@dataclass(frozen=True)
class TableSpec:
    """How a stage's extra output table is written: its schema, row order inside a shard, an
    optional column whose values become subdirectories (``<table>/<field>=<value>/``), and a cap on
    rows per Parquet row group for tables of large rows (the run's ``row_group_rows`` otherwise)."""

    schema: pa.Schema
    sort_key: Callable[[dict[str, Any]], Any]
    partition_field: str | None = None
    shard_key: Callable[[dict[str, Any]], bytes] | None = None
    row_group_rows: int | None = None


_SAFE_VALUE = re.compile(r"[^A-Za-z0-9_.\-]+")


def partition_dir(field: str | None, value: Any) -> str:
    """The subdirectory of a partition value (``phase=final``), or '' for no partitioning."""
    if field is None or value is None:
        return ""
    return f"{field}={_SAFE_VALUE.sub('_', str(value))}"


class _PlanFn(beam.CombineFn):
    """(rows, bytes, min rank, max rank) of one partition, in one pass."""

    def __init__(self, ordered_by: str | None):
        self.ordered_by = ordered_by

    def create_accumulator(self) -> tuple[int, int, int | None, int | None]:
        return (0, 0, None, None)

    def add_input(self, acc: tuple, row: dict[str, Any]) -> tuple:
        rank = row.get(self.ordered_by) if self.ordered_by else None
        return _merge_plan(acc, (1, row_bytes(row), rank, rank))

    def merge_accumulators(self, accs: Iterable[tuple]) -> tuple:
        merged = self.create_accumulator()
        for acc in accs:
            merged = _merge_plan(merged, acc)
        return merged

    def extract_output(self, acc: tuple) -> tuple:
        return acc


def _merge_plan(a: tuple, b: tuple) -> tuple:
    low = [x for x in (a[2], b[2]) if x is not None]
    high = [x for x in (a[3], b[3]) if x is not None]
    return (a[0] + b[0], a[1] + b[1], min(low) if low else None, max(high) if high else None)


def _shard_plan(sizes: Iterable[tuple[str, tuple]], sharding: ShardingConfig) -> dict[str, tuple[int, int, int]]:
    """Per partition: (shard count, lowest rank, rank span)."""
    plan = {}
    for part, (rows, size, low, high) in sizes:
        span = (high - low + 1) if low is not None and high is not None else 0
        plan[part] = (shard_count(rows, size, sharding), low or 0, span)
    return plan


def shard_plan(keyed: beam.PCollection, sharding: ShardingConfig, ordered_by: str | None) -> beam.pvalue.AsSingleton:
    """The plan of ``(partition, row)`` pairs as a side input: per partition (shard count, lowest
    rank, rank span). Another writer that must follow a collection's shards (the token writer
    keeps the data shards' order) computes the same plan from the same rows."""
    return beam.pvalue.AsSingleton(
        keyed
        | "Size" >> beam.CombinePerKey(_PlanFn(ordered_by))
        | "AllSizes" >> beam.combiners.ToList()
        | "Plan" >> beam.Map(_shard_plan, sharding)
    )


def shard_index(
    row: dict[str, Any],
    planned: tuple[int, int, int],
    shard_key: Callable[[dict[str, Any]], bytes],
    ordered_by: str | None,
) -> int:
    """The shard of ``row`` in its partition's plan: its rank range when ordered, else its key's hash."""
    count, low, span = planned
    rank = row.get(ordered_by) if ordered_by else None
    if rank is not None and span:
        return min(count - 1, (rank - low) * count // span)
    return xxhash.xxh64_intdigest(shard_key(row)) % count


def id_shard_key(row: dict[str, Any]) -> bytes:
    return str(row.get("id", "")).encode()


class _WriteShard(beam.DoFn):
    def __init__(self, kind: str, directory: str, schema: pa.Schema, sharding: ShardingConfig, sort_key: Callable):
        self.kind = kind
        self.directory = directory
        self.schema = schema
        self.sharding = sharding
        self.sort_key = sort_key
        self._rows = counter(f"write:{kind}_rows")

    def process(
        self, element: tuple[tuple[str, int], Iterable[dict[str, Any]]], plan: dict[str, tuple[int, int, int]]
    ) -> Iterator[dict[str, Any]]:
        (part, index), records = element
        count = plan[part][0]
        rows = sorted((to_row(r, self.schema) for r in records), key=self.sort_key)
        payload = parquet_bytes(rows, self.schema, self.sharding)
        directory = FileSystems.join(self.directory, part) if part else self.directory
        path = shard_name(directory, index, count)
        atomic_write_bytes(path, payload)
        self._rows.inc(len(rows))
        relative = f"{part}/{path.rsplit('/', 1)[-1]}" if part else path.rsplit("/", 1)[-1]
        yield {
            "kind": self.kind,
            "file": f"{self.kind}/{relative}",
            "rows": len(rows),
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }


class WriteShards(beam.PTransform):
    """Write a collection as ``<directory>/[<field>=<value>/]part-NNNNN-of-MMMMM.parquet``; yields one
    stats dict per file.

    Rows go to shard ``xxh64(shard_key) mod N`` (N from the partition's size), or, with
    ``ordered_by`` (a dense integer rank such as ``order_rank``), to consecutive rank ranges, so
    reading the shards in name order and each in row order reproduces the ranking.
    """

    def __init__(
        self,
        kind: str,
        directory: str,
        schema: pa.Schema,
        sharding: ShardingConfig,
        sort_key: Callable[[dict[str, Any]], Any],
        shard_key: Callable[[dict[str, Any]], bytes] | None = None,
        partition_field: str | None = None,
        ordered_by: str | None = None,
    ):
        super().__init__()
        self.kind = kind
        self.directory = directory
        self.schema = schema
        self.sharding = sharding
        self.sort_key = sort_key
        self.shard_key = shard_key or id_shard_key
        self.partition_field = partition_field
        self.ordered_by = ordered_by

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        sharding = self.sharding
        field = self.partition_field
        keyed = records | "Partition" >> beam.Map(lambda r: (partition_dir(field, r.get(field) if field else None), r))
        plan = shard_plan(keyed, sharding, self.ordered_by)
        shard_key, ordered_by = self.shard_key, self.ordered_by

        def assign(item: tuple[str, dict[str, Any]], plan: dict) -> tuple[tuple[str, int], dict[str, Any]]:
            part, row = item
            return ((part, shard_index(row, plan[part], shard_key, ordered_by)), row)

        return (
            keyed
            | "AssignShard" >> beam.Map(assign, plan)
            | "GroupShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(_WriteShard(self.kind, self.directory, self.schema, sharding, self.sort_key), plan)
        )


def document_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    # Ends on the whole identity so rows that share an id still have one order (docs/determinism.md).
    return (row["id"], row.get("epoch") or 0, row.get("phase") or "", *identity_key(row)[1:])


def ordered_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Row order of ordered shards: the stage's rank first, then the unordered key."""
    rank = row.get("order_rank")
    return (rank if rank is not None else -1, *document_sort_key(row))


def removed_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["id"], row["reason"], row.get("duplicate_of") or "", *identity_key(row)[1:])


def rejected_sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    offset = row.get("offset")
    return (row["source"], -1 if offset is None else offset, row["stage"], row["error"], row["raw"])
