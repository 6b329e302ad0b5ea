"""Local raters against model-derived and human signals (METHODS §1.10 #9, §2.8).

For the local QuRater (``winnow:models/qurating/qurater-hashed.npz``, derived-pairs, trained by
scripts/train_qurating.py on none of the sets below) and, when its module exists, the DataMan
scorer (built generically with ``build_scorer``):

* Spearman per criterion against the stored QuRater-1.3B / DataMan-1.5B scores of
  ``dataman-qurating-ratings`` (135 SlimPajama chunks; model scores, not ground truth);
* ROC-AUC of ``educational_value_average`` and DataMan ``overall_score`` against the human
  good/bad labels of ``dclm-human-quality`` (499 docs; never trained on);
* on ``weborganizer-dclm``: mean educational value per format, and ROC-AUC of
  {Tutorial, Knowledge Article, Academic Writing} vs {Spam / Ads, Content Listing, Truncated}
  (format labels are never trained on); the peer is a fastText classifier trained in this run
  on the 499 human labels (DCLM-style), scored on the same split;
* docs/s per core of each scorer (on the weborganizer docs; a shared, loaded machine makes these
  pessimistic).

    python bench/raters_eval.py [--corpora /work/shared/corpora] [--limit 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.stages.score.dataman import CRITERIA as DATAMAN_CRITERIA  # noqa: E402
from winnow.stages.score.qurating import BUNDLED_QURATER, CRITERIA, spearman  # noqa: E402
from winnow.stages.score.registry import build_scorer  # noqa: E402

HIGH_FORMATS = {"Tutorial", "Knowledge Article", "Academic Writing"}
LOW_FORMATS = {"Spam / Ads", "Content Listing", "Truncated"}
DATAMAN_FIELDS = DATAMAN_CRITERIA


def rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels, dtype=int), np.asarray(scores, dtype=np.float64)))


def timed(scorer: Any, texts: list[str], batch: int = 64) -> tuple[dict[str, np.ndarray], float]:
    """Scores of all texts and docs/s per core (CPU time, so other processes' load matters less)."""
    start = time.process_time()
    parts = [scorer.score(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    elapsed = max(time.process_time() - start, 1e-9)
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return out, len(texts) / elapsed


def dataman_scorer() -> Any | None:
    from winnow.core.models import PACKAGE_DATA

    folder = PACKAGE_DATA / "models" / "dataman"
    model_suffixes = (".npz", ".bin", ".ftz", ".safetensors")
    candidates = sorted(p for p in folder.glob("*") if p.suffix in model_suffixes) if folder.exists() else []
    if not candidates:
        print(f"DataMan: no bundled model under {folder}; DataMan rows skipped")
        return None
    path = f"winnow:models/dataman/{candidates[0].name}"
    try:
        return build_scorer({"name": "dataman", "backend": "dataman", "path": path})
    except Exception as error:  # report, do not hide: the QuRating rows still print
        print(f"DataMan: could not build the scorer from {path}: {type(error).__name__}: {error}")
        return None


def trained_on(corpus: str, script: str = "train_dataman.py") -> bool:
    """Whether the script that builds the bundled DataMan model reads ``corpus``."""
    path = ROOT / "scripts" / script
    return path.exists() and corpus in path.read_text(encoding="utf-8")


def fasttext_peer(human: list[dict[str, Any]], seed: int) -> Any:
    """DCLM-style fastText quality classifier trained on the 499 human labels (the peer)."""
    import fasttext

    folder = Path(tempfile.mkdtemp(prefix="raters-peer-"))
    train = folder / "train.txt"
    with open(train, "w", encoding="utf-8") as handle:
        for row in human:
            handle.write(f"__label__{row['label']} {row['text'].replace(chr(10), ' ')}\n")
    return fasttext.train_supervised(str(train), epoch=3, lr=0.1, wordNgrams=2, seed=seed, thread=1, verbose=0)


def fasttext_good(model: Any, texts: list[str]) -> np.ndarray:
    out = []
    for text in texts:
        labels, probs = model.predict(text.replace("\n", " "), k=2)
        out.append(dict(zip(labels, probs, strict=True)).get("__label__1", 0.0))
    return np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=Path("/work/shared/corpora"))
    parser.add_argument("--qurater", default=BUNDLED_QURATER)
    parser.add_argument("--limit", type=int, default=0, help="Use only the first N weborganizer docs (0 = all).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    qurater = build_scorer({"name": "qurating", "backend": "qurating", "path": args.qurater})
    dataman = dataman_scorer()
    table: list[tuple[str, str, str]] = []

    ratings = rows(args.corpora / "dataman-qurating-ratings" / "ratings.jsonl.gz")
    texts = [r["text"] for r in ratings]
    ours, _ = timed(qurater, texts)
    for criterion in CRITERIA:
        rho = spearman(ours[f"{criterion}_average"], [r["qurating"][criterion] for r in ratings])
        table.append(("dataman-qurating-ratings (135)", f"Spearman QuRating {criterion}", f"{rho:+.3f}"))
    if dataman is not None:
        theirs, _ = timed(dataman, texts)
        for name in DATAMAN_FIELDS:
            if name in theirs:
                rho = spearman(theirs[name].astype(np.float64), [r["dataman"][name] for r in ratings])
                table.append(("dataman-qurating-ratings (135)", f"Spearman DataMan {name}", f"{rho:+.3f}"))
        if "application_domain" in theirs:
            agree = np.mean(
                [str(a) == r["dataman_domain"] for a, r in zip(theirs["application_domain"], ratings, strict=True)]
            )
            table.append(("dataman-qurating-ratings (135)", "DataMan domain accuracy", f"{agree:.3f}"))

    human = rows(args.corpora / "dclm-human-quality" / "quality_labels.jsonl.gz")
    labels = np.array([r["label"] for r in human])
    agree_mask = np.array([bool(r.get("in_agreement_subset")) for r in human])
    hq, _ = timed(qurater, [r["text"] for r in human])
    for criterion in CRITERIA:
        auc = roc_auc(labels, hq[f"{criterion}_average"])
        auc_agree = roc_auc(labels[agree_mask], hq[f"{criterion}_average"][agree_mask])
        table.append(("dclm-human-quality (499)", f"ROC-AUC {criterion}_average", f"{auc:.3f} (agree {auc_agree:.3f})"))
    if dataman is not None:
        hd, _ = timed(dataman, [r["text"] for r in human])
        if "overall_score" in hd:
            auc = roc_auc(labels, hd["overall_score"].astype(np.float64))
            # Honesty check: a model trained on these labels gets an in-sample AUC, not a held-out one.
            caveat = " (IN-SAMPLE: train_dataman.py trains on these labels)" if trained_on("dclm-human-quality") else ""
            table.append(("dclm-human-quality (499)", "ROC-AUC DataMan overall_score", f"{auc:.3f}{caveat}"))

    web = rows(args.corpora / "weborganizer-dclm" / "docs.jsonl.gz")
    if args.limit:
        web = web[: args.limit]
    web_texts = [r["text"] for r in web]
    wq, qurater_rate = timed(qurater, web_texts)
    edu = wq["educational_value_average"].astype(np.float64)
    formats = sorted({r["format"] for r in web})
    for name in formats:
        mask = np.array([r["format"] == name for r in web])
        table.append(
            ("weborganizer-dclm", f"mean educational_value | {name} (n={mask.sum()})", f"{edu[mask].mean():+.3f}")
        )
    split = np.array([r["format"] in HIGH_FORMATS or r["format"] in LOW_FORMATS for r in web])
    target = np.array([r["format"] in HIGH_FORMATS for r in web])[split]
    n_split = int(split.sum())
    for criterion in CRITERIA:
        auc = roc_auc(target, wq[f"{criterion}_average"].astype(np.float64)[split])
        table.append(("weborganizer-dclm", f"ROC-AUC {criterion} high vs low formats (n={n_split})", f"{auc:.3f}"))
    peer = fasttext_peer(human, args.seed)
    start = time.process_time()
    peer_scores = fasttext_good(peer, web_texts)
    peer_rate = len(web_texts) / max(time.process_time() - start, 1e-9)
    table.append(
        ("weborganizer-dclm", "ROC-AUC peer fastText (499 human labels)", f"{roc_auc(target, peer_scores[split]):.3f}")
    )
    dataman_rate = None
    if dataman is not None:
        sample = web_texts[:200]
        wd, dataman_rate = timed(dataman, sample)
        if "overall_score" in wd:
            sub = split[:200]
            if sub.any() and len(set(target[: int(sub.sum())])) == 2:
                auc = roc_auc(
                    np.array([r["format"] in HIGH_FORMATS for r in web[:200]])[sub],
                    wd["overall_score"].astype(np.float64)[sub],
                )
                table.append(("weborganizer-dclm (first 200)", "ROC-AUC DataMan overall_score", f"{auc:.3f}"))

    table.append(("speed", f"QuRating local docs/s/core ({len(web_texts)} docs)", f"{qurater_rate:.1f}"))
    table.append(("speed", "peer fastText docs/s/core", f"{peer_rate:.1f}"))
    if dataman_rate is not None:
        table.append(("speed", "DataMan docs/s/core (200 docs)", f"{dataman_rate:.1f}"))

    width = [max(len(row[i]) for row in table) for i in range(3)]
    print(f"QuRater: {qurater.version}")
    for row in table:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))


if __name__ == "__main__":
    main()
