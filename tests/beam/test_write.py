from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import collect, local_pipeline

from winnow.beam.write import WriteShards, document_sort_key, ordered_sort_key, shard_count
from winnow.core.config import ShardingConfig
from winnow.core.schemas import document_schema
from winnow.run.registry import STAGES


def schema_of(stages: Iterable[str]) -> pa.Schema:
    return document_schema([column for name in stages for column in STAGES[name].columns])


def write(
    rows: list[dict],
    directory: Path,
    sharding: ShardingConfig,
    stages: tuple[str, ...] = ("normalize",),
    sort_key=document_sort_key,
    **options,
) -> list[dict]:
    """Write ``rows`` with WriteShards (``options``: ordered_by, partition_field); the file stats, by file."""
    with local_pipeline() as pipeline:
        written = (
            pipeline
            | beam.Create(rows)
            | WriteShards("data", str(directory), schema_of(stages), sharding, sort_key, **options)
        )
        stats = collect(written, "stats")
    return sorted(stats, key=lambda s: s["file"])


def rows(n: int) -> list[dict]:
    return [
        {"id": f"doc-{i:04d}", "text": f"text number {i} " * 20, "source": "t", "metadata": {"i": i}} for i in range(n)
    ]


def test_shard_count_by_rows_and_bytes():
    assert shard_count(0, 0, ShardingConfig()) == 0
    assert shard_count(10, 100, ShardingConfig(target_rows=3)) == 4
    assert shard_count(10, 1000, ShardingConfig(target_bytes=300)) == 4
    assert shard_count(10, 100, ShardingConfig(target_bytes=10**9)) == 1


def test_shards_are_named_sized_sorted_and_complete(tmp_path: Path):
    stats = write(rows(500), tmp_path, ShardingConfig(target_rows=100))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"part-{i:05d}-of-00005.parquet" for i in range(5)]
    total = 0
    seen = set()
    for stat in stats:
        path = tmp_path / stat["file"].split("/", 1)[1]
        table = pq.read_table(path)
        ids = table.column("id").to_pylist()
        assert ids == sorted(ids)
        assert 50 <= len(ids) <= 150  # hash sharding: near the target, not exact
        assert stat["rows"] == len(ids)
        assert stat["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
        seen.update(ids)
        total += len(ids)
    assert total == 500 and len(seen) == 500
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_same_rows_in_any_order_give_identical_bytes(tmp_path: Path):
    data = rows(300)
    write(data, tmp_path / "a", ShardingConfig(target_rows=70))
    write(list(reversed(data)), tmp_path / "b", ShardingConfig(target_rows=70))
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()


def test_metadata_is_stored_as_canonical_json(tmp_path: Path):
    write([{"id": "x", "text": "t", "source": "s", "metadata": {"b": 1, "a": [1, 2]}}], tmp_path, ShardingConfig())
    (path,) = tmp_path.iterdir()
    assert pq.read_table(path).column("metadata").to_pylist() == ['{"a": [1, 2], "b": 1}']


def test_ranked_rows_fill_consecutive_shards_in_rank_order(tmp_path: Path):
    data = rows(400)
    for rank, row in enumerate(sorted(data, key=lambda r: hashlib.md5(r["id"].encode()).hexdigest())):
        row["order_rank"] = rank
    sharding = ShardingConfig(target_rows=100)
    write(data, tmp_path, sharding, ("normalize", "order"), ordered_sort_key, ordered_by="order_rank")
    ranks = []
    for path in sorted(tmp_path.glob("part-*.parquet")):
        shard = pq.read_table(path).column("order_rank").to_pylist()
        assert len(shard) == 100  # dense ranks: exact rank ranges, not hash buckets
        ranks += shard
    assert ranks == list(range(400))


def test_partition_field_writes_one_shard_set_per_value(tmp_path: Path):
    data = rows(90)
    for i, row in enumerate(data):
        row["phase"] = "final" if i % 3 == 0 else "base"
        row["epoch"] = 0
    stats = write(data, tmp_path, ShardingConfig(target_rows=20), ("normalize", "mix"), partition_field="phase")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase=base", "phase=final"]
    assert {s["file"].split("/")[1] for s in stats} == {"phase=base", "phase=final"}
    final = pq.read_table(tmp_path / "phase=final").column("phase").to_pylist()
    base = pq.read_table(tmp_path / "phase=base").column("phase").to_pylist()
    assert len(final) == 30 and set(final) == {"final"}
    assert len(base) == 60 and set(base) == {"base"}
    assert len(list((tmp_path / "phase=base").glob("*.parquet"))) == 3
