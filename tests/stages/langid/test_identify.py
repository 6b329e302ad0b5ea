"""Language ID on real sentences (lingua test data) in ten languages, both backends."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from winnow.stages.langid.identify import (
    UNKNOWN,
    Cld2LangId,
    FastTextLangId,
    bundled_model_path,
    keep_decision,
    make_identifier,
    parse_label,
    prepare_text,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "langid" / "sentences.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def fasttext_model() -> FastTextLangId:
    return FastTextLangId()


def _accuracy(predictions: list[tuple[str, float]]) -> dict[str, float]:
    hits: dict[str, list[bool]] = defaultdict(list)
    for row, (lang, _score) in zip(ROWS, predictions, strict=True):
        hits[row["lang"]].append(lang == row["lang"])
    return {lang: sum(v) / len(v) for lang, v in hits.items()}


def test_bundled_model_ships_with_its_license() -> None:
    path = bundled_model_path()
    assert path.is_file() and path.stat().st_size > 900_000
    assert "CC BY-SA 3.0" in (path.parent / "README.md").read_text(encoding="utf-8")


def test_fasttext_identifies_real_sentences(fasttext_model: FastTextLangId) -> None:
    predictions = fasttext_model.predict([r["text"] for r in ROWS])
    accuracy = _accuracy(predictions)
    assert set(accuracy) == {"ar", "de", "en", "es", "fr", "it", "ja", "pt", "ru", "zh"}
    for lang, acc in accuracy.items():
        assert acc >= 0.85, (lang, acc)
    assert all(0.0 <= score <= 1.0 for _, score in predictions)


def test_fasttext_on_paragraphs_is_exact_and_confident(fasttext_model: FastTextLangId) -> None:
    by_lang: dict[str, list[str]] = defaultdict(list)
    for row in ROWS:
        by_lang[row["lang"]].append(row["text"])
    docs = {lang: "\n".join(texts[:5]) for lang, texts in by_lang.items()}  # newlines on purpose
    predictions = fasttext_model.predict(list(docs.values()))
    for (lang, _), (got, score) in zip(docs.items(), predictions, strict=True):
        assert got == lang and score >= 0.65, (lang, got, score)


def test_empty_and_whitespace_are_unknown(fasttext_model: FastTextLangId) -> None:
    assert fasttext_model.predict(["", " \n\t "]) == [(UNKNOWN, 0.0), (UNKNOWN, 0.0)]


def test_cld2_backend_identifies_real_sentences() -> None:
    identifier = make_identifier("cld2")
    assert isinstance(identifier, Cld2LangId)
    accuracy = _accuracy(identifier.predict([r["text"] for r in ROWS]))
    assert sum(accuracy.values()) / len(accuracy) >= 0.8, accuracy
    # Control characters and lone surrogates make pycld2 raise; the wrapper must not.
    assert identifier.predict(["abc\x00\x01 \ud800", ""])[1] == (UNKNOWN, 0.0)


def test_label_parsing_and_text_preparation() -> None:
    assert parse_label("__label__en") == "en"
    assert parse_label("ceb") == "ceb"
    assert prepare_text("a\nb\r\n  c", None) == "a b c"
    assert prepare_text("abcdef", 3) == "abc"


def test_keep_decision_rules() -> None:
    keep = {"en": 0.65}
    assert keep_decision("en", 0.9, keep) is None
    assert keep_decision("en", 0.5, keep) == "low_score"
    assert keep_decision("de", 0.99, keep) == "language"
    assert keep_decision("de", 0.5, {"en": 0.65, "*": 0.3}) is None


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown language-ID backend"):
        make_identifier("nope")
