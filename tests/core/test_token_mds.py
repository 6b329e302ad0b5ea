"""MDS token shards read back with MosaicML Streaming's own readers.

``mosaicml-streaming`` 0.13.0 needs numpy < 2.2, xxhash < 4 and transformers < 5, which clash with
winnow's pins, so it runs in its own virtualenv (``scripts/streaming_venv.py``, through
``tests/mds_reader.py``). There, ``LocalDataset`` and ``StreamingDataset(validate_hash="sha256")``
read our files, and streaming's own ``MDSWriter`` writes the same samples, whose shard must equal
ours byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mds_reader import read_with_streaming

from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import (
    Span,
    document_sequence,
    encode_texts,
    finalize,
    id_bound,
    resolve_dtype,
    write_dataset,
    write_part,
)
from winnow.core.tokens import mds as mds_module
from winnow.core.tokens.index import DatasetKey, TokenSequence
from winnow.core.tokens.mds import read_mds_dataset
from winnow.stages.pack.packing import context_slices, decompose, prefix_offsets

DATA = Path(__file__).resolve().parents[1] / "data"
BUNDLED = Path(__file__).resolve().parents[2] / "winnow" / "data" / "models" / "tokenizer" / "winnow-bpe-32k.json"


def sample_docs() -> list[dict]:
    docs = [json.loads(line) for line in (DATA / "readers" / "sample.jsonl").open()]
    sentences = [json.loads(line) for line in (DATA / "langid" / "sentences.jsonl").open()]
    for lang in ("ar", "ja", "zh", "ru"):
        docs += [{"id": s["id"], "text": s["text"]} for s in sentences if s["lang"] == lang][:2]
    return docs


def as_documents(docs: list[dict], streams: list[np.ndarray]) -> list[TokenSequence]:
    return [document_sequence(d["id"], s, order_rank=i) for i, (d, s) in enumerate(zip(docs, streams, strict=True))]


def big_vocab_tokenizer(tmp: Path):
    """The bundled BPE with every id moved up by 100,000 (ids like a Llama-3-size vocabulary)."""
    spec = json.loads(BUNDLED.read_text())
    spec["model"]["vocab"] = {token: i + 100_000 for token, i in spec["model"]["vocab"].items()}
    for token in spec["added_tokens"]:
        token["id"] += 100_000
    path = tmp / "big-vocab-tokenizer.json"
    path.write_text(json.dumps(spec))
    return load_tokenizer(str(path))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every dataset kind written as MDS, then read by streaming's readers in one subprocess."""
    tmp = tmp_path_factory.mktemp("mds")
    root = tmp / "tokens"
    docs = sample_docs()
    texts = [d["text"] for d in docs]
    tokenizer = load_tokenizer()
    streams = encode_texts(tokenizer, texts, append_eos=True, dtype=np.uint16)
    documents = as_documents(docs, streams)
    results = write_dataset(
        root, DatasetKey("documents"), documents, formats=["mds"], dtype=np.uint16, target_bytes=3000
    )

    big = big_vocab_tokenizer(tmp)
    big_dtype = resolve_dtype("auto", id_bound(big))
    big_streams = encode_texts(big, texts, append_eos=True, dtype=big_dtype)
    big_docs = as_documents(docs, big_streams)
    big_results = write_dataset(
        tmp / "big", DatasetKey("documents"), big_docs, formats=["mds"], dtype=big_dtype, target_bytes=10**9
    )

    stream = np.concatenate(streams)
    context_tokens = 200
    spans: dict[int, list[Span]] = {}
    for doc, tokens, start in zip(docs, streams, prefix_offsets([len(s) for s in streams]), strict=True):
        for piece in context_slices(start, len(tokens), context_tokens):
            spans.setdefault(piece.context_id, []).append(Span(doc["id"], piece.doc_token_start, piece.doc_token_end))
    contexts = [
        TokenSequence(f"ctx-{c}", stream[c * context_tokens : (c + 1) * context_tokens], tuple(spans[c]), c)
        for c in sorted(spans)
    ]
    results += write_dataset(
        root, DatasetKey("contexts"), contexts, formats=["mds"], dtype=np.uint16, target_bytes=2000
    )

    buckets: dict[int, list[TokenSequence]] = {}
    for doc, tokens in zip(docs, streams, strict=True):
        for j, piece in enumerate(
            decompose(len(tokens), i_min=4, i_max=7, randomized=False, target_token=False).pieces
        ):
            buckets.setdefault(piece.bucket, []).append(
                TokenSequence(
                    f"{doc['id']}/{j}", tokens[piece.start : piece.end], (Span(doc["id"], piece.start, piece.end),), j
                )
            )
    for bucket, members in sorted(buckets.items()):
        results += write_dataset(
            root, DatasetKey("dd", bucket=bucket), members, formats=["mds"], dtype=np.uint16, target_bytes=1000
        )

    section = finalize(
        root, results, tokenizer=tokenizer.describe(), dtype=np.uint16, append_eos=True, target_bytes=3000
    )
    big_section = finalize(
        tmp / "big", big_results, tokenizer=big.describe(), dtype=big_dtype, append_eos=True, target_bytes=10**9
    )

    # One part holding everything, for the byte comparison with streaming's own writer.
    single = tmp / "single"
    single_result = write_part(
        single, DatasetKey("documents"), 0, documents, formats=["mds"], dtype=np.uint16, target_bytes=1 << 20
    )
    finalize(
        single, [single_result], tokenizer=tokenizer.describe(), dtype=np.uint16, append_eos=True, target_bytes=1 << 20
    )

    folders = {
        "documents": root / "mds" / "documents",
        "contexts": root / "mds" / "contexts",
        "big": tmp / "big" / "mds" / "documents",
        "single": single / "mds" / "documents",
        **{f"dd{b}": root / "mds" / "dd" / f"bucket={b}" for b in buckets},
    }
    request = {
        "read": [str(f) for f in folders.values()],
        "write": [
            {"from": str(folders["single"]), "to": str(tmp / "theirs"), "dtype": "uint16", "size_limit": 1 << 20}
        ],
    }
    got = read_with_streaming(request, tmp / "streaming")
    return {
        "tmp": tmp,
        "docs": docs,
        "tokenizer": tokenizer,
        "big": big,
        "documents": documents,
        "contexts": contexts,
        "stream": stream,
        "buckets": buckets,
        "section": section,
        "big_section": big_section,
        "results": results,
        "read": {name: got["read"][str(folder)] for name, folder in folders.items()},
        "streamed": {name: got["streamed"][str(folder)] for name, folder in folders.items()},
        "folders": folders,
    }


