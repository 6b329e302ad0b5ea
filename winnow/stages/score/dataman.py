"""DataMan (Peng et al., ICLR 2025; docs/dataman.md): 14 pointwise quality ratings and one of 15
application domains per document, Beam-free.

Two modes share one output contract (``application_domain`` letter, its name, the 14 ratings as
int8 in table order, ``dataman_length``):

* **reference**: a local DataMan checkpoint (Qwen2 causal LM with its tokenizer and chat
  template). The text is cleaned and truncated as the reference preprocessing does, wrapped in
  the exact ``all_rating`` request under the Qwen chat template, decoded greedily for at most
  29 new tokens, and the reply is parsed strictly. A reply that does not parse is never
  defaulted: the document is rejected with the reason (``score:<name>:malformed``).
* **local** [ours]: a frozen sentence embedding (the static embedding by default) of the head+tail
  truncated text, 14 rating heads (5-class ordinal, or regression rounded by the
  docs/dataman.md#the-model-and-its-contract rule) and a
  15-way domain head, trained by ``train_local_model`` from a DataMan-format labels file.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.core import exact
from winnow.core.domains import DATAMAN_DOMAINS
from winnow.core.embedders import sentence_encoder
from winnow.core.hashing import uniform
from winnow.core.models import file_digest, resolve_model_path
from winnow.core.tokenizer import BUNDLED_TOKENIZER, load_tokenizer
from winnow.stages.score.scorer import ScoreColumn, ScorerOptions, TokenizedTexts

# --- the contract (docs/dataman.md#criteria-and-domains, docs/dataman.md#criteria-and-domains,
# docs/dataman.md#the-model-and-its-contract) -----------------------------------------------------

CRITERIA: tuple[str, ...] = (
    "accuracy",
    "coherence",
    "language_consistency",
    "semantic_density",
    "knowledge_novelty",
    "topic_focus",
    "creativity",
    "professionalism",
    "style_consistency",
    "grammatical_diversity",
    "structural_standardization",
    "originality",
    "sensitivity",
    "overall_score",
)
DOMAIN_LETTERS: tuple[str, ...] = tuple(DATAMAN_DOMAINS)
DOMAIN_COLUMN = "application_domain"
DOMAIN_NAME_COLUMN = "application_domain_name"
LENGTH_COLUMN = "dataman_length"
OUTPUT_COLUMNS: tuple[ScoreColumn, ...] = (
    ScoreColumn(DOMAIN_COLUMN, pa.string()),
    ScoreColumn(DOMAIN_NAME_COLUMN, pa.string()),
    *(ScoreColumn(name, pa.int8()) for name in CRITERIA),
    ScoreColumn(LENGTH_COLUMN, pa.int32()),
)

# pengr/DataMan data_tools/dataman_annotate.py, REQUEST_TEMPLATES['en']['all_rating'] (commit
# 574f09ce), copied verbatim: the released model was fine-tuned on exactly this request.
ALL_RATING_TEMPLATE = """Please score the text on fourteen evaluation criteria and specify its domain:
Text: {text}
Domain:_
[1]Accuracy:_/5
[2]Coherence:_/5
[3]Language Consistency:_/5
[4]Semantic Density:_/5
[5]Knowledge Novelty:_/5
[6]Topic Focus:_/5
[7]Creativity:_/5
[8]Professionalism:_/5
[9]Style Consistency:_/5
[10]Grammatical Diversity:_/5
[11]Structural Standardization:_/5
[12]Originality:_/5
[13]Sensitivity:_/5
[14]Overall Score:_/5"""
SYSTEM_MESSAGE = "You are a helpful assistant."  # the reference inference worker's system turn
MAX_NEW_TOKENS = 29  # 15 one-token lines and 14 newlines

CHAR_LIMIT = 20_000  # longer texts keep the first and last CHAR_LIMIT // 2 characters
TOKEN_LIMIT = 1_894  # longer texts keep the first and last TOKEN_LIMIT // 2 tokens around "..."
ELLIPSIS = "..."

# The reference preprocessing drops a quoted ellipsis opening the text and markdown image links
# (data_tools/dataman_annotate.py, regular_filtering); the model never saw them.
_QUOTED_ELLIPSIS = re.compile(r'^["“”](?:…+|\.{3,})["“”]')
_IMAGE_LINK = re.compile(r"!\[\]\(/?[^)]+\)\n")


class DataManParseError(ValueError):
    """A model reply or label that does not follow the 15-line DataMan output contract."""


def round_rating(value: float) -> int:
    """The docs/dataman.md#the-model-and-its-contract rule: below 3 floor, 3 or more ceil (2.5 → 2, 3.2 → 4)."""
    value = float(value)
    if not math.isfinite(value):
        raise DataManParseError(f"rating {value} is not finite")
    return math.floor(value) if value < 3 else math.ceil(value)


