"""PreSelect (the bundled local-mode classifier) on the report split, beside fastText peers tuned the same way.

Protocol (issue 14): every labelled set is cut by a hash of its URL (web pages) or id into
fit / choose / report (``winnow.core.evaluation.three_way_split``, 60/20/20). Models learn on fit,
every choice is made on choose, and only report figures are quoted. The bundled classifier was
trained by ``scripts/train_preselect.py`` on fit documents (no label read: PreSelect's labels come
from its LM ladder) and its ladder was chosen on choose; here it is only scored.

Targets, on the report split only:

* **format AUC**: ROC-AUC of {Tutorial, Knowledge Article, Academic Writing} against
  {Spam / Ads, Content Listing, Truncated} WebOrganizer pages (model-assigned format labels), on
  the text the default run's score stage sees (normalised, English, C4/Gopher/FineWeb-filtered;
  pages the filters drop are not scored);
* **human AUC**: ROC-AUC against the good/bad labels of dclm-human-quality.

Peers, trained in this run on fit and tuned on choose the way the bundled ladder was chosen
(mean of the two choose AUCs), over fastText's small-data grid (epoch × lr ∈ {3 × 0.1, 10 × 0.5,
25 × 0.5}, wordNgrams 2, otherwise defaults, one thread, seed 0):

* DCLM-style fastText on the human good/bad labels (fit part);
* DCLM-style reference-vs-web: positives = the PreSelect reference text, negatives = as many
  random fit pool documents (the classic "looks like Wikipedia" classifier);
* fastText on the WebOrganizer format contrast itself (fit pages of the six formats): the labels
  the target is made of, so a supervised ceiling for a fastText-class scorer, not a peer method.

Speed: docs/s per core of ``FastTextScorer.score`` (what the score stage calls) on the pipeline
view of the choose and report pages (CPU time, one thread; the peers are unquantized .bin files
with 2M hash buckets, the bundled model is a quantized .ftz).

    python bench/preselect_eval.py [--model winnow:models/preselect/preselect.ftz] [--corpora PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    web_pages,
)
from winnow.core.evaluation import CHOOSE, FIT, REPORT  # noqa: E402
from winnow.core.hashing import uniform  # noqa: E402
from winnow.stages.score.fasttext import FastTextScorer  # noqa: E402

BUNDLED = "winnow:models/preselect/preselect.ftz"


def training_script() -> Any:
    spec = importlib.util.spec_from_file_location("train_preselect", ROOT / "scripts" / "train_preselect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--model", default=BUNDLED, help="The PreSelect classifier to evaluate.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()

    choose, report = Targets(args.corpora, CHOOSE), Targets(args.corpora, REPORT)
    timing_texts = choose.web_texts + report.web_texts
    rows: list[dict[str, Any]] = []

    def add(name: str, scorer: FastTextScorer, trained_on: str, chosen: str) -> None:
        column = scorer.columns[0].name
        web = scorer.score(report.web_texts)[column]
        human = scorer.score(report.human_texts)[column]
        rows.append(
            {
                "model": name,
                "trained_on": trained_on,
                "chosen": chosen,
                "format": auc_cell(report.web_y, web),
                "human": auc_cell(report.human_y, human),
                "speed": docs_per_second(scorer.score, timing_texts),
            }
        )

    preselect = FastTextScorer(args.model, "preselect", "preselect_score")
    add("PreSelect (bundled, quantized .ftz)", preselect, "S(d) of the fit pool, no labels", "ladder")

    script = training_script()
    pages, human = web_pages(args.corpora), human_documents(args.corpora)
    peers: dict[str, list] = {}
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="preselect-peers-", dir=CACHE) as tmp:
        folder = Path(tmp)
        fit_human = [r for r in human if r["split"] == FIT]
        scorer, params, peers["fastText, human labels"] = fasttext_peer(
            folder,
            "human",
            [r["id"] for r in fit_human],
            [r["text"] for r in fit_human],
            [int(r["label"]) for r in fit_human],
            choose,
        )
        add("fastText, human good/bad labels (DCLM-style)", scorer, f"{len(fit_human)} labelled docs", str(params))

        reference = script.reference_docs(args.corpora)
        pool = script.pool_docs(args.corpora)
        negatives = sorted(pool, key=lambda d: uniform(d[0], "bench:dclm-negatives", 0))[: len(reference)]
        scorer, params, peers["fastText, reference vs web"] = fasttext_peer(
            folder,
            "reference",
            [i for i, _ in reference] + [i for i, _ in negatives],
            [t for _, t in reference] + [t for _, t in negatives],
            [1] * len(reference) + [0] * len(negatives),
            choose,
        )
        add("fastText, reference text vs random pool (DCLM-style)", scorer, "reference + pool", str(params))

        fit_pages = [p for p in pages if p["split"] == FIT and p["view"] and p["format"] in HIGH_FORMATS + LOW_FORMATS]
        scorer, params, peers["fastText, format labels"] = fasttext_peer(
            folder,
            "formats",
            [p["id"] for p in fit_pages],
            [p["view"] for p in fit_pages],
            [int(p["format"] in HIGH_FORMATS) for p in fit_pages],
            choose,
        )
        add("fastText on the format labels themselves (ceiling)", scorer, f"{len(fit_pages)} pages", str(params))

    print(f"model: {args.model} ({preselect.version})")
    print(
        f"report split: {len(report.web_y)} pages ({int(report.web_y.sum())} of the good formats), "
        f"{len(report.human_y)} human-labelled docs ({int(report.human_y.sum())} good)"
    )
    print()
    print("| model | trained on (fit split) | chosen on choose | format AUC (95%) | human AUC (95%) | docs/s/core |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['trained_on']} | {row['chosen']} | {row['format']} | {row['human']} "
            f"| {row['speed']:,.0f} |"
        )
    print()
    print("Peer grids on the choose split (format AUC / human AUC):")
    for name, tried in peers.items():
        print(f"  {name}: " + ", ".join(f"e{p['epoch']} lr{p['lr']}: {w:.3f} / {h:.3f}" for p, w, h in tried))
    ladder_report = ROOT / "winnow" / "data" / "models" / "preselect" / "report.json"
    if args.model == BUNDLED and ladder_report.exists():
        choice = json.loads(ladder_report.read_text(encoding="utf-8")).get("ladder_choice")
        if choice:
            print("Bundled ladder, chosen on the choose split by scripts/train_preselect.py (format AUC / human AUC):")
            for name, row in choice["candidates"].items():
                mark = "  <- chosen" if name == choice["chosen"] else ""
                print(
                    f"  {name} ({row['ladder']}): {row['choose_format_auc']:.3f} / {row['choose_human_auc']:.3f}{mark}"
                )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peers": peers}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
