"""Config section of the `langid` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from winnow.core.config import Section


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
        description="Only the first this many characters are classified (lid.176 is bag-of-n-grams: the "
        "language of a page is settled well before; bounds the cost of huge documents). Null: whole text.",
    )
    batch_size: int = Field(256, gt=0, description="Documents per model call.")

    @field_validator("keep")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for lang, score in value.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"score for {lang!r} must be in [0, 1], got {score}")
        return value
