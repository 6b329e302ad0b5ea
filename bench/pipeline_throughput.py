"""Default pipeline throughput: this checkout vs a baseline commit, same corpus, same run.

The corpus (built once, cached in bench/.cache) is every real web page of ../shared/corpora
(weborganizer-dclm, dclm-human-quality, OLMo's C4 and Guardian samples, Dolma's CCNet and CC
documents) plus, to reach ``--docs`` (default 20,000), spliced pages: the first half of one real
page's paragraphs followed by the second half of another's, so every document is real web text and
few are near-duplicates of each other. A seeded 3 % are exact copies, as in a crawl.

Both versions run the same stages (default: normalize, langid, filter, dedup, score, tag: the
per-document and dedup stages of the default config; select, mix, order and pack are global steps
left out) with the sections of their own ``winnow/data/default.yaml``, through ``run_pipeline``
on the local runner, each in a child process. The baseline (default 2430c4c, the last commit before
the throughput work) is installed once from ``git archive`` into ``bench/.venvs/winnow-<commit>``,
a second virtualenv that takes its dependencies from this interpreter's site-packages. CPU is
user+sys of the child's whole process tree (Beam workers included), peak RSS its largest process.

Then, for this checkout only, each step's core on the same documents in one process with one
thread (``RAYON_NUM_THREADS=1``): documents per CPU-second per core, and with ``--profile`` the
functions that cost most in each step (cProfile, by own time).

    python bench/pipeline_throughput.py [--docs 20000] [--workers 1] [--baseline 2430c4c] [--profile]
    python bench/pipeline_throughput.py --steps-only --profile     # per-step figures only
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import json
import os
import pstats
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
VENVS = ROOT / "bench" / ".venvs"
SHARED = next((p / "shared" / "corpora" for p in ROOT.parents if (p / "shared" / "corpora").is_dir()), ROOT / "shared")
STAGES = "normalize,langid,filter,dedup,score,tag"
WEB_SOURCES = [
    "weborganizer-dclm/docs.jsonl.gz",
    "dclm-human-quality/quality_labels.jsonl.gz",
    "olmo-test-fixtures/c4_sample.jsonl.gz",
    "olmo-test-fixtures/paloma_c4_100_domains_guardian.jsonl.gz",
    "dolma-test-fixtures/ccnet_en_head.jsonl.gz",
    "dolma-test-fixtures/cc_documents.jsonl.gz",
]

# Runs in a child process with either version's interpreter: the same calls exist in both layouts.
DRIVER = """
import json, sys, yaml
from pathlib import Path
import winnow
try:
    from winnow.config import parse_config
    from winnow.run.execute import run_pipeline
except ImportError:  # the layout before winnow/core, winnow/beam, winnow/stages
    from winnow.schemas.config import parse_config
    from winnow.pipeline.run import run_pipeline
corpus, out, stages, workers, result_path = sys.argv[1:6]
stages = stages.split(",")
defaults = yaml.safe_load((Path(winnow.__file__).parent / "data" / "default.yaml").read_text())
sections = {name: defaults[name] for name in stages if name in defaults}
mode = "in_memory" if workers == "1" else "multi_processing"
config = parse_config({
    "inputs": [{"paths": [corpus]}],
    "output": {"dir": out, "report": {"enabled": False}},
    "runner": {"direct_num_workers": int(workers), "direct_running_mode": mode},
    **sections,
}, origin="<bench>")
result = run_pipeline(config, stages)
Path(result_path).write_text(json.dumps({"counts": result.manifest["counts"], "timings": result.timings,
                                         "version": getattr(winnow, "__version__", "?"), "path": winnow.__file__}))
