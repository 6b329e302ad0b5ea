"""Train the bundled PreSelect classifier (local mode) from the shared corpora.

    python scripts/train_preselect.py                      # → winnow/data/models/preselect/
    python scripts/train_preselect.py --out /tmp/ps --corpora /path/to/corpora
    python scripts/train_preselect.py --only test-data     # rebuild tests/data/preselect/

Reference domain (what the LM ladder learns and is benchmarked on): English Wikipedia articles
(wikitext reduced to plain text), ABC news, and the NLTK inaugural and State of the Union
addresses. Pool (what gets scored, labelled and classified): the *fit* split of the fixed
fit / choose / report split (``winnow.core.evaluation.three_way_split``, by URL or id) of the
DCLM web pages (weborganizer-dclm, as the default pipeline's score stage sees them: normalised,
English, C4/Gopher/FineWeb-filtered; a page the filters remove keeps its raw text, it is still a
pool document) and of the 499 dclm-human-quality documents, plus informal web lines (nltk webtext,
grouped into short documents) and 4chan /pol/ threads. No label of any of them is read for
training: PreSelect's labels come from the ladder.

The ladder is chosen among ``CANDIDATE_LADDERS`` on the *choose* split (ROC-AUC of the classifier
against WebOrganizer's format contrast and against the human good/bad labels, averaged);
``bench/preselect_eval.py`` reports the shipped model on the *report* split. Everything is
seeded; the same corpora give the same classifier bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._quality_data import HIGH_FORMATS, LOW_FORMATS, human_documents, web_pages  # noqa: E402
from winnow.core.evaluation import CHOOSE, FIT  # noqa: E402
from winnow.core.hashing import uniform  # noqa: E402
from winnow.stages.score.preselect import (  # noqa: E402
    QUANTIZE_CUTOFF,
    QUANTIZE_DSUB,
    choose_examples,
    concordant_pairs,
    parse_ladder,
    positive_probability,
    roc_auc,
    train_fasttext,
    train_ladder,
    train_local,
    write_label_file,
)

DEFAULT_CORPORA = Path(os.environ.get("WINNOW_CORPORA", "/work/shared/corpora"))
MODEL_DIR = ROOT / "winnow" / "data" / "models" / "preselect"
TEST_DIR = ROOT / "tests" / "data" / "preselect"
SEED = 0
# Web lines are one sentence each; grouped in runs of this many consecutive lines of one source
# they become documents of a few hundred characters, closer to the size of the other pool docs.
WEBTEXT_GROUP = 8
# Ladders compared on the choose split, each listed from the weakest expected model to the strongest
# (share of the reference text @ character n-gram order). "nested" is the earlier bundled ladder;
# the others add lower-order models on all the text: more pairs, so S = 1 is rarer and the
# positives are sharper.
CANDIDATE_LADDERS = {
    "nested": "0.25@5,0.5@5,0.75@5,1.0@5",
    "orders+shares": "1.0@3,1.0@4,0.25@5,0.5@5,1.0@5",
    "orders+shares+6": "1.0@3,1.0@4,0.25@5,0.5@5,1.0@5,1.0@6",
}


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


def chatter_docs(corpora: Path) -> list[tuple[str, str]]:
    """(id, text) of informal web text: grouped webtext lines and 4chan threads."""
    docs = []
    groups: dict[str, list[str]] = {}
    for row in _jsonl(corpora / "nltk-corpora" / "webtext_lines.jsonl.gz"):
        groups.setdefault(row["source"], []).append(row["text"])
    for source, lines in sorted(groups.items()):
        for start in range(0, len(lines), WEBTEXT_GROUP):
            docs.append((f"webtext-{source}-{start}", "\n".join(lines[start : start + WEBTEXT_GROUP])))
    for row in _jsonl(corpora / "olmo-test-fixtures" / "paloma_4chan_TOXIC.jsonl.gz"):
        docs.append((f"4chan-{row['id']}", row["text"]))
    return [(doc_id, text) for doc_id, text in docs if text and text.strip()]


def pool_docs(corpora: Path) -> list[tuple[str, str]]:
    """(id, text) of the pool: fit-split DCLM web pages and human-quality documents, plus chatter."""
    docs = [(f"dclm-{p['id']}", p["view"] or p["text"]) for p in web_pages(corpora) if p["split"] == FIT]
    docs += [(f"hq-{r['id']}", r["text"]) for r in human_documents(corpora) if r["split"] == FIT]
    return [(i, t) for i, t in docs if t and t.strip()] + chatter_docs(corpora)


def choose_set(corpora: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Choose-split texts and targets: the format contrast (pipeline view) and the human labels."""
    pages = [
        p
        for p in web_pages(corpora)
        if p["split"] == CHOOSE and p["view"] and p["format"] in HIGH_FORMATS + LOW_FORMATS
    ]
    human = [r for r in human_documents(corpora) if r["split"] == CHOOSE]
    return (
        [p["view"] for p in pages],
        np.array([p["format"] in HIGH_FORMATS for p in pages], dtype=int),
        [r["text"] for r in human],
        np.array([r["label"] for r in human], dtype=int),
    )


