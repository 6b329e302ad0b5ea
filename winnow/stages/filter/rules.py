"""Heuristic quality rules: C4, Gopher quality, Gopher repetition and FineWeb, as pure functions.

Each rule is reimplemented from its published definition (C4: Raffel et al. 2020 §2.2 and
tfds ``c4_utils``; Gopher: Rae et al. 2021, appendix A1; FineWeb: Penedo et al. 2024) and
cross-checked against datatrove 0.10.1, the reference implementation most pipelines copy
(``bench/filter_agreement.py`` measures the agreement). Thresholds come from the config;
defaults are those of datatrove/FineWeb, which DCLM's RefinedWeb reproduction also uses.

Design:

* ``DocStats`` computes what several rules share (lines, words, paragraphs) once per text.
* A rule takes ``DocStats`` plus its thresholds and returns ``None`` (keep) or a ``Drop``.
* ``FilterChain`` runs the enabled groups in order; the C4 line filter is the only one that
  rewrites the text, and it reports how many lines and characters it removed.

Words: datatrove splits words with spaCy's English tokenizer. spaCy is a heavy dependency
for splitting words, so ``split_words`` reimplements, with a few regular expressions, the
spaCy rules that move the ratios (punctuation split off words, ``n't``/``'s`` contractions,
hyphens as tokens, URLs and numbers such as ``3.5`` or ``1,000`` kept whole, common
abbreviations such as ``Mr.`` or ``U.S.`` kept whole). It is ~20x faster than spaCy and
the bench reports what the approximation costs in agreement. A chunk's tokens depend on the
chunk alone, so they are memoised per process (``_CHUNK_CACHE``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress, count, filterfalse, repeat
from typing import Any

import numpy as np

from winnow.core.memo import memoised_values
from winnow.stages.filter.blocklist import UrlBlocklist

# ---------------------------------------------------------------------------------------------
# Character classes

# Unicode Sentence_Terminal characters of living scripts (BMP): the line-ending test of
# FineWeb and the sentence boundaries of spaCy's sentencizer both use this property.
SENTENCE_TERMINALS = frozenset(
    ".!?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼。꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？｡\u061d\u1b7d\u1b7e\u2e53\u2e54"
)
_TERMINALS_TUPLE = tuple(SENTENCE_TERMINALS)

# "Symbol" characters for Gopher's word counts: a token made only of these is not a word.
# Unicode punctuation (P*) plus the ASCII symbols and control characters.
_EXTRA_SYMBOLS = "$+<=>^`|~►\x7f"


def _symbol_chars() -> str:
    chars = [chr(c) for c in range(0x10000) if unicodedata.category(chr(c)).startswith("P")]
    chars += [chr(c) for c in range(32)] + [chr(c) for c in range(0x80, 0xA0)]
    chars += list(_EXTRA_SYMBOLS)
    # Tokens never hold whitespace, so whitespace is left out of the class.
    return "".join(sorted(c for c in set(chars) if not c.isspace()))


_SYMBOLS = _symbol_chars()
_SYMBOL_CLASS = "[" + re.escape(_SYMBOLS) + "]"
_PUNCT_ONLY = re.compile(r"[" + re.escape("".join(c for c in _SYMBOLS if unicodedata.category(c)[0] == "P")) + r"]+")

# ---------------------------------------------------------------------------------------------
# Words: a reimplementation of the rules of spaCy's English tokenizer (whitespace chunks,
# then prefixes/suffixes peeled off, special cases, then infixes), without spaCy.


def _char_class(pred: Any, limit: int = 0x10000) -> str:
    """A regex character class body for every code point below ``limit`` where ``pred`` holds."""
    out: list[str] = []
    start = None
    for cp in range(limit + 1):
        ok = cp < limit and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            a, b = re.escape(chr(start)), re.escape(chr(cp - 1))
            out.append(a if start == cp - 1 else f"{a}-{b}")
            start = None
    return "".join(out)


def _split(spaced: str) -> list[str]:
    """A space-separated list written as one string (the lists below are long)."""
    return spaced.split()


_ALPHA = _char_class(str.isalpha)
_LOWER = _char_class(lambda c: c.isalpha() and not c.isupper())  # lower case and uncased scripts
_UPPER = _char_class(lambda c: c.isalpha() and not c.islower())  # upper case and uncased scripts
_ICONS = _char_class(lambda c: unicodedata.category(c) == "So", 0x1FB00)
_PUNCT_CHARS = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_UNITS = _split(
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh "
    "mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %"
)
_HYPHENS = "--|---|——|[-–—~]"


def _alternation(items: Iterable[str]) -> str:
    return "|".join(sorted({re.escape(i) for i in items}, key=len, reverse=True))


_SINGLE = re.escape(_PUNCT_CHARS + _QUOTES)
_PREFIX = re.compile(rf"^(?:US\$|C\$|A\$|\.\.+|……|[§%=—–]|\+(?![0-9])|[{_SINGLE}]|[{re.escape(_CURRENCY)}]|[{_ICONS}])")
_SUFFIX = re.compile(
    rf"(?:\.\.+|……|[{_SINGLE}]|[{_ICONS}]|['’][sS]|[—–]|(?<=[0-9])\+|(?<=°[FfCcKk])\."
    rf"|(?<=[0-9])(?:US\$|C\$|A\$|[{re.escape(_CURRENCY)}])|(?<=[0-9])(?:{_alternation(_UNITS)})"
    rf"|(?<=[0-9{_LOWER}%²\-+{re.escape(_PUNCT_CHARS + _QUOTES)}])\.|(?<=[{_UPPER}][{_UPPER}])\.)$"
)
_INFIX = re.compile(
    rf"\.\.+|…|[{_ICONS}]|(?<=[0-9])[+\-*^](?=[0-9-])"
    rf"|(?<=[{_LOWER}{re.escape(_QUOTES)}])\.(?=[{_UPPER}{re.escape(_QUOTES)}])"
    rf"|(?<=[{_ALPHA}]),(?=[{_ALPHA}])|(?<=[{_ALPHA}0-9])(?:{_HYPHENS})(?=[{_ALPHA}])"
    rf"|(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])"
)
# Every alternative of _SUFFIX but a run of dots matches at most this many characters ("mbar", "km/h").
_SUFFIX_SPAN = max(2, len("US$"), *map(len, _UNITS))


def _suffix_match(s: str) -> re.Match[str] | None:
    """``_SUFFIX.search(s)``, but tried only where a suffix can start: the regex is a long alternation
    anchored at the end, and trying it at every position of a long chunk was most of the splitting cost.
    Look-behinds still see the characters before the start position, so the match is the same."""
    if s.endswith(".."):
        return _SUFFIX.search(s)
    return _SUFFIX.search(s, max(0, len(s) - _SUFFIX_SPAN))


_URL = re.compile(r"^(?:(?:https?|ftp)://|www\.)\S+$|^[\w.+-]+@[\w-]+\.[\w.-]+$")


def _special_cases() -> dict[str, list[str]]:
    """Tokens spaCy treats as a unit or splits in a fixed way: contractions, abbreviations, emoticons."""
    out: dict[str, list[str]] = {}

    def add(parts: list[str], cased: bool = True) -> None:
        out["".join(parts)] = parts
        if cased and parts[0][:1].isalpha():
            title = [parts[0][:1].upper() + parts[0][1:], *parts[1:]]
            out["".join(title)] = title

    negatable = _split(
        "are ca could dare did does do had has have is may might must need ought sha should was were wo would ai"
    )
    for verb in negatable:
        for neg in ("n't", "nt", "n’t"):
            add([verb, neg])
    # Which clitics each word takes; apostrophe-less forms that are real words are left alone.
    clitics = {
        "i": "d ll m ve",
        "you": "d ll re ve",
        "he": "d ll s",
        "she": "d ll s",
        "it": "d ll s",
        "we": "d ll re ve",
        "they": "d ll re ve",
        "that": "d ll s",
        "there": "d ll re s ve",
        "these": "d ll re ve",
        "this": "d ll s",
        "those": "d ll re ve",
        "what": "d ll re s ve",
        "when": "d ll re s ve",
        "where": "d ll re s ve",
        "who": "d ll s ve",
        "why": "d ll re s ve",
        "how": "d ll re s ve",
    }
    real_words = {"ill", "its", "hell", "shell", "shed", "were", "well", "whore"}
    for word, suffixes in clitics.items():
        for suffix in suffixes.split():
            for apo in ("'", "’", ""):
                if apo or word + suffix not in real_words:
                    add([word, apo + suffix])
    for modal in _split("could might must should would"):
        for apo in ("'", "’", ""):
            add([modal, apo + "ve"])
    add(["can", "not"])
    add(["gon", "na"])
    add(["got", "ta"])
    add(["I", "m", "a"], cased=False)
    for hour in range(1, 13):
        for suffix in ("am", "pm", "a.m.", "p.m."):
            out[f"{hour}{suffix}"] = [str(hour), suffix]
    keep = _split(
        "Mr. Mrs. Ms. Dr. Prof. St. Jr. Sr. Rev. Gen. Gov. Sen. Rep. Adm. Bros. Messrs. Mt. vs. v.s. Inc. Ltd. "
        "Co. co. Corp. Ph.D. D.C. a.m. p.m. e.g. E.g. E.G. i.e. I.e. I.E. Jan. Feb. Mar. Apr. Jun. Jul. Aug. "
        "Sep. Sept. Oct. Nov. Dec. Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ia. Id. Ill. Ind. Kan. "
        "Kans. Ky. La. Mass. Md. Mich. Minn. Miss. Mo. Mont. Neb. Nebr. Nev. N.C. N.D. N.H. N.J. N.M. N.Y. "
        "Okla. Ore. Pa. S.C. Tenn. Va. Wash. Wis. and/or w/o C++ '' ’’ — 'em 'bout 'cause 'cos 'nuff "
        "o'clock O'clock ma'am Ma'am :) :( :-) :-( ;) ;-) :D :P :p :/ :-/ :o :O :| <3 </3 8) 8-) (: ): =) =( "
        "^_^ -_- o_O O_o xD XD :') :'( ¯\\(ツ)/¯"
    )
    for token in keep:
        out[token] = [token]
    for letter in "abcdefghijklmnopqrstuvwxyzäöü":
        out[letter + "."] = [letter + "."]
    return out


_SPECIALS = _special_cases()
# Special cases made of affix characters (":)", "''", "‘s"): spaCy re-joins their pieces.
_REJOIN = frozenset(k for k, v in _SPECIALS.items() if len(v) == 1 and not k.isalnum())
# A re-join starts at a token that is a proper prefix of one of them; other tokens skip the look-ups.
_REJOIN_STARTS = frozenset(k[:i] for k in _REJOIN for i in range(1, len(k)))


def _rejoin(tokens: list[str]) -> list[str]:
    if _REJOIN_STARTS.isdisjoint(tokens[:-1]):
        return tokens
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for j in range(min(len(tokens), i + 4), i + 1, -1) if tokens[i] in _REJOIN_STARTS else ():
            if "".join(tokens[i:j]) in _REJOIN:
                out.append("".join(tokens[i:j]))
                i = j
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _split_chunk(chunk: str) -> list[str]:
    """One whitespace-free chunk into tokens, by spaCy's affix and infix procedure."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    s = chunk
    last = -1
    while s and len(s) != last:
        if s in _SPECIALS:
            break
        last = len(s)
        m = _PREFIX.search(s)
        pre = m.end() if m else 0
        if pre and s[pre:] in _SPECIALS:
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        m = _suffix_match(s[pre:])
        suf = (m.end() - m.start()) if m else 0
        if suf and s[:-suf] in _SPECIALS:
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
        if s in _SPECIALS:
            break
    out = prefixes
    if s:
        special = _SPECIALS.get(s)
        if special is not None:
            out.extend(special)
        elif _URL.match(s):
            out.append(s)
        else:
            start = 0
            for m in _INFIX.finditer(s):
                if m.start() == 0:
                    continue
                if m.start() != start:
                    out.append(s[start : m.start()])
                if m.end() != m.start():
                    out.append(m.group())
                start = m.end()
            if s[start:]:
                out.append(s[start:])
    out.extend(reversed(suffixes))
    return _rejoin(out) if len(out) > 1 else out


