"""I/O throughput: read → normalize → exact dedup → write, beside raw pyarrow on the same data.

Builds (once, cached in bench/.cache) a ~100 MB (uncompressed) JSONL.gz corpus from the
real text in ../shared/corpora, then in one run measures
  * the floor: pyarrow.json.read_json of the .gz + pyarrow.parquet.write_table (zstd),
  * winnow: `winnow run --stages normalize,dedup` (exact dedup; `--minhash` adds near-dedup) on the
    local FnApiRunner, writing Parquet shards, the removed documents, manifest and report, but no
    token shards (`output.tokens.formats: []`): the I/O path the floor is compared with,
  * winnow again with the default token output (every kept document tokenised into Megatron, MDS
    and Parquet token shards), to show what tokenisation adds,
and prints docs/s, MB/s and MB per CPU-second for each, and their ratios to the floor.

winnow runs in the default local running mode (`auto`: these light stages run in one in-memory
process); `--workers N` forces N worker processes (`multi_processing`) instead.

    python bench/io_throughput.py [--mb 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The checkout's sibling shared/ (main checkout) or the nearest one above (a worktree).
SHARED = next((p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").is_dir()), ROOT / "shared")
CACHE = ROOT / "bench" / ".cache"

# (file, text field) pairs of real prose in ../shared/corpora.
SOURCES = [
    ("weborganizer-dclm/docs.jsonl.gz", "text"),
    ("dclm-human-quality/quality_labels.jsonl.gz", "text"),
    ("lee-abc-news/docs.jsonl.gz", "text"),
    ("olmo-test-fixtures/c4_sample.jsonl.gz", "text"),
    ("dolma-test-fixtures/ccnet_en_head.jsonl.gz", "text"),
    ("nltk-corpora/brown.jsonl.gz", "text"),
    ("nltk-corpora/state_union.jsonl.gz", "text"),
    ("data-juicer-demos/docs.jsonl.gz", "text"),
]


def real_texts() -> list[str]:
    texts = []
    for name, field in SOURCES:
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line).get(field)
                if isinstance(text, str) and text.strip():
                    texts.append(text)
    return texts


def build_corpus(target_mb: int, seed: int = 0) -> Path:
    """Real documents, repeated with their paragraphs rotated so most copies differ; ~3% exact copies."""
    path = CACHE / f"io_corpus_{target_mb}mb_s{seed}.jsonl.gz"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    texts = real_texts()
    written = 0
    temp = path.with_suffix(".tmp")
    with gzip.GzipFile(temp, "wb", mtime=0, compresslevel=6) as handle:
        round_index = 0
        while written < target_mb * 1_000_000:
            for i, text in enumerate(texts):
                paragraphs = text.split("\n")
                shift = round_index % max(1, len(paragraphs))
                if rng.random() < 0.03:
                    shift = 0  # an exact copy of round 0
                body = "\n".join(paragraphs[shift:] + paragraphs[:shift])
                line = json.dumps({"id": f"r{round_index}-{i}", "text": body, "url": None}, ensure_ascii=False)
                data = (line + "\n").encode()
                handle.write(data)
                written += len(data)
                if written >= target_mb * 1_000_000:
                    break
            round_index += 1
    temp.rename(path)
    return path


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_raw(corpus: Path, out: Path) -> dict[str, float]:
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    table = pj.read_json(corpus)
    pq.write_table(table, out / "raw.parquet", compression="zstd", compression_level=3)
    return {"wall": time.perf_counter() - start_wall, "cpu": cpu_seconds() - start_cpu, "docs": table.num_rows}


def measure_winnow(corpus: Path, out: Path, workers: int | None, minhash: bool, tokens: bool) -> dict[str, float]:
    import shutil
    import subprocess

    config = out / "bench.yaml"
    shutil.rmtree(out / "winnow", ignore_errors=True)
    output: dict[str, object] = {"dir": str(out / "winnow"), "shards": {"target_bytes": 64_000_000}}
    if not tokens:
        output["tokens"] = {"formats": []}
    config.write_text(
        json.dumps(
            {
                "inputs": [{"paths": [str(corpus)]}],
                "output": output,
                "runner": {}
                if workers is None
                else {"direct_num_workers": workers, "direct_running_mode": "multi_processing"},
                "dedup": {"minhash": {"enabled": minhash}},
            }
        )
    )
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(
        [sys.executable, "-m", "winnow.cli.main", "run", "-c", str(config), "--stages", "normalize,dedup", "-q"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    manifest = json.loads((out / "winnow" / "manifest.json").read_text())
    return {"wall": wall, "cpu": cpu, "docs": manifest["counts"]["input"], "counts": manifest["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="uncompressed corpus size in MB")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the auto mode)")
    parser.add_argument("--minhash", action="store_true", help="also run MinHash near-dedup (off: exact dedup only)")
    args = parser.parse_args()

    corpus = build_corpus(args.mb)
    with gzip.open(corpus, "rb") as handle:
        mb = sum(len(chunk) for chunk in iter(lambda: handle.read(1 << 24), b"")) / 1e6
    print(f"corpus: {corpus.name}: {mb:.1f} MB uncompressed JSONL, {corpus.stat().st_size / 1e6:.1f} MB gzip")
    mode = "auto running mode" if args.workers is None else f"{args.workers} worker process(es)"
    print(f"machine: {os.cpu_count()} cores; winnow: {mode}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = measure_raw(corpus, Path(tmp))
        ours = measure_winnow(corpus, Path(tmp), args.workers, args.minhash, tokens=False)
        with_tokens = measure_winnow(corpus, Path(tmp), args.workers, args.minhash, tokens=True)
    dedup = "exact+MinHash dedup" if args.minhash else "exact dedup"
    rows = [
        ("pyarrow read_json + write_parquet (floor)", raw),
        (f"winnow read→normalize→{dedup}→write", ours),
        ("  the same + token output (default config)", with_tokens),
    ]
    print(f"{'pipeline':50s} {'docs':>8s} {'wall s':>8s} {'CPU s':>8s} {'docs/s':>9s} {'MB/s':>7s} {'MB/CPU-s':>9s}")
    for name, m in rows:
        print(
            f"{name:50s} {m['docs']:8d} {m['wall']:8.2f} {m['cpu']:8.2f} {m['docs'] / m['wall']:9.0f} "
            f"{mb / m['wall']:7.1f} {mb / m['cpu']:9.1f}"
        )
    print(f"ratio winnow/floor: wall {raw['wall'] / ours['wall']:.3f}, per CPU-second {raw['cpu'] / ours['cpu']:.3f}")
    print(
        f"  with token output: wall {raw['wall'] / with_tokens['wall']:.3f}, "
        f"per CPU-second {raw['cpu'] / with_tokens['cpu']:.3f}"
    )
    counts = ours["counts"]
    print(
        f"winnow counts: input {counts['input']}, kept {counts['kept']}, duplicate {counts['duplicate']}, "
        f"filtered {counts['filtered']}, rejected {counts['rejected']}"
    )


if __name__ == "__main__":
    main()
