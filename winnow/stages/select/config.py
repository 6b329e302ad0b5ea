"""Config section of the ``select`` stage.

``select`` keeps documents by a rule on score columns: a fixed threshold, the top of the pool to a
budget of characters or tokens (PreSelect: top 10% of characters), QuRating's Gumbel-top-k sampling
at temperature τ, or DataMan's uniform sampling; optionally with per-group budgets (``balance_by``);
or SALT's difficulty band between two weighted quantiles of a column (``rule: band``, block ``band``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section
from winnow.stages.select.band_config import BandSelectConfig
from winnow.stages.select.ingenious_config import IngeniousConfig
from winnow.stages.select.where import WhereCondition

# The default metric: the column the default scorer (PreSelect) writes.
DEFAULT_COLUMN = "preselect_score"


class SelectConfig(Section):
    """Which documents are kept by their scores (docs/budgets.md#the-budget-cut budget cut, docs/qurating.md#selection
    sampling, docs/preselect.md#scoring-and-selection PreSelect)."""

    enabled: bool = Field(False, description="Run this stage.")
    rule: Literal["threshold", "top_k", "gumbel_top_k", "uniform", "ingenious", "band"] = Field(
        "top_k",
        description="`threshold`: keep metric ≥ `threshold`; `top_k`: highest metric first until the budget; "
        "`gumbel_top_k`: sample without replacement ∝ exp(z/τ) until the budget; `uniform`: a random "
        "permutation by hash (no metric; DataMan's uniform baseline) cut at the budget; `ingenious`: "
        "representative subsets by facility location over embeddings, drawn in rounds (block `ingenious`, "
        "docs/ingenious.md; no score columns); `band`: documents whose `band.column` lies between two weighted "
        "quantiles of the pool, tagged (default) or kept (block `band`, docs/salt.md).",
    )
    columns: list[str] = Field(
        default_factory=lambda: [DEFAULT_COLUMN],
        min_length=1,
        description="Score columns whose sum is the metric (several = QuRating's mix of criteria).",
    )
    direction: Literal["top", "bottom"] = Field("top", description="`bottom` selects the lowest metric (inverse).")
    threshold: float | None = Field(None, description="Rule `threshold`: minimum metric kept.")
    fraction: float | None = Field(
        0.1, gt=0, le=1, description="Budget as a share of the pool's weight (PreSelect keeps 10% of characters)."
    )
    budget: int | None = Field(None, gt=0, description="Absolute budget in weight units; overrides `fraction`.")
    weight: Literal["chars", "tokens"] = Field("chars", description="What the budget counts.")
    tokens_field: str = Field("n_tokens", description="Document field with the token count when `weight: tokens`.")
    temperature: float = Field(
        2.0, ge=0, description="Rule `gumbel_top_k`: τ; 0 is top-k on z-scores, QuRating's best run used 2.0."
    )
    balance_by: str | list[str] | None = Field(
        None,
        description="Field (top level or in `metadata`; `input_name` is each input's `name`) whose groups each "
        "get budget ⌊T_d / T · B⌋; "
        "normalisation and noise stay global. A list allocates hierarchically (DataMan's source → "
        "domain): ⌊T_s / T · B⌋ per first-field value, then ⌊T_{s,d} / T_s · B_s⌋ inside it, and so on.",
    )
    where: list[WhereCondition] = Field(
        default_factory=list,
        description="Conditions (all must hold) a document must meet to be a candidate, e.g. "
        "`[{field: overall_score, op: '==', value: 5}]`; others are removed as `select:where`. "
        "Token totals T are counted after this filter.",
    )
    ingenious: IngeniousConfig = Field(
        default_factory=IngeniousConfig,
        description="Rule `ingenious`: embeddings, partitions, optimizer, Taylor softmax and rounds. Its `fraction` "
        "sets the share each round keeps; `budget` (tokens) overrides it when `ingenious.weight` is `tokens`.",
    )
    band: BandSelectConfig = Field(
        default_factory=BandSelectConfig,
        description="Rule `band`: the column, the two quantiles, `require`, the weight and tag-or-drop "
        "(docs/salt.md#the-difficulty-band-selectrule-band). `columns`, `fraction`, `budget` and `weight` do not "
        "apply to it.",
    )
    upsample: bool = Field(
        False,
        description="A group whose candidates hold fewer tokens than its budget is filled with repeats drawn "
        "with replacement from its documents (by hash), emitted as copies with `epoch` 1, 2, … (DataMan).",
    )

    @model_validator(mode="after")
    def _rule_options(self) -> SelectConfig:
        if self.rule == "threshold" and self.threshold is None:
            raise ValueError("rule `threshold` needs `threshold`")
        if self.rule != "threshold" and self.fraction is None and self.budget is None:
            raise ValueError(f"rule `{self.rule}` needs `fraction` or `budget`")
        if self.upsample and self.rule == "threshold":
            raise ValueError("`upsample` needs a budget rule (top_k, gumbel_top_k or uniform)")
        if isinstance(self.balance_by, list) and not self.balance_by:
            raise ValueError("`balance_by` list is empty; use null for no balancing")
        if self.rule == "band" and (self.balance_by is not None or self.upsample):
            raise ValueError("rule `band` cuts one pool and never repeats documents: remove `balance_by` / `upsample`")
        if self.rule == "ingenious":
            if self.balance_by is not None:
                raise ValueError("rule `ingenious` balances by its own partitions; remove `balance_by`")
            if self.upsample:
                raise ValueError("rule `ingenious` repeats documents in its rounds; remove `upsample`")
            if self.budget is not None and self.ingenious.weight != "tokens":
                raise ValueError("`budget` counts tokens: with rule `ingenious` it needs `ingenious.weight: tokens`")
        return self

    @property
    def balance_fields(self) -> list[str]:
        """``balance_by`` as a list (empty: one pool)."""
        if self.balance_by is None:
            return []
        return [self.balance_by] if isinstance(self.balance_by, str) else list(self.balance_by)