def _chunk_tokens(chunk: str, fast_paths: bool = True) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk (``fast_paths=False``: always by the full procedure).

    The fast paths (``_common_shape_tokens``) give the same tokens as the full procedure for the
    commonest shapes without running it.
    """
    special = _SPECIALS.get(chunk)
    if special is not None:
        return tuple(special)
    if chunk.isalpha() or chunk.isdigit():
        return (chunk,)
    shaped = _common_shape_tokens(chunk) if fast_paths and len(chunk) > 1 else None
    return shaped if shaped is not None else tuple(_split_chunk(chunk))


def _common_shape_tokens(chunk: str) -> tuple[str, ...] | None:
    """A word with one suffix after it ("end,", "firm's", "so...") or one character before it ("(see"), or
    two words joined by a hyphen ("well-known"); None for any other shape.

    Letters alone never match a prefix, suffix, infix or URL rule, so when the procedure would peel
    exactly that suffix or character off, or split at exactly that hyphen (and no special case is
    involved), the words and the affix are its tokens.
    """
    m = _suffix_match(chunk)
    if m is not None:
        word = chunk[: m.start()]
        if word.isalpha() and word not in _SPECIALS and _PREFIX.match(chunk) is None:
            return (word, chunk[m.start() :])
    else:
        head, hyphen, tail = chunk.partition("-")
        if hyphen and head.isalpha() and tail.isalpha() and _PREFIX.match(chunk) is None:
            m = _INFIX.search(chunk)
            if m is not None and m.span() == (len(head), len(head) + 1) and not _URL.match(chunk):
                return tuple(_rejoin([head, hyphen, tail]))
    word = chunk[1:]
    if word.isalpha() and word not in _SPECIALS:
        m = _PREFIX.match(chunk)
        if m is not None and m.end() == 1:
            return (chunk[0], word)
    return None


# Chunk -> tokens, shared by every text this process splits. Web text repeats its chunks ("the",
# "it.", "(see") so most lookups hit, which turns the per-chunk affix procedure into one dict
# lookup. Results are a pure function of the chunk, so the cache cannot change any output; it is
# emptied when full to bound memory (about 45 MB when full, measured on web text).
_CHUNK_CACHE: dict[str, tuple[str, ...]] = {}
_CHUNK_CACHE_SIZE = 1 << 18


def split_words(text: str) -> list[str]:
    """Word and punctuation tokens, by the rules of spaCy's English tokenizer (see module doc)."""
    parts = memoised_values(text.split(), _CHUNK_CACHE, _chunk_tokens, _CHUNK_CACHE_SIZE)
    return list(chain.from_iterable(parts))


