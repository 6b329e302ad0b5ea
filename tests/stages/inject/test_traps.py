"""Copyright Traps (docs/copyright-traps.md): acceptance rules, injection arithmetic and reversibility,
allocation, determinism under sharding, AUC plumbing, survival accounting, memorisation by a
character n-gram model, and seeded generation with a tiny Llama and with SmolLM2."""

from __future__ import annotations

import copy
import gzip
import json
import math
import random
import re
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tiny_llama import build_tiny_llama, needs_smollm2

from winnow.core.causal_lm import SMOLLM2, CausalLM, LogitsModel, Sample, load_causal_lm
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.inject.config import InjectConfig, TrapSourceConfig
from winnow.stages.inject.membership import (
    format_membership,
    lm_trap_losses,
    losses_table,
    membership_table,
    roc_auc,
    tpr_at_fpr,
    traps_membership_report,
)
from winnow.stages.inject.traps import (
    InjectionPlan,
    PlannedTrap,
    Trap,
    TrapAcceptor,
    TrapDocuments,
    assign_roles,
    generate_traps,
    inject,
    insertion_points,
    ledger_table,
    plan_injection,
    ppl_bucket_of,
    remove_copies,
    sentence_starts,
    trap_doc_key,
    trap_id_of,
    word_starts,
    write_ledger,
)
from winnow.stages.score.ngram_lm import KneserNeyLM

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    with gzip.open(DATA / "traps" / "weborganizer_long.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    counts = load_tokenizer().count([d["text"] for d in docs])
    for doc, n in zip(docs, counts, strict=True):
        doc["n_tokens"] = int(n)
    return docs


def word_trap(text: str, seq_len: int = 25, bucket: int | None = None) -> Trap:
    return Trap(trap_id_of(text), text, (), seq_len, None, bucket, None, "test-words", "words")


# --- §1: acceptance rules ------------------------------------------------------------------------------


class ScriptedLM(LogitsModel):
    """A "generator" that emits scripted token sequences with scripted perplexities.

    Token i is the word ``w{i}``; id 0 is special; id 999 decodes to two words, so it does not
    survive decode → encode.
    """

    name, version, vocab_size, bos_id = "scripted", "t", 1000, 0
    special_ids = frozenset({0})

    def __init__(self, script: list[tuple[list[int], float]]):
        self.script = list(script)

    def encode(self, texts):
        return [[int(word[1:]) for word in text.split(" ")] for text in texts]

    def decode(self, ids):
        return " ".join("w1 w2" if i == 999 else f"w{i}" for i in ids)

    def vocab(self):
        return {f"w{i}": i for i in range(1000)}

    def generate(self, n, length, temperature, seed, key):
        out = []
        for _ in range(n):
            ids, ppl = self.script.pop(0) if self.script else ([5] * length, 1e9)
            out.append(Sample(ids, np.full(len(ids), -math.log(ppl))))
        return out


def test_acceptor_rules_in_the_reference_order():
    acceptor = TrapAcceptor(n_traps=10, ppl_range=(1, 10), jaccard_max=0.2)
    base = list(range(1, 11))
    assert acceptor.offer(base, 5.5) == "accepted"
    assert acceptor.offer(list(range(101, 111)), 0.99) == "out_of_range"  # int(0.99) = 0
    assert acceptor.offer(list(range(101, 111)), 11.0) == "out_of_range"
    assert acceptor.offer(list(range(101, 111)), 5.9) == "bucket_full"  # one per integer value
    overlap_25 = [1, 2, 3, 4, *range(11, 17)]  # |∩| 4, |∪| 16: Jaccard 0.25
    overlap_15 = [1, 2, 3, *range(21, 31)]  # |∩| 3, |∪| 20: Jaccard 0.15
    assert acceptor.offer(overlap_25, 6.5) == "duplicate"
    assert acceptor.offer(overlap_15, 6.5) == "accepted"
    assert acceptor.open_values() == [1, 2, 3, 4, 7, 8, 9, 10]
    with pytest.raises(ValueError):
        TrapAcceptor(n_traps=15, ppl_range=(1, 10))  # quotas would differ


def test_generation_fills_equal_buckets_and_drops_what_the_reference_drops():
    script = [
        ([7, 8, 0, 9], 3.5),  # a special token
        ([7, 999, 8, 9], 3.5),  # does not round-trip
    ]
    rng = random.Random(3)
    for value in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 200]:  # one over quota, one out of range
        script.append(([rng.randrange(100 + 40 * value, 140 + 40 * value) for _ in range(4)], value + 0.5))
    config = TrapSourceConfig(
        per_seq_len=10,
        ppl_range=(1, 10),
        ppl_buckets=2,
        temperatures={"min": 1.0, "max": 1.5, "step": 1.0},
        batch_size=7,
        max_candidates=21,
    )
    report = generate_traps(ScriptedLM(script), 4, config, seed=1)
    # Two batches of 7 fill every quota; the loop stops before the third.
    assert report.verdicts == Counter(
        {"accepted": 10, "special": 1, "retokenize": 1, "bucket_full": 1, "out_of_range": 1}
    )
    assert report.filled and report.candidates == 14
    assert report.per_bucket == Counter({0: 5, 1: 5})
    assert report.offered == Counter({"0": 6, "1": 5, "above": 1})
    assert sorted(int(t.ppl) for t in report.traps) == list(range(1, 11))
    assert all(t.ppl_bucket == (int(t.ppl) - 1) // 5 for t in report.traps)
    # Without retokenize the two-word decode is kept.
    relaxed = generate_traps(ScriptedLM(script), 4, config.model_copy(update={"retokenize": False}), seed=1)
    assert relaxed.verdicts["retokenize"] == 0 and relaxed.verdicts["bucket_full"] == 2


def test_reference_buckets_and_temperature_sweeps():
    assert [ppl_bucket_of(p, (1, 100), 10) for p in (1.0, 10.99, 11.0, 55.5, 100.9, 101.0, 0.5)] == [
        0,
        0,
        1,
        5,
        9,
        None,
        None,
    ]
    config = TrapSourceConfig()
    assert config.temperatures.values() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    long = config.long_temperatures.values()
    assert long[0] == 0.5 and long[-1] == 7.75 and len(long) == 30


# --- §2: injection arithmetic and reversibility ---------------------------------------------------------


def plan_for(doc_id: str, trap: Trap, n_rep: int, placement="sentence", join="spaced", seed=7) -> InjectionPlan:
    return InjectionPlan((PlannedTrap(trap, "member", n_rep, doc_id),), seed, placement, join)


def reference_inject(text: str, trap_text: str, indices: list[int]) -> str:
    """The reference's placement for given word indices: split on single spaces, insert before each word."""
    words = text.split(" ")
    out, last = "", 0
    for idx in sorted(indices):
        out += " ".join(words[last:idx])
        out += trap_text if idx == 0 else " " + trap_text
        last = idx
    return out + " ".join(words[last:])


@pytest.mark.parametrize("n_rep", [1, 10, 100])
def test_reference_join_reproduces_the_reference_placement(documents, n_rep):
    doc = documents[0]
    trap = word_trap("zyxel quorba flints")
    new, injected = inject(doc["id"], doc["text"], plan_for(doc["id"], trap, n_rep, "word", "reference"))
    assert len(new) == len(doc["text"]) + n_rep * len(trap.text)
    starts = word_starts(doc["text"])
    points = insertion_points(doc["id"], doc["text"], n_rep, "word", 7)
    assert len(set(points)) == n_rep  # distinct words, as random.sample
    assert new == reference_inject(doc["text"], trap.text, [starts.index(p) for p in points])
    assert new.count(trap.text) == doc["text"].count(trap.text) + n_rep
    assert remove_copies(new, injected) == doc["text"]


@pytest.mark.parametrize("n_rep", [1, 10, 100])
def test_spaced_sentence_injection_adds_one_space_per_copy_and_never_glues(documents, n_rep):
    doc = documents[1]
    trap = word_trap("zyxel quorba flints")
    new, injected = inject(doc["id"], doc["text"], plan_for(doc["id"], trap, n_rep))
    assert len(new) == len(doc["text"]) + n_rep * (len(trap.text) + 1)
    assert new.count(trap.text) == n_rep
    (record,) = injected
    assert len(record.char_offsets) == n_rep and record.span_chars == len(trap.text) + 1
    for offset in record.char_offsets:
        assert new[offset : offset + len(trap.text)] == trap.text
        assert new[offset + len(trap.text)] == " "  # never glued to the next word
        assert offset == 0 or new[offset - 1].isspace()
    assert remove_copies(new, injected) == doc["text"]  # byte for byte


def test_sentence_starts_come_first_then_word_starts():
    text = "First one. Second one! Third? (Fourth.) Last\nNew line here"
    assert [text[p : p + 3] for p in sentence_starts(text)] == ["Fir", "Sec", "Thi", "(Fo", "Las", "New"]
    few = insertion_points("d", text, 4, "sentence", 3)
    assert set(few) <= set(sentence_starts(text))
    many = insertion_points("d", text, 9, "sentence", 3)
    assert set(sentence_starts(text)) <= set(many) and len(set(many)) == 9
    assert set(many) <= set(word_starts(text)) | set(sentence_starts(text))
    # More copies than boundaries: some boundaries take several copies, still all spaced.
    tiny = "Just three words"
    new, injected = inject("t", tiny, plan_for("t", word_trap("zz qq"), 5))
    assert new.count("zz qq ") == 5 and remove_copies(new, injected) == tiny


# --- §3: allocation -------------------------------------------------------------------------------------


def make_traps(n: int, seq_lens=(25, 50), buckets=(0, 1)) -> list[Trap]:
    rng = random.Random(11)
    words = [f"tok{i}" for i in range(500)]
    traps = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(6)) + f" n{i}"
        traps.append(word_trap(text, seq_lens[i % len(seq_lens)], buckets[(i // 2) % len(buckets)]))
    return traps


def build_plan(docs, traps, n_reps=(1, 10, 100), seed=1111, doc_min_tokens=500, parts=1):
    config = InjectConfig(n_reps=list(n_reps), doc_min_tokens=doc_min_tokens, seed=seed)
    roles = assign_roles(traps, config.traps.control_share, seed)
    n_members = sum(r == "member" for r in roles.values())
    accumulators = [TrapDocuments(n_members, seed, doc_min_tokens) for _ in range(parts)]
    for i, doc in enumerate(docs):
        accumulators[i % parts].add(doc["id"], doc["n_tokens"])
    merged = accumulators[0]
    for other in accumulators[1:][::-1]:
        merged = merged.merge(other)
    return plan_injection(traps, roles, merged.result(), config), config


def test_allocation_one_member_per_eligible_document_equal_counts_per_n_rep(documents):
    docs = [dict(d) for d in documents]
    for d in docs[::3]:
        d["n_tokens"] = 400  # ineligible
    traps = make_traps(96)
    plan, _ = build_plan(docs, traps)
    members = plan.members
    controls = [e for e in plan.entries if e.role == "control"]
    assert len(members) == len(controls) == 48
    eligible = {d["id"] for d in docs if d["n_tokens"] > 500}
    assert len({e.doc_id for e in members}) == len(members)  # one document per trap
    assert all(e.doc_id in eligible for e in members)
    assert Counter(e.n_rep for e in members) == {1: 16, 10: 16, 100: 16}
    # Documents are dealt in ascending trap-doc hash, to traps walked by (length, bucket).
    by_hash = sorted(eligible, key=lambda doc_id: (trap_doc_key(doc_id, 1111), doc_id))
    assert [e.doc_id for e in members] == by_hash[: len(members)]
    assert [(e.trap.seq_len, e.trap.ppl_bucket) for e in members] == sorted(
        (e.trap.seq_len, e.trap.ppl_bucket) for e in members
    )
    assert all(e.doc_id is None for e in controls)
    # Roles split every (length, bucket) stratum in half.
    for stratum in {(t.seq_len, t.ppl_bucket) for t in traps}:
        roles = Counter(e.role for e in plan.entries if (e.trap.seq_len, e.trap.ppl_bucket) == stratum)
        assert roles["member"] == roles["control"]
    planted = set()
    for doc in docs:
        _, injected = inject(doc["id"], doc["text"], plan)
        planted |= {t.trap_id for t in injected}
    assert planted == {e.trap.trap_id for e in members}  # controls never injected


def test_a_corpus_too_small_or_an_uneven_split_fails_up_front(documents):
    with pytest.raises(ValueError, match="documents over 500 tokens"):
        build_plan(documents[:40], make_traps(96))
    with pytest.raises(ValueError, match="split equally"):
        build_plan(documents, make_traps(90))  # 46 members over 3 repetition counts


# --- §4: determinism ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 17, 250])
def test_trap_documents_keep_the_smallest_hashes_under_any_split(documents, n):
    eligible = sorted((d["id"] for d in documents if d["n_tokens"] > 700), key=lambda i: (trap_doc_key(i, 9), i))
    for parts in (1, 3, 8):
        accumulators = [TrapDocuments(n, 9, 700) for _ in range(parts)]
        for i, doc in enumerate(documents):
            accumulators[(i * 7) % parts].add(doc["id"], doc["n_tokens"])
        merged = accumulators[-1]
        for other in accumulators[:-1]:
            merged = merged.merge(other)
        assert merged.result() == eligible[:n]
        assert merged.eligible == len(eligible)


def test_same_seed_same_ledger_and_texts_under_any_sharding(documents):
    traps = make_traps(96)
    plan_one, _ = build_plan(documents, traps, parts=1)
    plan_many, _ = build_plan(documents[::-1], traps, parts=7)
    assert plan_one == plan_many

    def run(plan, order):
        texts, placements = {}, {}
        for doc in order:
            texts[doc["id"]], injected = inject(doc["id"], doc["text"], plan)
            placements.update({t.trap_id: t for t in injected})
        return texts, ledger_table(plan, placements)

    texts_a, ledger_a = run(plan_one, documents)
    shuffled = documents[:]
    random.Random(4).shuffle(shuffled)
    texts_b, ledger_b = run(plan_many, shuffled)
    assert texts_a == texts_b and ledger_a.equals(ledger_b)
    other, _ = build_plan(documents, traps, seed=1112)
    assert {e.doc_id for e in other.members} != {e.doc_id for e in plan_one.members}


# --- §5: AUC plumbing -----------------------------------------------------------------------------------


def test_auc_equals_sklearn_and_is_oriented_like_the_reference():
    rng = np.random.default_rng(0)
    members = np.round(rng.normal(-0.5, 1, 60), 1)  # rounded: ties
    controls = np.round(rng.normal(0, 1, 45), 1)
    labels = [0] * len(members) + [1] * len(controls)  # the reference: members 0, non-members 1
    expected = roc_auc_score(labels, np.concatenate([members, controls]))
    assert roc_auc(members, controls) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(members, controls) > 0.5  # members score lower: detected
    assert roc_auc(controls, members) == pytest.approx(1 - expected, abs=1e-12)
    assert roc_auc([1, 2], [3, 4]) == 1.0 and roc_auc([1, 1], [1, 1]) == 0.5
    assert tpr_at_fpr(np.arange(100) - 200.0, np.arange(100)) == 1.0
    assert tpr_at_fpr(np.arange(100), np.arange(100)) == pytest.approx(0.01)


def test_cells_truncate_to_equal_groups_and_report_reads_files(tmp_path):
    traps = [word_trap(f"m{i} a b c", 25, 0) for i in range(5)] + [word_trap(f"c{i} a b c", 25, 0) for i in range(8)]
    entries = tuple(
        PlannedTrap(t, "member" if t.text.startswith("m") else "control", 10, f"d{i}" if t.text[0] == "m" else None)
        for i, t in enumerate(traps)
    )
    plan = InjectionPlan(entries, 1, "sentence", "spaced")
    ledger = ledger_table(plan)
    nll = [0.5 if t.text.startswith("m") else 1.0 + i / 10 for i, t in enumerate(traps)]
    target = losses_table([t.trap_id for t in traps], [np.full(4, -v) for v in nll])
    table = membership_table(ledger, target, resamples=50)
    rows = [r for r in table.to_pylist() if r["score"] == "loss" and r["ppl_bucket"] is None]
    assert len(rows) == 1 and rows[0]["n_members"] == rows[0]["n_controls"] == 5
    assert rows[0]["auc"] == 1.0
    write_ledger(ledger, tmp_path / "traps" / "ledger.parquet")
    with open(tmp_path / "losses.jsonl", "w", encoding="utf-8") as handle:
        for row in target.to_pylist():
            handle.write(json.dumps(row) + "\n")
    lines: list[str] = []
    from_files = traps_membership_report(
        tmp_path / "traps" / "ledger.parquet", tmp_path / "losses.jsonl", resamples=50, echo=lines.append
    )
    assert from_files.equals(table)
    assert "loss" in lines[0] and "min_k" in lines[0]


# --- §6: survival accounting ----------------------------------------------------------------------------


def test_ledger_marks_survival_and_exposures(documents):
    plan, _ = build_plan(documents, make_traps(96))
    placements, epochs = {}, {}
    for i, entry in enumerate(plan.members):
        if i % 4 == 0:
            continue  # this document was dropped after injection
        doc = next(d for d in documents if d["id"] == entry.doc_id)
        _, (placed,) = inject(doc["id"], doc["text"], plan)
        placements[placed.trap_id] = placed
        epochs[entry.doc_id] = 1 + i % 3
    ledger = ledger_table(plan, placements, epochs).to_pylist()
    assert len(ledger) == len(plan.entries)
    for i, (row, entry) in enumerate(zip(ledger[: len(plan.members)], plan.members, strict=True)):
        assert row["role"] == "member" and row["survived"] == (i % 4 != 0)
        if row["survived"]:
            assert row["exposures"] == entry.n_rep * (1 + i % 3) and len(row["char_offsets"]) == entry.n_rep
    assert all(r["survived"] is None and r["doc_id"] is None for r in ledger if r["role"] == "control")
    empty = ledger_table(plan, {})  # the ledger is written even when nothing survived
    assert empty.num_rows == len(plan.entries) and not any(
        r["survived"] for r in empty.to_pylist() if r["role"] == "member"
    )


# --- §7: memorisation by a character 5-gram model -------------------------------------------------------


def test_character_ngram_memorises_traps_with_repetition(documents):
    vocab = sorted({w for d in documents for w in re.findall(r"[a-z]{3,}", d["text"].lower())})
    traps = []
    for t in range(240):
        words = [vocab[h64(f"{t}/{j}", "test-trap-word", 0) % len(vocab)] for j in range(25)]
        traps.append(word_trap(" ".join(words)))
    plan, _ = build_plan(documents, traps, n_reps=(1, 10, 100))
    injected = [inject(d["id"], d["text"], plan)[0] for d in documents]
    clean = [d["text"] for d in documents]
    target, reference = KneserNeyLM.train(injected, order=5), KneserNeyLM.train(clean, order=5)

    def losses(model: KneserNeyLM) -> pa.Table:
        """Per-character NLL in nats: the character model's "tokens" are characters."""
        texts = [t.text for t in traps]
        nats = model.total_bits(texts) * math.log(2) / np.array([len(t) for t in texts])
        return pa.table({"trap_id": [t.trap_id for t in traps], "n_tokens": [len(t) for t in texts], "mean_nll": nats})

    ledger = ledger_table(plan)
    table = membership_table(ledger, losses(target), losses(reference), resamples=100)
    auc = {r["n_rep"]: r["auc"] for r in table.to_pylist() if r["score"] == "ratio" and r["ppl_bucket"] is None}
    assert set(auc) == {1, 10, 100}
    assert auc[100] >= 0.95
    assert auc[1] - 0.02 <= auc[10] and auc[10] - 0.02 <= auc[100]
    same = membership_table(ledger, losses(reference), losses(reference), resamples=0)
    for row in same.to_pylist():
        if row["score"] == "ratio":
            assert abs(row["auc"] - 0.5) <= 0.1
    assert "ratio" in format_membership(table)


# --- generation with real models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer LlamaForCausalLM with the bundled tokenizer."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama_traps"), seed=1, max_positions=256)


def test_seeded_sampling_is_deterministic_and_the_cache_changes_nothing(tiny_llama):
    model = CausalLM(str(tiny_llama), threads=1)
    first = model.generate(6, 12, 1.5, seed=3, key="k")
    again = model.generate(6, 12, 1.5, seed=3, key="k")
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    assert [s.token_ids for s in model.generate(6, 12, 1.5, seed=4, key="k")] != [s.token_ids for s in first]
    torch.manual_seed(123)  # torch's global RNG plays no part
    assert [s.token_ids for s in model.generate(6, 12, 1.5, seed=3, key="k")] == [s.token_ids for s in first]
    uncached = copy.copy(model)
    uncached.next_logits = types.MethodType(LogitsModel.next_logits, uncached)  # the whole prefix every step
    assert [s.token_ids for s in uncached.generate(6, 12, 1.5, seed=3, key="k")] == [s.token_ids for s in first]
    # The perplexity read during sampling equals a separate scoring pass.
    rescored = model.mean_nll([s.token_ids for s in first])
    for sample, nll in zip(first, rescored, strict=True):
        assert math.log(sample.ppl) == pytest.approx(nll, rel=1e-5)
    greedy = model.generate(2, 5, 0.0, seed=1, key="g")
    assert greedy[0].token_ids == greedy[1].token_ids  # temperature 0 is argmax


def test_trap_losses_use_the_first_token_as_context_only(tiny_llama):
    model = CausalLM(str(tiny_llama), threads=1)
    texts = [("a", "The quick brown fox jumps over the lazy dog."), ("b", "Data curation at scale.")]
    table = lm_trap_losses(model, texts).to_pylist()
    for row, (_, text) in zip(table, texts, strict=True):
        ids = model.encode([text])[0]
        assert row["n_tokens"] == len(ids) - 1
        assert row["mean_nll"] == pytest.approx(-np.mean(model.token_logprobs([ids], bos=False)[0]), rel=1e-9)
    assert model.bos_id is not None  # scoring without BOS did not change the model


@needs_smollm2
def test_smollm2_trap_generation_is_seeded_and_round_trips():
    model = load_causal_lm(SMOLLM2)
    config = TrapSourceConfig(
        per_seq_len=60,
        ppl_range=(5, 64),
        ppl_buckets=6,
        temperatures={"min": 1.0, "max": 1.5, "step": 0.5},
        batch_size=8,
        max_candidates=8,
    )
    first = generate_traps(model, 10, config, seed=123)
    again = generate_traps(model, 10, config, seed=123)
    assert first.candidates == 8 and first.tokens_sampled == 80
    assert [t.token_ids for t in first.traps] == [t.token_ids for t in again.traps]
    assert first.traps, "SmolLM2 accepted no 10-token trap in [5, 64] from 8 candidates"
    for trap in first.traps:
        assert model.encode([trap.text])[0] == list(trap.token_ids) and trap.text.strip()
        assert 5 <= int(trap.ppl) <= 64 and trap.ppl_bucket == (int(trap.ppl) - 5) // 10
        assert trap.temperature == 1.0
    rescored = model.mean_nll([t.token_ids for t in first.traps])
    assert [math.log(t.ppl) for t in first.traps] == pytest.approx(rescored, rel=1e-4)
    assert sum(first.verdicts.values()) == 8
