#!/usr/bin/env python3
"""Build winnow's bundled sample (``winnow/data/sample/``) and test fixtures (``tests/data/``).

Everything is taken from the real corpora in ``/work/shared/corpora`` (see its README for
sources and licenses); nothing is generated except the documented, deterministic edits
(duplicate copies, grouping of short sentences/lines, the bad-input corpus). Every random
choice is seeded and every gzip stream is written with ``mtime=0`` and no file name, so
re-running the script produces byte-identical files.

Usage (in the project venv)::

    python scripts/build_sample.py                  # sample + test fixtures
    python scripts/build_sample.py --only sample    # just winnow/data/sample/
    python scripts/build_sample.py --corpora /path/to/corpora
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import lzma
import os
import random
import re
import shutil
import unicodedata
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "winnow" / "data" / "sample"
TESTS_DIR = ROOT / "tests" / "data"
DEFAULT_CORPORA = Path(os.environ.get("WINNOW_CORPORA", "/work/shared/corpora"))
SEED = 20_240_611

Doc = dict[str, Any]

# ---------------------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------------------


def rng_for(name: str) -> random.Random:
    """A random generator seeded from ``SEED`` and a section name (sections are independent)."""
    return random.Random(f"{SEED}:{name}")


def read_jsonl(path: Path) -> list[Doc]:
    """Read a JSONL file that may be plain, gzip- or xz-compressed."""
    opener: Callable[..., Any] = open
    if path.suffix == ".gz":
        opener = gzip.open
    elif path.suffix == ".xz":
        opener = lzma.open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def dumps(record: Any) -> str:
    """One JSON line, UTF-8 kept readable, key order as given."""
    return json.dumps(record, ensure_ascii=False)


def jsonl_bytes(records: Iterable[Doc]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: no file name, mtime 0, level 9."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buffer.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_jsonl_gz(path: Path, records: Iterable[Doc]) -> int:
    """Write records as gzip'd JSONL; returns the record count."""
    records = list(records)
    write_bytes(path, gzip_bytes(jsonl_bytes(records)))
    return len(records)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def short_hash(*parts: str, n: int = 16) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:n]


_WS = re.compile(r"\s+")


def normalized_key(text: str) -> str:
    """Matching form used to check the injected duplicates: NFKC, casefold, whitespace collapsed.

    Same definition as ``winnow.core.text.dedup_key_text``.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def sample_sorted(rng: random.Random, items: list[Doc], k: int, key: str = "id") -> list[Doc]:
    """``k`` items chosen by ``rng`` from ``items`` (sorted by ``key`` first, so input order does not matter)."""
    ordered = sorted(items, key=lambda d: d[key])
    return rng.sample(ordered, min(k, len(ordered)))


def web_doc(doc_id: str, text: str, url: str | None, metadata: dict[str, Any]) -> Doc:
    """A sample document: ``id``, ``text``, ``url`` (only when known) and ``metadata``."""
    out: Doc = {"id": doc_id, "text": text}
    if url:
        out["url"] = url
    out["metadata"] = metadata
    return out


def decode_b64_html(doc: Doc) -> tuple[str, str] | None:
    """Decode a non-UTF-8 page with the charset its HTML declares; ``None`` when that fails."""
    raw = base64.b64decode(doc["html_b64"])
    match = re.search(rb"charset=[\"']?([\w-]+)", raw[:8192], re.IGNORECASE)
    if not match:
        return None
    charset = match.group(1).decode("ascii").lower()
    try:
        return raw.decode(charset), charset
    except (LookupError, UnicodeDecodeError):
        return None


class Corpora:
    """Lazy, cached access to the shared corpora folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, list[Doc]] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def load(self, rel: str) -> list[Doc]:
        if rel not in self._cache:
            self._cache[rel] = read_jsonl(self.root / rel)
        return self._cache[rel]


# ---------------------------------------------------------------------------------------
# winnow/data/sample/web.jsonl.gz
# ---------------------------------------------------------------------------------------

WO_PER_TOPIC = 80
WO_MAX_CHARS = 6000
DCLM_PER_LABEL = 125
LEE_DOCS = 150
LINGUA_LANGS = ["ar", "de", "es", "fr", "hi", "it", "ja", "ko", "nl", "pl", "pt", "ru", "sv", "tr", "vi", "zh"]
LINGUA_DOCS_PER_LANG = 5
UDHR_LANGS = ["arb", "cmn_hans", "deu", "fra", "hin", "rus", "spa"]
WEBTEXT_GROUPS_PER_SOURCE = 10
WEBTEXT_SHORT_LINES = 30
BOILERPLATE_SNIPPETS = 20
FOURCHAN_DOCS = 20
EXACT_COPIES = 30
NORMALIZED_COPIES = 20


