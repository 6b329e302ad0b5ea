"""Train the bundled PreSelect classifier (local mode) from the shared corpora.

    python scripts/train_preselect.py                      # → winnow/data/models/preselect/
    python scripts/train_preselect.py --out /tmp/ps --corpora /path/to/corpora
    python scripts/train_preselect.py --only test-data     # rebuild tests/data/preselect/

Reference domain (what the LM ladder learns and is benchmarked on): English Wikipedia articles
(wikitext reduced to plain text), ABC news, and the NLTK inaugural and State of the Union
addresses. Pool (what gets scored, labelled and classified): DCLM web pages (weborganizer-dclm),
informal web lines (nltk webtext, grouped into short documents) and 4chan /pol/ threads.
dclm-human-quality is never used here: it is the evaluation set of bench/preselect_eval.py.
Everything is seeded; the same corpora give the same classifier bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.hashing import uniform  # noqa: E402
from winnow.stages.score.preselect import DEFAULT_LADDER, train_local  # noqa: E402

DEFAULT_CORPORA = Path(os.environ.get("WINNOW_CORPORA", "/work/shared/corpora"))
MODEL_DIR = ROOT / "winnow" / "data" / "models" / "preselect"
TEST_DIR = ROOT / "tests" / "data" / "preselect"
SEED = 0
# Web lines are one sentence each; grouped in runs of this many consecutive lines of one source
# they become documents of a few hundred characters, closer to the size of the other pool docs.
WEBTEXT_GROUP = 8


# --- wikitext → plain text ---------------------------------------------------------------------

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*?/>|<ref[^>]*?>.*?</ref>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE_LINK = re.compile(
    r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I
)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXTERNAL = re.compile(r"\[https?://\S+\s*([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_QUOTES = re.compile(r"'{2,}")
_LIST = re.compile(r"^[*#:;]+\s*", re.M)


def wikitext_to_text(wikitext: str) -> str:
    """A plain-text approximation of an article: markup, references, templates and tables removed."""
    text = _COMMENT.sub("", wikitext)
    text = _REF.sub("", text)
    text = _TABLE.sub("", text)
    for _ in range(6):  # nested templates, innermost first
        text, n = _TEMPLATE.subn("", text)
        if not n:
            break
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXTERNAL.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = _QUOTES.sub("", text)
    text = _LIST.sub("", text)
    text = text.replace("&nbsp;", " ").replace("&ndash;", "–").replace("&mdash;", "—")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    paragraphs = [line for line in lines if len(line) > 40 and not line.startswith(("|", "!", "{", "}"))]
    return "\n".join(paragraphs)


def _jsonl(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def reference_docs(corpora: Path) -> list[tuple[str, str]]:
    """(id, text) of the reference domain. Wikipedia articles are split at ~4,000 characters."""
    docs: list[tuple[str, str]] = []
    for row in _jsonl(corpora / "wikipedia-dump-fragments" / "enwiki_pages.jsonl.gz"):
        if row.get("redirect_to") or not row.get("wikitext"):
            continue
        text = wikitext_to_text(row["wikitext"])
        part, size, index = [], 0, 0
        for paragraph in text.split("\n"):
            part.append(paragraph)
            size += len(paragraph)
            if size >= 4000:
                docs.append((f"wiki-{row['id']}-{index}", "\n".join(part)))
                part, size, index = [], 0, index + 1
        if size >= 200:
            docs.append((f"wiki-{row['id']}-{index}", "\n".join(part)))
    for prefix, name in (
        ("news", "lee-abc-news/docs.jsonl.gz"),
        ("inaugural", "nltk-corpora/inaugural.jsonl.gz"),
        ("sotu", "nltk-corpora/state_union.jsonl.gz"),
    ):
        for row in _jsonl(corpora / name):
            if row.get("text"):
                docs.append((f"{prefix}-{row['id']}", row["text"]))
    return docs


def pool_docs(corpora: Path) -> list[tuple[str, str]]:
    """(id, text) of the pool: DCLM web pages, grouped webtext lines, 4chan threads."""
    docs = [(f"dclm-{row['id']}", row["text"]) for row in _jsonl(corpora / "weborganizer-dclm" / "docs.jsonl.gz")]
    groups: dict[str, list[str]] = {}
    for row in _jsonl(corpora / "nltk-corpora" / "webtext_lines.jsonl.gz"):
        groups.setdefault(row["source"], []).append(row["text"])
    for source, lines in sorted(groups.items()):
        for start in range(0, len(lines), WEBTEXT_GROUP):
            docs.append((f"webtext-{source}-{start}", "\n".join(lines[start : start + WEBTEXT_GROUP])))
    for row in _jsonl(corpora / "olmo-test-fixtures" / "paloma_4chan_TOXIC.jsonl.gz"):
        docs.append((f"4chan-{row['id']}", row["text"]))
    return [(doc_id, text) for doc_id, text in docs if text and text.strip()]


# --- tests/data/preselect ----------------------------------------------------------------------


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode())


def build_test_data(corpora: Path) -> None:
    """Small, seeded copies for the fidelity tests (tests read only tests/data)."""
    ref = reference_docs(corpora)
    by_source: dict[str, list[tuple[str, str]]] = {}
    for doc_id, text in ref:
        by_source.setdefault(doc_id.split("-")[0], []).append((doc_id, text))
    ranked = {k: sorted(v, key=lambda d: uniform(d[0], "tests", SEED)) for k, v in by_source.items()}
    # Reference: ~0.8M characters of Wikipedia, news and speeches; in-domain held-out docs apart.
    reference = ranked["wiki"][:80] + ranked["news"][:120] + ranked["sotu"][:8] + ranked["inaugural"][:10]
    in_domain = ranked["wiki"][80:120] + ranked["news"][120:170]
    pool = pool_docs(corpora)
    pool_ranked = sorted(pool, key=lambda d: uniform(d[0], "tests", SEED))
    webtext = [d for d in pool_ranked if d[0].startswith("webtext-")][:150]
    chan = [d for d in pool_ranked if d[0].startswith("4chan-")][:40]
    chan = [(doc_id, text[:3000]) for doc_id, text in chan]
    _write_jsonl_gz(TEST_DIR / "reference.jsonl.gz", [{"id": i, "text": t} for i, t in reference])
    rows = [{"id": i, "text": t, "domain": "reference"} for i, t in in_domain]
    rows += [{"id": i, "text": t, "domain": "web"} for i, t in webtext + chan]
    _write_jsonl_gz(TEST_DIR / "pool.jsonl.gz", rows)
    print(f"wrote {TEST_DIR}: {len(reference)} reference docs, {len(rows)} pool docs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--only", choices=["model", "test-data"], default="model")
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--ladder", default=",".join(str(f) for f in DEFAULT_LADDER))
    parser.add_argument("--max-chars", type=int, default=8000, help="BPC on the first N characters of a document.")
    parser.add_argument("--cutoff", type=int, default=40_000, help="Words + n-grams kept when quantizing.")
    parser.add_argument("--keep-bin", action="store_true", help="Also write the ~800 MB unquantized .bin.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.only == "test-data":
        build_test_data(args.corpora)
        return 0
    reference, pool = reference_docs(args.corpora), pool_docs(args.corpora)
    report = train_local(
        reference,
        pool,
        args.out,
        fractions=[float(f) for f in args.ladder.split(",")],
        order=args.order,
        max_chars=args.max_chars,
        quantize_cutoff=args.cutoff,
        keep_bin=args.keep_bin,
        seed=SEED,
    )
    print(report.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
