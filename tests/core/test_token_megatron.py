"""Megatron token parts read back with Megatron-Core's own ``IndexedDataset`` and ``GPTDataset``.

Covers what every format shares too: dtype choice at the 65,536 boundary, part rollover by
``target_bytes``, the provenance index, the manifest section and byte determinism.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset

from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import (
    FORMATS,
    Span,
    assign_parts,
    document_sequence,
    encode_texts,
    finalize,
    id_bound,
    resolve_dtype,
    write_dataset,
    write_part,
)
from winnow.core.tokens.index import DatasetKey, TokenSequence, read_index
from winnow.core.tokens.megatron import read_megatron_part
from winnow.stages.pack.packing import context_slices, decompose, piece_length, prefix_offsets

DATA = Path(__file__).resolve().parents[1] / "data"
BUNDLED = Path(__file__).resolve().parents[2] / "winnow" / "data" / "models" / "tokenizer" / "winnow-bpe-32k.json"


def sample_docs() -> list[dict]:
    """20 C4 documents (with URLs) and 10 sentences in Arabic, Japanese, Chinese, Russian…"""
    docs = [json.loads(line) for line in (DATA / "readers" / "sample.jsonl").open()]
    for doc in docs:
        doc["source"] = "c4"
    sentences = [json.loads(line) for line in (DATA / "langid" / "sentences.jsonl").open()]
    for lang in ("ar", "ja", "zh", "ru", "de"):
        picked = [s for s in sentences if s["lang"] == lang][:2]
        docs += [{"id": s["id"], "text": s["text"], "url": None, "source": "lingua"} for s in picked]
    return docs


def sequences_of(docs, tokenizer, dtype, phase=""):
    arrays = encode_texts(tokenizer, [d["text"] for d in docs], append_eos=True, dtype=dtype)
    return [
        document_sequence(d["id"], a, order_rank=i, phase=phase, url=d.get("url"), source=d.get("source"))
        for i, (d, a) in enumerate(zip(docs, arrays, strict=True))
    ]


def read_dataset(folder: Path) -> list[np.ndarray]:
    """Every sequence of a Megatron dataset folder, parts in name order, via IndexedDataset."""
    out = []
    for idx in sorted(folder.glob("part-*.idx")):
        dataset = IndexedDataset(str(idx.with_suffix("")))
        # Copy: the dataset unmaps its files when it is garbage-collected.
        out += [np.array(dataset[i]) for i in range(len(dataset))]
        assert list(dataset.document_indices) == list(range(len(dataset) + 1))
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_documents_read_back_and_decode(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()
    dtype = resolve_dtype("auto", id_bound(tokenizer))
    assert dtype == np.uint16
    results = write_dataset(
        tmp_path, DatasetKey("documents"), sequences_of(docs, tokenizer, dtype), formats=["megatron"],
        dtype=dtype, target_bytes=3000,
    )  # fmt: skip
    assert len(results) > 3  # rolled over into several parts

    folder = tmp_path / "megatron" / "documents"
    read = read_dataset(folder)
    assert len(read) == len(docs)
    for doc, tokens in zip(docs, read, strict=True):
        assert tokens.dtype == np.uint16
        assert tokens[-1] == tokenizer.eos_id
        assert tokenizer.decode(tokens[:-1].tolist()) == doc["text"]
    # Our own reader agrees with Megatron's.
    ours = [s for idx in sorted(folder.glob("*.idx")) for s in read_megatron_part(idx.with_suffix(""))]
    assert all(np.array_equal(a, b) for a, b in zip(ours, read, strict=True))
    header = (folder / "part-00000.idx").read_bytes()[:18]
    assert header[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", header[9:17])[0] == 1
    assert header[17] == DType.code_from_dtype(np.uint16) == 8

    # Token counts: the pipeline's n_tokens (ids without EOS) plus one EOS per document.
    n_tokens = tokenizer.count([d["text"] for d in docs])
    section = finalize(
        tmp_path, results, tokenizer=tokenizer.describe(), dtype=dtype, append_eos=True, target_bytes=3000
    )
    entry = section["datasets"]["megatron/documents"]
    assert entry["tokens"] == int(n_tokens.sum()) + len(docs) == sum(len(t) for t in read)
    assert entry["sequences"] == len(docs)
    assert entry["dtype"] == "uint16" and section["dtype"] == "uint16"
    assert section["tokenizer"]["sha256_16"] == tokenizer.describe()["sha256_16"]
    listed = {f["path"] for f in entry["files"]}
    assert listed == {p.relative_to(tmp_path).as_posix() for p in folder.iterdir()}


def test_parts_follow_the_start_offset_rule(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()
    sequences = sequences_of(docs, tokenizer, np.uint16)
    target = 2500
    results = write_dataset(
        tmp_path, DatasetKey("documents"), sequences, formats=["megatron"], dtype=np.uint16, target_bytes=target
    )
    lengths = [s.tokens.shape[0] for s in sequences]
    parts = assign_parts(lengths, 2, target)
    starts = prefix_offsets([n * 2 for n in lengths])
    assert list(parts) == [s // target for s in starts]
    assert [r.part for r in results] == sorted(set(parts.tolist()))
    for result in results:
        expected = [n for n, p in zip(lengths, parts, strict=True) if p == result.part]
        got = read_megatron_part(tmp_path / "megatron" / "documents" / f"part-{result.part:05d}")
        assert [len(t) for t in got] == expected
        # A part never starts a sequence past its byte range.
        assert sum(expected[:-1]) * 2 < target
    # A block of a larger dataset placed from its start offset gets the same parts.
    tail = assign_parts(lengths[7:], 2, target, base_bytes=starts[7])
    assert list(tail) == list(parts[7:])


def test_parallel_parts_in_any_order_give_the_same_bytes(tmp_path):
    """What Beam will do: assign parts, write each part on its own (any order), finalize."""
    tokenizer = load_tokenizer()
    sequences = sequences_of(sample_docs(), tokenizer, np.uint16)
    key = DatasetKey("documents")
    one = tmp_path / "one"
    serial = write_dataset(one, key, sequences, formats=FORMATS, dtype=np.uint16, target_bytes=4000)
    section_one = finalize(
        one, serial, tokenizer=tokenizer.describe(), dtype=np.uint16, append_eos=True, target_bytes=4000
    )

    two = tmp_path / "two"
    parts = assign_parts([s.tokens.shape[0] for s in sequences], 2, 4000)
    results = []
    for part in sorted(set(parts.tolist()), reverse=True):
        members = (s for s, p in zip(sequences, parts, strict=True) if p == part)
        results.append(write_part(two, key, part, members, formats=FORMATS, dtype=np.uint16, target_bytes=4000))
    section_two = finalize(
        two, results[::-1], tokenizer=tokenizer.describe(), dtype=np.uint16, append_eos=True, target_bytes=4000
    )
    assert tree_bytes(one) == tree_bytes(two)
    assert section_one == section_two
    # Every file of the tree is in the manifest, with its real hash.
    listed = {f["path"]: f["sha256"] for d in section_one["datasets"].values() for f in d["files"]}
    listed.update({f["path"]: f["sha256"] for f in section_one["index"]["files"]})
    assert listed == {path: hashlib.sha256(data).hexdigest() for path, data in tree_bytes(one).items()}


def test_repeats_are_their_own_sequences_with_the_same_provenance(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()[:3]
    arrays = encode_texts(tokenizer, [d["text"] for d in docs], append_eos=True, dtype=np.uint16)
    order = [(0, 0), (1, 0), (0, 1), (2, 0)]  # (doc, epoch): document 0 is repeated
    sequences = [
        document_sequence(docs[d]["id"], arrays[d], order_rank=rank, sequence_id=f"{docs[d]['id']}#{epoch}")
        for rank, (d, epoch) in enumerate(order)
    ]
    write_dataset(
        tmp_path, DatasetKey("documents"), sequences, formats=["megatron"], dtype=np.uint16, target_bytes=10**9
    )
    read = read_dataset(tmp_path / "megatron" / "documents")
    assert [len(t) for t in read] == [len(arrays[d]) for d, _ in order]
    assert np.array_equal(read[0], read[2])
    index = read_index(tmp_path).to_pylist()
    assert [row["doc_id"] for row in index] == [docs[d]["id"] for d, _ in order]
    assert [row["sequence_id"] for row in index] == [f"{docs[d]['id']}#{e}" for d, e in order]


def shifted_tokenizer(tmp_path: Path, eos_id: int):
    """The bundled BPE with its end-of-text token moved to ``eos_id``: a tokenizer.json whose largest
    id sits exactly at a dtype boundary (large-vocabulary tokenizers such as Llama-3's are the same
    ``tokenizers`` JSON with ids past 65,535)."""
    spec = json.loads(BUNDLED.read_text())
    spec["model"]["vocab"]["<|endoftext|>"] = eos_id
    for token in spec["added_tokens"]:
        if token["content"] == "<|endoftext|>":
            token["id"] = eos_id
    path = tmp_path / f"tokenizer-eos{eos_id}.json"
    path.write_text(json.dumps(spec))
    return load_tokenizer(str(path))


@pytest.mark.parametrize(("eos_id", "expected"), [(65535, np.uint16), (65536, np.uint32)])
def test_dtype_boundary_with_a_users_tokenizer_json(tmp_path, eos_id, expected):
    tokenizer = shifted_tokenizer(tmp_path, eos_id)
    assert tokenizer.eos_id == eos_id
    bound = id_bound(tokenizer)
    assert bound == eos_id + 1
    dtype = resolve_dtype("auto", bound)
    assert dtype == expected
    docs = sample_docs()[:4]
    results = write_dataset(
        tmp_path / "out", DatasetKey("documents"), sequences_of(docs, tokenizer, dtype), formats=["megatron"],
        dtype=dtype, target_bytes=10**9,
    )  # fmt: skip
    read = read_dataset(tmp_path / "out" / "megatron" / "documents")
    for doc, tokens in zip(docs, read, strict=True):
        assert int(tokens[-1]) == eos_id  # no wrap-around at the boundary
        assert tokenizer.decode(tokens[:-1].tolist()) == doc["text"]
    section = finalize(
        tmp_path / "out", results, tokenizer=tokenizer.describe(), dtype=dtype, append_eos=True, target_bytes=10**9
    )
    megatron_dtype = section["datasets"]["megatron/documents"]["dtype"]
    # Megatron-Core has no uint32 code: 32-bit ids are stored as int32 (code 4).
    assert megatron_dtype == ("uint16" if expected == np.uint16 else "int32")
    assert read[0].dtype == np.dtype(megatron_dtype)


def test_explicit_dtype_that_cannot_hold_the_ids_is_refused():
    assert resolve_dtype("uint16", 65536) == np.uint16
    assert resolve_dtype("uint32", 100) == np.uint32
    with pytest.raises(ValueError, match="cannot hold"):
        resolve_dtype("uint16", 65537)
    with pytest.raises(ValueError):
        resolve_dtype("int8", 100)


def test_contexts_rebuild_the_concat_stream_and_trace_back(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()
    streams = encode_texts(tokenizer, [d["text"] for d in docs], append_eos=True, dtype=np.uint16)
    stream = np.concatenate(streams)
    context_tokens = 256
    # The pack stage's own cut: each document's slices per context.
    spans: dict[int, list[Span]] = {}
    for doc, tokens, start in zip(docs, streams, prefix_offsets([len(s) for s in streams]), strict=True):
        for piece in context_slices(start, len(tokens), context_tokens):
            spans.setdefault(piece.context_id, []).append(
                Span(doc["id"], piece.doc_token_start, piece.doc_token_end, doc.get("url"), doc["source"])
            )
    contexts = [
        TokenSequence(
            f"context-{cid}", stream[cid * context_tokens : (cid + 1) * context_tokens], tuple(spans[cid]), cid
        )
        for cid in sorted(spans)
    ]
    write_dataset(
        tmp_path, DatasetKey("contexts"), contexts, formats=["megatron"], dtype=np.uint16, target_bytes=4 * 512
    )
    read = read_dataset(tmp_path / "megatron" / "contexts")
    assert all(len(t) == context_tokens for t in read[:-1])  # only the stream's tail may be short
    assert np.array_equal(np.concatenate(read), stream)  # token for token
    # Every token traces back: index rows map context tokens to the document's own tokens.
    by_id = dict(zip([d["id"] for d in docs], streams, strict=True))
    files = {}
    for row in read_index(tmp_path).to_pylist():
        if row["file"] not in files:
            files[row["file"]] = read_megatron_part(tmp_path / "megatron" / row["file"])
        piece = files[row["file"]][row["position"]][row["seq_token_start"] : row["seq_token_end"]]
        assert np.array_equal(piece, by_id[row["doc_id"]][row["doc_token_start"] : row["doc_token_end"]])
    assert sum(len(f) for f in files.values()) == len(contexts)


def test_dd_buckets_hold_exactly_two_to_the_i_tokens(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()
    streams = encode_texts(tokenizer, [d["text"] for d in docs], append_eos=True, dtype=np.uint16)
    buckets: dict[int, list[TokenSequence]] = {}
    for doc, tokens in zip(docs, streams, strict=True):
        parts = decompose(len(tokens), i_min=3, i_max=8, randomized=False, target_token=False)
        for j, piece in enumerate(parts.pieces):
            sequence = TokenSequence(
                f"{doc['id']}/{j}", tokens[piece.start : piece.end], (Span(doc["id"], piece.start, piece.end),), j
            )
            buckets.setdefault(piece.bucket, []).append(sequence)
    assert len(buckets) > 3
    for bucket, members in sorted(buckets.items()):
        write_dataset(
            tmp_path, DatasetKey("dd", bucket=bucket), members, formats=["megatron"], dtype=np.uint16,
            target_bytes=1 << 12,
        )  # fmt: skip
    for bucket, members in buckets.items():
        read = read_dataset(tmp_path / "megatron" / "dd" / f"bucket={bucket}")
        assert len(read) == len(members)
        assert {len(t) for t in read} == {piece_length(bucket, False)} == {1 << bucket}
        assert all(np.array_equal(a, s.tokens) for a, s in zip(read, members, strict=True))


def test_phases_get_their_own_datasets(tmp_path):
    tokenizer = load_tokenizer()
    docs = sample_docs()[:6]
    early = sequences_of(docs[:3], tokenizer, np.uint16, phase="early")
    late = sequences_of(docs[3:], tokenizer, np.uint16, phase="late")
    for phase, sequences in (("early", early), ("late", late)):
        write_dataset(
            tmp_path, DatasetKey("documents", phase=phase), sequences, formats=["megatron"], dtype=np.uint16,
            target_bytes=10**9,
        )  # fmt: skip
    assert len(read_dataset(tmp_path / "megatron" / "documents" / "phase=early")) == 3
    assert len(read_dataset(tmp_path / "megatron" / "documents" / "phase=late")) == 3
    with pytest.raises(ValueError, match="phase"):
        write_part(tmp_path, DatasetKey("documents", phase="early"), 9, late, formats=["megatron"], dtype=np.uint16)


def test_provenance_must_cover_the_sequence(tmp_path):
    tokens = np.arange(10, dtype=np.uint16)
    bad = TokenSequence("s", tokens, (Span("d", 0, 9),), 0)
    with pytest.raises(ValueError, match="spans cover 9 tokens of 10"):
        write_part(tmp_path, DatasetKey("documents"), 0, [bad], formats=["megatron"], dtype=np.uint16)
    wide = TokenSequence("s", np.array([70000], dtype=np.int64), (Span("d", 0, 1),), 0)
    with pytest.raises(ValueError, match="outside uint16"):
        write_part(tmp_path, DatasetKey("documents"), 0, [wide], formats=["megatron"], dtype=np.uint16)


def test_megatron_gpt_dataset_packs_the_documents(tmp_path):
    """Megatron's own GPT dataset builds its sample index over our files, and every sample it
    returns is a window of the documents concatenated in its (shuffled) document order."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    tokenizer = load_tokenizer()
    docs = sample_docs()
    sequences = sequences_of(docs, tokenizer, np.uint16)
    write_dataset(
        tmp_path / "tokens", DatasetKey("documents"), sequences, formats=["megatron"], dtype=np.uint16,
        target_bytes=10**9,
    )  # fmt: skip

    class MinimalTokenizer:  # the attributes GPTDataset reads
        eod = tokenizer.eos_id
        pad = 1
        vocab_size = id_bound(tokenizer)
        unique_identifiers = {"class": "winnow-test"}  # noqa: RUF012

    sequence_length = 128
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=sequence_length,
        blend=([str(tmp_path / "tokens" / "megatron" / "documents" / "part-00000")], None),
        split="1,0,0",
        path_to_cache=str(tmp_path / "megatron-cache"),
        tokenizer=MinimalTokenizer(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [40, None, None], lambda: True, config).build()
    total = sum(s.tokens.shape[0] for s in sequences)
    assert len(train) == (total - 1) // sequence_length  # one epoch covers every token
    stream = np.concatenate([sequences[d].tokens for d in train.document_index]).astype(np.int64)
    doc_starts = np.concatenate([[0], np.cumsum([sequences[d].tokens.shape[0] for d in train.document_index])])
    for i in range(len(train)):
        sample = train[i]
        text = np.concatenate([sample["tokens"].numpy(), sample["labels"].numpy()[-1:]])
        doc_position, offset = train.sample_index[train.shuffle_index[i]]
        start = doc_starts[doc_position] + offset
        assert np.array_equal(text, stream[start : start + sequence_length + 1])