def weborganizer_docs(c: Corpora) -> list[Doc]:
    """~2000 WebOrganizer/DCLM pages: both docs of every near-dup pair + a per-topic sample."""
    docs = c.load("weborganizer-dclm/docs.jsonl.gz")
    pairs = read_jsonl(c.path("weborganizer-dclm/near_duplicate_pairs.jsonl"))
    partners: dict[str, list[str]] = defaultdict(list)
    for pair in pairs:
        partners[pair["id_a"]].append(pair["id_b"])
        partners[pair["id_b"]].append(pair["id_a"])
    rng = rng_for("weborganizer")
    by_topic: dict[str, list[Doc]] = defaultdict(list)
    for doc in docs:
        if doc["id"] not in partners and len(doc["text"]) <= WO_MAX_CHARS:
            by_topic[doc["topic"]].append(doc)
    chosen = [d for d in docs if d["id"] in partners]
    for topic in sorted(by_topic):
        chosen.extend(sample_sorted(rng, by_topic[topic], WO_PER_TOPIC))
    out = []
    for doc in chosen:
        meta: dict[str, Any] = {"source_corpus": "weborganizer-dclm"}
        for key in ("topic", "topic_id", "topic_confidence", "format", "format_id", "format_confidence"):
            meta[key] = doc[key]
        if doc["id"] in partners:
            meta["sample_truth"] = {"near_duplicate_of": sorted(partners[doc["id"]])}
        out.append(web_doc(doc["id"], doc["text"], doc.get("url"), meta))
    return out


def dclm_quality_docs(c: Corpora) -> list[Doc]:
    """DCLM docs with human good/bad labels, balanced."""
    docs = c.load("dclm-human-quality/quality_labels.jsonl.gz")
    rng = rng_for("dclm-hq")
    out = []
    for label in (1, 0):
        for doc in sample_sorted(rng, [d for d in docs if d["label"] == label], DCLM_PER_LABEL):
            meta = {
                "source_corpus": "dclm-human-quality",
                "quality_label": doc["label"],
                "in_agreement_subset": doc["in_agreement_subset"],
            }
            out.append(web_doc(doc["id"], doc["text"], None, meta))
    return out


def c4_docs(c: Corpora) -> list[Doc]:
    """All OLMo C4 sample docs plus the Guardian C4 docs."""
    out = []
    for doc in c.load("olmo-test-fixtures/c4_sample.jsonl.gz"):
        meta = {"source_corpus": "olmo-test-fixtures/c4_sample", "timestamp": doc["timestamp"]}
        out.append(web_doc(doc["id"], doc["text"], doc["url"], meta))
    for doc in c.load("olmo-test-fixtures/paloma_c4_100_domains_guardian.jsonl.gz"):
        meta = {"source_corpus": "olmo-test-fixtures/paloma_c4_100_domains_guardian", "subdomain": doc["subdomain"]}
        out.append(web_doc(doc["id"], doc["text"], None, meta))
    return out


def ccnet_docs(c: Corpora) -> list[Doc]:
    """Dolma's CCNet 'head' docs with their perplexity metadata."""
    out = []
    for doc in c.load("dolma-test-fixtures/ccnet_en_head.jsonl.gz"):
        src = doc["metadata"]
        meta = {"source_corpus": "dolma-test-fixtures/ccnet_en_head"}
        for key in ("bucket", "perplexity", "language", "language_score", "cc_segment", "title", "source_domain"):
            meta[key] = src.get(key)
        out.append(web_doc(doc["id"], doc["text"], src.get("url"), meta))
    return out


def lee_docs(c: Corpora) -> list[Doc]:
    docs = sample_sorted(rng_for("lee"), c.load("lee-abc-news/docs.jsonl.gz"), LEE_DOCS)
    return [
        web_doc(d["id"], d["text"], None, {"source_corpus": "lee-abc-news", "source_file": d["source_file"]})
        for d in docs
    ]


def data_juicer_docs(c: Corpora) -> list[Doc]:
    """All 145 data-juicer demo docs (en/es/zh/fr, with their real exact and near duplicates)."""
    out = []
    for doc in c.load("data-juicer-demos/docs.jsonl.gz"):
        meta = {"source_corpus": "data-juicer-demos", "source_label": doc["source_label"]}
        out.append(web_doc(doc["id"], doc["text"], None, meta))
    return out


def plagiarism_docs(c: Corpora) -> list[Doc]:
    """All 100 plagiarism short-answer docs (graded near-duplicate clusters)."""
    out = []
    for doc in c.load("plagiarism-short-answers/docs.jsonl.gz"):
        meta = {"source_corpus": "plagiarism-short-answers"}
        for key in ("file", "task", "category", "source_file", "group", "person"):
            meta[key] = doc[key]
        out.append(web_doc("plag-" + doc["file"].removesuffix(".txt"), doc["text"], None, meta))
    return out


