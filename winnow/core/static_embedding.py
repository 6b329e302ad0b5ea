"""A static (token-lookup) sentence embedding whose output is the same bits on every machine.

winnow used to distil a model2vec table from MiniLM on each machine and average its float rows
with numpy. Both steps leak the machine into the result: distillation runs torch and PCA (floats
depend on the CPU and the thread count), and model2vec's mean is a numpy reduction whose
summation order depends on how many same-length texts share a batch. This module ships the table
instead, as integers (``winnow/data/models/static-minilm/``, built once by
``scripts/build_static_embedding.py``), and keeps every step before the final rounding exact:

* a document's tokens are MiniLM's WordPiece ids of its first ``token_limit`` tokens (after a
  character pre-cut at ``token_limit × chars_per_token``, model2vec's own shortcut, so a long page
  is never tokenised in full), ``[UNK]`` dropped as model2vec does;
* its vector is the int64 sum of its int8 table rows, summed per document; integer addition is
  exact in any order, so the batch, the order and the CPU's SIMD width cannot change it;
* the unit vector is ``sum / sqrt(Σ sum²)``: the sum of squares is an exact int64, then one
  float64 sqrt and one float64 division (both correctly rounded by IEEE 754 on every CPU) and a
  single rounding to float32. No BLAS and no numpy transcendental touches a value.

``encode_quantized`` rounds unit vectors to integers (≤ ``scale`` in magnitude, as float32) so that
inner products between them, in FAISS or any BLAS, are exact: every partial sum is an integer
below 2^24. Only numpy and tokenizers are needed at run time.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from winnow.core.memo import memoised_batch_values

MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "models" / "static-minilm"
TABLE_FILE = "table.npz"  # one array, "table", deflated (5.9 MB instead of 7.8)
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
DEFAULT_TOKEN_LIMIT = 512  # model2vec's default max_length
WORD_MEMO_LIMIT = 1 << 19  # distinct words remembered per process (~60 MB) before the memo starts over
CHUNK_MEMO_LIMIT = 1 << 18  # distinct space-separated chunks remembered per process (~50 MB)


def files_digest(folder: str | Path = MODEL_DIR) -> str:
    """sha256 (first 16 hex) of the files that determine the output: the table and the tokenizer."""
    folder = Path(folder)
    return _digest({name: (folder / name).read_bytes() for name in (TABLE_FILE, TOKENIZER_FILE)})


def _digest(files: dict[str, bytes]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        hasher.update(f"{name}\0{len(data)}\0".encode())
        hasher.update(data)
    return hasher.hexdigest()[:16]


def _valid_utf8(text: str) -> str:
    # A lone surrogate (possible in Python str read with surrogateescape) cannot cross into Rust;
    # it becomes U+FFFD, which the tokenizer maps to [UNK], which is then dropped.
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class StaticEmbedding:
    """An integer token table plus MiniLM's WordPiece tokenizer; see the module docstring.

    ``token_limit`` (default 512, model2vec's) is a parameter because callers cut texts differently
    (the tagger's own 1,500-character cut usually binds first); ``chars_per_token`` sets the
    character pre-cut (the shipped value is model2vec's: the median length of a vocabulary string).
    """

    def __init__(
        self,
        table: np.ndarray,
        tokenizer_json: str,
        *,
        scale: float,
        digest: str,
        token_limit: int = DEFAULT_TOKEN_LIMIT,
        chars_per_token: int = 6,
        source: str = "",
    ):
        from tokenizers import Tokenizer  # lazy: tokenizers only when a tokenizer is loaded

        if table.ndim != 2 or table.dtype.kind != "i" or table.dtype.itemsize > 2:
            raise ValueError(f"expected an int8/int16 [vocab, dim] table, got {table.dtype} {table.shape}")
        peak = max(1, abs(int(table.min())), abs(int(table.max())))
        # Σ sum² must stay an exact int64 (at int8 and 256 dims: up to ~1.49M tokens).
        if token_limit < 1 or table.shape[1] * (token_limit * peak) ** 2 >= 1 << 63:
            raise ValueError(f"token_limit {token_limit} is < 1 or large enough to overflow int64 sums of squares")
        self.table = np.ascontiguousarray(table)
        self._narrow = np.dtype(np.int16 if table.dtype.itemsize == 1 else np.int32)
        self._run = int(np.iinfo(self._narrow).max) // peak  # rows per overflow-free narrow sum
        self.scale = float(scale)  # float value of one integer step; the unit vectors do not depend on it
        self.digest = digest
        self.token_limit = int(token_limit)
        self.max_chars = int(token_limit) * int(chars_per_token)
        self.source = source
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()  # MiniLM's file pads to 128: a padded id would be summed
        self.tokenizer.enable_truncation(self.token_limit)
        if self.tokenizer.get_vocab_size() != len(self.table):
            raise ValueError(f"tokenizer has {self.tokenizer.get_vocab_size()} ids, table {len(self.table)} rows")
        self.unk_id = self.tokenizer.token_to_id("[UNK]")
        self._word_memo: dict[str, tuple[int, ...]] = {}
        self._chunk_memo: dict[str, tuple[int, ...]] = {}

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    # --- tokens ---------------------------------------------------------------------------------

    def _encodings(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's first ``token_limit`` ids, built from its space-separated chunks, each encoded once per process.

        A space (U+0020) is a hard boundary for the BERT pipeline: the normalizer works per character
        (NFD reorders only combining marks, never across a space; lower-casing is per character) and
        the pre-tokenizer splits there, so a text's ids are its chunks' ids end to end, and web text
        repeats its chunks. A chunk's ids are kept up to ``token_limit`` (truncated as the text's
        would be: only the first ``token_limit`` of the whole are used).
        """
        cut = [text[: self.max_chars] for text in texts]
        chunks = [text.split(" ") for text in cut]
        values = memoised_batch_values(
            list(itertools.chain.from_iterable(chunks)), self._chunk_memo, self._encode, CHUNK_MEMO_LIMIT
        )
        out, start, limit = [], 0, self.token_limit
        for parts in chunks:
            ids = itertools.chain.from_iterable(values[start : start + len(parts)])
            out.append(list(itertools.islice(ids, limit)))
            start += len(parts)
        return out

    def _encode(self, strings: list[str]) -> list[tuple[int, ...]]:
        """Each string's WordPiece ids (no special tokens). A lone surrogate cannot cross into Rust: the batch is
        then encoded with it as U+FFFD (``_valid_utf8``, a per-character change, so a chunk's ids do not depend
        on the batch), which becomes [UNK]."""
        try:
            encodings = self.tokenizer.encode_batch_fast(strings, add_special_tokens=False)
        except TypeError:
            encodings = self.tokenizer.encode_batch_fast([_valid_utf8(s) for s in strings], add_special_tokens=False)
        return [tuple(encoding.ids) for encoding in encodings]

    def _flat_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All documents' kept ids end to end (int64) and each document's count (int64)."""
        lists = self._encodings(texts)
        lengths = np.fromiter((len(ids) for ids in lists), dtype=np.int64, count=len(lists))
        flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lengths.sum()))
        if self.unk_id is None:
            return flat, lengths
        known = flat != self.unk_id
        if known.all():
            return flat, lengths
        owner = np.repeat(np.arange(len(lists)), lengths)
        return flat[known], np.bincount(owner[known], minlength=len(lists)).astype(np.int64)

    # --- words (the taggers' input) ---------------------------------------------------------------

    def _word_ids(self, words: Sequence[str]) -> list[tuple[int, ...]]:
        """Each word's WordPiece ids, tokenised alone, ``[UNK]`` dropped; memoised per process.

        A pure function of the word, so the memo changes no value, only the cost: the taggers
        tokenise each distinct word once per process instead of every page in full.
        """
        found = self._word_table(words)
        return [found[word] for word in words]

    def _word_table(self, words: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """Distinct word → its ids (``_word_ids``), one memo look-up per distinct word."""
        distinct = list(dict.fromkeys(words))
        ids = memoised_batch_values(distinct, self._word_memo, self._encode_words, WORD_MEMO_LIMIT)
        return dict(zip(distinct, ids, strict=True))

    def _encode_words(self, words: list[str]) -> list[tuple[int, ...]]:
        unk = self.unk_id
        return [tuple(i for i in ids if i != unk) if unk in ids else ids for ids in self._encode(words)]

    def word_sums(self, documents: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Exact int64 sums of the table rows of each document's words [n, dim], and token counts [n].

        A document's tokens are the WordPiece ids of its words in turn (each word tokenised alone,
        ``[UNK]`` dropped), cut to the first ``token_limit``. Callers pass words already split (the
        taggers' lower-cased ``\\w+`` words), so punctuation, which the full tokenizer would keep as
        tokens, is not part of this vector: it is a different input from ``sums``, not a faster route
        to the same one. The batch's distinct words are looked up once for all its documents.
        """
        limit = self.token_limit
        lookup = self._word_table(itertools.chain.from_iterable(documents)).__getitem__
        lists = [
            list(itertools.islice(itertools.chain.from_iterable(map(lookup, words)), limit)) for words in documents
        ]
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lengths.sum()))
        return self._sum_rows(flat, lengths), lengths

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's kept token ids (int64): first ``token_limit`` WordPiece ids, ``[UNK]`` dropped."""
        flat, counts = self._flat_ids(texts)
        return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []

    # --- vectors --------------------------------------------------------------------------------

    def sums(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Exact int64 sums of each text's table rows [n, dim] and its token counts [n]."""
        flat, counts = self._flat_ids(texts)
        return self._sum_rows(flat, counts), counts

    def _sum_rows(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(counts), self.dim), dtype=np.int64)
        table, step, narrow = self.table, self._run, self._narrow
        end = 0
        for doc, count in enumerate(counts.tolist()):
            start, end = end, end + count
            # Runs of ≤ ``step`` rows summed in a narrow integer type that cannot overflow (int16 for
            # int8 rows: 258 × 127 < 2^15), twice as fast as summing into int64 and just as exact.
            # Per document: a batched np.add.reduceat over axis 0 is ~40× slower in numpy 2.4.
            if count <= step:
                if count:
                    out[doc] = np.add.reduce(table[flat[start:end]], axis=0, dtype=narrow)
                continue
            for low in range(start, end, step):
                out[doc] += np.add.reduce(table[flat[low : min(low + step, end)]], axis=0, dtype=narrow)
        return out

    def _unit64(self, texts: Sequence[str]) -> np.ndarray:
        sums, _ = self.sums(texts)
        squares = (sums * sums).sum(axis=1)  # int64, exact (token_limit is checked for this)
        norms = np.sqrt(squares.astype(np.float64))  # exact int → float64 below 2^53; IEEE sqrt
        unit = np.zeros(sums.shape, dtype=np.float64)
        nonzero = squares > 0
        unit[nonzero] = sums[nonzero].astype(np.float64) / norms[nonzero, None]
        return unit

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 unit vectors [n, dim]; the zero vector for a text with no known token."""
        return self._unit64(texts).astype(np.float32)

    def encode_quantized(self, texts: Sequence[str], scale: int = 127) -> np.ndarray:
        """Unit vectors × ``scale`` rounded to integers (half to even), as float32 [n, dim].

        Inner products between such vectors are exact in float32 BLAS or FAISS, in any summation
        order: each product is an integer, and by Cauchy–Schwarz every partial sum is at most
        ‖q‖·‖r‖ ≤ (scale + ½√dim)² in magnitude (rounding moves a unit vector × scale by at most
        ½√dim), which must stay below 2^24. At dim 256 that allows scales up to 4087; 127 gives
        int8-sized values but costs neighbour agreement (see the README's figures).
        """
        if scale < 1 or (scale + 0.5 * math.sqrt(self.dim)) ** 2 >= 1 << 24:
            raise ValueError(f"scale must be ≥ 1 with (scale + ½√dim)² < 2^24 (dim {self.dim}), got {scale}")
        return np.rint(self._unit64(texts) * float(scale)).astype(np.float32)


def load_static_embedding_from(folder: str | Path, token_limit: int = DEFAULT_TOKEN_LIMIT) -> StaticEmbedding:
    """Read a table folder (``table.npz``, ``tokenizer.json``, ``meta.json``) and check its sha256s."""
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    files = {name: (folder / name).read_bytes() for name in (TABLE_FILE, TOKENIZER_FILE)}
    for name, data in files.items():
        expected = meta.get("sha256", {}).get(name)
        if expected != hashlib.sha256(data).hexdigest():
            raise ValueError(f"{folder / name} does not match the sha256 in {META_FILE} (damaged or replaced?)")
    with np.load(io.BytesIO(files[TABLE_FILE]), allow_pickle=False) as archive:
        table = archive["table"]
    if list(table.shape) != [meta["vocab_size"], meta["dim"]] or str(table.dtype) != meta["dtype"]:
        raise ValueError(f"{folder / TABLE_FILE}: {table.dtype} {table.shape} disagrees with {META_FILE}")
    if not math.isfinite(float(meta["scale"])):
        raise ValueError(f"{folder / META_FILE}: scale is not finite")
    return StaticEmbedding(
        table,
        files[TOKENIZER_FILE].decode("utf-8"),
        scale=float(meta["scale"]),
        digest=_digest(files),
        token_limit=token_limit,
        chars_per_token=int(meta["chars_per_token"]),
        source=str(folder),
    )


@lru_cache(maxsize=4)
def load_static_embedding(token_limit: int = DEFAULT_TOKEN_LIMIT) -> StaticEmbedding:
    """The shipped table, loaded once per process and shared by every stage that embeds."""
    return load_static_embedding_from(MODEL_DIR, token_limit)