def test_megatron_gpt_dataset_serves_each_context_whole(tmp_path):
    """With contexts of exactly L tokens and ``add_extra_token_to_sequence=False``, every sample
    Megatron's GPT dataset draws is one of our contexts, unchanged (it shuffles them, never cuts)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    tokenizer = load_tokenizer()
    streams = encode_texts(tokenizer, [d["text"] for d in sample_docs()], append_eos=True, dtype=np.uint16)
    stream = np.concatenate(streams)
    length = 64
    n_contexts = stream.shape[0] // length  # whole contexts only
    contexts = [
        TokenSequence(f"c{i}", stream[i * length : (i + 1) * length], (Span("all", i * length, (i + 1) * length),), i)
        for i in range(n_contexts)
    ]
    write_dataset(
        tmp_path / "tokens", DatasetKey("contexts"), contexts, formats=["megatron"], dtype=np.uint16,
        target_bytes=10**9,
    )  # fmt: skip

    class MinimalTokenizer:
        eod = tokenizer.eos_id
        pad = 1
        vocab_size = id_bound(tokenizer)
        unique_identifiers = {"class": "winnow-test"}  # noqa: RUF012

    config = GPTDatasetConfig(
        random_seed=7,
        sequence_length=length,
        blend=([str(tmp_path / "tokens" / "megatron" / "contexts" / "part-00000")], None),
        split="1,0,0",
        path_to_cache=str(tmp_path / "megatron-cache"),
        tokenizer=MinimalTokenizer(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        add_extra_token_to_sequence=False,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n_contexts, None, None], lambda: True, config).build()
    assert len(train) == n_contexts
    wanted = {c.tokens.tobytes() for c in contexts}
    seen = {train[i]["tokens"].numpy().astype(np.uint16).tobytes() for i in range(len(train))}
    assert seen == wanted
