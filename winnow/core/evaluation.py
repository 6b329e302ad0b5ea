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


FIT, CHOOSE, REPORT = "fit", "choose", "report"
# Shares of the fixed three-way split every quality bench and training script uses (issue 14):
# models learn on fit, every choice (hyperparameters, variants, ensembles) is made on choose, and
# only report figures are published. 60/20/20 keeps the report split of the 8.9k WebOrganizer
# pages near 450 documents of the six formats the format-AUC contrasts.
SPLIT_SHARES = (0.6, 0.2, 0.2)
SPLIT_PURPOSE = "quality-split"


def three_way_split(keys: Sequence[str], seed: int = 0, shares: tuple[float, float, float] = SPLIT_SHARES) -> list[str]:
    """``fit`` / ``choose`` / ``report`` per key (a URL, or an id where there is no URL), by hash.

    The assignment is a pure function of the key, so a training script and a bench that never
    share state agree on it, and adding or removing documents never moves another one.
    """
    if abs(sum(shares) - 1.0) > 1e-9 or min(shares) < 0:
        raise ValueError(f"split shares must be non-negative and sum to 1, got {shares}")
    fit_end, choose_end = shares[0], shares[0] + shares[1]
    out = []
    for key in keys:
        u = uniform(key, SPLIT_PURPOSE, seed)
        out.append(FIT if u < fit_end else CHOOSE if u < choose_end else REPORT)
    return out
