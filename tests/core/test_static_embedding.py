"""The shipped static embedding: exact integer sums, the same bytes in any batch, order or CPU path."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from winnow.core.static_embedding import (
    DEFAULT_TOKEN_LIMIT,
    META_FILE,
    MODEL_DIR,
    TABLE_FILE,
    TOKENIZER_FILE,
    files_digest,
    load_static_embedding,
    load_static_embedding_from,
)

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]
# sha256 (first 16 hex) of encode(_texts()) with the shipped table and tokenizers 0.23.3.
PINNED_ENCODE_SHA = "87c4429356de8a79"


def _pages() -> list[dict]:
    """300 short weborganizer-dclm pages (text, topic) from the ordering tests' data."""
    with open(DATA / "ordering" / "weborganizer_small.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _long_pages() -> list[str]:
    """75 whole weborganizer-dclm pages (up to 10k characters) from the dedup tests' data."""
    with gzip.open(DATA / "dedup" / "pairs_docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def _sentences() -> list[str]:
    """200 sentences in ten languages and scripts (Arabic, CJK, Cyrillic, …)."""
    with open(DATA / "langid" / "sentences.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def _texts() -> list[str]:
    return [page["text"] for page in _pages()] + _long_pages() + _sentences()


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def embedding():
    return load_static_embedding()


def test_same_bytes_in_any_batch_and_order(embedding):
    texts = _texts()
    whole = embedding.encode(texts)
    singles = np.concatenate([embedding.encode([text]) for text in texts])
    by_64 = np.concatenate([embedding.encode(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    reverse = embedding.encode(texts[::-1])[::-1]
    assert whole.dtype == np.float32 and whole.shape == (len(texts), embedding.dim)
    assert _sha(whole) == _sha(singles) == _sha(by_64) == _sha(reverse)


def test_token_ids_are_the_unpadded_wordpiece_ids(embedding):
    from tokenizers import Tokenizer

    # MiniLM's tokenizer.json pads to 128 and truncates at 128: neither may reach the sums.
    reference = Tokenizer.from_file(str(MODEL_DIR / TOKENIZER_FILE))
    reference.no_padding()
    reference.no_truncation()
    unk = reference.token_to_id("[UNK]")
    texts = _texts()
    got = embedding.token_ids(texts)
    for text, ids in zip(texts, got, strict=True):
        full = reference.encode(text[: embedding.max_chars], add_special_tokens=False).ids[:DEFAULT_TOKEN_LIMIT]
        assert ids.tolist() == [i for i in full if i != unk]


def test_sums_are_exact_integer_sums_of_table_rows(embedding):
    texts = _texts()
    sums, counts = embedding.sums(texts)
    assert sums.dtype == np.int64 and counts.dtype == np.int64
    wide = embedding.table.astype(np.int64)
    for row, ids in enumerate(embedding.token_ids(texts)):
        assert counts[row] == len(ids)
        expected = [sum(int(wide[i, k]) for i in ids) for k in range(embedding.dim)] if len(ids) else [0] * 256
        assert sums[row].tolist() == expected


def test_unit_vectors_are_one_correctly_rounded_division(embedding):
    texts = _long_pages()[:20]
    sums, _ = embedding.sums(texts)
    vectors = embedding.encode(texts)
    for row in range(len(texts)):
        values = [int(v) for v in sums[row]]
        norm = math.sqrt(float(sum(v * v for v in values)))  # Python ints: exact; IEEE sqrt
        expected = np.array([v / norm for v in values], dtype=np.float64).astype(np.float32)
        assert vectors[row].tobytes() == expected.tobytes()
    assert np.allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0, atol=1e-6)


def test_token_limit_cuts_to_the_first_tokens():
    long = _long_pages()
    full = load_static_embedding()
    short = load_static_embedding(token_limit=64)
    assert load_static_embedding(token_limit=64) is short  # one table per process and limit
    _, counts = full.sums(long)
    assert counts.max() == DEFAULT_TOKEN_LIMIT  # the long pages do reach the limit
    short_sums, short_counts = short.sums(long)
    assert short_counts.max() == 64
    for row, ids in enumerate(full.token_ids(long)):
        assert short_sums[row].tolist() == full.table[ids[:64]].astype(np.int64).sum(0).tolist()


def test_empty_unknown_and_broken_text(embedding):
    empty = ["", "   \n\t", "\U0001f600\U0001f680"]
    texts = [*empty, "hello \U0001f600 world", "hello world", "bad \ud800 text", "bad text"]
    _, counts = embedding.sums(texts)
    vectors = embedding.encode(texts)
    assert counts[:3].tolist() == [0, 0, 0]  # emoji are [UNK], which is dropped
    assert not vectors[:3].any() and not embedding.encode_quantized(texts[:3]).any()
    assert vectors[3].tobytes() == vectors[4].tobytes()  # an unknown character adds nothing
    assert vectors[5].tobytes() == vectors[6].tobytes()  # a lone surrogate neither fails nor counts
    assert embedding.encode([]).shape == (0, embedding.dim)
    assert embedding.token_ids([]) == []


def test_quantized_inner_products_are_exact_in_float32_blas(embedding):
    texts = _texts()
    for scale in (127, 4087):
        quantized = embedding.encode_quantized(texts, scale)
        assert quantized.dtype == np.float32
        assert np.array_equal(quantized, np.rint(quantized)) and np.abs(quantized).max() <= scale
        exact = quantized.astype(np.int64) @ quantized.astype(np.int64).T  # integer matmul: no BLAS
        assert np.array_equal((quantized @ quantized.T).astype(np.int64), exact)
        nonzero = np.diag(exact) > 0
        assert np.allclose(np.sqrt(np.diag(exact)[nonzero]), scale, rtol=0.02)  # scaled unit vectors
    with pytest.raises(ValueError):
        embedding.encode_quantized(texts[:1], 4088)


_CHILD = """
import hashlib, json, sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
from winnow.core.static_embedding import load_static_embedding
texts = json.loads(sys.stdin.read())
e = load_static_embedding()
q = e.encode_quantized(texts)
out = {
    "enabled": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
    "encode": hashlib.sha256(e.encode(texts).tobytes()).hexdigest(),
    "sums": hashlib.sha256(e.sums(texts)[0].tobytes()).hexdigest(),
    "gram": hashlib.sha256((q @ q.T).tobytes()).hexdigest(),
}
print(json.dumps(out))
"""


def test_same_bytes_without_simd_dispatch_and_with_one_blas_thread(embedding):
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    found = [feature for feature in __cpu_dispatch__ if __cpu_features__.get(feature)]
    texts = _texts()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(found)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], input=json.dumps(texts), env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(child.stdout)
    assert result["enabled"] == []  # the dispatch really was switched off
    quantized = embedding.encode_quantized(texts)
    assert result["encode"] == _sha(embedding.encode(texts))
    assert result["sums"] == _sha(embedding.sums(texts)[0])
    assert result["gram"] == _sha(quantized @ quantized.T)


def test_shipped_files_match_meta(embedding):
    meta = json.loads((MODEL_DIR / META_FILE).read_text(encoding="utf-8"))
    for name in (TABLE_FILE, TOKENIZER_FILE):
        assert hashlib.sha256((MODEL_DIR / name).read_bytes()).hexdigest() == meta["sha256"][name]
    assert embedding.digest == files_digest(MODEL_DIR) == meta["digest"]
    assert (embedding.dim, len(embedding.table), str(embedding.table.dtype)) == (
        meta["dim"],
        meta["vocab_size"],
        meta["dtype"],
    )
    assert meta["token_limit"] == DEFAULT_TOKEN_LIMIT


def test_damaged_files_are_refused(tmp_path):
    folder = tmp_path / "static"
    shutil.copytree(MODEL_DIR, folder)
    tokenizer = folder / TOKENIZER_FILE
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b'"[UNK]"', b'"[UNX]"', 1))
    with pytest.raises(ValueError, match="sha256"):
        load_static_embedding_from(folder)


def test_the_table_carries_topic_knowledge(embedding):
    # A page's nearest page shares its (model-made) WebOrganizer topic 0.19 of the time with the
    # shipped table, against 0.04 for the commonest topic: a permuted or broken table falls to chance.
    pages = _pages()
    vectors = embedding.encode([page["text"] for page in pages]).astype(np.float64)
    topics = np.array([page["topic"] for page in pages])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    agreement = float(np.mean(topics[similarity.argmax(axis=1)] == topics))
    assert agreement > 0.12


def test_encoding_is_pinned():
    # The bytes every machine must produce for the test pages. A change here means every stored
    # embedding and every model trained on them changes: rebuild those, then update the hash.
    texts = _texts()
    assert _sha(load_static_embedding().encode(texts))[:16] == PINNED_ENCODE_SHA


def test_word_sums_are_exact_sums_of_each_words_own_tokens(embedding):
    """The taggers' input: each word tokenised alone (memoised), rows summed exactly, cut at token_limit."""
    pages = [page["text"].lower().split()[:80] for page in _pages()[:20]] + [[], ["zzqxj"], ["naïve", "東京"]]
    sums, counts = embedding.word_sums(pages)
    for words, row, count in zip(pages, sums, counts, strict=True):
        ids = [i for w in words for i in embedding.tokenizer.encode(w, add_special_tokens=False).ids]
        ids = [i for i in ids if i != embedding.unk_id][: embedding.token_limit]
        assert count == len(ids)
        np.testing.assert_array_equal(row, embedding.table[ids].astype(np.int64).sum(axis=0))
    embedding._word_memo.clear()  # the memo changes the cost only
    again, _ = embedding.word_sums(list(reversed(pages)))
    assert again[::-1].tobytes() == sums.tobytes()
    short = load_static_embedding(token_limit=8)
    cut, cut_counts = short.word_sums(pages[:3])
    assert (cut_counts == 8).all()
    for words, row in zip(pages[:3], cut, strict=True):
        ids = [i for w in words for i in embedding.tokenizer.encode(w, add_special_tokens=False).ids][:8]
        np.testing.assert_array_equal(row, embedding.table[ids].astype(np.int64).sum(axis=0))


def test_ids_built_from_memoised_space_chunks_equal_encoding_the_whole_text(embedding):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(MODEL_DIR / TOKENIZER_FILE))
    reference.no_padding()
    reference.no_truncation()
    unk = reference.token_to_id("[UNK]")
    texts = [
        "ΟΔΟΣ ΟΔΟΣ. Σ Σα İstanbul İ \u0301accent-first e\u0301 a \u0301\u0300 marks",
        "東京都は 日本の首都 です。  double  spaces\ttab\nnew\u00a0nbsp\u3000ideographic   ",
        "x" * 150 + " supercalifragilisticexpialidocious " + "café, naïve; (résumé)! 😀 \x00\x07ctrl \ufffd",
        "word " * 700,  # more than token_limit tokens: cut after the first 512
        "one-chunk-" * 300,  # a single chunk of more than token_limit tokens
    ]
    for _ in range(2):  # the second pass reads every chunk from the memo
        for text, ids in zip(texts, embedding.token_ids(texts), strict=True):
            full = reference.encode(text[: embedding.max_chars], add_special_tokens=False).ids[:DEFAULT_TOKEN_LIMIT]
            assert ids.tolist() == [i for i in full if i != unk]
