"""Rebuild the bundled local QuRater (``winnow/data/models/qurating/``) from the shared corpora.

No QuRating judgments exist offline, so this is the ``derived-pairs`` bootstrap of
docs/qurating.md: per criterion, documents that are clearly high on it are paired against
documents clearly low on it, and the Bradley–Terry head learns from those pairs. Two kinds of
pointwise labels feed the pairs:

* **sources** (``PLAN``): whole corpora that are clearly high or low on a criterion. The pairings
  vary the *kind* of difference per criterion (e.g. polished fiction is high on writing style but
  low on facts and expertise), so the four heads do not collapse into one "formal vs informal"
  axis. Web pages (English HTML of trafilatura-eval and article-extraction-benchmark) give two
  groups: their boilerplate (menus, teasers, share and ad lines) is low on educational value and
  writing style, and the main text of pages whose URL says how-to / tutorial / guide / docs is
  high on educational value.
* **web-page formats** (``FORMAT_PLAN``): WebOrganizer's format labels of the DCLM pages in the
  *fit* split of the fixed fit / choose / report split (``winnow.core.evaluation``), mapped per
  criterion to high / low by the criterion's definition (ours), on the text the default run's
  score stage sees.
* **human votes**: the good/bad labels of dclm-human-quality's *fit* split, as high / low on
  educational value and writing style (``HUMAN_CRITERIA``).

The variant (which format labels, whether the human votes are used, the L2 penalty) is chosen
among ``VARIANTS`` on the *choose* split (educational value against the format contrast and the
human labels); nothing of the *report* split is read. ``bench/raters_eval.py`` reports the
shipped head on the report split.

    python scripts/train_qurating.py [--corpora /work/shared/corpora] [--out winnow/data/models/qurating]

Same corpora + seed → byte-identical ``qurater-hashed.npz`` and reports.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._quality_data import HIGH_FORMATS, LOW_FORMATS, human_documents, web_pages  # noqa: E402
from winnow.cli.qurating import report_markdown  # noqa: E402
from winnow.core.evaluation import CHOOSE, FIT  # noqa: E402
from winnow.core.tokenizer import load_tokenizer  # noqa: E402
from winnow.stages.score.preselect import roc_auc  # noqa: E402
from winnow.stages.score.qurating import (  # noqa: E402
    CRITERIA,
    HashedNgrams,
    HashedTokenNgrams,
    LocalQuRater,
    derived_pair_groups,
    excerpt_records,
    make_featurizer,
    train_qurater,
)

SEED = 20240209  # QuRating's arXiv date; any fixed value works
PER_SOURCE = 160  # cap per source group so no one corpus dominates a criterion
# Boilerplate passages are short (one excerpt each) and come from many sites: allow more of them.
GROUP_CAP = {"web_boilerplate": 480}
FICTION = {"fiction", "romance", "adventure", "mystery", "science_fiction", "humor"}

# Source group → criterion → 1 (high) / 0 (low); criteria a source says nothing clear about are absent.
PLAN: dict[str, dict[str, int]] = {
    # Encyclopedic articles: dense facts, teaching value, polished; moderate expertise (left out).
    "wikipedia": {"educational_value": 1, "facts_and_trivia": 1, "writing_style": 1},
    # Scholarly prose (Brown "learned"): expertise and teaching value.
    "brown_learned": {"required_expertise": 1, "educational_value": 1, "writing_style": 1},
    # Research abstracts / papers / patents: expertise-heavy, fact-dense.
    "arxiv": {"required_expertise": 1, "educational_value": 1},
    "nih": {"required_expertise": 1, "facts_and_trivia": 1, "educational_value": 1},
    "uspto": {"required_expertise": 1},
    # Technical Q&A in English: expertise and teaching value, informal style.
    "se_english": {"required_expertise": 1, "educational_value": 1},
    # Edited fiction: well written, yet few facts, no expertise, little teaching.
    "brown_fiction": {"writing_style": 1, "facts_and_trivia": 0, "required_expertise": 0, "educational_value": 0},
    "novel": {"writing_style": 1, "facts_and_trivia": 0, "required_expertise": 0, "educational_value": 0},
    # Speeches: polished rhetoric, plain language.
    "speeches": {"writing_style": 1, "required_expertise": 0},
    # News: factual, plain language, edited.
    "news": {"facts_and_trivia": 1, "required_expertise": 0, "writing_style": 1},
    "brown_lore": {"facts_and_trivia": 1},
    # How-to writing and official reports (Brown "hobbies", "government"): instructional, explanatory.
    "brown_howto": {"educational_value": 1},
    "brown_government": {"educational_value": 1, "facts_and_trivia": 1},
    # Informal web lines and chatter: low on everything.
    "web_chatter": {"writing_style": 0, "educational_value": 0, "facts_and_trivia": 0, "required_expertise": 0},
    # Terse support-forum reports: badly written, but on a technical subject (only style is clear).
    "web_support": {"writing_style": 0},
    # Short wine reviews: evaluative blurbs that teach nothing.
    "web_reviews": {"educational_value": 0, "writing_style": 0},
    "forum_4chan": {"writing_style": 0, "educational_value": 0, "facts_and_trivia": 0},
    # Web page boilerplate (navigation, menus, footers, teasers, ad and share lines: the page text
    # outside its main content): teaches nothing, is not prose.
    "web_boilerplate": {"educational_value": 0, "writing_style": 0},
    # Instructional web pages (URL says how-to / tutorial / guide / docs / wiki / recipe): main text.
    "web_howto": {"educational_value": 1},
}
# WebOrganizer format → criterion → high (1) / low (0), ours, from each criterion's definition
# (docs/qurating.md#criteria): formats that say nothing clear about a criterion are left out. The
# educational-value row is the contrast the README's figures use (tutorials, knowledge articles and
# academic writing teach; ads, link listings and cut-off pages do not).
FORMAT_PLAN: dict[str, dict[int, tuple[str, ...]]] = {
    "educational_value": {1: HIGH_FORMATS, 0: LOW_FORMATS},
    "writing_style": {
        1: ("Creative Writing", "Nonfiction Writing", "Academic Writing", "News Article", "Knowledge Article"),
        0: ("Spam / Ads", "Content Listing", "Comment Section", "Product Page", "Structured Data"),
    },
    "facts_and_trivia": {
        1: ("Knowledge Article", "News Article", "Academic Writing", "Nonfiction Writing"),
        0: ("Personal Blog", "Comment Section", "Spam / Ads", "Creative Writing", "User Review"),
    },
    "required_expertise": {
        1: ("Academic Writing", "Docs.", "Legal"),
        0: ("Personal Blog", "Comment Section", "Creative Writing", "User Review", "About (Pers.)"),
    },
}
# Compared on the choose split: which criteria take format labels, and the head's L2 penalty.
VARIANTS: dict[str, dict[str, Any]] = {
    "sources only": {"formats": (), "l2": 1e-4},
    "sources + educational-value formats": {"formats": ("educational_value",), "l2": 3e-5},
    "sources + educational-value formats + human labels": {
        "formats": ("educational_value",),
        "l2": 3e-5,
        "human": True,
    },
    "sources + all format rows": {"formats": tuple(FORMAT_PLAN), "l2": 3e-5},
    "sources + all format rows, L2 1e-4": {"formats": tuple(FORMAT_PLAN), "l2": 1e-4},
}
# Human good/bad votes (fit split of dclm-human-quality) as high / low on these criteria: a page
# people judged good teaches more and is better written than one they judged bad (ours).
HUMAN_CRITERIA = ("educational_value", "writing_style")
ENGLISH_STOPWORDS = frozenset(
    {"the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be", "are", "this"}
    | {"by", "you", "not", "or", "have", "from", "at"}
)
INSTRUCTIONAL_URL = re.compile(
    r"how-?to|tutorial|guide|learn|tips|/wiki/|/docs?/|recipe|diy|explain|what-is|introduction|course|lesson|manual",
    re.I,
)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def clean_wikitext(text: str) -> str:
    """Wikitext → plain prose, roughly: templates, tables, refs, files and markup dropped."""
    for _ in range(3):  # nested templates
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->|<[^>]+>", "", text, flags=re.S)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("*", "|", "!", ":"))]
    return "\n".join(lines)


def blocks(lines: list[str], words: int = 220) -> list[str]:
    """Consecutive short lines joined into passages of about ``words`` words."""
    out, current, count = [], [], 0
    for line in lines:
        current.append(line)
        count += len(line.split())
        if count >= words:
            out.append("\n".join(current))
            current, count = [], 0
    return out


def is_english(text: str, min_words: int = 100) -> bool:
    """Enough words, and a fifth of them common English function words (pages are multilingual)."""
    words = re.findall(r"[a-z]+", text.lower())
    return len(words) >= min_words and sum(w in ENGLISH_STOPWORDS for w in words) / len(words) > 0.2


def page_texts(html: str) -> tuple[str, list[str]]:
    """(main content, boilerplate lines) of an HTML page: lines of the whole-page text not in the main text."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    main = extract_plain_text(tree, main_content=True, alt_texts=False, links=False)
    full = extract_plain_text(tree, main_content=False, alt_texts=False, links=False)
    in_main = {line.strip() for line in main.splitlines()}
    lines = [line.strip().lstrip("•·-* ").strip() for line in full.splitlines()]
    # Long lines outside the main text are mostly article text the main-content heuristic missed.
    return main, [line for line in lines if line and line not in in_main and len(line.split()) <= 20]


