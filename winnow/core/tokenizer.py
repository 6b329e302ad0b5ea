"""The token counter every token budget uses (docs/budgets.md#tokens: budgets are in tokens).

winnow ships a byte-level BPE trained offline on permissively licensed text
(``winnow:models/tokenizer/winnow-bpe-32k.json``, rebuilt by ``scripts/train_tokenizer.py``)
because tiktoken and hub tokenizers cannot be fetched at run time. Any ``tokenizers`` JSON
file (for example a local copy of the Llama-2 or GPT-NeoX tokenizer the papers used) can be
given instead; the manifest records its name and hash so budgets are comparable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from winnow.core.models import resolve_model_path

BUNDLED_TOKENIZER = "winnow:models/tokenizer/winnow-bpe-32k.json"
EOS_TOKEN = "<|endoftext|>"


class Tokenizer:
    """A ``tokenizers`` tokenizer with the few calls winnow needs: ids, counts, EOS, decode."""

    def __init__(self, path: str | Path = BUNDLED_TOKENIZER, eos_token: str = EOS_TOKEN, cache_dir: str | None = None):
        from tokenizers import Tokenizer as HFTokenizer  # lazy: tokenizers only when a tokenizer is loaded

        local = resolve_model_path(path, cache_dir)
        payload = local.read_bytes()
        self.path = str(path)
        self.name = local.stem
        self.version = hashlib.sha256(payload).hexdigest()[:16]
        self._tokenizer = HFTokenizer.from_str(payload.decode("utf-8"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        eos = self._tokenizer.token_to_id(eos_token)
        if eos is None:
            raise ValueError(f"tokenizer {path} has no end-of-text token {eos_token!r}")
        self.eos_token = eos_token
        self.eos_id = int(eos)
        self._payload = payload

    @cached_property
    def round_trips(self) -> bool:
        """``byte_level_round_trip`` of this tokenizer; parsed on first use (the JSON parse costs about a
        quarter of a second, and most processes that load a tokenizer never ask)."""
        return byte_level_round_trip(json.loads(self._payload))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (callers add EOS where a method does)."""
        if not texts:
            return []
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

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