@dataclass(frozen=True)
class DataManRating:
    """One parsed rating: the domain letter and the 14 scores in table order."""

    domain: str
    scores: tuple[int, ...]

    def columns(self) -> dict[str, Any]:
        return {
            DOMAIN_COLUMN: self.domain,
            DOMAIN_NAME_COLUMN: DATAMAN_DOMAINS[self.domain],
            **dict(zip(CRITERIA, self.scores, strict=True)),
        }


def _score(line: str, position: int) -> int:
    if not re.fullmatch(r"[1-5]", line):
        raise DataManParseError(f"line {position + 1} must be an integer 1-5, got {line[:20]!r}")
    return int(line)


def parse_reply(reply: str) -> DataManRating:
    """Parse a DataMan reply: a domain letter A–O, then 14 integers 1–5, one per line.

    The duplicated form (the 14 scores twice, as GPT-4 sometimes answered) is accepted when both
    halves agree; any other shape raises ``DataManParseError`` with the reason.
    """
    lines = [line.strip() for line in reply.strip().replace("\r\n", "\n").split("\n")]
    n_scores = len(CRITERIA)
    if len(lines) not in (1 + n_scores, 1 + 2 * n_scores):
        raise DataManParseError(f"expected {1 + n_scores} lines (domain + {n_scores} scores), got {len(lines)}")
    domain = lines[0]
    if domain not in DATAMAN_DOMAINS:
        raise DataManParseError(f"line 1 must be a domain letter A-O, got {domain[:20]!r}")
    scores = tuple(_score(line, i + 1) for i, line in enumerate(lines[1:]))
    if len(scores) == 2 * n_scores:
        if scores[:n_scores] != scores[n_scores:]:
            raise DataManParseError("duplicated scores disagree between the two halves")
        scores = scores[:n_scores]
    return DataManRating(domain, scores)


def format_reply(rating: DataManRating) -> str:
    """The target string a DataMan model is trained to produce (inverse of ``parse_reply``)."""
    return "\n".join([rating.domain, *(str(s) for s in rating.scores)])


# --- preprocessing ---------------------------------------------------------------------------


def reference_cleanup(text: str) -> str:
    return _IMAGE_LINK.sub("", _QUOTED_ELLIPSIS.sub("", text))


def truncate_tokens(tokens: Sequence[Any], limit: int = TOKEN_LIMIT, ellipsis: Any = ELLIPSIS) -> list[Any]:
    """Head + ``ellipsis`` + tail when longer than ``limit`` (947 + "..." + 947 for 1,894)."""
    tokens = list(tokens)
    if len(tokens) <= limit:
        return tokens
    half = limit // 2
    return [*tokens[:half], ellipsis, *tokens[-half:]]


def truncate_text(
    text: str,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    char_limit: int = CHAR_LIMIT,
    token_limit: int = TOKEN_LIMIT,
) -> tuple[str, int]:
    """The text the model sees and its length in tokens (docs/dataman.md#the-model-and-its-contract inference
    truncation).

    Over ``char_limit`` characters the two halves are tokenized separately and joined, as the
    reference does; over ``token_limit`` tokens the middle becomes a literal "...".
    """
    return truncate_ids([encode(piece) for piece in char_pieces(text, char_limit)], decode, token_limit)


def char_pieces(text: str, char_limit: int = CHAR_LIMIT) -> list[str]:
    """The text, or its first and last ``char_limit // 2`` characters (tokenized separately)."""
    half = char_limit // 2
    return [text[:half], text[-half:]] if len(text) > char_limit else [text]


