"""Copyright Traps (docs/copyright-traps.md): trap generation with SmolLM2, and the membership curve.

B11.1: SmolLM2-135M (local mode) generates 25-token traps with the reference's rules (perplexity
[1, 100], one trap per integer perplexity, token-set Jaccard ≤ 0.2, round-trip ids, temperatures
0.5…3.5) within a budget of ``--candidates25`` sampled candidates. Printed: wall time, sampled tokens
per accepted trap, why candidates were dropped, and per perplexity bucket the candidates that fell
in it, the traps accepted and the integer values left open.

B11.2: the membership test of the fidelity tests' memorisation check, with SmolLM2-generated traps
of 25 and 50 tokens (pools accepted with a quota of 10 per integer perplexity, so the samples are
kept rather than rejected as over quota; the 25-token samples are the B11.1 ones again). Half of
every (length, bucket) stratum are controls; members are injected (sentence starts, spaced) with
repetitions 1, 10 and 100 into long weborganizer-dclm pages (``doc_min_tokens`` 500 under the
bundled tokenizer); a character 5-gram Kneser–Ney model is trained on the injected corpus (target)
and on the clean corpus (reference). AUCs of ratio, LOSS and Min-20% by (length, repetitions), and
the ratio AUC by perplexity group (three groups of buckets: ten leave too few traps per cell).
Same-run peers: traps made of random corpus words (no LM) with the same counts, and the null test
(target = reference). The point is the shape (AUC rising with
repetitions, length and perplexity), not the level: an n-gram model memorises far more readily
than a 1.3B transformer.

Budget: sampling costs about as much per token as scoring; the defaults sample
(896 × 25 + 448 × 50) ≈ 45K tokens.

    python bench/copyright_traps.py [--corpora PATH] [--candidates25 896] [--candidates50 448] [--batch 32]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.causal_lm import SMOLLM2, LogitsModel, load_causal_lm  # noqa: E402
from winnow.core.hashing import h64  # noqa: E402
from winnow.core.tokenizer import load_tokenizer  # noqa: E402
from winnow.stages.inject.config import InjectConfig, TrapSourceConfig  # noqa: E402
from winnow.stages.inject.membership import format_membership, losses_table, membership_table  # noqa: E402
from winnow.stages.inject.traps import (  # noqa: E402
    Trap,
    TrapDocuments,
    assign_roles,
    generate_traps,
    inject,
    ledger_table,
    plan_injection,
    trap_id_of,
)
from winnow.stages.score.ngram_lm import KneserNeyLM, _stream  # noqa: E402

N_REPS = (1, 10, 100)


def default_corpora() -> Path:
    for candidate in (ROOT.parent / "shared" / "corpora", Path("/work/shared/corpora")):
        if candidate.exists():
            return candidate
    return ROOT.parent / "shared" / "corpora"


class RememberedSamples(LogitsModel):
    """The model, with each ``generate`` call remembered: a second acceptor reads the same samples."""

    def __init__(self, model: LogitsModel):
        self.inner, self.calls = model, {}
        for name in ("name", "version", "mode", "vocab_size", "bos_id", "special_ids", "max_positions"):
            setattr(self, name, getattr(model, name))

    def encode(self, texts):
        return self.inner.encode(texts)

    def decode(self, ids):
        return self.inner.decode(ids)

    def vocab(self):
        return self.inner.vocab()

    def generate(self, n, length, temperature, seed, key):
        call = (n, length, temperature, seed, key)
        if call not in self.calls:
            self.calls[call] = self.inner.generate(n, length, temperature, seed, key)
        return self.calls[call]


def char_nats(model: KneserNeyLM, text: str) -> np.ndarray:
    """Per-character log-probabilities in nats (the n-gram model's per-position values)."""
    stream, real, _ = _stream([text], model.order)
    return model._log2_probs(stream, real) * math.log(2)


def print_generation(report, seconds: float, config: TrapSourceConfig) -> None:
    accepted = len(report.traps)
    print(
        f"  {report.candidates} candidates, {report.tokens_sampled:,} sampled tokens, {seconds:.0f} s; "
        f"{accepted} accepted = {report.tokens_sampled / max(accepted, 1):,.0f} sampled tokens per trap"
    )
    print(f"  verdicts: {dict(sorted(report.verdicts.items()))}")
    low, high = config.ppl_range
    width = (high - low + 1) // config.ppl_buckets
    print("  bucket  ppl range  candidates  accepted  open integer values")
    for bucket in range(config.ppl_buckets):
        values = range(low + bucket * width, low + (bucket + 1) * width)
        open_values = [v for v in report.open_values if v in values]
        print(
            f"  {bucket:>6}  {values[0]:>3}–{values[-1]:<4}  {report.offered[str(bucket)]:>10}  "
            f"{report.per_bucket[bucket]:>8}  {len(open_values):>2} {open_values if len(open_values) <= 5 else ''}"
        )
    print(f"  below range {report.offered['below']}, above range {report.offered['above']}")


def balanced(traps: list[Trap], seed: int) -> tuple[list[Trap], dict]:
    """Roles, with surplus members dropped so every repetition count gets the same number."""
    roles = assign_roles(traps, 0.5, seed)
    members = sorted((t for t in traps if roles[t.trap_id] == "member"), key=lambda t: h64(t.trap_id, "bench", 0))
    surplus = {t.trap_id for t in members[: len(members) % len(N_REPS)]}
    return [t for t in traps if t.trap_id not in surplus], roles


def membership_curve(name: str, traps: list[Trap], docs: list[dict], seed: int) -> None:
    traps, roles = balanced(traps, seed)
    config = InjectConfig(n_reps=list(N_REPS), doc_min_tokens=500, seed=seed)
    members = sum(roles[t.trap_id] == "member" for t in traps)
    chooser = TrapDocuments(members, seed, config.doc_min_tokens)
    for doc in docs:
        chooser.add(doc["id"], doc["n_tokens"])
    plan = plan_injection(traps, roles, chooser.result(), config)
    injected = [inject(d["id"], d["text"], plan)[0] for d in docs]
    start = time.perf_counter()
    target = KneserNeyLM.train(injected, order=5)
    reference = KneserNeyLM.train([d["text"] for d in docs], order=5)
    seconds = time.perf_counter() - start

    def losses(model: KneserNeyLM):
        return losses_table([t.trap_id for t in traps], [char_nats(model, t.text) for t in traps])

    ledger = ledger_table(plan)
    target_losses, reference_losses = losses(target), losses(reference)
    table = membership_table(ledger, target_losses, reference_losses, resamples=1000, seed=0)
    null = membership_table(ledger, reference_losses, reference_losses, resamples=0)
    print(f"\n{name}: {len(traps)} traps ({members} members), two 5-gram models trained in {seconds:.0f} s")
    print(format_membership(table))
    # Ten buckets leave 0–5 traps per cell here; three perplexity groups keep the shape readable.
    groups = [None if b is None else (0 if b <= 2 else 1 if b <= 5 else 2) for b in ledger["ppl_bucket"].to_pylist()]
    column = ledger.schema.get_field_index("ppl_bucket")
    grouped = ledger.set_column(column, "ppl_bucket", pa.array(groups, pa.int32()))
    by_group = membership_table(grouped, target_losses, reference_losses, resamples=0)
    print("  ratio AUC by perplexity group (ppl 1–30 | 31–60 | 61–100; n members = n controls):")
    for seq_len in sorted(set(ledger["seq_len"].to_pylist())):
        for n_rep in N_REPS:
            cells = {
                r["ppl_bucket"]: r
                for r in by_group.to_pylist()
                if r["score"] == "ratio" and r["seq_len"] == seq_len and r["n_rep"] == n_rep
            }
            parts = [
                f"{cells[g]['auc']:.3f} (n {cells[g]['n_members']:>2})"
                if cells.get(g, {}).get("n_members")
                else "    –     "
                for g in (0, 1, 2)
            ]
            print(f"    len {seq_len:>3} n_rep {n_rep:>4}: {' | '.join(parts)}")
    aucs = [r["auc"] for r in null.to_pylist() if r["score"] == "ratio" and r["ppl_bucket"] is None]
    print(f"  null test (target = reference): ratio AUC {min(aucs):.3f}–{max(aucs):.3f}")


def word_traps(docs: list[dict], like: list[Trap]) -> list[Trap]:
    """Traps of random corpus words, one per SmolLM2 trap, with its length in words ≈ tokens × 0.75."""
    vocab = sorted({w for d in docs for w in re.findall(r"[a-z]{3,}", d["text"].lower())})
    out = []
    for i, trap in enumerate(like):
        words = max(3, round(trap.seq_len * 0.75))
        text = " ".join(vocab[h64(f"{i}/{j}", "bench-trap-word", 0) % len(vocab)] for j in range(words))
        out.append(Trap(trap_id_of(text), text, (), trap.seq_len, None, trap.ppl_bucket, None, "words", "words"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default=str(default_corpora()))
    parser.add_argument("--candidates25", type=int, default=896)
    parser.add_argument("--candidates50", type=int, default=448)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--docs", type=int, default=1500, help="weborganizer-dclm pages in the injected corpus")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1111)
    args = parser.parse_args()

    start = time.perf_counter()
    model = RememberedSamples(load_causal_lm(SMOLLM2, threads=args.threads))
    print(f"SmolLM2 load {time.perf_counter() - start:.1f} s ({model.inner.describe()}, {args.threads} threads)")

    b111 = TrapSourceConfig(per_seq_len=100, batch_size=args.batch, max_candidates=args.candidates25)
    print(f"\nB11.1  25-token traps, quota 1 per integer perplexity in [1, 100], budget {args.candidates25} candidates")
    start = time.perf_counter()
    report = generate_traps(model, 25, b111, args.seed)
    print_generation(report, time.perf_counter() - start, b111)
    temperatures = Counter(t.temperature for t in report.traps)
    print(f"  accepted by temperature: {dict(sorted(temperatures.items()))}")

    pool_config = b111.model_copy(update={"per_seq_len": 1000})
    pool25 = generate_traps(model, 25, pool_config, args.seed).traps  # the same samples, quota 10
    start = time.perf_counter()
    pool_config50 = pool_config.model_copy(update={"max_candidates": args.candidates50})
    report50 = generate_traps(model, 50, pool_config50, args.seed)
    print(f"\n50-token pool (quota 10 per integer perplexity), budget {args.candidates50} candidates")
    print_generation(report50, time.perf_counter() - start, pool_config50)
    traps = pool25 + report50.traps

    with gzip.open(Path(args.corpora) / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        pages = [json.loads(line) for line in handle]
    pages = sorted(pages, key=lambda p: h64(p["id"], "bench-traps", 0))[: args.docs]
    for page, n in zip(pages, load_tokenizer().count([p["text"] for p in pages]), strict=True):
        page["n_tokens"] = int(n)
    chars = sum(len(p["text"]) for p in pages)
    eligible = sum(p["n_tokens"] > 500 for p in pages)
    print(f"\nB11.2  corpus: {len(pages)} weborganizer-dclm pages, {chars:,} characters, {eligible} over 500 tokens")
    membership_curve("SmolLM2 traps", traps, pages, args.seed)
    membership_curve(
        "peer: random corpus-word traps (same counts, lengths and buckets)", word_traps(pages, traps), pages, args.seed
    )


if __name__ == "__main__":
    main()
