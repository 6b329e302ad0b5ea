"""Config section of the ``decontaminate`` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section


class DecontaminateConfig(Section):
    """Benchmark decontamination by an exact word n-gram join against eval files (docs/release-safety.md)."""

    enabled: bool | None = Field(
        None,
        description="Run this stage (after `dedup`, before `score`). Null: on exactly when `eval_files` is given.",
    )
    eval_files: list[str] = Field(
        default_factory=list,
        description="Eval sets, as paths or globs relative to the working directory: JSONL with `text` (and "
        "optional `benchmark`, default the file name, and `id`), or .txt with one item per line; `.gz` is read. "
        "A file that cannot be read or has no item of `ngram` words stops the run before it starts.",
    )
    ngram: int = Field(
        13,
        ge=1,
        le=64,
        description="Words per n-gram, after the normalisation (letters and digits, accents removed, case-folded).",
    )
    action: Literal["drop", "cut"] = Field(
        "drop",
        description="`drop`: a document sharing an n-gram with an eval item is removed as "
        "`decontaminate:<benchmark>` (the benchmark with most shared n-grams); `cut`: the matched spans "
        "± `cut_margin` characters are removed from its text.",
    )
    cut_margin: int = Field(
        200, ge=0, description="Characters removed on each side of a matched span with `action: cut` (GPT-3: 200)."
    )
    cut_min_chars: int = Field(
        200,
        ge=0,
        description="A cut document left with fewer characters than this is removed as `decontaminate:<benchmark>` "
        "(`[ours]`: what is left of a page that was mostly an eval item is rarely worth keeping).",
    )
    min_ngrams: int = Field(
        1, ge=1, description="Shared n-grams an item needs to count as found in a document (GPT-3, datatrove: 1)."
    )
    short_item_words: int | None = Field(
        None,
        ge=1,
        description="Match items shorter than `ngram` words but with at least this many as one whole k-gram "
        "(`[ours]`); null skips them (GPT-3 and datatrove do), and the manifest counts them as skipped.",
    )
    join: Literal["auto", "side_input", "keyed"] = Field(
        "auto",
        description="`side_input`: every worker holds the eval n-grams (~16 bytes each) and matches documents "
        "locally; `keyed`: a CoGroupByKey on the n-gram hash joins document and eval n-grams; `auto`: side input "
        "up to `side_input_max_ngrams` distinct eval n-grams.",
    )
    side_input_max_ngrams: int = Field(
        20_000_000, ge=0, description="Largest eval side (distinct n-grams) `join: auto` copies to every worker."
    )

    @model_validator(mode="after")
    def _enabled_follows_eval_files(self) -> DecontaminateConfig:
        if self.enabled is None:
            self.enabled = bool(self.eval_files)
        if self.enabled and not self.eval_files:
            raise ValueError("decontaminate is enabled but eval_files is empty: name the eval sets to check against")
        if self.short_item_words is not None and self.short_item_words >= self.ngram:
            raise ValueError(f"short_item_words ({self.short_item_words}) must be below ngram ({self.ngram})")
        return self
