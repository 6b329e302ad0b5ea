"""Tagging quality under the evaluation protocol: fit / choose / report, winnow and its peers alike.

``weborganizer-dclm`` (8.9k DCLM pages with WebOrganizer's model-made topic and format labels) is
split by ``winnow.core.evaluation.three_way_split`` (URL hash, the split every quality bench uses):
*fit* 60%, *choose* 20%, *report* 20%. Texts first go through the ``normalize``
stage's defaults, as they do in a pipeline run. For each taxonomy:

1. every candidate setting is trained on *fit* and scored (macro-F1) on *choose*: winnow's
   ``LinearTagger`` over a small grid (C, embedding scale, with or without the embedding), the
   TF-IDF word 1–2-gram + LinearSVC peer on the same input winnow reads (``"{url}\\n{text}"``, so
   it gets the URL tokens too) over C, and the fastText peer (supervised, 25 epochs, one thread,
   lower-cased words of the same input) over learning rate × word n-grams;
2. each family's best setting on *choose* is scored on *report* (accuracy, macro-F1, and both on
   the report rows whose label confidence is ≥ 0.9), with its inference speed in documents per
   CPU-second of this single-threaded process (features included, each model alone);
3. the picked settings are retrained on *fit + choose* and scored on *report* again; winnow's
   retrained model is what ``scripts/train_tagger.py`` ships, and the bench says whether the bundled
   file is byte-identical to it; the bundled pair is also timed as the tag stage runs it (topic then
   format on each 256-document batch, features and embedding computed once for both).

Nothing is trained or chosen on *report*. The labels are a model's, so the scores measure agreement
with WebOrganizer's classifiers.

    python bench/tagging_eval.py [--corpora PATH] [--taxonomies topic,format] [--peers tfidf-svm,fasttext]
                                 [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-threaded timing (set before numpy loads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizers' thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.domains import TAXONOMIES  # noqa: E402
from winnow.core.evaluation import macro_f1, three_way_split  # noqa: E402
from winnow.core.taggers import (  # noqa: E402
    BatchFeatures,
    FeatureSpec,
    LabelledExamples,
    count_matrix,
    embedding_sums,
    labelled_examples,
    load_tagger,
    tag_probabilities,
)

sys.path.insert(0, str(ROOT / "scripts"))
import train_tagger  # noqa: E402  (the shipped recipe and its choice grid live there)

TAGS = ("topic", "format")
Predictor = Callable[[Sequence[str], Sequence[str | None]], np.ndarray]
_WORDS = re.compile(r"\w+")


@dataclass
class Candidate:
    family: str
    setting: str
    train: Callable[[LabelledExamples], Predictor]
    choose_f1: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)


# --- winnow ---------------------------------------------------------------------------------------


class FeatureCache:
    """Count matrices and embedding sums of every row, computed once per spec (the grid shares them)."""

    def __init__(self, data: LabelledExamples):
        self.data = data
        self._counts: dict[tuple, Any] = {}
        self._sums: dict[tuple, np.ndarray] = {}
        self._profiles: dict[int, np.ndarray] = {}

    def profiles(self, spec: FeatureSpec, rows: np.ndarray) -> np.ndarray | None:
        """The page profiles of ``rows`` when the spec has one (they depend on its ``max_chars`` only)."""
        if not spec.profile_scale:
            return None
        if spec.max_chars not in self._profiles:
            self._profiles[spec.max_chars] = BatchFeatures(self.data.texts, self.data.urls).profiles(spec)
        return self._profiles[spec.max_chars][rows]

    def inputs(self, spec: FeatureSpec, rows: np.ndarray) -> tuple[Any, np.ndarray | None]:
        key = spec.sparse_key()
        if key not in self._counts:
            self._counts[key] = count_matrix(self.data.texts, self.data.urls, spec).tocsr()
        sums = None
        if spec.embedding:
            ekey = (spec.embedding, spec.embedding_input, spec.embedding_chars, spec.use_url)
            if ekey not in self._sums:
                self._sums[ekey] = embedding_sums(self.data.texts, self.data.urls, spec)[0]
            sums = self._sums[ekey][rows]
        return self._counts[key][rows], sums


def winnow_candidate(taxonomy: str, cache: FeatureCache, setting: train_tagger.Setting) -> Callable:
    def train(part: LabelledExamples) -> Predictor:
        rows = np.asarray(part.ids_rows)  # type: ignore[attr-defined]
        counts, sums = cache.inputs(setting.spec, rows)
        tagger = train_tagger.fit_setting(taxonomy, part, counts, sums, setting, cache.profiles(setting.spec, rows))
        predict = lambda texts, urls: np.argmax(tagger.logits(texts, urls), axis=1)  # noqa: E731
        predict.tagger = tagger  # type: ignore[attr-defined]
        return predict

    return train


# --- peers ------------------------------------------------------------------------------------------


def peer_input(text: str, url: str | None) -> str:
    return f"{url or ''}\n{text}"


def svm_peer(c: float) -> Callable:
    """scikit-learn TF-IDF word 1–2-grams (sublinear TF) + LinearSVC on ``"{url}\\n{text}"``."""

    def train(part: LabelledExamples) -> Predictor:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        inputs = [peer_input(t, u) for t, u in zip(part.texts, part.urls, strict=True)]
        model = LinearSVC(C=c, random_state=0, max_iter=5000).fit(vectoriser.fit_transform(inputs), part.targets)
        return lambda texts, urls: model.predict(
            vectoriser.transform([peer_input(t, u) for t, u in zip(texts, urls, strict=True)])
        )

    return train


FASTTEXT_WORDS = 1000  # long pages make fastText's updates diverge (NaN) at the larger learning rates


def fasttext_line(text: str, url: str | None) -> str:
    return " ".join(_WORDS.findall(peer_input(text, url).lower())[:FASTTEXT_WORDS])


def fasttext_peer(lr: float, ngrams: int, epochs: int = 25) -> Callable:
    """fastText supervised at small-data settings (dim 100, one thread, seed 0) on the first 1,000
    lower-cased words of ``"{url}\\n{text}"``."""

    def train(part: LabelledExamples) -> Predictor:
        import fasttext

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
            for text, url, target in zip(part.texts, part.urls, part.targets, strict=True):
                handle.write(f"__label__{target} {fasttext_line(text, url)}\n")
        try:
            model = fasttext.train_supervised(
                handle.name, epoch=epochs, lr=lr, wordNgrams=ngrams, dim=100, thread=1, seed=0, verbose=0
            )
        finally:
            os.unlink(handle.name)

        def predict(texts: Sequence[str], urls: Sequence[str | None]) -> np.ndarray:
            labels = model.predict([fasttext_line(t, u) for t, u in zip(texts, urls, strict=True)])[0]
            return np.array([int(found[0].removeprefix("__label__")) for found in labels])

        return predict

    return train


# --- protocol -------------------------------------------------------------------------------------


def candidates(
    taxonomy: str, cache: FeatureCache, quick: bool, peers: Sequence[str], only: str | None = None
) -> list[Candidate]:
    out = [
        Candidate("winnow", name, winnow_candidate(taxonomy, cache, setting))
        for name, setting in train_tagger.choice_grid(taxonomy, quick).items()
        if only is None or re.fullmatch(only, name)
    ]
    costs = (0.5, 1.0) if quick else (0.25, 0.5, 1.0, 2.0, 4.0)
    if "tfidf-svm" in peers:
        out += [Candidate("tfidf-svm", f"C={c}", svm_peer(c)) for c in costs]
    grid = ((0.5, 1, 25),) if quick else ((0.25, 1, 25), (0.5, 1, 25), (0.5, 1, 50), (0.5, 2, 50))
    if "fasttext" in peers:
        out += [
            Candidate("fasttext", f"lr={lr},wordNgrams={n},epoch={e}", fasttext_peer(lr, n, e)) for lr, n, e in grid
        ]
    return out


def scores(truth: np.ndarray, predicted: np.ndarray, confident: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": macro_f1(truth, predicted, 24)[0],
        "accuracy_conf90": float(np.mean(predicted[confident] == truth[confident])),
        "macro_f1_conf90": macro_f1(truth[confident], predicted[confident], 24)[0],
    }


def timed(predict: Predictor, part: LabelledExamples) -> tuple[np.ndarray, float]:
    """Predictions and docs per CPU-second of this process (one thread; each model pays for its own
    features and embedding)."""
    started = time.process_time()
    predicted = np.asarray(predict(part.texts, part.urls))
    return predicted, len(part.texts) / max(1e-9, time.process_time() - started)


def time_tag_stage(part: LabelledExamples, folder: Path | None = None, batch: int = 256) -> float:
    """Docs per CPU-second of a tagger pair as the tag stage runs it (topic then format per batch)."""
    paths = {t: str(folder / f"{t}-tagger.zip") if folder else f"winnow:models/tagger/{t}-tagger.zip" for t in TAGS}
    taggers = {t: load_tagger(t, "local", path) for t, path in paths.items()}
    started = time.process_time()
    for start in range(0, len(part.texts), batch):
        tag_probabilities(taggers, part.texts[start : start + batch], part.urls[start : start + batch])
    return len(part.texts) / (time.process_time() - started)


def with_rows(data: LabelledExamples, mask: np.ndarray) -> LabelledExamples:
    part = data.subset(mask)
    part.ids_rows = np.flatnonzero(mask)  # type: ignore[attr-defined]  (rows into the feature cache)
    return part


def line(name: str, result: dict[str, float], speed: float | None = None) -> str:
    tail = f" | {speed:,.0f} docs/s/core" if speed else ""
    return (
        f"  {name:44s} acc {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}  "
        f"| conf≥0.9 acc {result['accuracy_conf90']:.3f} macro-F1 {result['macro_f1_conf90']:.3f}{tail}"
    )


def evaluate_taxonomy(
    taxonomy: str,
    rows: list[dict],
    quick: bool,
    peers: Sequence[str],
    fit_report: bool = True,
    only: str | None = None,
) -> dict[str, Any]:
    labels = TAXONOMIES[taxonomy]
    data = labelled_examples(rows, labels, label_field=f"{taxonomy}_id", weight_field=f"{taxonomy}_confidence")
    parts = np.array(three_way_split([u or i for u, i in zip(data.urls, data.ids, strict=True)]))
    fit, choose, report = (with_rows(data, parts == name) for name in ("fit", "choose", "report"))
    both = with_rows(data, parts != "report")
    confident = report.weights >= 0.9
    print(
        f"\n# {taxonomy}: fit {len(fit.texts)}, choose {len(choose.texts)}, report {len(report.texts)} "
        f"({confident.sum()} with confidence ≥ 0.9)",
        flush=True,
    )
    cache = FeatureCache(data)
    found = candidates(taxonomy, cache, quick, peers, only)
    print("## choose (trained on fit)", flush=True)
    for candidate in found:
        started = time.perf_counter()
        try:
            predict = candidate.train(fit)
        except RuntimeError as error:  # fastText diverging ("Encountered NaN") rules its setting out
            print(f"  {candidate.family:10s} {candidate.setting:34s} failed: {error}", flush=True)
            continue
        predicted = np.asarray(predict(choose.texts, choose.urls))
        candidate.choose_f1 = macro_f1(choose.targets, predicted, len(labels))[0]
        print(
            f"  {candidate.family:10s} {candidate.setting:34s} macro-F1 {candidate.choose_f1:.4f}  "
            f"({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    picks = {}
    for candidate in found:  # the first listed wins a tie
        if np.isnan(candidate.choose_f1):
            continue
        if candidate.family not in picks or candidate.choose_f1 > picks[candidate.family].choose_f1:
            picks[candidate.family] = candidate
    result: dict[str, Any] = {"taxonomy": taxonomy, "choose": {}, "report_fit": {}, "report_fit_choose": {}}
    result["choose"] = {f"{c.family} {c.setting}": c.choose_f1 for c in found}
    majority = int(np.bincount(fit.targets, minlength=len(labels)).argmax())
    result["majority"] = scores(report.targets, np.full(len(report.targets), majority), confident)
    print("## report, trained on fit (settings picked on choose)", flush=True)
    print(line("majority label", result["majority"]), flush=True)
    for family, pick in picks.items() if fit_report else ():
        predicted, speed = timed(pick.train(fit), report)
        figures = scores(report.targets, predicted, confident) | {"docs_per_s": speed, "setting": pick.setting}
        result["report_fit"][family] = figures
        print(line(f"{family} ({pick.setting})", figures, speed), flush=True)
    print("## report, retrained on fit + choose with the picked settings", flush=True)
    for family, pick in picks.items():
        predict = pick.train(both)
        predicted, speed = timed(predict, report)
        figures = scores(report.targets, predicted, confident) | {"docs_per_s": speed, "setting": pick.setting}
        if family == "winnow":
            shipped = (ROOT / "winnow" / "data" / "models" / "tagger" / f"{taxonomy}-tagger.zip").read_bytes()
            retrained = predict.tagger.to_bytes()  # type: ignore[attr-defined]
            figures["bundled_identical"] = hashlib.sha256(shipped).digest() == hashlib.sha256(retrained).digest()
            figures["retrained_sha256"] = hashlib.sha256(retrained).hexdigest()
            _, per_class = macro_f1(report.targets, predicted, len(labels))
            figures["per_class_f1"] = {labels[k]: round(float(v), 3) for k, v in enumerate(per_class)}
        result["report_fit_choose"][family] = figures
        print(line(f"{family} ({pick.setting})", figures, speed), flush=True)
    bundled = load_tagger(taxonomy, "local", f"winnow:models/tagger/{taxonomy}-tagger.zip")
    predicted, speed = timed(lambda t, u: np.argmax(bundled.logits(t, u), axis=1), report)
    result["bundled"] = scores(report.targets, predicted, confident) | {"docs_per_s": speed}
    same = result["report_fit_choose"]["winnow"].get("bundled_identical")
    print(line(f"bundled file ({'identical to' if same else 'DIFFERS from'} the retrained)", result["bundled"], speed))
    result["_report"] = report
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--taxonomies", default="topic,format")
    parser.add_argument("--quick", action="store_true", help="A smaller grid (a smoke run, not the figures).")
    parser.add_argument("--peers", default="tfidf-svm,fasttext", help="Peer families to train and tune beside winnow.")
    parser.add_argument("--no-fit-report", action="store_true", help="Skip the report block of models trained on fit.")
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--only", help="Only winnow settings whose name matches this regex (a partial grid).")
    args = parser.parse_args()
    rows = train_tagger.read_rows(args.corpora)  # the normalize stage's defaults applied
    peers = args.peers.split(",")
    results = [
        evaluate_taxonomy(taxonomy, rows, args.quick, peers, not args.no_fit_report, args.only)
        for taxonomy in args.taxonomies.split(",")
    ]
    report = results[-1].pop("_report")
    for result in results:
        result.pop("_report", None)
    print(f"\n# tag stage, bundled topic + format: {time_tag_stage(report):,.0f} docs/s/core", flush=True)
    for result in results:
        print(f"\n# per-class F1 on report, {result['taxonomy']}, winnow retrained on fit + choose")
        for label, value in result["report_fit_choose"]["winnow"]["per_class_f1"].items():
            print(f"  {label:20s} {value:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
