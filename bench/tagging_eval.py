"""Which local tagger to ship: candidates trained and scored on the same WebOrganizer split.

``weborganizer-dclm`` (8.9k DCLM pages with WebOrganizer's model-made topic and format labels) is
split by URL hash 80/20 (METHODS §6.5 #1). Each candidate is trained on the 80% and scored on the
20%: accuracy and macro-F1 for topics and formats, the same on the held-out rows whose label
confidence is ≥ 0.9, and inference docs per CPU-second of one thread (features included). The
labels are a model's, so the scores measure *agreement* with WebOrganizer's classifier.

Candidates (``--candidates``, comma-separated):

* ``svm``: TF-IDF word 1–2-grams + LinearSVC (scikit-learn's vectoriser, text only): the baseline;
* ``winnow``: the shipped recipe, ``LinearTagger`` (hashed word 1–2-grams + URL tokens + page-shape
  tokens, + a model2vec embedding of the URL and the first 1,500 characters × 0.5; linear SVM
  weighted by label confidence, temperature-scaled, int8 sparse weights), trained here;
  ``bundled``: the shipped file itself (trained on the same 80% by scripts/train_tagger.py);
  ``winnow-sparse``: the previous recipe (no embedding); ``winnow-m2v03``/``-m2v1``/``-m2v2``:
  other embedding scales; ``winnow-c*``: other C (sparse);
  ``winnow-nourl``: without the URL; ``hashed-svm`` (no page-shape tokens), ``hashed-lr`` (logistic
  regression), ``hashed-svm-c*`` (other C), ``hashed-svm-17`` (2^17 buckets): the variants tried;
* ``fasttext``: supervised fastText on ``"{url} {text}"`` (wordNgrams 2, 1 thread);
* ``majority``: the most frequent training label.

    python bench/tagging_eval.py [--corpora PATH] [--candidates svm,hashed-lr,...] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-threaded timing (set before numpy loads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.domains import TAXONOMIES  # noqa: E402
from winnow.core.evaluation import macro_f1, url_split  # noqa: E402
from winnow.stages.tag.taggers import (  # noqa: E402
    FeatureSpec,
    LabelledExamples,
    LinearTagger,
    clear_embedding_memo,
    labelled_examples,
)

M2V = "model2vec-minilm-l6-v2-pca256"
Predictor = Callable[[Sequence[str], Sequence[str | None]], np.ndarray]


def train_svm(train: LabelledExamples, labels: Sequence[str]) -> Predictor:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    model = LinearSVC(C=1.0, random_state=0).fit(vectoriser.fit_transform(train.texts), train.targets)

    def predict(texts: Sequence[str], urls: Sequence[str | None]) -> np.ndarray:
        return model.predict(vectoriser.transform(texts))

    return predict


def train_hashed(
    use_url: bool,
    classifier: str,
    regularisation: float,
    buckets_log2: int = 18,
    layout: bool = False,
    embedding_scale: float | None = None,
) -> Callable[..., Predictor]:
    def train(train: LabelledExamples, labels: Sequence[str]) -> Predictor:
        spec = FeatureSpec(buckets_log2=buckets_log2, use_url=use_url, layout=layout)
        if embedding_scale is not None:
            spec = FeatureSpec(
                buckets_log2=buckets_log2,
                use_url=use_url,
                layout=layout,
                embedding=M2V,
                embedding_scale=embedding_scale,
            )
        tagger = LinearTagger.fit(
            "topic" if labels == TAXONOMIES["topic"] else "format",
            labels,
            train.texts,
            train.urls,
            train.targets,
            train.weights,
            spec,
            classifier=classifier,
            regularisation=regularisation,
        )
        return lambda texts, urls: np.argmax(tagger.logits(texts, urls), axis=1)

    return train


def train_fasttext(train: LabelledExamples, labels: Sequence[str]) -> Predictor:
    import fasttext

    def line(text: str, url: str | None) -> str:
        return f"{url or ''} {text}".replace("\n", " ")

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        for text, url, target in zip(train.texts, train.urls, train.targets, strict=True):
            handle.write(f"__label__{target} {line(text, url)}\n")
    model = fasttext.train_supervised(handle.name, epoch=25, lr=0.5, wordNgrams=2, dim=100, thread=1, seed=0)
    os.unlink(handle.name)

    def predict(texts: Sequence[str], urls: Sequence[str | None]) -> np.ndarray:
        out = model.predict([line(t, u) for t, u in zip(texts, urls, strict=True)])[0]
        return np.array([int(p[0].removeprefix("__label__")) for p in out])

    return predict


def bundled(train: LabelledExamples, labels: Sequence[str]) -> Predictor:
    """The shipped model (scripts/train_tagger.py trained it on this same 80%): nothing is fitted here."""
    from winnow.stages.tag.taggers import load_tagger

    taxonomy = "topic" if labels == TAXONOMIES["topic"] else "format"
    tagger = load_tagger(taxonomy, "local", f"winnow:models/tagger/{taxonomy}-tagger.zip")
    return lambda texts, urls: np.argmax(tagger.logits(texts, urls), axis=1)


def train_majority(train: LabelledExamples, labels: Sequence[str]) -> Predictor:
    majority = int(np.bincount(train.targets, minlength=len(labels)).argmax())
    return lambda texts, urls: np.full(len(texts), majority)


CANDIDATES: dict[str, Callable[[LabelledExamples, Sequence[str]], Predictor]] = {
    "majority": train_majority,
    "svm": train_svm,
    "bundled": bundled,
    "winnow": train_hashed(True, "svm", 4.0, layout=True, embedding_scale=0.5),
    "winnow-m2v03": train_hashed(True, "svm", 4.0, layout=True, embedding_scale=0.3),
    "winnow-m2v1": train_hashed(True, "svm", 4.0, layout=True, embedding_scale=1.0),
    "winnow-m2v2": train_hashed(True, "svm", 4.0, layout=True, embedding_scale=2.0),
    "winnow-sparse": train_hashed(True, "svm", 4.0, layout=True),
    "winnow-nourl": train_hashed(False, "svm", 4.0, layout=True),
    "winnow-c1": train_hashed(True, "svm", 1.0, layout=True),
    "winnow-c2": train_hashed(True, "svm", 2.0, layout=True),
    "winnow-c4": train_hashed(True, "svm", 4.0, layout=True),
    "winnow-c8": train_hashed(True, "svm", 8.0, layout=True),
    "hashed-svm": train_hashed(True, "svm", 0.5),
    "hashed-svm-nourl": train_hashed(False, "svm", 0.5),
    "hashed-svm-c1": train_hashed(True, "svm", 1.0),
    "hashed-svm-c025": train_hashed(True, "svm", 0.25),
    "hashed-svm-17": train_hashed(True, "svm", 0.5, 17),
    "hashed-lr": train_hashed(True, "logreg", 20.0),
    "fasttext": train_fasttext,
}


def evaluate(name: str, taxonomy: str, train: LabelledExamples, test: LabelledExamples, confident: np.ndarray) -> dict:
    labels = TAXONOMIES[taxonomy]
    started = time.perf_counter()
    predict = CANDIDATES[name](train, labels)
    train_s = time.perf_counter() - started
    # CPU seconds of this single-threaded process, not wall time: the figure is per core and does
    # not drift with whatever else shares the machine.
    # Each tagger pays for its own embedding here (the tag stage embeds a batch once for both).
    clear_embedding_memo()
    started = time.process_time()
    predicted = np.asarray(predict(test.texts, test.urls))
    infer_s = time.process_time() - started
    f1, per_class = macro_f1(test.targets, predicted, len(labels))
    f1_confident, _ = macro_f1(test.targets[confident], predicted[confident], len(labels))
    return {
        "candidate": name,
        "taxonomy": taxonomy,
        "accuracy": float(np.mean(predicted == test.targets)),
        "macro_f1": f1,
        "accuracy_conf90": float(np.mean(predicted[confident] == test.targets[confident])),
        "macro_f1_conf90": f1_confident,
        "docs_per_s": len(test.texts) / infer_s,
        "train_s": train_s,
        "per_class_f1": {labels[k]: round(float(v), 3) for k, v in enumerate(per_class)},
    }


def time_tag_stage(texts: Sequence[str], urls: Sequence[str | None], batch: int = 256) -> float:
    """Docs per CPU-second of the bundled pair as the tag stage runs them: topic then format on each
    batch, so an embedding both use is computed once."""
    from winnow.stages.tag.taggers import load_tagger

    taggers = [load_tagger(t, "local", f"winnow:models/tagger/{t}-tagger.zip") for t in ("topic", "format")]
    clear_embedding_memo()
    started = time.process_time()
    for start in range(0, len(texts), batch):
        for tagger in taggers:
            tagger.probabilities(texts[start : start + batch], urls[start : start + batch])
    return len(texts) / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--candidates", default="majority,svm,bundled,winnow-sparse")
    parser.add_argument("--taxonomies", default="topic,format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", default="bundled,majority", help="Print per-class F1 of these.")
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--stage", action="store_true", help="Also time the bundled pair as the tag stage runs it.")
    args = parser.parse_args()
    path = Path(args.corpora) / "weborganizer-dclm" / "docs.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    results = []
    for taxonomy in args.taxonomies.split(","):
        data = labelled_examples(
            rows, TAXONOMIES[taxonomy], label_field=f"{taxonomy}_id", weight_field=f"{taxonomy}_confidence"
        )
        heldout = url_split([u or i for u, i in zip(data.urls, data.ids, strict=True)], 0.2, args.seed)
        train, test = data.subset(~heldout), data.subset(heldout)
        confident = test.weights >= 0.9
        print(f"# {taxonomy}: train {len(train.texts)}, held out {len(test.texts)} ({confident.sum()} with conf ≥ 0.9)")
        for name in args.candidates.split(","):
            result = evaluate(name, taxonomy, train, test, confident)
            results.append(result)
            print(
                f"{taxonomy:6s} {name:16s} acc {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}  "
                f"| conf≥0.9 acc {result['accuracy_conf90']:.3f} macro-F1 {result['macro_f1_conf90']:.3f}  "
                f"| {result['docs_per_s']:,.0f} docs/s/core, train {result['train_s']:.0f}s",
                flush=True,
            )
    if args.stage:
        print(f"# tag stage (bundled topic + format): {time_tag_stage(test.texts, test.urls):,.0f} docs/s/core")
    for result in results:
        if result["candidate"] in args.per_class.split(","):
            print(f"\n# per-class F1, {result['taxonomy']}, {result['candidate']}")
            for label, value in result["per_class_f1"].items():
                print(f"  {label:20s} {value:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
