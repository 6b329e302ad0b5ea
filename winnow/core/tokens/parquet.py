"""Parquet token parts: ``id``, ``tokens`` (list<uint16|uint32>), ``order_rank``, ``phase``.

For trainers that read Arrow (Hugging Face ``datasets``, Ray, Spark) rather than Megatron or MDS.
Rows are buffered into row groups of about ``ROW_GROUP_TOKENS`` tokens, so a reader can stream a
part without loading it whole; zstd keeps the files near the raw token size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.core.tokens.index import FileInfo, TokenSequence, file_info

ROW_GROUP_TOKENS = 1 << 24


def parquet_schema(dtype: np.dtype) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("tokens", pa.list_(pa.from_numpy_dtype(np.dtype(dtype))), nullable=False),
            pa.field("order_rank", pa.int64(), nullable=False),
            pa.field("phase", pa.string(), nullable=False),
        ]
    )


class ParquetPartWriter:
    """Writes one ``part-NNNNN.parquet`` from sequences given in training order."""

    def __init__(self, root: Path, stem: str, dtype: np.dtype, row_group_tokens: int = ROW_GROUP_TOKENS):
        self.root = root
        self.path = root / f"{stem}.parquet"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.schema = parquet_schema(self.dtype)
        self.row_group_tokens = row_group_tokens
        self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._reset()

    def _reset(self) -> None:
        self._ids: list[str] = []
        self._tokens: list[np.ndarray] = []
        self._ranks: list[int] = []
        self._phases: list[str] = []
        self._buffered = 0

    def add(self, sequence: TokenSequence) -> None:
        self._ids.append(sequence.id)
        self._tokens.append(np.asarray(sequence.tokens, dtype=self.dtype))
        self._ranks.append(sequence.order_rank)
        self._phases.append(sequence.phase)
        self._buffered += sequence.tokens.shape[0]
        if self._buffered >= self.row_group_tokens:
            self._flush()

    def _flush(self) -> None:
        if not self._ids:
            return
        lengths = np.fromiter((t.shape[0] for t in self._tokens), dtype=np.int32, count=len(self._tokens))
        offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(self._tokens) if self._tokens else np.zeros(0, self.dtype)
        value_type = self.schema.field("tokens").type.value_type
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))
        batch = pa.record_batch(
            [
                pa.array(self._ids, pa.string()),
                tokens,
                pa.array(self._ranks, pa.int64()),
                pa.array(self._phases, pa.string()),
            ],
            schema=self.schema,
        )
        self._writer.write_batch(batch)
        self._reset()

    def close(self) -> list[FileInfo]:
        self._flush()
        self._writer.close()
        return [file_info(self.root, self.path)]
