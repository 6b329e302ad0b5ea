"""MosaicML Streaming (MDS) shards, written by winnow itself.

``mosaicml-streaming`` 0.13.0 pins numpy < 2.2, xxhash < 4 and transformers < 5, which clash with
winnow's numpy 2.4.6, xxhash 4.1.0 and sentence-transformers 6.2.0, so its ``MDSWriter`` cannot run
in winnow's process. This module writes the same bytes its writer writes (format version 2, no
compression); the tests read them back with streaming's own reader in a separate virtualenv.

A shard is, little-endian: the sample count ``n`` (uint32), ``n + 1`` absolute byte offsets of the
samples (uint32), the shard's config as JSON (sorted keys), then the samples. A sample is the byte
size of each variable-size column (uint32, columns in name order) followed by each column's bytes.
Columns here: ``id`` (``str``: UTF-8) and ``tokens`` (``ndarray:<dtype>``: one byte
``ndim << 2 | shape-type code``, the shape in the smallest unsigned type that holds it, then the
values). ``index.json`` beside the shards lists them (``write_index_json``, once per dataset, after
every part is written). Each part is one shard named ``part-NNNNN.mds``; the index records its
SHA-256 so ``StreamingDataset(validate_hash="sha256")`` can check it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from winnow.core.tokens.index import FileInfo, TokenSequence, file_info

FORMAT_VERSION = 2
INDEX_BASENAME = "index.json"
HASHES = ["sha256"]
COLUMN_NAMES = ["id", "tokens"]  # sorted, as streaming orders columns
_SHAPE_TYPES = ((1 << 8, 0, np.uint8), (1 << 16, 1, np.uint16), (1 << 32, 2, np.uint32), (1 << 64, 3, np.uint64))
_MAX_SHARD_BYTES = (1 << 32) - 1  # offsets are uint32


def shard_config(dtype: np.dtype, size_limit: int | None) -> dict[str, Any]:
    """The config every shard embeds and ``index.json`` repeats. ``size_limit`` is informational
    for readers; it records the part target when that fits streaming's own bound (< 2^32)."""
    return {
        "column_encodings": ["str", f"ndarray:{np.dtype(dtype).name}"],
        "column_names": COLUMN_NAMES,
        "column_sizes": [None, None],
        "compression": None,
        "format": "mds",
        "hashes": HASHES,
        "size_limit": size_limit if size_limit is not None and size_limit < (1 << 32) else None,
        "version": FORMAT_VERSION,
    }


def encode_sample(sequence_id: str, tokens: np.ndarray) -> bytes:
    """One sample's bytes: sizes of the two variable columns, then ``id`` and ``tokens``."""
    n = tokens.shape[0]
    if n == 0:
        raise ValueError(f"MDS cannot store an empty ndarray (sequence {sequence_id!r} has no tokens)")
    code, shape_type = next((code, shape_type) for bound, code, shape_type in _SHAPE_TYPES if n < bound)
    id_bytes = sequence_id.encode("utf-8")
    token_bytes = bytes([(1 << 2) | code]) + np.array([n], dtype=shape_type).tobytes() + tokens.tobytes()
    return np.array([len(id_bytes), len(token_bytes)], dtype="<u4").tobytes() + id_bytes + token_bytes


class MDSPartWriter:
    """Writes one MDS shard from sequences given in training order.

    The header (count and offsets) precedes the samples, so samples are spooled (in memory up to
    64 MiB, then to a temporary file) and the shard is assembled in ``close``.
    """

    def __init__(self, root: Path, stem: str, dtype: np.dtype, size_limit: int | None = None):
        self.root = root
        self.path = root / f"{stem}.mds"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.config = shard_config(self.dtype, size_limit)
        self._config_bytes = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self._sizes: list[int] = []
        self._spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 (closed in close())

    def add(self, sequence: TokenSequence) -> None:
        sample = encode_sample(sequence.id, np.ascontiguousarray(sequence.tokens, dtype=self.dtype))
        self._spool.write(sample)
        self._sizes.append(len(sample))

    def close(self) -> list[FileInfo]:
        n = len(self._sizes)
        header_bytes = 4 + 4 * (n + 1) + len(self._config_bytes)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self._sizes, out=offsets[1:])
        offsets += header_bytes
        if offsets[-1] > _MAX_SHARD_BYTES:
            raise ValueError(f"MDS shard {self.path} would be {offsets[-1]} bytes; shards must stay under 4 GiB")
        with open(self.path, "wb") as out:
            out.write(np.array([n], dtype="<u4").tobytes())
            out.write(offsets.astype("<u4").tobytes())
            out.write(self._config_bytes)
            self._spool.seek(0)
            shutil.copyfileobj(self._spool, out, 1 << 22)
        self._spool.close()
        info = file_info(self.root, self.path)
        self.shard_entry = {
            **self.config,
            "raw_data": {"basename": self.path.name, "bytes": info.bytes, "hashes": {"sha256": info.sha256}},
            "samples": n,
            "zip_data": None,
        }
        return [info]


def write_index_json(root: Path, dataset_path: str, shard_entries: Iterable[dict[str, Any]]) -> FileInfo:
    """Write a dataset's ``index.json`` from its parts' shard entries (any order; sorted by name)."""
    shards = sorted(shard_entries, key=lambda entry: entry["raw_data"]["basename"])
    folder = root / dataset_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INDEX_BASENAME
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"shards": shards, "version": FORMAT_VERSION}, out, sort_keys=True)
    return file_info(root, path)


def read_mds_dataset(folder: Path) -> list[tuple[str, np.ndarray]]:
    """Our own reader (for checks without streaming installed): ``(id, tokens)`` of every sample."""
    index = json.loads((Path(folder) / INDEX_BASENAME).read_text())
    samples = []
    for shard in index["shards"]:
        raw = (Path(folder) / shard["raw_data"]["basename"]).read_bytes()
        dtype = np.dtype(shard["column_encodings"][1].split(":")[1])
        n = int(np.frombuffer(raw, "<u4", count=1)[0])
        offsets = np.frombuffer(raw, "<u4", count=n + 1, offset=4)
        for begin, end in itertools.pairwise(offsets):
            id_size, tokens_size = np.frombuffer(raw, "<u4", count=2, offset=int(begin))
            start = int(begin) + 8
            sequence_id = raw[start : start + id_size].decode("utf-8")
            encoded = raw[start + id_size : start + id_size + tokens_size]
            shape_code = encoded[0] & 3
            width = 1 << shape_code
            values = encoded[1 + width :]
            assert start + id_size + tokens_size == end
            samples.append((sequence_id, np.frombuffer(values, dtype=dtype)))
    return samples