def count_sentences(words: Sequence[str], stop_at: int | None = None) -> int:
    """Sentences in a tokenised line, by spaCy's sentencizer rule.

    A new sentence starts at the first non-punctuation token after a sentence terminal.
    """
    if not words:
        return 0
    count, seen_terminal = 1, False
    for word in words:
        if word in SENTENCE_TERMINALS:
            seen_terminal = True
        elif seen_terminal and not _PUNCT_ONLY.fullmatch(word):
            count += 1
            seen_terminal = False
            if stop_at is not None and count >= stop_at:
                return count
    return count


# ---------------------------------------------------------------------------------------------
# Shared statistics


class DocStats:
    """Per-document values shared by several rules, computed on first use only."""

    __slots__ = ("__dict__", "text")

    _PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
    _LINE_SPLIT = re.compile(r"\n+")

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return split_words(self.text)

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def nonblank_lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]

    @cached_property
    def _token_classes(self) -> list[int]:
        """Per word that is not all letters: 1 if it holds a letter, ``-len`` if it is made only of
        symbols, else 0 (see ``_token_class``); an all-letter word is class 1 and is counted apart.

        Most words are all letters, which ``str.isalpha`` tells at C speed; only the others are looked
        up in a per-process memo (a lookup in a large dict is a cache miss, the main cost here).
        """
        others = list(filterfalse(str.isalpha, self.words))
        return memoised_values(others, _TOKEN_CLASS_CACHE, _token_class, _TOKEN_CLASS_CACHE_SIZE)

    @cached_property
    def symbol_token_chars(self) -> tuple[int, int]:
        """(number, total length) of tokens made only of punctuation/symbols."""
        classes = self._token_classes
        n_alpha = classes.count(1)
        # Classes sum to n_alpha minus the symbol tokens' total length.
        return len(classes) - n_alpha - classes.count(0), n_alpha - sum(classes)

    @cached_property
    def alpha_token_count(self) -> int:
        return len(self.words) - len(self._token_classes) + self._token_classes.count(1)

    @cached_property
    def word_chars(self) -> int:
        """Characters in all words (whitespace excluded)."""
        return sum(map(len, self.words))

    def span_chars(self, start: int, n: int) -> int:
        """Characters in ``words[start:start + n]`` (the n-gram rules need a few spans, not every offset)."""
        return sum(map(len, self.words[start : start + n]))

    @cached_property
    def word_ids(self) -> np.ndarray:
        """Each word's id, ids numbered in order of first occurrence."""
        ids = dict(zip(dict.fromkeys(self.words), count()))
        return np.fromiter(map(ids.__getitem__, self.words), dtype=np.uint64, count=len(self.words))

    @cached_property
    def _ngram_keys_by_n(self) -> dict[int, np.ndarray]:
        return {}

    def ngram_keys(self, n: int) -> np.ndarray:
        """One 64-bit key per word n-gram: a polynomial hash (collisions are negligible at 2^-64).

        ``key_n[i] = key_(n-1)[i] * M + id[i + n - 1] + 1``, so each n costs one vector step from n-1.
        """
        if n < 1:
            raise ValueError(f"n-gram size must be at least 1, got {n}")
        done = self._ngram_keys_by_n
        if n in done:
            return done[n]
        k = max((m for m in done if m <= n), default=0)
        keys = done[k] if k else np.zeros(len(self.words) + 1, dtype=np.uint64)
        ids = self.word_ids
        with np.errstate(over="ignore"):
            while k < n:
                k += 1
                m = len(ids) - k + 1
                keys = done[k] = keys[:m] * _NGRAM_MULT + (ids[k - 1 : k - 1 + m] + np.uint64(1))
        return keys

    @cached_property
    def _groups_by_n(self) -> dict[int, _KeyGroups]:
        return {}

    def ngram_groups(self, n: int) -> _KeyGroups:
        """The n-grams grouped (cached: the top n-gram rules use them, and the repeated n-gram scan of a
        larger size starts from the largest of them)."""
        groups = self._groups_by_n.get(n)
        if groups is None:
            groups = self._groups_by_n[n] = _KeyGroups(self.ngram_keys(n))
        return groups

    @cached_property
    def _repeated_by_n(self) -> dict[int, tuple[list[int], list[Any]]]:
        return {}

    def repeated_ngrams(self, n: int) -> tuple[list[int], list[Any]]:
        """Positions (ascending) where an n-gram starts that occurs more than once, and a label each
        (equal labels: equal n-grams).

        An n-gram can only repeat where its leading (n-1)-gram repeats, so once a smaller size is
        done only its repeated positions are looked at, and the work shrinks as n grows. They are
        few in most documents, and then a Counter over (smaller label, next words) costs less than
        numpy's per-call overhead.
        """
        done = self._repeated_by_n
        if n not in done:
            smaller = max((m for m in done if m < n), default=0)
            grouped = max((m for m in self._groups_by_n if m < n), default=0)
            if grouped > smaller:  # the repeated positions of an n-gram size grouped already
                groups = self._groups_by_n[grouped]
                inverse = groups.inverse()
                repeated = groups.counts[inverse] > 1
                done[grouped] = (repeated.nonzero()[0].tolist(), inverse[repeated].tolist())
                smaller = grouped
            if smaller and len(done[smaller][0]) <= _PYTHON_GROUPING_MAX:
                last = len(self.words) - n  # the last position where an n-gram starts
                ids = self._word_id_list
                starts = [(p, label) for p, label in zip(*done[smaller], strict=True) if p <= last]
                grams = [(label, *ids[p + smaller : p + n]) for p, label in starts]
                counts = Counter(grams)
                repeated = [counts[gram] > 1 for gram in grams]
                done[n] = ([p for p, _ in compress(starts, repeated)], list(compress(grams, repeated)))
                return done[n]
            keys = self.ngram_keys(n)
            positions = np.array(done[smaller][0], dtype=np.intp) if smaller else np.arange(len(keys))
            positions = positions[positions < len(keys)]
            if len(positions) == 0:  # nothing repeats at a smaller size, so nothing larger can
                done[n] = ([], [])
                return done[n]
            groups = _KeyGroups(keys[positions])
            inverse = groups.inverse()
            repeated = groups.counts[inverse] > 1
            done[n] = (positions[repeated].tolist(), inverse[repeated].tolist())
        return done[n]

    @cached_property
    def _word_id_list(self) -> list[int]:
        return self.word_ids.tolist()


