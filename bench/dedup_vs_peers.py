"""MinHash near-dedup: winnow on the local Beam runner vs datasketch 2.0 vs datatrove 0.10.1.

One run, one corpus: every real document of ../shared/corpora (cleaned of its own near
duplicates, see dedup_quality.py) plus seeded light edits (must go) and heavy edits (must
stay) until the uncompressed JSONL reaches --mb (default 100 MB); written once as .jsonl.gz
to bench/.cache. All tools use word 5-grams, 112 permutations as 14 bands × 8 rows, seed 1.

  * winnow run: the command a user runs, `winnow run --stages dedup` (default config: exact, then
    MinHash with text verification; the default local running mode, `auto`, every process counted).
  * winnow: MinHashDedup (default: poly64 hash, affine64, verification on) on FnApiRunner,
    in-memory, one worker; and winnow in datatrove-compatible mode (xxh64, mersenne61, no
    verification), whose signatures equal datatrove's with a whitespace tokenizer.
  * datasketch 2.0: MinHash (affine64, xxh64 of each shingle; shingles from winnow's reference
    normalisation) streamed through MinHashLSH(params=(14, 8)) + union-find, single process.
  * datatrove 0.10.1 (its own venv, bench/_peers.py): the four MinHash stages on
    LocalPipelineExecutor, once with its default English word tokenizer (spaCy) and once with
    a whitespace tokenizer.

Each tool runs in a child process; CPU is user+sys of that process tree (os.wait4), peak RSS
its largest process. MB are uncompressed JSONL bytes. Precision/recall of removed documents:
per family (an original and its light edits at exact Jaccard ≥ 0.8), all but one should go;
removing more than that, or any heavy edit or unrelated document, is a false positive; edits
at 0.5 ≤ J < 0.8 are not scored. Then a scaling table of winnow on 1×, 2×, 4× subsamples.

    python bench/dedup_vs_peers.py [--mb 100] [--scale-mb 25 | 0] [--skip-spacy] [--tools winnow-run,datasketch]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
CACHE = ROOT / "bench" / ".cache"
# Needed by datatrove's default English word tokenizer and its JSONL reader, and not pulled in
# by datatrove[processing] 0.10.1.
EXTRAS = ["spacy==3.8.18", "orjson==3.13.0"]

DATATROVE_SCRIPT = """
import glob, gzip, json, sys
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer


class WhitespaceTokenizer(WordTokenizer):
    def word_tokenize(self, text):
        return text.split()

    def sent_tokenize(self, text):
        return [text]

    def span_tokenize(self, text):
        return [(0, len(text))]


if __name__ == "__main__":
    data, work, tokenizer, out = sys.argv[1:5]
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1, hash_config=HashConfig(precision=64))
    extra = {"language": WhitespaceTokenizer()} if tokenizer == "whitespace" else {}
    def run(steps, tasks, name):
        LocalPipelineExecutor(steps, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{name}").run()
    run([JsonlReader(data), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config, **extra)], 1, "sigs")
    run([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)],
        config.num_buckets, "buckets")
    run([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=config)],
        1, "cluster")
    run([JsonlReader(data), MinhashDedupFilter(input_folder=f"{work}/remove_ids",
                                               exclusion_writer=JsonlWriter(f"{work}/removed")),
         JsonlWriter(f"{work}/kept")], 1, "filter")
    removed = []
    for path in glob.glob(f"{work}/removed/*"):
        with gzip.open(path, "rt") as handle:
            removed += [json.loads(line)["id"] for line in handle]
    with open(out, "w") as handle:
        json.dump(removed, handle)