def test_streaming_reads_every_document_back(written):
    tokenizer, docs = written["tokenizer"], written["docs"]
    read = written["read"]["documents"]
    assert [s["id"] for s in read] == [d["id"] for d in docs] == written["streamed"]["documents"]
    for doc, sample in zip(docs, read, strict=True):
        assert sample["dtype"] == "uint16"
        assert sample["tokens"][-1] == tokenizer.eos_id
        assert tokenizer.decode(sample["tokens"][:-1]) == doc["text"]
    assert len(list(written["folders"]["documents"].glob("*.mds"))) > 3  # several parts, one index.json
    total = sum(len(s["tokens"]) for s in read)
    assert total == int(tokenizer.count([d["text"] for d in docs]).sum()) + len(docs)
    assert written["section"]["datasets"]["mds/documents"]["tokens"] == total


def test_our_shard_is_byte_identical_to_streamings_writer(written):
    tmp = written["tmp"]
    ours = (written["folders"]["single"] / "part-00000.mds").read_bytes()
    theirs = (tmp / "theirs" / "shard.00000.mds").read_bytes()
    assert ours == theirs
    our_index = json.loads((written["folders"]["single"] / "index.json").read_text())
    their_index = json.loads((tmp / "theirs" / "index.json").read_text())
    their_index["shards"][0]["raw_data"]["basename"] = "part-00000.mds"
    assert our_index == their_index


def test_uint32_ids_from_a_large_vocabulary(written):
    big, docs = written["big"], written["docs"]
    read = written["read"]["big"]
    assert {s["dtype"] for s in read} == {"uint32"}
    assert written["big_section"]["datasets"]["mds/documents"]["dtype"] == "uint32"
    for doc, sample in zip(docs, read, strict=True):
        assert sample["tokens"][-1] == big.eos_id > 65535
        assert big.decode(sample["tokens"][:-1]) == doc["text"]


def test_contexts_rebuild_the_stream(written):
    read = written["read"]["contexts"]
    assert [s["id"] for s in read] == [c.id for c in written["contexts"]]
    assert all(len(s["tokens"]) == 200 for s in read[:-1])
    assert np.array_equal(np.concatenate([s["tokens"] for s in read]), written["stream"])


def test_dd_buckets_hold_two_to_the_i_tokens(written):
    for bucket, members in written["buckets"].items():
        read = written["read"][f"dd{bucket}"]
        assert [s["id"] for s in read] == [m.id for m in members]
        assert {len(s["tokens"]) for s in read} == {1 << bucket}


def test_our_reader_and_manifest_agree(written):
    folder = written["folders"]["documents"]
    ours = read_mds_dataset(folder)
    assert [i for i, _ in ours] == [s["id"] for s in written["read"]["documents"]]
    assert all(t.tolist() == s["tokens"] for (_, t), s in zip(ours, written["read"]["documents"], strict=True))
    entry = written["section"]["datasets"]["mds/documents"]
    names = {Path(f["path"]).name for f in entry["files"]}
    assert names == {p.name for p in folder.iterdir()}
    assert "index.json" in names


def test_empty_sequence_and_oversized_shard_are_refused(tmp_path, monkeypatch):
    empty = TokenSequence("e", np.zeros(0, np.uint16), (), 0)
    with pytest.raises(ValueError, match="empty"):
        write_part(tmp_path, DatasetKey("documents"), 0, [empty], formats=["mds"], dtype=np.uint16)
    monkeypatch.setattr(mds_module, "_MAX_SHARD_BYTES", 100)
    seq = document_sequence("d", np.arange(200, dtype=np.uint16), order_rank=0)
    with pytest.raises(ValueError, match="4 GiB"):
        write_part(tmp_path, DatasetKey("documents"), 1, [seq], formats=["mds"], dtype=np.uint16)