# Up to this many candidate positions the repeated n-grams are grouped in plain Python (numpy beyond).
_PYTHON_GROUPING_MAX = 64
_NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)


_SYMBOL_TOKEN = re.compile(_SYMBOL_CLASS + "+")
_HAS_LETTER = re.compile(r"[^\W\d_]")


def _token_class(token: str) -> int:
    """1: the token holds a letter (Gopher's alpha words); ``-len(token)``: it is made only of symbols
    (not a word for Gopher's counts); 0: neither. Symbol characters are never letters, so the classes
    do not overlap."""
    if token.isalpha() or _HAS_LETTER.search(token):
        return 1
    return -len(token) if _SYMBOL_TOKEN.fullmatch(token) else 0


# Token -> class, a pure function of the token (so it cannot change any output); emptied when full.
_TOKEN_CLASS_CACHE: dict[str, int] = {}
_TOKEN_CLASS_CACHE_SIZE = 1 << 18


class _KeyGroups:
    """Equal keys grouped, as ``np.unique`` does but with a fraction of its per-call overhead (it runs
    several times per document on a few hundred keys): each group's first index (``first``) and size
    (``counts``), and on demand each key's group (``inverse``)."""

    __slots__ = ("_order", "_starts_group", "counts", "first")

    def __init__(self, keys: np.ndarray):
        order = keys.argsort(kind="stable")  # stable: a group's first entry is its first occurrence
        sorted_keys = keys[order]
        starts_group = np.empty(len(keys), dtype=bool)
        starts_group[:1] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts_group[1:])
        starts = starts_group.nonzero()[0]
        self.counts = np.append(starts[1:], len(keys)) - starts
        self.first = order[starts]
        self._order, self._starts_group = order, starts_group

    def inverse(self) -> np.ndarray:
        groups = np.empty(len(self._order), dtype=np.intp)
        groups[self._order] = self._starts_group.cumsum() - 1
        return groups


@dataclass(frozen=True)
class Drop:
    """A rule fired: its name (the reason is ``filter:<rule>``) and the measured value."""

    rule: str
    value: float | int | None = None
    threshold: float | int | None = None


