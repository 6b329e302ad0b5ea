"""Agreement and speed of winnow's heuristic filters against datatrove 0.10.1 on ~5k real documents.

datatrove runs in its own virtualenv (``bench/_peers.py``; spaCy added, which its English
word tokenizer needs) through a subprocess; both sides see the same texts, one filter group
at a time, on one core each. Printed per filter group: decision agreement and docs/s for
both; per rule: agreement on "this rule removed the document"; for C4: how often the kept
text is byte-identical; and the word-tokenizer comparison (our regex vs spaCy).

    python bench/filter_agreement.py [--limit 5000] [--show 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._peers import peer_python  # noqa: E402
from winnow.stages.filter.config import FilterConfig  # noqa: E402
from winnow.stages.filter.rules import DocStats, FilterChain, split_words  # noqa: E402

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
DATATROVE_SPACY = ["datatrove[processing]==0.10.1", "spacy==3.8.18"]

GROUPS = ("c4", "gopher_quality", "gopher_repetition", "fineweb")

# datatrove reason -> winnow rule name
REASONS = {
    "lorem_ipsum": "c4_lorem_ipsum",
    "curly_bracket": "c4_curly_bracket",
    "too_few_sentences": "c4_min_sentences",
    "gopher_short_doc": "gopher_word_count",
    "gopher_long_doc": "gopher_word_count",
    "gopher_below_avg_threshold": "gopher_mean_word_length",
    "gopher_above_avg_threshold": "gopher_mean_word_length",
    "gopher_too_many_hashes": "gopher_symbol_word_ratio",
    "gopher_too_many_ellipsis": "gopher_symbol_word_ratio",
    "gopher_too_many_bullets": "gopher_bullet_lines",
    "gopher_too_many_end_ellipsis": "gopher_ellipsis_lines",
    "gopher_below_alpha_threshold": "gopher_alpha_words",
    "gopher_enough_stop_words": "gopher_stop_words",
    "dup_para_frac": "gopher_dup_para_frac",
    "dup_para_char_frac": "gopher_dup_para_char_frac",
    "dup_line_frac": "gopher_dup_line_frac",
    "dup_line_char_frac": "gopher_dup_line_char_frac",
    **{f"top_{n}_gram": f"gopher_top_{n}gram" for n in (2, 3, 4)},
    **{f"duplicated_{n}_n_grams": f"gopher_dup_{n}gram" for n in range(5, 11)},
    "line_punct_ratio": "fineweb_line_punct_ratio",
    "short_line_ratio": "fineweb_short_line_ratio",
    "char_dup_ratio": "fineweb_char_dup_ratio",
    "list_ratio": "fineweb_list_ratio",
    "empty": "empty",
}

PEER_SCRIPT = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter,
)
from datatrove.utils.text import split_into_words

def main(path, out, n_tokens):
    docs = [json.loads(line) for line in open(path, encoding="utf-8")]
    filters = {"c4": C4QualityFilter(), "gopher_quality": GopherQualityFilter(),
               "gopher_repetition": GopherRepetitionFilter(), "fineweb": FineWebQualityFilter()}
    split_into_words("warm up the tokenizer.")
    result = {"decisions": {}, "seconds": {}, "tokens": []}
    for name, f in filters.items():
        rows = []
        t0 = time.perf_counter()
        for d in docs:
            doc = Document(text=d["text"], id=d["id"])
            r = f.filter(doc)
            kept, reason = (r, None) if not isinstance(r, tuple) else r
            rows.append([bool(kept), reason, doc.text if (name == "c4" and kept) else None])
        result["seconds"][name] = time.perf_counter() - t0
        result["decisions"][name] = rows
    for d in docs[:n_tokens]:
        result["tokens"].append(split_into_words(d["text"]))
    json.dump(result, open(out, "w"))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def _jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def load_docs(limit: int, seed: int = 0) -> list[dict]:
    """A mix of real web text, curated text and low-quality text, so every rule gets exercised."""
    rng = random.Random(seed)
    docs: list[dict] = []

    def add(prefix: str, rows: list[dict], n: int, field: str = "text") -> None:
        rows = [r for r in rows if isinstance(r.get(field), str) and r[field].strip()]
        for i, r in enumerate(rng.sample(rows, min(n, len(rows)))):
            docs.append({"id": f"{prefix}-{i}", "text": r[field], "src": prefix})

    add("weborganizer", _jsonl_gz(CORPORA / "weborganizer-dclm/docs.jsonl.gz"), 3000)
    add("dclm-human", _jsonl_gz(CORPORA / "dclm-human-quality/quality_labels.jsonl.gz"), 499)
    add("4chan", _jsonl_gz(CORPORA / "olmo-test-fixtures/paloma_4chan_TOXIC.jsonl.gz"), 424)
    add("c4", _jsonl_gz(CORPORA / "olmo-test-fixtures/c4_sample.jsonl.gz"), 30)
    add("data-juicer", _jsonl_gz(CORPORA / "data-juicer-demos/docs.jsonl.gz"), 145)
    add("lee-abc", _jsonl_gz(CORPORA / "lee-abc-news/docs.jsonl.gz"), 350)
    add("state-union", _jsonl_gz(CORPORA / "nltk-corpora/state_union.jsonl.gz"), 65)
    add(
        "enwiki",
        [r for r in _jsonl_gz(CORPORA / "wikipedia-dump-fragments/enwiki_pages.jsonl.gz") if not r.get("redirect_to")],
        106,
        field="wikitext",
    )
    add("ccnet", _jsonl_gz(CORPORA / "dolma-test-fixtures/ccnet_en_head.jsonl.gz"), 20)
    add("dolma-cc", _jsonl_gz(CORPORA / "dolma-test-fixtures/cc_documents.jsonl.gz"), 10)
    # Short line lists (webtext), grouped into pseudo-documents of 20 lines: list-like pages.
    lines = [r["text"] for r in _jsonl_gz(CORPORA / "nltk-corpora/webtext_lines.jsonl.gz")]
    grouped = [{"text": "\n".join(lines[i : i + 20])} for i in range(0, len(lines), 20)]
    add("webtext", grouped, 250)
    # Other languages, 10 sentences a document (the rules are English-tuned; they must still agree).
    sents = defaultdict(list)
    for r in _jsonl_gz(CORPORA / "lingua-language-testdata/sentences.jsonl.gz"):
        sents[r["lang"]].append(r["text"])
    multi = [{"text": " ".join(v[i : i + 10])} for v in sents.values() for i in range(0, 40, 10)]
    add("lingua", multi, 200)
    rng.shuffle(docs)
    return docs[:limit]


def run_ours(docs: list[dict]) -> tuple[dict[str, list], dict[str, float]]:
    decisions: dict[str, list] = {}
    seconds: dict[str, float] = {}
    for group in GROUPS:
        cfg = FilterConfig()
        for other in GROUPS:
            getattr(cfg, other).enabled = other == group
        cfg.c4.terminal_punctuation = True  # datatrove's default (FineWeb's pipeline turns it off)
        cfg.c4.keep_paragraphs = False  # datatrove's output text: kept lines joined by single newlines
        chain = FilterChain(cfg)
        rows = []
        t0 = time.perf_counter()
        for d in docs:
            r = chain(d["text"])
            rows.append([r.kept, r.drop.rule if r.drop else None, r.text if (group == "c4" and r.kept) else None])
        seconds[group] = time.perf_counter() - t0
        decisions[group] = rows
    return decisions, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--show", type=int, default=2, help="examples to print per disagreement class")
    ap.add_argument("--tokens", type=int, default=1000, help="docs for the tokenizer comparison")
    args = ap.parse_args()

    docs = load_docs(args.limit)
    print(f"{len(docs)} docs: {dict(Counter(d['src'] for d in docs))}")
    python = peer_python("datatrove-spacy", DATATROVE_SPACY)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out, script = Path(tmp, "in.jsonl"), Path(tmp, "out.json"), Path(tmp, "peer.py")
        inp.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs), encoding="utf-8")
        script.write_text(PEER_SCRIPT)
        subprocess.run([str(python), str(script), str(inp), str(out), str(args.tokens)], check=True)
        peer = json.loads(out.read_text())

    ours, our_seconds = run_ours(docs)
    print(
        f"\n{'group':18s} {'agree':>7s} {'dt drop':>8s} {'our drop':>8s} "
        f"{'dt docs/s':>10s} {'our docs/s':>10s} {'speedup':>8s}"
    )
    for g in GROUPS:
        theirs, mine = peer["decisions"][g], ours[g]
        agree = sum(a[0] == b[0] for a, b in zip(theirs, mine, strict=True)) / len(docs)
        dt_rate, our_rate = len(docs) / peer["seconds"][g], len(docs) / our_seconds[g]
        print(
            f"{g:18s} {agree:7.4f} {sum(not a[0] for a in theirs):8d} {sum(not b[0] for b in mine):8d} "
            f"{dt_rate:10.0f} {our_rate:10.0f} {our_rate / dt_rate:7.1f}x"
        )
    total_dt, total_ours = sum(peer["seconds"].values()), sum(our_seconds.values())
    print(
        f"{'all four':18s} {'':7s} {'':8s} {'':8s} {len(docs) / total_dt:10.0f} {len(docs) / total_ours:10.0f} "
        f"{total_dt / total_ours:7.1f}x"
    )

    c4_both = [(a[2], b[2]) for a, b in zip(peer["decisions"]["c4"], ours["c4"], strict=True) if a[0] and b[0]]
    same = sum(a == b for a, b in c4_both)
    print(f"\nC4 kept text identical on {same}/{len(c4_both)} docs both keep")

    print(f"\n{'rule':28s} {'agree':>7s} {'dt':>6s} {'ours':>6s} {'both':>6s}")
    for g in GROUPS:
        rules = sorted(
            {REASONS.get(a[1], a[1]) for a in peer["decisions"][g] if a[1]} | {b[1] for b in ours[g] if b[1]}
        )
        for rule in rules:
            t = [REASONS.get(a[1], a[1]) == rule for a in peer["decisions"][g]]
            o = [b[1] == rule for b in ours[g]]
            agree = sum(x == y for x, y in zip(t, o, strict=True)) / len(docs)
            print(
                f"{rule:28s} {agree:7.4f} {sum(t):6d} {sum(o):6d} {sum(x and y for x, y in zip(t, o, strict=True)):6d}"
            )

    print("\nDisagreements by class (datatrove reason -> ours):")
    for g in GROUPS:
        classes: dict[tuple, list[int]] = defaultdict(list)
        for i, (a, b) in enumerate(zip(peer["decisions"][g], ours[g], strict=True)):
            ta = REASONS.get(a[1], a[1]) if not a[0] else "keep"
            tb = b[1] if not b[0] else "keep"
            if ta != tb:
                classes[(ta, tb)].append(i)
        for (ta, tb), idx in sorted(classes.items(), key=lambda kv: -len(kv[1])):
            print(f"  {g:17s} {ta:26s} -> {tb:26s} {len(idx):4d}  e.g. {[docs[i]['id'] for i in idx[: args.show]]}")

    # The word tokenizer: our regex against datatrove's spaCy tokens.
    n = len(peer["tokens"])
    exact = ratio_err = 0.0
    for d, toks in zip(docs[:n], peer["tokens"], strict=True):
        mine_t = split_words(d["text"])
        exact += mine_t == toks
        ratio_err += abs(len(mine_t) - len(toks)) / max(len(toks), 1)
    print(
        f"\nTokenizer vs spaCy on {n} docs: identical token lists {exact / n:.3f}, "
        f"mean |count diff| {ratio_err / n:.4f}"
    )
    t0 = time.perf_counter()
    for d in docs:
        DocStats(d["text"]).words  # noqa: B018
    print(f"regex tokenizer: {len(docs) / (time.perf_counter() - t0):.0f} docs/s")


if __name__ == "__main__":
    main()
