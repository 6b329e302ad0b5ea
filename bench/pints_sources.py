"""B14.2: the pints-expository preset end to end on five local sources, as five named inputs.

Sources (``/work/shared/corpora``): ``wikipedia`` (the 106 English articles of
wikipedia-dump-fragments; their wikitext reduced to prose by a few regular expressions: templates,
references, tables and file links dropped, link text kept), ``books_pd`` (*Botchan*, English, cut
into its chapters, Gutenberg header and licence dropped), ``news`` (lee-abc-news, 350 ABC
articles), ``web`` (weborganizer-dclm, the first ``--web-docs`` pages by id hash) and ``dclm``
(dclm-human-quality: 499 pages with a human good/bad label, read as web text). The preset runs
unchanged except: these inputs, a mixture file with equal weights, ``mix.budget`` unset so the
output has the selected pool's size (``fraction: 1.0``), and a local single-process runner.

Prints documents and tokens kept per source, removals per source and reason, the wall time, and the
human-good share of the kept and of the removed ``dclm`` pages against the input's share (what a
random selection keeps, in expectation).

Run: ``PYTHONPATH=. python bench/pints_sources.py``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from winnow.config import load_config, parse_config
from winnow.core.hashing import h64
from winnow.run.execute import run_pipeline

CORPORA = Path("/work/shared/corpora")
SOURCES = ("wikipedia", "books_pd", "news", "web", "dclm")


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def wikitext_to_prose(text: str) -> str:
    """A rough reduction of wikitext to prose (no parser is installed): enough for a filter to judge."""
    for _ in range(5):  # nested templates, innermost first
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)  # tables
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*(?:\[\[[^\]]*\]\][^\]]*)*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def botchan_chapters() -> list[dict]:
    with gzip.open(CORPORA / "sentencepiece-books" / "botchan.txt.gz", "rt", encoding="utf-8") as handle:
        text = handle.read()
    body = text[text.index("CHAPTER I") :]
    end = body.find("End of the Project Gutenberg")
    body = body[:end] if end > 0 else body
    parts = re.split(r"\n(?=CHAPTER [IVXL]+\.?\s*\n)", body)
    return [{"id": f"botchan-{i:02d}", "text": part.strip()} for i, part in enumerate(parts) if part.strip()]


def build_sources(folder: Path, web_docs: int) -> tuple[list[dict], dict[str, int]]:
    wiki = [
        {"id": r["id"], "text": wikitext_to_prose(r["wikitext"])}
        for r in _jsonl(CORPORA / "wikipedia-dump-fragments" / "enwiki_pages.jsonl.gz")
        if not r.get("redirect_to")
    ]
    news = [{"id": r["id"], "text": r["text"]} for r in _jsonl(CORPORA / "lee-abc-news" / "docs.jsonl.gz")]
    web_rows = _jsonl(CORPORA / "weborganizer-dclm" / "docs.jsonl.gz")
    web_rows.sort(key=lambda r: h64(r["id"], "bench-web", 0))
    web = [{"id": r["id"], "text": r["text"], "url": r.get("url")} for r in web_rows[:web_docs]]
    dclm_rows = _jsonl(CORPORA / "dclm-human-quality" / "quality_labels.jsonl.gz")
    dclm = [{"id": r["id"], "text": r["text"], "label": r["label"]} for r in dclm_rows]
    sources = {"wikipedia": wiki, "books_pd": botchan_chapters(), "news": news, "web": web, "dclm": dclm}
    inputs = []
    for name, rows in sources.items():
        (folder / name).mkdir()
        with gzip.open(folder / name / "part-0.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows if row["text"].strip())
        inputs.append({"name": name, "paths": [str(folder / name / "*.jsonl.gz")]})
    labels = {r["id"]: r["label"] for r in dclm}
    return inputs, labels


def _rows(folder: Path, columns: list[str]) -> list[dict]:
    return [r for f in sorted(folder.rglob("*.parquet")) for r in pq.read_table(f, columns=columns).to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web-docs", type=int, default=2000, help="weborganizer-dclm pages (of 8,939)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs, labels = build_sources(folder, args.web_docs)
        (folder / "mixture.csv").write_text("source,weight\n" + "".join(f"{s},1\n" for s in SOURCES))
        data = load_config("pints-expository").model_dump(mode="json")
        data["inputs"] = inputs
        data["mix"]["weights"] = {"manual_file": str(folder / "mixture.csv")}
        data["mix"]["budget"] = None
        data["mix"]["fraction"] = 1.0
        data["output"] = {"dir": str(folder / "out"), "report": {"enabled": False}}
        data["runner"] = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
        config = parse_config(data, origin="<pints bench>")
        start = time.perf_counter()
        manifest = run_pipeline(config, None).manifest
        seconds = time.perf_counter() - start
        kept = _rows(folder / "out" / "data", ["id", "source", "n_tokens", "epoch", "format"])
        removed = _rows(folder / "out" / "removed", ["id", "source", "reason"])
        rejected = (
            _rows(folder / "out" / "rejected", ["source", "stage"]) if (folder / "out" / "rejected").exists() else []
        )

    counts = manifest["counts"]
    print(
        f"preset pints-expository on 5 sources: {counts['input']} documents in, wall {seconds:.0f} s "
        "(local runner, one process, 2 shared cores)"
    )
    print(json.dumps({k: counts[k] for k in ("input", "kept", "repeats", "filtered", "duplicate", "rejected")}))
    source_of = lambda s: s.split("/", 1)[0]  # noqa: E731
    inputs_per = Counter(source_of(r["source"]) for r in kept if not r["epoch"])
    inputs_per.update(source_of(r["source"]) for r in removed)
    inputs_per.update(source_of(r["source"]) for r in rejected)
    print("\nB14.2 per source")
    print("| source | docs in | kept docs | kept tokens (epoch 0) | output tokens (+ repeats) | top removals |")
    print("|---|---:|---:|---:|---:|---|")
    reasons: dict[str, Counter] = defaultdict(Counter)
    for r in removed:
        reasons[source_of(r["source"])][r["reason"]] += 1
    for source in SOURCES:
        first = [r for r in kept if source_of(r["source"]) == source and not r["epoch"]]
        every = [r for r in kept if source_of(r["source"]) == source]
        top = ", ".join(f"{reason} {n}" for reason, n in reasons[source].most_common(4))
        print(
            f"| {source} | {inputs_per[source]} | {len(first)} | {sum(r['n_tokens'] for r in first):,} | "
            f"{sum(r['n_tokens'] for r in every):,} | {top} |"
        )
    print("\nRemovals per reason and source")
    print("| reason | " + " | ".join(SOURCES) + " |")
    print("|---|" + "---:|" * len(SOURCES))
    for reason in sorted({r["reason"] for r in removed}):
        print(f"| {reason} | " + " | ".join(str(reasons[s][reason]) for s in SOURCES) + " |")
    mixture = [r for r in manifest.get("mixture", []) if r.get("kind") == "domain"]
    print(
        "\nMixture (equal weights): "
        + "; ".join(
            f"{r['domain']} planned {r['planned_tokens']:,.0f}, realised {r['realised_tokens']:,}, "
            f"epochs {r['epochs_used']}, unmet {r['unmet_tokens']:,.0f}"
            for r in mixture
        )
    )

    kept_dclm = {r["id"] for r in kept if source_of(r["source"]) == "dclm"}
    removed_dclm = {r["id"] for r in removed if source_of(r["source"]) == "dclm"}
    share = lambda ids: sum(labels[i] for i in ids) / len(ids) if ids else float("nan")  # noqa: E731
    print(
        f"\ndclm-human-quality: human-good share of kept {share(kept_dclm):.3f} (n = {len(kept_dclm)}), "
        f"of removed {share(removed_dclm):.3f} (n = {len(removed_dclm)}), of the input {share(set(labels)):.3f} "
        f"(n = {len(labels)}; a random selection keeps this share)"
    )
    good_reasons: dict[str, list[int]] = defaultdict(list)
    dclm_reason = {r["id"]: r["reason"] for r in removed if source_of(r["source"]) == "dclm"}
    for doc_id, reason in dclm_reason.items():
        good_reasons[reason].append(labels[doc_id])
    print("| removal reason (dclm) | removed | human-good share |")
    print("|---|---:|---:|")
    for reason, values in sorted(good_reasons.items(), key=lambda kv: -len(kv[1])):
        print(f"| {reason} | {len(values)} | {sum(values) / len(values):.3f} |")


if __name__ == "__main__":
    main()
