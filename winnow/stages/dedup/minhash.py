"""MinHash signatures and LSH banding for near-duplicate detection (docs/dedup.md#minhash-near-duplicates), Beam-free.

The pieces, in the order a document meets them:

* ``simplify_text``: datatrove 0.10.1's matching normalisation (lowercase, digit runs and
  decimals → ``0``, punctuation → space, whitespace collapsed, NFD with combining marks
  dropped). ``tokens`` splits it into words; a character of a script written without spaces
  (Chinese, Japanese, Thai, …) is a word of its own.
* ``ShingleHasher``: 64-bit hashes of every word (or character) n-gram of a batch of texts.
  ``poly64`` (default) runs normalisation, tokenisation and hashing as numpy operations over
  the whole batch; ``shingle_hash64`` is the same hash of one shingle string in plain Python.
  ``xxh64`` hashes each shingle string with xxhash instead (datatrove's choice): hashing is
  about 4× slower, the whole dedup stage about 1.8×.
* ``MinHasher``: one signature per document, vectorised with numpy over a whole batch. The
  default scheme ``affine64`` is datasketch 2.0's 64-bit scheme, bit for bit:
  ``datasketch.MinHash(num_perm, seed, hashfunc=<the shingle hash>, scheme="affine64")`` on
  the same shingles gives the same ``hashvalues``. ``mersenne61`` is datatrove's
  ``(a·x + b) mod (2^61 − 1)`` with datatrove's parameter draw: with ``xxh64`` shingles and
  a whitespace tokenizer it reproduces datatrove's signatures.
* ``band_hashes``: one 64-bit key per (document, band) for the LSH buckets.
* ``optimal_bands``: (bands, rows) for a target threshold, as datasketch's ``MinHashLSH`` picks them.
* ``UnionFind``: the single-process reference the distributed components are tested against.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache
from itertools import chain
from typing import Literal

import numpy as np
import xxhash

Scheme = Literal["affine64", "mersenne61"]
ShingleKind = Literal["word", "char"]
ShingleHash = Literal["poly64", "xxh64"]

# datatrove's punctuation set (utils/text.py, 0.10.1): ASCII and CJK punctuation plus C0/C1
# control characters other than \t and \n. Everything in it becomes a space.
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    chr(c) for lo, hi in ((0, 9), (11, 13), (13, 32), (127, 160)) for c in range(lo, hi)
)
# Digit runs with at most one decimal separator become one "0" (datatrove's NUMBERS_PATTERN;
# re's \d in str patterns is exactly the Unicode category Nd that datatrove's \p{Nd} names).
_NUMBERS = re.compile("\\d+(?:[.,\u060c\u066b\u2396\u2397\u2398]\\d+)?")
# Punctuation → space followed by collapsing whitespace is one substitution of the union.
_SEPARATORS = re.compile("[" + re.escape(PUNCTUATION) + r"\s]+")
# The ASCII part of that mapping as a byte table (safe on UTF-8: bytes ≥ 0x80 pass through).
_ASCII_TABLE = bytes(0x20 if c < 0x80 and chr(c) in PUNCTUATION else c for c in range(256))
# Scripts written without spaces between words: each character is one word token, so that
# word n-grams still mean something for Chinese, Japanese, Thai, Lao, Khmer and Myanmar.
_NO_SPACE_BMP = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
)
_NO_SPACE_SCRIPTS = _NO_SPACE_BMP + "\U00020000-\U0003134f"  # + CJK extensions B-H
# Characters whose NFD contains punctuation or whitespace (found by scanning every code point).
_ORDER_SENSITIVE = re.compile("[\u037e\u1fef\u1ffd\u2000\u2001\u2260\u226e\u226f\u2329\u232a]")
_NO_SPACE = re.compile(f"[{_NO_SPACE_BMP}]")  # BMP-only classes are fast: see _combining_marks
_NO_SPACE_WIDE = re.compile("[\U00020000-\U0003134f]")
_TOKENS = re.compile(f"[{_NO_SPACE_SCRIPTS}]|[^\\s{_NO_SPACE_SCRIPTS}]+")

# Planes 4–13 hold no assigned character and plane 14 only tags and variation selectors, so
# the per-code-point tables scan just these (5× faster; they are built once per process).
_ASSIGNED_RANGES = (range(0x31350), range(0xE0000, 0xE0200))

_MERSENNE_61 = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64(np.iinfo(np.uint64).max)
# Shingles per vectorised block: (num_perm × block) uint64 stays within a few MB of cache.
_BLOCK = 8192


def _char_class(codepoints: Iterable[int]) -> str:
    """A regex character class of ranges: sre scans ranges fast and thousands of singletons slowly."""
    points = sorted(set(codepoints))
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        lo, hi = re.escape(chr(points[i])), re.escape(chr(points[j]))
        parts.append(lo if i == j else f"{lo}-{hi}")
        i = j + 1
    return "[" + "".join(parts) + "]"


@lru_cache(maxsize=1)
def _combining_marks() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Characters of category Mn, as (BMP, beyond-BMP) patterns built on the first non-ASCII text.

    sre matches a BMP-only class with a bitmap but walks a range list once a class reaches
    past U+FFFF, 20× slower; the second pattern runs only on texts that have such characters.
    """
    points, chars = _assigned()
    marks = points[_is_mark(chars)].tolist()
    return (
        re.compile(_char_class(c for c in marks if c <= 0xFFFF) + "+"),
        re.compile(_char_class(c for c in marks if c > 0xFFFF) + "+"),
    )


