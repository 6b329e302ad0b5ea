"""ICP ordering quality on weborganizer-dclm (METHODS §4.9.3): ICP order vs random order.

For each embedder (model2vec, MiniLM) and a TF-IDF kNN floor, on the same documents:
mean adjacent cosine and the share of adjacent documents with the same WebOrganizer topic, in
ICP order (paper traversal, k = 9) unpartitioned and partitioned into k-means cells, against a
random permutation; the cross-cell edge fraction (exact global 9-NN edges whose ends lie in
different cells); and θ_sem calibration: the lowest cosine that ≤ 1% of random pairs reach, with
the recall of the folder's 68 known near-duplicate pairs at it.

MiniLM runs at about 10 docs/s/core on the shared dev box, so ``--minilm-docs`` limits it to a
subset (the first N docs by id); model2vec and TF-IDF are also reported on that same subset.

    python bench/ordering_quality.py [--minilm-docs 1500] [--cell-size 1000] [--out result.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from winnow.core.hashing import h64
from winnow.stages.order import ordering

CORPUS = Path("/work/shared/corpora/weborganizer-dclm")
SEED = 0


def load() -> tuple[list[str], list[str], list[str], list[tuple[str, str]]]:
    with gzip.open(CORPUS / "docs.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    rows.sort(key=lambda r: r["id"])
    pairs = [json.loads(line) for line in (CORPUS / "near_duplicate_pairs.jsonl").read_text().splitlines()]
    return (
        [r["id"] for r in rows],
        [r["text"] for r in rows],
        [r["topic"] for r in rows],
        [(p["id_a"], p["id_b"]) for p in pairs],
    )


def adjacency(path: list[int], unit: np.ndarray, topics: np.ndarray) -> dict[str, float]:
    a, b = np.array(path[:-1]), np.array(path[1:])
    return {
        "mean_adjacent_cosine": float(np.einsum("ij,ij->i", unit[a], unit[b]).mean()),
        "same_topic_share": float((topics[a] == topics[b]).mean()),
    }


def random_path(ids: list[str]) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: h64(ids[i], "bench:random", SEED))


def partitioned_path(vectors: np.ndarray, ids: list[str], cell_size: int, theta: float | None) -> tuple[list, dict]:
    """§4.7 on one machine: cells from a k-means on a sample, ICP inside each, cells in seeded order."""
    sample = vectors[[i for i in random_path(ids)[: min(len(ids), 50_000)]]]
    cells = ordering.train_cells(sample, len(ids), cell_size, SEED)
    names = np.array(ordering.assign_cells(vectors, cells))
    path: list[int] = []
    dropped = 0
    for cell in sorted(set(names.tolist()), key=lambda c: h64(c, "cell_order", SEED)):
        members = np.flatnonzero(names == cell)
        result = ordering.order_cell(vectors[members], [ids[i] for i in members], 9, "paper", theta, seed=SEED)
        path.extend(members[result.path].tolist())
        dropped += len(result.duplicates)
    _, idx = ordering.knn(vectors, 9)
    crossing = float((names[idx] != names[:, None]).mean())
    sizes = np.bincount(np.unique(names, return_inverse=True)[1])
    return path, {
        "cells": len(sizes),
        "cell_size_min": int(sizes.min()),
        "cell_size_max": int(sizes.max()),
        "cross_cell_edge_fraction": crossing,
        "semantic_duplicates": dropped,
    }


def calibrate(unit: np.ndarray, ids: list[str], pairs: list[tuple[str, str]]) -> dict[str, float]:
    random_cos = ordering.random_pair_cosines(unit, 50_000, SEED)
    theta = ordering.calibrate_threshold(random_cos, 0.01)
    where = {doc_id: i for i, doc_id in enumerate(ids)}
    known = [(where[x], where[y]) for x, y in pairs if x in where and y in where]
    known_cos = np.array([float(unit[x] @ unit[y]) for x, y in known])
    return {
        "theta_sem": round(theta, 4),
        "random_pairs_at_or_above": float((random_cos >= theta).mean()),
        "known_pairs": len(known),
        "known_pair_recall": float((known_cos >= theta).mean()) if len(known) else float("nan"),
        "known_pair_cosine_min": float(known_cos.min()) if len(known) else float("nan"),
        "known_pair_cosine_median": float(np.median(known_cos)) if len(known) else float("nan"),
    }


def dedup_table(vectors: np.ndarray, ids: list[str], pairs, thresholds: list[float]) -> list[dict]:
    """Docs semantic dedup removes along the ICP path, and recall of the known pairs, per θ."""
    return [asdict(point) for point in ordering.dedup_sweep(vectors, ids, thresholds, pairs, seed=SEED)]


def evaluate(name: str, vectors: np.ndarray, ids: list[str], topics: np.ndarray, pairs, cell_size: int) -> dict:
    """Ordering quality without dedup (the traversal alone), then what dedup would remove."""
    unit = ordering.unit_rows(vectors)
    calibration = calibrate(unit, ids, pairs)
    random_metrics = adjacency(random_path(ids), unit, topics)
    t0 = time.perf_counter()
    whole = ordering.order_cell(vectors, ids, 9, "paper", None, seed=SEED)
    seconds = time.perf_counter() - t0
    icp = adjacency(whole.path, unit, topics)
    path, cell_info = partitioned_path(vectors, ids, cell_size, None)
    part = adjacency(path, unit, topics)
    return {
        "embedder": name,
        "docs": len(ids),
        "dim": int(vectors.shape[1]),
        "random": random_metrics,
        "icp_unpartitioned": icp | {"order_seconds": round(seconds, 2)},
        "icp_partitioned": part | cell_info,
        "same_topic_gain_unpartitioned": icp["same_topic_share"] / random_metrics["same_topic_share"],
        "same_topic_gain_partitioned": part["same_topic_share"] / random_metrics["same_topic_share"],
        "calibration": calibration,
        "semantic_dedup": dedup_table(vectors, ids, pairs, [calibration["theta_sem"], 0.95, 0.97, 0.98, 0.99]),
    }


def tfidf_floor(texts: list[str], ids: list[str], topics: np.ndarray) -> dict:
    """TF-IDF cosine kNN (k = 9) + paper traversal: the lexical floor a dense embedder should beat."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    matrix = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.5).fit_transform(texts)
    sims = np.full((len(ids), 9), -np.inf, dtype=np.float32)
    idx = np.full((len(ids), 9), -1, dtype=np.int64)
    for start in range(0, len(ids), 1000):
        block = (matrix[start : start + 1000] @ matrix.T).toarray()
        for row in range(len(block)):
            block[row, start + row] = -np.inf
        top = np.argsort(-block, axis=1, kind="stable")[:, :9]
        idx[start : start + len(block)] = top
        sims[start : start + len(block)] = np.take_along_axis(block, top, axis=1)
    path = ordering.paper_order(ordering.Graph.from_knn(sims, idx), ids, SEED)
    a, b = np.array(path[:-1]), np.array(path[1:])
    rand = random_path(ids)
    ra, rb = np.array(rand[:-1]), np.array(rand[1:])
    icp_share = float((topics[a] == topics[b]).mean())
    random_share = float((topics[ra] == topics[rb]).mean())
    return {
        "docs": len(ids),
        "icp_same_topic_share": icp_share,
        "random_same_topic_share": random_share,
        "gain": icp_share / random_share,
    }


