"""DataMan (METHODS §2): the prompt/reply contract, rounding, truncation, reference mode with a
tiny random Qwen2 and with scripted replies in the ``score`` stage (malformed → dead letter),
local-mode training, and the bundled local model (§2.8 #1–#3)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, run_stage

from winnow.core.domains import DATAMAN_DOMAINS
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.score.config import ScoreConfig
from winnow.stages.score.dataman import (
    ALL_RATING_TEMPLATE,
    CRITERIA,
    OUTPUT_COLUMNS,
    DataManLocalScorer,
    DataManParseError,
    DataManReferenceScorer,
    LocalDataManModel,
    all_rating_request,
    embed_texts,
    format_reply,
    label_from_record,
    make_encoder,
    parse_reply,
    read_labels,
    round_rating,
    train_local_model,
    truncate_text,
    truncate_tokens,
)
from winnow.stages.score.registry import build_scorer
from winnow.stages.score.stage import Score, scorer_fields

LABELS = DATA / "dataman" / "labels.jsonl.gz"
VALID_REPLY = "E\n5\n4\n5\n3\n2\n4\n1\n5\n4\n3\n4\n5\n5\n4"


# --- §2.8 #1: contract round-trip ------------------------------------------------------------------


def test_prompt_holds_the_reference_request_and_a_reply_round_trips():
    request = all_rating_request("Some text.")
    assert request.startswith("Please score the text on fourteen evaluation criteria and specify its domain:\n")
    assert "\nText: Some text.\nDomain:_\n[1]Accuracy:_/5\n" in request
    assert request.endswith("[13]Sensitivity:_/5\n[14]Overall Score:_/5")
    assert ALL_RATING_TEMPLATE.count("_/5") == 14 == len(CRITERIA)
    rating = parse_reply(VALID_REPLY)
    columns = rating.columns()
    assert len(columns) == 16 and columns["application_domain"] == "E"
    assert columns["application_domain_name"] == "Technology"
    assert [columns[c] for c in CRITERIA] == [5, 4, 5, 3, 2, 4, 1, 5, 4, 3, 4, 5, 5, 4]
    assert all(1 <= columns[c] <= 5 for c in CRITERIA)
    assert parse_reply(format_reply(rating)) == rating
    doubled = "\n".join([VALID_REPLY, *VALID_REPLY.split("\n")[1:]])
    assert parse_reply(doubled) == rating
    assert len(DATAMAN_DOMAINS) == 15 and DATAMAN_DOMAINS["O"] == "Other"
    assert DATAMAN_DOMAINS["L"] == "Retail E-commerce"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("E\n" + "\n".join(["4"] * 13), "expected 15 lines"),
        ("P\n" + "\n".join(["4"] * 14), "domain letter A-O"),
        ("E\n4.5\n" + "\n".join(["4"] * 13), "integer 1-5"),
        ("E\n6\n" + "\n".join(["4"] * 13), "integer 1-5"),
        ("E\n" + "\n".join(["4"] * 14) + "\n" + "\n".join(["3"] * 14), "disagree"),
        ("", "expected 15 lines"),
    ],
)
def test_malformed_replies_raise_with_the_reason(reply, reason):
    with pytest.raises(DataManParseError, match=reason):
        parse_reply(reply)


# --- §2.8 #2, #3 -----------------------------------------------------------------------------------


def test_rounding_rule():
    assert [round_rating(v) for v in (2.5, 2.99, 3.0, 3.2, 4.5, 1.0, 5.0)] == [2, 2, 3, 4, 5, 1, 5]


def test_truncation_keeps_947_head_and_tail_tokens():
    tokens = list(range(3000))
    cut = truncate_tokens(tokens)
    assert cut[:947] == tokens[:947] and cut[947] == "..." and cut[948:] == tokens[-947:] and len(cut) == 1895
    assert truncate_tokens(tokens[:1894]) == tokens[:1894]

    tokenizer = load_tokenizer()

    def encode(text: str) -> list[int]:
        return tokenizer.encode([text])[0]

    words = " ".join(f"w{i}" for i in range(4000))
    ids = encode(words)
    assert len(ids) >= 3000
    text, length = truncate_text(words, encode, tokenizer.decode)
    assert length == 1895
    assert text == tokenizer.decode(ids[:947]) + "..." + tokenizer.decode(ids[-947:])
    short = " ".join(f"w{i}" for i in range(300))
    assert truncate_text(short, encode, tokenizer.decode) == (short, len(encode(short)))
    long_chars = "a" * 15_000 + "b" * 15_000  # over 20,000 characters: first and last 10,000 only
    text, _ = truncate_text(long_chars, encode, tokenizer.decode)
    assert text.count("a") + text.count("b") < 20_000 and text.startswith("a") and text.endswith("b")


# --- reference mode --------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised Qwen2ForCausalLM (hidden 32, 2 layers) with an offline byte-level BPE."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-dataman")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [ALL_RATING_TEMPLATE, VALID_REPLY, "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 A B C"] * 5
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    return folder


def test_reference_mode_with_a_random_qwen2_dead_letters_its_garbage(tiny_checkpoint):
    scorer = DataManReferenceScorer(tiny_checkpoint, batch_size=2)
    prompt, length = scorer.prepare("A short text about engines.")
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "Text: A short text about engines.\nDomain:_\n" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert length == len(scorer.generator.encode("A short text about engines."))
    texts = ["A short text about engines.", "Another one, about law and taxes."]
    prompts = [scorer.prepare(t)[0] for t in texts]
    replies = scorer.replies(prompts)  # kept for score() below: the model decodes twice, not three times
    assert replies == scorer.generator(prompts)  # greedy: deterministic
    assert 0 < scorer.generator.last_new_tokens <= 29
    with pytest.raises(DataManParseError, match="malformed reply"):
        scorer.score(texts)  # random weights cannot follow the contract: never a silent default


def scripted_replies(prompts: Sequence[str]) -> list[str]:
    """A stand-in model: a valid reply for texts marked GOOD, a 13-score reply otherwise."""
    return [VALID_REPLY if "GOOD" in p else "H\n" + "\n".join(["3"] * 13) for p in prompts]


class ScriptedDataMan:
    """Picklable factory: the tiny checkpoint's tokenizer and template, scripted decoding."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self) -> DataManReferenceScorer:
        return DataManReferenceScorer(self.path, generate=scripted_replies)


