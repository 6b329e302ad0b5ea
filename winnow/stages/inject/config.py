"""Config of the ``inject`` stage: Copyright Traps (docs/copyright-traps.md).

Values tagged [code] follow the reference repository's scripts; [ours] are winnow's choices.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from winnow.core.causal_lm import DEFAULT_THREADS, SMOLLM2
from winnow.core.config import Section, config_file_path, context_base_dir, local_config_file


class TemperatureSweep(Section):
    """Sampling temperatures tried in turn, ``min, min + step, …`` strictly below ``max`` (numpy's arange)."""

    min: float = Field(0.5, ge=0)
    max: float = Field(4.0, gt=0)
    step: float = Field(0.5, gt=0)

    def values(self) -> list[float]:
        # Decimal steps: 0.5 + 14 × 0.25 must be exactly 4.0, not 3.9999999999999996.
        low, high, step = Decimal(str(self.min)), Decimal(str(self.max)), Decimal(str(self.step))
        out, value = [], low
        while value < high:
            out.append(float(value))
            value += step
        return out


class TrapSourceConfig(Section):
    """Where traps come from, and the reference's acceptance rules for generated ones."""

    source: Literal["generate", "file"] = Field(
        "generate", description="`generate`: sample with a local causal LM; `file`: read user traps."
    )
    model: str = Field(
        SMOLLM2,
        description=f"Generator and perplexity model: a local directory or .gguf (reference: Llama-2-7B), or "
        f"`{SMOLLM2}` (local mode).",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `model` when it holds several.")
    file: str | None = Field(
        None,
        description="`source: file`: Parquet or JSONL with `text` and optional `ppl` (lengths under the run "
        "tokenizer), or a file written by `winnow traps generate` (used as written).",
    )
    seed: int = Field(123456, description="Sampling seed; a length's draws use seed · seq_len [code run_all.sh].")
    seq_lens: list[int] = Field(default_factory=lambda: [25, 50, 100], description="Trap lengths in tokens [code].")
    per_seq_len: int = Field(2000, gt=0, description="Traps per length [code run_all.sh].")
    ppl_range: tuple[int, int] = Field((1, 100), description="Accepted integer perplexities, inclusive [code].")
    ppl_buckets: int = Field(10, gt=0, description="Equal-width perplexity buckets [code].")
    temperatures: TemperatureSweep = Field(default_factory=TemperatureSweep, description="Sweep per step [code].")
    long_temperatures: TemperatureSweep = Field(
        default_factory=lambda: TemperatureSweep(min=0.5, max=8.0, step=0.25),
        description="Sweep for traps of `long_from` tokens or more, to reach high perplexity [code].",
    )
    long_from: int = Field(100, gt=0, description="Length from which `long_temperatures` is used [code].")
    jaccard_max: float = Field(
        0.2, ge=0, le=1, description="Reject a trap whose token-id set overlaps an accepted one more [code]."
    )
    retokenize: bool = Field(True, description="Keep only traps whose decoded text re-encodes to the same ids [code].")
    control_share: float = Field(
        0.5, gt=0, lt=1, description="Share of each (length, bucket) stratum kept as never-injected controls [ours]."
    )
    batch_size: int = Field(128, gt=0, description="Sequences sampled together [code].")
    max_candidates: int | None = Field(
        None, gt=0, description="Stop a length after this many sampled candidates even if buckets stay open."
    )
    device: str = Field("cpu", description="`cpu`, `cuda`, `cuda:N` or `auto`.")
    threads: int = Field(DEFAULT_THREADS, gt=0, description="torch threads, fixed for reproducibility.")

    @field_validator("file")
    @classmethod
    def _file_readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = config_file_path(value, context_base_dir(info))
        local = local_config_file(path)
        if local is not None and not local.is_file():
            raise ValueError(f"trap file not found: {path}")
        return path

    @model_validator(mode="after")
    def _divisible(self) -> TrapSourceConfig:
        low, high = self.ppl_range
        if not 1 <= low <= high:
            raise ValueError("ppl_range must be [low, high] with 1 ≤ low ≤ high")
        values = high - low + 1
        if values % self.ppl_buckets:
            raise ValueError(f"{values} integer perplexities cannot form {self.ppl_buckets} equal buckets")
        if self.source == "generate" and self.per_seq_len % values:
            raise ValueError(f"per_seq_len must be a multiple of the {values} integer perplexities (equal quotas)")
        if self.source == "file" and not self.file:
            raise ValueError("`source: file` needs `file`")
        return self


class InjectConfig(Section):
    """Plant trap sequences in kept documents and write the trap ledger."""

    enabled: bool = Field(False, description="Run this stage.")
    after: Literal["mix", "dedup"] = Field("mix", description="Inject after `mix` (default) or after `dedup`.")
    traps: TrapSourceConfig = Field(default_factory=TrapSourceConfig)
    n_reps: list[int] = Field(
        default_factory=lambda: [1, 10, 100, 1000], min_length=1, description="Repetition counts, cycled [code]."
    )
    doc_min_tokens: int = Field(5000, ge=0, description="A document is eligible above this many tokens [code].")
    tokens_field: str = Field("n_tokens", description="Document field with its token count.")
    placement: Literal["sentence", "word"] = Field(
        "sentence",
        description="`sentence`: copies go at sentence starts (then word starts when a document has too few "
        "sentences) [ours]; `word`: at word starts, as the reference.",
    )
    join: Literal["spaced", "reference"] = Field(
        "spaced",
        description="`spaced`: a copy is followed by a space, never glued to the next word [ours]; `reference`: "
        "glued to the following word as the reference code does (only with `placement: word`).",
    )
    ledger: str = Field(
        "traps/ledger.parquet",
        pattern=r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+\.parquet$",
        description="Ledger path inside the output directory: `<folder>/<name>.parquet`.",
    )
    seed: int = Field(1111, description="Seed of document choice, roles and positions [code run_all.sh].")

    @model_validator(mode="after")
    def _join(self) -> InjectConfig:
        if self.join == "reference" and self.placement != "word":
            raise ValueError("`join: reference` reproduces the reference's word placement; use `placement: word`")
        if any(n <= 0 for n in self.n_reps):
            raise ValueError("n_reps must be positive")
        if self.ledger.split("/", 1)[0] in ("data", "removed", "rejected", "tokens"):
            raise ValueError("`ledger` must not be inside data/, removed/, rejected/ or tokens/")
        return self
