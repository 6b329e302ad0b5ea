"""MinHash core: datatrove normalisation, batch shingle hashing, datasketch-equal signatures,
banding, and the offline fidelity tests 1, 2, 3, 5 and 6 of METHODS §7.3."""

from __future__ import annotations

import gzip
import json
import random
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import xxhash
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from scipy.stats import binomtest

from winnow.stages.dedup import minhash as mh

DATA = Path(__file__).resolve().parents[2] / "data"
SHINGLE_HASH = 0x5CA363C9212DFF82
TOKEN_HASH = 0xAFE912E6762F2857


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    """English web text, multilingual sentences (75 languages) and mixed-script demo docs."""
    texts = [d["text"] for d in _jsonl(DATA / "dedup" / "pairs_docs.jsonl.gz")]
    texts += [d["text"] for d in _jsonl(DATA / "langid" / "sentences.jsonl")]
    texts += [d["text"] for d in _jsonl(DATA / "dedup" / "data_juicer_docs.jsonl.gz")]
    return texts


# A literal, step-by-step transcription of datatrove 0.10.1 simplify_text (default config),
# slow and obviously in datatrove's order, to pin the fast implementations against.
_REF_NUMBERS = re.compile("\\d+([.,\u060c\u066b\u2396\u2397\u2398]{1}\\d+)?")
_REF_PUNCT = str.maketrans(mh.PUNCTUATION, " " * len(mh.PUNCTUATION))


def datatrove_simplify(text: str) -> str:
    text = text.lower()
    text = _REF_NUMBERS.sub("0", text)
    text = text.translate(_REF_PUNCT)
    text = re.sub(r"\s+", " ", text.strip())
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.strip()


_TRICKY = [*"ab cdE.,1234567890١٢٣۴", "\u0301", "é", "É", "İ", "Σ", "ς", "≠", "≮", "〈", "\u037e", "\u1fef", "\u2000",
           "\u3000", "１", "．", "\u060c", "\u066b", "第", "条", "ก", "\u0e48", "\ud800", "\U00020000", "\U000e0100",
           "\x00", "\x1f", "\x85", "\xa0", "\n", "-", "'", "ﬁ", "Å", "ß", "ǅ"]  # fmt: skip


def _fuzz_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_TRICKY) for _ in range(rng.randint(0, 40))) for _ in range(count)]


# --- normalisation --------------------------------------------------------------------------


def test_simplify_text_is_datatrove(real_texts: list[str]) -> None:
    for text in [*real_texts, *_fuzz_texts(2000, 0)]:
        assert mh.simplify_text(text) == datatrove_simplify(text)


def test_fast_word_tokens_match_reference(real_texts: list[str]) -> None:
    for text in [*real_texts, *_fuzz_texts(2000, 1)]:
        assert [t.decode("utf-8", "surrogatepass") for t in mh.word_tokens(text)] == mh.tokens(text)


def test_fidelity_1_normalisation_invariances() -> None:
    base = "The Café opened in 1999, serving 3.5 million cups of coffee to happy guests every year since"
    variants = [
        base.upper(),
        base.replace(",", " ;").replace(" ", "   \n\t "),
        base.replace("1999", "2024").replace("3.5", "12.75"),
        base.replace("é", "e"),
        unicodedata.normalize("NFD", base) + " ...!",
    ]
    reference = set(mh.shingles(base))
    assert len(reference) == 13  # 17 words
    for variant in variants:
        assert set(mh.shingles(variant)) == reference
    changed = set(mh.shingles(base.replace("coffee", "tea")))
    assert len(reference - changed) <= 5 and len(changed - reference) <= 5


def test_no_space_scripts_are_one_token_per_character() -> None:
    assert mh.tokens("数据去重，很重要！") == ["数", "据", "去", "重", "很", "重", "要"]
    assert mh.tokens("ภาษาไทย ok") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย", "ok"]
    assert mh.tokens("Привет, мир 42") == ["привет", "мир", "0"]


