"""SALT and Copyright Traps wired into a run (docs/salt.md, docs/copyright-traps.md): what the stages cost
through Beam against the bare cores on the same data, in the same process.

S1 (SALT statistics + band): the first ``--docs`` documents of the bundled sample (web.jsonl.gz),
scored with ``backend: causal_lm`` (SmolLM2, local mode, first ``--tokens`` tokens) and tagged by
``select.rule: band`` through ``winnow run``'s pipeline (one in-memory worker: the model is loaded
once in this process, the load is timed apart). Floor: ``CausalLMStats.score`` on the same texts with
the same loaded model. Printed: predicted tokens per second both ways, their ratio, the largest
relative difference between the two runs' statistics, and the band's cut.

S2 (soft labels): the same documents packed into ``--context-tokens`` contexts and exported with
``output.soft_labels`` (the run tokenizer is SmolLM2's own, saved from the GGUF, so the tokenizer check
passes). Floor: ``soft_label_table`` on the same contexts (read back from the token output). Printed:
seconds per context both ways and bytes per token of the ``soft_labels/`` table.

T1 (Copyright Traps): every document of the bundled web sample through exact dedup, with and without
``inject`` (after ``dedup``), traps read from a file of ``--traps`` word sequences, ``doc_min_tokens``
1,000, ``n_reps`` 1 and 10. Peer: the same run without ``inject``. Printed: seconds (CPU) of both
runs and the difference, the plan and ledger figures and the ledger's size.

    python bench/lm_stages.py [--docs 60] [--tokens 64] [--contexts 4] [--context-tokens 512] [--traps 40]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _pipeline import run_winnow  # noqa: E402

from winnow.config import parse_config  # noqa: E402
from winnow.core.causal_lm import SMOLLM2, load_causal_lm  # noqa: E402
from winnow.run.execute import run_pipeline  # noqa: E402
from winnow.stages.score.causal_lm import STATISTICS, CausalLMStats  # noqa: E402
from winnow.stages.score.registry import scorer_entry  # noqa: E402
from winnow.stages.score.soft_labels import soft_label_table  # noqa: E402

SAMPLE = ROOT / "winnow" / "data" / "sample" / "web.jsonl.gz"
WORDS = ["amber", "quartz", "lantern", "orchid", "velvet", "meadow", "cobalt", "harbor", "thistle", "ember", "sable"]


def sample_docs() -> list[dict]:
    lines = gzip.decompress(SAMPLE.read_bytes()).decode("utf-8").rstrip("\n").split("\n")
    return [{"id": row["id"], "text": row["text"]} for row in map(json.loads, lines)]


def salt(docs: list[dict], tokens: int, contexts: int, context_tokens: int) -> None:
    start = time.perf_counter()
    model = load_causal_lm(SMOLLM2)
    print(f"SmolLM2 load {time.perf_counter() - start:.1f} s ({model.describe()}, 1 thread)")
    entry = {"name": "slm_stats", "backend": "causal_lm", "max_tokens": tokens, "window_tokens": tokens}

    cpu = time.process_time()
    floor = CausalLMStats(scorer_entry(entry), model).score([d["text"] for d in docs])
    floor_cpu = time.process_time() - cpu
    predicted = int(floor["slm_tokens"].sum())
    band = {"lower_quantile": 0.5, "upper_quantile": 0.9}
    run = run_winnow(docs, ["score", "select"], score={"enabled": True, "scorers": [entry]},
                     select={"enabled": True, "rule": "band", "band": band})  # fmt: skip
    by_id = {row["id"]: row for row in run.kept}
    worst = 0.0
    for i, doc in enumerate(docs):
        for statistic in STATISTICS:
            a, b = float(floor[f"slm_{statistic}"][i]), by_id[doc["id"]][f"slm_{statistic}"]
            worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
    print(f"S1  {len(docs)} documents, {predicted:,} predicted tokens (first {tokens} tokens each)")
    print(f"    floor (CausalLMStats.score): {floor_cpu:.1f} s CPU = {predicted / floor_cpu:.0f} tokens/s")
    print(
        f"    run (score + select band, Beam in-memory): {run.cpu_seconds:.1f} s CPU ({run.seconds:.1f} s wall) "
        f"= {predicted / run.cpu_seconds:.0f} tokens/s; run/floor {run.cpu_seconds / floor_cpu:.2f}×"
    )
    print(f"    largest relative difference run vs floor over {len(STATISTICS)} statistics: {worst:.2e}")
    (cut,) = run.section("selection")
    print(
        f"    band: documents {cut['documents']}, band share {cut['band_share']:.3f} of {cut['pool_weight']:,} "
        f"tokens, slm_median_nll in [{cut['low_value']:.3f}, {cut['high_value']:.3f}), "
        f"selected (top-10 hit ≥ 0.5) {cut['selected_documents']}"
    )

    with tempfile.TemporaryDirectory(prefix="winnow-smollm2-tok-") as folder:
        model.tokenizer.save_pretrained(folder)
        tokenizer = str(Path(folder) / "tokenizer.json")
        needed = contexts * context_tokens
        chosen, total = [], 0
        for doc in docs:  # enough text for the contexts (documents carry EOS between them)
            chosen.append(doc)
            total += len(model.encode([doc["text"]])[0]) + 1
            if total > needed:
                break
        root = Path(folder)
        with (root / "docs.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in chosen)
        config = parse_config(
            {
                "inputs": [{"paths": [str(root / "docs.jsonl")]}],
                "output": {
                    "dir": str(root / "out"),
                    "report": {"enabled": False},
                    "tokens": {"formats": ["parquet"]},
                    "soft_labels": {"enabled": True, "topk": 8, "phases": []},
                },
                "runner": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
                "tokenizer": {"path": tokenizer},
                "order": {"enabled": True, "method": "none"},
                "pack": {"mode": "concat", "context_tokens": context_tokens, "shuffle_contexts": False},
            },
            origin="<bench>",
        )
        start, cpu = time.perf_counter(), time.process_time()
        manifest = run_pipeline(config, ["order", "pack"]).manifest
        run_seconds, run_cpu = time.perf_counter() - start, time.process_time() - cpu
        section = manifest["soft_labels"][0]
        table_bytes = sum(entry["bytes"] for entry in manifest["shards"]["soft_labels"])
        files = sorted((root / "out" / "tokens" / "parquet" / "contexts").rglob("*.parquet"))
        sequences = [row for f in files for row in pq.read_table(f).to_pylist()]
    cpu = time.process_time()
    soft_label_table(model, [(row["id"], row["tokens"]) for row in sequences], 8)
    floor_cpu = time.process_time() - cpu
    n, positions = section["contexts"], section["positions"]
    print(f"S2  soft labels, top-8 float16, {n} contexts of {context_tokens} tokens ({positions:,} positions)")
    print(
        f"    floor (soft_label_table): {floor_cpu / n:.1f} s CPU per context; run (whole pipeline incl. "
        f"tokenising, packing, token output): {run_cpu / n:.1f} s CPU per context ({run_seconds:.0f} s wall)"
    )
    print(f"    soft_labels/ table: {table_bytes:,} bytes = {table_bytes / positions:.1f} bytes per token")


def traps(docs: list[dict], n_traps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="winnow-traps-") as folder:
        path = Path(folder) / "traps.jsonl"
        lines = [" ".join(WORDS[(i * k + 1) % len(WORDS)] for k in range(1, 9)) + f" sigil{i}" for i in range(n_traps)]
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines), encoding="utf-8")
        inject = {
            "enabled": True,
            "after": "dedup",
            "doc_min_tokens": 1000,
            "n_reps": [1, 10],
            "traps": {"source": "file", "file": str(path)},
        }
        base = {"dedup": {"minhash": {"enabled": False}}}
        peer = run_winnow(docs, ["dedup"], **base)
        run = run_winnow(docs, ["dedup", "inject"], inject=inject, **base)
    plan = next(r for r in run.section("traps") if r["kind"] == "plan")
    ledger = next(r for r in run.section("traps") if r["kind"] == "ledger")
    (entry,) = run.manifest["shards"]["traps"]
    print(
        f"T1  {len(docs):,} documents (bundled web sample), {n_traps} file traps, doc_min_tokens 1,000, n_reps 1 and 10"
    )
    print(
        f"    dedup only: {peer.cpu_seconds:.1f} s CPU ({peer.seconds:.1f} s wall); dedup + inject: "
        f"{run.cpu_seconds:.1f} s CPU ({run.seconds:.1f} s wall); "
        f"inject adds {run.cpu_seconds - peer.cpu_seconds:.1f} s "
        f"({run.cpu_seconds / peer.cpu_seconds:.2f}×)"
    )
    print(
        f"    plan: {plan['members']} members, {plan['controls']} controls ({plan['members_made_controls']} surplus "
        f"members made controls), {plan['eligible_documents']} eligible documents, {plan['copies_planned']} copies"
    )
    print(
        f"    ledger: {ledger['members_survived']} members survived, {ledger['copies_written']} copies written, "
        f"{entry['bytes']:,} bytes; kept {run.manifest['counts']['kept']:,} = dedup-only kept "
        f"{peer.manifest['counts']['kept']:,}"
    )
    planted = [row for row in run.kept if row.get("injected_traps")]
    added = sum(len(t["char_offsets"]) * t["span_chars"] for row in planted for t in row["injected_traps"])
    print(f"    {len(planted)} planted documents, {added:,} characters added")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--context-tokens", type=int, default=512)
    parser.add_argument("--traps", type=int, default=40)
    parser.add_argument("--skip-lm", action="store_true", help="T1 only (no causal LM needed)")
    args = parser.parse_args()
    docs = sample_docs()
    if not args.skip_lm:
        salt(docs[: args.docs], args.tokens, args.contexts, args.context_tokens)
    traps(docs, args.traps)


if __name__ == "__main__":
    main()
