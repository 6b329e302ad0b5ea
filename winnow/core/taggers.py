"""Domain taggers: WebOrganizer topics × formats and DataMan domains (docs/domains.md#weborganizer,
docs/domains.md#dataman-domains), Beam-free.

In ``core`` because two stages use them: ``tag`` writes the labels, and ``order`` can read the topic
tagger's probabilities as part of its ICP embedding (``winnow.stages.order.ordering``).

Two modes, one output contract (24 probabilities in the taxonomy's id order, argmax = the label):

* **local** (``LinearTagger``): winnow trains it from any labelled JSONL. Features are hashed word
  1–2-grams of the text plus URL tokens and page-shape tokens (line starts, length, ending) in
  their own namespaces, weighted by sublinear TF × IDF and L2-normalised, optionally followed by
  the shipped static embedding of the URL and the page's first words (both bundled taggers use
  one) and by a page profile of bucketed ratios (line shapes, pronoun rates, dates; the bundled
  format tagger uses one); the head is a linear SVM whose margins are turned into probabilities by one fitted
  temperature. The model file holds only numpy arrays (IDF, int8 weights, scales, bias, dense
  weights), so inference is a regex, a hash per distinct word, a table lookup and one sparse
  product, all in exact integer arithmetic (``winnow.core.exact``): fast enough to tag every kept
  document on CPUs, which WebOrganizer's 140M-parameter classifier is not, and the same bits in any
  batch on any machine. It was chosen by measurement (``bench/tagging_eval.py``; figures in the
  models' README).
* **reference** (``ReferenceTagger``): a user-supplied local sequence-classification checkpoint
  (e.g. WebOrganizer's gte-base classifiers) run as the paper did: input ``"{url}\\n{text}"``,
  truncated to the model's maximum length, softmax over the 24 logits.

The DataMan domain of a document comes from the DataMan scorer when it ran; otherwise from the
docs/domains.md#dataman-domains topic → domain mapping, which is ours and for reports only, so callers record which one
was used.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import logging
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xxhash

from winnow.core import exact
from winnow.core.domains import TAXONOMIES
from winnow.core.hashing import uniform
from winnow.core.memo import memoised_values
from winnow.core.models import file_digest, resolve_model_path
from winnow.core.static_embedding import StaticEmbedding, load_static_embedding

log = logging.getLogger(__name__)


def tagger_input(text: str, url: str | None, use_url: bool) -> str:
    """WebOrganizer's classifier input, ``"{url}\\n{text}"`` (text alone for the -NoURL variants)."""
    return f"{url or ''}\n{text}" if use_url else text


# --- local mode: hashed n-gram TF-IDF + linear head ---------------------------------------

_WORD = re.compile(r"\w+")
_SPLIT = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class FeatureSpec:
    """How a document becomes a sparse vector; stored in the model so inference matches training.

    ``hashing`` says how a term becomes a bucket: ``words`` (the default since file format 3) hashes
    each distinct word once (xxh3, memoised per process) and derives each n-gram's hash from its
    words' hashes with integer mixing, which is 2–3× faster than ``terms`` (every n-gram string built
    and hashed, as file formats 1 and 2 did; kept so those files load). ``embedding_input`` says how
    the dense embedding reads its text: ``words`` (the same lower-cased words, each tokenised once per
    process) or ``tokens`` (the full WordPiece tokenizer over the text, formats 1 and 2).
    """

    buckets_log2: int = 18
    word_ngrams: int = 2
    use_url: bool = True
    max_chars: int = 20_000
    layout: bool = True
    # A dense document embedding appended to the sparse features (``None``: sparse only). Bag-of-words
    # evidence from 7k pages misses topic words it never saw; a static embedding distilled from MiniLM
    # brings that prior knowledge for one pass over the first ``embedding_chars``.
    embedding: str | None = None
    embedding_chars: int = 1500
    embedding_scale: float = 0.5
    hashing: Literal["words", "terms"] = "words"
    embedding_input: Literal["words", "tokens"] = "words"
    # The page-profile block (``profile_indices``) appended with this weight (0: none). Shares of
    # lines, pronoun rates and the like are ratios that hashed counts cannot express, and formats
    # (Q&A, Transcript, Listicle, Personal Blog ...) differ in them [ours, picked on *choose*].
    profile_scale: float = 0.0

    @property
    def buckets(self) -> int:
        return 1 << self.buckets_log2

    def sparse_key(self) -> tuple[Any, ...]:
        """What the sparse counts depend on (two taggers with equal keys share one count matrix)."""
        return (self.buckets_log2, self.word_ngrams, self.use_url, self.max_chars, self.layout, self.hashing)

    def header(self) -> dict[str, Any]:
        """The spec as stored in a model file (fields that formats 1 and 2 lacked only when they
        differ from those formats' behaviour, so old models keep their bytes)."""
        fields: dict[str, Any] = {
            "buckets_log2": self.buckets_log2,
            "word_ngrams": self.word_ngrams,
            "use_url": self.use_url,
            "max_chars": self.max_chars,
            "layout": self.layout,
        }
        if self.hashing != "terms":
            fields["hashing"] = self.hashing
        if self.embedding:
            fields |= {
                "embedding": self.embedding,
                "embedding_chars": self.embedding_chars,
                "embedding_scale": self.embedding_scale,
            }
            if self.embedding_input != "tokens":
                fields["embedding_input"] = self.embedding_input
        if self.profile_scale:
            fields["profile_scale"] = self.profile_scale
        return fields

    @classmethod
    def from_header(cls, fields: dict[str, Any]) -> FeatureSpec:
        """The spec of a stored model; a field the file lacks means what formats 1 and 2 did."""
        return cls(**({"hashing": "terms", "embedding_input": "tokens"} | fields))


def document_terms(text: str, url: str | None, spec: FeatureSpec) -> list[str]:
    """Word n-grams (lower case) of the text, then ``url:``/``host:`` tokens when the spec uses URLs."""
    words = _WORD.findall(text[: spec.max_chars].lower())
    terms = list(words)
    for n in range(2, spec.word_ngrams + 1):
        terms += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    if spec.use_url and url:
        terms += url_terms(url)
    if spec.layout:
        terms += layout_terms(text[: spec.max_chars])
    return terms


_LAYOUT_MARKS = "?!:;|$%@#©*•>»…"
_SENTENCE_ENDS = ".!?\"')]:"


