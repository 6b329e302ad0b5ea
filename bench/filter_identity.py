"""Check that this checkout's filter stage decides exactly as a reference checkout does.

Runs ``FilterStep`` of both trees (each in its own interpreter, this tree's first) over the same
documents under several configurations and compares, per document: kept or dropped, the rule,
the rule's measured value and threshold, the edited text, ``filter_lines_removed`` /
``filter_chars_removed``, annotate mode's flags, the counters, and the word tokens of the raw text.
Prints the documents compared and the differences (a speed-up must leave 0).

    git archive main winnow | tar -x -C /tmp/ref      # the reference tree
    python bench/filter_identity.py --reference /tmp/ref --docs 20000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / ".cache" / "pipeline_web_20000_s0.jsonl.gz"
SAMPLE = ROOT / "winnow" / "data" / "sample" / "web.jsonl.gz"
# (name, filter section, which document sets it runs on): the default everywhere, variants on fewer.
CONFIGS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("default", {"enabled": True}, ("corpus", "sample")),
    ("annotate", {"enabled": True, "mode": "annotate"}, ("corpus_head", "sample")),
    ("keep_paragraphs", {"enabled": True, "c4": {"keep_paragraphs": True}}, ("corpus_head", "sample")),
    ("no_c4", {"enabled": True, "c4": {"enabled": False}}, ("corpus_head", "sample")),
]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(docs) >= limit:
                break
            docs.append(json.loads(line))
    return docs


def document_sets(n_docs: int, n_head: int) -> dict[str, list[dict[str, Any]]]:
    corpus = read_jsonl(CORPUS, n_docs)
    return {"corpus": corpus, "corpus_head": corpus[:n_head], "sample": read_jsonl(SAMPLE)}


def dump(out: Path, n_docs: int, n_head: int) -> None:
    """This interpreter's tree: every outcome, pickled to ``out``."""
    from winnow.config import parse_config
    from winnow.stages.filter.rules import split_words
    from winnow.stages.filter.stage import FilterStep

    sets = document_sets(n_docs, n_head)
    results: dict[str, Any] = {}
    for name, section, set_names in CONFIGS:
        config = parse_config({"inputs": [{"paths": ["x.jsonl"]}], "filter": section}, origin="<identity>")
        counters: dict[str, int] = {}
        step = FilterStep(config.filter)
        step.setup(lambda key, n=1, counters=counters: counters.__setitem__(key, counters.get(key, 0) + n))
        rows = []
        seconds = 0.0
        for set_name in set_names:
            docs = sets[set_name]
            for doc in docs:
                doc.setdefault("source", "bench")
            for i in range(0, len(docs), 256):
                batch = docs[i : i + 256]
                start = time.process_time()
                outcomes = step(batch)
                seconds += time.process_time() - start
                for doc, outcome in zip(batch, outcomes, strict=True):
                    chain = step.chain_for(doc["source"])(doc["text"], doc.get("url"))
                    drop = chain.drop and (chain.drop.rule, chain.drop.value, chain.drop.threshold)
                    if isinstance(outcome, dict):
                        kept = (
                            outcome["text"],
                            outcome["filter_lines_removed"],
                            outcome["filter_chars_removed"],
                            outcome.get("filter_flags"),
                        )
                        rows.append((set_name, doc.get("id"), "kept", kept, drop))
                    else:
                        rows.append((set_name, doc.get("id"), "drop", outcome.rule, drop))
        results[name] = {"rows": rows, "counters": counters, "seconds": seconds}
    tokens = []
    for set_name in ("corpus", "sample"):
        for doc in sets[set_name]:
            digest = hashlib.sha256("\x00".join(split_words(doc["text"])).encode("utf-8", "surrogatepass")).hexdigest()
            tokens.append((set_name, doc.get("id"), digest))
    results["tokens"] = tokens
    out.write_bytes(pickle.dumps(results))


def run_tree(tree: Path, out: Path, n_docs: int, n_head: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--dump", str(out), "--docs", str(n_docs), "--head", str(n_head)]
    subprocess.run(cmd, env=env, check=True, cwd=tree)
    return pickle.loads(out.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="root of the reference tree (e.g. main, unpacked)")
    parser.add_argument("--docs", type=int, default=20_000, help="bench corpus documents for the default config")
    parser.add_argument("--head", type=int, default=5_000, help="bench corpus documents for the other configs")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        dump(args.dump, args.docs, args.head)
        return
    if args.reference is None:
        parser.error("--reference is required")
    with tempfile.TemporaryDirectory() as tmp:
        mine = run_tree(ROOT, Path(tmp) / "mine.pkl", args.docs, args.head)
        ref = run_tree(args.reference.resolve(), Path(tmp) / "ref.pkl", args.docs, args.head)
    total_diffs = 0
    for name, _, _ in CONFIGS:
        a, b = mine[name], ref[name]
        diffs = [(x, y) for x, y in zip(a["rows"], b["rows"], strict=True) if x != y]
        counter_diff = a["counters"] != b["counters"]
        total_diffs += len(diffs) + counter_diff
        kept = sum(row[2] == "kept" for row in a["rows"])
        print(
            f"{name:16s} {len(a['rows']):6d} documents, {kept:6d} kept, {len(diffs)} differences, "
            f"counters {'differ' if counter_diff else 'equal'}; "
            f"{len(a['rows']) / a['seconds']:.0f} vs reference {len(b['rows']) / b['seconds']:.0f} docs/CPU-s"
        )
        for x, y in diffs[:5]:
            print("  mine:", repr(x)[:300], "\n  ref: ", repr(y)[:300])
    token_diffs = sum(x != y for x, y in zip(mine["tokens"], ref["tokens"], strict=True))
    total_diffs += token_diffs
    print(f"split_words        {len(mine['tokens']):6d} texts, {token_diffs} differences")
    print(f"total differences: {total_diffs}")
    sys.exit(1 if total_diffs else 0)


if __name__ == "__main__":
    main()
