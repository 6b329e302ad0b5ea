"""INGENIOUS on real web text (docs/ingenious.md): coverage against random subsets, and the cost of partitioning.

B9.1 (P = 4 random partitions, fraction 0.25, exact lazy greedy, T = 1 as the reference) and B9.2
(P ∈ {1, 4, 16}) on ``weborganizer-dclm`` (8,939 docs, 24 topics × 24 formats, 68 near-duplicate
pairs). Every subset is scored on the *full* pool's kernel:

* FL ratio: f(S) / mean f(R) over 20 uniform random subsets R of the same size;
* topic / format normalised entropy H/ln 24 of the subset vs the random subsets' mean;
* the share of near-duplicate pairs with both members in the subset (random expects 0.0625);
* wall time per phase (kernel, ranking, draws, FL bookkeeping) and the largest kernel's bytes.

Besides the reference draw (T = 1, round 0), it prints the same figures for a deterministic
top-k_p by greedy rank and for draws at other temperatures (redrawn from the written gains).
Embeddings (MiniLM by default) are computed once and cached under bench/.cache/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from winnow.stages.select.ingenious import (
    KERNEL_ONE,
    cosine_kernel,
    draw_round,
    facility_location_value,
    partition_of,
    partition_samples,
    select_partition,
    subset_size,
    taylor_softmax,
)
from winnow.stages.select.ingenious_config import IngeniousConfig

CORPUS = Path("/work/shared/corpora/weborganizer-dclm")  # --corpus elsewhere
CACHE = Path(__file__).resolve().parent / ".cache"
SEED = 23


def load(corpus: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    with gzip.open(corpus / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    with open(corpus / "near_duplicate_pairs.jsonl", encoding="utf-8") as handle:
        pairs = [(row["id_a"], row["id_b"]) for row in map(json.loads, handle)]
    return docs, pairs


def embed(docs: list[dict], name: str, corpus: Path) -> tuple[np.ndarray, float]:
    """The pool's vectors, cached: (matrix in the order of ``docs``, seconds it took to embed)."""
    cache = CACHE / f"ingenious_{name}_{corpus.name}.npz"
    ids = [d["id"] for d in docs]
    if cache.exists():
        data = np.load(cache)
        if data["ids"].tolist() == ids:
            return data["vectors"], float(data["seconds"])
    from winnow.core.embedders import sentence_encoder

    encoder = sentence_encoder(name)
    texts = [d["text"] for d in docs]
    start = time.perf_counter()
    vectors = np.concatenate([encoder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ids=np.array(ids), vectors=vectors.astype(np.float32), seconds=seconds)
    return vectors.astype(np.float32), seconds


def normalised_entropy(labels: list[str], classes: int) -> float:
    counts = Counter(labels)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) / math.log(classes)


class Scorer:
    """Figures of a subset (indices into the pool) against the full pool and random subsets."""

    def __init__(self, docs: list[dict], vectors: np.ndarray, pairs: list[tuple[str, str]], random_subsets: int):
        self.docs = docs
        self.index = {d["id"]: i for i, d in enumerate(docs)}
        self.pairs = [(self.index[a], self.index[b]) for a, b in pairs if a in self.index and b in self.index]
        self.topics = [d["topic"] for d in docs]
        self.formats = [d["format"] for d in docs]
        start = time.perf_counter()
        self.kernel = cosine_kernel(vectors)
        self.kernel_seconds = time.perf_counter() - start
        self.random_subsets = random_subsets
        self._random: dict[int, dict[str, float]] = {}

    def raw(self, subset: list[int]) -> dict[str, float]:
        chosen = set(subset)
        return {
            "fl": facility_location_value(self.kernel, subset) / KERNEL_ONE,
            "topic_entropy": normalised_entropy([self.topics[i] for i in subset], 24),
            "format_entropy": normalised_entropy([self.formats[i] for i in subset], 24),
            "dup_pairs_both": sum(a in chosen and b in chosen for a, b in self.pairs) / len(self.pairs),
        }

    def random(self, size: int) -> dict[str, float]:
        if size not in self._random:
            rng = np.random.default_rng(size)
            draws = [rng.choice(len(self.docs), size, replace=False).tolist() for _ in range(self.random_subsets)]
            runs = [self.raw(subset) for subset in draws]
            self._random[size] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]} | {
                "fl_std": float(np.std([r["fl"] for r in runs]))
            }
        return self._random[size]

    def report(self, subset: list[int]) -> dict[str, float]:
        own, rnd = self.raw(subset), self.random(len(subset))
        return {
            "size": len(subset),
            "fl": round(own["fl"], 2),
            "fl_vs_random": round(own["fl"] / rnd["fl"], 4),
            "fl_random_z": round((own["fl"] - rnd["fl"]) / rnd["fl_std"], 1),
            "topic_entropy": round(own["topic_entropy"], 4),
            "topic_entropy_random": round(rnd["topic_entropy"], 4),
            "format_entropy": round(own["format_entropy"], 4),
            "format_entropy_random": round(rnd["format_entropy"], 4),
            "dup_pairs_both": round(own["dup_pairs_both"], 4),
            "dup_pairs_both_random": round(rnd["dup_pairs_both"], 4),
        }


