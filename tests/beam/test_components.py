"""Connected components (large-star/small-star) against a single-process union-find."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from winnow.beam import components as cc
from winnow.stages.dedup import minhash as mh

DATA = Path(__file__).resolve().parents[1] / "data"


def union_find(edges: list[tuple[object, object]]) -> dict[object, object]:
    uf = mh.UnionFind()
    for a, b in edges:
        uf.union(a, b)
    return uf.components()


def random_graph(rng: random.Random, nodes: int, edges: int) -> list[tuple[int, int]]:
    return [(rng.randrange(nodes), rng.randrange(nodes)) for _ in range(edges)]


def chain(length: int, labels: list[int]) -> list[tuple[int, int]]:
    return [(labels[i], labels[i + 1]) for i in range(length - 1)]


def star(centre: int, leaves: list[int]) -> list[tuple[int, int]]:
    return [(centre, leaf) if i % 2 else (leaf, centre) for i, leaf in enumerate(leaves)]


def real_edges() -> list[tuple[int, int]]:
    """LSH candidate edges (bucket member → bucket minimum) among real documents with their
    near-duplicates: the shape the dedup stage feeds to components."""
    with gzip.open(DATA / "dedup" / "pairs_docs.jsonl.gz", "rt") as handle:
        docs = [json.loads(line)["text"] for line in handle]
    values, counts = mh.ShingleHasher().hash_batch(docs)
    keep = counts > 0
    keys = mh.band_hashes(mh.MinHasher().signatures_flat(values, counts[keep]), 14, 8)
    nodes = np.flatnonzero(keep)
    buckets: dict[tuple[int, int], list[int]] = {}
    for row, node in enumerate(nodes.tolist()):
        for band, key in enumerate(keys[row].tolist()):
            buckets.setdefault((band, key), []).append(node)
    return [(min(m), x) for m in buckets.values() if len(m) > 1 for x in m if x != min(m)]


def graphs() -> dict[str, list[tuple[int, int]]]:
    rng = random.Random(0)
    shuffled = list(range(3000))
    rng.shuffle(shuffled)
    return {
        "sparse": random_graph(rng, 2000, 1200),
        "dense": random_graph(rng, 300, 900),
        "long_random_chain": chain(2000, shuffled),
        "sorted_chain": chain(300, list(range(300))),
        "reversed_chain": chain(300, list(range(300, 0, -1))),
        "stars": star(500, list(range(501, 1500))) + star(7, [3, 9, 11]) + [(1500, 3)],
        "real": real_edges(),
        "self_loops_and_repeats": [(1, 1), (1, 2), (2, 1), (1, 2), (5, 5)],
    }


@pytest.mark.parametrize("step", ["contract", "star"])
@pytest.mark.parametrize("name", list(graphs()))
def test_numpy_rounds_equal_union_find(name: str, step: str) -> None:
    edges = [(a, b) for a, b in graphs()[name] if a != b]  # the numpy core ignores self-loops
    src = np.array([a for a, _ in edges], dtype=np.uint64)
    dst = np.array([b for _, b in edges], dtype=np.uint64)
    labels, unconverged = cc.components_reference_rounds(src, dst, rounds=12, shards=5, step=step)
    assert unconverged == 0
    assert labels == union_find(edges)


def test_default_rounds_cover_long_random_chains() -> None:
    """The documented bound: a 10^5-node chain with random labels converges in 8 rounds."""
    labels = np.random.default_rng(1).permutation(100_000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    _, unconverged = cc.components_reference_rounds(labels[:-1], labels[1:], rounds=cc.DEFAULT_MAX_ROUNDS)
    assert unconverged == 0


def test_converged_graph_is_a_fixed_point() -> None:
    src = np.array([10, 10, 10, 20, 20], dtype=np.uint64)
    dst = np.array([11, 15, 19, 25, 21], dtype=np.uint64)
    stars = sorted(zip(dst.tolist(), src.tolist(), strict=True))
    both = cc._both(src, dst)
    large = cc.large_star(*both)
    small = cc.small_star(*cc._both(*large))
    assert sorted(zip(*large, strict=True)) == stars
    assert sorted(zip(*small, strict=True)) == stars
    for shard, batch in cc.split_by_shard(src, dst, 3):  # each shard's contraction keeps its stars
        out = sorted(zip(*cc.contract(*batch), strict=True))
        assert set(out) <= set(stars) and out, shard
    assert cc.labels_and_violations(*both)[2] == 0


def test_too_few_rounds_are_counted_not_hidden() -> None:
    labels = list(range(1000))
    src, dst = (np.array(x, dtype=np.uint64) for x in zip(*chain(1000, labels), strict=True))
    _, unconverged = cc.components_reference_rounds(src, dst, rounds=2)
    assert unconverged > 0


def _options() -> PipelineOptions:
    return PipelineOptions(["--runner=FnApiRunner"])


@pytest.mark.parametrize(("step", "rounds"), [("contract", 8), ("star", 12)])
def test_beam_components_equal_union_find(step: str, rounds: int) -> None:
    """All graph kinds at once (disjoint id spaces), through the string-id PTransform."""
    edges: list[tuple[str, str]] = []
    for name, graph in graphs().items():
        edges += [(f"{name}:{a}", f"{name}:{b}") for a, b in graph]
    expected = sorted(union_find(edges).items())  # type: ignore[arg-type]
    with beam.Pipeline(options=_options()) as pipeline:
        out = pipeline | beam.Create(edges) | cc.ConnectedComponents(max_rounds=rounds, shards=5, step=step)
        assert_that(out, equal_to(expected))


def test_beam_unconverged_metric() -> None:
    edges = [(f"n{i:05d}", f"n{i + 1:05d}") for i in range(600)]
    pipeline = beam.Pipeline(options=_options())
    _ = pipeline | beam.Create(edges) | cc.ConnectedComponents(max_rounds=1, shards=3, metric="test:unconverged")
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters.get("test:unconverged", 0) > 0
