"""winnow.core.exact: the arithmetic behind every written float is accurate and the same bits in any
batch and with numpy's SIMD dispatch switched off (docs/determinism.md)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
from scipy.sparse import csr_matrix

from winnow.core import exact

ROOT = Path(__file__).resolve().parents[2]


def _ulps(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want) / np.spacing(np.abs(want))))


def test_exp_and_log_are_within_two_ulp_of_a_decimal_reference() -> None:
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-700, 700, 400), rng.uniform(-1, 1, 400), [0.0, 1e-300, -1e-300]])
    with localcontext() as context:
        context.prec = 50
        want = np.array([float(Decimal(float(x)).exp()) for x in xs])
        assert _ulps(exact.exp(xs), want) <= 2
        ys = np.exp(rng.uniform(-700, 700, 400))
        want_log = np.array([float(Decimal(float(y)).ln()) for y in ys])
        assert _ulps(exact.log(ys), want_log) <= 2


def test_special_values() -> None:
    assert exact.exp(np.array([-np.inf, np.inf, 800.0, -800.0])).tolist() == [0.0, np.inf, np.inf, 0.0]
    assert math.isnan(exact.log(-1.0)) and exact.log(0.0) == -math.inf and exact.log(1.0) == 0.0
    assert np.isnan(exact.exp(np.array([np.nan])))[0]


def test_the_scalar_path_gives_the_same_bits_as_the_array_path() -> None:
    rng = np.random.default_rng(1)
    xs = rng.uniform(-50, 50, 2000)
    assert exact.exp(xs).tolist() == [exact.exp(float(x)) for x in xs]
    ys = np.exp(rng.uniform(-50, 50, 2000))
    assert exact.log(ys).tolist() == [exact.log(float(y)) for y in ys]


def test_log_of_counts_is_correctly_rounded() -> None:
    counts = np.array([1, 2, 3, 7, 10, 999, 4095, 4096, 10**6])
    with localcontext() as context:
        context.prec = 50
        want = [float(Decimal(int(c)).ln()) for c in counts]
    assert exact.log_of_counts(counts)[:7].tolist() == want[:7]  # the table: correctly rounded
    assert _ulps(exact.log_of_counts(counts)[7:], np.array(want[7:])) <= 2


def test_every_entry_of_the_log_table_is_correctly_rounded() -> None:
    """The table sums prime logs for composites; each entry must still be the correctly rounded ln k."""
    counts = np.arange(1, 4096)
    with localcontext() as context:
        context.prec = 50
        want = [float(Decimal(int(c)).ln()) for c in counts]
    assert exact.log_of_counts(counts).tolist() == want


def test_a_linear_layer_is_exact_and_does_not_depend_on_its_batch() -> None:
    rng = np.random.default_rng(2)
    weights, bias = rng.normal(size=(64, 5)), rng.normal(size=5)
    layer = exact.QuantizedLinear(weights, bias)
    x = rng.uniform(-1, 1, size=(33, 64))
    batched = layer.apply(x)
    one_by_one = np.vstack([layer.apply(x[i : i + 1]) for i in range(len(x))])
    assert batched.tobytes() == one_by_one.tobytes()
    # The integer part against Python's exact integers, then the same elementwise float steps.
    grid = exact.to_grid(x)
    for i in (0, 17, 32):
        dots = [sum(int(a) * int(b) for a, b in zip(grid[i], layer.weights[:, k], strict=True)) for k in range(5)]
        want = np.array(dots, dtype=np.float64) * (layer.col_scale / float(1 << exact.GRID_BITS)) + layer.bias
        assert batched[i].tobytes() == want.tobytes()
    # Quantisation costs little: within 1e-4 of the float product.
    assert np.max(np.abs(batched - (x @ weights + bias))) < 1e-3


def test_sparse_and_dense_inputs_agree_and_integers_go_straight_through() -> None:
    rng = np.random.default_rng(3)
    layer = exact.QuantizedLinear(rng.normal(size=(40, 3)))
    dense = np.where(rng.random((10, 40)) < 0.2, rng.uniform(-1, 1, (10, 40)), 0.0)
    assert layer.apply(dense).tobytes() == layer.apply(csr_matrix(dense)).tobytes()
    sums = rng.integers(-3000, 3000, size=(6, 40))
    scale = 1.0 / np.sqrt((sums * sums).sum(axis=1).astype(np.float64))
    got = layer.apply_integers(sums, scale)
    for i in range(6):
        dots = [sum(int(a) * int(b) for a, b in zip(sums[i], layer.weights[:, k], strict=True)) for k in range(3)]
        assert got[i].tolist() == (np.array(dots, dtype=np.float64) * (scale[i] * layer.col_scale)).tolist()


def test_softmax_rows_and_l2_rows_are_row_local() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(20, 24)) * 5
    probs = exact.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert probs.tobytes() == np.vstack([exact.softmax(logits[i : i + 1]) for i in range(20)]).tobytes()
    matrix = csr_matrix(np.where(rng.random((8, 30)) < 0.3, rng.uniform(0, 5, (8, 30)), 0.0))
    normed = exact.l2_normalise_rows(matrix)
    for i in range(8):
        row = matrix.getrow(i).data
        if len(row):
            norm = math.sqrt(math.fsum((row * row).tolist()))  # the exactly rounded sum of the squares
            assert normed.getrow(i).data.tolist() == (row / norm).tolist()


_CHILD = """
import hashlib, json, sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__
from scipy.sparse import csr_matrix
from winnow.core import exact
rng = np.random.default_rng(7)
x = rng.uniform(-30, 30, 5000)
logits = rng.normal(size=(50, 24)) * 4
layer = exact.QuantizedLinear(rng.normal(size=(256, 24)), rng.normal(size=24))
emb = rng.uniform(-0.2, 0.2, size=(50, 256))
sparse = csr_matrix(np.where(rng.random((50, 300)) < 0.1, rng.integers(1, 9, (50, 300)), 0).astype(np.float64))
parts = [exact.exp(x), exact.log(np.abs(x) + 1e-3), exact.softmax(logits), layer.apply(emb),
         exact.l2_normalise_rows(sparse).data, exact.log_of_counts(np.arange(1, 5000))]
