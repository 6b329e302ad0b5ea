"""Config section of the `langid` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from winnow.core.config import Section

SAMPLE_CHARS = 700  # chosen on bench/langid_eval.py's choose half: see docs/extraction.md#language-identification


class LangIdConfig(Section):
    """Language identification: writes `language` and `language_score`, keeps the configured languages."""

    enabled: bool = Field(True, description="Run this stage.")
    backend: Literal["fasttext", "cld2"] = Field(
        "fasttext",
        description="`fasttext`: lid.176 (176 languages, bundled, CC BY-SA 3.0); `cld2`: Compact Language "
        "Detector 2 via pycld2 (faster on long texts, fewer languages, see bench/langid_eval.py).",
    )
    model_path: str | None = Field(None, description="fastText model file; null uses the bundled lid.176.ftz.")
    keep: dict[str, float] = Field(
        default_factory=lambda: {"en": 0.65},
        description="Language code (ISO 639-1 where one exists) -> minimum score to keep. DCLM keeps "
        "English at 0.65. `*` applies to every language not listed.",
    )
    filter: bool = Field(
        True, description="Remove documents that fail `keep`; false only annotates language and score."
    )
    max_chars: int | None = Field(
        20_000,
        gt=0,
        description="Without `sample_chars`, only the first this many characters are classified (lid.176 is "
        "bag-of-n-grams: the language of a page is settled well before; bounds the cost of huge documents). "
        "Null: whole text.",
    )
    sample_chars: int | None = Field(
        SAMPLE_CHARS,
        ge=0,
        description="A longer text is classified on a sample of about this many characters: `sample_windows` "
        "equal windows spread evenly from its start to its end, each cut to whole words. fastText's cost grows "
        "with the text it reads; the default was chosen with bench/langid_eval.py. 0 or null: the whole text "
        "(up to `max_chars`).",
    )
    sample_windows: int = Field(
        16,
        gt=0,
        description="Windows in the `sample_chars` sample; more, smaller windows follow the whole text's "
        "prediction more closely (bench/langid_eval.py). 1: a prefix.",
    )
    batch_size: int = Field(256, gt=0, description="Documents per model call.")

    @model_validator(mode="after")
    def _sample_within_max_chars(self) -> LangIdConfig:
        if self.sample_chars and self.max_chars is not None and self.sample_chars > self.max_chars:
            raise ValueError(f"sample_chars ({self.sample_chars}) must not exceed max_chars ({self.max_chars})")
        if self.sample_chars and self.sample_chars < self.sample_windows:
            raise ValueError(
                f"sample_chars ({self.sample_chars}) must allow a character per window ({self.sample_windows})"
            )
        return self

    @field_validator("keep")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for lang, score in value.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"score for {lang!r} must be in [0, 1], got {score}")
        return value
