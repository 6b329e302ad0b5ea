"""HTML extraction on real pages (article-extraction-benchmark bodies, trafilatura-eval snippets)
and on the payloads crawls really contain: other charsets, binaries, empty and oversized bodies."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from winnow.stages.extract.extraction import BACKENDS, ExtractResult, HtmlExtractor, decode_html, looks_binary

DATA = Path(__file__).resolve().parents[2] / "data" / "html" / "pages.jsonl.gz"
with gzip.open(DATA, "rt", encoding="utf-8") as _fh:
    PAGES = [json.loads(line) for line in _fh]
GOLD = [p for p in PAGES if p.get("article_body")]
SNIPPETS = [p for p in PAGES if p.get("must_contain")]
GERMAN = next(p for p in SNIPPETS if any("ü" in s or "ä" in s or "ö" in s for s in p["must_contain"]))


def _recall_precision(pred: str, gold: str) -> tuple[float, float]:
    words = re.compile(r"\w+")
    p, g = Counter(words.findall(pred.lower())), Counter(words.findall(gold.lower()))
    overlap = sum((p & g).values())
    return overlap / max(sum(g.values()), 1), overlap / max(sum(p.values()), 1)


@pytest.fixture(scope="module", params=BACKENDS)
def extractor(request: pytest.FixtureRequest) -> HtmlExtractor:
    return HtmlExtractor(backend=request.param)


def test_article_bodies_are_recovered(extractor: HtmlExtractor) -> None:
    scores = [_recall_precision(extractor(p["html"]).text or "", p["article_body"]) for p in GOLD]
    recall = sum(r for r, _ in scores) / len(scores)
    precision = sum(p for _, p in scores) / len(scores)
    assert recall >= 0.85, (extractor.backend, scores)
    assert precision >= 0.6, (extractor.backend, scores)


def test_main_text_snippets_are_kept(extractor: HtmlExtractor) -> None:
    found = total = 0
    for page in SNIPPETS:
        text = extractor(page["html"]).text or ""
        found += sum(s in text for s in page["must_contain"])
        total += len(page["must_contain"])
    assert found / total >= 0.8, (extractor.backend, found, total)


def test_fast_backend_leaks_less_boilerplate_than_plain_resiliparse() -> None:
    def leaked(backend: str) -> int:
        ex = HtmlExtractor(backend=backend)
        return sum(s in (ex(p["html"]).text or "") for p in SNIPPETS for s in p["must_not_contain"])

    assert leaked("fast") <= leaked("resiliparse")


def test_bytes_in_another_charset_are_decoded() -> None:
    ex = HtmlExtractor()
    html = GERMAN["html"]
    latin1 = re.sub(r"charset=[\"']?utf-8", "charset=iso-8859-1", html, flags=re.I).encode("latin-1", "replace")
    by_header = ex(latin1, "text/html; charset=ISO-8859-1")
    assert by_header.encoding == "iso8859-1"
    assert any(s in (by_header.text or "") for s in GERMAN["must_contain"])
    by_sniffing = ex(latin1)  # no header: <meta> / uchardet decide
    assert any(s in (by_sniffing.text or "") for s in GERMAN["must_contain"])


def test_utf16_with_bom_is_not_mistaken_for_binary() -> None:
    data = GERMAN["html"].encode("utf-16")
    assert not looks_binary(data)
    text, encoding = decode_html(data)
    assert encoding == "utf-16" and GERMAN["must_contain"][0] in text


@pytest.mark.parametrize(
    ("payload", "content_type", "reason"),
    [
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", None, "not_html"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, "not_html"),
        (b"<html><body><p>a real looking page</p></body></html>", "image/jpeg", "not_html"),
        (b"GIF89a\x01\x00\x01\x00", "text/html", "not_html"),
        (b"", None, "empty"),
        ("", None, "empty"),
        ("<html><head><title>t</title></head><body>  \n\t </body></html>", None, "empty"),
        ("\x00\x01\x02\x03 \x04", None, "not_html"),
        ("\u200b\u200b \u00a0 \n", None, "empty"),
    ],
)
def test_bad_payloads_end_with_a_reason(payload: str | bytes, content_type: str | None, reason: str) -> None:
    for backend in BACKENDS:
        result = HtmlExtractor(backend=backend)(payload, content_type)
        assert result == ExtractResult(None, reason, result.encoding, result.detail), (backend, result)


def test_oversized_page_is_removed_not_parsed() -> None:
    ex = HtmlExtractor(max_html_bytes=10_000)
    result = ex(GOLD[0]["html"])
    assert result.reason == "too_large" and result.text is None


def test_plain_text_payload_passes_through() -> None:
    result = HtmlExtractor()(b"Just text, served as text.\n", "text/plain; charset=utf-8")
    assert result.text == "Just text, served as text."


def test_broken_html_does_not_crash() -> None:
    html = GOLD[1]["html"]
    for cut in (len(html) // 3, len(html) // 2):
        for backend in BACKENDS:
            result = HtmlExtractor(backend=backend)(html[:cut] + "<div><p><<<>>&&&#xZZ;")
            assert result.reason in (None, "empty")


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown extraction backend"):
        HtmlExtractor(backend="nope")
