"""PreSelect (METHODS §3): the six offline fidelity tests of §3.6, the recipe, the CLI, the bundled model."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from scipy.stats import kendalltau

from winnow.core.budget import exact_cut, histogram_cut, order_bits
from winnow.core.evaluation import REPORT, three_way_split
from winnow.core.hashing import h64, uniform
from winnow.stages.score.preselect import (
    FASTTEXT_PARAMS,
    NEGATIVE,
    POSITIVE,
    choose_examples,
    concordant_pairs,
    contribution_words,
    pair_count,
    parse_ladder,
    positive_probability,
    predictive_strength,
    roc_auc,
    train_fasttext,
    train_ladder,
    train_local,
    write_label_file,
)

PRESELECT = DATA / "preselect"


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    return _rows(PRESELECT / "reference.jsonl.gz")


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    return _rows(PRESELECT / "pool.jsonl.gz")


@pytest.fixture(scope="module")
def english() -> list[dict]:
    return _rows(DATA / "text" / "english.jsonl.gz")


# --- §3.6 test 1: the score definition --------------------------------------------------------


def test_score_definition_extremes_and_a_single_swap():
    benchmark = [1, 2, 3, 4]
    assert predictive_strength(benchmark, np.array([[4, 3, 2, 1]]))[0] == 1.0
    assert predictive_strength(benchmark, np.array([[1, 2, 3, 4]]))[0] == 0.0
    z = pair_count(4)
    assert z == 6
    swapped = np.array([[4, 3, 1, 2], [3, 4, 2, 1], [4, 2, 3, 1]])
    assert np.allclose(predictive_strength(benchmark, swapped), 1 - 1 / z)


def test_score_is_the_concordant_fraction_and_equals_half_kendall_tau_plus_half():
    rng = np.random.default_rng(0)
    benchmark = np.array([75.38, 76.30, 77.27, 79.46, 80.47, 81.19])  # the reference code's six models
    losses = rng.random((10_000, 6))
    s = predictive_strength(benchmark, losses)
    assert abs(s.mean() - 0.5) <= 0.01
    for row, value in zip(losses[:500], s[:500], strict=True):
        tau = kendalltau(benchmark, -row).statistic
        assert value == pytest.approx((tau + 1) / 2, abs=1e-12)
    assert set(np.unique(concordant_pairs(benchmark, losses))) <= set(range(16))


def test_a_tie_adds_nothing():
    benchmark = [1, 2, 3, 4]
    assert concordant_pairs(benchmark, np.array([[2, 2, 2, 2]]))[0] == 0
    assert concordant_pairs(benchmark, np.array([[4, 4, 2, 1]]))[0] == 5
    assert concordant_pairs([1, 1, 3, 4], np.array([[4, 3, 2, 1]]))[0] == 5


# --- §3.6 test 3: the label file --------------------------------------------------------------


def test_label_file_format_and_balance(tmp_path, english):
    docs = english[:400]
    ids = [d["id"] for d in docs]
    rng = np.random.default_rng(1)
    concordant = rng.integers(0, 7, len(docs))
    concordant[:150] = 6  # plenty of S = 1
    positives, negatives = choose_examples(ids, concordant, 4, seed=0)
    assert len(positives) == len(negatives) > 0
    assert all(concordant[i] == 6 for i in positives)
    assert max(concordant[negatives]) <= min(concordant[[i for i in range(len(docs)) if i not in set(negatives)]])
    chosen = list(positives) + list(negatives)
    labels = [1] * len(positives) + [0] * len(negatives)
    texts = [docs[i]["text"] + "\nsecond line\n\nthird" for i in chosen]
    path = tmp_path / "train.txt"
    n = write_label_file(path, [ids[i] for i in chosen], texts, labels)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == n == len(chosen)
    lines = lines[:-1]
    assert all(line.startswith((f"{POSITIVE} ", f"{NEGATIVE} ")) for line in lines)
    counts = Counter(line.split(" ", 1)[0] for line in lines)
    assert counts[POSITIVE] == counts[NEGATIVE]
    assert all("\r" not in line for line in lines)
    # the file is not sorted by label (fastText's SGD reads it in order)
    first_half = Counter(line.split(" ", 1)[0] for line in lines[: len(lines) // 2])
    assert 0.3 < first_half[POSITIVE] / max(1, sum(first_half.values())) < 0.7


def test_surplus_positives_are_dropped_by_hash_and_negatives_come_from_the_bottom():
    ids = [f"d{i}" for i in range(100)]
    concordant = np.array([6] * 80 + [5] * 10 + [0] * 10)
    positives, negatives = choose_examples(ids, concordant, 4, seed=3)
    assert len(positives) == len(negatives) == 20
    assert set(negatives) == set(range(80, 100))
    positives_again, _ = choose_examples(ids, concordant, 4, seed=3)
    assert np.array_equal(positives, positives_again)
    capped_pos, capped_neg = choose_examples(ids, concordant, 4, seed=3, max_per_class=5)
    assert len(capped_pos) == len(capped_neg) == 5 and set(capped_neg) <= set(range(90, 100))
    assert all(concordant[i] == 0 for i in capped_neg)


# --- §3.6 test 4: planted signal ----------------------------------------------------------------


def _split(items: list, purpose: str, share: float = 0.2) -> tuple[list, list]:
    train = [x for x in items if uniform(x[0], purpose, 0) >= share]
    test = [x for x in items if uniform(x[0], purpose, 0) < share]
    return train, test


def test_planted_signal_gives_a_high_auc_and_source_indicative_words(tmp_path, reference, pool):
    """Wikipedia + news (positive) vs web lines + 4chan threads (negative), §3.3 hyperparameters."""
    positives = [(d["id"], d["text"]) for d in reference if d["id"].startswith(("wiki", "news"))]
    positives += [(d["id"], d["text"]) for d in pool if d["domain"] == "reference"]
    negatives = [(d["id"], d["text"]) for d in pool if d["domain"] == "web"]
    n = min(len(positives), len(negatives))
    positives, negatives = positives[:n], negatives[:n]
    pos_train, pos_test = _split(positives, "planted")
    neg_train, neg_test = _split(negatives, "planted")
    train = pos_train + neg_train
    labels = [1] * len(pos_train) + [0] * len(neg_train)
    path = tmp_path / "train.txt"
    write_label_file(path, [i for i, _ in train], [t for _, t in train], labels)
    model = train_fasttext(path)
    assert model.epoch == FASTTEXT_PARAMS["epoch"] == 3 and model.lr == 0.1 and model.wordNgrams == 2
    assert (model.dim, model.minCount, str(model.loss), model.bucket) == (100, 1, "loss_name.softmax", 2_000_000)
    test = pos_test + neg_test
    test_labels = [1] * len(pos_test) + [0] * len(neg_test)
    auc = roc_auc(test_labels, positive_probability(model, [t for _, t in test]))
    assert auc >= 0.9, auc

    top, bottom = contribution_words(model, k=10, min_count=20)  # rarer words: still near their random init
    print(f"\ntop words {top}\nbottom words {bottom}")
    assert [c for _, c in top] == sorted((c for _, c in top), reverse=True)

    def frequency(texts: list[str]) -> Counter:
        return Counter(w for t in texts for w in t.replace("\n", " ").split())

    pos_freq, neg_freq = frequency([t for _, t in pos_train]), frequency([t for _, t in neg_train])
    pos_total, neg_total = sum(pos_freq.values()), sum(neg_freq.values())

    def leans_positive(word: str) -> bool:
        return (pos_freq[word] + 1) / pos_total > (neg_freq[word] + 1) / neg_total

    words = [w for w, _ in top if w != "</s>"]
    assert sum(leans_positive(w) for w in words) >= 0.8 * len(words), top
    words = [w for w, _ in bottom if w != "</s>"]
    assert sum(not leans_positive(w) for w in words) >= 0.8 * len(words), bottom


# --- §3.6 test 5: end to end with a local LM ladder ----------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ladder_of_nested_ngram_lms_scores_reference_domain_higher(reference, pool, seed):
    """4 LMs on nested 1%, 5%, 25%, 100% of the reference; benchmark = held-out log-likelihood.

    Character bigram LMs: with higher orders and a reference this small (0.8M characters) every
    model ranks monotonically on nearly every document and S saturates at 1 for both domains
    (order 5 reaches a clear separation from ~3.5M characters on, as in the bundled model's run).
    """
    ladder = train_ladder(
        [d["id"] for d in reference],
        [d["text"] for d in reference],
        fractions=(0.01, 0.05, 0.25, 1.0),
        order=2,
        seed=seed,
    )
    assert ladder.is_ordered(), ladder.benchmark
    assert [r.train_chars for r in ladder.rungs] == sorted(r.train_chars for r in ladder.rungs)
    losses = ladder.losses([d["text"] for d in pool])
    s = predictive_strength(ladder.benchmark, losses)
    domain = np.array([d["domain"] for d in pool])
    in_domain, web = s[domain == "reference"].mean(), s[domain == "web"].mean()
    histogram = np.bincount(concordant_pairs(ladder.benchmark, losses), minlength=7)
    print(f"\nseed {seed}: S histogram (0..6 concordant pairs) {histogram.tolist()}")
    print(f"mean S: reference domain {in_domain:.3f}, web {web:.3f}")
    assert histogram.sum() == len(pool)
    assert in_domain > web
    assert (s[domain == "reference"] == 1).mean() > (s[domain == "web"] == 1).mean()


def test_a_ladder_may_mix_orders_and_shares(reference):
    """Rungs (share, order): each model is trained at its own order; abilities are measured, not assumed."""
    rungs = parse_ladder("1.0@1,1.0@2,0.25@3,1.0@3")
    assert rungs == [(1.0, 1), (1.0, 2), (0.25, 3), (1.0, 3)]
    assert parse_ladder("0.5,1.0@4", order=6) == [(0.5, 6), (1.0, 4)]
    ladder = train_ladder([d["id"] for d in reference], [d["text"] for d in reference], rungs=rungs)
    assert [(r.fraction, r.order) for r in ladder.rungs] == rungs
    assert [m.order for m in ladder.models] == [1, 2, 3, 3]
    assert ladder.rungs[0].train_chars == ladder.rungs[1].train_chars > ladder.rungs[2].train_chars
    assert ladder.is_ordered(), ladder.benchmark  # unigram < bigram < trigram on ¼ < trigram on all
    sub = ladder.subset([0, 3])
    assert sub.models == [ladder.models[0], ladder.models[3]] and sub.benchmark == [ladder.benchmark[i] for i in (0, 3)]
    with pytest.raises(ValueError, match="differ"):
        train_ladder(["a", "b"], ["x", "y"], rungs=[(1.0, 2), (1.0, 2), (0.5, 2), (0.2, 2)])


def test_local_recipe_writes_classifier_and_report(tmp_path, reference, pool):
    ref = [(d["id"], d["text"]) for d in reference]
    docs = [(d["id"], d["text"]) for d in pool]
    # A small quantization cutoff keeps the product-quantizer training short (the bundled model: 40,000).
    report = train_local(ref, docs, tmp_path, order=4, max_chars=4000, quantize_cutoff=5_000)
    assert (tmp_path / "preselect.ftz").stat().st_size < 5_000_000
    assert not (tmp_path / "preselect.bin").exists()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["positives"] == saved["negatives"] == report.positives > 0
    assert sum(saved["s_histogram"].values()) == len(pool)
    assert saved["fasttext_params"]["epoch"] == 3 and saved["fasttext_params"]["wordNgrams"] == 2
    assert [r["order"] for r in saved["ladder"]] == [4, 4, 4, 4] and saved["lm_order"] == 4
    assert len(saved["top_words"]) == 20 and len(saved["bottom_words"]) == 20
    # The S labels of this pool follow its two domains, so a classifier of them is better than chance.
    assert saved["heldout_examples"] > 0 and saved["heldout_auc"] > 0.6, saved["heldout_auc"]
    markdown = (tmp_path / "report.md").read_text()
    assert "S histogram" in markdown and "ROC-AUC" in markdown


def test_a_given_ladder_and_pool_losses_are_used_as_they_are(tmp_path, reference, pool):
    """The training script compares ladders first, then hands the chosen one and its losses over."""
    ref = [(d["id"], d["text"]) for d in reference]
    docs = [(d["id"], d["text"]) for d in pool]
    ladder = train_ladder([i for i, _ in ref], [t for _, t in ref], order=3, max_chars=3000)
    losses = ladder.losses([t for _, t in docs])
    flipped = losses[:, ::-1].copy()  # every document now ranks the ladder backwards
    report = train_local(ref, docs, tmp_path, ladder=ladder, pool_losses=flipped, quantize=False)
    expected = np.bincount(concordant_pairs(ladder.benchmark, flipped), minlength=7)
    assert [report.s_histogram[str(k)] for k in range(7)] == expected.tolist()
    with pytest.raises(ValueError, match="shape"):
        train_local(ref, docs, tmp_path, ladder=ladder, pool_losses=losses[:, :2], quantize=False)


# --- §3.6 test 6: the character-weighted threshold -----------------------------------------------


def test_top_ten_percent_of_characters(tmp_path, english):
    """Selected characters ≥ 10% of the pool; removing the lowest-scored kept document drops below."""
    from winnow.stages.score.fasttext import FastTextScorer

    docs = english
    labels = [1 if d["source"] in ("lee-abc-news", "brown") else 0 for d in docs]
    path = tmp_path / "train.txt"
    write_label_file(path, [d["id"] for d in docs], [d["text"] for d in docs], labels)
    train_fasttext(path).save_model(str(tmp_path / "model.bin"))
    scorer = FastTextScorer(tmp_path / "model.bin", "preselect", "preselect_score")
    scores = scorer.score([d["text"] for d in docs])["preselect_score"]
    chars = [len(d["text"]) for d in docs]
    key_bits = [order_bits(float(s)) for s in scores]
    ties = [h64(d["id"], "select:tiebreak", 0) for d in docs]
    budget = 0.1 * sum(chars)
    cut, _ = histogram_cut(key_bits, ties, chars, budget)
    assert cut == exact_cut(key_bits, ties, chars, budget)
    kept = [i for i in range(len(docs)) if cut.keeps(key_bits[i], ties[i])]
    selected = sum(chars[i] for i in kept)
    assert selected >= 0.1 * sum(chars)
    lowest = min(kept, key=lambda i: (key_bits[i], ties[i]))
    assert selected - chars[lowest] < 0.1 * sum(chars)
    assert min(scores[kept]) >= max(np.delete(scores, kept))


# --- reference mode, the bundled classifier, the CLI -------------------------------------------


def test_reference_mode_scorer_is_the_raw_fasttext_probability(tmp_path, english):
    from winnow.stages.score.fasttext import FastTextScorer

    labels = [1 if d["source"] == "lee-abc-news" else 0 for d in english]
    path = tmp_path / "train.txt"
    write_label_file(path, [d["id"] for d in english], [d["text"] for d in english], labels)
    model = train_fasttext(path)
    model.save_model(str(tmp_path / "released.bin"))
    scorer = FastTextScorer(tmp_path / "released.bin", "preselect", "preselect_score")
    texts = [d["text"] for d in english[:300]]
    ours = scorer.score(texts)["preselect_score"]
    raw = positive_probability(model, texts).astype(np.float32)
    assert np.array_equal(ours, raw)
    assert scorer.version.startswith("fasttext:") and scorer.columns[0].name == "preselect_score"


def test_bundled_classifier_is_small_and_ranks_unseen_human_labels():
    """On the report split of the human-labelled pages (never in the bundled model's training pool,
    whose documents come from the fit split only), good pages score above bad ones."""
    from winnow.core.models import PACKAGE_DATA
    from winnow.stages.score.config import ScoreConfig
    from winnow.stages.score.registry import build_scorer

    model_file = PACKAGE_DATA / "models" / "preselect" / "preselect.ftz"
    assert model_file.stat().st_size < 5 * 1024 * 1024
    assert (model_file.parent / "README.md").exists()
    rows = _rows(DATA / "text" / "quality_labels.jsonl.gz")
    unseen = [r for r, split in zip(rows, three_way_split([r["id"] for r in rows]), strict=True) if split == REPORT]
    assert 80 <= len(unseen) <= 140  # ~20% of 499
    scorer = build_scorer(ScoreConfig(enabled=True).scorers[0])
    scores = scorer.score([r["text"] for r in unseen])["preselect_score"]
    assert roc_auc([r["label"] for r in unseen], scores) > 0.7


SMALL = ["--order", "4", "--max-chars", "3000", "--cutoff", "5000"]


def test_cli_train(tmp_path):
    from typer.testing import CliRunner

    from winnow.cli.preselect import preselect_app

    reference_file = PRESELECT / "reference.jsonl.gz"
    pool_file = PRESELECT / "pool.jsonl.gz"
    out = tmp_path / "model"
    result = CliRunner().invoke(
        preselect_app,
        ["train", "-r", str(reference_file), "-p", str(pool_file), "-o", str(out), *SMALL],
    )
    assert result.exit_code == 0, result.output
    assert (out / "preselect.ftz").exists() and (out / "report.md").exists()
    assert re.search(r"Held-out ROC-AUC: [0-9.]+", result.output)
    bad = CliRunner().invoke(
        preselect_app, ["train", "-r", str(reference_file), "-p", str(pool_file), "-o", str(out), "--ladder", "0.5,1"]
    )
    assert bad.exit_code == 2 and "at least 4" in bad.output
