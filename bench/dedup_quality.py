"""Near-duplicate quality of winnow's MinHash stage on real text with seeded edits.

Builds a corpus from the real documents in ../shared/corpora: base documents are first
cleaned of their own near-duplicates; some become *families*: the original, light edits
(a few words substituted, deleted, inserted or swapped, plus case, punctuation and
whitespace noise; they must be found) and heavy edits (15–35 % of words changed; they
must not be found). The 75 documents of weborganizer-dclm/near_duplicate_pairs.jsonl are
added with their 68 natural pairs. Truth is the exact word 5-gram Jaccard of the simplified
texts. It runs MinHashDedup (default config) on the local runner and prints

  * precision of removed documents (a removal is right when the document's exact Jaccard with
    the document it was removed for is ≥ 0.5) and recall of removed documents (per family, all
    but one of the original and its edits at Jaccard ≥ 0.8 should go),
  * pair recall by true-Jaccard bin, and the true-Jaccard distribution of found vs missed pairs.

Goal: P ≥ 0.98 and R ≥ 0.95 for pairs with true Jaccard ≥ 0.8.

Drift chains (``--chains``, marin#6854's failure): a document edited a little at a time, each
version from the previous one (consecutive versions are near-duplicates, the ends of a chain are
not). LSH clusters are transitive, so a whole chain becomes one cluster; the stage is run with the
text check against the cluster's keeper (default, ``verify_text``) and without it, and both are
scored the same way: a removal of a chain version far from its keeper is a wrong removal.

    python bench/dedup_quality.py [--origins 1500] [--chains 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The checkout's sibling shared/ (main checkout) or the nearest one above (a worktree).
SHARED = next(
    (p / "shared" / "corpora" for p in Path(__file__).resolve().parents if (p / "shared" / "corpora").is_dir()),
    Path("shared/corpora"),
)

from winnow.stages.dedup import minhash as mh  # noqa: E402

# (file, text field, documents of grouped records) — prose only; short records are grouped.
SOURCES: list[tuple[str, str, int]] = [
    ("weborganizer-dclm/docs.jsonl.gz", "text", 1),
    ("dclm-human-quality/quality_labels.jsonl.gz", "text", 1),
    ("article-extraction-benchmark/pages.jsonl.gz", "article_body", 1),
    ("lee-abc-news/docs.jsonl.gz", "text", 1),
    ("olmo-test-fixtures/c4_sample.jsonl.gz", "text", 1),
    ("olmo-test-fixtures/paloma_c4_100_domains_guardian.jsonl.gz", "text", 1),
    ("dolma-test-fixtures/ccnet_en_head.jsonl.gz", "text", 1),
    ("dolma-test-fixtures/cc_documents.jsonl.gz", "text", 1),
    ("nltk-corpora/brown.jsonl.gz", "text", 1),
    ("nltk-corpora/inaugural.jsonl.gz", "text", 1),
    ("nltk-corpora/state_union.jsonl.gz", "text", 1),
    ("nltk-corpora/udhr2.jsonl.gz", "text", 1),
    ("data-juicer-demos/docs.jsonl.gz", "text", 1),
    ("dataman-qurating-ratings/ratings.jsonl.gz", "text", 1),
    ("wikipedia-dump-fragments/enwiki_pages.jsonl.gz", "wikitext", 1),
    ("nltk-corpora/webtext_lines.jsonl.gz", "text", 40),  # forum lines → 40-line documents
    ("lingua-language-testdata/sentences.jsonl.gz", "text", 25),  # 75 languages, 25 sentences each
]
PAIRS = "weborganizer-dclm/near_duplicate_pairs.jsonl"


def real_documents(min_words: int = 50) -> list[dict[str, Any]]:
    """Every real document of the shared corpora with at least ``min_words`` words."""
    docs: list[dict[str, Any]] = []
    for name, field, group in SOURCES:
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as handle:
            texts = [t for t in (json.loads(line).get(field) for line in handle) if isinstance(t, str) and t.strip()]
        if group > 1:
            texts = ["\n".join(texts[i : i + group]) for i in range(0, len(texts), group)]
        source = name.split("/")[0]
        stem = name.split("/")[1].split(".")[0]
        docs += [{"id": f"{source}/{stem}-{i}", "text": t, "source": source} for i, t in enumerate(texts)]
    for name in ("botchan.txt.gz", "wagahaiwa_nekodearu.txt.gz"):  # two novels → 40-line chapters
        with gzip.open(SHARED / "sentencepiece-books" / name, "rt", encoding="utf-8") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
        docs += [
            {"id": f"{name.split('.')[0]}-{i}", "text": "\n".join(lines[i : i + 40]), "source": "books"}
            for i in range(0, len(lines), 40)
        ]
    # Whitespace words, or length for scripts written without spaces.
    return [d for d in docs if len(d["text"].split()) >= min_words or len(d["text"]) > 1000]


def shingle_sets(texts: list[str]) -> list[np.ndarray]:
    """Sorted unique 5-gram shingle hashes per text (exact Jaccard by array intersection)."""
    out: list[np.ndarray] = []
    hasher = mh.ShingleHasher()
    for start in range(0, len(texts), 256):
        values, counts = hasher.hash_batch(texts[start : start + 256])
        for part in np.split(values, np.cumsum(counts)[:-1]):
            out.append(np.unique(part))
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def drop_natural_duplicates(docs: list[dict[str, Any]], sets: list[np.ndarray]) -> list[int]:
    """Indices of a subset with no pair at exact Jaccard ≥ 0.3 among LSH candidates of a
    sensitive banding (40 × 2 over 80 permutations: 50 % candidate rate near J = 0.16)."""
    keep = [i for i, s in enumerate(sets) if len(s) > 0]
    signatures = mh.MinHasher(80, seed=7).signatures([sets[i] for i in keep])
    keys = mh.band_hashes(signatures, 40, 2)
    buckets: dict[tuple[int, int], list[int]] = {}
    for row, i in enumerate(keep):
        for band, key in enumerate(keys[row].tolist()):
            buckets.setdefault((band, key), []).append(i)
    dropped: set[int] = set()
    for members in buckets.values():
        for j in members[1:]:
            if j not in dropped and any(
                jaccard(sets[i], sets[j]) >= 0.3 for i in members[: members.index(j)] if i not in dropped
            ):
                dropped.add(j)
    return [i for i in keep if i not in dropped]


# --- seeded edits ----------------------------------------------------------------------------


def _edit_words(words: list[str], rate: float, rng: random.Random, vocabulary: list[str]) -> list[str]:
    words = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        op, at = rng.random(), rng.randrange(len(words))
        if op < 0.4:
            words[at] = rng.choice(vocabulary)
        elif op < 0.6 and len(words) > 10:
            del words[at]
        elif op < 0.8:
            words.insert(at, rng.choice(vocabulary))
        elif at + 1 < len(words):
            words[at], words[at + 1] = words[at + 1], words[at]
    return words


def _noise(words: list[str], rng: random.Random) -> str:
    """Case, punctuation and whitespace changes that normalisation must see through."""
    out = []
    for word in words:
        r = rng.random()
        if r < 0.03:
            word = word.upper()
        elif r < 0.05:
            word += rng.choice([",", ";", " -", "!"])
        out.append(word)
    return rng.choice([" ", "  ", "\n"]).join(out)


def light_edit(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    if rng.random() < 0.25:  # truncation, as boilerplate-stripped or cut-off copies
        words = words[: max(10, round(len(words) * rng.uniform(0.88, 0.97)))]
    else:
        words = _edit_words(words, rng.uniform(0.002, 0.02), rng, vocabulary)
    return _noise(words, rng)


def heavy_edit(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    return _noise(_edit_words(text.split(), rng.uniform(0.15, 0.35), rng, vocabulary), rng)


def drift_chain(text: str, length: int, rng: random.Random, vocabulary: list[str]) -> list[str]:
    """``length`` versions, each with about 2% of the previous version's words changed."""
    versions, words = [], text.split()
    for _ in range(length):
        words = _edit_words(words, 0.02, rng, vocabulary)
        versions.append(" ".join(words))
    return versions