# ---------------------------------------------------------------------------------------------
# C4 (Raffel et al. 2020, §2.2; tfds c4_utils)

C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_POLICY = re.compile("|".join(map(re.escape, C4_POLICY_SUBSTRINGS)))
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


@dataclass
class LineFilterResult:
    """Outcome of the C4 line filter: the kept text or a document-level drop."""

    text: str
    lines_removed: int
    chars_removed: int
    removed_by: dict[str, int] = field(default_factory=dict)
    drop: Drop | None = None


def c4_filter_lines(
    text: str,
    *,
    remove_citations: bool = True,
    terminal_punctuation: bool = True,
    min_words_per_line: int = 3,
    max_word_length: int = 1000,
    lorem_ipsum: bool = True,
    javascript: bool = True,
    curly_bracket: bool = True,
    policy: bool = True,
    min_sentences: int = 5,
    badwords: re.Pattern[str] | None = None,
    keep_paragraphs: bool = False,
) -> LineFilterResult:
    """C4's line rules, then its page rules on what is left.

    Lines must end in terminal punctuation (not an ellipsis), have ``min_words_per_line``
    whitespace-separated words and no word longer than ``max_word_length``; lines naming
    javascript or a cookie/terms policy go. A page with "lorem ipsum" or a curly bracket in
    a surviving line, or fewer than ``min_sentences`` sentences left, is dropped whole.
    Checks run in C4's order, so which rule claims a line matches the reference.

    C4 joins the kept lines with single newlines, which erases paragraphs; with
    ``keep_paragraphs`` a blank line between kept lines survives as one, so that the Gopher
    paragraph rules that run after this one still see paragraphs (blank lines are then not
    counted as removed).
    """
    kept: list[str] = []
    removed_by: dict[str, int] = {}
    sentences = 0
    lines = text.splitlines()

    def remove(why: str) -> None:
        removed_by[why] = removed_by.get(why, 0) + 1

    breaks: list[bool] = []  # per kept line: a blank line came before it
    pending_break = False
    # The substring rules, decided for the whole text first: a line's lowered text (citations removed)
    # is a substring of the whole text's, so a phrase absent from the whole text is absent from every
    # line and most pages skip the per-line lowering and searches.
    flat = (_CITATION.sub("", text) if remove_citations and "[" in text else text).lower()
    lorem_ipsum = lorem_ipsum and "lorem ipsum" in flat
    javascript = javascript and "javascript" in flat
    curly_bracket = curly_bracket and "{" in text
    policy = policy and _POLICY.search(flat) is not None
    any_phrase = lorem_ipsum or javascript or policy
    # At least ``min_words_per_line`` words: splitting off that many (maxsplit) tells, without
    # splitting the whole line.
    max_split = min_words_per_line - 1
    for raw in lines:
        line = raw.strip()
        if keep_paragraphs and not line:
            pending_break = bool(kept)
            continue
        uncited = line  # words are counted before citations go, as C4 does
        if max_word_length >= 0 and len(line) > max_word_length and max(map(len, line.split())) > max_word_length:
            remove("too_long_word")
            continue
        if remove_citations and "[" in line:
            line = _CITATION.sub("", line)
        if terminal_punctuation and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
            remove("no_terminal_punct")
            continue
        if max_split >= 0 and len(uncited.split(None, max_split)) < min_words_per_line:
            remove("too_few_words")
            continue
        lower = line.lower() if any_phrase else ""
        if lorem_ipsum and "lorem ipsum" in lower:
            return LineFilterResult(text, 0, 0, removed_by, Drop("c4_lorem_ipsum"))
        if javascript and "javascript" in lower:
            remove("javascript")
            continue
        if curly_bracket and "{" in line:
            return LineFilterResult(text, 0, 0, removed_by, Drop("c4_curly_bracket"))
        if policy and _POLICY.search(lower):
            remove("policy")
            continue
        if min_sentences > 0 and sentences < min_sentences:
            sentences += count_sentences(split_words(line), stop_at=min_sentences - sentences + 1)
        kept.append(line)
        breaks.append(pending_break)
        pending_break = False
    if sentences < min_sentences:
        return LineFilterResult(text, 0, 0, removed_by, Drop("c4_min_sentences", sentences, min_sentences))
    if keep_paragraphs:
        new_text = "".join(("\n\n" if brk else "\n") + line for line, brk in zip(kept, breaks, strict=True)).strip()
        n_removed = sum(removed_by.values())
    else:
        new_text = "\n".join(kept).strip()
        n_removed = len(lines) - len(kept)
    if badwords is not None and badwords.search(new_text.lower()):
        return LineFilterResult(text, 0, 0, removed_by, Drop("c4_badwords"))
    return LineFilterResult(new_text, n_removed, max(len(text) - len(new_text), 0), removed_by)


def compile_badwords(words: Iterable[str], no_spaces: bool = False) -> re.Pattern[str] | None:
    """C4's bad-words test: any listed word, as a whole word (substring for CJK/Thai)."""
    escaped = sorted({re.escape(w.strip().lower()) for w in words if w.strip()}, key=len, reverse=True)
    if not escaped:
        return None
    body = "|".join(escaped)
    return re.compile(body if no_spaces else rf"(?:\W|^)(?:{body})(?:\W|$)")


# ---------------------------------------------------------------------------------------------
# Gopher quality (Rae et al. 2021, appendix A1)

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


def gopher_word_count(s: DocStats, min_words: int | None = 50, max_words: int | None = 100_000) -> Drop | None:
    """Between 50 and 100,000 words; tokens made only of symbols are not words."""
    n = len(s.words) - s.symbol_token_chars[0]
    if (min_words and n < min_words) or (max_words and n > max_words):
        return Drop("gopher_word_count", n, min_words if min_words and n < min_words else max_words)
    return None