def run_partitions(docs: list[dict], vectors: np.ndarray, count: int, rounds: int, optimizer: str = "lazy") -> dict:
    """select_partition over P hash partitions, as the Beam stage will call it; phase times summed."""
    config = IngeniousConfig.model_validate(
        {
            "partitions": {"count": count, "max_size": 10_000},
            "rounds": {"count": rounds, "seed": SEED},
            "optimizer": optimizer,
        }
    )
    groups: dict[int, list] = defaultdict(list)
    for i, doc in enumerate(docs):
        groups[partition_of(doc["id"], SEED, count)].append((doc["id"], 1, vectors[i]))
    phases: Counter[str] = Counter()
    rows, summaries = [], []
    start = time.perf_counter()
    for key in sorted(groups):
        out = select_partition(
            key,
            groups[key],
            config,
            total_docs=len(docs),
            total_tokens=len(docs),
            timer=lambda phase, s: phases.update({phase: s}),
        )
        rows += out.rows
        summaries += out.summaries
    wall = time.perf_counter() - start
    return {"rows": rows, "summaries": summaries, "wall": wall, "phases": dict(phases)}


def redraw(rows, summaries, docs: list[dict], temperature: float) -> list[int]:
    """Round 0 again at another temperature, from the written gains (the ranking is the same)."""
    budgets = {s["partition"]: int(s["budget"]) for s in summaries}
    by_part: dict[int, list] = defaultdict(list)
    for row in rows:
        by_part[row.partition].append(row)
    index = {d["id"]: i for i, d in enumerate(docs)}
    chosen: list[int] = []
    for part, members in by_part.items():
        ranked = [r for r in members if r.rank is not None]
        weights = taylor_softmax([r.gain for r in ranked], temperature)
        probs = dict(zip([r.doc_id for r in ranked], weights, strict=True))
        ids = [r.doc_id for r in members]
        picked = draw_round(ids, [probs.get(d, 0.0) for d in ids], [1] * len(ids), budgets[part], SEED, 0)
        chosen += [index[ids[i]] for i in picked]
    return chosen