def page_lines(text: str) -> list[str]:
    """The page's non-blank lines, stripped: what the layout terms and the page profile read."""
    return [line for line in map(str.strip, text.splitlines()) if line]


def layout_terms(text: str, lines: list[str] | None = None) -> list[str]:
    """Page-shape features for the format taxonomy: WebOrganizer's formats (Truncated, Listicle, Q&A,
    Comment Section, Product Page, ...) show in length, line structure, how lines start and how the
    text ends, which bag-of-words features do not see. ``lines``: ``page_lines(text)`` when known."""
    lines = page_lines(text) if lines is None else lines
    terms = [f"layout:chars{len(text).bit_length()}", f"layout:lines{len(lines).bit_length()}"]
    if lines:
        lengths = list(map(len, lines))
        mean_line = sum(lengths) // len(lines)
        terms.append(f"layout:linelen{mean_line.bit_length()}")
        short = sum(1 for length in lengths if length < 40) * 4 // len(lines)
        terms.append(f"layout:short{short}")
        terms += _line_starts(lines[:200])
    words = [*_WORD.findall(text[:300].lower())[:5], "|", *_WORD.findall(text[-300:].lower())[-5:]]
    terms += [f"edge:{w}" for w in words]
    tail = text.rstrip()[-1:]
    ending = tail if tail in _SENTENCE_ENDS else ("word" if tail.isalnum() else "other")
    terms.append(f"end:{ending}")
    for mark in _LAYOUT_MARKS:
        count = text.count(mark)
        if count:
            terms += [f"mark:{mark}"] * min(count, 30)
    return terms


# The first word of each line, found by one regex pass over the lines' first 40 characters joined by
# newlines (no line holds one: ``splitlines`` removed them). Lower-casing the joined string equals
# lower-casing each line, because the one context-dependent mapping (final sigma) looks no further
# than the nearest character that is neither cased nor case-ignorable, and a newline is neither.
_LINE_START = re.compile(r"^[^\w\n]*(\w*)", re.MULTILINE)


def _line_starts(lines: Sequence[str]) -> list[str]:
    """``start:`` + each line's first lower-cased word (its first character when it has none)."""
    firsts = _LINE_START.findall("\n".join([line[:40] for line in lines]).lower())
    if len(firsts) != len(lines):  # cannot happen (each line is non-empty); the per-line way if it did
        firsts = [found.group(0) if (found := _WORD.search(line[:40].lower())) else "" for line in lines]
    return [f"start:{first or line[:1]}" for first, line in zip(firsts, lines, strict=True)]


# --- the page profile: one bucket per measured ratio -------------------------------------------

