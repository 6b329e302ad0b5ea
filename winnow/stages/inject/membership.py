"""The Copyright Traps membership test: were the planted traps seen in training? (docs/copyright-traps.md)

Inputs are the trap ledger and per-trap loss files: ``trap_id, n_tokens, mean_nll`` (nats per
token) and optionally ``token_logprobs``, computed by whoever holds the trained (target) model and,
for the ratio test, a reference model that never saw the traps. Nothing here loads a model, so a
large model can be scored elsewhere; ``lm_trap_losses`` writes such a file with a local causal LM.

Scores, each oriented so that a higher score means "not seen" (the reference labels members 0 and
controls 1 and feeds the score to ``roc_curve``):

* ``ratio`` = ppl_target / ppl_reference, computed as ``mean_nll_target − mean_nll_reference``
  (a monotone transform: the same AUC);
* ``loss`` = log ppl_target = ``mean_nll_target``;
* ``min_k`` = −(mean of the lowest ``k`` share of token log-probs), k = 20% (Min-K% Prob).

In every (length, repetition) cell, and per perplexity bucket inside it, members and their matched
controls are cut to the same count (first by trap id) before the AUC, as the reference does. The
table adds a bootstrap 95% interval and the true-positive rate at 1% false positives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.core.causal_lm import LogitsModel

LOSS_SCHEMA = pa.schema(
    [
        ("trap_id", pa.string()),
        ("n_tokens", pa.int32()),
        ("mean_nll", pa.float64()),
        ("token_logprobs", pa.list_(pa.float64())),
    ]
)
REPORT_SCHEMA = pa.schema(
    [
        ("seq_len", pa.int32()),
        ("n_rep", pa.int32()),
        ("ppl_bucket", pa.int32()),  # null: all buckets of the cell
        ("score", pa.string()),
        ("n_members", pa.int32()),
        ("n_controls", pa.int32()),
        ("auc", pa.float64()),
        ("auc_low", pa.float64()),
        ("auc_high", pa.float64()),
        ("tpr_at_1pct_fpr", pa.float64()),
    ]
)


def lm_trap_losses(model: LogitsModel, traps: Sequence[tuple[str, str]]) -> pa.Table:
    """A loss file for ``(trap_id, text)`` pairs: each text re-tokenised by ``model`` and scored with
    no BOS, so its first token is context only (the reference strips BOS before scoring)."""
    ids = model.encode([text for _, text in traps])
    return losses_table([t for t, _ in traps], model.token_logprobs(ids, bos=False))


def losses_table(trap_ids: Sequence[str], token_logprobs: Sequence[np.ndarray]) -> pa.Table:
    """A loss file from per-token log-probs (nats): mean NLL summed exactly."""
    rows = [
        {
            "trap_id": trap_id,
            "n_tokens": len(lp),
            "mean_nll": -math.fsum(lp) / len(lp) if len(lp) else math.nan,
            "token_logprobs": [float(x) for x in lp],
        }
        for trap_id, lp in zip(trap_ids, token_logprobs, strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=LOSS_SCHEMA)


def read_table(path: str | Path) -> pa.Table:
    """A Parquet or JSONL file as an Arrow table."""
    location = Path(path)
    if location.suffix == ".parquet":
        return pq.read_table(location)
    with open(location, encoding="utf-8") as handle:
        return pa.Table.from_pylist([json.loads(line) for line in handle if line.strip()])


# --- AUC --------------------------------------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def roc_auc(members: Sequence[float], controls: Sequence[float]) -> float:
    """P(control score > member score) + ½ P(equal): the AUC with controls as the positive class."""
    m, c = np.asarray(members, dtype=np.float64), np.asarray(controls, dtype=np.float64)
    if not len(m) or not len(c):
        return math.nan
    ranks = average_ranks(np.concatenate([m, c]))
    return float((ranks[len(m) :].sum() - len(c) * (len(c) + 1) / 2) / (len(m) * len(c)))


def tpr_at_fpr(members: Sequence[float], controls: Sequence[float], fpr: float = 0.01) -> float:
    """Share of members flagged (score below a threshold) when at most ``fpr`` of controls are."""
    m, c = np.sort(np.asarray(members, dtype=np.float64)), np.sort(np.asarray(controls, dtype=np.float64))
    if not len(m) or not len(c):
        return math.nan
    allowed = math.floor(fpr * len(c))  # controls that may fall strictly below the threshold
    threshold = c[allowed] if allowed < len(c) else math.inf
    return float(np.count_nonzero(m < threshold) / len(m))


def bootstrap_interval(
    members: np.ndarray, controls: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the AUC over ``resamples`` resamples of both groups (a local RNG)."""
    if resamples <= 0 or not len(members) or not len(controls):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = [roc_auc(rng.choice(members, len(members)), rng.choice(controls, len(controls))) for _ in range(resamples)]
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


