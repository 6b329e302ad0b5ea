"""The bundled local DataMan model on report splits, beside baselines and a peer measured in the same run.

Protocol (issue 14): ``scripts/train_dataman.py`` trains on the *fit* split of the WebOrganizer
pages and the human-quality documents (derived labels) and chooses its variant on the *choose*
half of dataman-qurating-ratings; every figure here is on a report split:

1. **agreement with DataMan-1.5B** on the report half of dataman-qurating-ratings (SlimPajama
   chunks with DataMan-1.5B's own ratings; nothing trains on them): per criterion exact agreement,
   MAE and Spearman, next to (a) the majority value of the *choose* half (a constant rater) and
   (b) the Spearman the overall head alone would get for that criterion (what copying the overall
   rating into every criterion, the previous model's behaviour for 11 criteria, would score);
   domain accuracy beside the choose-half majority letter;
2. **format AUC** of ``overall_score`` (the expected rating, as a continuous score, and the integer
   rating the stage writes) on the report split of WebOrganizer pages, {Tutorial, Knowledge
   Article, Academic Writing} vs {Spam / Ads, Content Listing, Truncated}, pipeline view, and
   **human AUC** on the report split of dclm-human-quality; the peer is logistic regression on the
   same static embedding trained on the human fit labels (C chosen on choose);
3. docs/s per core of ``DataManLocalScorer.score`` (CPU time, one thread).

    python bench/dataman_eval.py [--path winnow:models/dataman/dataman-local.npz] [--json out.json]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._quality_data import (  # noqa: E402
    CORPORA,
    Targets,
    auc_cell,
    docs_per_second,
    human_documents,
    logistic_peer,
    rating_documents,
)
from winnow.core.evaluation import CHOOSE, FIT, REPORT  # noqa: E402
from winnow.stages.score.dataman import CRITERIA, DataManLocalScorer  # noqa: E402
from winnow.stages.score.qurating import spearman  # noqa: E402
from winnow.stages.score.registry import build_scorer  # noqa: E402


def expected(scorer: DataManLocalScorer, texts: list[str], criterion: str) -> np.ndarray:
    """The head's expected rating (a continuous score) on the texts as the scorer sees them."""
    truncated, _ = scorer.truncate(texts)
    return scorer.model.head_for(criterion).predict_value(scorer.encoder.encode(truncated))


def agreement(scorer: Any, corpora: Path) -> dict[str, Any]:
    docs = rating_documents(corpora)
    report = [r for r in docs if r["split"] == REPORT]
    choose = [r for r in docs if r["split"] == CHOOSE]
    out = scorer.score([r["text"] for r in report])
    local = isinstance(scorer, DataManLocalScorer)
    overall_value = expected(scorer, [r["text"] for r in report], "overall_score") if local else None
    result: dict[str, Any] = {"n": len(report), "criteria": {}}
    for name in CRITERIA:
        truth = np.array([r["dataman"][name] for r in report])
        majority = Counter(r["dataman"][name] for r in choose).most_common(1)[0][0]
        predicted = out[name].astype(int)
        value = expected(scorer, [r["text"] for r in report], name) if local else predicted
        result["criteria"][name] = {
            "exact": float(np.mean(predicted == truth)),
            "mae": float(np.mean(np.abs(predicted - truth))),
            "spearman": spearman(value, truth),
            "majority_value": int(majority),
            "majority_exact": float(np.mean(truth == majority)),
            "majority_mae": float(np.mean(np.abs(truth - majority))),
            "overall_copy_spearman": spearman(overall_value, truth) if local else None,
            "own_head": bool(local and scorer.model.fallback.get(name, name) == name),
        }
    domains = np.array([r["dataman_domain"] for r in report])
    majority_domain = Counter(r["dataman_domain"] for r in choose).most_common(1)[0][0]
    result["domain"] = {
        "accuracy": float(np.mean(out["application_domain"].astype(str) == domains)),
        "majority_value": majority_domain,
        "majority_accuracy": float(np.mean(domains == majority_domain)),
    }
    return result


