"""Writers: sized, deterministic, atomically written Parquet shards.

The shard count comes from the collection's total size (a combiner, so no worker sees
the whole corpus); each row goes to shard ``xxh64(id) mod N`` and rows are sorted inside
their shard, so the same input gives the same bytes however Beam splits the work. A
shard is written to a temporary name and renamed, so a crash never leaves a half file
under its final name.

Records come as dicts or as Arrow batches of documents (``winnow.core.batches``); a batch is
split by shard as a batch and never becomes dicts. Inside a shard every part becomes one Arrow
table of the output schema, which is sorted (in Arrow for the document orders, by the Python
key otherwise) and written, so the bytes do not depend on which records came batched.
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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import counter
from winnow.core.batches import documents, is_batch, take, text_bytes
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


def element_bytes(element: Any) -> int:
    """``row_bytes`` summed over a batch's rows (text, raw bytes, token ids, fixed overhead), or of one row."""
    if not is_batch(element):
        return row_bytes(element)
    size = text_bytes(element) + 64 * element.num_rows
    names = element.schema.names
    if "raw" in names:
        size += int(pc.sum(pc.binary_length(element.column("raw"))).as_py() or 0)
    if "tokens" in names:
        size += 4 * int(pc.sum(pc.list_value_length(element.column("tokens"))).as_py() or 0)
    return size


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
    return table_bytes(pa.Table.from_pylist(rows, schema=schema), sharding)


