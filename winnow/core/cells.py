"""k-means cells on an integer grid, the same on every machine (shared by ``order`` and ``select``).

Vectors are compared on an integer grid: each unit vector × ``GRID``, rounded. Inner products of
such vectors are integers below 2^24 (dim ≤ 4096 at this scale), exact in float32 BLAS in any
order, so similarities, nearest centroids and cells are the same bits on every machine.
``train_cells`` runs spherical k-means on a deterministic sample (docs/icp.md, section on cells),
splitting cells the sample predicts oversized with a second k-means; ``assign_cells`` names
each vector's cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Vectors are compared on an integer grid: each unit vector × GRID, rounded. Inner products of such
# vectors are integers below 2^24 (dim ≤ 4096 at this scale), exact in float32 BLAS in any order,
# so similarities, neighbour lists, cells and dedup decisions are the same bits on every machine.
GRID = 1023


@dataclass(frozen=True)
class GridVectors:
    """Vectors as integer-valued float32 rows (``q``), their exact integer norms and original norms.

    ``cosine`` of two rows is ``q_a·q_b / (‖q_a‖‖q_b‖)``; the similarity the graph uses is that
    cosine, times both original norms when the embedder is not normalised (inner-product search).
    """

    q: np.ndarray
    q_norm: np.ndarray
    norm: np.ndarray
    normalised: bool = True

    @classmethod
    def of(cls, vectors: np.ndarray, normalised: bool = True) -> GridVectors:
        vectors = np.asarray(vectors, dtype=np.float64)
        norm = row_norms(vectors)
        unit = vectors / np.where(norm > 0, norm, 1.0)[:, None]
        q = np.rint(unit * GRID).astype(np.float32)
        squares = q.astype(np.int64) ** 2
        q_norm = np.sqrt(squares.sum(axis=1).astype(np.float64))
        return cls(q, q_norm, norm, normalised)

    def __len__(self) -> int:
        return len(self.q)

    def take(self, rows: np.ndarray | list[int]) -> GridVectors:
        return GridVectors(self.q[rows], self.q_norm[rows], self.norm[rows], self.normalised)

    def similarity(self, rows: GridVectors) -> np.ndarray:
        """Similarities of ``rows`` (queries) to every vector here: [len(rows), len(self)], float64."""
        ip = np.asarray(rows.q @ self.q.T, dtype=np.float64)  # exact: integers below 2^24
        scale = np.outer(rows.q_norm, self.q_norm)
        cos = np.divide(ip, scale, out=np.zeros_like(ip), where=scale > 0)
        return cos if self.normalised else cos * np.outer(rows.norm, self.norm)


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """L2 norm of each row from an exactly rounded sum (math.fsum), independent of the CPU."""
    squares = np.asarray(vectors, dtype=np.float64) ** 2
    return np.array([math.sqrt(math.fsum(row)) for row in squares.tolist()], dtype=np.float64)


@dataclass
class Cells:
    """k-means cell centroids, with a second level for cells the sample found oversized.

    ``children[c]`` holds sub-centroids of cell c (absent when c is small enough); a vector's
    cell is ``"c"`` or ``"c.s"``.
    """

    centroids: GridVectors
    children: dict[int, GridVectors] = field(default_factory=dict)

    def names(self) -> list[str]:
        out = []
        for c in range(len(self.centroids)):
            if c in self.children:
                out.extend(f"{c}.{s}" for s in range(len(self.children[c])))
            else:
                out.append(str(c))
        return out


def _kmeans(sample: GridVectors, n_cells: int, seed: int, iterations: int = 20) -> GridVectors:
    """Spherical k-means on the integer grid, the same centroids on every machine.

    Starts from ``n_cells`` rows spread evenly through the sample (which arrives in hash order, so
    that is a seeded random pick); each step assigns rows to the most similar centroid (exact) and
    moves each centroid to the grid point of its members' exact integer mean direction.
    """
    if n_cells <= 1 or len(sample) <= n_cells:
        return sample.take(np.arange(1 if n_cells <= 1 else len(sample)))
    start = np.linspace(0, len(sample) - 1, n_cells).round().astype(np.int64)
    start = (start + seed % max(1, len(sample) // n_cells)) % len(sample)
    centroids = sample.take(np.unique(start))
    for _ in range(iterations):
        assigned = _nearest(sample, centroids)
        sums = np.zeros(centroids.q.shape, dtype=np.int64)
        np.add.at(sums, assigned, sample.q.astype(np.int64))
        counts = np.bincount(assigned, minlength=len(centroids))
        moved = GridVectors.of(np.where(counts[:, None] > 0, sums, centroids.q.astype(np.int64)))
        if np.array_equal(moved.q, centroids.q):
            break
        centroids = moved
    return centroids


def _nearest(vectors: GridVectors, centroids: GridVectors) -> np.ndarray:
    """Index of each row's most similar centroid (the first on a tie)."""
    return np.argmax(centroids.similarity(vectors), axis=1)


def train_cells(sample: np.ndarray, total: int, cell_size: int, seed: int = 0, split_above: float = 1.5) -> Cells:
    """k-means with ⌈total / cell_size⌉ cells on a sample; a cell whose sample share predicts more
    than ``split_above``·cell_size docs is split by a k-means of its own."""
    grid = GridVectors.of(sample)
    n_cells = max(1, math.ceil(total / cell_size))
    n_cells = min(n_cells, max(1, len(grid) // 4))
    centroids = _kmeans(grid, n_cells, seed)
    assigned = _nearest(grid, centroids)
    children: dict[int, GridVectors] = {}
    scale = total / max(1, len(grid))
    for c in range(len(centroids)):
        members = np.flatnonzero(assigned == c)
        predicted = len(members) * scale
        if predicted > split_above * cell_size and len(members) >= 8:
            parts = min(math.ceil(predicted / cell_size), len(members) // 4)
            if parts > 1:
                children[c] = _kmeans(grid.take(members), parts, seed + 1 + c)
    return Cells(centroids, children)


def assign_cells(vectors: np.ndarray, cells: Cells) -> list[str]:
    """Cell name of every row (most similar centroid, then most similar sub-centroid)."""
    grid = GridVectors.of(vectors)
    top = _nearest(grid, cells.centroids)
    names = [str(int(c)) for c in top]
    for c, sub in cells.children.items():
        rows = np.flatnonzero(top == c)
        if len(rows):
            for row, s in zip(rows.tolist(), _nearest(grid.take(rows), sub).tolist(), strict=True):
                names[row] = f"{c}.{s}"
    return names