def lingua_paragraphs(c: Corpora) -> tuple[list[Doc], dict[str, list[Doc]]]:
    """Group lingua test sentences into paragraph docs of 5-10 sentences per language.

    Returns the docs and, per language, the sentences not used (for the langid fixture).
    """
    by_lang: dict[str, list[Doc]] = defaultdict(list)
    for doc in c.load("lingua-language-testdata/sentences.jsonl.gz"):
        by_lang[doc["lang"]].append(doc)
    out: list[Doc] = []
    unused: dict[str, list[Doc]] = {}
    for lang in sorted(by_lang):
        rng = rng_for(f"lingua:{lang}")
        sentences = sorted(by_lang[lang], key=lambda d: d["id"])
        rng.shuffle(sentences)
        pos = 0
        if lang in LINGUA_LANGS:
            joiner = "" if lang in ("ja", "zh") else " "
            for j in range(LINGUA_DOCS_PER_LANG):
                n = rng.randint(5, 10)
                group = sentences[pos : pos + n]
                pos += n
                meta = {
                    "source_corpus": "lingua-language-testdata",
                    "lang": lang,
                    "sentence_ids": [s["id"] for s in group],
                }
                text = joiner.join(s["text"].strip() for s in group)
                out.append(web_doc(f"lingua-{lang}-p{j:02d}", text, None, meta))
        unused[lang] = sentences[pos:]
    return out, unused


def udhr_docs(c: Corpora) -> list[Doc]:
    docs = {d["lang_code"]: d for d in c.load("nltk-corpora/udhr2.jsonl.gz")}
    return [
        web_doc(docs[code]["id"], docs[code]["text"], None, {"source_corpus": "nltk-corpora/udhr2", "lang_code": code})
        for code in UDHR_LANGS
    ]


def webtext_junk(c: Corpora) -> list[Doc]:
    """Informal/low-quality web text: runs of 5-15 consecutive lines, plus single short lines."""
    lines = c.load("nltk-corpora/webtext_lines.jsonl.gz")
    by_source: dict[str, list[Doc]] = defaultdict(list)
    for line in lines:
        by_source[line["source"]].append(line)
    out: list[Doc] = []
    used: set[str] = set()
    for source in sorted(by_source):
        rng = rng_for(f"webtext:{source}")
        rows = sorted(by_source[source], key=lambda d: d["line_no"])
        span = len(rows) // WEBTEXT_GROUPS_PER_SOURCE
        for g in range(WEBTEXT_GROUPS_PER_SOURCE):
            n = rng.randint(5, 15)
            start = g * span + rng.randrange(max(1, span - n))
            group = rows[start : start + n]
            used.update(r["id"] for r in group)
            meta = {
                "source_corpus": "nltk-corpora/webtext",
                "webtext_source": source,
                "line_start": group[0]["line_no"],
                "n_lines": len(group),
            }
            out.append(web_doc(f"webtext-{source}-g{g:02d}", "\n".join(r["text"] for r in group), None, meta))
    short = [d for d in lines if d["id"] not in used and 3 <= len(d["text"].strip()) <= 40]
    for line in sample_sorted(rng_for("webtext:short"), short, WEBTEXT_SHORT_LINES):
        meta = {"source_corpus": "nltk-corpora/webtext", "webtext_source": line["source"], "line_no": line["line_no"]}
        out.append(web_doc(line["id"], line["text"], None, meta))
    return out


def boilerplate_snippets(c: Corpora) -> list[Doc]:
    """Real boilerplate strings: trafilatura's gold ``must_not_contain`` snippets, one per doc."""
    snippets = []
    for page in c.load("trafilatura-eval/pages.jsonl.xz"):
        for i, snippet in enumerate(page.get("must_not_contain") or []):
            if len(snippet.strip()) >= 3:
                snippets.append({"id": f"{page['id']}-mnc{i}", "text": snippet, "page": page})
    out = []
    for s in sample_sorted(rng_for("boilerplate"), snippets, BOILERPLATE_SNIPPETS):
        url = s["page"]["url"] if s["page"]["url"].startswith("http") else None
        meta = {"source_corpus": "trafilatura-eval", "kind": "boilerplate_snippet", "page_id": s["page"]["id"]}
        out.append(web_doc(s["id"], s["text"], url, meta))
    return out


def fourchan_docs(c: Corpora) -> list[Doc]:
    """A few 4chan /pol/ threads: offensive, kept only as a real low-quality/toxic negative."""
    docs = [d for d in c.load("olmo-test-fixtures/paloma_4chan_TOXIC.jsonl.gz") if 200 <= len(d["text"]) <= 3000]
    out = []
    for doc in sample_sorted(rng_for("4chan"), docs, FOURCHAN_DOCS):
        meta = {
            "source_corpus": "olmo-test-fixtures/paloma_4chan_TOXIC",
            "thread": doc["thread"],
            "n_posts": doc["n_posts"],
            "content_warning": "offensive",
        }
        out.append(web_doc(doc["id"], doc["text"], None, meta))
    return out


def copy_id(doc_id: str, tag: str) -> str:
    """A new id in the same scheme as ``doc_id`` (its last ``-`` part replaced by a hash)."""
    head = doc_id.rsplit("-", 1)[0] if "-" in doc_id else doc_id
    return f"{head}-{short_hash(doc_id, tag)}"


def _variant(text: str, kind: str) -> str:
    if kind == "lowercase":
        return text.lower()
    if kind == "extra_whitespace":
        return "  " + text.replace(". ", ".  ").replace("\n", " \n\n") + "\n\n"
    if kind == "crlf_tabs":
        return text.replace("\n", "\r\n").replace(", ", ",\t") + "\r\n"
    if kind == "uppercase_spaces":
        return text.upper().replace(" ", "  ")
    raise ValueError(kind)


