"""ICP ordering quality on weborganizer-dclm under the evaluation protocol: fit / choose / report.

Pages are split as ``bench/tagging_eval.py`` splits them (``winnow.core.evaluation.three_way_split``,
URL hash): *fit* trains the topic tagger the ``static+topic`` embedder reads, every choice (the
embedder, its topic weight, the peer's TF-IDF settings) is made on *choose*, and the figures come
from *report*, whose pages nothing was trained or chosen on (the shipped topic tagger was trained on
fit + choose). Texts first go through the ``normalize`` stage's defaults. Each split is ordered as
one cell (it is far below ``partition_below``), as the order stage would order a corpus that size:

* **quality**: the share of adjacent documents with the same WebOrganizer topic, divided by the
  share two random documents have (Σ n_t(n_t − 1) / N(N − 1)), the ICP figure of the README; the
  same for formats; and, as a check that does not use the labels the tagger learnt, the mean
  cosine of adjacent documents under MiniLM (all-MiniLM-L6-v2, a contextual model none of the
  candidates is) and under the static embedding;
* **candidates**: winnow's embedders (``static``, ``static+topic`` at several topic weights) with
  the paper traversal (min-degree start, k = 9) on the integer grid; the peer, scikit-learn TF-IDF
  cosine kNN (k = 9) with the same traversal, over a small grid of document-frequency cut-offs;
  MiniLM itself as a slow reference;
* **choice rule**: the winnow setting with the highest topic ratio on *choose* among those whose
  adjacent MiniLM cosine is at least the static embedding's (topic coherence may not be bought
  with unrelated neighbours); the peer's best setting on *choose*;
* **semantic dedup**: documents removed at each θ and the recall of the folder's 68 known
  near-duplicate pairs, over all 8,939 pages (no labels involved), and the report figure after the
  default θ;
* **speed**: embedding docs per CPU-second of this single-threaded process.

    python bench/ordering_quality.py [--corpora PATH] [--no-minilm] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import train_tagger  # noqa: E402  (the shipped topic recipe, retrained here on fit only)

from winnow.core.domains import TAXONOMIES  # noqa: E402
from winnow.core.evaluation import three_way_split  # noqa: E402
from winnow.core.hashing import h64  # noqa: E402
from winnow.core.static_embedding import load_static_embedding  # noqa: E402
from winnow.core.taggers import LinearTagger, labelled_examples  # noqa: E402
from winnow.stages.order import ordering  # noqa: E402
from winnow.stages.order.config import OrderConfig  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
SEED = 0
K = 9
TOPIC_WEIGHTS = (0.1, 0.2, 0.3, 0.5)
THETAS = (0.96, 0.97, 0.975, 0.98, 0.985, 0.99)  # θ_sem values the dedup sweep tries
TFIDF_GRID = {"min_df=1": (1, 1.0), "min_df=2,max_df=0.5": (2, 0.5), "min_df=2,max_df=0.9": (2, 0.9)}


def load_rows(corpora: Path) -> list[dict]:
    return train_tagger.read_rows(corpora)  # the normalize stage's defaults applied


def random_share(labels: np.ndarray) -> float:
    counts = np.bincount(labels).astype(np.float64)
    n = float(len(labels))
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def path_figures(path: Sequence[int], rows: np.ndarray, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Quality of an order (``path`` indexes ``rows``, rows of the corpus arrays in ``data``)."""
    ordered = rows[np.asarray(path, dtype=np.int64)]
    a, b = ordered[:-1], ordered[1:]
    out = {}
    for name in ("topic", "format"):
        labels = data[name]
        share = float(np.mean(labels[a] == labels[b]))
        out[f"{name}_share"] = share
        out[f"{name}_ratio"] = share / random_share(labels[ordered])
    for name in ("minilm", "static"):
        if name in data:
            vectors = data[name]
            out[f"{name}_adjacent_cosine"] = float(np.einsum("ij,ij->i", vectors[a], vectors[b]).mean())
    return out


def grid_order(vectors: np.ndarray, ids: list[str], theta: float | None = None) -> ordering.CellOrder:
    return ordering.order_cell(vectors, ids, K, "paper", theta, seed=SEED)


