"""Config of the Skill-it! online mixture (docs/skill-it.md); nested as ``mix.skillit``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from winnow.core.config import Section


class SkillitConfig(Section):
    """Multiplicative-weights mixture over skills (the values of ``mix.domain_field``), round by round."""

    mode: Literal["plan", "step"] = Field(
        "plan",
        description="plan: recompute every round's mixture from a proxy's loss table and emit them as "
        "`mix.schedule` phases; step: the trainer posts each round's losses and gets the next mixture and shards.",
    )
    skills: list[str] | None = Field(
        None,
        description="Training skills, in graph row order. Default: the names a CSV or JSON `graph` carries, or the "
        "weight columns of `graph_runs` that have a loss column; needed with a .npy graph or no graph.",
    )
    targets: list[str] | None = Field(
        None,
        description="Evaluation skills the update looks at (the reference's target_mask): graph columns and "
        "loss columns are restricted to them and the window is averaged instead of summed. Default: all skills.",
    )
    graph: str | None = Field(
        None,
        description="Skills graph A (rows: training skills, columns: evaluation skills) as .npy (needs `skills`), "
        "CSV (header of column names, one row per skill led by its name) or JSON {train, eval, matrix}. "
        "Neither `graph` nor `graph_runs`: the identity (no edges).",
    )
    graph_runs: str | None = Field(
        None,
        description="Estimate A from a proxy-run CSV read like `winnow mix regmix --runs`: one row per run, one "
        "weight column per skill (the run's training mixture) and one loss column per evaluation skill.",
    )
    graph_rule: Literal["linear", "brute_force"] = Field(
        "linear",
        description="linear: A_ij = (L_j(base) − L_j(after i alone)) / L_j(base), clipped at 0, from one "
        "all-zero-weight (base) row and one single-skill row per skill; brute_force: A_ij = 1 when training "
        "on {i, j} lowers L_j below {j} alone by more than `min_gain` (relative), seeds averaged [ours: "
        "normalisation and threshold].",
    )
    min_gain: float = Field(0.0, ge=0.0, description="brute_force: relative loss gain an edge must exceed.")
    loss_column: str = Field(
        "loss_{skill}", description="Name of the loss column of an evaluation skill in run and loss tables."
    )
    offdiag_binary_weight: float = Field(
        0.5, ge=0.0, description="Off-diagonal entries equal to 1 become this (reference: 0.5); the diagonal stays."
    )
    eta: float = Field(0.5, ge=0.0, description="η (reference LEGO: 0.5, Natural Instructions: 0.2).")
    window: int = Field(3, ge=0, description="Checkpoints (not rounds) summed into each update (reference: 3).")
    rounds: int = Field(6, ge=1, description="T: rounds of the run (LEGO: 6,000 steps / 1,000 per round).")
    tokens_per_round: int | None = Field(
        None,
        gt=0,
        description="Tokens per round: drawn per step in step mode; in plan mode, when `mix.budget` is not set, "
        "the run's budget is rounds × this.",
    )
    normalize_loss: bool = Field(False, description="Divide losses by a baseline checkpoint's (relative loss).")
    eta_schedule: bool = Field(False, description="η_t = η / (ΣL_latest / ΣL_baseline).")
    dynamic_lambda: bool = Field(False, description="Halve every edge between different skills after each round.")
    ignore_lone_nodes: bool = Field(
        False, description="Skills with no edge get exactly 1/k; the update shares the rest among the others."
    )
    initialize_loss: bool = Field(
        False, description="Put a pseudo-checkpoint of ones × mean(first losses) before the first (reference option)."
    )
    loss_baseline: Literal["first", "reference"] = Field(
        "first",
        description="Baseline of normalize_loss and eta_schedule: the first checkpoint (as described), or as "
        "mw_trainer.py ends up doing: the second checkpoint once it exists.",
    )
    lone_prior: Literal["fixed", "reference"] = Field(
        "fixed",
        description="ignore_lone_nodes: the connected skills' prior stays fixed, or (mw_trainer.py, which updates "
        "its prior array in place) becomes the previous round's weights.",
    )
    prior: dict[str, float] | None = Field(
        None, description="Prior weight per skill (mw_prior; default 1 each); also the reference's first 'loss'."
    )
    init: dict[str, float] | None = Field(None, description="Round 0's mixture outright (mw_init).")
    losses: str | None = Field(
        None,
        description="plan: the proxy's loss table, CSV with `round` (the round during which the checkpoint was "
        "measured), optional `step`, and one loss column per evaluation skill.",
    )
    max_epochs: int = Field(4, ge=1, description="step: most copies of one shard across all rounds.")
    phase_prefix: str = Field(
        "skillit",
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="plan: phases are named <prefix>-<round>, the round zero-padded so names sort in round order.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SkillitConfig:
        if self.graph is not None and self.graph_runs is not None:
            raise ValueError("give `graph` or `graph_runs`, not both")
        if self.ignore_lone_nodes and self.targets is not None:
            raise ValueError("`ignore_lone_nodes` needs every skill as an evaluation skill (no `targets`)")
        if self.mode == "plan" and self.rounds > 1 and self.losses is None:
            raise ValueError("plan mode needs `losses` (a proxy's loss table) for rounds after the first")
        return self
