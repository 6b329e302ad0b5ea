"""Benchmark decontamination by exact word n-gram overlap: normalisation, hashing, eval files, matching.

Normalisation (the same on the eval side and the document side, so a match survives case,
punctuation, accent and whitespace differences):

* words are maximal runs of Unicode letters and digits (``[^\\W_]+``); everything else
  (punctuation, symbols, underscores, whitespace, line breaks) only separates words. Splitting
  ``snake_case`` identifiers as datatrove's punctuation removal does keeps code items (HumanEval)
  matchable when a few identifiers are edited;
* each word is NFKD-decomposed, stripped of combining marks and case-folded (ASCII words are
  just lower-cased, which is the same thing and ~10x faster);
* digits are kept as they are: unlike datatrove's ``simplify_text`` (which maps every number to
  ``0``) a changed number in a maths or code item is a different item, and mapping numbers
  together raises false positives on tables of figures.

Each word keeps the character span it came from, so a match maps back to the original text
(for the ``cut`` action and for the manifest).

Hashing: a word hashes to xxh3-64 of its normalised UTF-8 bytes; an n-gram hashes to a
polynomial of its word hashes mod 2^64 followed by the murmur3 64-bit finaliser. Both are
integer arithmetic, so the value is the same on every CPU and Python build. Matching is exact
on these 64-bit values: the chance that a document n-gram collides with one of E distinct eval
n-grams is E / 2^64 per n-gram, so a corpus of D n-grams expects D·E / 2^64 false hits
(``expected_false_hits``): about 0.5 for a trillion-word corpus against 10 million eval n-grams,
i.e. at most one document wrongly flagged in the whole corpus. The manifest reports that figure
(from ``DecontaminationTally.ngrams_checked``) instead of verifying every hit.

Items shorter than ``n`` words: by default they give no n-gram and are reported as skipped
(GPT-3 and datatrove do the same). ``short_item_words`` (``[ours]``, configurable) matches an item
of k words, ``short_item_words <= k < n``, as one whole k-gram instead, which is what short-question
benchmarks need; the document side then also hashes k-grams for each such k.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import xxhash

_WORD = re.compile(r"[^\W_]+")
Counter = Callable[[str, int], None]
# Odd 64-bit multiplier of the n-gram polynomial (the golden-ratio constant): any odd value
# makes the map from word hashes to n-gram hash a bijection in each position.
_POLY = np.uint64(0x9E3779B97F4A7C15)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def normalise_word(word: str) -> str:
    """The comparison form of one word: NFKD, combining marks removed, case-folded."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


@lru_cache(maxsize=1 << 18)
def word_hash(word: str) -> int:
    """xxh3-64 of the normalised word; cached because web text reuses a small vocabulary."""
    return xxhash.xxh3_64_intdigest(normalise_word(word).encode("utf-8", "surrogatepass"))


class Words:
    """The words of one text: their hashes, and (computed only when a match needs them) their spans."""

    def __init__(self, text: str):
        self.text = text
        self.hashes = np.array([word_hash(word) for word in _WORD.findall(text)], dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.hashes)

    @cached_property
    def _spans(self) -> tuple[np.ndarray, np.ndarray]:
        spans = np.array([match.span() for match in _WORD.finditer(self.text)], dtype=np.int64).reshape(-1, 2)
        return spans[:, 0], spans[:, 1]

    @property
    def starts(self) -> np.ndarray:
        return self._spans[0]

    @property
    def ends(self) -> np.ndarray:
        return self._spans[1]


def split_words(text: str) -> Words:
    return Words(text)


def _fmix64(values: np.ndarray) -> np.ndarray:
    values = values ^ (values >> _SHIFT)
    values = values * _FMIX1
    values = values ^ (values >> _SHIFT)
    values = values * _FMIX2
    return values ^ (values >> _SHIFT)


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of ``n`` consecutive words (position i covers words i..i+n-1)."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    combined = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(n):
            combined = combined * _POLY + word_hashes[offset : offset + count]
        # The length is mixed in so that a k-gram never equals an n-gram of other words.
        return _fmix64(combined ^ np.uint64(n))


def text_ngram_hashes(text: str, n: int) -> np.ndarray:
    return ngram_hashes(split_words(text).hashes, n)


def expected_false_hits(document_ngrams: int, distinct_eval_ngrams: int) -> float:
    """Expected number of document n-grams that match an eval n-gram by a 64-bit hash collision."""
    return document_ngrams * distinct_eval_ngrams / 2.0**64


# ---------------------------------------------------------------------------------------------
# Eval files