def choose_ladder(reference, pool, corpora: Path, max_chars: int, log: logging.Logger):
    """Train every rung once, compare the candidate ladders on the choose split, return the winner."""
    specs = {name: parse_ladder(spec) for name, spec in CANDIDATE_LADDERS.items()}
    union = sorted({rung for rungs in specs.values() for rung in rungs}, key=lambda r: (r[1], r[0]))
    full = train_ladder(
        [i for i, _ in reference], [t for _, t in reference], seed=SEED, max_chars=max_chars, rungs=union
    )
    pool_ids, pool_texts = [i for i, _ in pool], [t for _, t in pool]
    losses = full.losses(pool_texts)
    web_texts, web_y, human_texts, human_y = choose_set(corpora)
    results = {}
    for name, rungs in specs.items():
        picks = [union.index(r) for r in rungs]
        ladder = full.subset(picks)
        concordant = concordant_pairs(ladder.benchmark, losses[:, picks])
        positives, negatives = choose_examples(pool_ids, concordant, len(picks), SEED)
        chosen = np.concatenate([positives, negatives])
        labels = [1] * len(positives) + [0] * len(negatives)
        with tempfile.TemporaryDirectory(prefix="winnow-preselect-choose-") as tmp:
            path = Path(tmp) / "train.txt"
            write_label_file(path, [pool_ids[i] for i in chosen], [pool_texts[i] for i in chosen], labels, SEED)
            model = train_fasttext(path, seed=SEED)
        web = roc_auc(web_y, positive_probability(model, web_texts))
        human = roc_auc(human_y, positive_probability(model, human_texts))
        results[name] = {
            "ladder": CANDIDATE_LADDERS[name],
            "choose_format_auc": web,
            "choose_human_auc": human,
            "mean": (web + human) / 2,
            "positives": len(positives),
        }
        log.info("candidate %s: choose format AUC %.4f, human AUC %.4f", name, web, human)
    best = max(results, key=lambda name: results[name]["mean"])
    picks = [union.index(r) for r in specs[best]]
    return best, results, full.subset(picks), losses[:, picks]


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
    pool = chatter_docs(corpora)
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
    parser.add_argument("--max-chars", type=int, default=8000, help="BPC on the first N characters of a document.")
    parser.add_argument("--cutoff", type=int, default=QUANTIZE_CUTOFF, help="Words + n-grams kept when quantizing.")
    parser.add_argument("--dsub", type=int, default=QUANTIZE_DSUB, help="Dimensions per product-quantized sub-vector.")
    parser.add_argument("--keep-bin", action="store_true", help="Also write the ~800 MB unquantized .bin.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("train_preselect")
    if args.only == "test-data":
        build_test_data(args.corpora)
        return 0
    reference, pool = reference_docs(args.corpora), pool_docs(args.corpora)
    best, candidates, ladder, losses = choose_ladder(reference, pool, args.corpora, args.max_chars, log)
    report = train_local(
        reference,
        pool,
        args.out,
        max_chars=args.max_chars,
        quantize_cutoff=args.cutoff,
        quantize_dsub=args.dsub,
        keep_bin=args.keep_bin,
        seed=SEED,
        ladder=ladder,
        pool_losses=losses,
    )
    # The choice among ladders and its choose-split figures go into the report next to the recipe.
    saved = json.loads((args.out / "report.json").read_text(encoding="utf-8"))
    saved["ladder_choice"] = {"chosen": best, "candidates": candidates, "split": "choose"}
    (args.out / "report.json").write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = [
        "",
        "## Ladder choice (choose split)",
        "",
        "| ladder | rungs | format AUC | human AUC | mean |",
        "|---|---|---|---|---|",
    ]
    for name, row in candidates.items():
        mark = " (chosen)" if name == best else ""
        lines.append(
            f"| {name}{mark} | {row['ladder']} | {row['choose_format_auc']:.4f} "
            f"| {row['choose_human_auc']:.4f} | {row['mean']:.4f} |"
        )
    with open(args.out / "report.md", "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(report.to_markdown() + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