def truncate_ids(
    pieces: Sequence[list[int]], decode: Callable[[list[int]], str], token_limit: int = TOKEN_LIMIT
) -> tuple[str, int]:
    """``truncate_text`` after tokenization: the joined token ids of the character pieces."""
    ids = [token for piece in pieces for token in piece]
    if len(ids) <= token_limit:
        return decode(ids).strip(), len(ids)
    half = token_limit // 2
    return (decode(ids[:half]) + ELLIPSIS + decode(ids[-half:])).strip(), 2 * half + 1


def all_rating_request(text: str) -> str:
    return ALL_RATING_TEMPLATE.format(text=text)


def chat_messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": all_rating_request(text)}]


def _columns_of(ratings: Sequence[DataManRating], lengths: Sequence[int]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        DOMAIN_COLUMN: np.array([r.domain for r in ratings], dtype=object),
        DOMAIN_NAME_COLUMN: np.array([DATAMAN_DOMAINS[r.domain] for r in ratings], dtype=object),
    }
    for i, name in enumerate(CRITERIA):
        out[name] = np.array([r.scores[i] for r in ratings], dtype=np.int8)
    out[LENGTH_COLUMN] = np.asarray(lengths, dtype=np.int32)
    return out


# --- reference mode --------------------------------------------------------------------------


