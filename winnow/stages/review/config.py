"""Config section of the ``review`` stage: the sheet reviewers fill in, and their decisions as filters."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from winnow.core.config import Section, config_file_path, context_base_dir, local_config_file
from winnow.stages.review.decisions import parse_decisions


class ReviewExportConfig(Section):
    """What `winnow review export` samples from a finished run for human review."""

    per_source: int = Field(200, ge=1, description="Documents per source in the sheet.")
    by_format: bool = Field(
        True,
        description="Spread each source's documents evenly over its `format` values (round robin, in hash "
        "order inside each format), so rare formats are seen too.",
    )
    seed: int = Field(7, description="Seed of the sample (H64 of the id): the same run and seed give the same sheet.")
    text_chars: int = Field(2000, ge=100, description="Characters of each document's text shown in the sheet.")


class ReviewConfig(Section):
    """Human review (1.5-Pints, docs/pints.md): reviewers' decisions removed like any filter, as `review:<label>`."""

    enabled: bool | None = Field(None, description="Run this stage; null: whenever `decisions` is set.")
    decisions: str | None = Field(
        None,
        description="The filled-in decisions sheet (CSV: `id, decision, label` for documents, `source, decision, "
        "label, tokens` for sources; docs/pints.md). Relative to the config file. Checked when the config is loaded.",
    )
    export: ReviewExportConfig = Field(default_factory=ReviewExportConfig, description="`winnow review export`.")
    tokens_field: str = Field(
        "n_tokens", description="Token count field for `cap_tokens` (counted with the run tokenizer if absent)."
    )

    @field_validator("decisions")
    @classmethod
    def _decisions_readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = config_file_path(value, context_base_dir(info))
        local = local_config_file(path)
        if local is not None:  # a remote sheet is read (and checked) when the run starts
            if not local.is_file():
                raise ValueError(f"decisions file not found: {path}")
            parse_decisions(local.read_text(encoding="utf-8"), str(path))
        return path