def build_corpus(
    origins: int,
    seed: int = 0,
    *,
    light_per_origin: tuple[int, int] = (1, 3),
    heavy_share: float = 0.5,
    base: list[dict[str, Any]] | None = None,
    chains: int = 0,
    chain_length: int = 8,
) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    """(documents, family of each family document, role of each document).

    Every cleaned real document appears once; ``origins`` of them get light edits (and with
    probability ``heavy_share`` one heavy edit), ``chains`` others a drift chain whose versions
    have the previous version as family. Roles: origin, light, heavy, chain, single, natural.
    """
    rng = random.Random(seed)
    docs = base if base is not None else real_documents()
    sets = shingle_sets([d["text"] for d in docs])
    docs = [docs[i] for i in drop_natural_duplicates(docs, sets)]
    vocabulary = sorted({w for d in docs[:2000] for w in d["text"].split()[:200]})
    eligible = [i for i, d in enumerate(docs) if 100 <= len(d["text"].split()) <= 20_000]
    chosen = set(rng.sample(eligible, min(origins, len(eligible))))
    chained = set(rng.sample(sorted(set(eligible) - chosen), min(chains, len(set(eligible) - chosen))))
    out, family, role = [], {}, {}
    for i, d in enumerate(docs):
        out.append({"id": d["id"], "text": d["text"], "source": d["source"], "url": None, "metadata": None})
        role[d["id"]] = "single"
        if i in chained:
            previous = d["id"]
            for k, text in enumerate(drift_chain(d["text"], chain_length, rng, vocabulary)):
                vid = f"{d['id']}~chain{k}"
                out.append({"id": vid, "text": text, "source": d["source"], "url": None, "metadata": None})
                family[vid], role[vid], previous = previous, "chain", vid
            continue
        if i not in chosen:
            continue
        role[d["id"]] = "origin"
        family[d["id"]] = d["id"]
        variants = [("light", light_edit(d["text"], rng, vocabulary)) for _ in range(rng.randint(*light_per_origin))]
        if rng.random() < heavy_share:
            variants.append(("heavy", heavy_edit(d["text"], rng, vocabulary)))
        for k, (kind, text) in enumerate(variants):
            vid = f"{d['id']}~{kind}{k}"
            out.append({"id": vid, "text": text, "source": d["source"], "url": None, "metadata": None})
            family[vid], role[vid] = d["id"], kind
    rng.shuffle(out)
    return out, family, role