VARIANT_KINDS = ["lowercase", "extra_whitespace", "crlf_tabs", "uppercase_spaces"]


def injected_duplicates(pool: list[Doc]) -> list[Doc]:
    """Exact copies (new id, same text) and copies differing only in case/whitespace."""
    rng = rng_for("duplicates")
    candidates = sorted(pool, key=lambda d: d["id"])
    rng.shuffle(candidates)
    out: list[Doc] = []
    for doc in candidates[:EXACT_COPIES]:
        meta = dict(doc["metadata"])
        meta["sample_truth"] = {"exact_copy_of": doc["id"]}
        out.append(web_doc(copy_id(doc["id"], "exact"), doc["text"], doc.get("url"), meta))
    made = 0
    for doc in candidates[EXACT_COPIES:]:
        if made == NORMALIZED_COPIES:
            break
        kind = VARIANT_KINDS[made % len(VARIANT_KINDS)]
        text = _variant(doc["text"], kind)
        if text == doc["text"] or normalized_key(text) != normalized_key(doc["text"]):
            continue
        meta = dict(doc["metadata"])
        meta["sample_truth"] = {"normalized_copy_of": doc["id"], "variant": kind}
        out.append(web_doc(copy_id(doc["id"], "normalized"), text, doc.get("url"), meta))
        made += 1
    return out


def duplicate_stats(docs: list[Doc]) -> dict[str, int]:
    """How many docs an exact dedup removes, by raw text and by normalised text."""
    stats: dict[str, int] = {}
    for name, key in (("text", lambda t: t), ("normalized", normalized_key)):
        groups: dict[str, int] = defaultdict(int)
        for doc in docs:
            groups[key(doc["text"])] += 1
        stats[f"exact_dup_groups_by_{name}"] = sum(1 for n in groups.values() if n > 1)
        stats[f"docs_removed_by_{name}_dedup"] = sum(n - 1 for n in groups.values())
    return stats


def build_web(c: Corpora) -> tuple[list[Doc], dict[str, Any]]:
    """All web docs of the sample, shuffled deterministically, and per-part counts."""
    english = weborganizer_docs(c) + dclm_quality_docs(c) + c4_docs(c) + ccnet_docs(c) + lee_docs(c)
    wo_pairs = [d for d in english if "sample_truth" in d["metadata"]]
    pool = [d for d in english if "sample_truth" not in d["metadata"]]
    parts: dict[str, list[Doc]] = {
        "english": english,
        "data_juicer": data_juicer_docs(c),
        "plagiarism": plagiarism_docs(c),
        "lingua": lingua_paragraphs(c)[0],
        "udhr": udhr_docs(c),
        "webtext": webtext_junk(c),
        "boilerplate": boilerplate_snippets(c),
        "4chan": fourchan_docs(c),
        "injected_duplicates": injected_duplicates(pool),
    }
    docs = [d for part in parts.values() for d in part]
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate ids in the sample"
    docs.sort(key=lambda d: d["id"])
    rng_for("web-order").shuffle(docs)
    by_corpus: dict[str, int] = defaultdict(int)
    for d in docs:
        by_corpus[d["metadata"]["source_corpus"]] += 1
    stats = {
        "documents": len(docs),
        "by_source_corpus": dict(sorted(by_corpus.items())),
        "weborganizer_near_duplicate_docs": len(wo_pairs),
        "injected_exact_copies": EXACT_COPIES,
        "injected_normalized_copies": NORMALIZED_COPIES,
        **duplicate_stats(docs),
    }
    return docs, stats


# ---------------------------------------------------------------------------------------
# winnow/data/sample/pages.jsonl.gz
# ---------------------------------------------------------------------------------------

PAGE_MAX_CHARS = 60_000
AEB_PAGES = 25
TRAF_PAGES = 28
TRAF_DECODED_PAGES = 2


def aeb_page(doc: Doc) -> Doc:
    meta = {"source_corpus": "article-extraction-benchmark", "article_body": doc["article_body"]}
    return {"id": "aeb-" + doc["id"][:16], "url": doc["url"], "html": doc["html"], "metadata": meta}


def traf_page(doc: Doc, html: str, charset: str | None = None) -> Doc:
    meta: dict[str, Any] = {
        "source_corpus": "trafilatura-eval",
        "file": doc["file"],
        "must_contain": doc["must_contain"],
        "must_not_contain": doc["must_not_contain"],
    }
    if charset:
        meta["decoded_from_charset"] = charset
    url = doc["url"] if doc["url"].startswith("http") else None
    return {"id": doc["id"], "url": url, "html": html, "metadata": meta}


