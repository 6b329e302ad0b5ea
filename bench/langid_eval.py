"""Language-ID accuracy per language and speed: fastText lid.176 and CLD2 (pycld2).

Data: lingua's test sentences (/work/shared/corpora/lingua-language-testdata, 75 languages,
up to 1,000 sentences each, single sentences of 1-30 words: a hard setting, web documents
are longer) and, for speed on document-sized inputs, 2,000 English web pages
(weborganizer-dclm). Per language: share of sentences whose predicted code equals the gold
ISO 639-1 code (Norwegian Bokmål ``nb`` counts as ``no``, the code both models emit).
Both backends run as the default config sets them up (``langid.sample_chars``).

Then the fastText sample budget (``langid.sample_chars``, ``sample_windows``) against the whole
text (up to ``max_chars``, the behaviour before the budget), split by id hash into a *choose*
half (the default budget was picked there) and a *report* half:
- accuracy on long documents of known language: 40 lingua sentences of one language per
  document, one per line (≈ 3-5 KB, like a web page);
- agreement with the whole-text prediction on web pages (bench/.cache/pipeline_web_20000_s0.jsonl.gz
  when bench/pipeline_throughput.py has built it, else the weborganizer pages): same label, and
  same keep/drop under the default keep rules;
- speed: documents per CPU-second on one core on the first 3,000 of those pages (best of 3),
  the whole-text reading measured in the same run.

    python bench/langid_eval.py [--per-lang 1000] [--budgets 0,600,800,1000,1200] [--windows 16]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.hashing import uniform  # noqa: E402
from winnow.stages.langid.config import LangIdConfig  # noqa: E402
from winnow.stages.langid.identify import FastTextLangId, keep_decision, make_identifier  # noqa: E402

# ../shared/corpora beside the checkout (or beside the folder holding worktrees)
CORPORA = next((p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").is_dir()), ROOT / "shared")
PIPELINE_CORPUS = ROOT / "bench" / ".cache" / "pipeline_web_20000_s0.jsonl.gz"
ALIASES = {"nb": "no"}
SENTENCES_PER_DOC = 40


def _predict(ident: FastTextLangId, texts: list[str]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for i in range(0, len(texts), 256):
        out.extend(ident.predict(texts[i : i + 256]))
    return out


def _is_choose(doc_id: str) -> bool:
    return uniform(doc_id, "langid-eval-split", 0) < 0.5


def budget_section(rows: list[dict], budgets: list[int], windows: int) -> None:
    """Accuracy on long documents, agreement with the whole text, and speed, per sample budget."""
    default = LangIdConfig()
    by_lang: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_lang[ALIASES.get(row["lang"], row["lang"])].append(row["text"])
    long_docs = [
        (f"{lang}-{i}", lang, "\n".join(texts[i : i + SENTENCES_PER_DOC]))
        for lang, texts in sorted(by_lang.items())
        for i in range(0, len(texts) - SENTENCES_PER_DOC + 1, SENTENCES_PER_DOC)
    ]
    source = PIPELINE_CORPUS if PIPELINE_CORPUS.is_file() else CORPORA / "weborganizer-dclm/docs.jsonl.gz"
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        pages = [json.loads(line) for line in fh]
    page_texts = [p["text"] for p in pages]
    mean_doc = sum(len(t) for _, _, t in long_docs) / len(long_docs)
    mean_page = sum(len(t) for t in page_texts) / len(page_texts)
    print(
        f"\nsample budget: {len(long_docs)} long documents in {len(by_lang)} languages (mean {mean_doc:,.0f} chars); "
        f"{len(pages):,} web pages of {source.name} (mean {mean_page:,.0f} chars); windows {windows}; "
        f"keep rules {default.keep}; choose / report halves by id hash"
    )
    doc_split = [_is_choose(doc_id) for doc_id, _, _ in long_docs]
    page_split = [_is_choose(str(p.get("id", i))) for i, p in enumerate(pages)]
    whole = FastTextLangId(default.model_path, default.max_chars, 0)
    whole_pages = _predict(whole, page_texts)
    whole_keep = [keep_decision(lang, score, default.keep) is None for lang, score in whole_pages]
    speed_texts = page_texts[:3000]
    print(
        f"{'budget':>7s} {'split':7s} {'long-doc acc':>12s} {'label agree':>11s} {'keep agree':>10s} "
        f"{'kept->drop':>10s} {'drop->kept':>10s} {'docs/CPU-s':>10s}"
    )
    for budget in budgets:
        ident = FastTextLangId(default.model_path, default.max_chars, budget, windows)
        docs_pred = _predict(ident, [t for _, _, t in long_docs])
        pages_pred = whole_pages if budget == 0 else _predict(ident, page_texts)
        seconds = []
        for _ in range(3):
            start = time.process_time()
            _predict(ident, speed_texts)
            seconds.append(time.process_time() - start)
        rate = len(speed_texts) / min(seconds)
        for split_name, want in (("choose", True), ("report", False)):
            docs_idx = [i for i, c in enumerate(doc_split) if c == want]
            pages_idx = [i for i, c in enumerate(page_split) if c == want]
            acc = sum(docs_pred[i][0] == long_docs[i][1] for i in docs_idx) / len(docs_idx)
            label = sum(pages_pred[i][0] == whole_pages[i][0] for i in pages_idx) / len(pages_idx)
            keep = [keep_decision(*pages_pred[i], default.keep) is None for i in pages_idx]
            agree = sum(k == whole_keep[i] for k, i in zip(keep, pages_idx, strict=True)) / len(pages_idx)
            lost = sum(whole_keep[i] and not k for k, i in zip(keep, pages_idx, strict=True))
            gained = sum(k and not whole_keep[i] for k, i in zip(keep, pages_idx, strict=True))
            print(
                f"{budget or 'whole':>7} {split_name:7s} {acc:12.4f} {label:11.4f} {agree:10.4f} {lost:10d} "
                f"{gained:10d} {rate:10,.0f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-lang", type=int, default=1000)
    ap.add_argument("--budgets", default="0,600,800,1000,1200", help="sample_chars values to compare; 0: whole text")
    ap.add_argument("--windows", type=int, default=LangIdConfig().sample_windows)
    args = ap.parse_args()

    rows = []
    seen: dict[str, int] = defaultdict(int)
    with gzip.open(CORPORA / "lingua-language-testdata/sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if seen[row["lang"]] < args.per_lang:
                seen[row["lang"]] += 1
                rows.append(row)
    with gzip.open(CORPORA / "weborganizer-dclm/docs.jsonl.gz", "rt", encoding="utf-8") as fh:
        pages = [json.loads(line)["text"] for _, line in zip(range(2000), fh, strict=False)]
    texts = [r["text"] for r in rows]
    gold = [ALIASES.get(r["lang"], r["lang"]) for r in rows]
    print(f"{len(rows)} sentences in {len(seen)} languages; {len(pages)} English web pages for speed\n")

    results = {}
    default = LangIdConfig()
    for backend in ("fasttext", "cld2"):
        ident = make_identifier(backend, None, default.max_chars, default.sample_chars, default.sample_windows)
        t0 = time.perf_counter()
        preds = []
        for i in range(0, len(texts), 512):
            preds.extend(ident.predict(texts[i : i + 512]))
        sent_rate = len(texts) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        page_preds = []
        for i in range(0, len(pages), 256):
            page_preds.extend(ident.predict(pages[i : i + 256]))
        page_rate = len(pages) / (time.perf_counter() - t0)
        per_lang: dict[str, list[bool]] = defaultdict(list)
        for g, (p, _) in zip(gold, preds, strict=True):
            per_lang[g].append(p == g)
        acc = {lang: sum(v) / len(v) for lang, v in per_lang.items()}
        en_kept = sum(p == "en" and s >= 0.65 for p, s in page_preds) / len(pages)
        results[backend] = acc
        covered = [lang for lang in acc if any(p == lang for p, _ in preds)]
        print(
            f"{backend:9s} macro accuracy {sum(acc.values()) / len(acc):.3f} over {len(acc)} languages "
            f"({sum(acc[x] for x in covered) / max(len(covered), 1):.3f} over the {len(covered)} it ever predicts); "
            f"micro {sum(p == g for g, (p, _) in zip(gold, preds, strict=True)) / len(gold):.3f}; "
            f"{sent_rate:,.0f} sentences/s; {page_rate:,.0f} web pages/s; "
            f"English pages kept at en>=0.65: {en_kept:.3f}"
        )
    print(f"\n{'lang':5s} {'fasttext':>9s} {'cld2':>6s}")
    for lang in sorted(results["fasttext"]):
        print(f"{lang:5s} {results['fasttext'][lang]:9.3f} {results['cld2'].get(lang, 0.0):6.3f}")
    budget_section(rows, [int(b) for b in args.budgets.split(",")], args.windows)


if __name__ == "__main__":
    main()
