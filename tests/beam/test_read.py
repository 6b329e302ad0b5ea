"""Readers on real files copied into tests/data/readers, run through a real Beam pipeline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import collect, local_pipeline

from winnow.beam.contract import KEPT, REJECTED
from winnow.beam.read import InputError, ReadInputs, detect_format, expand_inputs
from winnow.core.batches import as_documents, document_count
from winnow.core.config import InputSpec

READERS = Path(__file__).resolve().parents[1] / "data" / "readers"


def read_all(specs: list[InputSpec]) -> tuple[list[dict], list[dict]]:
    """Run ReadInputs and collect documents (batches as dicts, metadata decoded) and dead letters."""
    with local_pipeline() as pipeline:
        out = pipeline | ReadInputs(specs)
        elements = collect(out[KEPT], "docs")
        bad = collect(out[REJECTED], "bad")
    docs = [doc for element in elements for doc in as_documents(element)]
    for doc in docs:
        if isinstance(doc["metadata"], str):
            doc["metadata"] = json.loads(doc["metadata"])
    return sorted(docs, key=lambda d: d["id"]), list(bad)


def expected_jsonl() -> list[dict]:
    return [json.loads(line) for line in (READERS / "sample.jsonl").read_text(encoding="utf-8").splitlines() if line]


def test_formats_are_detected_by_extension():
    assert detect_format("a/b.jsonl.gz", "auto") == "jsonl"
    assert detect_format("a/b.JSONL.ZST", "auto") == "jsonl"
    assert detect_format("x.parquet", "auto") == "parquet"
    assert detect_format("crawl.warc.gz", "auto") == "warc"
    assert detect_format("crawl.warc.wet.gz", "auto") == "wet"
    assert detect_format("crawl.warc.gz", "jsonl") == "jsonl"


@pytest.mark.parametrize("name", ["sample.jsonl", "sample.jsonl.gz", "sample.jsonl.zst"])
def test_jsonl_plain_gzip_and_zstd_read_the_same_documents(name: str):
    docs, bad = read_all([InputSpec(paths=[str(READERS / name)])])
    expected = expected_jsonl()
    assert bad == []
    assert len(docs) == len(expected)
    by_id = {d["id"]: d for d in docs}
    for record in expected:
        doc = by_id[str(record["id"])]
        assert doc["text"] == record["text"]
        assert doc["source"] == name


def test_byte_range_splits_read_every_line_exactly_once(tmp_path: Path):
    lines = (READERS / "sample.jsonl").read_bytes()
    big = tmp_path / "big.jsonl"
    big.write_bytes(lines * 3)  # same ids three times: ids derive from content here, so drop them
    records = [json.loads(x) for x in big.read_text().splitlines() if x]
    big.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in records))
    whole, _ = read_all([InputSpec(paths=[str(big)], fields={"id": None})])
    split, _ = read_all([InputSpec(paths=[str(big)], fields={"id": None}, split_bytes=997)])
    assert len(expand_inputs([InputSpec(paths=[str(big)], split_bytes=997)])) > 5
    assert len(whole) == len(records)
    assert [(d["id"], d["text"]) for d in split] == [(d["id"], d["text"]) for d in whole]


def test_derived_ids_are_stable_and_independent_of_mount_point(tmp_path: Path):
    for mount in ("a", "b"):
        (tmp_path / mount).mkdir()
        (tmp_path / mount / "x.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    docs_a, _ = read_all([InputSpec(paths=[str(tmp_path / "a" / "*.jsonl")], fields={"id": None})])
    docs_b, _ = read_all([InputSpec(paths=[str(tmp_path / "b" / "*.jsonl")], fields={"id": None})])
    assert [d["id"] for d in docs_a] == [d["id"] for d in docs_b]
    assert len({d["id"] for d in docs_a}) == 2


def test_parquet_with_column_mapping():
    spec = InputSpec(paths=[str(READERS / "sample.parquet")], fields={"id": "doc_id", "text": "content", "url": "link"})
    docs, bad = read_all([spec])
    expected = {str(r["id"]): r for r in expected_jsonl()}
    assert bad == []
    assert len(docs) == len(expected)
    for doc in docs:
        assert doc["text"] == expected[doc["id"]]["text"]
        assert "content" not in doc["metadata"] and "doc_id" not in doc["metadata"]


def test_warc_response_records_become_html_documents():
    docs, bad = read_all([InputSpec(paths=[str(READERS / "sample.warc.gz")])])
    assert bad == []
    assert docs, "the WARC holds response records"
    for doc in docs:
        assert doc["url"].startswith("http")
        assert isinstance(doc["html"], bytes) and doc["html"]
        assert doc["metadata"]["warc_date"]
        assert doc["id"].startswith("urn:uuid:")


def test_truncated_gzip_keeps_complete_lines_and_rejects_the_rest(tmp_path: Path):
    payload = gzip.compress(
        "".join(json.dumps({"id": i, "text": f"line {i} " * 50}) + "\n" for i in range(200)).encode()
    )
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(payload[: len(payload) // 2])
    docs, bad = read_all([InputSpec(paths=[str(path)])])
    assert 0 < len(docs) < 200
    assert len(bad) == 1 and "truncated or corrupt" in bad[0]["error"]
    assert [int(d["id"]) for d in sorted(docs, key=lambda d: int(d["id"]))] == list(range(len(docs)))


def test_missing_path_and_empty_glob_fail_before_the_pipeline(tmp_path: Path):
    with pytest.raises(InputError, match="path does not exist"):
        expand_inputs([InputSpec(paths=[str(tmp_path / "nope.jsonl")])])
    with pytest.raises(InputError, match="glob matched no files"):
        expand_inputs([InputSpec(paths=[str(tmp_path / "*.jsonl")])])
    with pytest.raises(InputError, match="no inputs"):
        expand_inputs([])


def test_wet_conversion_records_become_text_documents():
    docs, bad = read_all([InputSpec(paths=[str(READERS / "sample.warc.wet.gz")])])
    assert bad == []
    assert len(docs) == 8
    for doc in docs:
        assert doc["text"].strip() and "html" not in doc
        assert doc["url"].startswith("http")


def test_wrong_id_types_are_rejected_and_integer_ids_kept_as_strings(tmp_path: Path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 7, "text": "seven"}\n{"id": {"a": 1}, "text": "object id"}\n{"id": true, "text": "bool"}\n')
    docs, bad = read_all([InputSpec(paths=[str(path)])])
    assert [d["id"] for d in docs] == ["7"]
    assert sorted(b["error"] for b in bad) == [
        "field 'id' must be a string or integer, got boolean",
        "field 'id' must be a string or integer, got object",
    ]


def _elements(specs: list[InputSpec]) -> list:
    with local_pipeline() as pipeline:
        out = pipeline | ReadInputs(specs)
        elements = collect(out[KEPT], "elements")
    return list(elements)


def test_batch_size_never_changes_a_document(tmp_path: Path, monkeypatch):
    """Batches of 1, 3 or 1024 documents (and a block size that cuts lines) hold the same documents."""
    import winnow.beam.read as read

    source = READERS / "sample.jsonl"
    reference = None
    for rows, block in ((1024, 8 << 20), (3, 97), (1, 1 << 10)):
        monkeypatch.setattr(read, "_BLOCK_BYTES", block)
        elements = _elements([InputSpec(paths=[str(source)], batch_rows=rows)])
        assert all(document_count(e) <= rows for e in elements)
        assert sum(document_count(e) for e in elements) == 20
        docs = sorted((d for e in elements for d in as_documents(e)), key=lambda d: d["id"])
        reference = reference or docs
        assert docs == reference
    assert all(isinstance(d["metadata"], str) and d["metadata"].startswith("{") for d in reference)


def test_fast_parser_agrees_with_json_where_orjson_differs(tmp_path: Path):
    """Huge integers stay exact, NaN/Infinity are accepted as json accepts them, bad UTF-8 gets json's
    verdict and a lone surrogate escape is rejected (no UTF-8 coder, Beam's included, can carry it)."""
    path = tmp_path / "edge.jsonl"
    lines = [
        '{"id": 123456789012345678901234567890, "text": "big id"}',
        '{"id": "m", "text": "big metadata", "n": [1, 98765432109876543210]}',
        '{"id": "nan", "text": "not a number", "score": NaN, "inf": -Infinity}',
        '{"id": "sur", "text": "lone \\ud800 surrogate"}',
        '{"id": "pair", "text": "pair \\ud83d\\ude00 joined"}',
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "bad", "text": "\xff"}\n')
    docs, bad = read_all([InputSpec(paths=[str(path)])])
    by_id = {d["id"]: d for d in docs}
    assert sorted(by_id) == ["123456789012345678901234567890", "m", "nan", "pair"]
    assert by_id["m"]["metadata"] == {"n": [1, 98765432109876543210]}
    assert str(by_id["nan"]["metadata"]["score"]) == "nan" and by_id["nan"]["metadata"]["inf"] == float("-inf")
    assert by_id["pair"]["text"] == "pair 😀 joined"
    assert sorted(b["error"] for b in bad) == [
        "invalid UTF-8 at byte 23 of the line",
        "record holds a lone surrogate (\\udXXX escape): not valid Unicode",
    ]


def test_a_line_longer_than_a_block_is_read_whole(tmp_path: Path, monkeypatch):
    import winnow.beam.read as read

    monkeypatch.setattr(read, "_BLOCK_BYTES", 64)
    path = tmp_path / "long.jsonl.gz"
    records = [{"id": str(i), "text": ("word " * (i * 40 + 1)).strip()} for i in range(6)]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    docs, bad = read_all([InputSpec(paths=[str(path)])])
    assert bad == [] and [(d["id"], d["text"]) for d in docs] == [(r["id"], r["text"]) for r in records]