def build_pages(c: Corpora, exclude: set[str]) -> list[Doc]:
    """~60 HTML pages under 60k chars from three sources (``exclude``: ids kept for tests/data/html)."""
    aeb = [
        d
        for d in c.load("article-extraction-benchmark/pages.jsonl.gz")
        if d["html"] and len(d["html"]) <= PAGE_MAX_CHARS and "aeb-" + d["id"][:16] not in exclude
    ]
    pages = [aeb_page(d) for d in sample_sorted(rng_for("pages:aeb"), aeb, AEB_PAGES)]
    traf = c.load("trafilatura-eval/pages.jsonl.xz")
    utf8 = [d for d in traf if d["html"] and len(d["html"]) <= PAGE_MAX_CHARS and d["id"] not in exclude]
    pages += [traf_page(d, d["html"]) for d in sample_sorted(rng_for("pages:traf"), utf8, TRAF_PAGES)]
    decoded = []
    for doc in sorted((d for d in traf if d["html"] is None), key=lambda d: d["id"]):
        result = decode_b64_html(doc)
        if result and result[1] != "utf-8" and len(result[0]) <= PAGE_MAX_CHARS:
            decoded.append(traf_page(doc, *result))
    pages += sample_sorted(rng_for("pages:traf-b64"), decoded, TRAF_DECODED_PAGES)
    for doc in c.load("dclm-human-quality/enricher_test_html.jsonl.gz"):
        if len(doc["html"]) <= PAGE_MAX_CHARS:
            meta = {"source_corpus": "dclm-human-quality/enricher_test_html", "file": doc["file"], "kind": doc["kind"]}
            page_id = "dclm-html-" + doc["file"].removesuffix(".html")
            pages.append({"id": page_id, "url": None, "html": doc["html"], "metadata": meta})
    pages.sort(key=lambda d: d["id"])
    rng_for("pages-order").shuffle(pages)
    return pages


# ---------------------------------------------------------------------------------------
# Sample driver
# ---------------------------------------------------------------------------------------

SAMPLE_WARC = "dolma-test-fixtures/sample-0001.warc.gz"
TEST_WARC = "dolma-test-fixtures/sample-0000.warc.gz"


def build_sample(c: Corpora) -> dict[str, Any]:
    """Write web.jsonl.gz, pages.jsonl.gz, crawl.warc.gz and stats.json into the sample dir."""
    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    docs, stats = build_web(c)
    write_jsonl_gz(SAMPLE_DIR / "web.jsonl.gz", docs)
    pages = build_pages(c, exclude={d["id"] for d in html_fixture_pages(c)})
    write_jsonl_gz(SAMPLE_DIR / "pages.jsonl.gz", pages)
    page_counts: dict[str, int] = defaultdict(int)
    for page in pages:
        page_counts[page["metadata"]["source_corpus"]] += 1
    copy_file(c.path(SAMPLE_WARC), SAMPLE_DIR / "crawl.warc.gz")
    summary = {
        "web.jsonl.gz": stats,
        "pages.jsonl.gz": {"documents": len(pages), "by_source_corpus": dict(sorted(page_counts.items()))},
        "crawl.warc.gz": {"copied_from": SAMPLE_WARC, **warc_counts(SAMPLE_DIR / "crawl.warc.gz")},
    }
    write_json(SAMPLE_DIR / "stats.json", summary)
    return summary


def warc_counts(path: Path) -> dict[str, Any]:
    from warcio.archiveiterator import ArchiveIterator

    counts: dict[str, int] = defaultdict(int)
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle):
            counts[record.rec_type] += 1
    return {"records": sum(counts.values()), "by_type": dict(sorted(counts.items()))}


# ---------------------------------------------------------------------------------------
# tests/data/readers
# ---------------------------------------------------------------------------------------

READER_DOCS = 20
WET_RECORDS = 8


def reader_docs(c: Corpora) -> list[Doc]:
    """20 C4 docs with id, text, url, timestamp (field order fixed)."""
    docs = sample_sorted(rng_for("readers"), c.load("olmo-test-fixtures/c4_sample.jsonl.gz"), READER_DOCS)
    return [{"id": d["id"], "text": d["text"], "url": d["url"], "timestamp": d["timestamp"]} for d in docs]


def build_readers(c: Corpora) -> dict[str, Any]:
    out = TESTS_DIR / "readers"
    docs = reader_docs(c)
    raw = jsonl_bytes(docs)
    write_bytes(out / "sample.jsonl", raw)
    write_bytes(out / "sample.jsonl.gz", gzip_bytes(raw))
    write_bytes(out / "sample.jsonl.zst", zstandard.ZstdCompressor(level=19).compress(raw))
    table = pa.table(
        {
            "doc_id": [d["id"] for d in docs],
            "content": [d["text"] for d in docs],
            "link": [d["url"] for d in docs],
            "timestamp": [d["timestamp"] for d in docs],
        }
    )
    pq.write_table(table, out / "sample.parquet", compression="zstd")
    copy_file(c.path(TEST_WARC), out / "sample.warc.gz")
    wet = build_wet(out / "sample.warc.gz", out / "sample.warc.wet.gz")
    return {"docs": len(docs), "warc": warc_counts(out / "sample.warc.gz"), "wet_conversion_records": wet}