def gopher_mean_word_length(s: DocStats, min_len: float | None = 3, max_len: float | None = 10) -> Drop | None:
    """Mean word length in [3, 10] characters: outside is tables of numbers or run-on junk."""
    n_sym, sym_chars = s.symbol_token_chars
    n = len(s.words) - n_sym
    if n <= 0:
        return Drop("gopher_mean_word_length", 0, min_len)
    mean = (s.word_chars - sym_chars) / n
    if (min_len and mean < min_len) or (max_len and mean > max_len):
        return Drop("gopher_mean_word_length", round(mean, 3), min_len if min_len and mean < min_len else max_len)
    return None


def gopher_symbol_word_ratio(s: DocStats, max_ratio: float | None = 0.1) -> Drop | None:
    """At most 0.1 hash symbols or ellipses per word (hashtag spam, truncated teasers)."""
    if not max_ratio:
        return None
    n = len(s.words) or 1
    hashes = s.text.count("#") / n
    if hashes > max_ratio:
        return Drop("gopher_symbol_word_ratio", round(hashes, 4), max_ratio)
    ellipses = (s.text.count("...") + s.text.count("…")) / n
    if ellipses > max_ratio:
        return Drop("gopher_symbol_word_ratio", round(ellipses, 4), max_ratio)
    return None


def gopher_bullet_lines(s: DocStats, max_ratio: float | None = 0.9) -> Drop | None:
    """At most 90% of lines start with a bullet (menus, link lists)."""
    if not max_ratio or not s.lines:
        return None
    ratio = sum(map(str.startswith, map(str.lstrip, s.lines), repeat(("•", "-")))) / len(s.lines)
    return Drop("gopher_bullet_lines", round(ratio, 4), max_ratio) if ratio > max_ratio else None


def gopher_ellipsis_lines(s: DocStats, max_ratio: float | None = 0.3) -> Drop | None:
    """At most 30% of lines end with an ellipsis (lists of truncated teasers)."""
    if not max_ratio or not s.lines:
        return None
    ratio = sum(map(str.endswith, map(str.rstrip, s.lines), repeat(("...", "…")))) / len(s.lines)
    return Drop("gopher_ellipsis_lines", round(ratio, 4), max_ratio) if ratio > max_ratio else None


def gopher_alpha_words(s: DocStats, min_ratio: float | None = 0.8) -> Drop | None:
    """At least 80% of tokens contain a letter (punctuation tokens count against it)."""
    if not min_ratio:
        return None
    ratio = s.alpha_token_count / (len(s.words) or 1)
    return Drop("gopher_alpha_words", round(ratio, 4), min_ratio) if ratio < min_ratio else None


def gopher_stop_words(
    s: DocStats, min_stop_words: int | None = 2, stop_words: frozenset[str] = GOPHER_STOP_WORDS
) -> Drop | None:
    """At least two distinct English function words: real prose, not keyword lists."""
    if not min_stop_words:
        return None
    found = len(stop_words.intersection(s.words))
    return Drop("gopher_stop_words", found, min_stop_words) if found < min_stop_words else None


# ---------------------------------------------------------------------------------------------
# Gopher repetition (Rae et al. 2021, table A1)


def _duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(count, total length) of items equal to an earlier item: all items less one of each distinct
    item (C-level passes instead of a Python loop)."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


def top_ngram_char_fraction(s: DocStats, n: int) -> float:
    """Characters covered by the most frequent n-gram (space-joined length x count) / text length.

    Ties go to the n-gram seen first, as ``collections.Counter.most_common`` does.
    """
    if len(s.words) < n or not s.text:
        return 0.0
    groups = s.ngram_groups(n)
    first, counts = groups.first, groups.counts
    top = counts.max()
    best = int(first[counts == top].min())
    return (s.span_chars(best, n) + n - 1) * int(top) / len(s.text)


def duplicated_ngram_char_fraction(s: DocStats, n: int) -> float:
    """Characters in n-grams that repeat an earlier n-gram, counted without overlap / text length.

    Greedy left to right: a repeated n-gram counts its characters (words concatenated) and
    the scan jumps past it. Only n-grams that occur more than once can change the result, so
    the loop visits just those positions.
    """
    words = s.words
    if len(words) < n or not s.text:
        return 0.0
    repeated, grams = s.repeated_ngrams(n)
    if not repeated:
        return 0.0
    seen: set[Any] = set()
    chars, next_free = 0, 0
    for pos, gram in zip(repeated, grams, strict=True):
        if pos < next_free:
            continue
        if gram in seen:
            chars += s.span_chars(pos, n)
            next_free = pos + n
        else:
            seen.add(gram)
    return chars / len(s.text)


def gopher_repetition(
    s: DocStats,
    dup_line_frac: float | None = 0.3,
    dup_para_frac: float | None = 0.3,
    dup_line_char_frac: float | None = 0.2,
    dup_para_char_frac: float | None = 0.2,
    top_ngrams: Sequence[tuple[int, float]] = ((2, 0.2), (3, 0.18), (4, 0.16)),
    dup_ngrams: Sequence[tuple[int, float]] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)),
) -> Drop | None:
    """Gopher's repetition rules, cheapest first as in the paper's table: paragraphs, lines, n-grams."""
    text = s.text
    if not text:
        return Drop("empty")
    paragraphs = DocStats._PARAGRAPH_SPLIT.split(text.strip())
    count, chars = _duplicates(paragraphs)
    if dup_para_frac and count / len(paragraphs) > dup_para_frac:
        return Drop("gopher_dup_para_frac", round(count / len(paragraphs), 4), dup_para_frac)
    if dup_para_char_frac and chars / len(text) > dup_para_char_frac:
        return Drop("gopher_dup_para_char_frac", round(chars / len(text), 4), dup_para_char_frac)
    lines = DocStats._LINE_SPLIT.split(text)
    count, chars = _duplicates(lines)
    if dup_line_frac and count / len(lines) > dup_line_frac:
        return Drop("gopher_dup_line_frac", round(count / len(lines), 4), dup_line_frac)
    if dup_line_char_frac and chars / len(text) > dup_line_char_frac:
        return Drop("gopher_dup_line_char_frac", round(chars / len(text), 4), dup_line_char_frac)
    for n, limit in top_ngrams:
        frac = top_ngram_char_fraction(s, n)
        if frac > limit:
            return Drop(f"gopher_top_{n}gram", round(frac, 4), limit)
    for n, limit in dup_ngrams:
        frac = duplicated_ngram_char_fraction(s, n)
        if frac > limit:
            return Drop(f"gopher_dup_{n}gram", round(frac, 4), limit)
    return None