class EvalFileError(ValueError):
    """An eval file that cannot be used; raised before the run starts (the CLI exits 2)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"eval file {self.path}: {problem}")


@dataclass(frozen=True)
class EvalItem:
    benchmark: str
    item_id: str
    text: str


def _benchmark_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".txt"):
        name = name.removesuffix(suffix)
    return name


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from handle


def _jsonl_items(path: Path, default_benchmark: str) -> Iterator[EvalItem]:
    for line_no, line in enumerate(_open_text(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvalFileError(path, f"line {line_no} is not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise EvalFileError(path, f"line {line_no} is not a JSON object")
        text = record.get("text")
        if not isinstance(text, str):
            raise EvalFileError(path, f"line {line_no} has no string field `text`")
        benchmark = record.get("benchmark") or default_benchmark
        item_id = record.get("id")
        yield EvalItem(str(benchmark), str(item_id) if item_id is not None else f"{default_benchmark}:{line_no}", text)


def _txt_items(path: Path, default_benchmark: str) -> Iterator[EvalItem]:
    for line_no, line in enumerate(_open_text(path), start=1):
        if line.strip():
            yield EvalItem(default_benchmark, f"{default_benchmark}:{line_no}", line.rstrip("\n"))


def read_eval_file(path: str | Path) -> list[EvalItem]:
    """All items of one eval file (JSONL with ``text``, optional ``benchmark``/``id``; or .txt lines).

    Gzip is read when the name ends in ``.gz``. Raises ``EvalFileError`` naming the file and the
    problem: unreadable, not UTF-8, malformed line, unsupported extension, duplicate item id.
    """
    path = Path(path)
    name = path.name.removesuffix(".gz")
    default_benchmark = _benchmark_name(path)
    if name.endswith((".jsonl", ".json")):
        reader = _jsonl_items
    elif name.endswith(".txt"):
        reader = _txt_items
    else:
        raise EvalFileError(path, "unsupported extension (use .jsonl, .json, .txt, optionally .gz)")
    try:
        items = list(reader(path, default_benchmark))
    except OSError as error:
        raise EvalFileError(path, f"cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise EvalFileError(path, f"is not UTF-8 text (byte {error.start})") from None
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.benchmark, item.item_id)
        if key in seen:
            raise EvalFileError(path, f"duplicate item id {item.item_id!r} in benchmark {item.benchmark!r}")
        seen.add(key)
    return items


def resolve_eval_paths(patterns: Sequence[str]) -> list[Path]:
    """Expand the configured globs (sorted, so the item order never depends on the file system)."""
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise EvalFileError(pattern, "matches no file")
        paths.extend(Path(p) for p in matched if Path(p).is_file())
    unique = sorted(set(paths))
    if not unique:
        raise EvalFileError(", ".join(patterns), "matches only directories")
    return unique


# ---------------------------------------------------------------------------------------------
# The eval n-gram index (side-input form) and its catalogue of items


@dataclass(frozen=True)
class ItemRef:
    benchmark: str
    item_id: str


@dataclass
class BenchmarkSummary:
    """Per-benchmark eval-side figures for the manifest."""

    items: int = 0  # items that give at least one n-gram
    items_skipped: int = 0  # items too short (or empty) to give one
    ngrams: int = 0  # distinct n-gram hashes of this benchmark


def item_ngram_hashes(text: str, n: int, short_item_words: int | None) -> tuple[int, np.ndarray]:
    """(gram length, distinct hashes) of one eval item; length 0 and no hash when it is unusable."""
    words = split_words(text)
    if len(words) >= n:
        return n, np.unique(ngram_hashes(words.hashes, n))
    if short_item_words is not None and len(words) >= short_item_words:
        return len(words), ngram_hashes(words.hashes, len(words))
    return 0, np.zeros(0, dtype=np.uint64)


@dataclass
class EvalNgramIndex:
    """Sorted eval n-gram hashes per gram length, each pointing at the items that contain it.

    Stored as flat numpy arrays (a CSR layout: ``refs[offsets[i]:offsets[i+1]]`` are the item
    indexes of ``hashes[i]``), ~16 bytes per eval n-gram, so it pickles compactly as a Beam
    side input and matching a document is one vectorised ``searchsorted``.
    """

    n: int
    items: list[ItemRef]
    tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # length → (hashes, offsets, refs)
    summaries: dict[str, BenchmarkSummary] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Iterable[EvalItem], n: int, short_item_words: int | None = None) -> EvalNgramIndex:
        refs: list[ItemRef] = []
        per_length: dict[int, list[tuple[np.ndarray, int]]] = {}
        summaries: dict[str, BenchmarkSummary] = {}
        per_benchmark_hashes: dict[str, list[np.ndarray]] = {}
        for item in items:
            summary = summaries.setdefault(item.benchmark, BenchmarkSummary())
            length, hashes = item_ngram_hashes(item.text, n, short_item_words)
            if not length:
                summary.items_skipped += 1
                continue
            summary.items += 1
            per_length.setdefault(length, []).append((hashes, len(refs)))
            per_benchmark_hashes.setdefault(item.benchmark, []).append(hashes)
            refs.append(ItemRef(item.benchmark, item.item_id))
        for benchmark, arrays in per_benchmark_hashes.items():
            summaries[benchmark].ngrams = len(np.unique(np.concatenate(arrays)))
        tables = {length: _csr(pairs) for length, pairs in sorted(per_length.items())}
        return cls(n=n, items=refs, tables=tables, summaries=summaries)

    @property
    def lengths(self) -> list[int]:
        return sorted(self.tables)

    @property
    def distinct_ngrams(self) -> int:
        return sum(len(table[0]) for table in self.tables.values())

    def lookup(self, length: int, hashes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(position, item indexes) for every position whose hash is an eval n-gram of this length."""
        table = self.tables.get(length)
        if table is None or not len(hashes):
            return
        keys, offsets, refs = table
        slots = np.searchsorted(keys, hashes)
        slots_clipped = np.minimum(slots, len(keys) - 1)
        for position in np.flatnonzero(keys[slots_clipped] == hashes):
            slot = slots_clipped[position]
            yield int(position), refs[offsets[slot] : offsets[slot + 1]]