# --- batch shingle hashing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shingle", "hash_name"), [("word", "poly64"), ("char", "poly64"), ("word", "xxh64"), ("char", "xxh64")]
)
def test_batch_hashes_equal_reference(real_texts: list[str], shingle: str, hash_name: str) -> None:
    def reference(s: str) -> int:
        if hash_name == "xxh64":
            return xxhash.xxh64_intdigest(s.encode("utf-8", "surrogatepass"))
        return mh.shingle_hash64(s, shingle)  # type: ignore[arg-type]

    texts = [*real_texts[:300], *_fuzz_texts(300, 2)]
    for ngram in (1, 3, 5):
        hasher = mh.ShingleHasher(ngram, shingle, hash_name)  # type: ignore[arg-type]
        values, counts = hasher.hash_batch(texts)
        expected = [[reference(s) for s in mh.shingles(t, ngram, shingle)] for t in texts]  # type: ignore[arg-type]
        assert counts.tolist() == [len(e) for e in expected]
        assert values.tolist() == [v for e in expected for v in e]


def test_enormous_text_is_hashed_in_pieces() -> None:
    """A text past _PIECE_CHARS is cut at whitespace: every shingle is real, ≤ n−1 lost per cut."""
    rng = random.Random(3)
    vocabulary = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(20_000)]
    text = " ".join(rng.choices(vocabulary, k=330_000))  # ≈ 2.3 M characters
    values, counts = mh.ShingleHasher(hash="xxh64").hash_batch(["short text", text])
    words = text.split()
    grams = zip(*(words[i:] for i in range(5)), strict=False)
    reference = [xxhash.xxh64_intdigest(" ".join(g).encode()) for g in grams]
    cuts = len(text) // mh._PIECE_CHARS
    assert cuts == 2 and counts[0] == 0
    assert len(reference) - 4 * cuts <= counts[1] < len(reference)
    assert set(values.tolist()) <= set(reference)


# --- signatures ---------------------------------------------------------------------------


def test_signatures_equal_datasketch(real_texts: list[str]) -> None:
    texts = [t for t in real_texts if len(mh.tokens(t)) >= 5][:40]
    poly, xx = mh.ShingleHasher(), mh.ShingleHasher(hash="xxh64")
    hasher = mh.MinHasher(112, seed=1)
    for text in texts:
        shingles = mh.shingles(text)
        for hashfunc, shingle_hasher in ((mh.shingle_hash64, poly), (lambda s: xxhash.xxh64_intdigest(s.encode()), xx)):
            ref = MinHash(num_perm=112, seed=1, hashfunc=hashfunc, scheme="affine64")
            ref.update_batch(shingles)
            assert np.array_equal(hasher.signature(shingle_hasher.hash_text(text)), ref.hashvalues)


def test_batched_signatures_equal_one_by_one() -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 2**64, rng.integers(1, 20_000), dtype=np.uint64) for _ in range(30)]
    for scheme in ("affine64", "mersenne61"):
        hasher = mh.MinHasher(64, seed=7, scheme=scheme)  # type: ignore[arg-type]
        batch = hasher.signatures(docs)
        for doc, row in zip(docs, batch, strict=True):
            assert np.array_equal(hasher.signature(doc), row)


