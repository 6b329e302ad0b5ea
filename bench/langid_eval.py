"""Language-ID accuracy per language and speed: fastText lid.176 and CLD2 (pycld2).

Data: lingua's test sentences (/work/shared/corpora/lingua-language-testdata, 75 languages,
up to 1,000 sentences each, single sentences of 1-30 words: a hard setting, web documents
are longer) and, for speed on document-sized inputs, 2,000 English web pages
(weborganizer-dclm). Per language: share of sentences whose predicted code equals the gold
ISO 639-1 code (Norwegian Bokmål ``nb`` counts as ``no``, the code both models emit).

    python bench/langid_eval.py [--per-lang 1000]
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

from winnow.stages.langid.identify import make_identifier  # noqa: E402

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
ALIASES = {"nb": "no"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-lang", type=int, default=1000)
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
    for backend in ("fasttext", "cld2"):
        ident = make_identifier(backend)
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


if __name__ == "__main__":
    main()
