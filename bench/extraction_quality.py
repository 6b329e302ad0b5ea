"""Extraction quality and speed of winnow's ``fast`` backend beside the extractors users compare with.

Protocol (fixed here, so a figure is never reported on pages used to choose it):

* trafilatura-eval (990 pages, ~45% German) is split by site: ``h64(site, "extract-split", 0) % 2``,
  0 = *choose*, 1 = *report*. The site is the URL's host (for web.archive.org URLs, the archived
  host), so archived copies of one site never straddle the halves. Every rule and threshold of
  the ``fast`` backend (``FastOptions``) and the one free choice of a peer (jusText's stoplist)
  were chosen on the choose half only. Metrics: share of ``must_contain`` snippets found in the
  output (kept, higher is better) and of ``must_not_contain`` snippets found (leaked, lower is
  better), as trafilatura's own evaluation counts them.
* article-extraction-benchmark (181 pages, ScrapingHub, mostly English news) is never used to
  choose anything. Metrics: word precision / recall / F1 of the output against the gold
  ``article_body`` (bag of lower-cased ``\\w+`` tokens, averaged over pages, as that benchmark
  scores), and a derived snippet measure in the trafilatura style: kept = gold paragraphs of at
  least 40 characters whose first 40 characters (whitespace-normalised) are in the output; leaked
  = visible text nodes of the page of at least 40 characters that share under half of their words
  with the gold body, whose first 40 characters are in the output.

Peers run at their defaults in the same process and on the same pages: ``trafilatura.extract``
(2.3.1), resiliparse's ``extract_plain_text(main_content=True)``, jusText (3.0.2, the stoplist
choice made on the choose half) and readability-lxml (0.9, in its own venv, run as a subprocess
when ``--readability-python`` points at it). Speed is pages per CPU-second of one process
(``time.process_time``), with the in-process methods interleaved page by page so that load on a
shared machine falls on all of them alike.

    python bench/extraction_quality.py [--limit N] [--methods a,b] [--readability-python PATH]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import lzma
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.hashing import h64  # noqa: E402
from winnow.stages.extract.extraction import HtmlExtractor, decode_html  # noqa: E402

CORPORA = Path(os.environ.get("WINNOW_CORPORA", "/work/shared/corpora"))
READABILITY_PYTHON = "/work/venvs/quality-extract/bin/python"
SPLIT_PURPOSE = "extract-split"
_WORDS = re.compile(r"\w+")
_ARCHIVED = re.compile(r"/web/[^/]+/(.+)")
SNIPPET_CHARS = 40

# jusText needs a stoplist; these are the candidates tried on the choose half (the eval pages are
# multilingual, so one language's list is not obviously right).
JUSTEXT_LANGUAGES = {
    "English": ("English",),
    "European union": ("English", "German", "French", "Spanish", "Italian", "Polish", "Portuguese", "Dutch"),
}

_READABILITY_WORKER = r"""
import json, sys, time
import lxml.html
from readability import Document
BLOCKS = {"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "td", "th", "br", "pre", "blockquote"}
def text_of(html):
    summary = Document(html).summary(html_partial=True)
    root = lxml.html.fromstring(summary)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag in BLOCKS:
            el.tail = "\n" + (el.tail or "")
    return root.text_content()
out = []
for line in open(sys.argv[1], encoding="utf-8"):
    html = json.loads(line)
    t0 = time.process_time()
    try:
        text = text_of(html)
    except Exception:
        text = ""
    out.append((text, time.process_time() - t0))
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""


def site(url: str) -> str:
    """The split key: the page's host, the archived host for Wayback URLs, the named host for the
    ``hard::host-name.html`` pages of trafilatura's test set."""
    if url.startswith("hard::"):
        return url[6:].split("-", 1)[0].removeprefix("www.")
    parts = urlsplit(url)
    host = parts.hostname or url
    if host == "web.archive.org":
        match = _ARCHIVED.search(parts.path)
        if match:
            inner = match.group(1)
            return site(inner if "://" in inner else "http://" + inner)
    return host.removeprefix("www.")


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


def normalise(text: str) -> str:
    return " ".join(text.split())


def snippet(text: str) -> str:
    """The first SNIPPET_CHARS characters of normalised text, cut back to a word boundary."""
    head = text[:SNIPPET_CHARS]
    return head if len(text) == len(head) or " " not in head else head.rsplit(" ", 1)[0]


def aeb_snippets(page: dict) -> tuple[list[str], list[str]]:
    """Derived must-contain / must-not-contain snippets of an article-extraction-benchmark page."""
    from selectolax.lexbor import LexborHTMLParser

    gold = normalise(page["article_body"])
    gold_words = set(_WORDS.findall(gold.lower()))
    keep = sorted({snippet(p) for p in (normalise(x) for x in page["article_body"].split("\n")) if len(p) >= 40})
    tree = LexborHTMLParser(page["html"])
    for node in tree.css("script, style, noscript, template, head, svg"):
        node.decompose()
    body = tree.body
    leak = set()
    for node in body.traverse(include_text=True) if body is not None else ():
        if node.tag != "-text":
            continue
        text = normalise(node.text_content or "")
        if len(text) < 40 or text in gold:
            continue
        words = _WORDS.findall(text.lower())
        if sum(w in gold_words for w in words) < 0.5 * len(words):
            leak.add(snippet(text))
    return keep, sorted(leak)


def prf(pred: str, gold: str) -> tuple[float, float, float]:
    p_words, g_words = Counter(_WORDS.findall(pred.lower())), Counter(_WORDS.findall(gold.lower()))
    overlap = sum((p_words & g_words).values())
    precision = overlap / sum(p_words.values()) if p_words else 0.0
    recall = overlap / sum(g_words.values()) if g_words else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def snippet_rates(outs: list[str], must: list[list[str]], must_not: list[list[str]], norm: bool) -> tuple[float, float]:
    if norm:
        outs = [normalise(o) for o in outs]
    n_in = sum(len(m) for m in must) or 1
    n_out = sum(len(m) for m in must_not) or 1
    kept = sum(s in o for o, m in zip(outs, must, strict=True) for s in m) / n_in
    leaked = sum(s in o for o, m in zip(outs, must_not, strict=True) for s in m) / n_out
    return kept, leaked


def justext_extractor(languages: tuple[str, ...]) -> Callable[[str], str]:
    import justext

    stoplist = frozenset().union(*(justext.get_stoplist(lang) for lang in languages))

    def extract(html: str) -> str:
        try:
            paragraphs = justext.justext(html, stoplist)
        except Exception:  # jusText raises on pages lxml cannot parse
            return ""
        return "\n".join(p.text for p in paragraphs if not p.is_boilerplate)

    return extract


def run_interleaved(methods: dict[str, Callable[[str], str]], pages: list[dict]) -> dict[str, tuple[list[str], float]]:
    """Outputs and CPU seconds per method, every method run on page i before any runs on page i+1."""
    outs: dict[str, list[str]] = {name: [] for name in methods}
    cpu = dict.fromkeys(methods, 0.0)
    for page in pages:
        for name, fn in methods.items():
            t0 = time.process_time()
            text = fn(page["html"]) or ""
            cpu[name] += time.process_time() - t0
            outs[name].append(text)
    return {name: (outs[name], cpu[name]) for name in methods}


def run_readability(python: str, pages: list[dict]) -> tuple[list[str], float] | None:
    if not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, worker = Path(tmp, "in.jsonl"), Path(tmp, "out.json"), Path(tmp, "worker.py")
        src.write_text("".join(json.dumps(p["html"]) + "\n" for p in pages), encoding="utf-8")
        worker.write_text(_READABILITY_WORKER, encoding="utf-8")
        subprocess.run([python, str(worker), str(src), str(dst)], check=True)
        rows = json.loads(dst.read_text(encoding="utf-8"))
    return [r[0] for r in rows], sum(r[1] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="pages per corpus (quick runs)")
    ap.add_argument("--methods", default=None, help="comma-separated substrings of the method names to run")
    ap.add_argument("--readability-python", default=READABILITY_PYTHON, help="python of a venv with readability-lxml")
    args = ap.parse_args()

    traf = load_pages(CORPORA / "trafilatura-eval/pages.jsonl.xz", lzma.open, args.limit)
    aeb = load_pages(CORPORA / "article-extraction-benchmark/pages.jsonl.gz", gzip.open, args.limit)
    halves = {"choose": [], "report": []}
    for page in traf:
        halves["report" if h64(site(page["url"]), SPLIT_PURPOSE, 0) % 2 else "choose"].append(page)
    for half, pages in halves.items():
        n_in = sum(len(p["must_contain"]) for p in pages)
        n_out = sum(len(p["must_not_contain"]) for p in pages)
        print(f"trafilatura-eval {half}: {len(pages)} pages, {n_in} must-contain, {n_out} must-not-contain snippets")
    aeb_gold = [aeb_snippets(p) for p in aeb]
    print(
        f"article-extraction-benchmark: {len(aeb)} pages; derived snippets: "
        f"{sum(len(k) for k, _ in aeb_gold)} must-contain, {sum(len(b) for _, b in aeb_gold)} must-not-contain\n"
    )

    # The peer's one free choice, made on the choose half like every threshold of ``fast``.
    best_lang, best_score = None, None
    choose = halves["choose"]
    for label, languages in JUSTEXT_LANGUAGES.items():
        outs, _ = run_interleaved({label: justext_extractor(languages)}, choose)[label]
        kept, leaked = snippet_rates(
            outs, [p["must_contain"] for p in choose], [p["must_not_contain"] for p in choose], False
        )
        print(f"jusText stoplist {label!r} on the choose half: kept {kept:.3f} leaked {leaked:.3f}")
        if best_score is None or kept - leaked > best_score:
            best_lang, best_score = label, kept - leaked
    print(f"-> jusText runs with the {best_lang!r} stoplist (best kept - leaked on the choose half)\n")

    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text

    fast = HtmlExtractor(backend="fast")
    methods: dict[str, Callable[[str], str]] = {
        "trafilatura 2.3.1 defaults": lambda html: trafilatura.extract(html) or "",
        "resiliparse main_content": lambda html: extract_plain_text(html, main_content=True),
        f"jusText 3.0.2 ({best_lang})": justext_extractor(JUSTEXT_LANGUAGES[best_lang]),
        "winnow fast": fast.extract_html,
    }
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",")]
        methods = {k: v for k, v in methods.items() if any(w in k for w in wanted)}

    results: dict[str, dict[str, tuple[list[str], float]]] = {}
    corpora = {"choose": halves["choose"], "report": halves["report"], "aeb": aeb}
    for key, pages in corpora.items():
        results[key] = run_interleaved(methods, pages)
        if not args.methods or "readability" in args.methods:
            found = run_readability(args.readability_python, pages)
            if found is not None:
                results[key]["readability-lxml 0.9"] = found
    names = list(results["choose"])

    print(f"{'':30s} {'trafilatura-eval choose':>23s} {'trafilatura-eval report':>24s}")
    print(f"{'method':30s} {'kept':>9s} {'leaked':>9s}   {'kept':>9s} {'leaked':>9s}")
    for name in names:
        row = []
        for key in ("choose", "report"):
            pages = corpora[key]
            row += snippet_rates(
                results[key][name][0], [p["must_contain"] for p in pages], [p["must_not_contain"] for p in pages], False
            )
        print(f"{name:30s} {row[0]:9.3f} {row[1]:9.3f}   {row[2]:9.3f} {row[3]:9.3f}")

    print(f"\n{'':30s} {'article-extraction-benchmark (never used to choose)':>52s}")
    print(f"{'method':30s} {'P':>7s} {'R':>7s} {'F1':>7s} {'kept*':>8s} {'leaked*':>8s}")
    for name in names:
        outs = results["aeb"][name][0]
        scores = [prf(o, p["article_body"]) for p, o in zip(aeb, outs, strict=True)]
        p, r, f = (sum(s[i] for s in scores) / len(scores) for i in range(3))
        kept, leaked = snippet_rates(outs, [k for k, _ in aeb_gold], [b for _, b in aeb_gold], True)
        print(f"{name:30s} {p:7.3f} {r:7.3f} {f:7.3f} {kept:8.3f} {leaked:8.3f}")
    print("  * derived snippets (see the module docstring)")

    print(f"\n{'speed, one process':30s} {'pages/CPU-s':>12s} {'x trafilatura':>14s}")
    total_pages = sum(len(p) for p in corpora.values())
    rates = {name: total_pages / max(sum(results[k][name][1] for k in corpora), 1e-9) for name in names}
    base = next((rate for name, rate in rates.items() if name.startswith("trafilatura")), None)
    for name in names:
        ratio = f"{rates[name] / base:14.2f}" if base else f"{'-':>14s}"
        print(f"{name:30s} {rates[name]:12.1f} {ratio}")
    print("  (readability-lxml runs in its own process after the others, not interleaved)")


if __name__ == "__main__":
    main()
