"""Arithmetic whose result is the same bits on every machine, in any batch (docs/determinism.md).

Three things make a float depend on where it was computed: reductions whose order depends on the
batch or the CPU's SIMD width (BLAS dot products, numpy's vectorised sums), transcendental
functions whose implementation differs by CPU (numpy's SIMD ``exp``/``log``, libm's FMA
variants), and compilers that fuse a multiply and an add on one architecture but not another.
This module avoids all three for every value a stage writes:

* **Linear layers run on integers.** Inputs are integers already (static-embedding sums, counts)
  or are rounded onto a fixed grid; weights are rounded to int16 per output column. The dot
  products are int64 sums, exact in any order; the only float steps are elementwise IEEE
  multiplications, divisions and additions (correctly rounded everywhere).
* **exp and log are written out** as range reduction + a fixed polynomial in elementwise numpy
  operations (``+``, ``*``, ``/``, ``rint``, ``ldexp``, ``frexp``), accurate to a few ulp and
  identical on every machine; ``log`` of small integers (term counts) comes from a table computed
  with ``decimal``, which is software arithmetic.
* **Row reductions are sequential**: ``np.cumsum`` defines its order (each partial sum depends on
  the previous one), unlike ``np.sum``.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import lru_cache

import numpy as np

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n·LN2_HI is exact for |n| < 2^11 (Cody–Waite)
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
# 1/k! for the Taylor series of e^r on |r| ≤ ln2/2: 14 terms leave an error below 1e-17 relative.
_EXP_TERMS = tuple(1.0 / math.factorial(k) for k in range(14, -1, -1))
# 2/(2k+1) for log(m) = 2·atanh(s), s = (m−1)/(m+1), |s| ≤ 0.1716 on m ∈ [√½, √2): 13 terms < 1e-18.
_ATANH_TERMS = tuple(2.0 / (2 * k + 1) for k in range(12, -1, -1))
_SQRT_HALF = math.sqrt(0.5)
GRID_BITS = 20  # floats in [-1, 1] become integers in [-2^20, 2^20] before an exact dot product


def exp(x: np.ndarray | float) -> np.ndarray | float:
    """e^x in float64, the same bits on every machine (within 2 ulp of the true value).

    A Python float gets a Python float back, computed by the same operations in plain Python
    (CPython never fuses a multiply and an add), so both paths give identical bits.
    """
    if isinstance(x, float | int):
        return _exp_scalar(float(x))
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    finite = np.isfinite(x)
    rest = x[~finite]
    out[~finite] = np.where(np.isnan(rest), np.nan, np.where(rest > 0, np.inf, 0.0))
    v = np.clip(x[finite], -745.2, 709.7)
    n = np.rint(v * _LOG2E)
    r = (v - n * _LN2_HI) - n * _LN2_LO
    p = np.full_like(r, _EXP_TERMS[0])
    for c in _EXP_TERMS[1:]:
        p = p * r + c
    out[finite] = np.ldexp(p, n.astype(np.int64))
    out[finite & (x > 709.7)] = np.inf
    return out


def log(x: np.ndarray | float) -> np.ndarray | float:
    """ln x in float64 for x > 0 (−inf at 0, nan below), the same bits on every machine.

    A Python float gets a Python float back (the same operations in plain Python, identical bits).
    """
    if isinstance(x, float | int):
        return _log_scalar(float(x))
    x = np.asarray(x, dtype=np.float64)
    out = np.full_like(x, np.nan)
    out[x == 0] = -np.inf
    out[np.isposinf(x)] = np.inf
    ok = (x > 0) & np.isfinite(x)
    m, e = np.frexp(x[ok])  # x = m·2^e, m ∈ [0.5, 1)
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)  # m ∈ [√½, √2)
    e = np.where(low, e - 1, e).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = np.full_like(s, _ATANH_TERMS[0])
    for c in _ATANH_TERMS[1:]:
        p = p * s2 + c
    out[ok] = (s * p + e * _LN2_LO) + e * _LN2_HI
    return out


def _exp_scalar(x: float) -> float:
    if math.isnan(x):
        return x
    if x > 709.7:
        return math.inf
    v = max(x, -745.2)
    n = float(round(v * _LOG2E))  # round half to even, as np.rint
    r = (v - n * _LN2_HI) - n * _LN2_LO
    p = _EXP_TERMS[0]
    for c in _EXP_TERMS[1:]:
        p = p * r + c
    return math.ldexp(p, int(n))


def _log_scalar(x: float) -> float:
    if math.isnan(x) or x < 0:
        return math.nan
    if x == 0:
        return -math.inf
    if math.isinf(x):
        return math.inf
    m, e = math.frexp(x)
    if m < _SQRT_HALF:
        m, e = m * 2.0, e - 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = _ATANH_TERMS[0]
    for c in _ATANH_TERMS[1:]:
        p = p * s2 + c
    ef = float(e)
    return (s * p + ef * _LN2_LO) + ef * _LN2_HI


@lru_cache(maxsize=1)
def _log_table(size: int = 4096) -> np.ndarray:
    """ln k for k < size, each rounded once from 40 significant digits. Only primes take a decimal
    ``ln`` (564 of 4,096, 6× less CPU per process); a composite's log is the 40-digit sum of its
    smallest prime factor's and its cofactor's, whose error (≈ 1e-39) cannot move a float64 rounding
    here (a test compares every entry with the direct ``ln``)."""
    smallest = list(range(size))  # smallest prime factor, by sieve
    for p in range(2, math.isqrt(size - 1) + 1):
        if smallest[p] == p:
            for multiple in range(p * p, size, p):
                if smallest[multiple] == multiple:
                    smallest[multiple] = p
    logs = [Decimal(0)] * size
    with localcontext() as context:
        context.prec = 40
        for k in range(2, size):
            p = smallest[k]
            logs[k] = Decimal(k).ln() if p == k else logs[p] + logs[k // p]
    return np.array([float(value) if k else -math.inf for k, value in enumerate(logs)], dtype=np.float64)


def log_of_counts(counts: np.ndarray) -> np.ndarray:
    """ln k of non-negative integer counts, correctly rounded (decimal arithmetic) up to 4095."""
    counts = np.asarray(counts)
    table = _log_table()
    small = counts < len(table)
    if small.all():
        return table[counts.astype(np.int64)]
    out = log(counts.astype(np.float64))
    out[small] = table[counts[small].astype(np.int64)]
    return out


def row_sums(x: np.ndarray) -> np.ndarray:
    """Sum of each row in a fixed left-to-right order (``np.sum``'s order depends on the CPU)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1] == 0:
        return np.zeros(x.shape[0], dtype=np.float64)
    return np.cumsum(x, axis=1)[:, -1]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax with the deterministic ``exp`` and ``row_sums``."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / row_sums(shifted)[:, None]


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + exp(-x))