def test_poly64_collision_statistics_match_xxh64(real_texts: list[str]) -> None:
    """poly64 is not xxhash: check it collides no more than a 64-bit hash should, and that
    signatures built on it estimate Jaccard as datasketch's xxh64-based MinHash does."""
    hash_of: dict[str, int] = {}
    for n in (1, 3, 5):
        values, _ = mh.ShingleHasher(n).hash_batch(real_texts)
        strings = [s for t in real_texts for s in mh.shingles(t, n)]
        hash_of.update(zip(strings, values.tolist(), strict=True))
    assert len(hash_of) > 100_000
    assert len(set(hash_of.values())) == len(hash_of)  # no collision among distinct shingles
    rng = random.Random(4)
    texts = [t for t in real_texts if len(t.split()) > 200][:40]
    errors: dict[str, list[float]] = {"poly64": [], "xxh64": []}
    for text in texts:
        words = text.split()
        for _ in range(3):
            edited = list(words)
            for _ in range(rng.randint(1, max(2, len(words) // 25))):
                edited[rng.randrange(len(edited))] = "x"
            other = " ".join(edited)
            truth = mh.exact_jaccard(mh.shingles(text), mh.shingles(other))
            for name in errors:
                hasher = mh.ShingleHasher(hash=name)  # type: ignore[arg-type]
                sigs = mh.MinHasher().signatures([hasher.hash_text(text), hasher.hash_text(other)])
                errors[name].append(mh.jaccard_estimate(sigs[0], sigs[1]) - truth)
            ref = [
                MinHash(112, seed=1, hashfunc=lambda s: xxhash.xxh64_intdigest(s.encode()), scheme="affine64")
                for _ in range(2)
            ]
            ref[0].update_batch(mh.shingles(text))
            ref[1].update_batch(mh.shingles(other))
            assert ref[0].jaccard(ref[1]) - truth == pytest.approx(errors["xxh64"][-1])
    for name, values in errors.items():
        assert abs(np.mean(values)) < 0.01, name  # both unbiased
        assert np.mean(np.abs(values)) < 0.04, name
    assert abs(np.std(errors["poly64"]) - np.std(errors["xxh64"])) < 0.01


def test_mersenne61_is_datatrove_formula() -> None:
    rng = np.random.default_rng(1)
    shingles = rng.integers(0, 2**64, 500, dtype=np.uint64)
    # datatrove: a, b drawn as two size-(1, n) arrays from RandomState(seed); (x·a + b) mod (2^61 − 1)
    gen = np.random.RandomState(1)
    prime = np.uint64((1 << 61) - 1)
    a = gen.randint(1, prime, dtype=np.uint64, size=(1, 112))
    b = gen.randint(0, prime, dtype=np.uint64, size=(1, 112))
    with np.errstate(over="ignore"):
        expected = ((shingles.reshape(-1, 1) * a + b) % prime).min(axis=0)
    assert np.array_equal(mh.MinHasher(112, 1, "mersenne61").signature(shingles), expected)


def test_band_hash_values_are_frozen() -> None:
    """The index stores band keys: a changed hash or band construction would silently make
    every old index miss, so their values are pinned."""
    signature = np.arange(1, 113, dtype=np.uint64).reshape(1, -1)
    keys = mh.band_hashes(signature, 14, 8)
    assert keys.shape == (1, 14)
    assert int(keys[0, 0]) == 0x391A659398905B0E
    assert mh.shingle_hash64("the quick brown fox jumps") == SHINGLE_HASH
    assert mh.token_hash64("héllo") == TOKEN_HASH


# --- fidelity tests 2 and 3 ---------------------------------------------------------------


def _pairs_with_jaccard(
    target: float, count: int, size: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random 64-bit sets A, B with |A ∩ B| / |A ∪ B| = round(target · union)."""
    pairs = []
    for _ in range(count):
        union = rng.integers(0, 2**64, size, dtype=np.uint64)
        shared = round(target * size)
        rest = size - shared
        a = np.concatenate([union[:shared], union[shared : shared + rest // 2]])
        b = np.concatenate([union[:shared], union[shared + rest // 2 :]])
        pairs.append((a if len(a) else union[:1], b if len(b) else union[1:2]))
    return pairs


def test_fidelity_2_jaccard_estimate_is_unbiased() -> None:
    rng = np.random.default_rng(2)
    hasher = mh.MinHasher(112, seed=1)
    truth, estimates = [], []
    for _ in range(2000):
        target = rng.uniform(0.0, 1.0)
        a, b = _pairs_with_jaccard(target, 1, 200, rng)[0]
        sigs = hasher.signatures([a, b])
        truth.append(mh.exact_jaccard(a.tolist(), b.tolist()))
        estimates.append(mh.jaccard_estimate(sigs[0], sigs[1]))
    errors = np.array(estimates) - np.array(truth)
    assert np.mean(np.abs(errors)) <= 0.05
    assert abs(np.mean(errors)) <= 0.01


def test_fidelity_3_s_curve_matches_theory() -> None:
    rng = np.random.default_rng(3)
    hasher = mh.MinHasher(112, seed=1)
    for target in (0.5, 0.6, 0.7, 0.8, 0.9):
        pairs = _pairs_with_jaccard(target, 600, 100, rng)
        sigs = hasher.signatures([x for pair in pairs for x in pair])
        keys = mh.band_hashes(sigs, 14, 8)
        hits = int(np.count_nonzero((keys[0::2] == keys[1::2]).any(axis=1)))
        expected = float(mh.candidate_probability(target, 14, 8))
        interval = binomtest(hits, len(pairs), expected).proportion_ci(confidence_level=0.99)
        assert interval.low <= expected <= interval.high, (target, hits / len(pairs), expected)


@pytest.mark.parametrize(
    ("threshold", "num_perm", "fp", "fn"),
    [(0.8, 128, 0.5, 0.5), (0.8, 112, 0.5, 0.5), (0.72, 112, 0.5, 0.5), (0.5, 64, 0.3, 0.7), (0.9, 256, 0.5, 0.5)],
)
def test_optimal_bands_equal_datasketch(threshold: float, num_perm: int, fp: float, fn: float) -> None:
    assert mh.optimal_bands(threshold, num_perm, fp, fn) == _optimal_param(threshold, num_perm, fp, fn)


# --- fidelity tests 5 and 6 (real near-duplicates) -----------------------------------------


def _candidates_and_estimate(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    values, counts = mh.ShingleHasher().hash_batch(texts)
    sigs = mh.MinHasher(112, 1).signatures_flat(values, counts)
    return sigs, mh.band_hashes(sigs, 14, 8)


def _matched(sig_a: np.ndarray, sig_b: np.ndarray, keys_a: np.ndarray, keys_b: np.ndarray) -> bool:
    """LSH candidate and verified at the default threshold (the stage's edge rule)."""
    threshold = (1 / 14) ** (1 / 8)
    return bool((keys_a == keys_b).any()) and mh.jaccard_estimate(sig_a, sig_b) >= threshold


def test_fidelity_5_graded_plagiarism() -> None:
    docs = _jsonl(DATA / "dedup" / "plagiarism_docs.jsonl.gz")
    sources = {d["file"]: d for d in docs if d["category"] == "orig"}
    answers = [d for d in docs if d["category"] != "orig"]
    texts = [d["text"] for d in answers] + [sources[d["source_file"]]["text"] for d in answers]
    sigs, keys = _candidates_and_estimate(texts)
    n = len(answers)
    by_grade: dict[str, list[bool]] = {}
    high, low = [], []
    for i, answer in enumerate(answers):
        truth = mh.exact_jaccard(mh.shingles(answer["text"]), mh.shingles(texts[n + i]))
        caught = _matched(sigs[i], sigs[n + i], keys[i], keys[n + i])
        by_grade.setdefault(answer["category"], []).append(caught)
        if truth >= 0.8:
            high.append(caught)
        if truth < 0.3:
            low.append(caught)
    print({grade: f"{sum(v)}/{len(v)}" for grade, v in by_grade.items()}, f"J≥0.8: {sum(high)}/{len(high)}")
    assert not any(low), "a pair with exact Jaccard < 0.3 was clustered"
    assert not any(by_grade["non"])
    assert not high or sum(high) / len(high) >= 0.9


def test_fidelity_6_natural_near_duplicates() -> None:
    docs = {d["id"]: d["text"] for d in _jsonl(DATA / "dedup" / "pairs_docs.jsonl.gz")}
    pairs = _jsonl(DATA / "dedup" / "near_duplicate_pairs.jsonl")
    ids = sorted(docs)
    sigs, keys = _candidates_and_estimate([docs[i] for i in ids])
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    found_high, total_high, found_all = 0, 0, 0
    for pair in pairs:
        a, b = row[pair["id_a"]], row[pair["id_b"]]
        truth = mh.exact_jaccard(mh.shingles(docs[pair["id_a"]]), mh.shingles(docs[pair["id_b"]]))
        caught = _matched(sigs[a], sigs[b], keys[a], keys[b])
        found_all += caught
        if truth >= 0.8:
            total_high += 1
            found_high += caught
    print(f"recall all pairs {found_all}/{len(pairs)}, J≥0.8 {found_high}/{total_high}")
    assert total_high >= 5  # the folder's 68 pairs hold 8 at J ≥ 0.8 under these shingles
    assert found_high / total_high >= 0.9


def test_union_find_reference() -> None:
    uf = mh.UnionFind()
    for a, b in [("c", "d"), ("a", "b"), ("b", "d"), ("x", "y")]:
        uf.union(a, b)
    uf.find("z")
    assert uf.components() == {"a": "a", "b": "a", "c": "a", "d": "a", "x": "x", "y": "x", "z": "z"}