def embed(name: str, texts: list[str], cache: Path) -> tuple[np.ndarray, float]:
    if cache.exists():
        data = np.load(cache)
        return data["vectors"], float(data["seconds"])
    encoder = ordering.load_embedder(name)
    t0 = time.perf_counter()
    vectors = np.concatenate([encoder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    seconds = time.perf_counter() - t0
    np.savez(cache, vectors=vectors, seconds=seconds)
    return vectors, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minilm-docs", type=int, default=1500)
    parser.add_argument("--cell-size", type=int, default=1000)
    parser.add_argument("--cache", default="/tmp/winnow-ordering-bench")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ids, texts, topics, pairs = load()
    topic_array = np.array(topics)
    report: dict[str, object] = {}

    def run(label: str, fn: Callable[[], dict]) -> None:
        report[label] = fn()
        print(json.dumps({label: report[label]}, indent=1), flush=True)

    m2v, m2v_seconds = embed("model2vec", texts, cache / "model2vec_all.npz")
    run(
        "model2vec_all",
        lambda: (
            evaluate("model2vec", m2v, ids, topic_array, pairs, args.cell_size)
            | {"embed_docs_per_s": len(ids) / m2v_seconds}
        ),
    )
    run("tfidf_all", lambda: tfidf_floor(texts, ids, topic_array))
    n = min(args.minilm_docs, len(ids))
    sub_ids, sub_texts, sub_topics = ids[:n], texts[:n], topic_array[:n]
    minilm, minilm_seconds = embed("minilm", sub_texts, cache / f"minilm_{n}.npz")
    sub_cell = max(100, args.cell_size * n // len(ids))
    run(
        f"minilm_subset{n}",
        lambda: (
            evaluate("minilm", minilm, sub_ids, sub_topics, pairs, sub_cell) | {"embed_docs_per_s": n / minilm_seconds}
        ),
    )
    run(f"model2vec_subset{n}", lambda: evaluate("model2vec", m2v[:n], sub_ids, sub_topics, pairs, sub_cell))
    run(f"tfidf_subset{n}", lambda: tfidf_floor(sub_texts, sub_ids, sub_topics))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
