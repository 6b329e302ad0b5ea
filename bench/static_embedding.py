"""The shipped integer static embedding against the float model2vec table it replaces.

Pages: ``weborganizer-dclm`` (DCLM web pages), split in half by a hash of the URL. The *choose*
half is used only by ``--choose`` (which global int8 clip to ship); every figure printed without
it comes from the *report* half (``--docs`` pages, default 1,000).

* quality: cosine between each page's float model2vec embedding (``StaticModel.encode`` on the
  table winnow's ``distill_model2vec`` wrote, ``--float-model``) and the shipped encoder's
  (``encode``, and ``encode_quantized`` for ICP-style integer vectors); overlap of each page's 10
  nearest neighbours among the report pages under the two; how many of those neighbours share the
  page's WebOrganizer topic (a model-made label) under each;
* speed: documents per CPU-second on one thread (OMP/BLAS/tokenizers pinned to one), best of
  ``--repeats``, for the full page (512-token cut) and for the tagger's input (first 1,500
  characters), against ``StaticModel.encode`` and against the tokenizer call alone (the floor);
* determinism: the same pages encoded in batches of 1 and 256 and in reverse order, bytes compared.

    python bench/static_embedding.py [--corpora PATH] [--float-model DIR] [--docs 1000] [--choose]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy and tokenizers load
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.hashing import uniform  # noqa: E402
from winnow.core.static_embedding import MODEL_DIR, StaticEmbedding, load_static_embedding  # noqa: E402

TAGGER_CHARS = 1500


def default_float_model() -> Path:
    root = os.environ.get("WINNOW_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "winnow")
    return Path(root) / "model2vec-minilm-l6-v2-pca256"


def load_pages(corpora: Path, half: str, limit: int) -> list[dict]:
    """Up to ``limit`` pages of one URL-hash half, in file order."""
    pages = []
    with gzip.open(corpora / "weborganizer-dclm" / "docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            in_choose = uniform(doc.get("url") or doc["id"], "static-embedding-split", 0) < 0.5
            if (half == "choose") == in_choose and doc.get("text"):
                pages.append(doc)
                if len(pages) == limit:
                    break
    return pages


def float_encoder(folder: Path):
    from model2vec import StaticModel

    if not (folder / "config.json").exists():
        raise SystemExit(f"no model2vec table at {folder}: run winnow's distill_model2vec or pass --float-model")
    return StaticModel.from_pretrained(str(folder))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest rows (by inner product, self excluded) that a and b agree on."""

    def top(x: np.ndarray) -> np.ndarray:
        sims = x.astype(np.float64) @ x.astype(np.float64).T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    ta, tb = top(a), top(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


def topic_agreement(vectors: np.ndarray, topics: np.ndarray, k: int = 10) -> float:
    """Share of each page's k nearest pages that carry its (model-made) WebOrganizer topic."""
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float(np.mean(topics[nearest] == topics[:, None]))


def best_rate(fn: Callable[[list[str]], object], texts: list[str], repeats: int, batch: int = 256) -> float:
    """Documents per CPU-second of this (single-threaded) process: immune to other load on the machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for i in range(0, len(texts), batch):
            fn(texts[i : i + batch])
        best = min(best, time.process_time() - start)
    return len(texts) / best


def requantised(reference: np.ndarray, shipped: StaticEmbedding, clip: float, top: int = 127) -> StaticEmbedding:
    """The reference float table rounded to integers in [-top, top] with one global scale."""
    scale = clip * float(np.abs(reference).max()) / top
    dtype = np.int8 if top <= 127 else np.int16
    table = np.clip(np.rint(reference.astype(np.float64) / scale), -top, top).astype(dtype)
    tokenizer = Path(shipped.source) / "tokenizer.json"
    return StaticEmbedding(
        table, tokenizer.read_text(encoding="utf-8"), scale=scale, digest="sweep", source=shipped.source
    )


def quality(name: str, reference: np.ndarray, ours: np.ndarray) -> None:
    cos = cosines(reference, ours)
    print(
        f"{name:<34} cosine mean {cos.mean():.6f}  p1 {np.quantile(cos, 0.01):.6f}  min {cos.min():.6f}   "
        f"10-NN overlap {neighbour_overlap(reference, ours):.4f}"
    )


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=Path("/work/shared/corpora"))
    parser.add_argument("--float-model", type=Path, default=default_float_model())
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--choose", action="store_true", help="sweep the int8 clip on the choose half")
    args = parser.parse_args()

    shipped = load_static_embedding()
    reference_model = float_encoder(args.float_model)
    half = "choose" if args.choose else "report"
    pages = load_pages(args.corpora, half, args.docs)
    texts = [page["text"] for page in pages]
    tagger_texts = [text[:TAGGER_CHARS] for text in texts]
    print(f"{len(texts)} weborganizer-dclm pages ({half} half), mean {np.mean([len(t) for t in texts]):.0f} chars")
    print(f"shipped table {MODEL_DIR.name}: digest {shipped.digest}, {shipped.table.dtype} {shipped.table.shape}")
    reference = np.asarray(reference_model.encode(texts), dtype=np.float32)

    if args.choose:
        table = np.asarray(reference_model.embedding, dtype=np.float64)
        for clip in (1.0, 0.85, 0.7, 0.55, 0.4):
            quality(f"int8, scale {clip:.2f}·max/127", reference, requantised(table, shipped, clip).encode(texts))
        quality("int16, scale max/32767", reference, requantised(table, shipped, 1.0, 32767).encode(texts))
        return

    print("\n-- quality against float model2vec (StaticModel.encode) --")
    quality("encode (float32 unit)", reference, shipped.encode(texts))
    quality("encode_quantized (×127, integers)", reference, shipped.encode_quantized(texts))
    quality("encode_quantized (×1023, integers)", reference, shipped.encode_quantized(texts, 1023))
    quality("encode_quantized (×4087, integers)", reference, shipped.encode_quantized(texts, 4087))
    topics = np.array([page.get("topic") for page in pages])
    print(
        f"10-NN topic agreement: float model2vec {topic_agreement(reference, topics):.4f}, "
        f"shipped encode {topic_agreement(shipped.encode(texts), topics):.4f}, "
        f"encode_quantized ×127 {topic_agreement(shipped.encode_quantized(texts), topics):.4f}"
    )
    tag_ref = np.asarray(reference_model.encode(tagger_texts), dtype=np.float32)
    quality("encode, first 1,500 chars", tag_ref, shipped.encode(tagger_texts))

    print("\n-- determinism (sha256 of the float32 bytes) --")
    whole = shipped.encode(texts)
    singles = np.concatenate([shipped.encode([t]) for t in texts])
    reverse = shipped.encode(texts[::-1])[::-1]
    print(f"batch of {len(texts)}: {digest(whole)}  batches of 1: {digest(singles)}  reversed: {digest(reverse)}")
    m2v_singles = np.concatenate([reference_model.encode([t]) for t in texts]).astype(np.float32)
    differ = int(np.count_nonzero(np.any(m2v_singles != reference, axis=1)))
    print(f"model2vec StaticModel.encode: {differ}/{len(texts)} pages differ between one batch and batches of 1")

    print(f"\n-- speed, docs per CPU-second, one thread, batches of 256, best of {args.repeats} --")
    tokenizer = shipped.tokenizer
    for label, inputs in (("full page (512-token cut)", texts), ("tagger input (1,500 chars)", tagger_texts)):
        ours = best_rate(shipped.encode, inputs, args.repeats)
        theirs = best_rate(reference_model.encode, inputs, args.repeats)
        cut = [t[: shipped.max_chars] for t in inputs]
        floor = best_rate(lambda batch: tokenizer.encode_batch_fast(batch, add_special_tokens=False), cut, args.repeats)
        print(
            f"{label:<28} static {ours:8.0f} docs/s   model2vec {theirs:8.0f} docs/s   ratio {ours / theirs:.2f}   "
            f"tokenizer alone {floor:8.0f} docs/s"
        )

    files = [MODEL_DIR / name for name in ("table.npz", "tokenizer.json", "meta.json", "README.md")]
    size = sum(f.stat().st_size for f in files if f.exists())
    print(f"\npackage data {MODEL_DIR.relative_to(ROOT)}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
