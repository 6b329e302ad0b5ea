"""The ``hf_checkpoint`` scorer backend: a local ``transformers`` sequence-classification checkpoint.

For reference modes (QuRater, DataMan, … checkpoints the user downloaded); batched over
length-sorted texts so padding stays small, on CPU or GPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.core import exact
from winnow.core.embedders import torch_device
from winnow.core.models import file_digest, resolve_model_path
from winnow.stages.score.scorer import ScoreColumn, ScorerOptions, cut_texts


def _column_name(name: str, label: str) -> str:
    return f"{name}_{re.sub(r'[^0-9A-Za-z_]+', '_', str(label)).strip('_').lower()}"


class HFCheckpointScorer:
    """A local ``transformers`` sequence-classification checkpoint; one column per output logit."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "hf",
        columns: Sequence[str] | None = None,
        transform: str = "softmax",
        max_length: int = 512,
        batch_size: int = 32,
        device: str = "cpu",
        max_chars: int | None = None,
    ):
        import torch  # lazy: torch only for transformer models
        from transformers import (  # lazy: transformers only for reference-mode checkpoints
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        folder = resolve_model_path(path)
        self.device = torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
        self.model.eval().to(self.device)
        self._torch = torch
        n_out = int(self.model.config.num_labels)
        if columns is None:
            if n_out == 1:
                columns = [f"{name}_score"]
            else:
                labels = self.model.config.id2label
                columns = [_column_name(name, labels.get(i, i)) for i in range(n_out)]
        if len(columns) != n_out:
            raise ValueError(f"{len(columns)} column names for a model with {n_out} outputs")
        if transform not in ("softmax", "sigmoid", "identity"):
            raise ValueError(f"unknown transform {transform!r}")
        self.name = name
        self.transform = transform
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.version = f"hf:{file_digest(folder)}"
        self.columns = tuple(ScoreColumn(c) for c in columns)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        encoded = self.tokenizer(
            cut_texts(texts, self.max_chars), truncation=True, max_length=self.max_length, padding=False
        )["input_ids"]
        # Longest first, so each batch pads to a similar length and an out-of-memory error on
        # a GPU shows up in the first batch.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        logits = np.zeros((len(encoded), len(self.columns)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out = self.model(**batch).logits.float().cpu().numpy()
                logits[rows] = out
        if self.transform == "softmax":
            values = exact.softmax(logits)
        elif self.transform == "sigmoid":
            values = exact.sigmoid(logits)
        else:
            values = logits
        return {c.name: values[:, i].astype(np.float32) for i, c in enumerate(self.columns)}


class HFCheckpointOptions(ScorerOptions):
    """``backend: hf_checkpoint``: a local sequence-classification checkpoint directory."""

    backend: Literal["hf_checkpoint"]
    columns: list[str] | None = Field(
        None,
        description="Output column names; default `<name>_<label>` per label (list them here to have them in the "
        "schema).",
    )
    transform: Literal["softmax", "sigmoid", "identity"] = Field(
        "softmax", description="Function applied to the logits."
    )
    max_length: int = Field(256, gt=0, description="Tokens per document (the rest is cut).")
    device: str = Field("cpu", description="`cpu`, `cuda`, `cuda:N` or `auto`.")

    def build(self) -> HFCheckpointScorer:
        return HFCheckpointScorer(
            self.path,
            self.name,
            self.columns,
            self.transform,
            self.max_length,
            self.batch_size,
            self.device,
            self.max_chars,
        )

    def fields(self) -> list[pa.Field]:
        return [pa.field(name, pa.float32()) for name in self.columns or []]