def _strip_marks(text: str) -> str:
    bmp, wide = _combining_marks()
    text = bmp.sub("", text)
    return wide.sub("", text) if max(text, default=" ") > "\uffff" else text


def _has_no_space_script(text: str) -> bool:
    return bool(_NO_SPACE.search(text)) or (max(text, default=" ") > "\uffff" and bool(_NO_SPACE_WIDE.search(text)))


@lru_cache(maxsize=1)
def _non_ascii_separators() -> re.Pattern[str]:
    """Non-ASCII punctuation and whitespace: rare in most text, so few matches to replace."""
    points = [ord(c) for c in PUNCTUATION if ord(c) > 0x7F]
    points += [c for c in chain(*_ASSIGNED_RANGES) if c >= 0x80 and chr(c).isspace()]
    return re.compile(_char_class(points) + "+")


def simplify_text(text: str) -> str:
    """datatrove's ``simplify_text`` with its default settings, as a string.

    Matching text is normalised this hard so that case, punctuation, digit values,
    whitespace and accents cannot hide a duplicate (docs/dedup.md#minhash-near-duplicates).
    """
    text = _NUMBERS.sub("0", text.lower())
    text = _SEPARATORS.sub(" ", text).strip()
    if not text.isascii():
        text = _strip_marks(unicodedata.normalize("NFD", text))
    return text.strip()


def word_tokens(text: str) -> list[bytes]:
    """UTF-8 word tokens of ``simplify_text(text)``: whitespace-separated, plus one token per
    character of scripts written without spaces.

    Same result as splitting ``simplify_text``, about twice as fast: ASCII punctuation goes
    through a byte table and ASCII whitespace is left for ``bytes.split``, so the regexes
    only see the rare non-ASCII separators. Punctuation is replaced before NFD, as in
    datatrove, because NFD turns a few characters (U+037E, U+1FEF) into ASCII punctuation.
    """
    text = _NUMBERS.sub("0", text.lower())
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE).split()
    text = _non_ascii_separators().sub(" ", text)
    text = text.encode("utf-8", "surrogatepass").translate(_ASCII_TABLE).decode("utf-8", "surrogatepass")
    text = unicodedata.normalize("NFD", text)
    if not text.isascii():
        text = _strip_marks(text)
        if _has_no_space_script(text):
            return [token.encode("utf-8", "surrogatepass") for token in _TOKENS.findall(text)]
    return text.encode("utf-8", "surrogatepass").split()