def top_by_rank(rows, summaries, docs: list[dict]) -> list[int]:
    budgets = {s["partition"]: int(s["budget"]) for s in summaries}
    index = {d["id"]: i for i, d in enumerate(docs)}
    return [index[r.doc_id] for r in rows if r.rank is not None and r.rank < budgets[r.partition]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--embedder", default="minilm", help="minilm | model2vec")
    parser.add_argument("--partitions", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--random-subsets", type=int, default=20)
    parser.add_argument("--temperatures", default="0.01,0.1,10,100")
    parser.add_argument(
        "--reference-optimizer-at", type=int, default=4, help="P of a stochastic-optimizer run; 0: none"
    )
    args = parser.parse_args()

    docs, pairs = load(args.corpus)
    vectors, embed_seconds = embed(docs, args.embedder, args.corpus)
    print(f"pool: {len(docs)} docs, {len(pairs)} near-duplicate pairs, {args.embedder} {vectors.shape[1]}-d")
    print(f"embedding: {embed_seconds:.1f} s ({len(docs) / embed_seconds:.0f} docs/s, cached)")
    scorer = Scorer(docs, vectors, pairs, args.random_subsets)
    print(f"full-pool kernel for scoring: {scorer.kernel_seconds:.1f} s")
    k = subset_size(len(docs), 0.25)

    results: dict[int, dict] = {}
    for count in [int(p) for p in args.partitions.split(",")]:
        run = run_partitions(docs, vectors, count, args.rounds)
        index = {d["id"]: i for i, d in enumerate(docs)}
        rounds = [[index[r.doc_id] for r in run["rows"] if t in r.rounds] for t in range(args.rounds)]
        sizes = sorted(s["size"] for s in run["summaries"])
        results[count] = {
            "partitions": len(run["summaries"]),
            "sizes": f"{sizes[0]}–{sizes[-1]}",
            "selected": len(rounds[0]),
            "k": k,
            "wall_s": round(run["wall"], 1),
            "phases_s": {p: round(s, 1) for p, s in run["phases"].items()},
            "largest_kernel_MB": round(sizes[-1] ** 2 * 4 / 2**20, 1),
            "evaluations_per_doc": round(sum(s["evaluations"] for s in run["summaries"]) / len(docs), 1),
            "round0": scorer.report(rounds[0]),
            "rounds_fl_vs_random": [scorer.report(r)["fl_vs_random"] for r in rounds],
            "top_k_by_rank": scorer.report(top_by_rank(run["rows"], run["summaries"], docs)),
        }
        for t in [float(x) for x in args.temperatures.split(",") if x]:
            results[count][f"T={t:g}"] = scorer.report(redraw(run["rows"], run["summaries"], docs, t))
        print(json.dumps({f"P={count}": results[count]}, indent=1, ensure_ascii=False), flush=True)
        rank_sum = sum(partition_samples(s["size"], len(docs), k) for s in run["summaries"])
        assert rank_sum == len(rounds[0]), "every round draws Σ k_p samples"

    if args.reference_optimizer_at:
        count = args.reference_optimizer_at
        run = run_partitions(docs, vectors, count, 1, optimizer="stochastic")
        index = {d["id"]: i for i, d in enumerate(docs)}
        reference = {
            "wall_s": round(run["wall"], 1),
            "phases_s": {p: round(s, 1) for p, s in run["phases"].items()},
            "evaluations_per_doc": round(sum(s["evaluations"] for s in run["summaries"]) / len(docs), 1),
            "round0": scorer.report([index[r.doc_id] for r in run["rows"] if 0 in r.rounds]),
            "top_k_by_rank": scorer.report(top_by_rank(run["rows"], run["summaries"], docs)),
        }
        print(json.dumps({f"P={count} reference optimizer (stochastic, eps 0.1)": reference}, indent=1), flush=True)
        for name in ("round0", "top_k_by_rank"):
            results.setdefault(count, {})[f"reference optimizer: {name}"] = reference[name]

    for count, r in results.items():
        print(f"\nB9.1 at P = {count}: subsets of ~{r['selected']} docs scored on the full pool (random = mean of 20)")
        print("| subset | FL vs random | z | topic H (random) | format H (random) | dup pairs both (random) |")
        print("|---|---:|---:|---:|---:|---:|")
        variants = [("draw T=1 (reference), round 0", r["round0"]), ("greedy top-k_p by rank", r["top_k_by_rank"])]
        variants += [(f"draw {name}, round 0", v) for name, v in r.items() if name.startswith("T=")]
        variants += [(name, v) for name, v in r.items() if name.startswith("reference optimizer")]
        for name, v in variants:
            print(
                f"| {name} | {v['fl_vs_random']:.4f} | {v['fl_random_z']:.1f} | "
                f"{v['topic_entropy']:.4f} ({v['topic_entropy_random']:.4f}) | "
                f"{v['format_entropy']:.4f} ({v['format_entropy_random']:.4f}) | "
                f"{v['dup_pairs_both']:.4f} ({v['dup_pairs_both_random']:.4f}) |"
            )

    base = results[min(results)]["round0"]["fl"]
    print("\nB9.2 cost of partitioning (FL on the full pool, round 0 at T = 1; top-k by rank beside it)")
    print("|   P | parts | sizes | selected | FL / FL(P=1) | FL vs random | top-k FL / FL(P=1) | wall s | kernel MB |")
    print("|----:|------:|------:|---------:|-------------:|-------------:|-------------------:|-------:|----------:|")
    top_base = results[min(results)]["top_k_by_rank"]["fl"]
    for count, r in results.items():
        print(
            f"| {count:3d} | {r['partitions']:5d} | {r['sizes']} | {r['selected']:8d} | "
            f"{r['round0']['fl'] / base:12.4f} | {r['round0']['fl_vs_random']:12.4f} | "
            f"{r['top_k_by_rank']['fl'] / top_base:18.4f} | {r['wall_s']:6.1f} | {r['largest_kernel_MB']:9.1f} |"
        )


if __name__ == "__main__":
    main()
