"""Untie the Knots packing on real text: throughput, insertion and truncation shares, dependency distance.

Documents: ``sentencepiece-books/botchan`` (one English novel, one document), the 106 real articles of
``wikipedia-dump-fragments`` (en wikitext) and ``weborganizer-dclm`` (DCLM web pages), from
../shared/corpora, in a hashed rank order, tokenised with the bundled BPE (winnow-bpe-32k). They are
packed into contexts of 32,768 + 1 tokens three ways in the same run:

* a numpy floor: the stream concatenated and cut into windows (no per-document bookkeeping);
* plain packing: the UtK packer with ``probability: 0`` (same code path, no augmentation);
* UtK with the default config (80% of contexts, 3 chunks, partial order, backtracing), with
  ``overflow: truncate`` and ``overflow: defer``.

Prints contexts/s and tokens/s (2 cores, one process), the inserted-token share (knots + IDs), the
truncated share, and the token distance between the end of chunk c and the start of chunk c + 1 of the
same document (plain packing: 0 by construction).

Then the wired stage: the first ``--stage-docs`` documents (ranked as above) through the ``pack`` stage
(``Pack``, the Beam transform a run uses; local in-memory runner, one worker) with ``mode: concat`` and
``mode: utk`` (truncate and defer), wall time including its own tokenisation, and whether the stage's
``packing`` record equals the core packer's totals on the same documents.

    python bench/utk_packing.py [--web-docs 8939] [--context-tokens 32768] [--stage-docs 1500]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.stage import CONTEXTS, SUMMARY, Pack, utk_bundle
from winnow.stages.pack.utk import SpecialTokens, UtkPacker, utk_summary
from winnow.stages.pack.utk_config import UtkConfig


def corpora_folder() -> Path:
    """``$WINNOW_CORPORA``, else the nearest ``shared/corpora`` above this file (a checkout or a worktree)."""
    if os.environ.get("WINNOW_CORPORA"):
        return Path(os.environ["WINNOW_CORPORA"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "corpora").is_dir():
            return parent / "shared" / "corpora"
    raise SystemExit("set WINNOW_CORPORA to the shared corpora folder")


SHARED = corpora_folder()


def load_texts(web_docs: int) -> list[tuple[str, str]]:
    with gzip.open(SHARED / "sentencepiece-books" / "botchan.txt.gz", "rt", encoding="utf-8") as handle:
        docs = [("botchan", handle.read())]
    with gzip.open(SHARED / "wikipedia-dump-fragments" / "enwiki_pages.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            page = json.loads(line)
            if not page.get("redirect_to") and page.get("wikitext"):
                docs.append((page["id"], page["wikitext"]))
    with gzip.open(SHARED / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= web_docs:
                break
            row = json.loads(line)
            docs.append((str(row["id"]), row["text"]))
    return sorted(docs, key=lambda d: h64(d[0], "bench_rank", 0))


def pack(config: UtkConfig, special: SpecialTokens, encode, docs, context_tokens: int) -> tuple[list, object, float]:
    start = time.perf_counter()
    packer = UtkPacker(config, special, encode, seed=0, context_tokens=context_tokens, bundle=utk_bundle(""))
    contexts = []
    for doc_id, ids in docs:
        contexts.extend(packer.add(doc_id, ids))
    contexts.extend(packer.finish())
    return contexts, packer.totals, time.perf_counter() - start


def distances(contexts) -> np.ndarray:
    """dst_start(c + 1) − dst_end(c) for consecutive chunks of a document, both at least partly kept."""
    out = []
    for context in contexts:
        if not context.utk_applied:
            continue
        by_segment: dict[int, dict[int, object]] = {}
        for chunk in context.chunks:
            by_segment.setdefault(chunk.segment, {})[chunk.chunk_index] = chunk
        for chunks in by_segment.values():
            for c in range(len(chunks) - 1):
                a, b = chunks[c], chunks[c + 1]
                if a.kept_tokens and b.kept_tokens:
                    out.append(b.dst_start - a.dst_end)
    return np.array(out, dtype=np.int64)


def run_stage(config: PackConfig, docs: list[dict]) -> tuple[dict, float]:
    """The ``pack`` stage on the local runner: its summary record(s) and context count, and the wall time."""
    with tempfile.TemporaryDirectory() as folder:
        pipeline = beam.Pipeline(
            options=PipelineOptions(
                ["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
            )
        )
        out = pipeline | beam.Create(docs, reshuffle=False) | Pack(config, TokenizerConfig(), seed=0)
        counted = out[CONTEXTS] | "CountContexts" >> beam.combiners.Count.Globally()
        records = out[SUMMARY] | "Records" >> beam.combiners.ToList()
        _ = (
            (
                counted | "TagCount" >> beam.Map(lambda n: ("contexts", n)),
                records | "TagRecords" >> beam.Map(lambda r: ("summary", r)),
            )
            | beam.Flatten()
            | beam.Map(json.dumps, sort_keys=True)
            | beam.io.WriteToText(f"{folder}/result", shard_name_template="")
        )
        start = time.perf_counter()
        pipeline.run().wait_until_finish()
        seconds = time.perf_counter() - start
        result = dict(json.loads(line) for line in Path(f"{folder}/result").read_text().splitlines())
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web-docs", type=int, default=8939)
    parser.add_argument("--context-tokens", type=int, default=32768)
    parser.add_argument("--stage-docs", type=int, default=1500)
    args = parser.parse_args()

    texts = load_texts(args.web_docs)
    tokenizer = load_tokenizer()
    start = time.perf_counter()
    ids = tokenizer.encode([t for _, t in texts])
    tokenize_s = time.perf_counter() - start
    docs = [(doc_id, np.asarray(i, dtype=np.int64)) for (doc_id, _), i in zip(texts, ids, strict=True)]
    stream_tokens = sum(len(i) + 1 for _, i in docs)
    print(f"documents {len(docs):,}, stream tokens (ids + EOS) {stream_tokens:,}; tokenising took {tokenize_s:.1f} s")

    size = args.context_tokens + 1
    start = time.perf_counter()
    stream = np.concatenate([np.append(i, tokenizer.eos_id) for _, i in docs])
    windows = np.split(stream, np.arange(size, len(stream), size))
    floor_s = time.perf_counter() - start
    print(
        f"\nnumpy floor: {len(windows):,} windows in {floor_s:.2f} s ({stream_tokens / floor_s / 1e6:.1f} M tokens/s)"
    )

    base = UtkConfig()
    special = SpecialTokens.from_tokenizer(base, tokenizer)
    runs = {
        "plain (probability 0)": base.model_copy(update={"probability": 0.0}),
        "UtK, overflow: truncate": base,
        "UtK, overflow: defer": base.model_copy(update={"overflow": "defer"}),
    }
    results = {}
    print(f"\n{'run':<26}{'contexts':>9}{'ctx/s':>9}{'M tok/s':>9}{'vs plain':>9}{'inserted':>10}{'truncated':>11}")
    for name, config in runs.items():
        contexts, totals, seconds = pack(config, special, tokenizer.encode, docs, args.context_tokens)
        results[name] = (contexts, totals, seconds)
        summary = utk_summary(totals, config, special, seed=0, context_tokens=args.context_tokens)
        plain_s = results["plain (probability 0)"][2]
        rate = totals.stream_tokens / seconds / 1e6
        print(
            f"{name:<26}{totals.contexts:>9,}{totals.contexts / seconds:>9.1f}{rate:>9.2f}"
            f"{seconds / plain_s:>8.2f}×{summary['inserted_share']:>10.2%}{summary['truncated_share']:>11.2%}"
        )
    _, truncate_totals, _ = results["UtK, overflow: truncate"]
    summary = utk_summary(truncate_totals, base, special, seed=0, context_tokens=args.context_tokens)
    print(
        f"\ntruncate: {summary['contexts_with_utk']}/{summary['contexts']} contexts augmented "
        f"({summary['contexts_with_utk'] / summary['contexts']:.1%}, configured 80%); knot tokens "
        f"{summary['knot_tokens']:,}, backtracing tokens {summary['backtrace_tokens']:,}; truncated "
        f"{summary['truncated_tokens']:,} tokens; accounting closes: {summary['accounting']['closes']}"
    )
    print(f"chunk-count histogram (segments): {summary['chunk_histogram']}")
    _, defer_totals, _ = results["UtK, overflow: defer"]
    print(
        f"defer: carried {defer_totals.deferred_tokens:,} tokens, dropped {defer_totals.truncated_tokens}, "
        f"tail contexts kept plain {defer_totals.tail_plain_contexts}, "
        f"no-room contexts {defer_totals.no_room_contexts}; "
        f"kept == stream: {defer_totals.kept_tokens == defer_totals.stream_tokens}"
    )
    gaps = distances(results["UtK, overflow: truncate"][0])
    print(
        f"\ndependency distance, end of chunk c → start of chunk c + 1 ({len(gaps):,} pairs): median "
        f"{np.median(gaps):,.0f}, p90 {np.percentile(gaps, 90):,.0f}, mean {gaps.mean():,.0f}, max {gaps.max():,} "
        f"tokens (plain packing: 0); share of the context: median {np.median(gaps) / size:.1%}"
    )

    subset = docs[: args.stage_docs]
    ranked = [
        {"id": doc_id, "text": text, "url": None, "source": "bench", "metadata": {}, "order_rank": rank}
        for rank, (doc_id, text) in enumerate(texts[: args.stage_docs])
    ]
    subset_tokens = sum(len(i) + 1 for _, i in subset)
    print(
        f"\nwired pack stage (Beam, in-memory runner, 1 worker; tokenises its input): {len(ranked):,} documents, "
        f"{subset_tokens:,} stream tokens"
    )
    print(f"{'stage config':<26}{'contexts':>9}{'seconds':>9}{'k tok/s':>9}{'vs concat':>10}  same totals as core")
    stage_runs = {
        "concat": PackConfig(mode="concat", context_tokens=args.context_tokens),
        "utk, truncate": PackConfig(mode="utk", context_tokens=args.context_tokens),
        "utk, defer": PackConfig(mode="utk", context_tokens=args.context_tokens, utk={"overflow": "defer"}),
    }
    concat_s = None
    for name, config in stage_runs.items():
        result, seconds = run_stage(config, ranked)
        concat_s = concat_s or seconds
        same = "-"
        if config.mode == "utk" and config.utk.overflow == "truncate":  # one bundle: the core packer's
            _, core, _ = pack(config.utk, special, tokenizer.encode, subset, args.context_tokens)
            expected = utk_summary(core, config.utk, special, seed=0, context_tokens=args.context_tokens)
            (record,) = result["summary"]
            same = str(all(record[k] == v for k, v in expected.items()))
        print(
            f"{name:<26}{result['contexts']:>9,}{seconds:>9.1f}{subset_tokens / seconds / 1e3:>9.1f}"
            f"{seconds / concat_s:>9.2f}×  {same}"
        )


if __name__ == "__main__":
    main()