"""


# --- corpus ----------------------------------------------------------------------------------


def build_corpus(target_mb: float, seed: int) -> tuple[Path, Path]:
    """(corpus .jsonl.gz, truth .json); cached."""
    import dedup_quality as dq

    path = CACHE / f"dedup_peers_{target_mb:g}mb_s{seed}.jsonl.gz"
    truth_path = path.with_suffix("").with_suffix(".truth.json")
    if path.exists() and truth_path.exists():
        return path, truth_path
    CACHE.mkdir(parents=True, exist_ok=True)
    pool = dq.real_documents()
    size = {d["id"]: len(json.dumps(d, ensure_ascii=False).encode()) / 1e6 for d in pool}
    # About 65 % of the bytes are distinct real documents, the rest seeded edits of some of them.
    share = min(1.0, 0.65 * target_mb / sum(size.values()))
    base = random.Random(seed).sample(pool, int(len(pool) * share))
    base_mb = sum(size[d["id"]] for d in base)
    origins = max(0, int((target_mb - base_mb) / (2.6 * base_mb / len(base))))  # 2.6 edits per origin
    docs, family, role = dq.build_corpus(origins, seed, base=base, light_per_origin=(1, 3), heavy_share=0.6)
    by_id = {d["id"]: d for d in docs}
    members = [x for x in family if x != family[x]]
    sets = dq.shingle_sets([by_id[x]["text"] for x in members] + [by_id[family[x]]["text"] for x in members])
    jaccard = {x: dq.jaccard(sets[i], sets[len(members) + i]) for i, x in enumerate(members)}
    truth = {"family": family, "role": role, "jaccard": jaccard}
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as handle:
        for d in docs:
            handle.write(json.dumps(d, ensure_ascii=False) + "\n")
    truth_path.write_text(json.dumps(truth))
    return path, truth_path


def subsample(path: Path, fraction: float) -> Path:
    """The first ``fraction`` of the (shuffled) corpus, as its own file."""
    out = path.with_name(path.name.replace(".jsonl.gz", f".x{fraction:g}.jsonl.gz"))
    if out.exists():
        return out
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=6) as handle:
        handle.writelines(lines[: int(len(lines) * fraction)])
    return out


def uncompressed_mb(path: Path) -> float:
    with gzip.open(path, "rb") as handle:
        return sum(len(chunk) for chunk in iter(lambda: handle.read(1 << 24), b"")) / 1e6


def score(removed: set[str], truth: dict[str, Any]) -> tuple[float, float]:
    family, role, jaccard = truth["family"], truth["role"], truth["jaccard"]
    groups: dict[str, list[str]] = {}
    ambiguous: set[str] = set()
    for doc_id, kind in role.items():
        if kind == "origin":
            groups.setdefault(doc_id, []).append(doc_id)
        elif kind in ("light", "heavy"):
            j = jaccard[doc_id]
            if kind == "light" and j >= 0.8:
                groups.setdefault(family[doc_id], []).append(doc_id)
            elif j >= 0.5:
                ambiguous.add(doc_id)
    in_group = {x for g in groups.values() for x in g}
    tp = fp = fn = 0
    for members in groups.values():
        hit = sum(1 for x in members if x in removed)
        tp += min(hit, len(members) - 1)
        fp += max(0, hit - (len(members) - 1))
        fn += len(members) - 1 - min(hit, len(members) - 1)
    fp += sum(1 for x in removed if x not in in_group and x not in ambiguous)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


# --- tools (each runs in a child process) ----------------------------------------------------


def worker_winnow(data: Path, out: Path, mode: str) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from winnow.beam.contract import ToDocuments
    from winnow.beam.read import ReadInputs
    from winnow.core.config import InputSpec
    from winnow.stages.dedup.config import MinHashConfig
    from winnow.stages.dedup.near import MinHashDedup

    config = MinHashConfig() if mode == "default" else MinHashConfig(hash="xxh64", scheme="mersenne61", verify=False)
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with tempfile.TemporaryDirectory() as tmp:
        with beam.Pipeline(options=options) as pipeline:
            batches = (pipeline | ReadInputs([InputSpec(paths=[str(data)])]))["kept"]  # winnow's own reader
            docs = batches | beam.ParDo(ToDocuments())  # as the run does before a stage that takes dicts
            result = docs | MinHashDedup(config)
            _ = result["removed"] | beam.Map(lambda d: d["id"]) | beam.io.WriteToText(f"{tmp}/removed")
        removed = [line for p in Path(tmp).glob("removed*") for line in p.read_text().splitlines()]
    out.write_text(json.dumps(removed))


def worker_datasketch(data: Path, out: Path) -> None:
    import xxhash
    from datasketch import MinHash, MinHashLSH

    from winnow.stages.dedup import minhash as mh

    def hashfunc(shingle: bytes) -> int:
        return xxhash.xxh64_intdigest(shingle)

    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    uf = mh.UnionFind()
    template = MinHash(num_perm=112, seed=1, hashfunc=hashfunc, scheme="affine64")
    with gzip.open(data, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            shingles = [s.encode("utf-8", "surrogatepass") for s in mh.shingles(doc["text"])]
            if not shingles:
                continue
            m = template.copy()
            m.update_batch(shingles)
            for other in lsh.query(m):
                uf.union(other, doc["id"])
            lsh.insert(doc["id"], m, check_duplication=False)
    removed = [node for node, root in uf.components().items() if node != root]
    out.write_text(json.dumps(removed))


def measure(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall, CPU (user+sys of the process tree) and peak RSS of one child process."""
    start = time.time()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if status != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{stderr[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def ensure_datatrove() -> Path:
    from _peers import datatrove_python

    python = datatrove_python()
    if subprocess.run([str(python), "-c", "import spacy, orjson"], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *EXTRAS], check=True)
    return python


def run_tool(name: str, data: Path, work: Path) -> tuple[dict[str, float], set[str]]:
    out = work / f"{name}.removed.json"
    me = [sys.executable, __file__, "--worker", name, "--data", str(data), "--out", str(out)]
    if name.startswith("datatrove"):
        python = ensure_datatrove()
        script = work / "datatrove_minhash.py"
        script.write_text(DATATROVE_SCRIPT)
        folder = work / f"{name}-input"
        folder.mkdir(exist_ok=True)
        target = folder / data.name
        if not target.exists():
            target.symlink_to(data)
        tokenizer = "whitespace" if name.endswith("whitespace") else "default"
        stats = measure([str(python), str(script), str(folder), str(work / name), tokenizer, str(out)])
    elif name == "winnow-run":
        # The command a user runs (default config's dedup section: exact, then MinHash with text
        # verification), on the default local running mode (auto); every process's CPU counts.
        target = work / "winnow-run-out"
        cli = "from winnow.cli.main import main; main()"
        env = {**os.environ, "WINNOW_CACHE": str(work / "winnow-cache")}
        command = [sys.executable, "-c", cli, "run", "--input", str(data), "--stages", "dedup"]
        stats = measure([*command, "--output", str(target), "--quiet"], env=env)
        import pyarrow.parquet as pq

        removed = pq.read_table(target / "removed", columns=["id", "reason"]).to_pylist()
        out.write_text(json.dumps([r["id"] for r in removed if r["reason"].startswith("dedup:")]))
        subprocess.run(["rm", "-rf", str(target)], check=True)
    else:
        stats = measure(me)
    return stats, set(json.loads(out.read_text()))


TOOLS = {
    "winnow-run": "winnow run --stages dedup (CLI)",
    "winnow": "winnow MinHashDedup (default)",
    "winnow-datatrove-mode": "winnow (xxh64, mersenne61, no verify)",
    "datasketch": "datasketch 2.0 MinHash+LSH+UF",
    "datatrove-whitespace": "datatrove 0.10.1, whitespace tok.",
    "datatrove-spacy": "datatrove 0.10.1, default en (spaCy)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="target uncompressed corpus size")
    parser.add_argument("--scale-mb", type=float, default=25.0, help="1× of the scaling table; 0 skips it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--skip-spacy", action="store_true", help="leave out datatrove with spaCy (slowest)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker.startswith("winnow"):
            worker_winnow(Path(args.data), Path(args.out), "default" if args.worker == "winnow" else "datatrove")
        else:
            worker_datasketch(Path(args.data), Path(args.out))
        return

    data, truth_path = build_corpus(args.mb, args.seed)
    truth = json.loads(truth_path.read_text())
    mb = uncompressed_mb(data)
    docs = len(truth["role"])
    print(
        f"corpus {data.name}: {docs} docs, {mb:.1f} MB JSONL ({data.stat().st_size / 1e6:.1f} MB .gz), "
        f"{sum(r == 'light' for r in truth['role'].values())} light / "
        f"{sum(r == 'heavy' for r in truth['role'].values())} heavy edits"
    )
    tools = [t for t in args.tools.split(",") if not (args.skip_spacy and t == "datatrove-spacy")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tools:
            stats, removed = run_tool(name, data, Path(tmp))
            precision, recall = score(removed, truth)
            rows.append((name, stats, len(removed), precision, recall))
            print(f"  done {name}: {stats['wall']:.1f}s", flush=True)
        base = next((r for r in rows if r[0] == "winnow-run"), rows[0])
        header = (
            f"{'tool':40s} {'wall s':>7s} {'CPU s':>7s} {'MB/CPU-s':>9s} {'peak RSS MB':>11s} "
            f"{'removed':>8s} {'P':>6s} {'R':>6s} {'CPU vs winnow run':>16s}"
        )
        print(header)
        for name, stats, count, precision, recall in rows:
            print(
                f"{TOOLS[name]:40s} {stats['wall']:7.1f} {stats['cpu']:7.1f} {mb / stats['cpu']:9.2f} "
                f"{stats['rss_mb']:11.0f} {count:8d} {precision:6.3f} {recall:6.3f} "
                f"{stats['cpu'] / base[1]['cpu']:15.2f}×"
            )

        peer = next((r for r in rows if r[0] == "datasketch"), None)
        if peer is not None and base[0] == "winnow-run":
            print(f"winnow run MB/CPU-s ÷ datasketch's: {peer[1]['cpu'] / base[1]['cpu']:.2f}×")
        if args.scale_mb <= 0:
            return
        print(f"\nscaling, winnow default (1× = {args.scale_mb:g} MB subsample of the corpus):")
        print(
            f"{'size':>6s} {'MB':>7s} {'wall s':>7s} {'CPU s':>7s} {'MB/CPU-s':>9s} "
            f"{'peak RSS MB':>11s} {'removed':>8s}"
        )
        for factor in (1, 2, 4):
            fraction = min(1.0, args.scale_mb * factor / mb)
            part = subsample(data, fraction) if fraction < 1.0 else data
            part_mb = uncompressed_mb(part)
            stats, removed = run_tool("winnow", part, Path(tmp))
            print(
                f"{factor:5d}× {part_mb:7.1f} {stats['wall']:7.1f} {stats['cpu']:7.1f} {part_mb / stats['cpu']:9.2f} "
                f"{stats['rss_mb']:11.0f} {len(removed):8d}"
            )


if __name__ == "__main__":
    main()