"""


# --- corpus ----------------------------------------------------------------------------------


def real_pages() -> list[dict[str, Any]]:
    pages = []
    for name in WEB_SOURCES:
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as handle:
            for i, line in enumerate(handle):
                record = json.loads(line)
                text = record.get("text")
                if isinstance(text, str) and text.strip():
                    url = record.get("url")
                    pages.append({"id": f"{name.split('/')[0]}-{i}", "text": text, "url": url})
    return pages


def build_corpus(docs: int, seed: int = 0) -> Path:
    """Real pages, then spliced pages up to ``docs``; 3 % exact copies; seeded, cached."""
    path = CACHE / f"pipeline_web_{docs}_s{seed}.jsonl.gz"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pages = real_pages()
    out = list(pages)
    k = 0
    while len(out) < docs:
        a, b = rng.sample(pages, 2)
        first, second = a["text"].split("\n"), b["text"].split("\n")
        text = "\n".join(first[: max(1, len(first) // 2)] + second[len(second) // 2 :])
        out.append({"id": f"splice-{k}", "text": text, "url": a["url"]})
        k += 1
    for i in range(len(out)):
        if rng.random() < 0.03:
            source = out[rng.randrange(len(pages))]
            out[i] = {"id": out[i]["id"], "text": source["text"], "url": source["url"]}
    rng.shuffle(out)
    temp = path.with_suffix(".tmp")
    with gzip.GzipFile(temp, "wb", mtime=0) as handle:
        for doc in out:
            handle.write((json.dumps(doc, ensure_ascii=False) + "\n").encode())
    temp.rename(path)
    return path


def load_docs(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# --- the baseline's virtualenv -----------------------------------------------------------------


def baseline_python(commit: str) -> Path:
    """A virtualenv holding ``winnow`` as of ``commit`` (from ``git archive``), built once.

    Its dependencies come from this interpreter's site-packages through a ``.pth`` line: the
    baseline's pins are a subset of this checkout's, and nothing is downloaded."""
    import site
    import venv

    root = VENVS / f"winnow-{commit}"
    python = root / "bin" / "python"
    done = root / ".installed"
    if done.exists():
        return python
    venv.EnvBuilder(with_pip=False, clear=True).create(root)
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "winnow"], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(purelib, filter="data")
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "winnow_bench_deps.pth").write_text("\n".join(ours) + "\n")
    done.write_text(commit + "\n")
    return python


# --- whole runs ----------------------------------------------------------------------------------


def run_child(python: Path, corpus: Path, stages: str, workers: int, own_tree: bool) -> dict[str, Any]:
    """Run the driver with ``python``; CPU and peak RSS of its process tree (os.wait4)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if own_tree:
        env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory(prefix="winnow-pipeline-bench-") as tmp:
        driver = Path(tmp) / "driver.py"
        driver.write_text(DRIVER)
        result = Path(tmp) / "result.json"
        command = [str(python), str(driver), str(corpus), f"{tmp}/out", stages, str(workers), str(result)]
        start = time.time()
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - start
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if status != 0:
            raise RuntimeError(f"{python} failed:\n{stderr[-4000:]}")
        data = json.loads(result.read_text())
    data.update(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024)
    return data


# --- per-step figures (this checkout, one core) ----------------------------------------------------


