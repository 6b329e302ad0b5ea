from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from winnow.core.tokenizer import BUNDLED_TOKENIZER
from winnow.stages.score.qurating import HashedNgrams, split_documents, window_tokenizer

TEXTS = [
    "",
    "a",
    "The cat sat on the mat. The CAT sat! Numbers 12 345 and under_scores x_y z",
    "Ça coûte 12,50 € — «très» cher! Straße ΑΒΓ αβγ Привет мир 東京都 한국어 العربية हिन्दी 😀😀 e\u0301",
    "naïve café résumé " * 40 + "end",
]


def test_hashed_word_counts_are_hashingvectorizers() -> None:
    for ngram_max in (1, 2, 3):
        ours = HashedNgrams(1 << 10, ngram_max).counts(TEXTS)
        vectorizer = HashingVectorizer(n_features=1 << 10, ngram_range=(1, ngram_max), alternate_sign=True, norm=None)
        theirs = vectorizer.transform(TEXTS).tocsr()
        assert np.array_equal(ours.toarray(), theirs.toarray())  # same buckets, signs and summed counts
        assert np.abs(ours.toarray()).sum() > 0


def test_window_text_cut_from_the_bytes_equals_decoding_the_window() -> None:
    tokenizer = window_tokenizer(BUNDLED_TOKENIZER)
    texts = [t for t in TEXTS if t] + ["😀é" * 30, "x<|endoftext|>y 東京" * 5]
    ids = tokenizer.encode(texts)
    for size in (1, 2, 3, 5, 7, 512):  # small windows cut many multi-byte characters in two
        flat, _ = split_documents(ids, size)
        expected = [tokenizer.decode(w) if len(w) else "" for w in flat]
        assert tokenizer.window_texts(texts, ids, size) == expected
    assert any("\ufffd" in tokenizer.decode(w) for w in split_documents(ids, 3)[0])  # cut characters occur
