"""Parquet token parts read back with pyarrow, and the provenance index that serves every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import FORMATS, document_sequence, encode_texts, finalize, write_dataset
from winnow.core.tokens.index import INDEX_SCHEMA, DatasetKey, IndexWriter, TokenSequence, read_index
from winnow.core.tokens.mds import read_mds_dataset
from winnow.core.tokens.megatron import read_megatron_part
from winnow.core.tokens.parquet import ParquetPartWriter

DATA = Path(__file__).resolve().parents[1] / "data"


def sample_docs() -> list[dict]:
    docs = [json.loads(line) for line in (DATA / "readers" / "sample.jsonl").open()]
    sentences = [json.loads(line) for line in (DATA / "langid" / "sentences.jsonl").open()]
    docs += [{"id": s["id"], "text": s["text"], "url": None} for s in sentences if s["lang"] in ("ja", "ar")][:6]
    return docs


def documents(docs: list[dict], phase: str = "", ranks: list[int] | None = None) -> list[TokenSequence]:
    tokenizer = load_tokenizer()
    streams = encode_texts(tokenizer, [d["text"] for d in docs], append_eos=True, dtype=np.uint16)
    ranks = ranks or list(range(len(docs)))
    return [
        document_sequence(d["id"], s, order_rank=r, phase=phase, url=d.get("url"), source="test")
        for d, s, r in zip(docs, streams, ranks, strict=True)
    ]


def test_rows_decode_to_their_documents(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()
    ranks = [10 * i + 3 for i in range(len(docs))]
    results = write_dataset(
        tmp_path, DatasetKey("documents", phase="p1"), documents(docs, "p1", ranks), formats=["parquet"],
        dtype=np.uint16, target_bytes=5000,
    )  # fmt: skip
    folder = tmp_path / "parquet" / "documents" / "phase=p1"
    files = sorted(folder.glob("part-*.parquet"))
    assert len(files) == len(results) > 2
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.schema.field("tokens").type == pa.list_(pa.uint16())
    assert table.schema.names == ["id", "tokens", "order_rank", "phase"]
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [d["id"] for d in docs]
    assert [r["order_rank"] for r in rows] == ranks
    assert {r["phase"] for r in rows} == {"p1"}
    for doc, row in zip(docs, rows, strict=True):
        assert row["tokens"][-1] == tokenizer.eos_id
        assert tokenizer.decode(row["tokens"][:-1]) == doc["text"]
    assert sum(len(r["tokens"]) for r in rows) == int(tokenizer.count([d["text"] for d in docs]).sum()) + len(docs)


def test_row_groups_stay_bounded(tmp_path):
    sequences = documents(sample_docs())
    writer = ParquetPartWriter(tmp_path, "parquet/x/part-00000", np.dtype(np.uint16), row_group_tokens=1000)
    for sequence in sequences:
        writer.add(sequence)
    writer.close()
    meta = pq.ParquetFile(tmp_path / "parquet" / "x" / "part-00000.parquet").metadata
    assert meta.num_row_groups > 3
    assert meta.num_rows == len(sequences)
    table = pq.read_table(tmp_path / "parquet" / "x" / "part-00000.parquet")
    assert all(
        np.array_equal(np.array(r), s.tokens) for r, s in zip(table["tokens"].to_pylist(), sequences, strict=True)
    )


def test_one_index_names_the_sequence_in_every_format(tmp_path):
    docs = sample_docs()
    sequences = documents(docs)
    results = write_dataset(
        tmp_path, DatasetKey("documents"), sequences, formats=FORMATS, dtype=np.uint16, target_bytes=4000
    )
    section = finalize(
        tmp_path, results, tokenizer=load_tokenizer().describe(), dtype=np.uint16, append_eos=True, target_bytes=4000
    )
    index = read_index(tmp_path)
    assert index.schema == INDEX_SCHEMA
    assert index.num_rows == len(docs) == section["index"]["rows"]
    mds = read_mds_dataset(tmp_path / "mds" / "documents")
    by_id = {d["id"]: d for d in docs}
    for n, row in enumerate(index.to_pylist()):
        megatron = read_megatron_part(tmp_path / "megatron" / row["file"])[row["position"]]
        parquet = pq.read_table(tmp_path / "parquet" / f"{row['file']}.parquet").to_pylist()[row["position"]]
        assert parquet["id"] == row["sequence_id"] == mds[n][0]
        assert np.array_equal(megatron, parquet["tokens"]) and np.array_equal(megatron, mds[n][1])
        assert row["doc_id"] == row["sequence_id"] and row["url"] == by_id[row["doc_id"]].get("url")
        assert (row["doc_token_start"], row["doc_token_end"]) == (0, len(megatron))
        assert row["source"] == "test"
    # Same sequences and tokens per dataset in every format.
    counts = {(d["sequences"], d["tokens"]) for d in section["datasets"].values()}
    assert counts == {(len(docs), sum(s.tokens.shape[0] for s in sequences))}
    # The index directory reads as one table with the plain reader too (no partition columns sneak in).
    assert pq.read_table(tmp_path / "index.parquet").schema.names == INDEX_SCHEMA.names


def test_byte_deterministic(tmp_path):
    sequences = documents(sample_docs(), phase="a")
    trees = []
    for run in ("one", "two"):
        write_dataset(
            tmp_path / run, DatasetKey("documents", phase="a"), sequences, formats=["parquet"], dtype=np.uint16,
            target_bytes=3000,
        )  # fmt: skip
        root = tmp_path / run
        trees.append({p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1]
    assert any(str(p).startswith("parquet/documents/phase=a/") for p in trees[0])


def test_index_is_written_in_batches(tmp_path):
    sequences = documents(sample_docs())
    writer = IndexWriter(tmp_path, DatasetKey("documents"), 7, batch_rows=4)
    for position, sequence in enumerate(sequences):
        writer.add(position, sequence)
    info = writer.close()
    assert info.path == "index.parquet/documents.part-00007.parquet"
    assert pq.ParquetFile(tmp_path / info.path).metadata.num_row_groups == -(-len(sequences) // 4)
    rows = read_index(tmp_path).to_pylist()
    assert writer.rows == len(rows) == len(sequences)
    assert [r["sequence_id"] for r in rows] == [s.id for s in sequences]
    assert {r["file"] for r in rows} == {"documents/part-00007"}