def build_wet(warc_path: Path, wet_path: Path) -> int:
    """A WET-style file: plain text extracted (resiliparse) from the first response records.

    Mirrors Common Crawl's WET layout: one ``warcinfo`` record, then one ``conversion`` record
    per HTML response with ``WARC-Refers-To`` pointing at the response's record id.
    """
    from importlib.metadata import version

    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from warcio.archiveiterator import ArchiveIterator
    from warcio.warcwriter import WARCWriter

    conversions: list[tuple[dict[str, str], bytes]] = []
    first_date = ""
    with open(warc_path, "rb") as handle:
        for record in ArchiveIterator(handle):
            first_date = first_date or record.rec_headers.get_header("WARC-Date")
            if record.rec_type != "response" or len(conversions) >= WET_RECORDS:
                continue
            body = record.content_stream().read()
            text = extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=False)
            record_id = record.rec_headers.get_header("WARC-Record-ID")
            headers = {
                "WARC-Target-URI": record.rec_headers.get_header("WARC-Target-URI"),
                "WARC-Date": record.rec_headers.get_header("WARC-Date"),
                "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, record_id + '#wet')}>",
                "WARC-Refers-To": record_id,
            }
            conversions.append((headers, text.encode("utf-8")))
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    info = (
        f"software: winnow scripts/build_sample.py (resiliparse {version('resiliparse')} extract_plain_text)\r\n"
        f"description: WET-style text of the first {len(conversions)} responses of {warc_path.name}\r\n"
        "format: WARC File Format 1.0\r\n"
    ).encode()
    warcinfo_headers = {
        "WARC-Date": first_date,
        "WARC-Filename": wet_path.name,
        "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, wet_path.name + '#warcinfo')}>",
    }
    writer.write_record(
        writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(info),
            length=len(info),
            warc_content_type="application/warc-fields",
            warc_headers_dict=warcinfo_headers,
        )
    )
    for headers, payload in conversions:
        uri = headers.pop("WARC-Target-URI")
        writer.write_record(
            writer.create_warc_record(
                uri,
                "conversion",
                payload=io.BytesIO(payload),
                length=len(payload),
                warc_content_type="text/plain",
                warc_headers_dict=headers,
            )
        )
    write_bytes(wet_path, buffer.getvalue())
    return len(conversions)


# ---------------------------------------------------------------------------------------
# tests/data/bad_input
# ---------------------------------------------------------------------------------------

BAD_VALID_RECORDS = 20
TRUNCATED_LINES = 30