def project(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """A batch of documents as a table of ``schema``: its columns cast, missing ones null, others dropped."""
    arrays = []
    names = batch.schema.names
    for field in schema:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        arrays.append(column if column.type == field.type else column.cast(field.type, safe=False))
    return pa.Table.from_arrays(arrays, schema=schema)


def table_bytes(table: pa.Table, sharding: ShardingConfig) -> bytes:
    """The Parquet file of ``table`` (zstd, fixed row groups); its chunking never shows in the bytes."""
    table = table.combine_chunks()
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

    def add_input(self, acc: tuple, row: dict[str, Any] | pa.RecordBatch) -> tuple:
        if is_batch(row):
            low = high = None
            if self.ordered_by and self.ordered_by in row.schema.names:
                low, high = (v.as_py() for v in pc.min_max(row.column(self.ordered_by)).values())
            return _merge_plan(acc, (row.num_rows, element_bytes(row), low, high))
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


def shard_indices(
    batch: pa.RecordBatch,
    planned: tuple[int, int, int],
    shard_key: Callable[[dict[str, Any]], bytes],
    ordered_by: str | None,
) -> np.ndarray:
    """``shard_index`` of every row of a batch, from its columns when the key is the id or the rank."""
    count, low, span = planned
    if ordered_by and span and ordered_by in batch.schema.names:
        ranks = batch.column(ordered_by).to_pylist()
        if all(rank is not None for rank in ranks):
            return np.minimum(count - 1, (np.asarray(ranks, dtype=np.int64) - low) * count // span)
    if shard_key is id_shard_key and (not ordered_by or ordered_by not in batch.schema.names):
        ids = batch.column("id").to_pylist()
        return np.fromiter(
            (xxhash.xxh64_intdigest(str(i).encode()) % count for i in ids), dtype=np.int64, count=len(ids)
        )
    return np.fromiter(
        (shard_index(row, planned, shard_key, ordered_by) for row in documents(batch)),
        dtype=np.int64,
        count=batch.num_rows,
    )


def split_by(batch: pa.RecordBatch, keys: np.ndarray) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(key, the rows with that key, copied) for each distinct key, in key order."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    cuts = np.flatnonzero(np.diff(ordered)) + 1
    for part in np.split(order, cuts):
        yield int(keys[part[0]]), take(batch, part)


def partitioned(element: Any, field: str | None) -> Iterator[tuple[str, Any]]:
    """(partition directory, record or batch of that partition)."""
    if not is_batch(element):
        yield partition_dir(field, element.get(field) if field else None), element
        return
    if not field or field not in element.schema.names:
        yield "", element
        return
    parts = [partition_dir(field, value) for value in element.column(field).to_pylist()]
    names = sorted(set(parts))
    index = {name: i for i, name in enumerate(names)}
    for i, batch in split_by(element, np.asarray([index[p] for p in parts], dtype=np.int64)):
        yield names[i], batch


def _fill(column: pa.ChunkedArray, value: Any) -> pa.ChunkedArray:
    return column.fill_null(value) if column.null_count else column


def _document_keys(table: pa.Table) -> list[tuple[str, pa.ChunkedArray]]:
    """The columns of ``document_sort_key``, nulls as the key's defaults."""
    n = table.num_rows

    def column(name: str, default: Any, kind: pa.DataType) -> pa.ChunkedArray:
        if name not in table.schema.names:
            return pa.chunked_array([pa.array([default] * n, type=kind)])
        return _fill(table.column(name), default)

    return [
        ("id", column("id", "", pa.string())),
        ("epoch", column("epoch", 0, pa.int64())),
        ("phase", column("phase", "", pa.string())),
        ("source", column("source", "", pa.string())),
        ("url", column("url", "", pa.string())),
        ("metadata", column("metadata", "", pa.string())),
        ("text", column("text", "", pa.string())),
    ]


def _arrow_order(table: pa.Table, sort_key: Callable[[dict[str, Any]], Any]) -> pa.Array | None:
    """Row order of ``table`` by ``document_sort_key`` or ``ordered_sort_key``, computed in Arrow
    (stable; UTF-8 bytes order as Python orders strings); None for any other key."""
    if sort_key is document_sort_key:
        keys = _document_keys(table)
    elif sort_key is ordered_sort_key:
        rank = table.column("order_rank") if "order_rank" in table.schema.names else None
        ranks = _fill(rank, -1) if rank is not None else pa.chunked_array([pa.array([-1] * table.num_rows)])
        keys = [("order_rank", ranks), *_document_keys(table)]
    else:
        return None
    names = [f"k{i}" for i in range(len(keys))]
    frame = pa.Table.from_arrays([column for _, column in keys], names=names)
    return pc.sort_indices(frame, sort_keys=[(name, "ascending") for name in names])


def sorted_table(table: pa.Table, sort_key: Callable[[dict[str, Any]], Any]) -> pa.Table:
    """``table`` in ``sort_key`` order (stable)."""
    order = _arrow_order(table, sort_key)
    if order is None:
        rows = table.to_pylist()
        order = pa.array(sorted(range(len(rows)), key=lambda i: sort_key(rows[i])), type=pa.int64())
    return table.take(order)


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
        rows: list[dict[str, Any]] = []
        tables: list[pa.Table] = []
        for record in records:
            if is_batch(record):
                tables.append(project(record, self.schema))
            else:
                rows.append(to_row(record, self.schema))
        if rows:
            tables.append(pa.Table.from_pylist(rows, schema=self.schema))
        table = sorted_table(pa.concat_tables(tables), self.sort_key)
        payload = table_bytes(table, self.sharding)
        directory = FileSystems.join(self.directory, part) if part else self.directory
        path = shard_name(directory, index, count)
        atomic_write_bytes(path, payload)
        self._rows.inc(table.num_rows)
        relative = f"{part}/{path.rsplit('/', 1)[-1]}" if part else path.rsplit("/", 1)[-1]
        yield {
            "kind": self.kind,
            "file": f"{self.kind}/{relative}",
            "rows": table.num_rows,
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
        keyed = records | "Partition" >> beam.FlatMap(partitioned, field)
        plan = shard_plan(keyed, sharding, self.ordered_by)
        shard_key, ordered_by = self.shard_key, self.ordered_by

        def assign(item: tuple[str, Any], plan: dict) -> Iterator[tuple[tuple[str, int], Any]]:
            part, row = item
            if not is_batch(row):
                yield ((part, shard_index(row, plan[part], shard_key, ordered_by)), row)
                return
            for index, batch in split_by(row, shard_indices(row, plan[part], shard_key, ordered_by)):
                yield ((part, index), batch)

        return (
            keyed
            | "AssignShard" >> beam.FlatMap(assign, plan)
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
