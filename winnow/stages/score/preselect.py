"""PreSelect — predictive data selection (docs/preselect.md), Beam-free.

Reference mode: a user-supplied PreSelect fastText classifier scores documents
(``FastTextScorer`` with column ``preselect_score``). Local mode, the full recipe:

1. a ladder of ≥ 4 character n-gram LMs (``ngram_lm.KneserNeyLM``), each trained on a nested
   share of a reference corpus at its own n-gram order (``Rung``); each model's "benchmark
   score" is minus its bits per character on held-out reference text, so the ladder's abilities
   are measured, not assumed;
2. every pool document's BPC under every model, and its predictive strength S(d): the fraction
   of model pairs whose ranking by benchmark agrees with their ranking by loss on d;
3. positives = documents with S = 1, the same number of negatives from the lowest S upward;
4. a fastText classifier with the paper's hyperparameters (epoch 3, lr 0.1, wordNgrams 2, every
   other setting at fastText's default) on ``__label__1 / __label__0`` lines;
5. its held-out ROC-AUC, the top and bottom contribution words, and the S histogram, in a report.

Ties between documents of equal S at the negative boundary, the choice among surplus positives,
the nested subsets and the train/held-out splits all use the counter-based hash
(docs/determinism.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from winnow.core.hashing import uniform
from winnow.stages.score.ngram_lm import KneserNeyLM, heldout_bpc

log = logging.getLogger(__name__)

POSITIVE = "__label__1"
NEGATIVE = "__label__0"
# The paper's fastText hyperparameters (docs/preselect.md#classifier). Everything else stays at fastText's defaults
# (dim 100, minCount 1, softmax loss, 2M buckets); one thread so training is deterministic.
FASTTEXT_PARAMS: dict[str, Any] = {"epoch": 3, "lr": 0.1, "wordNgrams": 2}
# Nested shares of the reference corpus (all at the default order) when no ladder is given.
# Evenly spaced abilities keep S(d) from saturating: with 1/5/25/100% almost every web document
# improves monotonically (93% had S = 1 on the shared pool), so the positives were nearly a
# random sample; with 25/50/75/100% the share is 63%.
DEFAULT_LADDER = (0.25, 0.5, 0.75, 1.0)
# Quantization of the shipped .ftz (no retraining): the QUANTIZE_CUTOFF rows of largest norm kept,
# product-quantized in sub-vectors of QUANTIZE_DSUB dimensions [ours; the paper ships an unquantized .bin].
# Keeping more rows recovers format AUC but slows scoring (more tokens hit a kept row): 140,000 rows at
# dsub 8 scored ~30% fewer docs/s than 40,000 at dsub 2 (winnow/data/models/preselect/README.md).
QUANTIZE_CUTOFF = 40_000
QUANTIZE_DSUB = 2
# Reports list contribution words seen at least this often in training (see contribution_words).
CONTRIBUTION_MIN_COUNT = 10


def parse_ladder(spec: str | Sequence[float | str], order: int = 5) -> list[tuple[float, int]]:
    """Rungs ``(share, order)`` from ``"1.0@3,1.0@4,0.25,0.5,1.0"`` (``share@order``; order defaults to ``order``)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    rungs = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        share, _, rung_order = text.partition("@")
        rungs.append((float(share), int(rung_order) if rung_order else int(order)))
    return rungs


def fasttext_line(text: str) -> str:
    """The text as fastText sees it, in training and in scoring alike: newlines become spaces."""
    return text.replace("\n", " ")


# --- predictive strength --------------------------------------------------------------


def pair_count(n_models: int) -> int:
    """Z = N(N−1)/2 model pairs."""
    return n_models * (n_models - 1) // 2


def concordant_pairs(benchmark: Sequence[float], losses: np.ndarray) -> np.ndarray:
    """Per document, the number of model pairs where the better-benchmark model has the lower loss.

    ``losses`` has shape (documents, models). A tie in either the benchmark or the loss adds nothing.
    """
    scores = np.asarray(benchmark, dtype=np.float64)
    losses = np.atleast_2d(np.asarray(losses, dtype=np.float64))
    if losses.shape[1] != len(scores):
        raise ValueError(f"{losses.shape[1]} loss columns for {len(scores)} benchmark scores")
    i, j = np.triu_indices(len(scores), k=1)
    benchmark_sign = np.sign(scores[i] - scores[j])
    loss_sign = np.sign(losses[:, i] - losses[:, j])
    return np.sum((benchmark_sign * loss_sign) < 0, axis=1)


