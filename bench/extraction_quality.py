"""Extraction quality and speed of winnow's HTML backends beside plain ``trafilatura.extract``.

Two gold sets from /work/shared/corpora, each method run on the same pages in the same process:

* trafilatura-eval (990 pages): share of ``must_contain`` snippets present in the output
  (kept, higher is better) and of ``must_not_contain`` snippets present (leaked, lower is better).
* article-extraction-benchmark (181 pages, ScrapingHub): word-level precision / recall / F1
  against the gold article body (bag of lower-cased words, averaged over pages, as that
  benchmark scores), plus pages/s.

    python bench/extraction_quality.py [--limit N] [--methods a,b]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import lzma
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.stages.extract.extraction import HtmlExtractor, decode_html  # noqa: E402

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
_WORDS = re.compile(r"\w+")


def load_pages(path: Path, opener: Callable, limit: int | None) -> list[dict]:
    pages = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("html") is None and row.get("html_b64"):
                row["html"], _ = decode_html(base64.b64decode(row["html_b64"]))
            pages.append(row)
            if limit and len(pages) >= limit:
                break
    return pages


def methods() -> dict[str, Callable[[str], str]]:
    import trafilatura

    def backend(name: str) -> Callable[[str], str]:
        extractor = HtmlExtractor(backend=name)
        return lambda html: extractor.extract_html(html)

    return {
        "trafilatura.extract (defaults)": lambda html: trafilatura.extract(html) or "",
        "winnow trafilatura": backend("trafilatura"),
        "winnow resiliparse": backend("resiliparse"),
        "winnow fast": backend("fast"),
    }


def prf(pred: str, gold: str) -> tuple[float, float, float]:
    p_words, g_words = Counter(_WORDS.findall(pred.lower())), Counter(_WORDS.findall(gold.lower()))
    overlap = sum((p_words & g_words).values())
    precision = overlap / sum(p_words.values()) if p_words else 0.0
    recall = overlap / sum(g_words.values()) if g_words else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def run(fn: Callable[[str], str], pages: list[dict]) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    outs = [fn(p["html"]) for p in pages]
    return outs, len(pages) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="pages per gold set")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the method names")
    args = ap.parse_args()

    traf = load_pages(CORPORA / "trafilatura-eval/pages.jsonl.xz", lzma.open, args.limit)
    aeb = load_pages(CORPORA / "article-extraction-benchmark/pages.jsonl.gz", gzip.open, args.limit)
    chosen = methods()
    if args.methods:
        chosen = {k: v for k, v in chosen.items() if any(m.strip() in k for m in args.methods.split(","))}
    n_in = sum(len(p["must_contain"]) for p in traf)
    n_out = sum(len(p["must_not_contain"]) for p in traf)
    print(f"trafilatura-eval: {len(traf)} pages, {n_in} must-contain, {n_out} must-not-contain snippets")
    print(f"article-extraction-benchmark: {len(aeb)} pages with gold bodies\n")
    print(
        f"{'method':32s} {'kept':>6s} {'leaked':>7s} {'pages/s':>8s} | {'P':>6s} {'R':>6s} {'F1':>6s} {'pages/s':>8s}"
    )
    base_rate = None
    for name, fn in chosen.items():
        outs, rate = run(fn, traf)
        kept = sum(s in o for p, o in zip(traf, outs, strict=True) for s in p["must_contain"]) / n_in
        leaked = sum(s in o for p, o in zip(traf, outs, strict=True) for s in p["must_not_contain"]) / n_out
        outs2, rate2 = run(fn, aeb)
        scores = [prf(o, p["article_body"]) for p, o in zip(aeb, outs2, strict=True)]
        p, r, f = (sum(s[i] for s in scores) / len(scores) for i in range(3))
        if base_rate is None:
            base_rate = rate
        print(
            f"{name:32s} {kept:6.3f} {leaked:7.3f} {rate:8.1f} | {p:6.3f} {r:6.3f} {f:6.3f} {rate2:8.1f}"
            f"   ({rate / base_rate:.1f}x trafilatura speed)"
        )


if __name__ == "__main__":
    main()