# A speaker label at a line start ("JOHN SMITH:", "Q:", "Host:"), matched on the lines' first
# 40 characters joined by newlines (a label is at most 27 characters).
_SPEAKER = re.compile(r"^[A-Z][\w .'\-]{0,25}:", re.MULTILINE)
# Word → what it counts as: first-person singular, second person, first-person plural, a month or a
# year. One dict lookup per word finds all five; a regex pass per feature cost 3–4× the tagger's own
# work on a page.
_MONTHS = (
    *("january", "february", "march", "april", "may", "june", "july", "august", "september", "october"),
    *("november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
)
_WORD_KINDS = {
    **dict.fromkeys(("i", "me", "my", "mine", "myself"), 0),
    **dict.fromkeys(("you", "your", "yours", "yourself"), 1),
    **dict.fromkeys(("we", "our", "us", "ours"), 2),
    **dict.fromkeys(_MONTHS, 3),
    **dict.fromkeys(map(str, range(1900, 2100)), 4),
}
_OTHER_WORD = 5
_LINE_END_MARKS = '.!?"'
_BULLETS = "-*•·>"
_DIGITS = b"0123456789"
_CAPITALS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Each profile feature and its number of buckets; a page sets exactly one bucket of each, so every
# profile vector has the same norm (√len(PROFILE)).
PROFILE: tuple[tuple[str, int], ...] = (
    ("lines ending in . ! ? or a quote, fifths", 5),
    ("lines ending in ?, fifths", 5),
    ("lines starting with a digit, fifths", 5),
    ("lines starting with a bullet, fifths", 5),
    ("speaker-label lines, bit length", 6),
    ("month names and years 1900-2099, bit length", 7),
    ("first-person singular per 200 words, bit length", 6),
    ("second person per 200 words, bit length", 6),
    ("first-person plural per 200 words, bit length", 6),
    ("http and www., bit length", 5),
    ("capital letters A-Z per 1,000 characters, bit length", 8),
    ("digits per character, fifths of 20%", 5),
    ("mean word length, characters", 10),
    ("first line length, bit length", 9),
    ("last line length, bit length", 9),
    ("repeated lines, fifths", 5),
    ("lines over 200 characters, fifths", 5),
)
PROFILE_OFFSETS = tuple(int(v) for v in np.cumsum([0] + [n for _, n in PROFILE])[:-1])
PROFILE_DIM = sum(n for _, n in PROFILE)
_PROFILE_NAMES = [f"{name} ({buckets})" for name, buckets in PROFILE]  # stored in a model's meta


def _fifths(part: int, whole: int) -> int:
    return min(4, part * 5 // max(1, whole))


def profile_indices(text: str, words: Sequence[str], lines: list[str] | None = None) -> list[int]:
    """The profile bucket of each ``PROFILE`` feature of a page (offset into ``PROFILE_DIM``).

    ``text`` is the page (cut as the sparse features cut it) and ``words`` its lower-cased ``\\w+``
    words, which the sparse features have found already (and ``lines``, ``page_lines(text)``, when
    the layout terms have split it). Integer arithmetic only, so a page's buckets are the same on
    every machine."""
    lines = page_lines(text) if lines is None else lines
    n_lines, n_words, n_chars = len(lines), max(1, len(words)), max(1, len(text))
    kinds = bytes(map(_WORD_KINDS.get, words, itertools.repeat(_OTHER_WORD)))  # bytes.count is a C scan
    raw = text.encode("utf-8", "surrogatepass")  # ASCII letters and digits counted by bytes.translate

    def ascii_count(members: bytes) -> int:
        return len(raw) - len(raw.translate(None, members))

    def per_200_words(kind: int) -> int:
        return min(5, (200 * kinds.count(kind) // n_words).bit_length())

    buckets = (
        _fifths(sum(line[-1] in _LINE_END_MARKS for line in lines), n_lines),
        _fifths(sum(line[-1] == "?" for line in lines), n_lines),
        _fifths(sum(line[0].isdigit() for line in lines), n_lines),
        _fifths(sum(line[0] in _BULLETS for line in lines), n_lines),
        min(5, len(_SPEAKER.findall("\n".join([line[:40] for line in lines]))).bit_length()),
        min(6, (kinds.count(3) + kinds.count(4)).bit_length()),
        per_200_words(0),
        per_200_words(1),
        per_200_words(2),
        min(4, (text.count("http") + text.count("www.")).bit_length()),
        min(7, (1000 * ascii_count(_CAPITALS) // n_chars).bit_length()),
        _fifths(5 * ascii_count(_DIGITS), n_chars),
        min(9, sum(map(len, words)) // n_words),
        min(8, len(lines[0]).bit_length()) if lines else 0,
        min(8, len(lines[-1]).bit_length()) if lines else 0,
        _fifths(n_lines - len(set(lines)), n_lines),
        _fifths(sum(len(line) > 200 for line in lines), n_lines),
    )
    return [offset + bucket for offset, bucket in zip(PROFILE_OFFSETS, buckets, strict=True)]


# Dense embeddings a FeatureSpec may name → their dimension. ``static-minilm`` is winnow's shipped
# static embedding (``winnow.core.static_embedding``, MiniLM-derived, exact integer sums).
EMBEDDINGS: dict[str, int] = {"static-minilm": 256}


def embedding_encoder(name: str) -> StaticEmbedding:
    """The (process-wide, loaded once) encoder of a named embedding."""
    if name not in EMBEDDINGS:
        raise ValueError(f"unknown tagger embedding {name!r} (known: {sorted(EMBEDDINGS)})")
    return load_static_embedding()


def embedding_digest(name: str) -> str:
    """Digest of the embedding's shipped files: a model records the table it was trained on."""
    return embedding_encoder(name).digest


def _embedding_inputs(texts: Sequence[str], urls: Sequence[str | None], spec: FeatureSpec) -> tuple[str, ...]:
    if not spec.embedding:
        raise ValueError("this feature spec has no embedding")
    return tuple(
        tagger_input((text or "")[: spec.embedding_chars], url, spec.use_url)
        for text, url in zip(texts, urls, strict=True)
    )


def embedding_sums(
    texts: Sequence[str], urls: Sequence[str | None], spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Exact integer embedding sums of ``"{url}\\n{first embedding_chars of text}"`` and 1/‖sum‖ per row.

    What inference multiplies the dense weights with: exact, so a document's logits never depend on
    its batch or the machine (a row without tokens gets 0). With ``embedding_input`` ``words`` the
    input is that string's lower-cased ``\\w+`` words (``StaticEmbedding.word_sums``).
    """
    return BatchFeatures(texts, urls).embedding_sums(spec)


def _sums_and_inverse_norms(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.sqrt((sums * sums).sum(axis=1).astype(np.float64))  # an exact int64 sum of squares
    return sums, np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def document_embeddings(texts: Sequence[str], urls: Sequence[str | None], spec: FeatureSpec) -> np.ndarray:
    """Unit-length embeddings × ``embedding_scale`` (float64): the dense training features."""
    sums, inverse = embedding_sums(texts, urls, spec)
    return sums.astype(np.float64) * inverse[:, None] * spec.embedding_scale


# --- term hashing ---------------------------------------------------------------------------------

_HASH_MEMO: dict[str, int] = {}
HASH_MEMO_LIMIT = 1 << 20  # distinct terms remembered per process before the memo starts over
# splitmix64's constants: n-gram hashes are mixed from their words' hashes in wrapping uint64 arithmetic.
_MIX_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def term_hashes(terms: Sequence[str]) -> np.ndarray:
    """xxh3-64 of each term's UTF-8 bytes (uint64), memoised per process (a pure function: the memo
    changes the cost, never a value; ``winnow.core.memo``)."""
    values = memoised_values(terms, _HASH_MEMO, _term_hash, HASH_MEMO_LIMIT)
    return np.fromiter(values, dtype=np.uint64, count=len(terms))


def _term_hash(term: str) -> int:
    return xxhash.xxh3_64_intdigest(term.encode("utf-8", "surrogatepass"))


def mix_hashes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The hash of a sequence (``left``'s) extended by one word (``right``'s): golden-ratio
    combination and splitmix64's finaliser, exact integer arithmetic modulo 2^64."""
    x = left * _MIX_GOLDEN + right
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def url_terms(url: str) -> list[str]:
    """``host:`` and ``url:`` tokens of a URL (lower case; scheme and ``www`` dropped)."""
    lowered = url.lower()
    host = lowered.split("://", 1)[-1].split("/", 1)[0]
    return [f"host:{host.removeprefix('www.')}"] + [
        f"url:{token}" for token in _SPLIT.split(lowered) if token and token not in ("http", "https", "www")
    ]


def term_buckets(text: str, url: str | None, spec: FeatureSpec) -> np.ndarray:
    """Bucket of every term occurrence of a document (``hashing`` ``words``): word n-grams of the
    text, then URL and page-shape terms; int64, one entry per occurrence."""
    words = _WORD.findall(text[: spec.max_chars].lower())
    word_hashes = term_hashes(words)
    parts = [word_hashes]
    gram = word_hashes
    for n in range(2, spec.word_ngrams + 1):
        gram = mix_hashes(gram[:-1], word_hashes[n - 1 :])
        parts.append(gram)
    other: list[str] = url_terms(url) if spec.use_url and url else []
    if spec.layout:
        other += layout_terms(text[: spec.max_chars])
    if other:
        parts.append(term_hashes(other))
    return (np.concatenate(parts) & np.uint64(spec.buckets - 1)).astype(np.int64)


def hashed_counts(text: str, url: str | None, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Distinct feature buckets of one document and their term counts (xxh3: stable across processes)."""
    if spec.hashing == "words":
        buckets, counts = np.unique(term_buckets(text, url, spec), return_counts=True)
        return buckets, counts.astype(np.float64)
    terms = document_terms(text, url, spec)
    if not terms:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    mask = spec.buckets - 1
    distinct = Counter(terms)  # hash each distinct term once
    hashes = np.fromiter(
        (xxhash.xxh3_64_intdigest(term.encode("utf-8", "surrogatepass")) & mask for term in distinct),
        dtype=np.int64,
        count=len(distinct),
    )
    buckets, inverse = np.unique(hashes, return_inverse=True)
    counts = np.bincount(inverse, weights=np.fromiter(distinct.values(), dtype=np.float64, count=len(distinct)))
    return buckets, counts


def count_matrix(texts: Sequence[str], urls: Sequence[str | None], spec: FeatureSpec) -> Any:
    """Sparse (documents × buckets) matrix of raw term counts."""
    return BatchFeatures(texts, urls).counts(spec)


def _csr_of_documents(texts: Sequence[str], urls: Sequence[str | None], spec: FeatureSpec) -> Any:
    """``count_matrix`` one document at a time (``hashing`` ``terms``, file formats 1 and 2)."""
    from scipy.sparse import csr_matrix  # lazy: scipy only where this path runs

    indptr = [0]
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for text, url in zip(texts, urls, strict=True):
        buckets, counts = hashed_counts(text or "", url, spec)
        indices.append(buckets)
        values.append(counts)
        indptr.append(indptr[-1] + len(buckets))
    return csr_matrix(
        (
            np.concatenate(values) if values else np.zeros(0),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(len(texts), spec.buckets),
    )


def _word_count_csr(words: Sequence[list[str]], others: Sequence[list[str]], spec: FeatureSpec) -> Any:
    """The batch's count matrix (``hashing`` ``words``) in a few array operations: every term of every
    document is hashed in one call, n-grams are mixed over the batch's words end to end (those that
    would cross into the next document are dropped) and one sort of (document, bucket) keys counts
    them. The same counts as ``hashed_counts`` per document: integers, whatever the batch."""
    from scipy.sparse import csr_matrix  # lazy: scipy only where this path runs

    n = len(words)
    word_lengths = np.fromiter(map(len, words), dtype=np.int64, count=n)
    word_hashes = term_hashes(list(itertools.chain.from_iterable(words)))
    owner = np.repeat(np.arange(n, dtype=np.int64), word_lengths)
    hashes, owners = [word_hashes], [owner]
    if spec.word_ngrams > 1 and len(word_hashes):
        end = np.repeat(np.cumsum(word_lengths), word_lengths)  # one past each word's document's last word
        start = np.arange(len(word_hashes), dtype=np.int64)
        gram = word_hashes
        for size in range(2, spec.word_ngrams + 1):
            gram = mix_hashes(gram[:-1], word_hashes[size - 1 :])
            inside = start[: len(gram)] + size <= end[: len(gram)]
            hashes.append(gram[inside])
            owners.append(owner[: len(gram)][inside])
    other_lengths = np.fromiter(map(len, others), dtype=np.int64, count=n)
    hashes.append(term_hashes(list(itertools.chain.from_iterable(others))))
    owners.append(np.repeat(np.arange(n, dtype=np.int64), other_lengths))
    shift = spec.buckets_log2
    # int32 keys sort faster; a batch of up to 2^(31 - buckets_log2) documents fits them.
    key_type = np.int32 if n << shift < 1 << 31 else np.int64
    buckets = (np.concatenate(hashes) & np.uint64(spec.buckets - 1)).astype(key_type)
    keys, counts = np.unique((np.concatenate(owners).astype(key_type) << shift) | buckets, return_counts=True)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys >> shift, minlength=n), out=indptr[1:])
    return csr_matrix(
        (counts.astype(np.float64), (keys & (spec.buckets - 1)).astype(np.int64), indptr),
        shape=(n, spec.buckets),
    )


class BatchFeatures:
    """The feature pieces of one batch that several taggers read, each computed once on first use.

    The tag stage runs the topic and format taggers on the same batch: their sparse specs are equal
    (one count matrix) and they embed the same input (one set of embedding sums); only their IDFs and
    heads differ. ``tag_probabilities`` hands one of these to every tagger; a tagger called alone
    makes its own, so a config that enables one taxonomy pays for one. Every piece is a pure
    function of each row, so sharing changes the cost, never a value.
    """

    def __init__(self, texts: Sequence[str], urls: Sequence[str | None] | None = None):
        self.texts = [text or "" for text in texts]
        self.urls = list(urls) if urls is not None else [None] * len(self.texts)
        if len(self.urls) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.urls)} urls")
        self._counts: dict[tuple[Any, ...], Any] = {}
        self._sums: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._words: dict[tuple[int, int | None], tuple[list[list[str]], list[list[str]] | None]] = {}
        self._profiles: dict[int, np.ndarray] = {}
        self._lines: dict[int, list[list[str]]] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def words(self, max_chars: int, head_chars: int | None = None) -> tuple[list[list[str]], list[list[str]] | None]:
        """Each text's lower-cased ``\\w+`` words of its first ``max_chars`` characters and, with
        ``head_chars``, those of its first ``head_chars`` (the embedding's cut), found in one pass."""
        key = (max_chars, head_chars)
        if key not in self._words:
            if head_chars is None or head_chars >= max_chars:
                words = [_WORD.findall(text[:max_chars].lower()) for text in self.texts]
                heads = (
                    None if head_chars is None else [_WORD.findall(text[:head_chars].lower()) for text in self.texts]
                )
            else:
                pairs = [_words_and_head(text[:max_chars], head_chars) for text in self.texts]
                words, heads = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
            self._words[key] = (words, heads)
        return self._words[key]

    def counts(self, spec: FeatureSpec) -> Any:
        """The raw term-count matrix (CSR, documents × buckets) of a sparse spec."""
        key = spec.sparse_key()
        if key not in self._counts:
            if spec.hashing != "words":
                self._counts[key] = _csr_of_documents(self.texts, self.urls, spec)
            else:
                words, _ = self.words(spec.max_chars, _head_chars(spec))
                lines = self.lines(spec.max_chars) if spec.layout else [None] * len(self.texts)
                others = []
                for text, url, text_lines in zip(self.texts, self.urls, lines, strict=True):
                    other = url_terms(url) if spec.use_url and url else []
                    if spec.layout:
                        other += layout_terms(text[: spec.max_chars], text_lines)
                    others.append(other)
                self._counts[key] = _word_count_csr(words, others, spec)
        return self._counts[key]

    def lines(self, max_chars: int) -> list[list[str]]:
        """``page_lines`` of each text cut at ``max_chars`` (the layout terms and the profile share them)."""
        if max_chars not in self._lines:
            self._lines[max_chars] = [page_lines(text[:max_chars]) for text in self.texts]
        return self._lines[max_chars]

    def profiles(self, spec: FeatureSpec) -> np.ndarray:
        """The page-profile one-hots (int64, documents × ``PROFILE_DIM``) of the texts cut at
        ``spec.max_chars``, from the words the sparse counts use."""
        if spec.max_chars not in self._profiles:
            words, _ = self.words(spec.max_chars, _head_chars(spec))
            onehots = np.zeros((len(self.texts), PROFILE_DIM), dtype=np.int64)
            columns = [
                profile_indices(text[: spec.max_chars], row_words, text_lines)
                for text, row_words, text_lines in zip(self.texts, words, self.lines(spec.max_chars), strict=True)
            ]
            rows = np.repeat(np.arange(len(columns)), len(PROFILE))
            onehots[rows, np.asarray(columns, dtype=np.int64).reshape(-1)] = 1
            self._profiles[spec.max_chars] = onehots
        return self._profiles[spec.max_chars]

    def embedding_sums(self, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
        """``embedding_sums`` of the batch (int64 sums and 1/‖sum‖ per row)."""
        if not spec.embedding:
            raise ValueError("this feature spec has no embedding")
        key = (spec.embedding, spec.embedding_input, spec.embedding_chars, spec.use_url)
        if key not in self._sums:
            encoder = embedding_encoder(spec.embedding)
            if spec.embedding_input == "words":
                # The words of "{url}\n{head}": the URL's words, then the head's (the newline splits
                # words and stops final-sigma context, so the parts lower-case as the whole does).
                _, heads = self.words(spec.max_chars, spec.embedding_chars)
                documents = [
                    [*_WORD.findall((url or "").lower()), *head] if spec.use_url else head
                    for url, head in zip(self.urls, heads or [], strict=True)
                ]
                sums, _ = encoder.word_sums(documents)
            else:
                sums, _ = encoder.sums(list(_embedding_inputs(self.texts, self.urls, spec)))
            self._sums[key] = _sums_and_inverse_norms(sums)
        return self._sums[key]


def _head_chars(spec: FeatureSpec) -> int | None:
    """The embedding's character cut when it reads words (so one pass finds both word lists)."""
    return spec.embedding_chars if spec.embedding and spec.embedding_input == "words" else None


def _words_and_head(text: str, head_chars: int) -> tuple[list[str], list[str]]:
    """``_WORD.findall(text.lower())`` and ``_WORD.findall(text[:head_chars].lower())`` from one pass
    over the text: the head's words, then the rest's, joined when a word straddles the cut.

    Valid because ``str.lower`` maps each character alone except a capital sigma (final or not depends
    on its neighbours); a text holding one takes the direct way.
    """
    if "Σ" in text:
        return _WORD.findall(text.lower()), _WORD.findall(text[:head_chars].lower())
    head, rest = text[:head_chars].lower(), text[head_chars:].lower()
    head_words = _WORD.findall(head)
    rest_words = _WORD.findall(rest)
    if head_words and rest_words and _WORD.match(head, len(head) - 1) and _WORD.match(rest):
        return [*head_words[:-1], head_words[-1] + rest_words[0], *rest_words[1:]], head_words
    return head_words + rest_words, head_words


def tfidf(counts: Any, idf: np.ndarray) -> Any:
    """Sublinear TF (1 + log tf) × IDF, each row L2-normalised (rows of nothing stay zero).

    Machine-independent: the log of a count comes from a correctly rounded table and each row's
    norm from an exactly rounded sum (``winnow.core.exact``).
    """
    matrix = counts.astype(np.float64, copy=True)
    matrix.data = (1.0 + exact.log_of_counts(matrix.data.astype(np.int64))) * idf[matrix.indices]
    return exact.l2_normalise_rows(matrix)


def inverse_document_frequency(counts: Any) -> np.ndarray:
    """Smoothed IDF, ``log((1 + n) / (1 + df)) + 1`` (scikit-learn's formula)."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float64)


_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same model gives the same bytes
_FORMAT_SPARSE = "winnow-linear-tagger/1"
_FORMAT_EMBEDDING = "winnow-linear-tagger/2"  # adds the embedding spec fields and dense_weights.npy
_FORMAT_WORDS = "winnow-linear-tagger/3"  # adds the spec's hashing and embedding_input fields
_FORMAT_PROFILE = "winnow-linear-tagger/4"  # adds the spec's profile_scale and profile_weights.npy
_FORMATS = (_FORMAT_SPARSE, _FORMAT_EMBEDDING, _FORMAT_WORDS, _FORMAT_PROFILE)


class LinearTagger:
    """Local-mode tagger: hashed TF-IDF features (+ an optional dense embedding) → 24 logits.

    Weights are stored as int8 with one float scale per label (``quantise_weights``): a quarter of
    float32's size, which keeps both bundled models in the package-size budget; the bench scores the
    quantised model, so its figures are what ships. The embedding's few weights (``dense_weights``,
    dim × labels) stay float32. Sparse-only models need numpy and scipy only; with an embedding
    inference also reads the shipped static embedding (numpy and tokenizers).
    """

    def __init__(
        self,
        taxonomy: str,
        labels: Sequence[str],
        spec: FeatureSpec,
        idf: np.ndarray,
        weights: np.ndarray,
        scales: np.ndarray,
        bias: np.ndarray,
        meta: dict[str, Any] | None = None,
        dense_weights: np.ndarray | None = None,
        profile_weights: np.ndarray | None = None,
    ):
        self.taxonomy = taxonomy
        self.labels = tuple(labels)
        self.spec = spec
        self.idf = np.asarray(idf, dtype=np.float32)
        self.weights = np.asarray(weights, dtype=np.int8)
        self.scales = np.asarray(scales, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.meta = dict(meta or {})
        if self.weights.shape != (spec.buckets, len(self.labels)):
            raise ValueError(f"weights have shape {self.weights.shape}, expected ({spec.buckets}, {len(self.labels)})")
        self.dense_weights = None if dense_weights is None else np.asarray(dense_weights, dtype=np.float32)
        if spec.embedding:
            expected = (EMBEDDINGS.get(spec.embedding, -1), len(self.labels))
            if self.dense_weights is None or self.dense_weights.shape != expected:
                shape = None if self.dense_weights is None else self.dense_weights.shape
                raise ValueError(f"embedding weights have shape {shape}, expected {expected}")
            trained_on = self.meta.get("embedding_digest")
            if trained_on and trained_on != embedding_digest(spec.embedding):
                log.warning(
                    "%s tagger was trained on another %s table (%s); predictions may differ slightly",
                    taxonomy,
                    spec.embedding,
                    trained_on,
                )
        elif self.dense_weights is not None:
            raise ValueError("dense weights given but the feature spec has no embedding")
        self.profile_weights = None if profile_weights is None else np.asarray(profile_weights, dtype=np.float32)
        if spec.profile_scale:
            shape = None if self.profile_weights is None else self.profile_weights.shape
            if shape != (PROFILE_DIM, len(self.labels)):
                raise ValueError(f"profile weights have shape {shape}, expected ({PROFILE_DIM}, {len(self.labels)})")
            if self.meta.get("profile_features", _PROFILE_NAMES) != _PROFILE_NAMES:
                raise ValueError(f"{taxonomy} tagger was trained on another page profile; retrain it with this winnow")
        elif self.profile_weights is not None:
            raise ValueError("profile weights given but the feature spec has no profile")
        # Inference is integer arithmetic (winnow.core.exact): a document's logits are the same bits
        # in any batch and on any machine.
        self._sparse = exact.QuantizedLinear.from_quantized(self.weights, self.scales, self.bias)
        self._dense = None if self.dense_weights is None else exact.QuantizedLinear(self.dense_weights)
        self._profile = None if self.profile_weights is None else exact.QuantizedLinear(self.profile_weights)

    @functools.cached_property
    def version(self) -> str:
        """The first 16 hex digits of the SHA-256 of ``to_bytes()``, computed on first use: writing the
        model again (a deflated zip of every array) took seconds per load, and inference never needs it."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    def features(
        self, texts: Sequence[str], urls: Sequence[str | None] | None = None, shared: BatchFeatures | None = None
    ) -> Any:
        """TF-IDF rows (CSR, L2-normalised) from the batch's counts (``shared``'s when given)."""
        shared = shared if shared is not None else BatchFeatures(texts, urls)
        return tfidf(shared.counts(self.spec), self.idf.astype(np.float64))

    def logits(
        self, texts: Sequence[str], urls: Sequence[str | None] | None = None, shared: BatchFeatures | None = None
    ) -> np.ndarray:
        """Logits of each row; ``shared`` (the same texts and URLs) lends feature pieces computed
        already for another tagger (``tag_probabilities``)."""
        if shared is None:
            shared = BatchFeatures(texts, urls)
        elif len(shared) != len(texts):
            raise ValueError(f"shared features hold {len(shared)} rows, not {len(texts)}")
        out = self._sparse.apply(self.features(texts, urls, shared))
        if self._dense is not None:
            sums, inverse = shared.embedding_sums(self.spec)
            out = out + self._dense.apply_integers(sums, inverse * self.spec.embedding_scale)
        if self._profile is not None:
            out = out + self._profile.apply_integers(shared.profiles(self.spec), _profile_row_scale(self.spec))
        return out

    def probabilities(
        self, texts: Sequence[str], urls: Sequence[str | None] | None = None, shared: BatchFeatures | None = None
    ) -> np.ndarray:
        return exact.softmax(self.logits(texts, urls, shared)).astype(np.float32)

    # -- persistence: an uncompressed zip of .npy arrays + a JSON header, byte-deterministic --

    def to_bytes(self) -> bytes:
        header = {
            "format": self._file_format(),
            "taxonomy": self.taxonomy,
            "labels": list(self.labels),
            "spec": self.spec.header(),
            "meta": self.meta,
        }
        arrays = {"idf": self.idf, "weights": self.weights, "scales": self.scales, "bias": self.bias}
        if self.dense_weights is not None:
            arrays["dense_weights"] = self.dense_weights
        if self.profile_weights is not None:
            arrays["profile_weights"] = self.profile_weights
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            _write_member(archive, "header.json", json.dumps(header, indent=1, sort_keys=True).encode())
            for name, array in arrays.items():
                payload = io.BytesIO()
                np.save(payload, np.ascontiguousarray(array), allow_pickle=False)
                _write_member(archive, f"{name}.npy", payload.getvalue())
        return buffer.getvalue()

    def _file_format(self) -> str:
        if self.spec.profile_scale:
            return _FORMAT_PROFILE
        if self.spec.hashing != "terms" or (self.spec.embedding and self.spec.embedding_input != "tokens"):
            return _FORMAT_WORDS
        return _FORMAT_EMBEDDING if self.spec.embedding else _FORMAT_SPARSE

    def save(self, path: str | Path) -> str:
        """Write the model; returns its SHA-256."""
        payload = self.to_bytes()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(payload)
        return hashlib.sha256(payload).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> LinearTagger:

        with zipfile.ZipFile(resolve_model_path(path)) as archive:
            header = json.loads(archive.read("header.json"))
            if header.get("format") not in _FORMATS:
                raise ValueError(f"{path} is not a winnow linear tagger (format {header.get('format')!r})")
            names = ["idf", "weights", "scales", "bias"]
            names += [name for name in ("dense_weights", "profile_weights") if f"{name}.npy" in archive.namelist()]
            arrays = {name: np.load(io.BytesIO(archive.read(f"{name}.npy")), allow_pickle=False) for name in names}
        return cls(
            header["taxonomy"],
            header["labels"],
            FeatureSpec.from_header(header["spec"]),
            arrays["idf"],
            arrays["weights"],
            arrays["scales"],
            arrays["bias"],
            header.get("meta"),
            arrays.get("dense_weights"),
            arrays.get("profile_weights"),
        )

    @classmethod
    def fit(
        cls,
        taxonomy: str,
        labels: Sequence[str],
        texts: Sequence[str],
        urls: Sequence[str | None],
        targets: Sequence[int],
        sample_weight: Sequence[float] | None = None,
        spec: FeatureSpec | None = None,
        classifier: str = "svm",
        regularisation: float = 4.0,
        meta: dict[str, Any] | None = None,
    ) -> LinearTagger:
        """Train on TF-IDF features: a linear SVM (default, chosen by the bench) or a logistic regression.

        ``sample_weight`` is the label confidence: WebOrganizer's labels are model-made, so an
        uncertain label should pull less. An SVM's margins are not probabilities, so they are
        scaled by one temperature fitted (minimum log-loss) on a hashed 10% of the rows held out
        from a first fit; the final model is then fitted on every row and scaled by it.
        ``regularisation`` is scikit-learn's ``C``. Both solvers are deterministic.
        """
        spec = spec or FeatureSpec()
        batch = BatchFeatures(texts, urls)
        counts = batch.counts(spec)
        sums = batch.embedding_sums(spec)[0] if spec.embedding else None
        profiles = batch.profiles(spec) if spec.profile_scale else None
        return cls.fit_features(
            taxonomy, labels, spec, counts, sums, targets, sample_weight, classifier, regularisation, meta, profiles
        )

    @classmethod
    def fit_features(
        cls,
        taxonomy: str,
        labels: Sequence[str],
        spec: FeatureSpec,
        counts: Any,
        sums: np.ndarray | None,
        targets: Sequence[int],
        sample_weight: Sequence[float] | None = None,
        classifier: str = "svm",
        regularisation: float = 4.0,
        meta: dict[str, Any] | None = None,
        profiles: np.ndarray | None = None,
    ) -> LinearTagger:
        """``fit`` on inputs computed already: ``count_matrix``, (with an embedding) the integer
        ``embedding_sums`` and (with a profile) ``BatchFeatures.profiles``, so a bench can compute
        them once for several settings."""
        from scipy.sparse import csr_matrix, hstack  # lazy: scipy only where this path runs

        idf = inverse_document_frequency(counts).astype(np.float32)
        features = tfidf(counts, idf.astype(np.float64))
        if spec.embedding:  # the dense columns follow the buckets; the head is fitted on both at once
            if sums is None:
                raise ValueError("this spec has an embedding: pass its embedding_sums")
            sums = np.asarray(sums, dtype=np.float64)
            norms = np.sqrt((sums * sums).sum(axis=1))
            dense = sums / np.where(norms > 0, norms, 1.0)[:, None] * spec.embedding_scale
            features = hstack([features, csr_matrix(dense)], format="csr")
        if spec.profile_scale:  # then the profile's columns
            if profiles is None:
                raise ValueError("this spec has a page profile: pass its profiles")
            scaled = np.asarray(profiles, dtype=np.float64) * _profile_row_scale(spec)
            features = hstack([features, csr_matrix(scaled)], format="csr")
        y = np.asarray(targets, dtype=np.int64)
        weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        temperature = 1.0
        if classifier == "svm":
            calibration = np.array([uniform(str(i), "tagger-calibration", 0) < 0.1 for i in range(len(y))])
            fit_rows = np.flatnonzero(~calibration)
            held_rows = np.flatnonzero(calibration)
            if len(held_rows) and len(np.unique(y[fit_rows])) > 1:
                w, b = _linear_model(
                    features[fit_rows],
                    y[fit_rows],
                    None if weight is None else weight[fit_rows],
                    classifier,
                    regularisation,
                    len(labels),
                )
                margins = np.asarray(features[held_rows] @ w) + b
                temperature = _best_temperature(margins, y[held_rows])
        weights, bias = _linear_model(features, y, weight, classifier, regularisation, len(labels))
        info = {
            "trained_on": len(y),
            "classifier": classifier,
            "regularisation": regularisation,
            "temperature": temperature,
            **(meta or {}),
        }
        dense_weights = profile_weights = None
        if spec.profile_scale:
            info["profile_features"] = _PROFILE_NAMES
            profile_weights = weights[-PROFILE_DIM:] * temperature
            weights = weights[:-PROFILE_DIM]
        if spec.embedding:
            info["embedding_digest"] = embedding_digest(spec.embedding)
            dense_weights = weights[spec.buckets :] * temperature
            weights = weights[: spec.buckets]
        quantised, scales = quantise_weights(weights * temperature)
        return cls(
            taxonomy, labels, spec, idf, quantised, scales, bias * temperature, info, dense_weights, profile_weights
        )


def _profile_row_scale(spec: FeatureSpec) -> float:
    """What a profile one-hot row is multiplied by: unit length (every row has ``len(PROFILE)``
    ones), times the spec's weight."""
    return spec.profile_scale / float(np.sqrt(len(PROFILE)))


def quantise_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights and one scale per label column (symmetric, max-abs / 127)."""
    scales = np.abs(weights).max(axis=0) / 127.0
    scales[scales == 0] = 1.0
    return np.round(weights / scales).astype(np.int8), scales.astype(np.float32)


def _linear_model(
    features: Any, y: np.ndarray, weight: np.ndarray | None, classifier: str, regularisation: float, n_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (features × labels) and bias; a label absent from ``y`` gets a bias that never wins."""
    if classifier == "svm":
        from sklearn.svm import LinearSVC  # lazy: scikit-learn only when training

        model = LinearSVC(C=regularisation, random_state=0, max_iter=5000)
    elif classifier == "logreg":
        from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn only when training

        model = LogisticRegression(C=regularisation, max_iter=500)
    else:
        raise ValueError(f"unknown classifier {classifier!r} (svm or logreg)")
    present = np.unique(y)
    weights = np.zeros((features.shape[1], n_labels), dtype=np.float32)
    bias = np.full(n_labels, -30.0, dtype=np.float32)
    if len(present) == 1:
        bias[present] = 0.0
        return weights, bias
    model.fit(features, y, sample_weight=weight)
    coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
    if len(present) == 2:  # scikit-learn keeps one row for two classes: split it symmetrically
        coef = np.vstack([-coef[0], coef[0]]) / 2
        intercept = np.array([-intercept[0], intercept[0]]) / 2
    weights[:, present] = coef.T
    bias[present] = intercept
    return weights, bias


def _best_temperature(margins: np.ndarray, y: np.ndarray) -> float:
    """The scale of the margins with the lowest log-loss on held-out rows (a fixed log grid)."""
    best, best_loss = 1.0, np.inf
    for scale in np.logspace(-1, 2, 61):
        z = margins * scale
        z = z - z.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -float(np.mean(log_probs[np.arange(len(y)), y]))
        if loss < best_loss:
            best, best_loss = float(scale), loss
    return best


def _write_member(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, payload, compresslevel=9)


# --- reference mode: a local sequence-classification checkpoint ---------------------------


class ReferenceTagger:
    """WebOrganizer's own classifier (or any local ``AutoModelForSequenceClassification`` dir).

    ``trust_remote_code`` is honoured only for a local directory (gte-base ships custom code);
    nothing is fetched. Inputs are truncated to the model's maximum length, as in the paper.
    """

    def __init__(
        self,
        path: str,
        taxonomy: str,
        use_url: bool = True,
        max_length: int | None = None,
        batch_size: int = 16,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ):
        import torch  # lazy: torch only for transformer models
        from transformers import (  # lazy: transformers only for reference-mode checkpoints
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        local = resolve_model_path(path)
        if not local.is_dir():
            raise ValueError(f"reference tagger {path} must be a local checkpoint directory")
        self.taxonomy = taxonomy
        self.labels = TAXONOMIES[taxonomy]
        self.use_url = use_url
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(local), local_files_only=True, trust_remote_code=trust_remote_code
        )
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                str(local), local_files_only=True, trust_remote_code=trust_remote_code
            )
            .to(device)
            .eval()
        )
        n_labels = int(self.model.config.num_labels)
        if n_labels != len(self.labels):
            raise ValueError(f"{path} has {n_labels} labels; the {taxonomy} taxonomy has {len(self.labels)}")
        limits = [
            value
            for value in (max_length, getattr(self.model.config, "max_position_embeddings", None))
            if isinstance(value, int) and value > 0
        ]
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 1_000_000:
            limits.append(tokenizer_limit)
        self.max_length = min(limits) if limits else 512
        self.version = file_digest(local)
        self._torch = torch

    def logits(self, texts: Sequence[str], urls: Sequence[str | None] | None = None) -> np.ndarray:
        urls = list(urls) if urls is not None else [None] * len(texts)
        inputs = [tagger_input(t or "", u, self.use_url) for t, u in zip(texts, urls, strict=True)]
        rows = []
        with self._torch.inference_mode():
            for start in range(0, len(inputs), self.batch_size):
                encoded = self.tokenizer(
                    inputs[start : start + self.batch_size],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                rows.append(self.model(**encoded).logits.float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def probabilities(
        self, texts: Sequence[str], urls: Sequence[str | None] | None = None, shared: BatchFeatures | None = None
    ) -> np.ndarray:
        """Softmax of the logits (``shared`` is accepted for ``tag_probabilities`` and unused: the
        checkpoint computes its own inputs)."""
        return exact.softmax(self.logits(texts, urls)).astype(np.float32)


def tag_probabilities(
    taggers: Mapping[str, LinearTagger | ReferenceTagger], texts: Sequence[str], urls: Sequence[str | None]
) -> dict[str, np.ndarray]:
    """Every tagger's probabilities for one batch, the shared feature pieces computed once
    (``BatchFeatures``): what the tag stage runs. Each row is what the tagger gives alone."""
    shared = BatchFeatures(texts, urls)
    return {name: tagger.probabilities(texts, urls, shared) for name, tagger in taggers.items()}


def load_tagger(
    taxonomy: str,
    mode: str,
    path: str,
    use_url: bool = True,
    max_length: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> LinearTagger | ReferenceTagger:
    """The tagger a config entry names (``mode`` ``local`` or ``reference``)."""
    if mode == "local":
        tagger = LinearTagger.load(path)
        if tagger.taxonomy != taxonomy or tagger.labels != TAXONOMIES[taxonomy]:
            raise ValueError(f"{path} tags {tagger.taxonomy!r} with other labels; expected the {taxonomy} taxonomy")
        return tagger
    if mode == "reference":
        return ReferenceTagger(path, taxonomy, use_url, max_length, batch_size, device, trust_remote_code)
    raise ValueError(f"unknown tagger mode {mode!r}")


@dataclass(frozen=True)
class Tags:
    """One taxonomy's tags for a batch: argmax ids, their names and probabilities, all probabilities."""

    ids: np.ndarray
    names: list[str]
    scores: np.ndarray
    probabilities: np.ndarray


def tags_from_probabilities(probabilities: np.ndarray, labels: Sequence[str]) -> Tags:
    """The argmax label of each row (lowest id on ties) and its probability."""
    probs = np.asarray(probabilities, dtype=np.float32)
    ids = np.argmax(probs, axis=1)
    return Tags(ids, [labels[i] for i in ids], probs[np.arange(len(ids)), ids], probs)


# --- labelled data -----------------------------------------------------------------------------


@dataclass
class LabelledExamples:
    """Texts, URLs, target ids, label weights and the source row ids of a labelled file."""

    ids: list[str]
    texts: list[str]
    urls: list[str | None]
    targets: np.ndarray
    weights: np.ndarray | None

    def subset(self, mask: np.ndarray) -> LabelledExamples:
        rows = np.flatnonzero(mask)
        return LabelledExamples(
            [self.ids[i] for i in rows],
            [self.texts[i] for i in rows],
            [self.urls[i] for i in rows],
            self.targets[rows],
            None if self.weights is None else self.weights[rows],
        )


def label_id(value: Any, labels: Sequence[str]) -> int:
    """A label given as an id (int or digit string) or as a name, as its id in ``labels``."""
    if isinstance(value, bool):
        raise ValueError(f"label {value!r} is not an id or a name")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(labels):
            return index
        raise ValueError(f"label id {index} is outside 0..{len(labels) - 1}")
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    raise ValueError(f"unknown label {value!r}")


def labelled_examples(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    text_field: str = "text",
    label_field: str = "topic",
    weight_field: str | None = None,
    url_field: str | None = "url",
    id_field: str = "id",
) -> LabelledExamples:
    """Training examples from JSON rows; rows without text or label are skipped."""
    ids, texts, urls, targets, weights = [], [], [], [], []
    for number, row in enumerate(rows):
        text = row.get(text_field)
        label = row.get(label_field)
        if not isinstance(text, str) or not text.strip() or label is None:
            continue
        targets.append(label_id(label, labels))
        texts.append(text)
        urls.append(row.get(url_field) if url_field else None)
        ids.append(str(row.get(id_field, number)))
        if weight_field:
            weights.append(float(row.get(weight_field, 1.0)))
    return LabelledExamples(
        ids, texts, urls, np.asarray(targets, dtype=np.int64), np.asarray(weights) if weight_field else None
    )
