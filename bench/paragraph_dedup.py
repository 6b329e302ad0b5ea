"""Paragraph (line) dedup: share of text removed on real web text and on a corpus with planted boilerplate.

1. ``weborganizer-dclm`` (8,939 DCLM-pool pages, already BFF-deduplicated upstream): characters and
   documents touched, documents removed by the share rule, docs/s per core.
2. Planted boilerplate: clean prose (``lee-abc-news`` 350 news articles + ``nltk-corpora`` Brown 500
   documents) split into 20 pseudo-sites; every page gets, at seeded rates, its site's header/footer
   lines, lines shared by all sites (cookie and newsletter notices) and short navigation lines.
   Measured: recall on removable boilerplate (every copy but the keeper's), content characters
   removed (nothing else repeats in this prose, so any is a false removal), and what ``min_chars``
   costs on short boilerplate.

Peer, same run: Dolma-style exact line dedup (every non-blank line keyed byte-for-byte, no minimum
length, first document keeps), run through the same code with ``min_chars=1`` and no whitespace folding.

3. Full pipeline (``--pipeline``): both corpora through winnow's Beam graph (weborganizer-dclm through
   normalize → filter → pii → dedup, the planted corpus through normalize → dedup), once with
   ``dedup.paragraph`` on and once off. Printed: the manifest's paragraph record (share removed,
   pages edited and removed), the wall-clock cost of the step (on minus off), removed lines as
   examples (the lines the kept pages lost between the two runs) and, on the planted corpus, the
   boilerplate recall and content loss measured on the pipeline's output.

    python bench/paragraph_dedup.py [--min-chars 50 --max-share 0.5] [--pipeline]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import winnow.stages.dedup.paragraph as paragraph  # noqa: E402
from bench._pipeline import run_winnow  # noqa: E402
from winnow.stages.dedup.paragraph import dedup_paragraphs  # noqa: E402

CORPORA = next(
    (p / "shared" / "corpora" for p in Path(__file__).resolve().parents if (p / "shared" / "corpora").is_dir()),
    Path("shared/corpora"),
)

SHARED_LINES = [
    "We use cookies to ensure that we give you the best experience on our website. By continuing you agree.",
    "Sign up for our newsletter to get the latest stories delivered straight to your inbox every morning.",
    "This article is for personal use only; please contact us for permission to republish or reprint it.",
    "Share this:",
    "Read more",
]
NAV_LINES = ["Home", "About us", "Contact", "Privacy policy", "Skip to main content"]


def site_lines(site: int) -> list[str]:
    return [
        f"Welcome to Site {site} Online, your trusted source of independent reporting since {1990 + site}.",
        f"Copyright © {2000 + site} Site {site} Media Group Ltd. All rights reserved. Registered in England.",
        f"Follow Site {site} on social media and join the conversation with thousands of other readers.",
    ]


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def exact_line_dedup(docs: list[tuple[str, str]]) -> dict:
    """The Dolma-style peer: byte-exact lines, no minimum length, first document in input order keeps."""
    original = paragraph.paragraph_key
    paragraph.paragraph_key = lambda line, min_chars: (
        xxhash.xxh3_64_intdigest(line.encode("utf-8", "surrogatepass")) if line.strip() else None
    )
    try:
        return dedup_paragraphs(
            docs, min_chars=1, max_removed_share=1.0, order_keys=[f"{i:08d}" for i in range(len(docs))]
        )
    finally:
        paragraph.paragraph_key = original


def report_real(corpora: Path, min_chars: int, max_share: float) -> None:
    docs = [(row["id"], row["text"]) for row in read_jsonl(corpora / "weborganizer-dclm" / "docs.jsonl.gz")]
    total = sum(len(text) for _, text in docs)
    start = time.process_time()
    ours = dedup_paragraphs(docs, min_chars=min_chars, max_removed_share=max_share)
    seconds = time.process_time() - start
    start = time.process_time()
    peer = exact_line_dedup(docs)
    peer_seconds = time.process_time() - start
    print(f"weborganizer-dclm: {len(docs)} pages, {total / 1e6:.1f} M chars")
    for name, results in (("winnow", ours), ("dolma-style exact lines", peer)):
        removed = sum(r.removed_chars for r in results.values())
        touched = sum(r.removed_lines > 0 for r in results.values())
        dropped = sum(r.removed_share > max_share for r in results.values())
        print(
            f"  {name:24} text removed {removed / total:6.2%}  pages touched {touched:5d} ({touched / len(docs):5.1%})"
            f"  pages over the {max_share:.0%} share {dropped:4d}"
        )
    print(
        f"  speed, one core, CPU time, whole in-memory composition: winnow {len(docs) / seconds:.0f} docs/s, "
        f"peer {len(docs) / peer_seconds:.0f} docs/s"
    )
    examples = [(doc_id, text[a:b].strip()) for doc_id, text in docs[:4000] for a, b in ours[doc_id].spans]
    print("  first removed lines:", [line[:70] for _, line in examples[:5]])


def planted_corpus(corpora: Path, seed: int) -> tuple[list[tuple[str, str]], dict[str, list[str]], list[str]]:
    """(pages, planted boilerplate lines per page, the clean prose) of the planted-boilerplate corpus."""
    rng = random.Random(seed)
    prose = [row["text"] for row in read_jsonl(corpora / "lee-abc-news" / "docs.jsonl.gz")]
    prose += [row["text"] for row in read_jsonl(corpora / "nltk-corpora" / "brown.jsonl.gz")]
    docs: list[tuple[str, str]] = []
    planted: dict[str, list[str]] = {}
    for i, text in enumerate(prose):
        site = i % 20
        header = [line for line in [*NAV_LINES, site_lines(site)[0]] if rng.random() < 0.6]
        footer = [line for line in [*site_lines(site)[1:], *SHARED_LINES] if rng.random() < 0.5]
        doc_id = f"p{i:04d}"
        planted[doc_id] = header + footer
        docs.append((doc_id, "\n".join([*header, text.strip(), *footer])))
    return docs, planted, prose


def report_planted(corpora: Path, min_chars: int, max_share: float, seed: int) -> None:
    docs, planted, prose = planted_corpus(corpora, seed)
    boiler = {line for lines in planted.values() for line in lines}
    seen: set[str] = set()
    removable = {"long": 0, "short": 0}
    for doc_id, _ in sorted(docs):
        for line in planted[doc_id]:
            if line in seen:
                removable["long" if len(line) >= min_chars else "short"] += len(line)
            seen.add(line)
    content_total = sum(len(text) for text in prose)
    # The source prose itself repeats a few articles (lee-abc-news holds 7 exact duplicates): removing
    # those lines is right, removing any other content line is a false removal.
    line_counts: dict[str, int] = {}
    for text in prose:
        for line in {line.strip() for line in text.split("\n")}:
            line_counts[line] = line_counts.get(line, 0) + 1
    print(f"\nplanted boilerplate: {len(docs)} pages of clean prose (lee-abc-news + Brown), 20 sites")
    for name, results in (
        ("winnow", dedup_paragraphs(docs, min_chars=min_chars, max_removed_share=max_share)),
        ("dolma-style exact lines", exact_line_dedup(docs)),
    ):
        removed = {"long": 0, "short": 0}
        content_removed = duplicate_removed = 0
        for doc_id, text in docs:
            for a, b in results[doc_id].spans:
                line = text[a:b].rstrip("\n")
                if line in boiler:
                    removed["long" if len(line) >= min_chars else "short"] += len(line)
                elif line_counts.get(line.strip(), 0) > 1:
                    duplicate_removed += len(line)
                else:
                    content_removed += len(line)
        dropped = sum(r.removed_share > max_share for r in results.values())
        print(
            f"  {name:24} boilerplate recall: lines >= {min_chars} chars {removed['long'] / removable['long']:.3f}, "
            f"shorter {removed['short'] / removable['short']:.3f};"
            f" repeated source prose removed {duplicate_removed} chars;"
            f" other content removed {content_removed} chars ({content_removed / content_total:.4%});"
            f" pages losing over {max_share:.0%} {dropped}"
        )


def _line_set(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.split("\n") if line.strip()}


def _pipeline_pair(docs: list[dict], stages: list[str], min_chars: int, max_share: float) -> tuple:
    on = run_winnow(
        docs,
        stages,
        dedup={"paragraph": {"enabled": True, "min_chars": min_chars, "max_removed_share": max_share}},
    )
    off = run_winnow(docs, stages)
    record = next(r for r in on.section("dedup") if r["kind"] == "paragraph")
    lost: dict[str, set[str]] = {}
    before = {row["id"]: row["text"] for row in off.kept}
    for row in on.kept:
        if row["paragraph_lines_removed"]:
            lost[row["id"]] = _line_set(before[row["id"]]) - _line_set(row["text"])
    return on, off, record, lost


def _print_record(record: dict, on, off) -> None:
    print(
        f"  paragraph record: {record['documents']} pages in, share removed {record['share_removed']:.2%} "
        f"({record['chars_removed_from_kept']} chars from {record['documents_edited']} edited pages, "
        f"{record['chars_of_removed_documents']} chars in {record['documents_removed']} pages removed as "
        f"dedup:paragraph); {record['lines_removed']} lines removed"
    )
    extra = on.cpu_seconds - off.cpu_seconds
    print(
        f"  CPU time, one in-memory worker: {on.cpu_seconds:.1f}s with paragraph dedup, {off.cpu_seconds:.1f}s "
        f"without (+{extra:.1f}s, {record['documents'] / max(extra, 1e-9):.0f} pages/s for the step; wall "
        f"{on.seconds:.1f}s / {off.seconds:.1f}s)"
    )


def report_pipeline(corpora: Path, min_chars: int, max_share: float, seed: int) -> None:
    rows = read_jsonl(corpora / "weborganizer-dclm" / "docs.jsonl.gz")
    docs = [{"id": row["id"], "text": row["text"], "url": row.get("url")} for row in rows]
    stages = ["normalize", "filter", "pii", "dedup"]
    on, off, record, lost = _pipeline_pair(docs, stages, min_chars, max_share)
    print(f"\nfull pipeline, weborganizer-dclm ({' → '.join(stages)}; dedup = exact + verified MinHash + paragraph):")
    _print_record(record, on, off)
    counts = Counter(line for lines in lost.values() for line in lines)
    print("  most removed lines (pages that lost them):")
    for line, count in counts.most_common(8):
        print(f"    {count:4d}  {line[:100]!r}")
    for row in sorted(on.removed, key=lambda r: r["id"]):
        if row["reason"] == "dedup:paragraph":
            detail = json.loads(row["detail"])
            print(
                f"  removed page {row['id']} (lost {detail['removed_share']:.0%}, duplicate of {row['duplicate_of']}):"
                f" {row['text'][:90]!r}"
            )
            break

    planted_docs, planted, _ = planted_corpus(corpora, seed)
    boiler = {" ".join(line.split()) for lines in planted.values() for line in lines}
    docs = [{"id": doc_id, "text": text} for doc_id, text in planted_docs]
    stages = ["normalize", "dedup"]
    on, off, record, lost = _pipeline_pair(docs, stages, min_chars, max_share)
    print(f"\nfull pipeline, planted boilerplate ({' → '.join(stages)}):")
    _print_record(record, on, off)
    removable = sum(
        1
        for doc_id, lines in planted.items()
        for line in lines
        if len(line) >= min_chars and doc_id != min(d for d, ls in planted.items() if line in ls)
    )
    removed_boiler = sum(len(lines & boiler) for lines in lost.values())
    removed_content = sum(len(lines - boiler) for lines in lost.values())
    dropped = [row for row in on.removed if row["reason"] == "dedup:paragraph"]
    print(
        f"  boilerplate lines >= {min_chars} chars removed from kept pages: {removed_boiler} of {removable} removable "
        f"copies ({removed_boiler / removable:.3f}, pages removed whole not counted); content lines removed: "
        f"{removed_content}; pages removed whole: {len(dropped)}"
    )
    examples = Counter(line for lines in lost.values() for line in lines)
    print("  most removed lines:", [line[:60] for line, _ in examples.most_common(4)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--min-chars", type=int, default=50)
    parser.add_argument("--max-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--pipeline", action="store_true", help="also run both corpora through winnow's Beam graph")
    args = parser.parse_args()
    report_real(args.corpora, args.min_chars, args.max_share)
    report_planted(args.corpora, args.min_chars, args.max_share, args.seed)
    if args.pipeline:
        report_pipeline(args.corpora, args.min_chars, args.max_share, args.seed)


if __name__ == "__main__":
    main()
