"""Build ``tests/data/traps/weborganizer_long.jsonl.gz``: 300 long weborganizer-dclm pages for the
Copyright Traps tests (byte-identical on re-run).

    python scripts/build_trap_test_data.py [--corpora /work/shared/corpora]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

from winnow.core.hashing import h64

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "data" / "traps" / "weborganizer_long.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", default="/work/shared/corpora")
    args = parser.parse_args()
    with gzip.open(Path(args.corpora) / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    # Long enough for 500 bundled-tokenizer tokens, short enough to keep the file small.
    long_docs = [d for d in docs if 2_800 <= len(d["text"]) <= 6_000]
    chosen = sorted(long_docs, key=lambda d: h64(d["url"], "test-traps", 0))[:300]
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        for doc in chosen:
            row = {"id": doc["id"], "url": doc["url"], "text": doc["text"]}
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(buffer.getvalue())
    print(f"{TARGET}: {len(chosen)} docs, {len(buffer.getvalue()):,} bytes")


if __name__ == "__main__":
    main()