class DataManGenerator:
    """Greedy decoding with a local DataMan checkpoint: prompts in, reply strings out."""

    def __init__(
        self, path: str | Path, device: str = "cpu", batch_size: int = 8, max_new_tokens: int = MAX_NEW_TOKENS
    ):
        import torch  # lazy: torch only for transformer models
        from transformers import (  # lazy: transformers only for reference-mode checkpoints
            AutoModelForCausalLM,
            AutoTokenizer,
        )

        folder = resolve_model_path(path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.folder = folder
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left", local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.last_new_tokens = 0
        self._torch = torch

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def prompt(self, text: str) -> str:
        return self.tokenizer.apply_chat_template(chat_messages(text), tokenize=False, add_generation_prompt=True)

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        torch = self._torch
        replies: list[str] = [""] * len(prompts)
        self.last_new_tokens = 0  # longest decoded continuation of this call (≤ max_new_tokens)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths pad less
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                generated = self.model.generate(
                    **batch,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                new = generated[:, batch["input_ids"].shape[1] :].cpu().tolist()
                self.last_new_tokens = max(self.last_new_tokens, len(new[0]) if new else 0)
                for row, ids in zip(rows, new, strict=True):
                    replies[row] = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return replies


class DataManReferenceScorer:
    """Reference mode: a local DataMan checkpoint rates each text (docs/dataman.md#the-model-and-its-contract).

    ``generate`` replaces the model's decoding (tests: scripted replies); prompts and truncation
    still come from the checkpoint's tokenizer. Replies of the last batch are kept so that the
    score stage's one-document retry after a malformed reply does not decode again.
    """

    def __init__(
        self,
        path: str | Path,
        name: str = "dataman",
        device: str = "cpu",
        batch_size: int = 8,
        generate: Callable[[Sequence[str]], list[str]] | None = None,
    ):
        self.generator = DataManGenerator(path, device, batch_size)
        self.generate = generate if generate is not None else self.generator
        self.name = name
        self.version = f"dataman-reference:{file_digest(self.generator.folder)}"
        self.columns = OUTPUT_COLUMNS
        self._replies: dict[str, str] = {}
        self._counted: set[str] = set()
        # The score stage replaces this with its Beam counter callback (``score:<name>:malformed``).
        self.count: Callable[[str, int], None] = lambda name, n: None

    def prepare(self, text: str) -> tuple[str, int]:
        """(chat prompt, dataman_length) for one document."""
        truncated, length = truncate_text(reference_cleanup(text), self.generator.encode, self.generator.decode)
        return self.generator.prompt(truncated), length

    def replies(self, prompts: Sequence[str]) -> list[str]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._replies]
        if missing:
            self._replies = {p: r for p, r in self._replies.items() if p in prompts}
            self._counted &= set(self._replies)
            self._replies.update(zip(missing, self.generate(missing), strict=True))
        return [self._replies[p] for p in prompts]

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        prepared = [self.prepare(text) for text in texts]
        prompts = [p for p, _ in prepared]
        ratings: list[DataManRating] = []
        errors: list[str] = []
        for prompt, reply in zip(prompts, self.replies(prompts), strict=True):
            try:
                ratings.append(parse_reply(reply))
            except DataManParseError as error:
                if prompt not in self._counted:
                    self._counted.add(prompt)
                    self.count(f"score:{self.name}:malformed", 1)
                errors.append(f"malformed reply {reply[:80]!r}: {error}")
        if errors:
            # Raised for the whole batch; the score stage then retries document by document, so
            # only the documents whose own reply is malformed are rejected, each with its reason.
            raise DataManParseError(errors[0] if len(texts) == 1 else f"{len(errors)} of {len(texts)}: {errors[0]}")
        return _columns_of(ratings, [length for _, length in prepared])


# --- local mode --------------------------------------------------------------------------------

HEAD_KINDS = ("ordinal", "regression")
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class DataManLabel:
    """One training example: text, the ratings it has (missing criteria absent) and its domain."""

    text: str
    scores: dict[str, int] = field(default_factory=dict)
    domain: str | None = None
    id: str = ""


def label_from_record(record: Mapping[str, Any], index: int = 0) -> DataManLabel:
    """A labels-file line: ``text`` plus the ratings (top level or under ``dataman``) and the domain
    (``application_domain``/``dataman_domain``/``domain``), or a ``reply`` in the 15-line format.
    Non-integer ratings are rounded by the docs/dataman.md#the-model-and-its-contract rule; a rating outside 1–5 is an
    error."""
    text = record.get("text")
    if not isinstance(text, str) or not text:
        raise DataManParseError("label has no text")
    doc_id = str(record.get("id", index))
    if isinstance(record.get("reply"), str):
        rating = parse_reply(record["reply"])
        return DataManLabel(text, dict(zip(CRITERIA, rating.scores, strict=True)), rating.domain, doc_id)
    source = record.get("dataman") if isinstance(record.get("dataman"), Mapping) else record
    scores = {}
    for name in CRITERIA:
        value = source.get(name)
        if value is None:
            continue
        score = round_rating(float(value))
        if not 1 <= score <= 5:
            raise DataManParseError(f"{name} = {value} is outside 1-5")
        scores[name] = score
    domain = next((record[k] for k in (DOMAIN_COLUMN, "dataman_domain", "domain") if record.get(k) is not None), None)
    if domain is not None and domain not in DATAMAN_DOMAINS:
        raise DataManParseError(f"domain {domain!r} is not a letter A-O")
    if not scores and domain is None:
        raise DataManParseError("label has neither ratings nor a domain")
    return DataManLabel(text, scores, domain, doc_id)


def read_labels(path: str | Path) -> list[DataManLabel]:
    """A JSONL (optionally .gz) labels file; a bad line raises with its line number."""

    opener = gzip.open if str(path).endswith(".gz") else open
    labels = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                labels.append(label_from_record(json.loads(line), number))
            except (DataManParseError, ValueError) as error:
                raise DataManParseError(f"{path}:{number}: {error}") from error
    return labels


class LocalTruncation:
    """Head+tail truncation under winnow's run tokenizer (the local model has no LM tokenizer)."""

    def __init__(self, tokenizer_path: str | None = None):

        self.tokenizer = load_tokenizer(tokenizer_path or BUNDLED_TOKENIZER)

    def __call__(self, texts: Sequence[str], batch: TokenizedTexts | None = None) -> tuple[list[str], list[int]]:
        """The truncated texts and their lengths; ``batch`` (these texts, tokenised by the score stage) spares
        encoding the texts that cleanup leaves as they are and that fit in one character piece."""
        pieces = [char_pieces(reference_cleanup(t)) for t in texts]
        known = batch.cached_ids(self.tokenizer) if batch is not None else None
        # A text that is its own single piece has exactly the ids the stage computed for it.
        reuse = [known is not None and parts == [text] for parts, text in zip(pieces, texts, strict=True)]
        todo = [piece for parts, shared in zip(pieces, reuse, strict=True) if not shared for piece in parts]
        encoded = iter(self.tokenizer.encode(todo))  # one batched call for the rest
        out = []
        for d, parts in enumerate(pieces):
            if reuse[d] and self.tokenizer.round_trips and len(known[d]) <= TOKEN_LIMIT:  # type: ignore[index]
                # Decoding all of a text's ids gives the text back (byte-level BPE): skip the decode.
                out.append((texts[d].strip(), len(known[d])))  # type: ignore[index]
                continue
            ids = [known[d]] if reuse[d] else [next(encoded) for _ in parts]  # type: ignore[index]
            out.append(truncate_ids(ids, self.tokenizer.decode))
        return [t for t, _ in out], [n for _, n in out]


def make_encoder(encoder: str, cache_dir: str | None = None, device: str = "cpu") -> Any:

    return sentence_encoder(encoder, cache_dir, device)


@dataclass
class Head:
    """A linear head: ``ordinal`` (5 class logits, argmax → 1..5) or ``regression`` (rounded by
    docs/dataman.md#the-model-and-its-contract).

    Logits come from an exact integer layer (``winnow.core.exact``), so a rating never depends on
    the batch or the machine, even for a document whose two best classes nearly tie.
    """

    kind: str
    weights: np.ndarray
    bias: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        layer = self.__dict__.get("_layer")
        if layer is None:
            layer = self.__dict__["_layer"] = exact.QuantizedLinear(self.weights, self.bias)
        return layer.apply(np.asarray(x, dtype=np.float64))

    def predict(self, x: np.ndarray) -> np.ndarray:
        logits = self.logits(x)
        if self.kind == "ordinal":
            return (np.argmax(logits, axis=1) + 1).astype(np.int8)
        values = np.clip(logits[:, 0], 1.0, 5.0)
        return np.array([round_rating(v) for v in values], dtype=np.int8)

    def predict_value(self, x: np.ndarray) -> np.ndarray:
        """Expected rating (ordinal: softmax-weighted mean of 1..5): a smooth value for evaluation."""
        logits = self.logits(x)
        if self.kind == "regression":
            return np.clip(logits[:, 0], 1.0, 5.0)
        return exact.softmax(logits) @ np.arange(1, 6, dtype=np.float64)


def _fit_head(x: np.ndarray, y: np.ndarray, kind: str, c: float) -> Head:
    from sklearn.linear_model import LogisticRegression, Ridge  # lazy: scikit-learn only when training

    if kind == "regression":
        model = Ridge(alpha=1.0 / c).fit(x, y.astype(np.float64))
        return Head(
            kind, model.coef_.reshape(-1, 1).astype(np.float32), np.atleast_1d(model.intercept_).astype(np.float32)
        )
    classes = sorted(set(int(v) for v in y))
    weights = np.zeros((x.shape[1], 5), dtype=np.float32)
    bias = np.full(5, -1e4, dtype=np.float32)  # a rating never seen in training is never predicted
    if len(classes) == 1:
        bias[classes[0] - 1] = 0.0
        return Head(kind, weights, bias)
    # Balanced class weights play the role of DataMan's upsampling of the low-score minority
    # (docs/dataman.md#the-model-and-its-contract).
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if len(classes) == 2:  # sklearn's binary form: one logit for the second class
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    for row, cls in enumerate(model.classes_):
        weights[:, int(cls) - 1] = coef[row]
        bias[int(cls) - 1] = intercept[row]
    return Head(kind, weights, bias)


def _fit_domain(x: np.ndarray, letters: Sequence[str], c: float) -> Head:
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn only when training

    index = np.array([DOMAIN_LETTERS.index(d) for d in letters])
    weights = np.zeros((x.shape[1], len(DOMAIN_LETTERS)), dtype=np.float32)
    bias = np.full(len(DOMAIN_LETTERS), -1e4, dtype=np.float32)
    classes = sorted(set(index.tolist()))
    if len(classes) == 1:
        bias[classes[0]] = 0.0
        return Head("domain", weights, bias)
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, index)
    coef, intercept = model.coef_, model.intercept_
    if len(classes) == 2:
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    for row, cls in enumerate(model.classes_):
        weights[:, int(cls)] = coef[row]
        bias[int(cls)] = intercept[row]
    return Head("domain", weights, bias)