def contrasts(scorer: Any, corpora: Path) -> dict[str, Any]:
    choose, report = Targets(corpora, CHOOSE), Targets(corpora, REPORT)
    local = isinstance(scorer, DataManLocalScorer)
    web_int = scorer.score(report.web_texts)["overall_score"].astype(float)
    human_int = scorer.score(report.human_texts)["overall_score"].astype(float)
    out = {
        "n_pages": len(report.web_y),
        "n_human": len(report.human_y),
        "format_auc_rating": auc_cell(report.web_y, web_int),
        "human_auc_rating": auc_cell(report.human_y, human_int),
    }
    if local:
        out["format_auc_expected"] = auc_cell(report.web_y, expected(scorer, report.web_texts, "overall_score"))
        out["human_auc_expected"] = auc_cell(report.human_y, expected(scorer, report.human_texts, "overall_score"))
        fit = [r for r in human_documents(corpora) if r["split"] == FIT]
        encoder = scorer.encoder
        model, c, tried = logistic_peer(
            encoder.encode([r["text"] for r in fit]), [int(r["label"]) for r in fit], choose, encoder.encode
        )
        out["peer"] = {
            "name": f"static embedding + logistic regression on {len(fit)} human fit labels (C={c})",
            "format_auc": auc_cell(report.web_y, model.decision_function(encoder.encode(report.web_texts))),
            "human_auc": auc_cell(report.human_y, model.decision_function(encoder.encode(report.human_texts))),
            "grid": tried,
        }
    out["docs_per_s"] = docs_per_second(scorer.score, report.web_texts + choose.web_texts, batch=64)
    return out


def main(
    path: Annotated[str, typer.Option(help="DataMan model: local .npz or reference checkpoint dir.")] = (
        "winnow:models/dataman/dataman-local.npz"
    ),
    corpora: Annotated[Path, typer.Option(help="The shared corpora folder.")] = CORPORA,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    scorer = build_scorer({"name": "dataman", "backend": "dataman", "path": path})
    results = {"model": path, "version": scorer.version, "agreement": agreement(scorer, corpora)}
    results["contrasts"] = contrasts(scorer, corpora)
    agree = results["agreement"]
    typer.echo(f"model: {path} ({scorer.version})")
    typer.echo(f"\nAgreement with DataMan-1.5B, report half of dataman-qurating-ratings (n={agree['n']}):\n")
    typer.echo(
        "| criterion | own head | exact | MAE | Spearman | overall head's Spearman | majority exact | majority MAE |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|")
    for name, row in agree["criteria"].items():
        copy = "–" if row["overall_copy_spearman"] is None else f"{row['overall_copy_spearman']:+.3f}"
        typer.echo(
            f"| {name} | {'yes' if row['own_head'] else 'no'} | {row['exact']:.3f} | {row['mae']:.3f} "
            f"| {row['spearman']:+.3f} | {copy} | {row['majority_exact']:.3f} ({row['majority_value']}) "
            f"| {row['majority_mae']:.3f} |"
        )
    dom = agree["domain"]
    typer.echo(
        f"\ndomain accuracy {dom['accuracy']:.3f} "
        f"(majority letter {dom['majority_value']}: {dom['majority_accuracy']:.3f})"
    )
    con = results["contrasts"]
    typer.echo(f"\noverall_score, report split ({con['n_pages']} pages, {con['n_human']} human-labelled docs):")
    typer.echo(f"  format AUC, integer rating: {con['format_auc_rating']}; human AUC: {con['human_auc_rating']}")
    if "format_auc_expected" in con:
        typer.echo(
            f"  format AUC, expected rating: {con['format_auc_expected']}; human AUC: {con['human_auc_expected']}"
        )
        peer = con["peer"]
        typer.echo(f"  peer, {peer['name']}: format AUC {peer['format_auc']}; human AUC {peer['human_auc']}")
    typer.echo(f"  docs/s/core: {con['docs_per_s']:,.0f}")
    if json_out:
        json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    typer.run(main)
