"""Time and peak memory of partitioned ICP ordering at 10k / 100k / 1M vectors (METHODS §4.7).

Embedding is excluded: the vectors are synthetic, 256-d (model2vec's width), unit length, drawn
from ``N / 200`` Gaussian clusters around random unit centres (σ = 0.08 per dimension) so kNN
lists and cells look like a topical corpus rather than uniform noise. Each size runs in its own
process (so peak RSS is per size) through the same steps as the Beam stage: sample (smallest
H64 ids) → k-means cells → assignment → per cell: exact kNN (k = 9), paper traversal, semantic
dedup → cross-cell edge fraction from 500 sampled queries. Peak RSS includes the bench holding
every vector (N × 1 KiB); in Beam a worker only ever holds one cell plus the sample.

    python bench/ordering_scale.py --sizes 10000 100000 [1000000] [--cell-size 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time

import numpy as np

from winnow.stages.order import ordering

DIM = 256


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = ordering.unit_rows(rng.normal(size=(max(1, n // 200), DIM)).astype(np.float32))
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, len(centres), stop - start)
        noise = rng.normal(scale=0.08, size=(stop - start, DIM)).astype(np.float32)
        out[start:stop] = ordering.unit_rows(centres[labels] + noise)
    return out


def run_size(n: int, cell_size: int, sample_size: int, queries: int, theta: float) -> dict:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    vectors = synthetic(n)
    ids = [f"d{i:08d}" for i in range(n)]
    timings["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    keys = np.array([ordering.h64(doc_id, "order:sample", 0) for doc_id in ids], dtype=np.uint64)
    sample_rows = np.argsort(keys, kind="stable")[: min(n, sample_size)]
    cells = ordering.train_cells(vectors[sample_rows], n, cell_size, seed=0)
    timings["train_cells"] = time.perf_counter() - t

    t = time.perf_counter()
    names = np.array(
        [
            name
            for start in range(0, n, 65_536)
            for name in ordering.assign_cells(vectors[start : start + 65_536], cells)
        ]
    )
    timings["assign_cells"] = time.perf_counter() - t

    t = time.perf_counter()
    cell_names, inverse = np.unique(names, return_inverse=True)
    members_of = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[members_of], np.arange(len(cell_names) + 1))
    knn_graph_traversal = 0.0
    duplicates = edges = 0
    adjacent_sum = 0.0
    adjacent_pairs = 0
    sizes = []
    for c in range(len(cell_names)):
        members = members_of[bounds[c] : bounds[c + 1]]
        sizes.append(len(members))
        start = time.perf_counter()
        result = ordering.order_cell(vectors[members], [ids[i] for i in members], 9, "paper", theta, seed=0)
        knn_graph_traversal += time.perf_counter() - start
        duplicates += len(result.duplicates)
        edges += result.edges
        adjacent_sum += result.adjacent_cosine_sum
        adjacent_pairs += result.adjacent_pairs
    timings["order_cells"] = time.perf_counter() - t

    t = time.perf_counter()
    query_rows = sample_rows[:queries]
    best_sims = np.full((len(query_rows), 9), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(query_rows), 9), dtype=np.int64)
    for start in range(0, n, 100_000):  # exact global 9-NN of the queries, one chunk of vectors at a time
        sims = vectors[query_rows] @ vectors[start : start + 100_000].T
        hits = (query_rows >= start) & (query_rows < start + len(sims[0]))
        sims[np.flatnonzero(hits), query_rows[hits] - start] = -np.inf
        merged_sims = np.concatenate([best_sims, sims], axis=1)
        merged_rows = np.concatenate([best_rows, np.arange(start, start + sims.shape[1])[None].repeat(len(sims), 0)], 1)
        top = np.argpartition(-merged_sims, 8, axis=1)[:, :9]
        best_sims = np.take_along_axis(merged_sims, top, 1)
        best_rows = np.take_along_axis(merged_rows, top, 1)
    crossing = float((names[best_rows] != names[query_rows][:, None]).mean())
    timings["cross_cell_estimate"] = time.perf_counter() - t

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, n, 20_000), rng.integers(0, n, 20_000)
    return {
        "docs": n,
        "cells": len(cell_names),
        "cell_size_min": int(min(sizes)),
        "cell_size_median": float(np.median(sizes)),
        "cell_size_max": int(max(sizes)),
        "edges": edges,
        "semantic_duplicates": duplicates,
        "cross_cell_edge_fraction": crossing,
        "mean_adjacent_cosine": adjacent_sum / max(1, adjacent_pairs),
        "random_adjacent_cosine": float(np.einsum("ij,ij->i", vectors[a], vectors[b]).mean()),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "seconds_excluding_generate": round(sum(v for k, v in timings.items() if k != "generate"), 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _child(args: tuple, queue: multiprocessing.Queue) -> None:
    queue.put(run_size(*args))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--cell-size", type=int, default=20_000)
    parser.add_argument("--sample-size", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--theta", type=float, default=0.95)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    for n in args.sizes:
        queue = context.Queue()
        child = context.Process(
            target=_child, args=((n, args.cell_size, args.sample_size, args.queries, args.theta), queue)
        )
        child.start()
        print(json.dumps(queue.get()), flush=True)
        child.join()


if __name__ == "__main__":
    main()