def test_score_stage_keeps_valid_replies_and_dead_letters_malformed_ones(tiny_checkpoint, tmp_path):
    docs = [
        {"id": f"d{i}", "text": f"{'GOOD' if i % 3 else 'BAD'} document number {i}.", "source": "t", "metadata": {}}
        for i in range(9)
    ]
    stage = Score(ScoreConfig(enabled=True, scorers=[]), factories=[("dataman", ScriptedDataMan(tiny_checkpoint), 4)])
    out = run_stage(stage, docs, tmp_path)
    assert sorted(d["id"] for d in out["kept"]) == [f"d{i}" for i in range(9) if i % 3]
    assert sorted(r["doc_id"] for r in out["rejected"]) == ["d0", "d3", "d6"]
    assert all("expected 15 lines" in r["error"] and "dataman" in r["error"] for r in out["rejected"])
    assert out["counters"]["score:dataman:malformed"] == 3
    for doc in out["kept"]:
        assert doc["application_domain"] == "E" and doc["application_domain_name"] == "Technology"
        assert [doc[c] for c in CRITERIA] == [5, 4, 5, 3, 2, 4, 1, 5, 4, 3, 4, 5, 5, 4]
        assert isinstance(doc["overall_score"], int) and doc["dataman_length"] > 0
    config = ScoreConfig(scorers=[{"name": "dm", "backend": "dataman", "path": "x"}])
    assert [f.name for f in scorer_fields(config)] == [c.name for c in OUTPUT_COLUMNS]


# --- local mode ------------------------------------------------------------------------------------


def test_labels_file_formats():
    labels = read_labels(LABELS)
    assert len(labels) == 110 and sum(lab.domain is not None for lab in labels) == 60
    assert {lab.scores.get("overall_score") for lab in labels} == {1, 5, None}
    from_reply = label_from_record({"text": "t", "reply": VALID_REPLY})
    assert from_reply.domain == "E" and from_reply.scores["overall_score"] == 4 and len(from_reply.scores) == 14
    assert label_from_record({"text": "t", "dataman": {"overall_score": 3.2}}).scores == {"overall_score": 4}
    with pytest.raises(DataManParseError, match="outside 1-5"):
        label_from_record({"text": "t", "overall_score": 0})
    with pytest.raises(DataManParseError, match="A-O"):
        label_from_record({"text": "t", "overall_score": 3, "domain": "Z"})


@pytest.fixture(scope="module")
def encoder():
    return make_encoder("model2vec")