@dataclass
class LocalDataManModel:
    """The trained local model: per-criterion heads, the domain head and where each comes from."""

    encoder: str
    heads: dict[str, Head]
    domain: Head | None
    fallback: dict[str, str]  # criterion without its own training signal → the head it reuses
    tokenizer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def head_for(self, criterion: str) -> Head:
        return self.heads[self.fallback.get(criterion, criterion)]

    def predict(self, embeddings: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
        x = np.asarray(embeddings, dtype=np.float32)
        scores = {name: self.head_for(name).predict(x) for name in CRITERIA}
        if self.domain is None:
            letters = ["O"] * len(x)
        else:
            letters = [DOMAIN_LETTERS[i] for i in np.argmax(self.domain.logits(x), axis=1)]
        return letters, scores

    def save(self, path: str | Path) -> None:
        """An .npz whose bytes depend only on the model (fixed zip timestamps: reproducible)."""
        arrays: dict[str, np.ndarray] = {}
        kinds = {}
        for name, head in sorted(self.heads.items()):
            arrays[f"w:{name}"], arrays[f"b:{name}"] = head.weights, head.bias
            kinds[name] = head.kind
        if self.domain is not None:
            arrays["w:domain"], arrays["b:domain"] = self.domain.weights, self.domain.bias
        meta = {
            "format": "winnow-dataman-local/1",
            "encoder": self.encoder,
            "tokenizer": self.tokenizer,
            "kinds": kinds,
            "fallback": self.fallback,
            **self.meta,
        }
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key in sorted(arrays):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(arrays[key]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> LocalDataManModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != "winnow-dataman-local/1":
                raise ValueError(f"{path} is not a winnow DataMan local model")
            heads = {n: Head(k, data[f"w:{n}"], data[f"b:{n}"]) for n, k in meta["kinds"].items()}
            domain = Head("domain", data["w:domain"], data["b:domain"]) if "w:domain" in data else None
        extra = {k: v for k, v in meta.items() if k not in ("format", "encoder", "tokenizer", "kinds", "fallback")}
        return cls(meta["encoder"], heads, domain, meta["fallback"], meta.get("tokenizer"), extra)


def holdout_mask(labels: Sequence[DataManLabel], fraction: float, seed: int) -> np.ndarray:
    """Held-out split by a hash of each label's id and text: independent of file order."""

    return np.array([uniform(f"{lab.id}\x1f{lab.text[:200]}", "dataman:holdout", seed) < fraction for lab in labels])


def _agreement(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "n": len(truth),
        "exact": float(np.mean(truth == predicted)) if len(truth) else float("nan"),
        "mae": float(np.mean(np.abs(truth.astype(float) - predicted.astype(float)))) if len(truth) else float("nan"),
        "majority_exact": float(np.mean(truth == np.bincount(truth).argmax())) if len(truth) else float("nan"),
    }


def train_local_model(
    labels: Sequence[DataManLabel],
    embeddings: np.ndarray,
    *,
    encoder: str,
    kind: str = "ordinal",
    c: float = 1.0,
    holdout: float = 0.2,
    seed: int = 0,
    min_examples: int = 20,
    tokenizer: str | None = None,
) -> tuple[LocalDataManModel, dict[str, Any]]:
    """Fit the heads on the training split, report held-out agreement, then refit on all labels.

    A criterion with fewer than ``min_examples`` labels, or a single rating value, has no training
    signal of its own: it reuses the ``overall_score`` head, and the model and report say so.
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"head kind must be one of {HEAD_KINDS}")
    x = np.asarray(embeddings, dtype=np.float32)
    test = holdout_mask(labels, holdout, seed) if holdout > 0 else np.zeros(len(labels), dtype=bool)
    report: dict[str, Any] = {"kind": kind, "encoder": encoder, "n_labels": len(labels), "criteria": {}}
    heads: dict[str, Head] = {}
    own: list[str] = []
    for name in CRITERIA:
        rows = np.array([name in lab.scores for lab in labels])
        y = np.array([lab.scores.get(name, 0) for lab in labels])
        if rows.sum() < min_examples or len(set(y[rows].tolist())) < 2:
            continue
        own.append(name)
        train_rows, test_rows = rows & ~test, rows & test
        entry: dict[str, Any] = {"n_train": int(train_rows.sum()), "n_heldout": int(test_rows.sum())}
        if test_rows.any() and len(set(y[train_rows].tolist())) >= 2:
            head = _fit_head(x[train_rows], y[train_rows], kind, c)
            entry["heldout"] = _agreement(y[test_rows], head.predict(x[test_rows]))
        report["criteria"][name] = entry
        heads[name] = _fit_head(x[rows], y[rows], kind, c)
    if "overall_score" not in heads:
        raise ValueError("the labels give no usable overall_score (at least two distinct ratings needed)")
    fallback = {name: "overall_score" for name in CRITERIA if name not in heads}
    report["own_signal"] = own
    report["fallback_to_overall"] = sorted(fallback)
    domain_rows = np.array([lab.domain is not None for lab in labels])
    domain = None
    if domain_rows.any():
        letters = np.array([lab.domain or "" for lab in labels])
        train_rows, test_rows = domain_rows & ~test, domain_rows & test
        entry = {"n_train": int(train_rows.sum()), "n_heldout": int(test_rows.sum())}
        if test_rows.any() and len(set(letters[train_rows].tolist())) >= 2:
            head = _fit_domain(x[train_rows], letters[train_rows].tolist(), c)
            predicted = np.array(DOMAIN_LETTERS)[np.argmax(x[test_rows] @ head.weights + head.bias, axis=1)]
            truth = letters[test_rows]
            values, counts = np.unique(letters[train_rows], return_counts=True)
            entry["heldout"] = {
                "n": int(test_rows.sum()),
                "accuracy": float(np.mean(predicted == truth)),
                "majority_accuracy": float(np.mean(truth == values[np.argmax(counts)])),
            }
        entry["letters_seen"] = sorted(set(letters[domain_rows].tolist()))
        report["domain"] = entry
        domain = _fit_domain(x[domain_rows], letters[domain_rows].tolist(), c)
    model = LocalDataManModel(encoder, heads, domain, fallback, tokenizer, {"kind": kind, "c": c, "seed": seed})
    return model, report


class DataManLocalScorer:
    """Local mode: frozen embedding of the truncated text → the trained heads (same columns)."""

    def __init__(
        self,
        path: str | Path,
        name: str = "dataman",
        encoder: str | None = None,
        device: str = "cpu",
        cache_dir: str | None = None,
    ):
        local = resolve_model_path(path, cache_dir)
        self.model = LocalDataManModel.load(local)
        self.encoder = make_encoder(encoder or self.model.encoder, cache_dir, device)
        self.truncate = LocalTruncation(self.model.tokenizer)
        self.name = name
        self.version = f"dataman-local:{file_digest(local)}"
        self.columns = OUTPUT_COLUMNS

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.score_tokenized(TokenizedTexts(texts))

    def score_tokenized(self, batch: TokenizedTexts) -> dict[str, np.ndarray]:
        """``score`` reusing the batch's run-tokenizer ids where the model's tokenizer is the same file."""
        truncated, lengths = self.truncate(batch.texts, batch)
        letters, scores = self.model.predict(self.encoder.encode(truncated))
        ratings = [
            DataManRating(letter, tuple(int(scores[c][i]) for c in CRITERIA)) for i, letter in enumerate(letters)
        ]
        return _columns_of(ratings, lengths)


def is_local_model(path: str | Path) -> bool:
    return Path(path).is_file() and str(path).endswith(".npz")


def embed_texts(encoder: Any, texts: Iterable[str], tokenizer: str | None = None) -> np.ndarray:
    """Embeddings of the texts as the local scorer sees them (cleaned, head+tail truncated)."""
    truncated, _ = LocalTruncation(tokenizer)(list(texts))
    return np.asarray(encoder.encode(truncated), dtype=np.float32)


class DataManOptions(ScorerOptions):
    """``backend: dataman``: a local DataMan checkpoint (reference mode) or a winnow head file (local mode)."""

    backend: Literal["dataman"]
    device: str = Field("cpu", description="Reference mode: `cpu`, `cuda`, `cuda:N` or `auto`.")

    def build(self) -> DataManReferenceScorer | DataManLocalScorer:
        local = resolve_model_path(self.path, self.cache_dir)
        if is_local_model(local):
            # The heads only fit the embedding they were trained on: the model file names its encoder.
            return DataManLocalScorer(local, self.name, None, self.device, self.cache_dir)
        return DataManReferenceScorer(local, self.name, self.device, min(self.batch_size, 64))

    def fields(self) -> list[pa.Field]:
        # The fixed contract: domain letter and name, 14 int8 ratings, the length DataMan saw.
        return [column.field() for column in OUTPUT_COLUMNS]
