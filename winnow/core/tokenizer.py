"""The token counter every token budget uses (docs/budgets.md#tokens: budgets are in tokens).

winnow ships a byte-level BPE trained offline on permissively licensed text
(``winnow:models/tokenizer/winnow-bpe-32k.json``, rebuilt by ``scripts/train_tokenizer.py``)
because tiktoken and hub tokenizers cannot be fetched at run time. Any ``tokenizers`` JSON
file (for example a local copy of the Llama-2 or GPT-NeoX tokenizer the papers used) can be
given instead; the manifest records its name and hash so budgets are comparable.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from winnow.core.memo import memoised_batch_values
from winnow.core.models import resolve_model_path

BUNDLED_TOKENIZER = "winnow:models/tokenizer/winnow-bpe-32k.json"
EOS_TOKEN = "<|endoftext|>"
# tokenizers' ByteLevel pre-tokenizer (``use_regex``) splits text with GPT-2's pattern, on Oniguruma.
BYTE_LEVEL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PIECE_MEMO_LIMIT = 1 << 18  # distinct pre-tokenized pieces remembered per process (~50 MB) before starting over
# Strings whose pre-tokenization shows whether a character is a letter, a number or a space to the
# regex engine: the pieces of "a"+c, "1"+c and "x"+c+c+"x" differ by class.
_PROBES = ("a{}", "1{}", "x{0}{0}x", "{}a", " {}", "{}")


class Tokenizer:
    """A ``tokenizers`` tokenizer with the few calls winnow needs: ids, counts, EOS, decode."""

    def __init__(
        self, path: str | Path = BUNDLED_TOKENIZER, eos_token: str | None = EOS_TOKEN, cache_dir: str | None = None
    ):
        """``eos_token=None``: a tokenizer for ids and text only (no end-of-text token required; ``eos_id`` None)."""
        from tokenizers import Tokenizer as HFTokenizer  # lazy: tokenizers only when a tokenizer is loaded

        local = resolve_model_path(path, cache_dir)
        payload = local.read_bytes()
        self.path = str(path)
        self.name = local.stem
        self.version = hashlib.sha256(payload).hexdigest()[:16]
        self._tokenizer = HFTokenizer.from_str(payload.decode("utf-8"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        eos = self._tokenizer.token_to_id(eos_token) if eos_token is not None else None
        if eos is None and eos_token is not None:
            raise ValueError(f"tokenizer {path} has no end-of-text token {eos_token!r}")
        self.eos_token = eos_token
        self.eos_id = int(eos) if eos is not None else None
        spec = json.loads(payload)
        self.round_trips = byte_level_round_trip(spec)
        pieces = PieceEncoder(self._tokenizer, spec) if PieceEncoder.applies(spec) else None
        self._pieces = pieces if pieces is not None and pieces.usable else None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (callers add EOS where a method does)."""
        if not texts:
            return []
        if self._pieces is not None:
            return self._pieces.encode(texts)
        return [e.ids for e in self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def count(self, texts: Sequence[str]) -> np.ndarray:
        """Number of tokens of each text (int64)."""
        return np.array([len(ids) for ids in self.encode(texts)], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def describe(self) -> dict[str, str]:
        """Name, path and content hash, for the manifest."""
        return {"name": self.name, "path": self.path, "sha256_16": self.version}


def byte_level_round_trip(spec: dict[str, Any]) -> bool:
    """Whether ``decode(encode(text)) == text`` for every text, read off the tokenizer's JSON.

    True for a plain byte-level BPE (GPT-2 style, as the bundled one): no normalizer, the ByteLevel
    pre-tokenizer without an added prefix space, every byte in the vocabulary, the ByteLevel
    decoder, and added tokens that neither strip nor normalise their neighbours. Then encoding
    loses nothing and callers may use the text where they would decode its ids.
    """
    model, pre, decoder = spec.get("model") or {}, spec.get("pre_tokenizer") or {}, spec.get("decoder") or {}
    if spec.get("normalizer") is not None or model.get("type") != "BPE" or model.get("dropout"):
        return False
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return False
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or decoder.get("type") != "ByteLevel":
        return False
    if any(t.get("lstrip") or t.get("rstrip") or t.get("normalized") for t in spec.get("added_tokens") or []):
        return False
    from tokenizers.pre_tokenizers import ByteLevel  # lazy: tokenizers only when a tokenizer is loaded

    return set(ByteLevel.alphabet()) <= set(model.get("vocab") or {})


class PieceEncoder:
    """A byte-level BPE's ids, pre-tokenized in Python and encoded once per distinct piece (the same ids, ~3× cheaper).

    A byte-level BPE (no normalizer, ByteLevel pre-tokenizer) encodes each piece of GPT-2's split
    pattern on its own, so a text's ids are its pieces' ids end to end, and web text repeats its
    pieces. Each piece, matched alone, is matched whole again (the alternatives without look-ahead
    match a prefix of what they matched in context; ``\\s+(?!\\S)`` only gains at the end of the
    string, where the piece is whitespace anyway), so encoding it alone gives its ids in context.
    What could differ is the regex engine: the ``regex`` module here, Oniguruma in tokenizers, with
    their own Unicode tables. The pattern reads only whether a character is a letter, a number or a
    space, so each character is checked once per process against tokenizers' own pre-tokenizer on
    probe strings (``_PROBES``) that tell those classes apart; a text with a character whose class
    differs (newly assigned code points, a lone surrogate), or holding an added token's text (matched
    before the pre-tokenizer), is encoded by tokenizers whole.
    """

    def __init__(self, tokenizer: Any, spec: dict[str, Any]):
        import regex  # lazy: only for tokenizers this applies to

        self._tokenizer = tokenizer
        self._findall = regex.compile(BYTE_LEVEL_PATTERN).findall
        self._added = tuple(t["content"] for t in spec.get("added_tokens") or [] if t.get("content"))
        self._memo: dict[str, tuple[int, ...]] = {}
        self._agree: set[str] = set()  # characters both engines class the same way
        self._differ: set[str] = set()
        self.usable = self._check(set(map(chr, range(128))))  # ASCII texts skip the per-character check

    @staticmethod
    def applies(spec: dict[str, Any]) -> bool:
        """Whether the tokenizer is a plain byte-level BPE whose ids are its regex pieces' ids (see the class)."""
        model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
        post = spec.get("post_processor")
        return (
            spec.get("normalizer") is None
            and model.get("type") == "BPE"
            and not model.get("dropout")
            and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True)
            and not pre.get("add_prefix_space")
            and (post is None or post.get("type") == "ByteLevel")
            and len(spec.get("added_tokens") or []) <= 16
        )

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(texts)
        direct = [i for i, text in enumerate(texts) if not self._plain(text)]
        if direct:
            encoded = self._tokenizer.encode_batch_fast([texts[i] for i in direct], add_special_tokens=False)
            for i, encoding in zip(direct, encoded, strict=True):
                out[i] = encoding.ids
        rows = [i for i, ids in enumerate(out) if ids is None]
        split = [self._findall(texts[i]) for i in rows]
        values = memoised_batch_values(
            list(itertools.chain.from_iterable(split)), self._memo, self._encode_pieces, PIECE_MEMO_LIMIT
        )
        start = 0
        for i, pieces in zip(rows, split, strict=True):
            out[i] = list(itertools.chain.from_iterable(values[start : start + len(pieces)]))
            start += len(pieces)
        return out  # type: ignore[return-value]

    def _encode_pieces(self, pieces: list[str]) -> list[tuple[int, ...]]:
        return [tuple(e.ids) for e in self._tokenizer.encode_batch_fast(pieces, add_special_tokens=False)]

    def _plain(self, text: str) -> bool:
        """True when the pieces' ids are the text's: every character checked, no added token's text in it."""
        if any(token in text for token in self._added):
            return False
        if text.isascii():
            return True
        chars = set(text)
        return chars <= self._agree or self._check(chars - self._agree)

    def _check(self, chars: set[str]) -> bool:
        """Probe ``chars`` new to this process; True when the regex module and tokenizers agree on every one."""
        pre_tokenize = self._tokenizer.pre_tokenizer.pre_tokenize_str
        for char in chars - self._differ:
            for probe in _PROBES:
                text = probe.format(char)
                try:
                    theirs = [len(piece) for piece, _ in pre_tokenize(text)]  # one character per byte
                    ours = [len(piece.encode("utf-8")) for piece in self._findall(text)]
                except Exception:  # e.g. a lone surrogate: tokenizers refuses the text, so let it say so
                    theirs, ours = [0], [1]
                if theirs != ours:
                    self._differ.add(char)
                    break
            else:
                self._agree.add(char)
        return not (chars & self._differ)


@lru_cache(maxsize=4)
def load_tokenizer(path: str = BUNDLED_TOKENIZER, eos_token: str = EOS_TOKEN) -> Tokenizer:
    """One tokenizer per process and path (DoFns call this from ``setup``)."""
    return Tokenizer(path, eos_token)


def token_counts(docs: Sequence[dict], tokenizer: Tokenizer, field: str = "n_tokens") -> np.ndarray:
    """Each document's token count: its ``field`` when a stage already set it, else counted now."""
    counts = np.zeros(len(docs), dtype=np.int64)
    missing = []
    for i, doc in enumerate(docs):
        value = doc.get(field)
        if value is None:
            missing.append(i)
        else:
            counts[i] = int(value)
    if missing:
        counted = tokenizer.count([docs[i].get("text") or "" for i in missing])
        counts[missing] = counted
    return counts
