"""The extract, langid and filter stages on the local runner: outcomes, reasons, counters, columns."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from conftest import run_stage

from winnow.stages.extract.config import ExtractConfig
from winnow.stages.extract.stage import Extract
from winnow.stages.filter.config import FilterConfig
from winnow.stages.filter.rules import FilterChain
from winnow.stages.filter.stage import SPEC as FILTER
from winnow.stages.filter.stage import Filter
from winnow.stages.langid.config import LangIdConfig
from winnow.stages.langid.stage import SPEC as LANGID
from winnow.stages.langid.stage import LangId

DATA = Path(__file__).resolve().parents[1] / "data"


def run(transform: beam.PTransform, docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Run one stage; return its three outputs (as lists) and its counters."""
    outputs = run_stage(transform, docs, tmp_path)
    assert len(outputs["kept"]) + len(outputs["removed"]) + len(outputs["rejected"]) == len(docs)
    return outputs


def doc(doc_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, "text": "", "url": None, "source": "test", "metadata": {}, **fields}


def warc_docs() -> list[dict[str, Any]]:
    """The response records of a real WARC file, as the reader hands them over (bytes + headers)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    out = []
    with open(DATA / "readers" / "sample.warc.gz", "rb") as fh:
        for i, record in enumerate(ArchiveIterator(fh, record_types=WarcRecordType.response)):
            headers = {
                "WARC-Date": record.headers.get("WARC-Date"),
                "Content-Type": record.http_headers.get("Content-Type"),
            }
            out.append(
                doc(
                    f"warc-{i}",
                    url=record.headers.get("WARC-Target-URI").strip("<>"),
                    html=record.reader.read(),
                    warc_headers=headers,
                )
            )
    return out


def test_extract_stage_on_real_pages_and_bad_payloads(tmp_path: Path) -> None:
    with gzip.open(DATA / "html" / "pages.jsonl.gz", "rt", encoding="utf-8") as fh:
        pages = [json.loads(line) for line in fh]
    docs = [doc(p["id"], url=p["url"], html=p["html"]) for p in pages]
    docs += warc_docs()
    docs += [
        doc("pdf", html=b"%PDF-1.7\n%\xb5\xb5\xb5\xb5\n1 0 obj", warc_headers={"Content-Type": "application/pdf"}),
        doc("png", html=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"),
        doc("empty", html=b""),
        doc("huge", html="<html><body>" + "<p>word</p>" * 400_000 + "</body></html>"),
        doc("bad-type", html=12345),
        doc("plain", text="Already text: nothing to extract."),
    ]
    out = run(Extract(ExtractConfig(max_html_bytes=2_000_000)), docs, tmp_path)
    kept = {d["id"]: d for d in out["kept"]}
    removed = {d["id"]: d["reason"] for d in out["removed"]}
    assert all(p["id"] in kept for p in pages)
    assert kept["plain"]["text"] == "Already text: nothing to extract."
    assert removed["pdf"] == removed["png"] == "extract:not_html"
    assert removed["empty"] == "extract:empty" and removed["huge"] == "extract:too_large"
    assert [r["doc_id"] for r in out["rejected"]] == ["bad-type"]
    assert out["rejected"][0]["stage"] == "extract"
    page = kept[pages[0]["id"]]
    assert page["url"] == pages[0]["url"] and "html" not in page and len(page["text"]) > 500
    warc = [d for d in out["kept"] if d["id"].startswith("warc-")]
    assert len(warc) >= 15
    for d in warc:
        assert d["url"].startswith("http") and "warc_headers" not in d
        assert d["metadata"]["warc_date"] and d["metadata"]["content_type"].startswith("text/html")
    counters = out["counters"]
    assert counters["extract:not_html"] >= 2 and counters["extract:too_large"] == 1 and counters["extract:empty"] >= 1


def _paragraphs() -> dict[str, str]:
    by_lang: dict[str, list[str]] = {}
    for line in (DATA / "langid" / "sentences.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_lang.setdefault(row["lang"], []).append(row["text"])
    return {lang: "\n".join(texts[:5]) for lang, texts in by_lang.items()}


@pytest.mark.parametrize("backend", ["fasttext", "cld2"])
def test_langid_stage_keeps_english(tmp_path: Path, backend: str) -> None:
    paras = _paragraphs()
    docs = [doc(lang, text=text) for lang, text in paras.items()] + [doc("blank", text=" \n ")]
    out = run(LangId(LangIdConfig(backend=backend, batch_size=4)), docs, tmp_path)
    assert [d["id"] for d in out["kept"]] == ["en"]
    assert out["kept"][0]["language"] == "en" and out["kept"][0]["language_score"] >= 0.65
    removed = {d["id"]: d for d in out["removed"]}
    assert set(removed) == set(paras) - {"en"} | {"blank"}
    for lang, d in removed.items():
        if lang != "blank":
            assert d["reason"] == "langid:language" and d["language"] == lang
    assert out["counters"]["langid:language"] == len(paras)  # nine languages + the blank one ("und")


def test_langid_stage_annotates_only(tmp_path: Path) -> None:
    docs = [doc(lang, text=text) for lang, text in _paragraphs().items()]
    out = run(LangId(LangIdConfig(filter=False)), docs, tmp_path)
    assert {d["id"]: d["language"] for d in out["kept"]} == {d["id"]: d["id"] for d in docs}


def test_filter_stage_matches_the_chain_and_counts_reasons(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DATA / "filters" / "snippets.jsonl").read_text(encoding="utf-8").splitlines()]
    docs = [doc(r["id"], text=r["text"]) for r in rows] + [doc("none-text", text=None)]
    config = FilterConfig()
    out = run(Filter(config), docs, tmp_path)
    chain = FilterChain(config)
    expected = {r["id"]: chain(r["text"]) for r in rows}
    removed = {d["id"]: d["reason"] for d in out["removed"]}
    for d in out["kept"]:
        assert expected[d["id"]].kept and d["text"] == expected[d["id"]].text
        assert d["filter_lines_removed"] == expected[d["id"]].lines_removed
    for doc_id, reason in removed.items():
        assert reason == expected[doc_id].reason
    assert [r["doc_id"] for r in out["rejected"]] == ["none-text"]
    for reason in set(removed.values()):
        assert out["counters"][reason] == sum(r == reason for r in removed.values())
    assert "weborganizer-2894" in {d["id"] for d in out["kept"]}  # the clean page
    # C4 drops its repeated "(Applause.)" paragraphs (too few words) and keeps the paragraph breaks.
    speech = next(d for d in out["kept"] if d["id"] == "state-union-36-head")
    assert "(Applause.)" not in speech["text"] and "\n\n" in speech["text"]


def test_stage_columns_are_registered() -> None:
    assert [f.name for f in LANGID.columns] == ["language", "language_score"]
    assert [f.name for f in FILTER.columns] == ["filter_lines_removed", "filter_chars_removed"]