print(json.dumps({"digest": hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest(),
                  "enabled": sorted(k for k, v in __cpu_features__.items() if v and k in sys.argv[1:])}))
"""


def _child(env: dict[str, str], features: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *features], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout)


@pytest.mark.slow
def test_the_same_bits_with_numpy_simd_dispatch_switched_off() -> None:
    found = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = _child(base, found)
    scalar = _child({**base, "NPY_DISABLE_CPU_FEATURES": " ".join(found)}, found)
    assert scalar["enabled"] == []  # the dispatch really was switched off in the child
    assert plain["digest"] == scalar["digest"]
    assert len(hashlib.sha256(b"").hexdigest()) == len(plain["digest"])


def test_sparse_apply_equals_the_int64_product_on_both_sides_of_the_float64_bound() -> None:
    """The sparse path multiplies in float64 only while every partial sum stays an exact integer; its
    output must be the int64 product's bits, and rows too large for that bound must take int64."""
    rng = np.random.default_rng(0)
    # Positive weights, so the large rows' running sums really climb past 2^53 (random signs would
    # cancel and stay exact by luck).
    layer = exact.QuantizedLinear(0.5 + rng.random(size=(4096, 5)), rng.normal(size=5))

    def int64_reference(rows: csr_matrix) -> np.ndarray:
        grid = rows.copy()
        grid.data = exact.to_grid(grid.data)
        dots = (grid.astype(np.int64) @ layer.weights).astype(np.float64)
        return dots * (layer.col_scale / float(1 << exact.GRID_BITS)) + layer.bias

    dense = rng.normal(size=(40, 4096)) * (rng.random((40, 4096)) < 0.05)
    unit = csr_matrix(dense / np.linalg.norm(dense, axis=1, keepdims=True))
    assert layer.apply(unit).tobytes() == int64_reference(unit).tobytes()
    # Values of ~2^8 (grid integers ~2^28, odd low bits): Σ|x|·max|W| passes 2^53, where a float64
    # product would round; the int64 path must be taken and give the exact sums.
    large = csr_matrix(256.0 + rng.random((3, 4096)))
    grid = exact.to_grid(large.data)
    assert float(np.abs(grid).sum()) * float(np.abs(layer.weights).max()) >= 2.0**53
    assert layer.apply(large).tobytes() == int64_reference(large).tobytes()