def test_local_training_is_deterministic_and_learns_its_labels(encoder, tmp_path):
    labels = read_labels(LABELS)
    x = embed_texts(encoder, [lab.text for lab in labels])
    model, report = train_local_model(labels, x, encoder="model2vec", kind="ordinal", holdout=0.25, seed=0)
    assert report["own_signal"] == ["overall_score"]
    assert "accuracy" in report["fallback_to_overall"] and "sensitivity" in report["fallback_to_overall"]
    assert report["criteria"]["overall_score"]["heldout"]["n"] > 0 and "accuracy" in report["domain"]["heldout"]
    model.save(tmp_path / "a.npz")
    again, _ = train_local_model(labels, x, encoder="model2vec", kind="ordinal", holdout=0.25, seed=0)
    again.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = LocalDataManModel.load(tmp_path / "a.npz")
    letters, scores = loaded.predict(x)
    rated = [i for i, lab in enumerate(labels) if "overall_score" in lab.scores]
    truth = np.array([labels[i].scores["overall_score"] for i in rated])
    assert np.mean(scores["overall_score"][rated] == truth) > 0.8  # fits its training labels
    assert np.array_equal(scores["accuracy"], scores["overall_score"])  # no own signal: reuses overall
    with_domain = [i for i, lab in enumerate(labels) if lab.domain]
    assert np.mean([letters[i] == labels[i].domain for i in with_domain]) > 0.8
    assert set(letters) <= {"A", "B", "H", "O"}  # never a domain it has no example of
    regression, _ = train_local_model(labels, x, encoder="model2vec", kind="regression", holdout=0.25, seed=0)
    values = regression.predict(x)[1]["overall_score"]
    assert set(np.unique(values)) <= {1, 2, 3, 4, 5}


def test_bundled_model_in_the_score_stage(tmp_path):
    entry = {"name": "dataman", "backend": "dataman", "path": "winnow:models/dataman/dataman-local.npz"}
    scorer = build_scorer(entry)
    assert isinstance(scorer, DataManLocalScorer) and scorer.model.meta.get("labels") == "derived-labels"
    with gzip.open(LABELS, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:12]
    docs = [{"id": r["id"], "text": r["text"], "source": "t", "metadata": {}} for r in rows]
    stage = Score(ScoreConfig(enabled=True, scorers=[entry]))
    out = run_stage(stage, docs, tmp_path)
    assert len(out["kept"]) == 12 and not out["rejected"]
    for doc in out["kept"]:
        assert doc["application_domain"] in DATAMAN_DOMAINS
        assert doc["application_domain_name"] == DATAMAN_DOMAINS[doc["application_domain"]]
        assert all(isinstance(doc[c], int) and 1 <= doc[c] <= 5 for c in CRITERIA)
        assert 0 < doc["dataman_length"] <= 1895
    direct = scorer.score([d["text"] for d in docs])
    by_id = {d["id"]: d for d in out["kept"]}
    assert [by_id[d["id"]]["overall_score"] for d in docs] == direct["overall_score"].tolist()


def test_bundled_model_has_its_own_head_per_criterion_and_ranks_unseen_human_labels():
    """Every criterion has its own head now, and the overall rating (its expected value) orders the
    report split of the human-labelled pages (the bundled model trains on their fit split only)."""
    from sklearn.metrics import roc_auc_score

    from winnow.core.evaluation import REPORT, three_way_split

    scorer = build_scorer({"name": "dataman", "backend": "dataman", "path": "winnow:models/dataman/dataman-local.npz"})
    assert scorer.model.fallback == {} and set(scorer.model.heads) == set(CRITERIA)
    with gzip.open(DATA / "text" / "quality_labels.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    unseen = [r for r, split in zip(rows, three_way_split([r["id"] for r in rows]), strict=True) if split == REPORT]
    truncated, _ = scorer.truncate([r["text"] for r in unseen])
    x = scorer.encoder.encode(truncated)
    overall = scorer.model.head_for("overall_score").predict_value(x)
    assert roc_auc_score([r["label"] for r in unseen], overall) > 0.7
    # Distinct heads give distinct ratings: creativity does not copy the overall rating.
    assert not np.array_equal(
        scorer.model.heads["creativity"].predict(x), scorer.model.heads["overall_score"].predict(x)
    )


def test_train_cli_writes_model_and_report(tmp_path):
    from typer.testing import CliRunner

    from winnow.cli.dataman import dataman_app

    out = tmp_path / "dm.npz"
    result = CliRunner().invoke(dataman_app, ["train", str(LABELS), "--out", str(out), "--holdout", "0.3"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["domain"]["heldout"]["n"] > 0 and "exact" in report["criteria"]["overall_score"]["heldout"]
    assert LocalDataManModel.load(out).fallback["coherence"] == "overall_score"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "overall_score": 9}) + "\n")
    failed = CliRunner().invoke(dataman_app, ["train", str(bad), "--out", str(tmp_path / "x.npz")])
    assert failed.exit_code == 2 and not (tmp_path / "x.npz").exists()