def step_runners(docs: list[dict[str, Any]], unseen: list[dict[str, Any]]) -> list[tuple[str, Callable[[], None]]]:
    """(name, zero-argument callable doing the step over ``docs``) with every model loaded already.

    The score stage's DoFn row runs on ``unseen``, as many other documents: its per-process memos
    (token pieces, WordPiece chunks) are warm from the rows before, as in a long-running worker,
    but no page it scores has been seen, so the row does not flatter the memos."""
    import yaml

    from winnow.config import parse_config
    from winnow.core.taggers import load_tagger, tag_probabilities
    from winnow.core.tokenizer import load_tokenizer
    from winnow.stages.dedup.exact import text_hash
    from winnow.stages.dedup.minhash import MinHasher, ShingleHasher
    from winnow.stages.filter.stage import FilterStep
    from winnow.stages.langid.stage import LangIdStep
    from winnow.stages.normalize.stage import NormalizeStep
    from winnow.stages.pii.stage import PiiStep
    from winnow.stages.score.scorer import ScorerFactory, TokenizedTexts, score_tokenized
    from winnow.stages.score.stage import ScoreDoFn

    defaults = yaml.safe_load((ROOT / "winnow" / "data" / "default.yaml").read_text())
    sections = {k: defaults[k] for k in ("normalize", "langid", "filter", "pii", "dedup", "score", "tag")}
    config = parse_config({"inputs": [{"paths": ["x.jsonl"]}], **sections}, origin="<bench>")
    for doc in docs + unseen:
        doc.setdefault("source", "bench")
        doc.setdefault("metadata", {})
    texts = [doc["text"] for doc in docs]
    urls = [doc.get("url") for doc in docs]

    def batched(fn: Callable[[Any], Any], items: list[Any], size: int = 256) -> Callable[[], None]:
        return lambda: [fn(items[i : i + size]) for i in range(0, len(items), size)] and None

    def step(cls: Any, section: Any) -> Callable[[], None]:
        instance = cls(section)
        instance.setup(lambda name, n=1: None)
        return batched(instance, docs, 256)

    runners = [
        ("normalize", step(NormalizeStep, config.normalize)),
        ("langid", step(LangIdStep, config.langid)),
        ("filter", step(FilterStep, config.filter)),
        ("pii", step(PiiStep, config.pii)),
        ("dedup: exact hash", lambda: [text_hash(t, config.dedup.exact.key) for t in texts] and None),
    ]
    shingler, minhasher = ShingleHasher(), MinHasher(config.dedup.minhash.num_perm, config.dedup.minhash.seed)

    def signatures(chunk: list[str]) -> None:
        values, counts = shingler.hash_batch(chunk)
        keep = counts > 0
        if keep.any():
            import numpy as np

            minhasher.signatures_flat(values[np.repeat(keep, counts)], counts[keep])

    runners.append(("dedup: minhash signatures", batched(signatures, texts, 512)))
    tokenizer = load_tokenizer(config.tokenizer.path, config.tokenizer.eos_token)
    runners.append(("score: n_tokens", batched(tokenizer.count, texts)))
    # Each scorer on batches already tokenised with the run tokenizer (what it costs inside the stage,
    # where n_tokens has encoded the batch), then the stage's DoFn itself: n_tokens and every scorer.
    shared = [TokenizedTexts(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    for batch in shared:
        batch.token_ids(tokenizer)
    factories = []
    for entry in config.score.scorers:
        factory = ScorerFactory(entry.with_run_tokenizer(config.tokenizer))
        factories.append((entry.name, factory, entry.batch_size))
        scorer = factory()

        def score_shared(scorer: Any = scorer) -> None:
            for batch in shared:
                score_tokenized(scorer, batch)

        runners.append((f"score: {entry.name} (ids shared)", score_shared))
    stage = ScoreDoFn(config.tokenizer, factories)
    stage.setup()
    runners.append(("score: stage DoFn (all)", batched(lambda batch: list(stage.process(batch)), unseen)))
    taggers = {}
    for taxonomy in ("topic", "format"):
        entry = getattr(config.tag, taxonomy)
        taggers[taxonomy] = load_tagger(
            taxonomy, entry.mode, entry.path, use_url=entry.use_url, batch_size=entry.batch_size
        )

    def tag(start: int) -> None:  # as the tag stage runs them: one batch's feature pieces for both
        tag_probabilities(taggers, texts[start : start + 256], urls[start : start + 256])

    runners.append(("tag: topic + format", lambda: [tag(i) for i in range(0, len(texts), 256)] and None))
    return runners


def per_step(corpus: Path, limit: int, profile: bool, only: str = "") -> None:
    loaded = load_docs(corpus)
    docs, unseen = loaded[:limit], loaded[limit : 2 * limit]
    if len(unseen) < limit:
        raise SystemExit(f"--step-docs {limit}: the corpus has {len(loaded)} documents, the score row needs twice that")
    print(
        f"\nper step, this checkout, one core, {len(docs)} documents (raw corpus order;"
        f" the score DoFn row: the next {len(unseen)})"
    )
    print(f"{'step':28s} {'CPU s':>7s} {'docs/CPU-s':>11s}")
    groups: dict[str, float] = {}
    wholes: dict[str, float] = {}
    profiles = []
    for name, run in step_runners(docs, unseen):
        if only and not name.startswith(only):
            continue
        profiler = cProfile.Profile(time.process_time) if profile else None
        start = time.process_time()
        if profiler:
            profiler.enable()
        run()
        if profiler:
            profiler.disable()
            profiles.append((name, profiler))
        seconds = time.process_time() - start
        group = name.split(":")[0]
        if "stage DoFn" in name:  # the whole stage in one row: it stands for the stage, not its parts' sum
            wholes[group] = seconds
        else:
            groups[group] = groups.get(group, 0.0) + seconds
        print(f"{name:28s} {seconds:7.2f} {len(docs) / seconds:11.0f}", flush=True)
    groups.update(wholes)
    print(
        "per stage (sum of its steps, or its DoFn row):",
        ", ".join(f"{k} {len(docs) / v:.0f} docs/s" for k, v in groups.items()),
    )
    for name, profiler in profiles:
        print(f"\nprofile of {name} (own CPU time, top 8):")
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(8)
        lines = [line for line in stream.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
        print("\n".join(lines[start:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the corpus (at least)")
    parser.add_argument("--workers", type=int, default=1, help="1: in-memory runner; more: multi-processing")
    parser.add_argument("--stages", default=STAGES)
    parser.add_argument("--baseline", default="2430c4c", help="commit to compare against ('' to skip)")
    parser.add_argument("--step-docs", type=int, default=5000, help="documents for the per-step figures")
    parser.add_argument("--steps-only", action="store_true", help="only the per-step figures of this checkout")
    parser.add_argument("--profile", action="store_true", help="cProfile each step (own time, top functions)")
    parser.add_argument("--only", default="", help="per-step figures only of steps whose name starts with this")
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core per process, for both versions
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    corpus = build_corpus(args.docs)
    with gzip.open(corpus, "rb") as handle:
        mb = len(handle.read()) / 1e6
    print(f"corpus {corpus.name}: {args.docs} docs, {mb:.1f} MB JSONL; stages {args.stages}; workers {args.workers}")
    if not args.steps_only:
        rows = [("this checkout", run_child(Path(sys.executable), corpus, args.stages, args.workers, True))]
        if args.baseline:
            python = baseline_python(args.baseline)
            rows.append((f"baseline {args.baseline}", run_child(python, corpus, args.stages, args.workers, False)))
        print(f"{'version':22s} {'wall s':>7s} {'CPU s':>7s} {'docs/CPU-s':>10s} {'MB/CPU-s':>9s} {'RSS MB':>7s} kept")
        for name, row in rows:
            docs = row["counts"]["input"]
            print(
                f"{name:22s} {row['wall']:7.1f} {row['cpu']:7.1f} {docs / row['cpu']:10.1f} {mb / row['cpu']:9.2f} "
                f"{row['rss_mb']:7.0f} {row['counts']['kept']}"
            )
        for name, row in rows:
            print(f"  {name} step seconds (Beam, wall): {row['timings']}")
        if len(rows) == 2:
            print(f"ratio this checkout / baseline, docs per CPU-second: {rows[1][1]['cpu'] / rows[0][1]['cpu']:.2f}×")
    per_step(corpus, args.step_docs, args.profile, args.only)


if __name__ == "__main__":
    main()