# ---------------------------------------------------------------------------------------------
# FineWeb (Penedo et al. 2024, §3.3)


def fineweb_quality(
    s: DocStats,
    line_punct_thr: float | None = 0.12,
    line_punct_exclude_zero: bool = False,
    short_line_thr: float | None = 0.67,
    short_line_length: int = 30,
    char_dup_ratio: float | None = 0.01,
    list_ratio: float | None = 0.3,
    stop_chars: tuple[str, ...] = _TERMINALS_TUPLE,
) -> Drop | None:
    """FineWeb's three custom rules plus its list-likeness test, in FineWeb's order.

    Too few lines ending in terminal punctuation, too many lines of at most 30 characters,
    more than 1% of characters in repeated lines, or more than 0.3 newlines per word.
    """
    lines = s.nonblank_lines
    if not lines:
        return Drop("empty")
    if line_punct_thr:
        ratio = sum(1 for line in lines if line.endswith(stop_chars)) / len(lines)
        if ratio < line_punct_thr and not (ratio == 0 and line_punct_exclude_zero):
            return Drop("fineweb_line_punct_ratio", round(ratio, 4), line_punct_thr)
    if short_line_thr:
        ratio = sum(1 for line in lines if len(line) <= short_line_length) / len(lines)
        if ratio > short_line_thr:
            return Drop("fineweb_short_line_ratio", round(ratio, 4), short_line_thr)
    if char_dup_ratio:
        chars = len(s.text) - s.text.count("\n")
        ratio = _duplicates(lines)[1] / chars if chars else 0.0
        if ratio > char_dup_ratio:
            return Drop("fineweb_char_dup_ratio", round(ratio, 4), char_dup_ratio)
    if list_ratio:
        ratio = s.text.count("\n") / (len(s.words) or 1)
        if ratio > list_ratio:
            return Drop("fineweb_list_ratio", round(ratio, 4), list_ratio)
    return None


# ---------------------------------------------------------------------------------------------
# The chain


@dataclass
class FilterResult:
    """What the chain decided for one document.

    ``flags`` (annotate mode) names every rule that fired, in chain order; ``drop`` is then None.
    """

    text: str
    drop: Drop | None = None
    lines_removed: int = 0
    chars_removed: int = 0
    flags: tuple[str, ...] = ()

    @property
    def kept(self) -> bool:
        return self.drop is None

    @property
    def reason(self) -> str | None:
        return None if self.drop is None else f"filter:{self.drop.rule}"


def blocklist_rule(list_name: str) -> str:
    """``url_blocklist_<list>``: the list name folded to ``[a-z0-9_]`` so the reason stays one token."""
    return "url_blocklist_" + (re.sub(r"[^a-z0-9_]+", "_", list_name.lower()).strip("_") or "list")


def load_url_blocklist(config: Any) -> UrlBlocklist | None:
    """The configured URL blocklists, read and checked (``BlocklistError`` names a bad file); None when unset."""
    settings = getattr(config, "url_blocklist", None)
    if settings is None:
        return None
    return UrlBlocklist.from_files(
        settings.files, settings.match, include_psl_private_domains=settings.include_psl_private_domains
    )


# A C4 page rule that fired, and the option that turns it off so annotate mode can look past it.
_C4_PAGE_RULES = {
    "c4_lorem_ipsum": ("lorem_ipsum", False),
    "c4_curly_bracket": ("curly_bracket", False),
    "c4_min_sentences": ("min_sentences", 0),
    "c4_badwords": ("badwords", None),
}


