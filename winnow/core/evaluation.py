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
    """True for rows in the held-out share, chosen by a hash of the key (the URL, §6.5 #1)."""

    return np.array([uniform(key, "tagger-split", seed) < heldout_share for key in keys], dtype=bool)


EVAL_PARTS = ("fit", "choose", "report")


def eval_split(keys: Sequence[str], choose_from: float = 0.6, report_from: float = 0.8, seed: int = 0) -> np.ndarray:
    """Each row's part, ``fit`` / ``choose`` / ``report``, from ``uniform(key, "eval-split", seed)`` bands.

    A model is trained on *fit*; every choice (features, settings, which model ships) is made on
    *choose*; published figures come from *report*, which nothing was trained or chosen on. The key
    is the URL (the id when there is none), so copies of a page fall in one part.
    """
    if not 0.0 < choose_from <= report_from < 1.0:
        raise ValueError(f"need 0 < choose_from ≤ report_from < 1, got {choose_from}, {report_from}")
    u = np.array([uniform(key, "eval-split", seed) for key in keys], dtype=np.float64)
    return np.where(u < choose_from, "fit", np.where(u < report_from, "choose", "report"))
