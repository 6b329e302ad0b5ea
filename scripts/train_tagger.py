"""Rebuild the bundled WebOrganizer taggers (and the test sample) from ``weborganizer-dclm``.

The evaluation protocol (``bench/tagging_eval.py``): pages are split by URL hash into *fit*,
*choose* and *report* (``winnow.core.evaluation.three_way_split``, 60/20/20, the split every quality
bench uses). The settings below were picked on
*choose* from ``choice_grid`` with models trained on *fit*; the shipped models are then retrained
with those settings on *fit + choose*, so the report rows are never trained on and the bench's
report figures are the shipped models' own. Texts go through the ``normalize`` stage's defaults
first, as in a pipeline run. Training is deterministic (hashed features, liblinear with a fixed
seed, fixed zip timestamps, the shipped static embedding whose digest the models record): the same
input gives byte-identical files, whose SHA-256 this script prints for the models' README.

    python scripts/train_tagger.py [--corpora PATH] [--out winnow/data/models/tagger] [--test-sample]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.domains import TAXONOMIES  # noqa: E402
from winnow.core.evaluation import REPORT, macro_f1, three_way_split  # noqa: E402
from winnow.core.hashing import uniform  # noqa: E402
from winnow.core.taggers import (  # noqa: E402
    BatchFeatures,
    FeatureSpec,
    LabelledExamples,
    LinearTagger,
    labelled_examples,
)
from winnow.stages.normalize.normalizer import TextNormalizer  # noqa: E402

SPARSE = FeatureSpec()  # hashed word 1–2-grams + URL + page shape, 2^18 buckets, word hashing


def embedded(scale: float, profile: float = 0.0) -> FeatureSpec:
    """The sparse features plus the static embedding of the URL and the first 1,500 characters (and,
    with ``profile`` > 0, the page profile at that weight)."""
    return FeatureSpec(embedding="static-minilm", embedding_chars=1500, embedding_scale=scale, profile_scale=profile)


class Setting(NamedTuple):
    """One candidate recipe: features, the SVM's C, how label confidences weight the examples, and
    whether per-label logit offsets are fitted (``offset_folds`` > 0, see ``fit_with_offsets``)."""

    spec: FeatureSpec
    regularisation: float
    weighting: str = "confidence"
    offset_folds: int = 0


# How WebOrganizer's label confidences (model outputs, 0.5–1.0 here) weight training examples. Which one
# is used is picked on *choose* like every other setting [ours]:
WEIGHTINGS = ("confidence", "confidence^2", "flat", "confidence, drop<0.6", "confidence, drop<0.7")


def example_weights(confidence: np.ndarray, weighting: str, targets: np.ndarray | None = None) -> np.ndarray:
    """Per-example training weights from label confidences; 0 means the example is left out.

    A ``", balanced^p"`` suffix multiplies each weight by (mean class count / its class's count)^p,
    counted on ``targets``: macro-F1 weighs every class alike, so rare classes may deserve a
    larger pull [ours, picked on *choose*]."""
    if ", balanced" in weighting:
        weighting, power = weighting.split(", balanced")
        counts = np.bincount(np.asarray(targets), minlength=1).astype(np.float64)
        present = counts > 0
        factor = np.zeros_like(counts)
        factor[present] = (counts[present].mean() / counts[present]) ** float(power.removeprefix("^") or 1)
        return example_weights(confidence, weighting) * factor[np.asarray(targets)]
    confidence = np.asarray(confidence, dtype=np.float64)
    if weighting == "confidence":
        return confidence
    if weighting == "confidence^2":
        return confidence * confidence
    if weighting == "flat":
        return np.ones_like(confidence)
    if weighting.startswith("confidence, drop<"):
        return np.where(confidence >= float(weighting.removeprefix("confidence, drop<")), confidence, 0.0)
    raise ValueError(f"unknown weighting {weighting!r} (known: {WEIGHTINGS})")


OFFSET_GRID = np.round(np.arange(-1.0, 1.0001, 0.05), 2)  # logit units (after the temperature)
OFFSET_SWEEPS = 3
OFFSET_FOLDS = 5


def macro_f1_offsets(logits: np.ndarray, targets: np.ndarray, n_labels: int) -> np.ndarray:
    """Per-label offsets added to the logits that raise macro-F1 on these (out-of-fold) rows.

    Coordinate ascent over ``OFFSET_GRID``, label by label, at most ``OFFSET_SWEEPS`` sweeps; an
    offset moves only when macro-F1 strictly improves, so ties keep 0 and the result is
    deterministic. An SVM trained one-vs-rest ranks labels by margins that are not comparable
    across labels; macro-F1 weighs every label alike, so shifting a label's margin trades its
    precision for recall where that pays [ours]."""
    offsets = np.zeros(n_labels)
    best = macro_f1(targets, np.argmax(logits, axis=1), n_labels)[0]
    for _ in range(OFFSET_SWEEPS):
        moved = False
        for label in range(n_labels):
            kept = offsets[label]
            for value in OFFSET_GRID:
                offsets[label] = value
                score = macro_f1(targets, np.argmax(logits + offsets, axis=1), n_labels)[0]
                if score > best + 1e-12:
                    best, kept, moved = score, value, True
            offsets[label] = kept
        if not moved:
            break
    return offsets


def fit_with_offsets(
    fit_rows: Callable[[np.ndarray], LinearTagger],
    logits_of: Callable[[LinearTagger, np.ndarray], np.ndarray],
    ids: Sequence[str],
    targets: np.ndarray,
    folds: int,
) -> LinearTagger:
    """The tagger fitted on every row, its bias shifted by ``macro_f1_offsets`` of out-of-fold logits.

    Rows are cut into ``folds`` folds by a hash of their id; each fold's logits come from a model
    fitted on the other folds, so the offsets are learnt on logits of unseen rows, as they will be
    applied. ``fit_rows(mask)`` trains on the rows where ``mask`` is true, ``logits_of(tagger,
    mask)`` scores those rows."""
    fold = np.array([min(folds - 1, int(uniform(str(i), "tagger-offsets", 0) * folds)) for i in ids])
    out_of_fold = np.zeros((len(ids), 0))
    for part in range(folds):
        held = fold == part
        logits = logits_of(fit_rows(~held), held)
        if out_of_fold.shape[1] == 0:
            out_of_fold = np.zeros((len(ids), logits.shape[1]))
        out_of_fold[held] = logits
    tagger = fit_rows(np.ones(len(ids), dtype=bool))
    offsets = macro_f1_offsets(out_of_fold, np.asarray(targets), out_of_fold.shape[1])
    meta = tagger.meta | {"label_offsets": [float(v) for v in offsets], "offset_folds": folds}
    return LinearTagger(
        tagger.taxonomy,
        tagger.labels,
        tagger.spec,
        tagger.idf,
        tagger.weights,
        tagger.scales,
        (tagger.bias.astype(np.float64) + offsets).astype(np.float32),
        meta,
        tagger.dense_weights,
    )


def choice_grid(taxonomy: str, quick: bool = False) -> dict[str, Setting]:
    """The settings ``bench/tagging_eval.py`` compares on *choose*: name → setting."""
    if quick:
        return {"embedding 0.5, C=4": Setting(embedded(0.5), 4.0), "sparse, C=4": Setting(SPARSE, 4.0)}
    grid = {f"embedding 0.5, C={c:g}": Setting(embedded(0.5), c) for c in (2.0, 4.0, 8.0, 16.0)}
    grid |= {f"embedding {s:g}, C=4": Setting(embedded(s), 4.0) for s in (0.3, 1.0)}
    grid |= {f"sparse, C={c:g}": Setting(SPARSE, c) for c in ((2.0, 4.0, 8.0) if taxonomy == "format" else (4.0,))}
    for c in (4.0, 8.0):  # label-confidence weighting at the two best C values of the earlier grid
        grid |= {f"embedding 0.5, C={c:g}, {w}": Setting(embedded(0.5), c, w) for w in WEIGHTINGS[1:]}
    if taxonomy == "format":  # issue 16, second round: class-balanced weights and label offsets
        balanced = ("flat, balanced^0.5", "flat, balanced^1", "flat, balanced^2", "confidence, balanced^1")
        grid |= {f"embedding 0.5, C=8, {w}": Setting(embedded(0.5), 8.0, w) for w in balanced}
        grid |= {
            f"embedding 0.5, C={c:g}, flat, balanced^1": Setting(embedded(0.5), c, "flat, balanced^1")
            for c in (4.0, 16.0)
        }
        grid["embedding 0.5, C=8, flat, offsets"] = Setting(embedded(0.5), 8.0, "flat", OFFSET_FOLDS)
        # third round: the page profile (ratios of line shapes, pronouns, dates ...) at three weights
        grid |= {
            f"embedding 0.5, profile {p:g}, C=8, flat, balanced^2": Setting(embedded(0.5, p), 8.0, "flat, balanced^2")
            for p in (0.1, 0.2, 0.35)
        }
    return grid


# Picked on choose by bench/tagging_eval.py (figures in winnow/data/models/tagger/README.md).
CHOSEN = {"topic": "embedding 0.5, C=4", "format": "embedding 0.5, profile 0.2, C=8, flat, balanced^2"}
CLASSIFIER = "svm"
# Test sample: real pages cut short so tests/data/tagging stays small (< 300 KB gzip'd).
SAMPLE_CHARS = 700
SAMPLE_TRAIN_PER_TOPIC = 20
SAMPLE_HELDOUT_PER_TOPIC = 10


def read_rows(corpora: Path) -> list[dict]:
    normalise = TextNormalizer()
    with gzip.open(corpora / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    for row in rows:
        row["text"] = normalise(row["text"])
    return rows


def report_mask(rows: list[dict]) -> list[bool]:
    """True for the *report* rows (never trained on); the models train on the rest (fit + choose)."""
    return [part == REPORT for part in three_way_split([row.get("url") or row["id"] for row in rows])]


def fit_setting(
    taxonomy: str,
    data: LabelledExamples,
    counts: Any,
    sums: np.ndarray | None,
    setting: Setting,
    profiles: np.ndarray | None = None,
) -> LinearTagger:
    """A tagger with ``setting`` fitted on ``data`` whose ``count_matrix`` rows (CSR), embedding sums
    and page profiles are given (the bench computes them once for its whole grid)."""
    spec, regularisation, weighting, folds = setting
    labels = TAXONOMIES[taxonomy]
    weights = example_weights(data.weights, weighting, data.targets)

    def fit_rows(mask: np.ndarray) -> LinearTagger:
        rows = np.flatnonzero(mask & (weights > 0))  # a weighting may leave low-confidence rows out
        return LinearTagger.fit_features(
            taxonomy,
            labels,
            spec,
            counts[rows],
            None if sums is None else sums[rows],
            data.targets[rows],
            weights[rows],
            CLASSIFIER,
            regularisation,
            profiles=None if profiles is None else profiles[rows],
        )

    if not folds:
        return fit_rows(np.ones(len(data.targets), dtype=bool))

    def logits_of(tagger: LinearTagger, mask: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(mask)
        return tagger.logits([data.texts[i] for i in rows], [data.urls[i] for i in rows])

    return fit_with_offsets(fit_rows, logits_of, data.ids, data.targets, folds)


def train(rows: list[dict], out: Path, taxonomies: Sequence[str] = tuple(TAXONOMIES)) -> dict[str, str]:
    report = report_mask(rows)
    training = [row for row, held in zip(rows, report, strict=True) if not held]
    digests = {}
    for taxonomy in taxonomies:
        labels = TAXONOMIES[taxonomy]
        data = labelled_examples(training, labels, label_field=f"{taxonomy}_id", weight_field=f"{taxonomy}_confidence")
        setting = choice_grid(taxonomy)[CHOSEN[taxonomy]]
        batch = BatchFeatures(data.texts, data.urls)
        sums = batch.embedding_sums(setting.spec)[0] if setting.spec.embedding else None
        profiles = batch.profiles(setting.spec) if setting.spec.profile_scale else None
        tagger = fit_setting(taxonomy, data, batch.counts(setting.spec).tocsr(), sums, setting, profiles)
        path = out / f"{taxonomy}-tagger.zip"
        digests[path.name] = tagger.save(path)
        print(f"{path}: {path.stat().st_size:,} bytes, sha256 {digests[path.name]}", flush=True)
    return digests


def write_test_sample(rows: list[dict], folder: Path) -> None:
    """A few real pages per topic, split as the models were (fit + choose rows / report rows)."""
    heldout = report_mask(rows)
    keep = ("id", "url", "topic_id", "topic", "topic_confidence", "format_id", "format", "format_confidence")
    for name, want_heldout, per_topic in (
        ("train", False, SAMPLE_TRAIN_PER_TOPIC),
        ("heldout", True, SAMPLE_HELDOUT_PER_TOPIC),
    ):
        taken: dict[str, int] = {}
        lines = []
        for row, held in sorted(zip(rows, heldout, strict=True), key=lambda pair: pair[0]["id"]):
            if held != want_heldout or taken.get(row["topic_id"], 0) >= per_topic:
                continue
            taken[row["topic_id"]] = taken.get(row["topic_id"], 0) + 1
            sample = {key: row[key] for key in keep}
            sample["text"] = row["text"][:SAMPLE_CHARS]
            lines.append(json.dumps(sample, ensure_ascii=False, sort_keys=True))
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.GzipFile(folder / f"{name}.jsonl.gz", "wb", mtime=0) as handle:
            handle.write(("\n".join(lines) + "\n").encode("utf-8"))
        print(f"{folder / f'{name}.jsonl.gz'}: {len(lines)} docs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--out", type=Path, default=ROOT / "winnow" / "data" / "models" / "tagger")
    parser.add_argument("--test-sample", action="store_true", help="Also rewrite tests/data/tagging/.")
    parser.add_argument("--no-models", action="store_true", help="Skip training (with --test-sample).")
    parser.add_argument("--taxonomies", default="topic,format", help="Which models to rebuild.")
    args = parser.parse_args()
    rows = read_rows(args.corpora)
    if args.test_sample:
        write_test_sample(rows, ROOT / "tests" / "data" / "tagging")
    if not args.no_models:
        train(rows, args.out, args.taxonomies.split(","))


if __name__ == "__main__":
    main()