def web_page_documents(corpora: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Boilerplate passages of English HTML pages, and main texts of the instructional ones."""
    pages: list[tuple[str, str, str, str | None]] = []  # (id, url, html, gold main text or None)
    with lzma.open(corpora / "trafilatura-eval" / "pages.jsonl.xz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("html"):
                pages.append((row["id"], row["url"], row["html"], None))
    for row in _rows(corpora / "article-extraction-benchmark" / "pages.jsonl.gz"):
        if row.get("html"):
            page_id = f"aeb-{hashlib.sha256(row['url'].encode()).hexdigest()[:12]}"
            pages.append((page_id, row["url"], row["html"], row.get("article_body")))
    boilerplate, howto = [], []
    for page_id, url, html, gold in pages:
        main, extra = page_texts(html)
        if not is_english(gold or main):
            continue
        if gold is not None:  # the gold body is known: boilerplate is every line outside it
            body = {line.strip() for line in gold.splitlines()}
            extra = [line for line in extra if line not in body]
        for i, passage in enumerate(blocks(extra, 150)[:3]):
            boilerplate.append({"id": f"{page_id}-bp{i}", "text": passage})
        if INSTRUCTIONAL_URL.search(url):
            howto.append({"id": f"{page_id}-main", "text": gold or main})
    return boilerplate, howto


def source_documents(corpora: Path) -> dict[str, list[dict[str, Any]]]:
    """Documents per source group of ``PLAN`` (id, text), in file order."""
    docs: dict[str, list[dict[str, Any]]] = {group: [] for group in PLAN}
    for row in _rows(corpora / "wikipedia-dump-fragments" / "enwiki_pages.jsonl.gz"):
        if not row.get("redirect_to"):
            text = clean_wikitext(row.get("wikitext") or "")
            if len(text.split()) >= 150:
                docs["wikipedia"].append({"id": row["id"], "text": text})
    for row in _rows(corpora / "nltk-corpora" / "brown.jsonl.gz"):
        group = {
            "learned": "brown_learned",
            "lore": "brown_lore",
            "hobbies": "brown_howto",
            "government": "brown_government",
        }.get(row["genre"])
        group = "brown_fiction" if row["genre"] in FICTION else group
        if group:
            docs[group].append({"id": row["id"], "text": row["text"]})
    for row in _rows(corpora / "data-juicer-demos" / "docs.jsonl.gz"):
        group = {
            "redpajama/arxiv": "arxiv",
            "pile/nih_exporter": "nih",
            "pile/uspto": "uspto",
            "redpajama/stackexchange": "se_english",
        }.get(row["source_label"])
        if group:
            docs[group].append({"id": row["id"], "text": row["text"]})
    with gzip.open(corpora / "sentencepiece-books" / "botchan.txt.gz", "rt", encoding="utf-8") as handle:
        book = handle.read()
    paragraphs = [p for p in re.split(r"\n\s*\n", book) if len(p.split()) > 20]
    for i, passage in enumerate(blocks(paragraphs, 300)):
        docs["novel"].append({"id": f"botchan-{i}", "text": passage})
    for name in ("inaugural", "state_union"):
        for row in _rows(corpora / "nltk-corpora" / f"{name}.jsonl.gz"):
            docs["speeches"].append({"id": row["id"], "text": row["text"]})
    for row in _rows(corpora / "lee-abc-news" / "docs.jsonl.gz"):
        docs["news"].append({"id": row["id"], "text": row["text"]})
    for row in _rows(corpora / "article-extraction-benchmark" / "pages.jsonl.gz"):
        body = row.get("article_body") or ""
        if len(body.split()) >= 150:
            docs["news"].append({"id": f"aeb-{hashlib.sha256(body.encode()).hexdigest()[:12]}", "text": body})
    by_source: dict[str, list[str]] = {}
    for row in _rows(corpora / "nltk-corpora" / "webtext_lines.jsonl.gz"):
        if row["source"] in ("overheard", "singles", "firefox", "wine"):
            by_source.setdefault(row["source"], []).append(row["text"])
    web_groups = {"overheard": "web_chatter", "singles": "web_chatter", "firefox": "web_support", "wine": "web_reviews"}
    for source, lines in sorted(by_source.items()):
        for i, passage in enumerate(blocks(lines)[: PER_SOURCE // 2]):
            docs[web_groups[source]].append({"id": f"webtext-{source}-{i}", "text": passage})
    for row in _rows(corpora / "olmo-test-fixtures" / "paloma_4chan_TOXIC.jsonl.gz"):
        if len(row["text"].split()) >= 80:
            docs["forum_4chan"].append({"id": row["id"], "text": row["text"]})
    docs["web_boilerplate"], docs["web_howto"] = web_page_documents(corpora)
    return docs


def pointwise_records(corpora: Path) -> list[dict[str, Any]]:
    records = []
    for group, documents in source_documents(corpora).items():
        for doc in documents[: GROUP_CAP.get(group, PER_SOURCE)]:
            records.append({"id": f"{group}/{doc['id']}", "text": doc["text"], "source": group, "labels": PLAN[group]})
    return records


def format_records(corpora: Path, criteria: tuple[str, ...]) -> list[dict[str, Any]]:
    """Fit-split DCLM pages whose format is high or low on one of ``criteria`` (pipeline view)."""
    records = []
    for page in web_pages(corpora):
        if page["split"] != FIT or not page["view"]:
            continue
        labels = {c: v for c in criteria for v, formats in FORMAT_PLAN[c].items() if page["format"] in formats}
        if labels:
            records.append({"id": f"wo/{page['id']}", "text": page["view"], "source": "web_formats", "labels": labels})
    return records


def human_records(corpora: Path) -> list[dict[str, Any]]:
    """Fit-split human-labelled pages, high (good) or low (bad) on ``HUMAN_CRITERIA``."""
    return [
        {
            "id": f"hq/{r['id']}",
            "text": r["text"],
            "source": "human_labels",
            "labels": dict.fromkeys(HUMAN_CRITERIA, int(r["label"])),
        }
        for r in human_documents(corpora)
        if r["split"] == FIT
    ]


def choose_scores(head_file: Path, corpora: Path) -> dict[str, float]:
    """Educational value on the choose split: ROC-AUC on the format contrast and on the human labels."""
    pages = [
        p
        for p in web_pages(corpora)
        if p["split"] == CHOOSE and p["view"] and p["format"] in HIGH_FORMATS + LOW_FORMATS
    ]
    human = [r for r in human_documents(corpora) if r["split"] == CHOOSE]
    rater = LocalQuRater(head_file)
    web = rater.score([p["view"] for p in pages])["educational_value_average"]
    hum = rater.score([r["text"] for r in human])["educational_value_average"]
    out = {
        "choose_format_auc": roc_auc([p["format"] in HIGH_FORMATS for p in pages], web),
        "choose_human_auc": roc_auc([r["label"] for r in human], hum),
    }
    out["mean"] = (out["choose_format_auc"] + out["choose_human_auc"]) / 2
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=Path("/work/shared/corpora"))
    parser.add_argument("--out", type=Path, default=ROOT / "winnow/data/models/qurating")
    parser.add_argument(
        "--encoder",
        default="hashed",
        help="hashed (word n-grams: the bundled model), hashed-tokens (ids of the bundled BPE), static or minilm "
        "(for comparison).",
    )
    parser.add_argument("--ngram-max", type=int, default=2, help="Longest hashed n-gram (hashed encoders).")
    parser.add_argument(
        "--fold-case",
        action="store_true",
        help="hashed-tokens encoder: one feature for case and leading-space variants of a token.",
    )
    parser.add_argument("--max-pairs", type=int, default=3000, help="Derived pairs per criterion, at most.")
    args = parser.parse_args()

    tokenizer = load_tokenizer()
    sources = excerpt_records(pointwise_records(args.corpora), tokenizer, SEED, per_doc=2)
    formats = excerpt_records(format_records(args.corpora, tuple(FORMAT_PLAN)), tokenizer, SEED, per_doc=2)
    humans = excerpt_records(human_records(args.corpora), tokenizer, SEED, per_doc=2)
    if args.encoder == "hashed":
        featurizer: Any = HashedNgrams(ngram_max=args.ngram_max)
    elif args.encoder == "hashed-tokens":
        featurizer = HashedTokenNgrams(ngram_max=args.ngram_max, fold_case=args.fold_case)
    else:
        featurizer = make_featurizer(args.encoder)
    trained: dict[str, tuple[Any, dict[str, Any], list[dict[str, Any]]]] = {}
    choice: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="winnow-qurater-") as tmp:
        for name, variant in VARIANTS.items():
            records = sources + [
                {**r, "labels": {c: v for c, v in r["labels"].items() if c in variant["formats"]}}
                for r in formats
                if any(c in variant["formats"] for c in r["labels"])
            ]
            if variant.get("human"):
                records += humans
            groups = derived_pair_groups(records, CRITERIA, SEED, max_pairs=args.max_pairs)
            head, report = train_qurater(groups, featurizer, seed=SEED, mode="derived-pairs", l2=variant["l2"])
            path = Path(tmp) / "head.npz"
            head.save(path)
            choice[name] = {
                "formats": list(variant["formats"]),
                "l2": variant["l2"],
                **choose_scores(path, args.corpora),
            }
            trained[name] = (head, report, records)
            print(f"{name}: {json.dumps(choice[name])}", flush=True)
    best = max(choice, key=lambda name: choice[name]["mean"])
    head, report, records = trained[best]
    sources_count: dict[str, int] = {}
    for record in records:
        sources_count[record["source"]] = sources_count.get(record["source"], 0) + 1
    report["excerpts_per_source"] = dict(sorted(sources_count.items()))
    report["plan"] = PLAN
    report["format_plan"] = {c: {str(v): list(f) for v, f in FORMAT_PLAN[c].items()} for c in VARIANTS[best]["formats"]}
    report["variant_choice"] = {"chosen": best, "split": "choose", "candidates": choice}
    head.meta.update({"trained_by": "scripts/train_qurating.py", "seed": SEED, "variant": best})
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / f"qurater-{args.encoder}.npz"
    head.save(model)
    report["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (args.out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    lines = [
        "",
        "## Variant choice (choose split, educational_value)",
        "",
        "| variant | L2 | format AUC | human AUC | mean |",
        "|---|---|---|---|---|",
    ]
    for name, row in choice.items():
        mark = " (chosen)" if name == best else ""
        lines.append(
            f"| {name}{mark} | {row['l2']:g} | {row['choose_format_auc']:.4f} "
            f"| {row['choose_human_auc']:.4f} | {row['mean']:.4f} |"
        )
    (args.out / "report.md").write_text(report_markdown(report, model) + "\n".join(lines) + "\n")
    print(json.dumps({k: report[k] for k in ("train_groups", "train_pairs", "validation", "sha256")}, indent=1))


if __name__ == "__main__":
    main()