# --- the report -------------------------------------------------------------------------------------


def min_k_score(token_logprobs: Sequence[float], k: float) -> float:
    """−mean of the lowest ``k`` share of log-probs (at least one token), as Min-K% Prob."""
    values = np.sort(np.asarray(token_logprobs, dtype=np.float64))
    if not len(values):
        return math.nan
    count = max(1, int(k * len(values)))
    return -math.fsum(values[:count]) / count


def trap_scores(target: pa.Table, reference: pa.Table | None, min_k: float) -> dict[str, dict[str, float]]:
    """score name → trap id → score, for every score the inputs allow."""
    nll = dict(zip(target["trap_id"].to_pylist(), target["mean_nll"].to_pylist(), strict=True))
    scores: dict[str, dict[str, float]] = {"loss": {t: v for t, v in nll.items() if v is not None}}
    if reference is not None:
        ref = dict(zip(reference["trap_id"].to_pylist(), reference["mean_nll"].to_pylist(), strict=True))
        scores["ratio"] = {t: v - ref[t] for t, v in scores["loss"].items() if ref.get(t) is not None}
    if "token_logprobs" in target.column_names:
        lps = dict(zip(target["trap_id"].to_pylist(), target["token_logprobs"].to_pylist(), strict=True))
        if any(v for v in lps.values()):
            scores["min_k"] = {t: min_k_score(v, min_k) for t, v in lps.items() if v}
    return scores


def membership_table(
    ledger: pa.Table,
    target: pa.Table,
    reference: pa.Table | None = None,
    *,
    min_k: float = 0.2,
    resamples: int = 1000,
    seed: int = 0,
) -> pa.Table:
    """AUC per (seq_len, n_rep) cell and per perplexity bucket within it, for every available score."""
    rows = ledger.select(["trap_id", "role", "seq_len", "n_rep", "ppl_bucket"]).to_pylist()
    out = []
    for name, score in sorted(trap_scores(target, reference, min_k).items()):
        cells: dict[tuple[int, int, int | None], dict[str, list[str]]] = {}
        for row in rows:
            if row["trap_id"] not in score:
                continue
            for bucket in (None,) if row["ppl_bucket"] is None else (None, row["ppl_bucket"]):
                cell = cells.setdefault((row["seq_len"], row["n_rep"], bucket), {"member": [], "control": []})
                cell[row["role"]].append(row["trap_id"])
        for (seq_len, n_rep, bucket), groups in sorted(cells.items(), key=lambda item: _cell_order(item[0])):
            n = min(len(groups["member"]), len(groups["control"]))
            members = np.array([score[t] for t in sorted(groups["member"])[:n]])
            controls = np.array([score[t] for t in sorted(groups["control"])[:n]])
            low, high = bootstrap_interval(members, controls, resamples, seed)
            out.append(
                {
                    "seq_len": seq_len,
                    "n_rep": n_rep,
                    "ppl_bucket": bucket,
                    "score": name,
                    "n_members": n,
                    "n_controls": n,
                    "auc": roc_auc(members, controls),
                    "auc_low": low,
                    "auc_high": high,
                    "tpr_at_1pct_fpr": tpr_at_fpr(members, controls),
                }
            )
    return pa.Table.from_pylist(out, schema=REPORT_SCHEMA)


def _cell_order(cell: tuple[int, int, int | None]) -> tuple[int, int, int]:
    seq_len, n_rep, bucket = cell
    return seq_len, n_rep, -1 if bucket is None else bucket


def traps_membership_report(
    ledger_path: str | Path,
    losses_path: str | Path,
    reference_losses_path: str | Path | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
) -> pa.Table:
    """The membership table from files (ledger; target losses; optional reference losses), for a CLI."""
    reference = read_table(reference_losses_path) if reference_losses_path is not None else None
    table = membership_table(
        read_table(ledger_path), read_table(losses_path), reference, resamples=resamples, seed=seed
    )
    if echo is not None:
        echo(format_membership(table))
    return table


def format_membership(table: pa.Table, buckets: bool = False) -> str:
    """The table as aligned text: one line per cell (and per bucket with ``buckets``)."""
    lines = [f"{'score':<6} {'len':>4} {'n_rep':>6} {'bucket':>6} {'n':>5} {'AUC':>6} {'95% CI':>15} {'TPR@1%':>7}"]
    for row in table.to_pylist():
        if row["ppl_bucket"] is not None and not buckets:
            continue
        bucket = "all" if row["ppl_bucket"] is None else str(row["ppl_bucket"])
        ci = f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]"
        lines.append(
            f"{row['score']:<6} {row['seq_len']:>4} {row['n_rep']:>6} {bucket:>6} {row['n_members']:>5} "
            f"{row['auc']:>6.3f} {ci:>15} {row['tpr_at_1pct_fpr']:>7.3f}"
        )
    return "\n".join(lines)
