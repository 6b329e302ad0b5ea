"""Config of Untie the Knots packing (docs/untie-the-knots.md): the ``pack.utk`` section, used with ``pack.mode: utk``.

The context length is the pack stage's own ``pack.context_tokens`` (L; a UtK context holds L + 1 tokens),
so it is not repeated here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from winnow.core.config import Section


class UtkConfig(Section):
    """How each packed context of ``pack.context_tokens + 1`` tokens is cut, shuffled and knotted."""

    probability: float = Field(0.8, ge=0.0, le=1.0, description="Share of contexts augmented (slides: 0.8 > 0.3).")
    chunks: dict[int, float] = Field(
        default_factory=lambda: {1: 0.0, 2: 0.0, 3: 1.0},
        description="Law π of the chunk count n of each document in an augmented context (reference example: "
        "always 3). Keys 1..n_max; weights are renormalised.",
    )
    split: Literal["equal", "uniform"] = Field(
        "equal",
        description="equal: cuts at ⌊ℓ/n⌋·c (reference default); uniform: n − 1 distinct cuts uniform in "
        "[1, ℓ) (the reference's use_length_sampler).",
    )
    preserve_partial_order: bool = Field(
        True, description="A document's chunks keep their relative order (random slots, sorted per document)."
    )
    backtrace: bool = Field(
        True,
        description="Tag every chunk of a split document with <D> id </D> and write <S> id_0 <s> id_1 … </S> "
        "after its last-appearing chunk.",
    )
    id_chars: int = Field(6, ge=1, le=40, description="Characters of a backtracing ID ([A-Za-z0-9]).")
    knot_tokens: list[str] = Field(
        default_factory=lambda: ["<|knot_1e|>", "<|knot_2s|>", "<|knot_2e|>", "<|knot_3s|>"],
        description="2(n_max − 1) knot tokens: end of chunk 1, then start/end of each middle chunk, start of "
        "the last (names [ours]; the reference leaves them to the user).",
    )
    backtrace_tokens: list[str] = Field(
        default_factory=lambda: ["<D>", "</D>", "<S>", "<s>", "</S>"],
        description="<D> </D> <S> <s> </S>: open/close a chunk ID, open/separate/close the summary.",
    )
    special_ids: dict[str, int] = Field(
        default_factory=dict,
        description="Pin special tokens to ids (e.g. ids already reserved in a model's tokenizer); any other "
        "special token takes its id from the tokenizer's added tokens, else the next free id past the vocabulary.",
    )
    mask_special_in_loss: bool = Field(
        True,
        description="Zero the loss where the input or the label is a knot, on <D> … </D>, where the label is "
        "<D> or <S> and where the input is </S> (the reference's eod_mask_loss behaviour).",
    )
    mask_eos: bool = Field(
        False,
        description="Also zero the loss where the input is EOS, as Megatron's eod_mask_loss does [ours: off, "
        "as winnow's concat packing trains across EOS].",
    )
    emit: Literal["materialize", "plan"] = Field(
        "materialize",
        description="materialize: write augmented tokens and loss mask; plan: write the plain packed tokens and "
        "the chunk table, so a trainer can re-apply UtK (the reference re-augments on every read).",
    )
    rng: Literal["hash", "reference"] = Field(
        "hash",
        description="hash: every draw is u(context key, purpose, seed); reference: numpy "
        "MT19937(corruption_seed·100000 + context index) in the released code's call order (token-identical "
        "output for the same packed input).",
    )
    corruption_seed: int = Field(47, description="`rng: reference` only: the reference's corruption_rng_seed.")
    overflow: Literal["truncate", "defer"] = Field(
        "truncate",
        description="truncate (reference): tokens the insertions push past L + 1 are dropped and counted; defer "
        "[ours]: they open the next context of the same bundle, so nothing is lost.",
    )

    @field_validator("chunks")
    @classmethod
    def _law_is_a_distribution(cls, chunks: dict[int, float]) -> dict[int, float]:
        if not chunks or min(chunks) < 1:
            raise ValueError("`chunks` needs keys n ≥ 1")
        if any(w < 0 for w in chunks.values()) or sum(chunks.values()) <= 0:
            raise ValueError("`chunks` weights must be non-negative and not all zero")
        return chunks

    @model_validator(mode="after")
    def _enough_special_tokens(self) -> UtkConfig:
        needed = 2 * (self.max_chunks - 1)
        if len(self.knot_tokens) < needed:
            raise ValueError(
                f"chunk counts up to {self.max_chunks} need {needed} knot_tokens, got {len(self.knot_tokens)}"
            )
        if len(self.knot_tokens) % 2:
            raise ValueError("knot_tokens come in pairs (2(n_max − 1) of them)")
        if len(self.backtrace_tokens) != 5:
            raise ValueError("backtrace_tokens must be exactly <D> </D> <S> <s> </S> (5 tokens)")
        names = [*self.knot_tokens, *self.backtrace_tokens]
        if len(set(names)) != len(names):
            raise ValueError("knot_tokens and backtrace_tokens must be distinct")
        return self

    @property
    def max_chunks(self) -> int:
        """n_max: the largest chunk count with positive probability."""
        return max(n for n, w in self.chunks.items() if w > 0)

    @property
    def law(self) -> tuple[float, ...]:
        """π as probabilities of n = 1 … N, N = len(knot_tokens)/2 + 1 (the reference's vector length)."""
        length = len(self.knot_tokens) // 2 + 1
        total = sum(self.chunks.values())
        return tuple(self.chunks.get(n, 0.0) / total for n in range(1, length + 1))
