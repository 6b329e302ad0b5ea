"""DataMan sanity on real text (METHODS §2.8 #6) for a DataMan scorer (default: the bundled local model).

1. ``dataman-qurating-ratings`` (135 SlimPajama chunks with DataMan-1.5B's own ratings): exact
   agreement and MAE of our overall score, and domain accuracy, next to a majority-class baseline
   (the most common stored value, which favours the baseline: it is read off the test labels).
2. ``weborganizer-dclm``: mean overall score of Spam / Ads + Content Listing pages against
   Knowledge Article + Academic Writing pages (WebOrganizer format labels, evaluation only).

    python bench/dataman_eval.py [--path winnow:models/dataman/dataman-local.npz] [--json out.json]
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from winnow.stages.score.dataman import CRITERIA
from winnow.stages.score.registry import build_scorer

CORPORA = Path("/work/shared/corpora")
LOW_FORMATS = ("Spam / Ads", "Content Listing")
HIGH_FORMATS = ("Knowledge Article", "Academic Writing")


def _rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _score(scorer: Any, texts: list[str], batch: int = 256) -> dict[str, np.ndarray]:
    parts = [scorer.score(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def agreement(scorer: Any, corpora: Path) -> dict[str, Any]:
    rows = _rows(corpora / "dataman-qurating-ratings" / "ratings.jsonl.gz")
    out = _score(scorer, [r["text"] for r in rows])
    result: dict[str, Any] = {"n": len(rows), "criteria": {}}
    for name in CRITERIA:
        truth = np.array([r["dataman"][name] for r in rows])
        majority = Counter(truth.tolist()).most_common(1)[0][0]
        predicted = out[name].astype(int)
        result["criteria"][name] = {
            "exact": float(np.mean(predicted == truth)),
            "mae": float(np.mean(np.abs(predicted - truth))),
            "majority_value": int(majority),
            "majority_exact": float(np.mean(truth == majority)),
            "majority_mae": float(np.mean(np.abs(truth - majority))),
            "spearman": _spearman(predicted, truth),
        }
    domains = np.array([r["dataman_domain"] for r in rows])
    majority_domain = Counter(domains.tolist()).most_common(1)[0][0]
    result["domain"] = {
        "accuracy": float(np.mean(out["application_domain"].astype(str) == domains)),
        "majority_value": majority_domain,
        "majority_accuracy": float(np.mean(domains == majority_domain)),
        "predicted_counts": dict(Counter(out["application_domain"].astype(str).tolist()).most_common()),
    }
    return result


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return float(value) if np.isfinite(value) else float("nan")


def format_contrast(scorer: Any, corpora: Path) -> dict[str, Any]:
    rows = [
        r for r in _rows(corpora / "weborganizer-dclm" / "docs.jsonl.gz") if r["format"] in LOW_FORMATS + HIGH_FORMATS
    ]
    overall = _score(scorer, [r["text"] for r in rows])["overall_score"].astype(float)
    low = np.array([r["format"] in LOW_FORMATS for r in rows])
    per_format = {f: float(overall[[r["format"] == f for r in rows]].mean()) for f in LOW_FORMATS + HIGH_FORMATS}
    return {
        "n_low": int(low.sum()),
        "n_high": int((~low).sum()),
        "mean_overall_low": float(overall[low].mean()),
        "mean_overall_high": float(overall[~low].mean()),
        "per_format": per_format,
        "holds": bool(overall[low].mean() < overall[~low].mean()),
    }


def main(
    path: Annotated[str, typer.Option(help="DataMan model: local .npz or reference checkpoint dir.")] = (
        "winnow:models/dataman/dataman-local.npz"
    ),
    corpora: Annotated[Path, typer.Option(help="The shared corpora folder.")] = CORPORA,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    start = time.time()
    scorer = build_scorer({"name": "dataman", "backend": "dataman", "path": path})
    results = {"model": path, "version": scorer.version, "agreement": agreement(scorer, corpora)}
    results["format_contrast"] = format_contrast(scorer, corpora)
    results["seconds"] = round(time.time() - start, 1)
    text = json.dumps(results, indent=2)
    if json_out:
        json_out.write_text(text + "\n")
    typer.echo(text)


if __name__ == "__main__":
    typer.run(main)
