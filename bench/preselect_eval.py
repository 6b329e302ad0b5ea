"""PreSelect (local mode) vs a DCLM-style fastText classifier on human quality labels.

Both classifiers are trained in this run, from the same shared corpora, with the same fastText
hyperparameters (METHODS §3.3: epoch 3, lr 0.1, wordNgrams 2, defaults otherwise) and the same
number of training examples per class:

* PreSelect: character 5-gram LM ladder on 25/50/75/100% of the reference text (Wikipedia,
  ABC news, inaugural + State of the Union addresses), S(d) on the pool (DCLM web pages, web
  lines, 4chan threads), positives S = 1, negatives from the lowest S (scripts/train_preselect.py's
  data and recipe);
* DCLM-style: positives = the reference documents themselves (high-quality text), negatives =
  random pool documents.

Evaluation: ROC-AUC against the human good/bad labels of ../shared/corpora/dclm-human-quality
(499 docs; never used in training), with a bootstrap 95% interval; also on the annotators'
agreement subset. The bundled classifier (winnow/data/models/preselect/preselect.ftz) is scored
on the same labels. The reference corpus has ~1.2k documents, which caps the common budget.

    python bench/preselect_eval.py [--corpora PATH] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.hashing import uniform  # noqa: E402
from winnow.stages.score.preselect import (  # noqa: E402
    DEFAULT_LADDER,
    choose_examples,
    concordant_pairs,
    positive_probability,
    roc_auc,
    train_fasttext,
    train_ladder,
    write_label_file,
)

BUNDLED = ROOT / "winnow" / "data" / "models" / "preselect" / "preselect.ftz"


def _training_script():
    spec = importlib.util.spec_from_file_location("train_preselect", ROOT / "scripts" / "train_preselect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[pick])) == 2:
            values.append(roc_auc(labels[pick], scores[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def fit(ids: list[str], texts: list[str], labels: list[int], seed: int):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        write_label_file(path, ids, texts, labels, seed)
        return train_fasttext(path, seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--max-chars", type=int, default=8000)
    args = parser.parse_args()

    script = _training_script()
    reference = script.reference_docs(args.corpora)
    pool = script.pool_docs(args.corpora)
    with gzip.open(args.corpora / "dclm-human-quality" / "quality_labels.jsonl.gz", "rt", encoding="utf-8") as f:
        evaluation = [json.loads(line) for line in f]
    eval_texts = [r["text"] for r in evaluation]
    eval_labels = np.array([r["label"] for r in evaluation])
    agreement = np.array([bool(r.get("in_agreement_subset")) for r in evaluation])

    started = time.perf_counter()
    ladder = train_ladder(
        [i for i, _ in reference],
        [t for _, t in reference],
        DEFAULT_LADDER,
        args.order,
        seed=args.seed,
        max_chars=args.max_chars,
    )
    pool_ids, pool_texts = [i for i, _ in pool], [t for _, t in pool]
    concordant = concordant_pairs(ladder.benchmark, ladder.losses(pool_texts))
    ladder_seconds = time.perf_counter() - started
    budget = len(reference)  # DCLM-style positives are the reference docs: the common budget per class

    rows = []

    def evaluate(name: str, model, n_per_class: int) -> None:
        scores = positive_probability(model, eval_texts)
        low, high = bootstrap_auc(eval_labels, scores, seed=args.seed)
        rows.append(
            (
                name,
                n_per_class,
                roc_auc(eval_labels, scores),
                low,
                high,
                roc_auc(eval_labels[agreement], scores[agreement]),
            )
        )

    for cap in (budget, None):
        positives, negatives = choose_examples(pool_ids, concordant, len(ladder.models), args.seed, cap)
        chosen = list(positives) + list(negatives)
        model = fit(
            [pool_ids[i] for i in chosen],
            [pool_texts[i] for i in chosen],
            [1] * len(positives) + [0] * len(negatives),
            args.seed,
        )
        label = "PreSelect local (same budget)" if cap else "PreSelect local (all S=1 positives)"
        evaluate(label, model, len(positives))

    negatives = sorted(range(len(pool)), key=lambda i: uniform(pool_ids[i], "bench:dclm-negatives", args.seed))[:budget]
    model = fit(
        [i for i, _ in reference] + [pool_ids[i] for i in negatives],
        [t for _, t in reference] + [pool_texts[i] for i in negatives],
        [1] * len(reference) + [0] * len(negatives),
        args.seed,
    )
    evaluate("DCLM-style (reference vs random web)", model, budget)

    if BUNDLED.exists():
        import fasttext

        evaluate("bundled preselect.ftz (quantized)", fasttext.load_model(str(BUNDLED)), -1)

    histogram = np.bincount(concordant, minlength=7).tolist()
    print(f"ladder: {[round(r.heldout_bpc, 4) for r in ladder.rungs]} held-out BPC; S histogram {histogram}")
    print(f"pool {len(pool)} docs scored by 4 LMs in {ladder_seconds:.0f}s (incl. LM training)")
    good, agreeing = int(eval_labels.sum()), int(agreement.sum())
    print(f"evaluation: {len(evaluation)} human-labelled docs ({good} good), agreement subset {agreeing}")
    print()
    print("| classifier | examples/class | ROC-AUC | 95% bootstrap | AUC agreement subset |")
    print("|---|---|---|---|---|")
    for name, n, auc, low, high, auc_agree in rows:
        print(f"| {name} | {n if n >= 0 else '—'} | {auc:.3f} | {low:.3f}–{high:.3f} | {auc_agree:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