class FilterChain:
    """The enabled rule groups, in order, configured once from ``FilterConfig``.

    Order: URL blocklist → C4 lines (rewrites the text) → Gopher quality → Gopher repetition →
    FineWeb. In ``drop`` mode the first rule that fires decides the reason and later rules are not
    evaluated. In ``annotate`` mode every rule is evaluated on the text drop mode would judge it
    by, and the result lists every rule that fired (``flags``) and drops nothing; the first flag is
    the rule drop mode would report, and a document without flags has the text drop mode keeps.
    """

    def __init__(self, config: Any, blocklist: UrlBlocklist | None = None):
        self.config = config
        c4 = config.c4
        self._badwords: re.Pattern[str] | None = None
        if c4.enabled and c4.badwords_file:
            with open(c4.badwords_file, encoding="utf-8") as fh:
                self._badwords = compile_badwords(fh, no_spaces=c4.badwords_no_spaces)
        self.blocklist = blocklist if blocklist is not None else load_url_blocklist(config)
        self.annotate = getattr(config, "mode", "drop") == "annotate"

    def _c4_options(self) -> dict[str, Any]:
        c = self.config.c4
        return {
            "remove_citations": c.remove_citations,
            "terminal_punctuation": c.terminal_punctuation,
            "min_words_per_line": c.min_words_per_line,
            "max_word_length": c.max_word_length,
            "lorem_ipsum": c.lorem_ipsum,
            "javascript": c.javascript,
            "curly_bracket": c.curly_bracket,
            "policy": c.policy,
            "min_sentences": c.min_sentences,
            "badwords": self._badwords,
            "keep_paragraphs": c.keep_paragraphs,
        }

    def _blocked(self, url: str | None) -> Drop | None:
        if self.blocklist is None:
            return None
        hit = self.blocklist.match(url)
        return None if hit is None else Drop(blocklist_rule(hit.list_name))

    def __call__(self, text: str, url: str | None = None) -> FilterResult:
        if self.annotate:
            return self._annotate(text, url)
        blocked = self._blocked(url)
        if blocked is not None:
            return FilterResult(text, blocked)
        lines_removed = chars_removed = 0
        if not text.strip():
            return FilterResult(text, Drop("empty"))
        if self.config.c4.enabled:
            res = c4_filter_lines(text, **self._c4_options())
            if res.drop is not None:
                return FilterResult(text, res.drop)
            text, lines_removed, chars_removed = res.text, res.lines_removed, res.chars_removed
        stats = DocStats(text)
        drop = self.check(stats)
        return FilterResult(text, drop, lines_removed, chars_removed)

    def _annotate(self, text: str, url: str | None) -> FilterResult:
        flags: list[str] = []
        blocked = self._blocked(url)
        if blocked is not None:
            flags.append(blocked.rule)
        if not text.strip():
            return FilterResult(text, None, flags=(*flags, "empty"))
        lines_removed = chars_removed = 0
        if self.config.c4.enabled:
            options = self._c4_options()
            while (res := c4_filter_lines(text, **options)).drop is not None:
                flags.append(res.drop.rule)
                option, off = _C4_PAGE_RULES[res.drop.rule]
                options[option] = off
            if res.text.strip():  # a page the line rules empty keeps its text: it is flagged anyway
                text, lines_removed, chars_removed = res.text, res.lines_removed, res.chars_removed
        for drop in self.check_all(DocStats(text)):
            if drop.rule not in flags:
                flags.append(drop.rule)
        return FilterResult(text, None, lines_removed, chars_removed, tuple(flags))

    def check(self, s: DocStats) -> Drop | None:
        """The document-level rules (everything but C4's line filter) on ``s``."""
        cfg = self.config
        if cfg.gopher_quality.enabled:
            g = cfg.gopher_quality
            drop = (
                gopher_word_count(s, g.min_doc_words, g.max_doc_words)
                or gopher_mean_word_length(s, g.min_avg_word_length, g.max_avg_word_length)
                or gopher_symbol_word_ratio(s, g.max_symbol_word_ratio)
                or gopher_bullet_lines(s, g.max_bullet_lines_ratio)
                or gopher_ellipsis_lines(s, g.max_ellipsis_lines_ratio)
                or gopher_alpha_words(s, g.min_alpha_words_ratio)
                or gopher_stop_words(s, g.min_stop_words, frozenset(g.stop_words))
            )
            if drop:
                return drop
        if cfg.gopher_repetition.enabled:
            r = cfg.gopher_repetition
            drop = gopher_repetition(
                s,
                r.dup_line_frac,
                r.dup_para_frac,
                r.dup_line_char_frac,
                r.dup_para_char_frac,
                [(int(n), float(t)) for n, t in r.top_ngrams.items()],
                [(int(n), float(t)) for n, t in r.dup_ngrams.items()],
            )
            if drop:
                return drop
        if cfg.fineweb.enabled:
            f = cfg.fineweb
            drop = fineweb_quality(
                s,
                f.line_punct_thr,
                f.line_punct_exclude_zero,
                f.short_line_thr,
                f.short_line_length,
                f.char_dup_ratio,
                f.new_line_ratio,
            )
            if drop:
                return drop
        return None

    def check_all(self, s: DocStats) -> list[Drop]:
        """Every document-level rule that fires on ``s``, in the order ``check`` tries them.

        The grouped rule functions stop at their first hit, so each rule runs alone (the others'
        thresholds off); a rule on an empty text reports ``empty`` (reported once by the caller).
        """
        cfg = self.config
        found: list[Drop | None] = []
        if cfg.gopher_quality.enabled:
            g = cfg.gopher_quality
            found += [
                gopher_word_count(s, g.min_doc_words, g.max_doc_words),
                gopher_mean_word_length(s, g.min_avg_word_length, g.max_avg_word_length),
                gopher_symbol_word_ratio(s, g.max_symbol_word_ratio),
                gopher_bullet_lines(s, g.max_bullet_lines_ratio),
                gopher_ellipsis_lines(s, g.max_ellipsis_lines_ratio),
                gopher_alpha_words(s, g.min_alpha_words_ratio),
                gopher_stop_words(s, g.min_stop_words, frozenset(g.stop_words)),
            ]
        if cfg.gopher_repetition.enabled:
            r = cfg.gopher_repetition
            # gopher_repetition's own order: paragraphs, lines, top n-grams, duplicated n-grams.
            found += [
                gopher_repetition(s, None, r.dup_para_frac, None, None, [], []),
                gopher_repetition(s, None, None, None, r.dup_para_char_frac, [], []),
                gopher_repetition(s, r.dup_line_frac, None, None, None, [], []),
                gopher_repetition(s, None, None, r.dup_line_char_frac, None, [], []),
            ]
            found += [
                gopher_repetition(s, None, None, None, None, [(int(n), float(t))], []) for n, t in r.top_ngrams.items()
            ]
            found += [
                gopher_repetition(s, None, None, None, None, [], [(int(n), float(t))]) for n, t in r.dup_ngrams.items()
            ]
        if cfg.fineweb.enabled:
            f = cfg.fineweb
            found += [
                fineweb_quality(s, f.line_punct_thr, f.line_punct_exclude_zero, None, f.short_line_length, None, None),
                fineweb_quality(s, None, False, f.short_line_thr, f.short_line_length, None, None),
                fineweb_quality(s, None, False, None, f.short_line_length, f.char_dup_ratio, None),
                fineweb_quality(s, None, False, None, f.short_line_length, None, f.new_line_ratio),
            ]
        return [drop for drop in found if drop is not None]
