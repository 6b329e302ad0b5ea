"""The bundled local QuRater on the report split, beside peers trained and tuned the same way.

Protocol (issue 14): labelled sets are cut by a hash of URL / id into fit / choose / report
(``winnow.core.evaluation.three_way_split``, 60/20/20; the 135 stored ratings have no fit share,
half choose, half report: nothing trains on them). ``scripts/train_qurating.py`` trained the head
on fit (derived pairs) and chose its variant on choose; here it is only scored, on report:

* **format AUC** per criterion: {Tutorial, Knowledge Article, Academic Writing} against
  {Spam / Ads, Content Listing, Truncated} WebOrganizer pages, on the text the default run's score
  stage sees (normalised, English, filtered), with a bootstrap 95% interval;
* **human AUC** per criterion against dclm-human-quality's good/bad labels;
* **Spearman** per criterion against the stored QuRater-1.3B ratings (report half of
  dataman-qurating-ratings; model scores, not ground truth);
* mean educational value per WebOrganizer format (all report pages that survive the filters);
* docs/s per core of ``LocalQuRater.score`` (CPU time, one thread, pipeline view of the choose and
  report pages).

Peers for ``educational_value_average`` (fit-trained, choose-tuned by the mean of the two choose
AUCs, as the QuRater's variant was): fastText on the human labels (DCLM-style; epoch × lr grid
{3 × 0.1, 10 × 0.5, 25 × 0.5}, wordNgrams 2), logistic regression on winnow's static embedding of
the same labels (C ∈ {0.1, 1, 10}); and both on the format contrast itself, the labels the target
is made of (a supervised ceiling, not a peer method).

    python bench/raters_eval.py [--qurater winnow:models/qurating/qurater-hashed.npz] [--corpora PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._quality_data import (  # noqa: E402
    CACHE,
    CORPORA,
    HIGH_FORMATS,
    LOW_FORMATS,
    Targets,
    auc_cell,
    docs_per_second,
    fasttext_peer,
    human_documents,
    logistic_peer,
    rating_documents,
    web_pages,
)
from winnow.core.evaluation import CHOOSE, FIT, REPORT  # noqa: E402
from winnow.core.static_embedding import load_static_embedding  # noqa: E402
from winnow.stages.score.qurating import BUNDLED_QURATER, CRITERIA, LocalQuRater, spearman  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--qurater", default=BUNDLED_QURATER)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    qurater = LocalQuRater(args.qurater)
    choose, report = Targets(args.corpora, CHOOSE), Targets(args.corpora, REPORT)
    ratings = [r for r in rating_documents(args.corpora) if r["split"] == REPORT]
    web = qurater.score(report.web_texts)
    human = qurater.score(report.human_texts)
    stored = qurater.score([r["text"] for r in ratings])
    results: dict[str, Any] = {"model": qurater.version, "criteria": {}}
    print(f"QuRater: {qurater.version}")
    print(
        f"report split: {len(report.web_y)} pages ({int(report.web_y.sum())} of the good formats), "
        f"{len(report.human_y)} human-labelled docs, {len(ratings)} stored ratings"
    )
    print()
    print("| criterion | format AUC (95%) | human AUC (95%) | Spearman vs QuRater-1.3B |")
    print("|---|---|---|---|")
    for criterion in CRITERIA:
        column = f"{criterion}_average"
        row = {
            "format": auc_cell(report.web_y, web[column]),
            "human": auc_cell(report.human_y, human[column]),
            "spearman": spearman(stored[column], [r["qurating"][criterion] for r in ratings]),
        }
        results["criteria"][criterion] = row
        print(f"| {criterion} | {row['format']} | {row['human']} | {row['spearman']:+.3f} |")

    all_report = [p for p in web_pages(args.corpora) if p["split"] == REPORT and p["view"]]
    education = qurater.score([p["view"] for p in all_report])["educational_value_average"]
    per_format = {}
    for name in sorted({p["format"] for p in all_report}):
        mask = np.array([p["format"] == name for p in all_report])
        per_format[name] = (float(education[mask].mean()), int(mask.sum()))
    results["educational_value_by_format"] = per_format
    print()
    print("Mean educational_value_average per format (report pages; good / poor formats marked + / −):")
    for name, (mean, n) in sorted(per_format.items(), key=lambda item: -item[1][0]):
        mark = "+" if name in HIGH_FORMATS else "−" if name in LOW_FORMATS else " "
        print(f"  {mark} {name:20s} {mean:+.3f}  (n={n})")

    timing = choose.web_texts + report.web_texts
    rows = [("QuRater educational_value (bundled)", "derived pairs", "variant", web, human, qurater.score, timing)]
    pages, humans = web_pages(args.corpora), human_documents(args.corpora)
    fit_human = [r for r in humans if r["split"] == FIT]
    fit_pages = [p for p in pages if p["split"] == FIT and p["view"] and p["format"] in HIGH_FORMATS + LOW_FORMATS]
    embedding = load_static_embedding()
    grids: dict[str, list] = {}
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raters-peers-", dir=CACHE) as tmp:
        for tag, docs, texts, labels in (
            ("human labels", fit_human, [r["text"] for r in fit_human], [int(r["label"]) for r in fit_human]),
            (
                "format labels (ceiling)",
                fit_pages,
                [p["view"] for p in fit_pages],
                [int(p["format"] in HIGH_FORMATS) for p in fit_pages],
            ),
        ):
            scorer, params, grids[f"fastText, {tag}"] = fasttext_peer(
                Path(tmp), tag.split()[0], [str(d["id"]) for d in docs], texts, labels, choose
            )
            column = scorer.columns[0].name
            rows.append(
                (
                    f"fastText, {tag}",
                    f"{len(docs)} docs",
                    str(params),
                    {"educational_value_average": scorer.score(report.web_texts)[column]},
                    {"educational_value_average": scorer.score(report.human_texts)[column]},
                    scorer.score,
                    timing,
                )
            )
            model, c, grids[f"static embedding + logistic regression, {tag}"] = logistic_peer(
                embedding.encode(texts), labels, choose, embedding.encode
            )

            def score(batch: list[str], model: Any = model) -> np.ndarray:
                return model.decision_function(embedding.encode(batch))

            rows.append(
                (
                    f"static embedding + logistic regression, {tag}",
                    f"{len(docs)} docs",
                    f"C={c}",
                    {"educational_value_average": score(report.web_texts)},
                    {"educational_value_average": score(report.human_texts)},
                    score,
                    timing,
                )
            )
    print()
    print("educational_value_average and its peers (report split):")
    print()
    print("| scorer | trained on (fit) | chosen on choose | format AUC (95%) | human AUC (95%) | docs/s/core |")
    print("|---|---|---|---|---|---|")
    results["peers"] = []
    for name, trained, chosen, w, h, score, texts in rows:
        speed = docs_per_second(score, texts, batch=64)
        fmt = auc_cell(report.web_y, w["educational_value_average"])
        hum = auc_cell(report.human_y, h["educational_value_average"])
        results["peers"].append({"scorer": name, "format": fmt, "human": hum, "docs_per_s": speed})
        print(f"| {name} | {trained} | {chosen} | {fmt} | {hum} | {speed:,.0f} |")
    print()
    print("Peer grids on the choose split (format AUC / human AUC):")
    for name, tried in grids.items():
        cells = []
        for point, w, h in tried:
            label = f"e{point['epoch']} lr{point['lr']}" if isinstance(point, dict) else f"C={point}"
            cells.append(f"{label}: {w:.3f} / {h:.3f}")
        print(f"  {name}: " + ", ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
