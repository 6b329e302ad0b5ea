"""The score stage tokenises each batch once: n_tokens and the scorers that use the run tokenizer
(QuRating's windows, DataMan's truncation) read the same ids, and every column is what the scorer
computes on its own, whatever the batch."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence

import numpy as np
import pytest
from conftest import DATA, run_stage

from winnow.core.models import resolve_model_path
from winnow.core.tokenizer import BUNDLED_TOKENIZER, byte_level_round_trip, load_tokenizer
from winnow.stages.score.config import ScoreConfig
from winnow.stages.score.dataman import CHAR_LIMIT, DataManLocalScorer, LocalTruncation
from winnow.stages.score.qurating import BUNDLED_QURATER, CRITERIA, HashedTokenNgrams, LocalQuRater
from winnow.stages.score.registry import build_scorer
from winnow.stages.score.scorer import TokenizedTexts
from winnow.stages.score.stage import Score

BUNDLED_DATAMAN = "winnow:models/dataman/dataman-local.npz"
# Special-token text, line ends, tabs, non-Latin scripts, emoji, combining marks, control and zero-width characters.
TRICKY = [
    "  leading and trailing spaces \n\n",
    "a <|endoftext|> b<|pad|>c",
    "line\r\nbreaks\tand\ttabs\x0b\x0c",
    "日本語のテキスト、中文文本 and Ελληνικά",
    "emoji 👩‍👩‍👧 🇫🇷 e\u0301 ﬁ \u200b zero width",
    "\x00\x01 control \u2028 separators \ufeff",
]


def english_texts(n: int = 60) -> list[str]:
    with gzip.open(DATA / "text" / "english.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle][:n]


class CountingTokenizer:
    """The bundled tokenizer, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        self.inner = load_tokenizer()
        self.version = self.inner.version
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        self.encoded += len(texts)
        return self.inner.encode(texts)


def test_a_batch_is_encoded_once_per_tokenizer_and_rows_keep_their_ids():
    texts = ["one text", "another, longer text", ""]
    tokenizer = CountingTokenizer()
    batch = TokenizedTexts(texts)
    assert batch.cached_ids(tokenizer) is None
    ids = batch.token_ids(tokenizer)
    assert batch.token_ids(tokenizer) is ids and tokenizer.encoded == 3
    part = batch.take([2, 0])
    assert part.texts == ["", "one text"] and part.cached_ids(tokenizer) == [ids[2], ids[0]]
    assert tokenizer.encoded == 3
    # Another object loaded from the same file (same digest) finds the same ids.
    assert batch.cached_ids(load_tokenizer()) is ids


