"""Config of ``select.rule: band``: keep or tag documents whose column lies between two weighted quantiles.

The defaults are SALT's "challenging yet learnable" stand-in (docs/salt.md): the band between the
token-weighted 50% and 90% quantiles of ``slm_median_nll``, with a top-10 hit rate of at least
one half, tagged rather than dropped. All four numbers are [ours]: the paper's own selection rule
and thresholds were not available when this was written.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section
from winnow.stages.select.where import WhereCondition


class BandSelectConfig(Section):
    """Keep (or tag) documents whose ``column`` lies between the ``lower`` and ``upper`` weighted quantiles."""

    column: str = Field("slm_median_nll", min_length=1, description="The column the band is cut on.")
    lower_quantile: float = Field(0.5, ge=0, le=1, description="Weighted quantile where the band starts [ours].")
    upper_quantile: float = Field(0.9, ge=0, le=1, description="Weighted quantile where the band ends [ours].")
    require: list[WhereCondition] = Field(
        default_factory=lambda: [WhereCondition(field="slm_topk_hit", op=">=", value=0.5)],
        description="Extra conditions a document in the band must meet (the 'learnable' check [ours]); they "
        "only remove documents from the band, never move the quantiles.",
    )
    weight: Literal["tokens", "chars", "docs"] = Field("tokens", description="What the quantiles weigh.")
    tokens_field: str = Field("n_tokens", description="Document field with the token count when `weight: tokens`.")
    tag_only: bool = Field(True, description="Write `tag_column` on every document instead of dropping.")
    tag_column: str = Field("salt_selected", min_length=1, description="Boolean column written when `tag_only`.")

    @model_validator(mode="after")
    def _ordered(self) -> BandSelectConfig:
        if self.lower_quantile >= self.upper_quantile:
            raise ValueError("lower_quantile must be below upper_quantile")
        return self