def _csr(pairs: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    all_hashes = np.concatenate([hashes for hashes, _ in pairs])
    all_refs = np.concatenate([np.full(len(hashes), ref, dtype=np.int64) for hashes, ref in pairs])
    order = np.lexsort((all_refs, all_hashes))
    all_hashes, all_refs = all_hashes[order], all_refs[order]
    keys, starts = np.unique(all_hashes, return_index=True)
    offsets = np.append(starts, len(all_hashes)).astype(np.int64)
    return keys, offsets, all_refs


def load_eval_index(patterns: Sequence[str], n: int, short_item_words: int | None = None) -> EvalNgramIndex:
    """Read every eval file and build the index; any unusable file raises ``EvalFileError``.

    A file is unusable when it cannot be read or when none of its items gives an n-gram.
    """
    all_items: list[EvalItem] = []
    for path in resolve_eval_paths(patterns):
        items = read_eval_file(path)
        usable = sum(bool(item_ngram_hashes(item.text, n, short_item_words)[0]) for item in items)
        if not usable:
            shortest = f"{n}" if short_item_words is None else f"{short_item_words}"
            raise EvalFileError(
                path, f"no usable item: {len(items)} item(s), none has {shortest} or more words after normalisation"
            )
        all_items.extend(items)
    return EvalNgramIndex.build(all_items, n, short_item_words)


# ---------------------------------------------------------------------------------------------
# Matching one document


@dataclass(frozen=True)
class ItemMatch:
    """One eval item found in a document: how many of its n-grams, and where (character spans)."""

    benchmark: str
    item_id: str
    ngrams: int
    spans: tuple[tuple[int, int], ...]


def resolve_hits(
    words: Words, hits: Iterable[tuple[int, int, Iterable[int]]], items: Sequence[ItemRef]
) -> list[ItemMatch]:
    """Turn (position, gram length, item indexes) hits into per-item matches with merged spans.

    This is the per-document half of both join forms: the side-input form produces the hits
    locally (``match_document``), the keyed join brings them back grouped by document.
    """
    windows: dict[int, list[tuple[int, int]]] = {}
    for position, length, refs in hits:
        for ref in refs:
            windows.setdefault(int(ref), []).append((position, position + length - 1))
    matches: list[ItemMatch] = []
    for ref, item_windows in windows.items():
        spans = _merge([(int(words.starts[a]), int(words.ends[b])) for a, b in sorted(set(item_windows))])
        matches.append(ItemMatch(items[ref].benchmark, items[ref].item_id, len(set(item_windows)), tuple(spans)))
    matches.sort(key=lambda m: (m.benchmark, m.item_id))
    return matches


def match_document(text: str, index: EvalNgramIndex, count: Counter | None = None) -> list[ItemMatch]:
    """Every eval item that shares at least one n-gram with ``text`` (side-input form of the join).

    ``count("decontaminate:ngrams_checked", k)`` reports the n-grams looked up (the false-hit estimate needs it).
    """
    words = split_words(text)
    hits: list[tuple[int, int, np.ndarray]] = []
    checked = 0
    for length in index.lengths:
        hashes = ngram_hashes(words.hashes, length)
        checked += len(hashes)
        for position, refs in index.lookup(length, hashes):
            hits.append((position, length, refs))
    if count is not None and checked:
        count("decontaminate:ngrams_checked", checked)
    return resolve_hits(words, hits, index.items) if hits else []


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def cut_spans(text: str, spans: Iterable[tuple[int, int]], margin: int) -> tuple[str, int]:
    """Remove each span widened by ``margin`` characters on both sides; returns (text, chars removed).

    Overlapping or touching widened spans are merged first, so every character is removed once.
    """
    widened = _merge((max(0, start - margin), min(len(text), end + margin)) for start, end in spans)
    pieces: list[str] = []
    cursor = 0
    for start, end in widened:
        pieces.append(text[cursor:start])
        cursor = end
    pieces.append(text[cursor:])
    cut = "".join(pieces)
    return cut, len(text) - len(cut)
