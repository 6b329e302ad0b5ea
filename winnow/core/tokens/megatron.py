"""Megatron-Core ``IndexedDataset`` part files (``part-NNNNN.bin`` + ``part-NNNNN.idx``).

The ``.bin`` file is every sequence's token ids back to back. The ``.idx`` file is, little-endian:
the magic ``MMIDIDX\\x00\\x00``, version 1 (uint64), the dtype code (uint8), the sequence count
and the document count (uint64 each), then the sequence lengths (int32), the byte offset of each
sequence in ``.bin`` (int64) and the document indices (int64). Document indices are the sequence
numbers at which documents end, starting with 0 (``[0, 1, 2, …, n]`` when each sequence is its own
document), which is how Megatron's GPT dataset finds document boundaries.

Megatron-Core's dtype codes (``DType`` in ``megatron/core/datasets/indexed_dataset.py``, up to
0.16.1) have no uint32, so ids of a vocabulary over 65,536 are stored as int32 (code 4, the type
Megatron's own preprocessing uses for large vocabularies); ids stay far below 2^31.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from winnow.core.tokens.index import FileInfo, TokenSequence, file_info

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1

# Megatron-Core's codes, by numpy type.
DTYPE_CODES: dict[np.dtype, int] = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}

_MAX_LENGTH = np.iinfo(np.int32).max


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """The type Megatron files hold for ``dtype`` ids: uint16 as is, uint32 as int32."""
    dtype = np.dtype(dtype)
    if dtype == np.uint32:
        return np.dtype(np.int32)
    if dtype not in DTYPE_CODES:
        raise ValueError(f"Megatron-Core has no dtype code for {dtype}")
    return dtype


class MegatronPartWriter:
    """Writes one ``.bin``/``.idx`` pair from sequences given in training order.

    Tokens stream to ``.bin`` as they come; only the sequence lengths stay in memory (4 bytes a
    sequence) until ``close`` writes ``.idx``.
    """

    def __init__(self, root: Path, stem: str, dtype: np.dtype):
        self.root = root
        self.bin_path = root / f"{stem}.bin"
        self.idx_path = root / f"{stem}.idx"
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = storage_dtype(dtype)
        self._lengths: list[int] = []
        self._bin = open(self.bin_path, "wb")  # noqa: SIM115 (closed in close())

    def add(self, sequence: TokenSequence) -> None:
        tokens = sequence.tokens
        if tokens.shape[0] > _MAX_LENGTH:
            raise ValueError(f"a Megatron sequence holds at most {_MAX_LENGTH} tokens, got {tokens.shape[0]}")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._lengths.append(int(tokens.shape[0]))

    def close(self) -> list[FileInfo]:
        self._bin.close()
        lengths = np.asarray(self._lengths, dtype=np.int32)
        pointers = np.zeros(lengths.shape[0], dtype=np.int64)
        if lengths.shape[0] > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        document_indices = np.arange(lengths.shape[0] + 1, dtype=np.int64)
        with open(self.idx_path, "wb") as idx:
            idx.write(INDEX_MAGIC)
            idx.write(struct.pack("<Q", INDEX_VERSION))
            idx.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            idx.write(struct.pack("<Q", lengths.shape[0]))
            idx.write(struct.pack("<Q", document_indices.shape[0]))
            idx.write(lengths.astype("<i4").tobytes())
            idx.write(pointers.astype("<i8").tobytes())
            idx.write(document_indices.astype("<i8").tobytes())
        return [file_info(self.root, self.bin_path), file_info(self.root, self.idx_path)]


def read_megatron_part(prefix: Path) -> list[np.ndarray]:
    """Our own reader of a part (for checks without Megatron-Core installed): the sequences."""
    raw = Path(f"{prefix}.idx").read_bytes()
    if raw[:9] != INDEX_MAGIC:
        raise ValueError(f"{prefix}.idx: bad magic")
    (version,) = struct.unpack_from("<Q", raw, 9)
    (code,) = struct.unpack_from("<B", raw, 17)
    (count,) = struct.unpack_from("<Q", raw, 18)
    if version != INDEX_VERSION:
        raise ValueError(f"{prefix}.idx: version {version}")
    dtype = {c: d for d, c in DTYPE_CODES.items()}[code]
    lengths = np.frombuffer(raw, dtype="<i4", count=count, offset=34)
    pointers = np.frombuffer(raw, dtype="<i8", count=count, offset=34 + 4 * count)
    data = np.fromfile(f"{prefix}.bin", dtype=dtype)
    return [data[p // dtype.itemsize : p // dtype.itemsize + n] for p, n in zip(pointers, lengths, strict=True)]
