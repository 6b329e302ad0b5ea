"""Top-k soft labels of a small LM on packed contexts, for a trainer's distillation stage (docs/salt.md).

Soft labels depend on the exact context a token is trained in, so they are computed on the final
packed contexts, one Parquet row per position: the context id, the position, the k most probable
token ids (int32) and their log-probabilities (float16 by default), and the residual log-mass
``log(1 − Σ_top-k p)`` that a trainer needs to renormalise or to put the rest of the mass on an
"other" bucket. Row ``position = i`` is the small LM's distribution for the token at position i
given positions < i (after the model's BOS; without a BOS, position 0 has no row).

The small LM reads the run tokenizer's ids directly, so both tokenizers must give every token the
same id: ``check_tokenizer`` compares their vocabularies and fails before anything is scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from winnow.core.causal_lm import DEFAULT_THREADS, SMOLLM2, LogitsModel, vocab_fingerprint
from winnow.core.config import Section


class SoftLabelConfig(Section):
    """Top-k soft labels of the small LM on the final packed contexts (for a trainer's KD stage)."""

    enabled: bool = Field(False, description="Export soft labels (about 50 bytes per token before compression).")
    path: str = Field(SMOLLM2, description="The small LM, as in the `causal_lm` scorer.")
    gguf_file: str | None = Field(None, description="GGUF file name inside `path` when it holds several.")
    topk: int = Field(8, gt=0, description="Token ids and log-probs kept per position.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Storage type of the log-probs.")
    bos: str = Field("auto", description="Token put before every context, as in the `causal_lm` scorer.")
    phases: list[str] = Field(
        default_factory=lambda: ["kd"],
        description="Mix phases whose contexts are exported; empty: every context (also in runs without phases).",
    )
    batch_tokens: int = Field(8192, gt=0, description="Tokens per forward pass.")
    device: str = Field("cpu", description="`cpu`, `cuda`, `cuda:N` or `auto`.")
    threads: int = Field(DEFAULT_THREADS, gt=0, description="torch threads, fixed for reproducibility.")


class TokenizerMismatch(ValueError):
    """The small LM and the run tokenizer give tokens different ids."""


def soft_label_schema(dtype: str = "float16") -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            pa.field("context_id", pa.string()),
            pa.field("position", pa.int32()),
            pa.field("topk_ids", pa.list_(pa.int32())),
            pa.field("topk_logprobs", pa.list_(value)),
            pa.field("residual_logmass", value),
        ]
    )


def tokenizer_vocab(path: str | Path) -> dict[str, int]:
    """The token → id map of a ``tokenizers`` JSON file or a directory holding ``tokenizer.json``."""
    location = Path(path)
    if location.is_dir():
        location = location / "tokenizer.json"
    from tokenizers import Tokenizer  # lazy: tokenizers only when a tokenizer is loaded

    return dict(Tokenizer.from_str(location.read_text(encoding="utf-8")).get_vocab(with_added_tokens=True))


def check_tokenizer(model: LogitsModel, run_tokenizer: str | Path | dict[str, int]) -> str:
    """The shared vocabulary fingerprint, or ``TokenizerMismatch`` when the two differ."""
    vocab = run_tokenizer if isinstance(run_tokenizer, dict) else tokenizer_vocab(run_tokenizer)
    ours, theirs = model.tokenizer_fingerprint, vocab_fingerprint(vocab)
    if ours != theirs:
        raise TokenizerMismatch(
            f"the small LM's tokenizer ({ours}) differs from the run tokenizer ({theirs}); soft labels "
            "would point at the wrong tokens"
        )
    return ours


def soft_label_table(
    model: LogitsModel,
    contexts: Sequence[tuple[str, Sequence[int]]],
    k: int,
    *,
    dtype: str = "float16",
    run_tokenizer: str | Path | dict[str, int] | None = None,
) -> pa.Table:
    """One row per predicted position of every ``(context_id, token_ids)`` context.

    With ``run_tokenizer`` the vocabularies are compared first; a mismatch raises before scoring.
    """
    if run_tokenizer is not None:
        check_tokenizer(model, run_tokenizer)
    if k > model.vocab_size:
        raise ValueError(f"k = {k} exceeds the vocabulary ({model.vocab_size})")
    value_type = np.float16 if dtype == "float16" else np.float32
    first = 0 if model.bos_id is not None else 1
    columns: dict[str, list] = {name: [] for name in soft_label_schema(dtype).names}
    for (context_id, _ids), top in zip(contexts, model.top_k([list(c[1]) for c in contexts], k), strict=True):
        n = len(top.residual)
        columns["context_id"].extend([context_id] * n)
        columns["position"].extend(range(first, first + n))
        columns["topk_ids"].extend(top.ids.tolist())
        columns["topk_logprobs"].extend(top.logprobs.astype(value_type).tolist())
        columns["residual_logmass"].extend(top.residual.astype(value_type).tolist())
    return pa.Table.from_pydict(columns, schema=soft_label_schema(dtype))


def write_soft_labels(tables: Iterable[pa.Table], path: str | Path, *, model: LogitsModel, k: int) -> int:
    """Write soft-label tables to one Parquet file (zstd); returns the bytes written.

    The file's metadata records the model and k, so a trainer can refuse labels from another model.
    """
    writer: pq.ParquetWriter | None = None
    try:
        for table in tables:
            if writer is None:
                metadata = {b"winnow.soft_labels": json.dumps({"model": model.describe(), "k": k}).encode()}
                writer = pq.ParquetWriter(str(path), table.schema.with_metadata(metadata), compression="zstd")
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
    finally:
        if writer is not None:
            writer.close()
    return Path(path).stat().st_size if writer is not None else 0
