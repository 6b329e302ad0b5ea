"""INGENIOUS through the wired stage (``select.rule: ingenious``) on ``weborganizer-dclm``: a whole run from config.

B9.1 again, but end to end: read JSONL → select (embed, partition, GroupByKey, rank, draw, join back)
→ write one shard set per round. For each partition strategy (``random`` and ``kmeans``, P = 4,
fraction 0.25, exact lazy greedy, T = 1, static embeddings, 5 rounds) it prints

* the run's wall time, and the time of the core alone on the same vectors in the same process (the
  floor: what the Beam wiring adds is the difference);
* whether the stage's round-0 subset equals the core's (random partitions: same keys, same draw);
* round 0 scored on the *full* pool's kernel against 20 uniform random subsets of the same size:
  FL ratio and z, topic / format normalised entropy, share of the 68 near-duplicate pairs with both
  members selected (random expects ≈ 0.0625);
* the manifest's own representativeness figure: per round, Σ_p FL(subset) / Σ_p mean FL(10 random).

Run: ``PYTHONPATH=. python bench/ingenious_stage.py`` (``--docs N`` for a smaller pool).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from ingenious_eval import CORPUS, Scorer, load, run_partitions

from winnow.config import parse_config
from winnow.core.embedders import sentence_encoder
from winnow.run.execute import run_pipeline


def write_pool(docs: list[dict], folder: Path) -> Path:
    path = folder / "pool.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({k: doc[k] for k in ("id", "text", "url", "topic", "format")}) + "\n")
    return path


def run_stage(pool: Path, out: Path, strategy: str, partitions: int, rounds: int) -> tuple[dict, float]:
    config = parse_config(
        {
            "inputs": [{"paths": [str(pool)]}],
            "output": {"dir": str(out), "report": {"enabled": False}},
            "runner": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
            "select": {
                "enabled": True,
                "rule": "ingenious",
                "ingenious": {
                    "embedding": {"model": "static"},
                    "partitions": {"strategy": strategy, "count": partitions},
                    "rounds": {"count": rounds, "seed": 23},
                },
            },
        },
        origin="<bench>",
    )
    start = time.perf_counter()
    result = run_pipeline(config, ["select"])
    return result.manifest, time.perf_counter() - start


def round_ids(out: Path, round_name: str) -> list[str]:
    files = sorted((out / "data" / f"phase={round_name}").glob("*.parquet"))
    return [row["id"] for f in files for row in pq.read_table(f, columns=["id"]).to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--docs", type=int, default=0, help="first N documents only (0: all)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--random-subsets", type=int, default=20)
    args = parser.parse_args()

    docs, pairs = load(args.corpus)
    if args.docs:
        docs = docs[: args.docs]
    start = time.perf_counter()
    vectors = np.asarray(sentence_encoder("static").encode([d["text"] for d in docs]), dtype=np.float32)
    print(
        f"pool: {len(docs)} docs, {len(pairs)} near-duplicate pairs; static embeddings {vectors.shape[1]}-d in "
        f"{time.perf_counter() - start:.1f} s"
    )
    scorer = Scorer(docs, vectors, pairs, args.random_subsets)
    index = {d["id"]: i for i, d in enumerate(docs)}

    start = time.perf_counter()
    core = run_partitions(docs, vectors, args.partitions, args.rounds)
    core_seconds = time.perf_counter() - start
    core_round0 = sorted(r.doc_id for r in core["rows"] if 0 in r.rounds)
    print(f"core alone (random P={args.partitions}, {args.rounds} rounds, vectors given): {core_seconds:.1f} s")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pool = write_pool(docs, Path(tmp))
        for strategy in ("random", "kmeans"):
            out = Path(tmp) / strategy
            manifest, seconds = run_stage(pool, out, strategy, args.partitions, args.rounds)
            overview = next(r for r in manifest["ingenious"] if r["kind"] == "overview")
            width = max(2, len(str(args.rounds - 1)))
            round0 = round_ids(out, f"round-{0:0{width}d}")
            report = scorer.report([index[i] for i in round0])
            same = sorted(round0) == core_round0 if strategy == "random" else None
            counts = manifest["counts"]
            rows.append((strategy, overview, report, seconds, same, counts))
            print(
                json.dumps(
                    {
                        "strategy": strategy,
                        "wall_s": round(seconds, 1),
                        "partitions": overview["partitions"],
                        "sizes": [(b["min"], b["max"], b["partitions"]) for b in overview["size_histogram"]],
                        "largest_kernel_MB": round(overview["largest_kernel_bytes"] / 2**20, 1),
                        "counts": {k: counts[k] for k in ("input", "kept", "repeats", "filtered")},
                        "round0_equals_core": same,
                        "round0": report,
                        "manifest_fl_ratio_per_round": [round(r["fl_ratio"], 4) for r in overview["rounds"]],
                    },
                    indent=1,
                ),
                flush=True,
            )

    print(
        f"\nB9.1 through the stage: round 0 of {args.rounds}, P = {args.partitions}, fraction 0.25, T = 1, "
        f"static embeddings; random = mean of {args.random_subsets} uniform subsets of the same size"
    )
    print(
        "| partitions | wall s (core alone) | selected | = core | FL vs random (z) | topic H (random) | "
        f"format H (random) | near-dup pairs both (random) | manifest FL ratio, rounds 0–{args.rounds - 1} |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    for strategy, overview, v, seconds, same, _ in rows:
        ratios = ", ".join(f"{r['fl_ratio']:.4f}" for r in overview["rounds"])
        equal = "—" if same is None else "yes" if same else "NO"
        print(
            f"| {strategy} | {seconds:.1f} ({core_seconds:.1f}) | {v['size']} | {equal} | "
            f"{v['fl_vs_random']:.4f} ({v['fl_random_z']:.1f}) | "
            f"{v['topic_entropy']:.4f} ({v['topic_entropy_random']:.4f}) | "
            f"{v['format_entropy']:.4f} ({v['format_entropy_random']:.4f}) | "
            f"{v['dup_pairs_both']:.4f} ({v['dup_pairs_both_random']:.4f}) | {ratios} |"
        )


if __name__ == "__main__":
    main()
