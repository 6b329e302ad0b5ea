"""Packing on real web text: ICP concat-and-chunk contexts and Dataset Decomposition buckets.

Takes ``weborganizer-dclm/docs.jsonl.gz`` from ../shared/corpora (8,939 DCLM web pages), gives
them a hashed ``order_rank`` (ordering itself is the ``order`` stage's job), and runs ``Pack`` on
the local FnApiRunner in both modes with the default config (L = 8192; DD buckets 2^8..2^13,
randomised overflow, 2^i + 1 pieces). Prints throughput, the concat fidelity check (contexts
rebuild the stream token for token, all but the last exactly L), the DD bucket token shares next
to the reference DCLM shares (METHODS §5.2) and the DD accounting.

    python bench/packing_eval.py [--docs 8939]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.stage import CONTEXTS, DD, SUMMARY, Pack

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"
REFERENCE_SHARES = {8: 3.7, 9: 6.3, 10: 7.8, 11: 6.6, 12: 5.4, 13: 4.7}  # billions of tokens, DCLM subset


def load_docs(limit: int) -> list[dict[str, Any]]:
    with gzip.open(SHARED / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:limit]
    docs = [{"id": str(r["id"]), "text": r["text"], "url": None, "source": "dclm", "metadata": {}} for r in rows]
    docs.sort(key=lambda d: h64(d["id"], "bench_rank", 0))
    return [{**d, "order_rank": rank} for rank, d in enumerate(docs)]


def run(docs: list[dict[str, Any]], config: PackConfig) -> tuple[dict[str, list[Any]], float]:
    """Run ``Pack`` and read its outputs back (JSON lines through a temporary folder)."""
    with tempfile.TemporaryDirectory() as folder:
        pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
        out = pipeline | beam.Create(docs, reshuffle=False) | Pack(config, TokenizerConfig(), seed=0)
        for name, pcoll in out.items():
            _ = (
                pcoll
                | f"{name}/json" >> beam.Map(json.dumps)
                | f"{name}/write" >> beam.io.WriteToText(f"{folder}/{name}")
            )
        start = time.perf_counter()
        pipeline.run().wait_until_finish()
        seconds = time.perf_counter() - start
        results = {
            name: [
                json.loads(line) for path in Path(folder).glob(f"{name}-*") for line in path.read_text().splitlines()
            ]
            for name in out
        }
    return results, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=8939)
    args = parser.parse_args()
    docs = load_docs(args.docs)
    tokenizer = load_tokenizer()
    streams = {d["id"]: [*tokenizer.encode([d["text"]])[0], tokenizer.eos_id] for d in docs}
    total = sum(len(s) for s in streams.values())
    print(f"{len(docs)} docs, {total:,} tokens incl. EOS (bundled winnow-bpe-32k)")

    out, seconds = run(docs, PackConfig(mode="concat"))
    contexts = sorted(out[CONTEXTS], key=lambda c: c["context_id"])
    rebuilt = [
        t
        for c in contexts
        for d, s, e in zip(c["doc_ids"], c["doc_token_starts"], c["doc_token_ends"], strict=True)
        for t in streams[d][s:e]
    ]
    expected = [t for d in docs for t in streams[d["id"]]]
    exact_l = all(c["n_tokens"] == 8192 for c in contexts[:-1])
    print(
        f"concat: {seconds:.1f}s ({len(docs) / seconds:,.0f} docs/s, {total / seconds:,.0f} tokens/s), "
        f"{len(contexts)} contexts of 8192, last {contexts[-1]['n_tokens']}; all but last exactly L: {exact_l}; "
        f"stream rebuilt token for token: {rebuilt == expected}"
    )

    out, seconds = run(docs, PackConfig(mode="dd"))
    (summary,) = out[SUMMARY]
    rate = f"{len(docs) / seconds:,.0f} docs/s, {total / seconds:,.0f} tokens/s"
    print(f"dd: {seconds:.1f}s ({rate}), {len(out[DD])} pieces")
    reference_total = sum(REFERENCE_SHARES.values())
    print("bucket  seq_len  sequences    tokens  share  reference_share  partial_shard_tokens")
    for i, info in summary["buckets"].items():
        share = info["tokens"] / max(1, summary["accounting"]["bucket_tokens"])
        print(
            f"{i:>6}  {info['seq_len']:>7}  {info['sequences']:>9}  {info['tokens']:>8}  {share:5.1%}"
            f"  {REFERENCE_SHARES[int(i)] / reference_total:15.1%}  {info['dropped_partial_shard_tokens']:>20}"
        )
    print("accounting:", json.dumps(summary["accounting"]))


if __name__ == "__main__":
    main()