def predictive_strength(benchmark: Sequence[float], losses: np.ndarray) -> np.ndarray:
    """S(d) = concordant pairs / Z ∈ [0, 1] (docs/preselect.md#predictive-strength)."""
    return concordant_pairs(benchmark, losses) / pair_count(len(benchmark))


# --- positives, negatives, label file ---------------------------------------------------


def choose_examples(
    doc_ids: Sequence[str], concordant: np.ndarray, n_models: int, seed: int = 0, max_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of positives (S = 1) and as many negatives taken from the lowest S upward.

    The class size is min(#S=1, #rest, max_per_class). Surplus positives are dropped by hash;
    negatives of equal S are taken in hash order.
    """
    concordant = np.asarray(concordant)
    full = pair_count(n_models)
    positives = np.flatnonzero(concordant == full)
    others = np.flatnonzero(concordant != full)
    size = min(len(positives), len(others))
    if max_per_class is not None:
        size = min(size, max_per_class)
    pos_draw = [uniform(doc_ids[i], "preselect:positive", seed) for i in positives]
    positives = positives[np.argsort(pos_draw, kind="stable")[:size]]
    neg_draw = np.array([uniform(doc_ids[i], "preselect:negative", seed) for i in others])
    negatives = others[np.lexsort((neg_draw, concordant[others]))[:size]]
    return np.sort(positives), np.sort(negatives)


def label_lines(texts: Sequence[str], labels: Sequence[int]) -> list[str]:
    """``__label__1 <text>`` / ``__label__0 <text>`` lines, newlines in the text replaced by spaces."""
    pairs = zip(texts, labels, strict=True)
    return [f"{POSITIVE if label else NEGATIVE} {fasttext_line(text)}" for text, label in pairs]


def write_label_file(
    path: str | Path, doc_ids: Sequence[str], texts: Sequence[str], labels: Sequence[int], seed: int = 0
) -> int:
    """Write a fastText training file in hash order (SGD must not see one class, then the other)."""
    order = sorted(range(len(texts)), key=lambda i: uniform(doc_ids[i], "preselect:shuffle", seed))
    lines = label_lines([texts[i] for i in order], [labels[i] for i in order])
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")
    return len(lines)


# --- classifier ------------------------------------------------------------------------------


def train_fasttext(label_file: str | Path, seed: int = 0, **overrides: Any) -> Any:
    """fastText supervised training with the paper's hyperparameters (overrides only for experiments)."""
    import fasttext  # lazy: fastText only when its model is used

    params = {**FASTTEXT_PARAMS, "thread": 1, "seed": seed, "verbose": 0, **overrides}
    return fasttext.train_supervised(input=str(label_file), **params)


def positive_probability(model: Any, texts: Sequence[str], label: str = POSITIVE) -> np.ndarray:
    """fastText probability of ``label`` for each text (the document score, docs/preselect.md#scoring-and-selection)."""
    labels, probs = model.predict([fasttext_line(t) for t in texts], k=-1)
    out = np.zeros(len(texts), dtype=np.float64)
    for row, (names, values) in enumerate(zip(labels, probs, strict=True)):
        for name, value in zip(names, values, strict=True):
            if name == label:
                out[row] = value
    return out


def contribution_words(
    model: Any, k: int = 20, min_count: int = 1
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Top and bottom words by (E_w · W_out)[label1] − (E_w · W_out)[label0] (the paper's inspection).

    ``min_count`` skips words seen fewer times in training: on small training sets a rare word's
    vector is still mostly its random initialisation, and such words crowd the lists.
    """
    labels = list(model.get_labels())
    if POSITIVE not in labels or NEGATIVE not in labels:
        raise ValueError(f"model labels {labels} lack {POSITIVE}/{NEGATIVE}")
    if model.is_quantized():
        raise ValueError("contribution words need the unquantized model (.bin)")
    output = model.get_output_matrix()
    direction = output[labels.index(POSITIVE)] - output[labels.index(NEGATIVE)]
    words, counts = model.get_words(include_freq=True)
    embeddings = model.get_input_matrix()[: len(words)]
    contribution = embeddings @ direction
    eligible = np.flatnonzero(np.asarray(counts) >= min_count)
    order = eligible[np.argsort(-contribution[eligible], kind="stable")]
    top = [(words[i], float(contribution[i])) for i in order[:k]]
    bottom = [(words[i], float(contribution[i])) for i in order[::-1][:k]]
    return top, bottom


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC-AUC (Mann–Whitney, ties count half); NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn only when training

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


# --- the LM ladder ---------------------------------------------------------------------------


@dataclass
class Rung:
    """One model of the ladder: the share of reference text it saw, its order and its measured ability."""

    fraction: float
    train_chars: int
    train_docs: int
    heldout_bpc: float
    order: int = 5

    @property
    def benchmark(self) -> float:
        return -self.heldout_bpc


@dataclass
class Ladder:
    """Language models of ordered ability; ``losses`` gives each document's BPC under each."""

    models: list[KneserNeyLM]
    rungs: list[Rung]
    max_chars: int | None = None

    def subset(self, picks: Sequence[int]) -> Ladder:
        """The ladder of the models at ``picks`` (in that order): candidate ladders share their models."""
        return Ladder([self.models[i] for i in picks], [self.rungs[i] for i in picks], self.max_chars)

    @property
    def benchmark(self) -> list[float]:
        return [r.benchmark for r in self.rungs]

    def is_ordered(self) -> bool:
        """True when every rung has strictly better held-out loss than the rung before it."""
        values = self.benchmark
        return all(a < b for a, b in itertools.pairwise(values))

    def losses(self, texts: Sequence[str]) -> np.ndarray:
        """BPC matrix of shape (documents, models); texts are cut to ``max_chars`` when set."""
        if self.max_chars:
            texts = [t[: self.max_chars] for t in texts]
        return np.stack([model.bpc(texts) for model in self.models], axis=1)


def train_ladder(
    doc_ids: Sequence[str],
    texts: Sequence[str],
    fractions: Sequence[float] = DEFAULT_LADDER,
    order: int = 5,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    max_chars: int | None = None,
    rungs: Sequence[tuple[float, int]] | None = None,
) -> Ladder:
    """Train n-gram LMs on nested subsets (by character share) of a reference corpus.

    ``rungs`` lists ``(share, order)`` per model (list them from the weakest expected model to the
    strongest, so that ``Ladder.is_ordered`` checks the expectation); without it every share of
    ``fractions`` gets ``order``. Models of several orders on the same text are a ladder too: a
    higher order is more able wherever there is enough text, and the benchmark measures it
    [ours; the paper's ladder is six Llama models]. A hash-chosen ``heldout_fraction`` of the
    documents is the benchmark: each model's ability is its bits per character there. Subsets are
    prefixes of one hash order, so they are nested.
    """
    specs = [(float(f), int(o)) for f, o in rungs] if rungs is not None else [(float(f), int(order)) for f in fractions]
    if len(specs) < 4:
        raise ValueError("PreSelect's local mode needs a ladder of at least 4 models")
    if len(set(specs)) != len(specs):
        raise ValueError(f"ladder rungs must differ: {specs}")
    if any(not 0 < f <= 1 or o < 1 for f, o in specs):
        raise ValueError(f"ladder shares must be in (0, 1] and orders ≥ 1: {specs}")
    if rungs is None and [f for f, _ in specs] != sorted(f for f, _ in specs):
        raise ValueError(f"ladder fractions must increase strictly: {list(fractions)}")
    heldout = [i for i in range(len(texts)) if uniform(doc_ids[i], "preselect:benchmark", seed) < heldout_fraction]
    held = set(heldout)
    train = sorted(
        (i for i in range(len(texts)) if i not in held and texts[i]),
        key=lambda i: uniform(doc_ids[i], "preselect:ladder", seed),
    )
    if not heldout or not train:
        raise ValueError("reference corpus too small to split into training and benchmark text")
    cumulative = np.cumsum([len(texts[i]) for i in train])
    benchmark_texts = [texts[i] for i in heldout]
    models, measured = [], []
    for fraction, rung_order in specs:
        n_docs = max(1, int(np.searchsorted(cumulative, fraction * cumulative[-1] - 1e-9) + 1))
        subset = [texts[i] for i in train[:n_docs]]
        model = KneserNeyLM.train(subset, order=rung_order)
        bpc = heldout_bpc(model, benchmark_texts)
        models.append(model)
        measured.append(Rung(fraction, int(cumulative[n_docs - 1]), n_docs, bpc, rung_order))
        log.info(
            "ladder rung %.3f @ order %d: %d docs, %d chars, held-out BPC %.4f",
            fraction,
            rung_order,
            n_docs,
            measured[-1].train_chars,
            bpc,
        )
    return Ladder(models, measured, max_chars)


# --- the whole local recipe ------------------------------------------------------------------


@dataclass
class PreSelectReport:
    """What a local PreSelect training run did and how well its classifier separates the labels."""

    mode: str = "local"
    seed: int = 0
    ladder: list[dict[str, Any]] = field(default_factory=list)
    ladder_ordered: bool = True
    lm_order: int = 5  # the highest order of the ladder
    reference_docs: int = 0
    benchmark_docs: int = 0
    pool_docs: int = 0
    s_histogram: dict[str, int] = field(default_factory=dict)
    mean_s: float = 0.0
    positives: int = 0
    negatives: int = 0
    train_examples: int = 0
    heldout_examples: int = 0
    heldout_auc: float = math.nan
    heldout_auc_quantized: float | None = None
    quantize_cutoff: int | None = None
    quantize_dsub: int | None = None
    lm_max_chars: int | None = None
    fasttext_params: dict[str, Any] = field(default_factory=dict)
    top_words: list[tuple[str, float]] = field(default_factory=list)
    bottom_words: list[tuple[str, float]] = field(default_factory=list)
    model_files: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False, default=float)

    def to_markdown(self) -> str:
        lines = [
            "# PreSelect training report (local mode)",
            "",
            f"Reference documents: {self.reference_docs} (benchmark: {self.benchmark_docs}); pool: {self.pool_docs}.",
            "",
            "| rung | share of reference | order | docs | characters | held-out BPC |",
            "|---|---|---|---|---|---|",
        ]
        for i, rung in enumerate(self.ladder):
            lines.append(
                f"| {i} | {rung['fraction']:.0%} | {rung.get('order', self.lm_order)} | {rung['train_docs']} "
                f"| {rung['train_chars']:,} | {rung['heldout_bpc']:.4f} |"
            )
        lines += [
            "",
            f"Ladder strictly ordered by ability: {self.ladder_ordered} (character n-gram LMs, interpolated "
            "modified Kneser–Ney).",
            "",
            f"S histogram (concordant pairs → documents), mean S = {self.mean_s:.3f}:",
            "",
            "| concordant pairs | documents |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in self.s_histogram.items()],
            "",
            f"Positives (S = 1): {self.positives}; negatives (lowest S): {self.negatives}; "
            f"fastText trained on {self.train_examples}, held out {self.heldout_examples}.",
            f"Held-out ROC-AUC: {self.heldout_auc:.4f}"
            + (
                f" (quantized model: {self.heldout_auc_quantized:.4f})"
                if self.heldout_auc_quantized is not None
                else ""
            ),
            f"fastText parameters: {json.dumps(self.fasttext_params, sort_keys=True)}",
            "",
            f"Contribution words (seen ≥ {CONTRIBUTION_MIN_COUNT} times in training).",
            "",
            "Top (→ label 1): " + ", ".join(f"{w} ({c:+.3g})" for w, c in self.top_words),
            "",
            "Bottom (→ label 0): " + ", ".join(f"{w} ({c:+.3g})" for w, c in self.bottom_words),
            "",
        ]
        return "\n".join(lines)


def s_histogram(concordant: np.ndarray, n_models: int) -> dict[str, int]:
    counts = np.bincount(np.asarray(concordant, dtype=np.int64), minlength=pair_count(n_models) + 1)
    return {str(k): int(v) for k, v in enumerate(counts)}


def train_local(
    reference: Sequence[tuple[str, str]],
    pool: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    fractions: Sequence[float] = DEFAULT_LADDER,
    order: int = 5,
    rungs: Sequence[tuple[float, int]] | None = None,
    heldout_fraction: float = 0.1,
    benchmark_fraction: float = 0.1,
    max_per_class: int | None = None,
    max_chars: int | None = None,
    quantize: bool = True,
    quantize_cutoff: int = QUANTIZE_CUTOFF,
    quantize_dsub: int = QUANTIZE_DSUB,
    keep_bin: bool = False,
    seed: int = 0,
    ladder: Ladder | None = None,
    pool_losses: np.ndarray | None = None,
) -> PreSelectReport:
    """Run PreSelect's local recipe on (id, text) pairs; writes the classifier and its report.

    Outputs in ``out_dir``: ``preselect.ftz`` (when ``quantize``: the ``quantize_cutoff`` words and
    n-gram buckets of largest norm, product-quantized in sub-vectors of ``quantize_dsub`` dimensions,
    not retrained) and/or ``preselect.bin``,
    ``report.json``, ``report.md``. The .bin is kept when ``keep_bin`` or when not quantizing
    (with fastText's default 2M hash buckets it is ~800 MB). ``max_chars`` bounds the text each
    LM scores per document; ``heldout_fraction`` of the labelled examples is kept out of training
    for the report's ROC-AUC. A caller that compared several ladders passes the chosen ``ladder``
    (trained on ``reference``) and its ``pool_losses`` instead of having them computed again.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref_ids = [doc_id for doc_id, _ in reference]
    ref_texts = [text for _, text in reference]
    if ladder is None:
        ladder = train_ladder(ref_ids, ref_texts, fractions, order, benchmark_fraction, seed, max_chars, rungs)
    if not ladder.is_ordered():
        log.warning("ladder abilities are not strictly ordered: %s", ladder.benchmark)

    pool_ids = [doc_id for doc_id, _ in pool]
    pool_texts = [text for _, text in pool]
    losses = ladder.losses(pool_texts) if pool_losses is None else np.asarray(pool_losses, dtype=np.float64)
    if losses.shape != (len(pool_texts), len(ladder.models)):
        raise ValueError(f"pool losses have shape {losses.shape}, expected ({len(pool_texts)}, {len(ladder.models)})")
    valid = np.all(np.isfinite(losses), axis=1)  # empty documents have no BPC
    concordant = np.where(valid, concordant_pairs(ladder.benchmark, np.nan_to_num(losses)), 0)
    n_models = len(ladder.models)
    positives, negatives = choose_examples(pool_ids, np.where(valid, concordant, -1), n_models, seed, max_per_class)

    chosen = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(len(positives), dtype=int), np.zeros(len(negatives), dtype=int)])
    is_heldout = np.array([uniform(pool_ids[i], "preselect:holdout", seed) < heldout_fraction for i in chosen], bool)
    train_idx, train_labels = chosen[~is_heldout], labels[~is_heldout]
    test_idx, test_labels = chosen[is_heldout], labels[is_heldout]

    with tempfile.TemporaryDirectory(prefix="winnow-preselect-") as tmp:
        label_file = os.path.join(tmp, "train.txt")
        write_label_file(
            label_file, [pool_ids[i] for i in train_idx], [pool_texts[i] for i in train_idx], train_labels, seed
        )
        model = train_fasttext(label_file, seed=seed)
        test_texts = [pool_texts[i] for i in test_idx]
        auc = roc_auc(test_labels, positive_probability(model, test_texts)) if len(test_idx) else math.nan
        top, bottom = contribution_words(model, min_count=CONTRIBUTION_MIN_COUNT)
        files: dict[str, int] = {}
        if keep_bin or not quantize:
            model.save_model(str(out / "preselect.bin"))
            files["preselect.bin"] = (out / "preselect.bin").stat().st_size
        auc_q = None
        if quantize:
            # No retraining: the pruned, product-quantized model is the same classifier, compressed.
            model.quantize(qnorm=True, retrain=False, cutoff=quantize_cutoff, dsub=quantize_dsub, thread=1)
            model.save_model(str(out / "preselect.ftz"))
            files["preselect.ftz"] = (out / "preselect.ftz").stat().st_size
            auc_q = roc_auc(test_labels, positive_probability(model, test_texts)) if len(test_idx) else math.nan

    finite_s = concordant[valid] / pair_count(n_models)
    report = PreSelectReport(
        seed=seed,
        ladder=[asdict(r) for r in ladder.rungs],
        ladder_ordered=ladder.is_ordered(),
        lm_order=max(r.order for r in ladder.rungs),
        reference_docs=len(reference),
        benchmark_docs=sum(1 for i in ref_ids if uniform(i, "preselect:benchmark", seed) < benchmark_fraction),
        pool_docs=len(pool),
        s_histogram=s_histogram(concordant[valid], n_models),
        mean_s=float(finite_s.mean()) if len(finite_s) else math.nan,
        positives=len(positives),
        negatives=len(negatives),
        train_examples=len(train_idx),
        heldout_examples=len(test_idx),
        heldout_auc=auc,
        heldout_auc_quantized=auc_q,
        quantize_cutoff=quantize_cutoff if quantize else None,
        quantize_dsub=quantize_dsub if quantize else None,
        lm_max_chars=max_chars,
        fasttext_params={**FASTTEXT_PARAMS, "thread": 1, "seed": seed},
        top_words=top,
        bottom_words=bottom,
        model_files=files,
    )
    (out / "report.json").write_text(report.to_json(), encoding="utf-8")
    (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
    return report