def tokens(text: str) -> list[str]:
    """Reference word tokens: ``simplify_text`` split on spaces, one token per character of a
    script written without spaces. The batch code must agree with this; tests check it."""
    return _TOKENS.findall(simplify_text(text))


def shingles(text: str, ngram: int = 5, shingle: ShingleKind = "word") -> list[str]:
    """The shingle strings of one text (word n-grams joined by one space, or character n-grams)."""
    if shingle == "char":
        simple = simplify_text(text)
        return [simple[i : i + ngram] for i in range(len(simple) - ngram + 1)]
    words = tokens(text)
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


# --- poly64: the default shingle hash ----------------------------------------------------------
# A token's hash is a polynomial in its code points mod 2^64 (odd base, so each position's
# weight is invertible), finished with fmix64; a word shingle mixes its n token hashes with
# odd per-position weights, then fmix64 again. Unlike xxh64 of every shingle string (one
# Python call per shingle: 4× slower hashing, 1.8× slower stage), it vectorises over a whole
# batch with prefix sums. Persisted band keys depend on it, so these constants never change.
_POLY_BASE = 0x5851F42D4C957F2D
_POLY_BASE_INV = pow(_POLY_BASE, -1, 1 << 64)
_MASK64 = (1 << 64) - 1


def _fmix64_int(value: int) -> int:
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


_POSITION_WEIGHTS = [_fmix64_int(0x9E3779B97F4A7C15 + j) | 1 for j in range(64)]


def token_hash64(token: str) -> int:
    """poly64 hash of one string: fmix64(Σ ord(token[i])·B^i mod 2^64)."""
    total, power = 0, 1
    for char in token:
        total = (total + ord(char) * power) & _MASK64
        power = (power * _POLY_BASE) & _MASK64
    return _fmix64_int(total)


def shingle_hash64(shingle: str, shingle_kind: ShingleKind = "word") -> int:
    """poly64 hash of one shingle string, as ``ShingleHasher`` computes it in bulk.

    Pass it to ``datasketch.MinHash(hashfunc=...)`` to reproduce winnow's signatures.
    """
    if shingle_kind == "char":
        return token_hash64(shingle)
    total = 0
    for position, token in enumerate(shingle.split(" ")):
        total = (total + token_hash64(token) * _POSITION_WEIGHTS[position]) & _MASK64
    return _fmix64_int(total)


# Code-point classes for the vectorised path, one uint8 of flags per code point.
_DIGIT, _DECIMAL_SEP, _SEPARATOR, _MARK, _NO_SPACE_CHAR = 1, 2, 4, 8, 16
# Between documents of a batch: one past the last code point, so no text can contain it.
_SENTINEL = 0x110000
_SENTINEL_ARRAY = np.array([_SENTINEL], dtype=np.uint32)
_EMPTY_U64 = np.empty(0, dtype=np.uint64)
# Texts longer than this are shingled in pieces cut at whitespace (the ≤ n−1 shingles that
# straddle a cut are skipped), and a batch is processed this many code points at a time, so
# temporaries stay near 40 MB whatever the document or batch size.
_PIECE_CHARS = 1 << 20
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x31F0, 0x31FF),
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x3134F),
)  # fmt: skip


@lru_cache(maxsize=1)
def _assigned() -> tuple[np.ndarray, list[str]]:
    """Code points worth classifying and their characters; ``map`` over builtins keeps the
    per-character work in C (a Python loop here costs 0.3 s per worker process)."""
    points = np.concatenate([np.arange(r.start, r.stop) for r in _ASSIGNED_RANGES])
    return points, list(map(chr, points.tolist()))


def _is_mark(chars: list[str]) -> np.ndarray:
    return np.array(list(map(unicodedata.category, chars))) == "Mn"