def build_bad_input(c: Corpora) -> dict[str, Any]:
    """The bad-input corpus and its MANIFEST.json (exact expected valid/rejected counts)."""
    out = TESTS_DIR / "bad_input"
    lee = sorted(c.load("lee-abc-news/docs.jsonl.gz"), key=lambda d: d["id"])
    rng = rng_for("bad-input")
    picked = rng.sample(lee, BAD_VALID_RECORDS + TRUNCATED_LINES + 2)
    valid = [{"id": d["id"], "text": d["text"]} for d in picked[:BAD_VALID_RECORDS]]
    valid[3]["url"] = "http://www.abc.net.au/news/"  # one record with an extra (known) field
    truncated_src = picked[BAD_VALID_RECORDS : BAD_VALID_RECORDS + TRUNCATED_LINES]
    spare = picked[-2:]

    latin1 = next(
        s
        for p in sorted(c.load("trafilatura-eval/pages.jsonl.xz"), key=lambda d: d["id"])
        if p["html"] is None
        for s in p["must_contain"]
        if any(ord(ch) > 127 for ch in s) and all(ord(ch) < 256 for ch in s)
    )
    spare_text = spare[0]["text"]
    bad: list[tuple[str, bytes]] = [
        ("malformed_json_truncated_object", dumps({"id": spare[0]["id"], "text": spare_text})[:70].encode()),
        ("malformed_json_single_quotes", repr({"id": spare[1]["id"], "text": spare[1]["text"][:80]}).encode()),
        (
            "malformed_json_trailing_comma",
            dumps({"id": "bad-trailing-comma", "text": spare_text[:60]})[:-1].encode() + b",}",
        ),
        ("invalid_utf8", dumps({"id": "bad-latin1", "text": latin1}).encode("latin-1")),
        ("json_array", dumps(["bad-array", spare_text[:40]]).encode()),
        ("json_number", b"42"),
        ("json_string", dumps(spare_text[:60]).encode()),
        ("missing_text_field", dumps({"id": "bad-no-text", "url": "http://www.abc.net.au/news/"}).encode()),
        ("text_not_a_string", dumps({"id": "bad-text-number", "text": 12345}).encode()),
        ("text_null", dumps({"id": "bad-text-null", "text": None}).encode()),
        ("text_empty", dumps({"id": "bad-text-empty", "text": ""}).encode()),
    ]
    # Interleave: a bad line after every ~2 valid records; the file ends on a valid record
    # without a trailing newline, and one valid line uses a Windows \r\n ending.
    lines: list[tuple[str, str | None, bytes]] = []
    bad_iter = iter(bad)
    for i, doc in enumerate(valid[:-1]):
        ending = b"\r\n" if i == 5 else b"\n"
        lines.append(("valid", doc["id"], dumps(doc).encode() + ending))
        if i % 2 == 1:
            kind, raw = next(bad_iter, ("", b""))
            if kind:
                lines.append((kind, None, raw + b"\n"))
    lines.extend((kind, None, raw + b"\n") for kind, raw in bad_iter)
    lines.append(("valid", valid[-1]["id"], dumps(valid[-1]).encode()))
    write_bytes(out / "mixed.jsonl", b"".join(raw for _, _, raw in lines))
    mixed_manifest = {
        "valid": sum(1 for k, _, _ in lines if k == "valid"),
        "rejected": sum(1 for k, _, _ in lines if k != "valid"),
        "valid_ids": [i for k, i, _ in lines if k == "valid"],
        "lines": [
            {"line": n + 1, "expect": "valid" if k == "valid" else "rejected", "kind": k}
            for n, (k, _, _) in enumerate(lines)
        ],
    }

    # binary.jsonl: the first 4 KiB of a real xz stream (NUL bytes, invalid UTF-8).
    binary = c.path("trafilatura-eval/pages.jsonl.xz").read_bytes()[:4096]
    write_bytes(out / "binary.jsonl", binary)
    binary_manifest = {
        "valid": 0,
        "rejected": 1,
        "rule": "a file that is not text (NUL bytes / not UTF-8 in its first block) is ONE rejected record",
        "newline_separated_chunks": binary.count(b"\n") + (0 if binary.endswith(b"\n") else 1),
    }

    # truncated.jsonl.gz: a real gzip of 30 valid lines, cut mid-stream (mid-line).
    full = jsonl_bytes({"id": d["id"], "text": d["text"]} for d in truncated_src)
    compressed = gzip_bytes(full)
    cut = int(len(compressed) * 0.6)
    prefix = zlib.decompressobj(wbits=31).decompress(compressed[:cut])
    while prefix.endswith(b"\n"):  # make sure the cut falls inside a line
        cut += 1
        prefix = zlib.decompressobj(wbits=31).decompress(compressed[:cut])
    write_bytes(out / "truncated.jsonl.gz", compressed[:cut])
    complete = prefix.count(b"\n")
    assert _gzip_lines_before_error(out / "truncated.jsonl.gz") == complete
    truncated_manifest = {
        "valid": complete,
        "rejected": 1,
        "valid_ids": [d["id"] for d in truncated_src[:complete]],
        "lines_before_truncation": TRUNCATED_LINES,
        "compressed_bytes_kept": cut,
        "compressed_bytes_original": len(compressed),
        "rule": "complete lines decoded before the cut are valid; the partial last line and the "
        "truncation error together are ONE rejected record",
    }

    write_bytes(out / "empty.jsonl", b"")
    files = {
        "mixed.jsonl": mixed_manifest,
        "binary.jsonl": binary_manifest,
        "truncated.jsonl.gz": truncated_manifest,
        "empty.jsonl": {"valid": 0, "rejected": 0},
    }
    manifest = {
        "description": "Expected outcome of reading every file in tests/data/bad_input/ (glob *.jsonl*).",
        "files": files,
        "totals": {
            "valid": sum(f["valid"] for f in files.values()),
            "rejected": sum(f["rejected"] for f in files.values()),
        },
        "generated_at_test_time": {
            "huge_record": "one valid record whose text is ~10 MB (real text repeated); valid with the "
            "default max_record_bytes (64 MiB), one rejected record when max_record_bytes is below its size",
        },
    }
    write_json(out / "MANIFEST.json", manifest)
    return manifest["totals"]


def _gzip_lines_before_error(path: Path) -> int:
    """Complete lines Python's gzip yields before it raises on the truncated stream."""
    n = 0
    try:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    n += 1
    except EOFError:
        return n
    raise AssertionError(f"{path} is not truncated")


# ---------------------------------------------------------------------------------------
# tests/data/dedup, langid, html, text
# ---------------------------------------------------------------------------------------

LANGID_LANGS = ["ar", "de", "en", "es", "fr", "it", "ja", "pt", "ru", "zh"]
LANGID_PER_LANG = 20
HTML_AEB = 5
HTML_TRAF = 5
HTML_MAX_CHARS = 40_000


def build_dedup(c: Corpora) -> dict[str, int]:
    out = TESTS_DIR / "dedup"
    copy_file(c.path("plagiarism-short-answers/docs.jsonl.gz"), out / "plagiarism_docs.jsonl.gz")
    copy_file(c.path("data-juicer-demos/docs.jsonl.gz"), out / "data_juicer_docs.jsonl.gz")
    copy_file(c.path("weborganizer-dclm/near_duplicate_pairs.jsonl"), out / "near_duplicate_pairs.jsonl")
    pairs = read_jsonl(c.path("weborganizer-dclm/near_duplicate_pairs.jsonl"))
    wanted = {p["id_a"] for p in pairs} | {p["id_b"] for p in pairs}
    docs = sorted((d for d in c.load("weborganizer-dclm/docs.jsonl.gz") if d["id"] in wanted), key=lambda d: d["id"])
    assert len(docs) == len(wanted)
    write_jsonl_gz(out / "pairs_docs.jsonl.gz", docs)
    return {"pairs": len(pairs), "pairs_docs": len(docs)}