def natural_pairs() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    with gzip.open(SHARED / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        by_id = {d["id"]: d for d in map(json.loads, handle)}
    pairs = [(p["id_a"], p["id_b"]) for p in map(json.loads, (SHARED / PAIRS).read_text().splitlines())]
    ids = sorted({x for pair in pairs for x in pair})
    docs = [
        {"id": f"nat-{i}", "text": by_id[i]["text"], "source": "natural", "url": None, "metadata": None} for i in ids
    ]
    return docs, [(f"nat-{a}", f"nat-{b}") for a, b in pairs]


# --- running winnow --------------------------------------------------------------------------


def run_winnow(docs: list[dict[str, Any]], config: dict[str, Any] | None = None) -> tuple[dict[str, str], float, float]:
    """{removed id: duplicate_of} from MinHashDedup on the local runner, the wall time and the CPU time
    (the in-memory runner runs every step in this process)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from winnow.stages.dedup.config import MinHashConfig
    from winnow.stages.dedup.near import MinHashDedup

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        start, cpu = time.time(), time.process_time()
        options = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"])
        with beam.Pipeline(options=options) as pipeline:
            out = (
                pipeline
                | beam.io.ReadFromText(str(path))
                | beam.Map(json.loads)
                | MinHashDedup(MinHashConfig(**(config or {})))
            )
            _ = (
                out["removed"]
                | beam.Map(lambda d: json.dumps([d["id"], d["duplicate_of"]]))
                | beam.io.WriteToText(str(Path(tmp) / "removed"))
            )
        removed = dict(json.loads(line) for p in Path(tmp).glob("removed*") for line in p.read_text().splitlines())
        return removed, time.time() - start, time.process_time() - cpu


def quantiles(values: list[float]) -> str:
    if not values:
        return "—"
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return f"n={len(values)} min {q[0]:.2f} p10 {q[1]:.2f} median {q[2]:.2f} p90 {q[3]:.2f} max {q[4]:.2f}"


def evaluate(docs: list[dict[str, Any]], removed: dict[str, str], pairs: list[tuple[str, str, str]]) -> Iterator[str]:
    """Lines of the report. ``pairs``: (a, b, kind) ground-truth pairs to check."""
    text = {d["id"]: d["text"] for d in docs}
    ids = sorted(text)
    sets = dict(zip(ids, shingle_sets([text[i] for i in ids]), strict=True))

    def rep(x: str) -> str:
        return removed.get(x, x)

    truth = {(a, b): jaccard(sets[a], sets[b]) for a, b, _ in pairs}
    # Precision: a removal is right when the removed document is a near duplicate (J ≥ 0.5) of
    # the document it was removed for.
    right = sum(1 for x, keeper in removed.items() if jaccard(sets[x], sets[keeper]) >= 0.5)
    precision = right / len(removed) if removed else 1.0
    # Recall of removed documents: per connected group of true pairs at J ≥ 0.8, all but one go.
    uf = mh.UnionFind()
    for (a, b), j in truth.items():
        if j >= 0.8:
            uf.union(a, b)
    groups: dict[Any, list[str]] = {}
    for node in list(uf._parent):
        groups.setdefault(uf.find(node), []).append(node)
    should = sum(len(g) - 1 for g in groups.values())
    done = sum(min(sum(1 for x in g if x in removed), len(g) - 1) for g in groups.values())
    recall = done / should if should else 1.0
    yield f"documents {len(docs)}, removed {len(removed)}"
    yield f"precision of removed documents (J with keeper ≥ 0.5): {precision:.4f} ({right}/{len(removed)})"
    yield f"recall of removed documents (groups at J ≥ 0.8): {recall:.4f} ({done}/{should})"
    found = {pair: rep(pair[0]) == rep(pair[1]) for pair in truth}
    high = [found[p] for p, j in truth.items() if j >= 0.8]
    yield f"pair recall at true J ≥ 0.8: {np.mean(high):.4f} ({sum(high)}/{len(high)})"
    for kind in sorted({k for _, _, k in pairs}):
        sub = [(found[(a, b)], truth[(a, b)]) for a, b, k in pairs if k == kind]
        yield f"  {kind:8s} pairs: found {sum(f for f, _ in sub)}/{len(sub)}; true J {quantiles([j for _, j in sub])}"
    bins = [0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01]
    yield "pair recall by true J: " + "  ".join(
        f"[{lo:.2f},{min(hi, 1):.2f}) {sum(found[p] for p, j in truth.items() if lo <= j < hi)}/"
        f"{sum(1 for j in truth.values() if lo <= j < hi)}"
        for lo, hi in itertools.pairwise(bins)
    )
    yield f"true J of found pairs:  {quantiles([j for p, j in truth.items() if found[p]])}"
    yield f"true J of missed pairs: {quantiles([j for p, j in truth.items() if not found[p]])}"
    wrong = [(x, k, jaccard(sets[x], sets[k])) for x, k in removed.items() if jaccard(sets[x], sets[k]) < 0.5]
    if wrong:
        yield f"wrong removals (J < 0.5), first 5: {[(x, k, round(j, 3)) for x, k, j in wrong[:5]]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--origins", type=int, default=1500, help="documents that get seeded edits")
    parser.add_argument("--base", type=int, default=6000, help="real documents drawn for the corpus")
    parser.add_argument("--chains", type=int, default=150, help="documents that get a drift chain of 8 versions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    pool = real_documents()
    base = random.Random(args.seed).sample(pool, min(args.base, len(pool)))
    docs, family, role = build_corpus(args.origins, args.seed, base=base, chains=args.chains)
    nat_docs, nat_pairs = natural_pairs()
    docs += nat_docs
    # Chain versions are scored by precision only: "all but one of a group at J ≥ 0.8 should go"
    # would reward the transitive collapse the text check is there to stop.
    pairs = [(x, family[x], role[x]) for x in family if x != family[x] and role[x] != "chain"]
    pairs += [(a, b, "natural") for a, b in nat_pairs]
    mb = sum(len(d["text"].encode("utf-8", "surrogatepass")) for d in docs) / 1e6
    print(
        f"corpus: {len(docs)} docs, {mb:.1f} MB text, built in {time.time() - start:.1f}s "
        f"({sum(r == 'light' for r in role.values())} light, {sum(r == 'heavy' for r in role.values())} heavy edits)"
    )
    chain_ids = {x for x, r in role.items() if r == "chain"}
    for label, config in (
        ("text check against the keeper (default)", {}),
        ("no text check (signature-verified edges, transitive clusters)", {"verify_text": False}),
    ):
        removed, seconds, cpu = run_winnow(docs, config)
        print(f"\nwinnow MinHashDedup (fineweb preset, {label}): {seconds:.1f}s wall, {cpu:.1f}s CPU")
        for line in evaluate(docs, removed, pairs):
            print(line)
        text = {d["id"]: d["text"] for d in docs}
        chain_removed = {x: k for x, k in removed.items() if x in chain_ids}
        far = [
            x
            for x, k in chain_removed.items()
            if jaccard(*shingle_sets([text[x], text[k]])) < 0.5  # the same test as the precision above
        ]
        print(
            f"  drift chains: {len(chain_removed)} of {len(chain_ids)} versions removed, "
            f"{len(far)} of them sharing less than J 0.5 with the document kept for them"
        )


if __name__ == "__main__":
    main()