def test_token_ngram_features_depend_only_on_each_window():
    featurizer = HashedTokenNgrams()
    texts = english_texts(20)
    windows = [ids[:512] for ids in featurizer.tokenizer.encode(texts)] + [[]]
    together = featurizer.from_ids(windows)
    assert together.shape == (len(windows), featurizer.n_features)
    for i, window in enumerate(windows):
        alone = featurizer.from_ids([window])
        assert np.array_equal(alone.toarray()[0], together[i].toarray()[0])
    norms = np.sqrt(np.asarray(together.multiply(together).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[:-1], 1.0, rtol=1e-12)
    assert norms[-1] == 0.0  # an empty window has no features
    # Features of texts are the features of their ids.
    assert np.array_equal(featurizer.transform(texts[:3]).toarray(), featurizer.from_ids(windows[:3]).toarray())


def test_case_and_leading_space_fold_onto_one_token_feature():
    folded, unfolded = HashedTokenNgrams(fold_case=True), HashedTokenNgrams()
    the = folded.tokenizer.encode([" The", "the", " the", "THE"])
    assert all(len(ids) == 1 for ids in the) and len({ids[0] for ids in the}) == 4
    assert len({int(folded._fold[ids[0]]) for ids in the}) == 1
    assert np.array_equal(folded.from_ids([the[0]]).toarray(), folded.from_ids([the[2]]).toarray())
    assert not np.array_equal(unfolded.from_ids([the[0]]).toarray(), unfolded.from_ids([the[2]]).toarray())
    newline = folded.tokenizer.encode(["\n\n"])[0]
    assert [int(folded._fold[i]) for i in newline] == newline  # whitespace tokens stay themselves


def test_qurater_on_shared_ids_equals_qurater_alone():
    qurater = LocalQuRater(BUNDLED_QURATER)
    texts = [*english_texts(40), "", "x" * 3000]
    alone = qurater.score(texts)
    batch = TokenizedTexts(texts)
    batch.token_ids(load_tokenizer())  # as the stage's n_tokens does
    shared = qurater.score_tokenized(batch)
    for column in alone:
        assert [np.asarray(v).tolist() for v in alone[column]] == [np.asarray(v).tolist() for v in shared[column]]
    one_by_one = [qurater.score([t])["educational_value_average"][0] for t in texts[:8]]
    assert one_by_one == alone["educational_value_average"][:8].tolist()


def test_dataman_truncation_reuses_only_ids_of_texts_it_would_encode_whole():
    truncate = LocalTruncation()
    long_text = " ".join(english_texts(200))[: CHAR_LIMIT + 5000]
    assert len(long_text) > CHAR_LIMIT
    texts = [*english_texts(10), long_text, "before ![](/img.png)\nafter", "", *TRICKY]
    batch = TokenizedTexts(texts)
    batch.token_ids(load_tokenizer())
    assert truncate(texts, batch) == truncate(texts)
    # Planted wrong ids are used for a whole text, never for a long or cleaned-up one.
    planted = TokenizedTexts(texts, {truncate.tokenizer.version: [[0]] * len(texts)})
    _, lengths = truncate(texts, planted)
    assert lengths[:10] == [1] * 10 and lengths[13:] == [1] * len(TRICKY)
    assert lengths[10] > 1 and lengths[11] == truncate(texts)[1][11]


def test_the_bundled_tokenizer_gives_every_text_back_and_others_are_not_assumed_to():
    tokenizer = load_tokenizer()
    assert tokenizer.round_trips
    for text in TRICKY:
        assert tokenizer.decode(tokenizer.encode([text])[0]) == text
    spec = json.loads(resolve_model_path(BUNDLED_TOKENIZER).read_text(encoding="utf-8"))
    assert byte_level_round_trip(spec)
    assert not byte_level_round_trip({**spec, "normalizer": {"type": "NFKC"}})
    assert not byte_level_round_trip({**spec, "pre_tokenizer": {**spec["pre_tokenizer"], "add_prefix_space": True}})
    stripping = [{**t, "lstrip": True} for t in spec["added_tokens"]]
    assert not byte_level_round_trip({**spec, "added_tokens": stripping})
    missing_byte = {k: v for k, v in spec["model"]["vocab"].items() if k != "Ā"}
    assert not byte_level_round_trip({**spec, "model": {**spec["model"], "vocab": missing_byte}})


def test_stage_columns_equal_each_scorer_on_its_own(tmp_path):
    texts = english_texts(30)
    docs = [{"id": f"d{i}", "text": t, "source": "t", "metadata": {}} for i, t in enumerate(texts)]
    entries = [
        {"name": "qurating", "backend": "qurating", "path": BUNDLED_QURATER, "batch_size": 7},
        {"name": "dataman", "backend": "dataman", "path": BUNDLED_DATAMAN, "batch_size": 5},
    ]
    out = run_stage(Score(ScoreConfig(enabled=True, scorers=entries)), docs, tmp_path)
    assert len(out["kept"]) == len(docs) and not out["rejected"]
    by_id = {d["id"]: d for d in out["kept"]}
    qurating, dataman = build_scorer(entries[0]), build_scorer(entries[1])
    assert isinstance(dataman, DataManLocalScorer)
    counts = load_tokenizer().count(texts)
    alone_q, alone_d = qurating.score(texts), dataman.score(texts)
    for i, doc in enumerate(docs):
        kept = by_id[doc["id"]]
        assert kept["n_tokens"] == counts[i] == kept["length"]
        for criterion in CRITERIA:
            assert kept[f"{criterion}_average"] == pytest.approx(float(alone_q[f"{criterion}_average"][i]), abs=0)
        assert kept["overall_score"] == int(alone_d["overall_score"][i])
        assert kept["dataman_length"] == int(alone_d["dataman_length"][i])