def build_langid(c: Corpora) -> int:
    _, unused = lingua_paragraphs(c)
    rows = []
    for lang in LANGID_LANGS:
        for s in sorted(unused[lang][:LANGID_PER_LANG], key=lambda d: d["id"]):
            rows.append({"id": s["id"], "lang": lang, "text": s["text"]})
    write_bytes(TESTS_DIR / "langid" / "sentences.jsonl", jsonl_bytes(rows))
    return len(rows)


def html_fixture_pages(c: Corpora) -> list[Doc]:
    """~10 small pages with gold: 5 article-extraction-benchmark + 5 trafilatura-eval."""
    aeb = [
        d
        for d in c.load("article-extraction-benchmark/pages.jsonl.gz")
        if d["html"] and len(d["html"]) <= HTML_MAX_CHARS
    ]
    traf = [
        d
        for d in c.load("trafilatura-eval/pages.jsonl.xz")
        if d["html"] and len(d["html"]) <= HTML_MAX_CHARS and d["url"].startswith("http") and d["must_contain"]
    ]
    pages = []
    for d in sample_sorted(rng_for("html:aeb"), aeb, HTML_AEB):
        pages.append(
            {
                "id": "aeb-" + d["id"][:16],
                "url": d["url"],
                "html": d["html"],
                "article_body": d["article_body"],
                "source_corpus": "article-extraction-benchmark",
            }
        )
    for d in sample_sorted(rng_for("html:traf"), traf, HTML_TRAF):
        pages.append(
            {
                "id": d["id"],
                "url": d["url"],
                "html": d["html"],
                "must_contain": d["must_contain"],
                "must_not_contain": d["must_not_contain"],
                "source_corpus": "trafilatura-eval",
            }
        )
    return pages


def build_html(c: Corpora) -> int:
    return write_jsonl_gz(TESTS_DIR / "html" / "pages.jsonl.gz", html_fixture_pages(c))


def paragraphs(text: str, min_chars: int) -> Iterator[str]:
    for para in re.split(r"\n\s*\n|\n", text):
        para = para.strip()
        if len(para) >= min_chars:
            yield para


def build_text(c: Corpora) -> dict[str, int]:
    """~3000 English lines/paragraphs with a ``source`` label, plus the DCLM quality labels."""
    rows: list[Doc] = []
    for d in sorted(c.load("lee-abc-news/docs.jsonl.gz"), key=lambda d: d["id"]):
        rows.append({"id": d["id"], "source": "lee-abc-news", "text": d["text"].strip()})
    brown = []
    for d in sorted(c.load("nltk-corpora/brown.jsonl.gz"), key=lambda d: d["id"]):
        for i, para in enumerate(paragraphs(d["text"], 80)):
            brown.append({"id": f"{d['id']}-p{i}", "source": "brown", "genre": d["genre"], "text": para})
    rows += rng_for("text:brown").sample(brown, 900)
    web = [
        {"id": d["id"], "source": "webtext", "webtext_source": d["source"], "text": d["text"]}
        for d in c.load("nltk-corpora/webtext_lines.jsonl.gz")
        if len(d["text"]) >= 30
    ]
    rows += sample_sorted(rng_for("text:webtext"), web, 850)
    wo = []
    for d in sample_sorted(rng_for("text:wo-docs"), c.load("weborganizer-dclm/docs.jsonl.gz"), 600):
        for i, para in enumerate(paragraphs(d["text"], 150)):
            wo.append(
                {
                    "id": f"{d['id']}-p{i}",
                    "source": "weborganizer-dclm",
                    "topic": d["topic"],
                    "format": d["format"],
                    "text": para,
                }
            )
    rows += rng_for("text:wo").sample(wo, 900)
    rows.sort(key=lambda d: d["id"])
    rng_for("text:order").shuffle(rows)
    write_jsonl_gz(TESTS_DIR / "text" / "english.jsonl.gz", rows)
    copy_file(c.path("dclm-human-quality/quality_labels.jsonl.gz"), TESTS_DIR / "text" / "quality_labels.jsonl.gz")
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["source"]] += 1
    return {"english": len(rows), **dict(sorted(counts.items()))}


def build_tests(c: Corpora) -> dict[str, Any]:
    return {
        "readers": build_readers(c),
        "bad_input": build_bad_input(c),
        "dedup": build_dedup(c),
        "langid": build_langid(c),
        "html": build_html(c),
        "text": build_text(c),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA, help="the shared corpora folder")
    parser.add_argument("--only", choices=["sample", "tests"], help="build just one of the two outputs")
    args = parser.parse_args()
    corpora = Corpora(args.corpora)
    results: dict[str, Any] = {}
    if args.only in (None, "sample"):
        results["sample"] = build_sample(corpora)
    if args.only in (None, "tests"):
        results["tests"] = build_tests(corpora)
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
