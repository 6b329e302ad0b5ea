"""Evaluation helpers shared by training commands and benches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from winnow.core.hashing import uniform


def macro_f1(truth: Sequence[int], predicted: Sequence[int], n_classes: int) -> tuple[float, np.ndarray]:
    """Macro-F1 over the classes present in ``truth`` and the per-class F1 (0 for absent classes)."""
    y = np.asarray(truth)
    p = np.asarray(predicted)
    f1 = np.zeros(n_classes)
    for k in range(n_classes):
        tp = np.sum((y == k) & (p == k))
        fp = np.sum((y != k) & (p == k))
        fn = np.sum((y == k) & (p != k))
        f1[k] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    present = np.unique(y)
    return float(f1[present].mean()) if len(present) else 0.0, f1


def url_split(keys: Sequence[str], heldout_share: float = 0.2, seed: int = 0) -> np.ndarray:
    """True for rows in the held-out share, chosen by a hash of the key (the URL,
    docs/domains.md#per-domain-statistics)."""

    return np.array([uniform(key, "tagger-split", seed) < heldout_share for key in keys], dtype=bool)