def tfidf_order(texts: list[str], ids: list[str], min_df: int, max_df: float) -> list[int]:
    """The peer: scikit-learn TF-IDF (sublinear TF, IDF of this set) cosine kNN + the paper traversal."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    matrix = TfidfVectorizer(sublinear_tf=True, min_df=min_df, max_df=max_df).fit_transform(texts)
    n = len(ids)
    sims = np.full((n, K), -np.inf)
    idx = np.full((n, K), -1, dtype=np.int64)
    for start in range(0, n, 1000):
        block = (matrix[start : start + 1000] @ matrix.T).toarray()
        for row in range(len(block)):
            block[row, start + row] = -np.inf
        top = np.argsort(-block, axis=1, kind="stable")[:, :K]
        idx[start : start + len(block)] = top
        sims[start : start + len(block)] = np.take_along_axis(block, top, axis=1)
    return ordering.paper_order(ordering.Graph.from_knn(sims, idx), ids, SEED)


def cached_array(name: str, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"ordering-{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy"
    if path.exists():
        return np.load(path)
    array = build()
    np.save(path, array)
    return array


def minilm_vectors(texts: list[str]) -> np.ndarray:
    import torch

    from winnow.core.embedders import MiniLMEncoder

    torch.set_num_threads(1)
    encoder = MiniLMEncoder(max_length=256)
    return np.concatenate([encoder.encode(texts[i : i + 128]) for i in range(0, len(texts), 128)])


def fit_only_topic_tagger(rows: list[dict], parts: np.ndarray) -> Path:
    """The shipped topic recipe trained on *fit* alone (for choices on *choose*), cached by the sources."""
    sources = b"".join((ROOT / p).read_bytes() for p in ("scripts/train_tagger.py", "winnow/core/taggers.py"))
    path = CACHE / f"topic-tagger-fit-{hashlib.sha256(sources).hexdigest()[:12]}.zip"
    if not path.exists():
        fit_rows = [row for row, part in zip(rows, parts, strict=True) if part == "fit"]
        data = labelled_examples(fit_rows, TAXONOMIES["topic"], label_field="topic_id", weight_field="topic_confidence")
        spec, c, weighting, folds = train_tagger.choice_grid("topic")[train_tagger.CHOSEN["topic"]]
        assert (c, weighting, folds) == (4.0, "confidence", 0), "the fit-only tagger must use the shipped recipe"
        tagger = LinearTagger.fit("topic", TAXONOMIES["topic"], data.texts, data.urls, data.targets, data.weights, spec)
        CACHE.mkdir(parents=True, exist_ok=True)
        tagger.save(path)
    return path


def embed(encoder: Any, texts: list[str], urls: list[str | None]) -> tuple[np.ndarray, float]:
    """Vectors and docs per CPU-second (256-document batches, as the order stage embeds)."""
    started = time.process_time()
    chunks = []
    for i in range(0, len(texts), 256):
        if getattr(encoder, "reads_urls", False):
            chunks.append(encoder.encode(texts[i : i + 256], urls[i : i + 256]))
        else:
            chunks.append(encoder.encode(texts[i : i + 256]))
    return np.concatenate(chunks), len(texts) / (time.process_time() - started)


def evaluate_split(
    split: str, rows: list[dict], parts: np.ndarray, data: dict[str, np.ndarray], tagger_path: str, minilm: bool
) -> dict[str, Any]:
    selected = np.array(sorted(np.flatnonzero(parts == split), key=lambda i: rows[i]["id"]))
    ids = [rows[i]["id"] for i in selected]
    texts = [rows[i]["text"] for i in selected]
    urls = [rows[i]["url"] for i in selected]
    print(f"\n# {split}: {len(ids)} pages, topic tagger {Path(tagger_path).name}", flush=True)
    results: dict[str, Any] = {}

    def record(name: str, path: Sequence[int], extra: dict[str, Any] | None = None) -> None:
        figures = path_figures(path, selected, data) | (extra or {})
        results[name] = figures
        cosine = figures.get("minilm_adjacent_cosine")
        print(
            f"  {name:34s} topic {figures['topic_ratio']:6.2f}× (share {figures['topic_share']:.3f})  "
            f"format {figures['format_ratio']:5.2f}×  adjacent cosine: "
            + (f"MiniLM {cosine:.4f}, " if cosine is not None else "")
            + f"static {figures['static_adjacent_cosine']:.4f}"
            + "".join(f"  {k} {v}" for k, v in (extra or {}).items()),
            flush=True,
        )

    random_path = sorted(range(len(ids)), key=lambda i: h64(ids[i], "bench:random", SEED))
    record("random order", random_path)
    static, speed = embed(load_static_embedding(), texts, urls)
    started = time.process_time()
    record("winnow static", grid_order(static, ids).path, {"docs_per_s": round(speed)})
    static_seconds = time.process_time() - started
    for weight in TOPIC_WEIGHTS:
        encoder = ordering.TopicAwareEncoder(weight, tagger_path)
        vectors, speed = embed(encoder, texts, urls)
        record(f"winnow static+topic w={weight}", grid_order(vectors, ids).path, {"docs_per_s": round(speed)})
    for name, (min_df, max_df) in TFIDF_GRID.items():
        started = time.process_time()
        path = tfidf_order(texts, ids, min_df, max_df)
        record(f"tfidf-knn {name}", path, {"order_s": round(time.process_time() - started, 1)})
    if minilm:
        record("minilm (reference)", grid_order(data["minilm"][selected], ids).path)
    results["_static_order_s"] = static_seconds
    return results


def pick(results: dict[str, Any]) -> tuple[str, str]:
    """The choice rule of the module docstring, applied to *choose* results."""
    floor = results["winnow static"].get("minilm_adjacent_cosine", -1.0)
    winnow = [n for n in results if n.startswith("winnow ")]
    allowed = [n for n in winnow if results[n].get("minilm_adjacent_cosine", floor) >= floor] or ["winnow static"]
    best = max(allowed, key=lambda n: results[n]["topic_ratio"])
    peer = max((n for n in results if n.startswith("tfidf-knn")), key=lambda n: results[n]["topic_ratio"])
    return best, peer


def dedup_sweep(rows: list[dict], tagger_path: str, weight: float, corpora: Path) -> dict[str, Any]:
    ordered = sorted(range(len(rows)), key=lambda i: rows[i]["id"])
    ids = [rows[i]["id"] for i in ordered]
    texts = [rows[i]["text"] for i in ordered]
    urls = [rows[i]["url"] for i in ordered]
    lines = (corpora / "weborganizer-dclm" / "near_duplicate_pairs.jsonl").read_text().splitlines()
    pairs = [(json.loads(x)["id_a"], json.loads(x)["id_b"]) for x in lines if x.strip()]
    out = {}
    for name, encoder, thetas in (
        ("static", load_static_embedding(), THETAS),
        (f"static+topic w={weight}", ordering.TopicAwareEncoder(weight, tagger_path), THETAS),
    ):
        vectors, _ = embed(encoder, texts, urls)
        sweep = ordering.dedup_sweep(vectors, ids, thetas, pairs, k=K, seed=SEED)
        out[name] = [(p.theta, p.removed, round(p.removed_share, 4), p.known_pair_recall) for p in sweep]
        print(f"  {name:26s} " + "  ".join(f"θ {t}: {r} removed ({s:.1%}), recall {c:.2f}" for t, r, s, c in out[name]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--no-minilm", action="store_true", help="Skip MiniLM (the label-free check, ~8 docs/s).")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()
    rows = load_rows(args.corpora)
    parts = np.array(three_way_split([row.get("url") or row["id"] for row in rows]))
    data: dict[str, np.ndarray] = {
        "topic": np.array([row["topic_id"] for row in rows]),
        "format": np.array([row["format_id"] for row in rows]),
    }
    used = np.flatnonzero(parts != "fit")
    static = np.zeros((len(rows), 256), dtype=np.float32)
    static[used] = load_static_embedding().encode([rows[i]["text"] for i in used])
    data["static"] = static.astype(np.float64)
    if not args.no_minilm:
        texts = [f"{rows[i]['text'][:3000]}" for i in used]
        key = "minilm-256|" + "|".join(rows[i]["id"] for i in used)
        vectors = np.zeros((len(rows), 384), dtype=np.float64)
        vectors[used] = cached_array("minilm", key, lambda: minilm_vectors(texts))
        data["minilm"] = vectors
    fit_tagger = fit_only_topic_tagger(rows, parts)
    report: dict[str, Any] = {}
    report["choose"] = evaluate_split("choose", rows, parts, data, str(fit_tagger), not args.no_minilm)
    best, peer = pick(report["choose"])
    print(f"\n# picked on choose: {best}; peer: {peer}", flush=True)
    shipped = OrderConfig()
    report["report"] = evaluate_split("report", rows, parts, data, shipped.topic_tagger, not args.no_minilm)
    report["picked"] = {"winnow": best, "peer": peer}
    figures = report["report"]
    print(
        f"\n# report: winnow ({best}) {figures[best]['topic_ratio']:.2f}×, "
        f"static {figures['winnow static']['topic_ratio']:.2f}×, peer ({peer}) {figures[peer]['topic_ratio']:.2f}×",
        flush=True,
    )
    weight = float(best.split("w=")[1]) if "w=" in best else shipped.topic_weight
    # The order stage's default, with its semantic dedup, on the report pages.
    selected = np.array(sorted(np.flatnonzero(parts == "report"), key=lambda i: rows[i]["id"]))
    encoder = ordering.load_embedder(shipped.embedder, topic_weight=shipped.topic_weight)
    vectors, _ = embed(encoder, [rows[i]["text"] for i in selected], [rows[i]["url"] for i in selected])
    cell = grid_order(vectors, [rows[i]["id"] for i in selected], shipped.semantic_dedup)
    after = path_figures(cell.path, selected, data)
    report["report_default_config"] = after | {"semantic_duplicates": len(cell.duplicates)}
    print(
        f"# report, order stage defaults ({shipped.embedder}, w={shipped.topic_weight}, "
        f"θ_sem {shipped.semantic_dedup}): topic {after['topic_ratio']:.2f}×, "
        f"{len(cell.duplicates)} semantic duplicates removed",
        flush=True,
    )
    print("\n# semantic dedup over all pages (the shipped tagger; no labels involved)", flush=True)
    report["dedup"] = dedup_sweep(rows, shipped.topic_tagger, weight, args.corpora)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
