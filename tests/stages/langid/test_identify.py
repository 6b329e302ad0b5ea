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
    sample_text,
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


def _long_document(head_lang: str, body_lang: str) -> str:
    """A few lines of ``head_lang`` followed by many more of ``body_lang``: a header alone misleads."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for row in ROWS:
        by_lang[row["lang"]].append(row["text"])
    return "\n".join(by_lang[head_lang][:6] + by_lang[body_lang] * 3)


def test_sample_reads_the_whole_document_not_its_header(fasttext_model: FastTextLangId) -> None:
    text = _long_document("de", "fr")
    head = len("\n".join(text.split("\n")[:6]))
    assert len(text) > 8 * head > 0
    sampled = FastTextLangId(max_chars=head, sample_chars=head)  # the budget a prefix would spend on German
    assert sampled.predict([text]) == [FastTextLangId(sample_chars=head).predict([text])[0]]
    assert sampled.predict([text])[0][0] == "fr"
    assert FastTextLangId(max_chars=head).predict([text])[0][0] == "de"  # the prefix reads the header only
    assert fasttext_model.predict([text])[0][0] == "fr"


def test_sample_respects_its_budget_and_keeps_whole_words() -> None:
    text = _long_document("en", "es")
    words = text.split()
    for budget in (160, 800, 3000):
        for windows in (w for w in (1, 4, 16) if budget // w >= 40):  # windows wider than any word
            sample = sample_text(text, budget, windows)
            assert budget // 2 <= len(sample) <= budget
            assert sample == sample_text(text, budget, windows)  # depends on the text only
            lines = sample.split("\n")
            assert len(lines) == windows
            # each window is a run of whole, consecutive words of the text
            for line in lines:
                run = line.split()
                assert any(words[i : i + len(run)] == run for i in range(len(words))), line
    # The first window starts the text, the last one ends it, the middle ones lie in between.
    lines, flat = sample_text(text, 800, 4).split("\n"), " ".join(words)
    assert flat.startswith(lines[0]) and flat.endswith(lines[-1])
    assert len(lines[0]) < flat.index(lines[1]) < flat.index(lines[2]) < len(flat) - len(lines[-1])
    assert sample_text(text, 800, 1) == " ".join(text[:800].split()[:-1])  # a prefix, its cut last word dropped
    # Text without spaces (Japanese) keeps the window as is rather than losing it.
    ja = "日本語の文章です。" * 200
    assert sample_text(ja, 90, 3) == "\n".join([ja[:30], ja[(1800 - 30) // 2 : (1800 - 30) // 2 + 30], ja[-30:]])
    assert sample_text(text, 0) == text and sample_text(text, None) == text and sample_text("short", 800) == "short"


def test_sample_changes_nothing_within_the_budget(fasttext_model: FastTextLangId) -> None:
    texts = [r["text"] for r in ROWS[:300]]
    assert max(len(t) for t in texts) < 800
    assert FastTextLangId(sample_chars=800).predict(texts) == FastTextLangId(sample_chars=0).predict(texts)


def test_prepare_text_collapses_exactly_what_the_regex_did() -> None:
    import re

    odd = "a\u00a0b\u2003c\x1cd\x1fe\u200bf\u3000g\x85h\u2028i\t\v\f\rj  "
    assert prepare_text(odd) == re.sub(r"\s+", " ", odd).strip()
    assert prepare_text("x\ny", sample_chars=800) == "x y"


def test_sample_config_is_validated() -> None:
    from pydantic import ValidationError

    from winnow.stages.langid.config import LangIdConfig

    assert LangIdConfig().sample_chars == 700 and LangIdConfig().sample_windows == 16
    assert LangIdConfig(sample_chars=0).sample_chars == 0
    assert LangIdConfig(sample_chars=None, max_chars=None).sample_chars is None
    for bad in ({"sample_chars": -1}, {"sample_windows": 0}, {"sample_chars": 30_000}, {"sample_chars": 8}):
        with pytest.raises(ValidationError):
            LangIdConfig(**bad)


def test_stage_passes_the_budget_to_the_model() -> None:
    from winnow.stages.langid.config import LangIdConfig
    from winnow.stages.langid.stage import LangIdStep

    text = _long_document("de", "fr")
    head = len("\n".join(text.split("\n")[:6]))
    docs = [{"id": "d", "text": text}]
    results = {}
    for windows in (1, 16):
        step = LangIdStep(LangIdConfig(sample_chars=head, sample_windows=windows, keep={"fr": 0.5}))
        step.setup(lambda name, n=1: None)
        results[windows] = step(docs)[0]
    assert isinstance(results[16], dict) and results[16]["language"] == "fr"
    assert not isinstance(results[1], dict) and results[1].rule == "language"