def to_grid(x: np.ndarray, bits: int = GRID_BITS) -> np.ndarray:
    """Floats of magnitude ≤ 1 as integers on a 2^-bits grid (int64), ready for an exact dot product."""
    return np.rint(np.asarray(x, dtype=np.float64) * float(1 << bits)).astype(np.int64)


class QuantizedLinear:
    """``x·W + b`` with W rounded to int16 per output column and the dot products in int64.

    ``apply_integers(x, row_scale)`` takes integer rows (e.g. static-embedding sums) and the factor
    that turns each row into the head's input (e.g. 1/‖sum‖): ``(x·Wq)·(row_scale·col_scale) + b``.
    ``apply(x)`` takes float rows of magnitude ≤ 1 (unit embeddings, L2-normalised features; dense
    or scipy CSR), rounds them onto the 2^-20 grid and does the same. Both are exact up to the
    final elementwise steps, so a row's output never depends on its batch or the machine.
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray | None = None):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2:
            raise ValueError(f"weights must be 2-d, got shape {weights.shape}")
        peak = np.abs(weights).max(axis=0)
        col_scale = np.where(peak > 0, peak / 32767.0, 1.0)
        self._set(np.rint(weights / col_scale).astype(np.int64), col_scale, bias)

    @classmethod
    def from_quantized(
        cls, weights: np.ndarray, col_scale: np.ndarray, bias: np.ndarray | None = None
    ) -> QuantizedLinear:
        """A layer whose weights are stored as integers already (e.g. a tagger's int8 weights and scales)."""
        layer = cls.__new__(cls)
        layer._set(np.asarray(weights).astype(np.int64), np.asarray(col_scale, dtype=np.float64), bias)
        return layer

    def _set(self, weights: np.ndarray, col_scale: np.ndarray, bias: np.ndarray | None) -> None:
        self.weights = weights
        self._float_weights = weights.astype(np.float64)  # the same integers, for the sparse float64 product
        self._peak_weight = float(np.abs(weights).max()) if weights.size else 0.0
        self.col_scale = col_scale.reshape(-1)
        self.bias = np.zeros(weights.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
        if self.bias.shape != (weights.shape[1],) or self.col_scale.shape != (weights.shape[1],):
            raise ValueError(f"bias/scale shapes do not match {weights.shape[1]} outputs")

    @property
    def shape(self) -> tuple[int, int]:
        return self.weights.shape

    def apply_integers(self, x: np.ndarray, row_scale: np.ndarray | float = 1.0) -> np.ndarray:
        dots = np.asarray(x @ self.weights, dtype=np.int64).astype(np.float64)
        scale = np.asarray(row_scale, dtype=np.float64).reshape(-1, 1) * self.col_scale[None, :]
        return dots * scale + self.bias

    def apply(self, x: np.ndarray) -> np.ndarray:
        if hasattr(x, "tocsr"):  # scipy sparse: round the stored values only
            grid = x.tocsr(copy=True)
            grid.data = to_grid(grid.data).astype(np.float64)
            # Every partial sum of a row's products is an integer of magnitude ≤ Σ|x|·max|W|. Below
            # 2^53 float64 holds them all exactly, in any order, so scipy's float64 product (about 2×
            # faster than its int64 one) gives the int64 result's bits; above it, int64.
            if float(np.abs(grid.data).sum()) * self._peak_weight < 2.0**53:
                dots = grid @ self._float_weights
            else:
                dots = grid.astype(np.int64) @ self.weights
        else:
            dots = to_grid(x) @ self.weights
        return (
            np.asarray(dots, dtype=np.int64).astype(np.float64) * (self.col_scale / float(1 << GRID_BITS)) + self.bias
        )


def l2_normalise_rows(matrix: object) -> object:
    """Each row of a scipy CSR matrix divided by its L2 norm (rows of zeros stay zero), deterministically."""
    csr = matrix.tocsr(copy=True)  # type: ignore[attr-defined]
    squares = (csr.data * csr.data).tolist()
    norms = np.zeros(csr.shape[0], dtype=np.float64)
    for row in range(csr.shape[0]):  # math.fsum: the exactly rounded sum, whatever the order
        a, b = csr.indptr[row], csr.indptr[row + 1]
        if b > a:
            norms[row] = math.sqrt(math.fsum(squares[a:b]))
    lengths = np.diff(csr.indptr)
    safe = np.where(norms > 0, norms, 1.0)
    csr.data = csr.data / np.repeat(safe, lengths)
    return csr