@lru_cache(maxsize=1)
def _flags() -> np.ndarray:
    points, chars = _assigned()
    table = np.zeros(_SENTINEL + 1, dtype=np.uint8)
    # str.isdecimal is exactly what re's \d matches in a str pattern (category Nd).
    table[points[np.fromiter(map(str.isdecimal, chars), dtype=bool, count=len(chars))]] |= _DIGIT
    table[points[np.fromiter(map(str.isspace, chars), dtype=bool, count=len(chars))]] |= _SEPARATOR
    table[points[_is_mark(chars)]] |= _MARK
    for char in PUNCTUATION:
        table[ord(char)] |= _SEPARATOR
    for char in ".,\u060c\u066b\u2396\u2397\u2398":
        table[ord(char)] |= _DECIMAL_SEP
    for lo, hi in _NO_SPACE_RANGES:
        table[lo : hi + 1] |= _NO_SPACE_CHAR
    return table


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, count: int) -> np.ndarray:
    """base^0 … base^(count−1) mod 2^64, cached and grown by doubling (cumprod is slower)."""
    table = _POWERS.get(base)
    if table is None or len(table) < count:
        size = max(count, 1 << 16)
        table = np.empty(size, dtype=np.uint64)
        table[0] = 1
        filled, step = 1, np.uint64(base)
        with np.errstate(over="ignore"):
            while filled < size:
                width = min(filled, size - filled)
                np.multiply(table[:width], step, out=table[filled : filled + width])
                step = step * step
                filled += width
        _POWERS[base] = table
    return table[:count]


def _codepoints(text: str) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _collapse_numbers(points: np.ndarray, flags: np.ndarray) -> np.ndarray | None:
    """``_NUMBERS.sub("0", text)`` on code points, in place; returns the mask of characters to drop.

    The regex scans left to right: a digit run, then optionally one decimal separator and
    the next run. So along a chain of runs joined by single separators, runs pair up from
    the chain's start, (1st, 2nd), (3rd, 4th), …; each pair or lone run becomes one "0".
    """
    digits = (flags & _DIGIT) > 0
    if not digits.any():
        return None
    padded = np.zeros(len(points) + 2, dtype=bool)
    padded[1:-1] = digits
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    runs = len(starts)
    link = np.zeros(runs, dtype=bool)
    if runs > 1:
        link[:-1] = (starts[1:] == ends[:-1] + 1) & ((flags[ends[:-1]] & _DECIMAL_SEP) > 0)
    if link.any():
        index = np.arange(runs)
        chain_start = np.maximum.accumulate(np.where(np.concatenate(([True], ~link[:-1])), index, 0))
        merge = link & ((index - chain_start) % 2 == 0)
        absorbed = np.concatenate(([False], merge[:-1]))
        match_ends = np.where(merge, np.concatenate((ends[1:], ends[-1:])), ends)[~absorbed]
        match_starts = starts[~absorbed]
    else:
        match_starts, match_ends = starts, ends
    points[match_starts] = ord("0")
    flags[match_starts] = _DIGIT  # the digit may have been punctuation too (fullwidth "１")
    lengths = match_ends - match_starts - 1
    longer = lengths > 0
    if not longer.any():
        return None
    lengths, first = lengths[longer], match_starts[longer] + 1
    offsets = np.repeat(first - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    drop = np.zeros(len(points), dtype=bool)
    drop[np.arange(len(offsets)) + offsets] = True
    return drop


def _split_pieces(text: str) -> list[str]:
    if len(text) <= _PIECE_CHARS:
        return [text]
    pieces, lo = [], 0
    while len(text) - lo > _PIECE_CHARS:
        window = text[lo + _PIECE_CHARS // 2 : lo + _PIECE_CHARS]
        cut = max(window.rfind(" "), window.rfind("\n"))
        cut = lo + _PIECE_CHARS // 2 + cut if cut >= 0 else lo + _PIECE_CHARS
        pieces.append(text[lo:cut])
        lo = cut
    pieces.append(text[lo:])
    return pieces


class ShingleHasher:
    """64-bit shingle hashes for a batch of texts, as one flat array plus a count per text.

    ``hash="poly64"`` (default) runs the datatrove normalisation, tokenisation and hashing
    as numpy operations over the whole batch's code points; ``hash="xxh64"`` hashes each
    shingle string with xxh64 (datatrove's and datasketch's choice; 4× slower hashing).
    Both give exactly the shingles of ``shingles(text)``; tests check it on real corpora.
    """

    def __init__(self, ngram: int = 5, shingle: ShingleKind = "word", hash: ShingleHash = "poly64") -> None:
        if not 1 <= ngram <= len(_POSITION_WEIGHTS):
            raise ValueError(f"ngram must be in 1..{len(_POSITION_WEIGHTS)}")
        self.ngram = ngram
        self.shingle = shingle
        self.hash = hash

    def hash_text(self, text: str) -> np.ndarray:
        values, _ = self.hash_batch([text])
        return values

    def hash_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(hashes of every text's shingles in text order, concatenated; shingle count per text)."""
        pieces: list[str] = []
        owner: list[int] = []
        for index, text in enumerate(texts):
            for piece in _split_pieces(text):
                pieces.append(piece)
                owner.append(index)
        values: list[np.ndarray] = []
        piece_counts: list[np.ndarray] = []
        group: list[str] = []
        size = 0
        for piece in [*pieces, None]:
            if piece is None or (group and size + len(piece) > _PIECE_CHARS):
                if group:
                    hashed, counts = self._hash_group(group)
                    values.append(hashed)
                    piece_counts.append(counts)
                group, size = [], 0
            if piece is not None:
                group.append(piece)
                size += len(piece)
        counts = np.bincount(
            np.asarray(owner, dtype=np.int64),
            weights=np.concatenate(piece_counts) if piece_counts else None,
            minlength=len(texts),
        ).astype(np.int64)
        flat = np.concatenate(values) if values else np.empty(0, dtype=np.uint64)
        return flat, counts

    def _hash_group(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.hash == "xxh64":
            return self._xxh64(texts)
        if self.shingle == "char":
            return self._poly_chars(texts)
        return self._poly_words(texts)

    def _xxh64(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        hash64 = xxhash.xxh64_intdigest
        arrays = []
        for text in texts:
            if self.shingle == "char":
                char_grams = shingles(text, self.ngram, "char")
                grams: Iterable[bytes] = (gram.encode("utf-8", "surrogatepass") for gram in char_grams)
            else:
                words = word_tokens(text)
                grams = map(b" ".join, zip(*(words[i:] for i in range(self.ngram)), strict=False))
            arrays.append(np.fromiter(map(hash64, grams), dtype=np.uint64))
        counts = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        return (np.concatenate(arrays) if arrays else np.empty(0, dtype=np.uint64)), counts

    def _poly_chars(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts: list[np.ndarray] = []
        for text in texts:
            parts += [_codepoints(simplify_text(text)), _SENTINEL_ARRAY]
        points = np.concatenate(parts, dtype=np.uint32, casting="unsafe")
        n = self.ngram
        starts = np.arange(max(len(points) - n + 1, 0))
        boundary = np.concatenate(([0], np.cumsum(points == _SENTINEL)))
        valid = boundary[starts + n] == boundary[starts]
        starts = starts[valid]
        hashed = self._poly_spans(points, starts, starts + n)
        counts = np.bincount(boundary[starts], minlength=len(texts)).astype(np.int64)
        return hashed, counts

    @staticmethod
    def _poly_spans(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """token_hash64 of every span [start, end) of ``points``, via prefix sums."""
        with np.errstate(over="ignore"):
            prefix = np.empty(len(points) + 1, dtype=np.uint64)
            prefix[0] = 0
            np.multiply(points, _powers(_POLY_BASE, len(points)), out=prefix[1:])
            np.cumsum(prefix[1:], out=prefix[1:])
            return fmix64((prefix[ends] - prefix[starts]) * _powers(_POLY_BASE_INV, len(points))[starts])

    def _poly_words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        table = _flags()
        # datatrove replaces numbers and punctuation before NFD. NFD first gives the same result
        # (those steps only touch starters, which NFD never reorders) except for the characters
        # that decompose into punctuation, such as "≠" → "=" + U+0338; texts that have one and
        # need NFD (rare) take the reference path and are merged back in order.
        parts: list[np.ndarray] = []
        special: set[int] = set()
        for index, text in enumerate(texts):
            text = text.lower()
            if not text.isascii() and not unicodedata.is_normalized("NFD", text):
                if _ORDER_SENSITIVE.search(text):
                    special.add(index)
                    continue
                text = unicodedata.normalize("NFD", text)
            parts += [_codepoints(text), _SENTINEL_ARRAY]
        if special:
            return self._merge_special(texts, special)
        points = np.concatenate(parts, dtype=np.uint32, casting="unsafe")
        flags = table[points]
        drop = _collapse_numbers(points, flags)
        points[(flags & _SEPARATOR) > 0] = ord(" ")
        marks = (flags & _MARK) > 0
        drop = marks if drop is None else drop | marks
        if drop.any():
            points, flags = points[~drop], flags[~drop]
        return self._hash_tokenized(points, flags, len(texts))

    def _merge_special(self, texts: list[str], special: set[int]) -> tuple[np.ndarray, np.ndarray]:
        normal = [t for i, t in enumerate(texts) if i not in special]
        normal_values, normal_counts = self._poly_words(normal) if normal else (_EMPTY_U64, np.zeros(0, np.int64))
        parts: list[np.ndarray] = []
        for i in sorted(special):
            parts += [_codepoints(" ".join(tokens(texts[i]))), _SENTINEL_ARRAY]
        points = np.concatenate(parts, dtype=np.uint32, casting="unsafe")
        special_values, special_counts = self._hash_tokenized(points, _flags()[points], len(special))
        values, counts = [], np.zeros(len(texts), dtype=np.int64)
        offsets = {"n": 0, "s": 0}
        normal_iter, special_iter = iter(normal_counts.tolist()), iter(special_counts.tolist())
        for i in range(len(texts)):
            kind, source, count = (
                ("s", special_values, next(special_iter)) if i in special else ("n", normal_values, next(normal_iter))
            )
            values.append(source[offsets[kind] : offsets[kind] + count])
            offsets[kind] += count
            counts[i] = count
        return np.concatenate(values), counts

    def _hash_tokenized(self, points: np.ndarray, flags: np.ndarray, documents: int) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of simplified code points: tokens end at spaces and sentinels, and
        every character of a script without spaces is a token of its own."""
        in_token = (points != ord(" ")) & (points != _SENTINEL)
        before = np.concatenate(([True], ~in_token[:-1]))
        after = np.concatenate((~in_token[1:], [True]))
        no_space = (flags & _NO_SPACE_CHAR) > 0
        if no_space.any():
            before |= no_space | np.concatenate(([False], no_space[:-1]))
            after |= no_space | np.concatenate((no_space[1:], [False]))
        starts = np.flatnonzero(in_token & before)
        ends = np.flatnonzero(in_token & after) + 1
        token_hashes = self._poly_spans(points, starts, ends)
        doc = np.searchsorted(np.flatnonzero(points == _SENTINEL), starts)
        n = self.ngram
        count = len(token_hashes) - n + 1
        if count <= 0:
            return _EMPTY_U64, np.zeros(documents, dtype=np.int64)
        valid = doc[:count] == doc[n - 1 :]
        with np.errstate(over="ignore"):
            mixed = token_hashes[:count] * np.uint64(_POSITION_WEIGHTS[0])
            for j in range(1, n):
                mixed += token_hashes[j : j + count] * np.uint64(_POSITION_WEIGHTS[j])
            hashed = fmix64(mixed[valid])
        return hashed, np.bincount(doc[:count][valid], minlength=documents).astype(np.int64)


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection), datasketch 2.0's pre-mix for ``affine64``."""
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))


def permutations(num_perm: int, seed: int, scheme: Scheme = "affine64") -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) parameters, drawn exactly as the reference library of each scheme draws them."""
    gen = np.random.RandomState(seed)
    if scheme == "affine64":
        # datasketch 2.0 MinHash._init_permutations for affine64: odd a, any b.
        a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
        return a, b
    if scheme == "mersenne61":
        # datatrove MinhashDedupSignature.parameters: all a first, then all b.
        a = gen.randint(1, _MERSENNE_61, dtype=np.uint64, size=num_perm)
        b = gen.randint(0, _MERSENNE_61, dtype=np.uint64, size=num_perm)
        return a, b
    raise ValueError(f"unknown MinHash scheme {scheme!r}")


class MinHasher:
    """Computes MinHash signatures for batches of shingle-hash arrays.

    The whole batch is concatenated and processed in blocks of shingles laid out as
    (num_perm, block), so numpy does the permutations with a few vector operations per
    block and ``minimum.reduceat`` cuts the block back into documents.
    """

    def __init__(self, num_perm: int = 112, seed: int = 1, scheme: Scheme = "affine64") -> None:
        if num_perm < 1:
            raise ValueError("num_perm must be positive")
        self.num_perm = num_perm
        self.seed = seed
        self.scheme = scheme
        a, b = permutations(num_perm, seed, scheme)
        self._a = a.reshape(-1, 1)
        self._b = b.reshape(-1, 1)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """Signature of one document (uint64, length num_perm)."""
        return self.signatures([hashes])[0]

    def signatures(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures of a batch, shape (len(batch), num_perm); every array must be non-empty."""
        if len(batch) == 0:
            return np.empty((0, self.num_perm), dtype=np.uint64)
        counts = np.fromiter((len(h) for h in batch), dtype=np.int64, count=len(batch))
        return self.signatures_flat(np.concatenate([np.asarray(h, dtype=np.uint64) for h in batch]), counts)

    def signatures_flat(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures of documents whose shingle hashes lie back to back in ``values``."""
        if len(counts) == 0:
            return np.empty((0, self.num_perm), dtype=np.uint64)
        if counts.min() <= 0:
            raise ValueError("every document needs at least one shingle for a signature")
        if self.scheme == "affine64":
            values = fmix64(values)
        starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        out = np.full((self.num_perm, len(counts)), MAX_HASH, dtype=np.uint64)
        work = np.empty((self.num_perm, min(_BLOCK, len(values))), dtype=np.uint64)
        spare = np.empty_like(work) if self.scheme == "mersenne61" else None
        with np.errstate(over="ignore"):
            for lo in range(0, len(values), _BLOCK):
                hi = min(lo + _BLOCK, len(values))
                block = work[:, : hi - lo]
                np.multiply(self._a, values[lo:hi], out=block)
                np.add(block, self._b, out=block)
                if spare is not None:
                    block = self._mod_mersenne(block, spare[:, : hi - lo])
                first = int(np.searchsorted(starts, lo, side="right")) - 1
                last = int(np.searchsorted(starts, hi, side="left"))
                cuts = np.maximum(starts[first:last], lo) - lo
                mins = np.minimum.reduceat(block, cuts, axis=1)
                np.minimum(out[:, first:last], mins, out=out[:, first:last])
        return np.ascontiguousarray(out.T)

    @staticmethod
    def _mod_mersenne(block: np.ndarray, spare: np.ndarray) -> np.ndarray:
        """``block % (2^61 − 1)`` without a division: fold the top 3 bits onto the low 61."""
        np.right_shift(block, np.uint64(61), out=spare)
        np.bitwise_and(block, _MERSENNE_61, out=block)
        np.add(block, spare, out=block)
        np.subtract(block, _MERSENNE_61, out=spare)  # wraps to a huge value when block < p
        return np.minimum(block, spare, out=block)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band), shape (n, bands).

    Keys are persisted in the incremental index, so the construction is fixed: fold the
    band's rows into a state with a multiply and the fmix64 bijection, seeded by the row
    count. Two different bands collide with probability about 2^-64.
    """
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"{bands} bands × {rows} rows need more than {signatures.shape[1]} permutations")
    cut = signatures[:, : bands * rows].reshape(len(signatures), bands, rows)
    state = np.full(cut.shape[:2], np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(rows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            state = fmix64(state * np.uint64(0x100000001B3) ^ cut[:, :, row])
    return state


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of permutations whose minimum agrees: an unbiased estimate of Jaccard."""
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)


def exact_jaccard(a: Iterable[Hashable], b: Iterable[Hashable]) -> float:
    """Jaccard of two sets (0 when both are empty)."""
    set_a, set_b = set(a), set(b)
    union = len(set_a | set_b)
    return len(set_a & set_b) / union if union else 0.0


def shingle_set(hasher: ShingleHasher, text: str) -> np.ndarray:
    """The distinct shingle hashes of one text, sorted: the set MinHash estimates Jaccard over."""
    values, _ = hasher.hash_batch([text])
    return np.unique(values)


def set_similarity(member: np.ndarray, keeper: np.ndarray, measure: str = "jaccard") -> tuple[int, int]:
    """(shared shingles, denominator) of two sorted distinct hash arrays; similarity = shared / denominator.

    ``jaccard``: the union; ``containment``: the member's own set (how much of it the keeper holds).
    Integers, so a threshold test never depends on float rounding.
    """
    shared = len(np.intersect1d(member, keeper, assume_unique=True))
    denominator = len(member) if measure == "containment" else len(member) + len(keeper) - shared
    return shared, denominator


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(two documents share at least one band | Jaccard = s) = 1 − (1 − s^r)^b."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


def _integral(
    bands: int, rows: int, lo: float, hi: float, nodes: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """∫ P(candidate) over [lo, hi]; Gauss–Legendre with ≥ (degree+1)/2 nodes is exact here."""
    s = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    p = candidate_probability(s, bands, rows)
    return float(0.5 * (hi - lo) * np.dot(weights, p)), float(0.5 * (hi - lo) * np.dot(weights, 1.0 - p))


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive and false-negative areas.

    The same search as datasketch's ``MinHashLSH``: every b, r with b·r ≤ num_perm, error =
    fp_weight·∫₀ᵗ P + fn_weight·∫ₜ¹ (1 − P). The integrand is a polynomial of degree b·r, so
    Gauss–Legendre quadrature with num_perm/2 + 1 nodes integrates it exactly (no scipy).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 2)
    best, best_error = (0, 0), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp, _ = _integral(bands, rows, 0.0, threshold, nodes, weights)
            _, fn = _integral(bands, rows, threshold, 1.0, nodes, weights)
            error = fp * fp_weight + fn * fn_weight
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


class UnionFind:
    """Union by size with path compression; ``components`` labels each node by its minimum."""

    def __init__(self) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._size: dict[Hashable, int] = {}

    def find(self, node: Hashable) -> Hashable:
        parent = self._parent.setdefault(node, node)
        if parent == node:
            self._size.setdefault(node, 1)
            return node
        root = node
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[node] != root:
            self._parent[node], node = root, self._parent[node]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        if self._size[root_a] < self._size[root_b]:
            root_a, root_b = root_b, root_a
        self._parent[root_b] = root_a
        self._size[root_a] += self._size.pop(root_b)

    def components(self) -> dict[Hashable, Hashable]:
        """node → smallest node of its component."""
        groups: dict[Hashable, list[Hashable]] = {}
        for node in list(self._parent):
            groups.setdefault(self.find(node), []).append(node)
        return {node: min(members) for members in groups.values() for node in members}  # type: ignore[type-var]
