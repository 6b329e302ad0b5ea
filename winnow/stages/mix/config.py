"""Config section of the ``mix`` stage: per-domain target mixtures, RegMix, repetition caps, phases (docs/mixing.md),
and a Skill-it! schedule (``mix.skillit``, docs/skill-it.md)."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from winnow.core.config import Section, config_file_path, context_base_dir, local_config_file
from winnow.stages.mix.mixing import read_mixture_file
from winnow.stages.mix.skillit_config import SkillitConfig


class RegMixTarget(Section):
    """A mixture fitted by RegMix (docs/mixing.md#regmix) on the driver, when the graph is built."""

    runs_csv: str = Field(
        description="Proxy runs: one row per run, one column per domain (its mixture weight), and the target "
        "loss column(s). `winnow mix generate` writes the mixtures to train.",
    )
    targets: list[str] = Field(
        min_length=1, description="Loss columns (lower is better); one regressor each, their mixtures averaged."
    )
    prior: str = Field(
        description="Prior JSON list `[{domain, tokens, documents, weight}]` the proxy mixtures were drawn around "
        "(the `mixture.prior` records a previous run wrote); the search samples Dir(q) from it.",
    )
    samples: int = Field(100_000, gt=0, description="Dirichlet draws scored in the search.")
    top: int = Field(128, gt=0, description="The best-predicted draws averaged into the mixture.")
    seed: int = Field(42, description="Seed of the split, the regressor and the search (RegMix uses 42).")


class MixtureSpec(Section):
    """A target mixture: exactly one of ``manual``, ``manual_file``, ``scale``, ``regmix`` or ``product``."""

    manual: dict[str, float] | None = Field(
        None,
        description="{domain: weight}, renormalised to sum 1. Domains not listed get weight 0 (all their "
        "documents are removed as `mix:not_selected`); listed domains absent from the pool are reported unmet.",
    )
    manual_file: str | None = Field(
        None,
        description="`manual` read from a file, e.g. a paper's per-source table: CSV/TSV with a domain column "
        "(`domain`, `source`, `key` or the first) and a weight column (`weight`, `share` or `tokens`; token counts "
        "weigh in proportion), `#` lines are comments; or a JSON/YAML mapping. Relative to the config file; "
        "`winnow:` names package data. Checked when the config is loaded.",
    )
    scale: dict[str, float] | None = Field(
        None,
        description="The pool's own mixture with these domains' weights multiplied (unlisted: × 1), renormalised; "
        "`{}` is the pool's mixture. The usual way to up- or downsample a few domains (docs/mixing.md#phases).",
    )
    regmix: RegMixTarget | None = Field(None, description="Fit the mixture with RegMix from proxy runs.")
    product: dict[str, MixtureSpec] | None = Field(
        None,
        description="Independence product over the fields of `domain_field` (e.g. {topic: …, format: …}): "
        "w(t, f) = w_topic(t) · w_format(f), each cell capped by prior(t, f) / selection_fraction, renormalised.",
    )
    selection_fraction: float | None = Field(
        None,
        gt=0,
        description="`product`: the selected share of the pool in the cell cap (WebOrganizer: 30/200); "
        "default: the phase's budget over the pool's tokens.",
    )

    @field_validator("manual_file")
    @classmethod
    def _mixture_file_readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = config_file_path(value, context_base_dir(info))
        local = local_config_file(path)
        if local is not None:  # a remote file is read (and checked) when the run starts
            if not local.is_file():
                raise ValueError(f"mixture file not found: {path}")
            read_mixture_file(local)
        return path

    @model_validator(mode="after")
    def _exactly_one(self) -> MixtureSpec:
        names = ("manual", "manual_file", "scale", "regmix", "product")
        given = [name for name in names if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a mixture needs exactly one of {', '.join(names)} (got {given or 'none'})")
        if self.scale and any(factor < 0 for factor in self.scale.values()):
            raise ValueError("`scale` factors must be non-negative")
        return self


class QualityRule(Section):
    """How documents are ranked inside a domain's budget (docs/qurating.md#selection applied per cell,
    docs/mixing.md#target-mixtures)."""

    column: str = Field(description="Score column to rank by (higher first).")
    rule: Literal["top_k", "gumbel_top_k"] = Field(
        "gumbel_top_k", description="`top_k`: by score; `gumbel_top_k`: z over the whole pool, then z/τ + Gumbel."
    )
    temperature: float = Field(2.0, gt=0, description="`gumbel_top_k`: τ (QuRating's best: 2.0).")


class Phase(Section):
    """One stretch of training tokens with its own mixture (docs/mixing.md#phases)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="Shard-set name (`data/phase=<name>/`).")
    start_fraction: float = Field(ge=0, le=1)
    end_fraction: float = Field(gt=0, le=1)
    weights: MixtureSpec


class MixConfig(Section):
    """Sample the corpus to a target domain mixture (docs/mixing.md#target-mixtures mixtures, docs/mixing.md#regmix
    RegMix, docs/mixing.md#phases schedule)."""

    enabled: bool = Field(False, description="Run this stage.")
    domain_field: str = Field(
        "topic",
        description="Tag field(s) whose value is the domain (top level or in `metadata`); `topic,format` mixes "
        "over cells `topic|format`; `input_name` mixes the inputs by their `name` (per-source mixtures).",
    )
    budget: int | None = Field(None, gt=0, description="Output tokens (all phases); overrides `fraction`.")
    fraction: float | None = Field(
        1.0, gt=0, description="Output tokens as a multiple of the pool's tokens (> 1 repeats data)."
    )
    weights: MixtureSpec | None = Field(None, description="The target mixture when there is no `schedule`.")
    schedule: list[Phase] = Field(
        default_factory=list, description="Phases covering 0–1 of the budget, each with its own mixture."
    )
    quality: QualityRule | None = Field(
        None, description="Rank by a score inside each domain; default: seeded hash order."
    )
    max_epochs: int = Field(
        4, ge=1, description="Most copies of one document across all phases (Muennighoff et al.: ≤ 4 is near-free)."
    )
    tokens_field: str = Field("n_tokens", description="Token count field (counted with the run tokenizer if absent).")
    skillit: SkillitConfig | None = Field(
        None,
        description="Skill-it! over the skills of `domain_field`. mode plan: the rounds' mixtures, recomputed from "
        "a graph and a proxy's losses before the run, become `schedule` (T equal phases). mode step: used by "
        "`winnow mix skillit-step` between training rounds, not by a run.",
    )

    @model_validator(mode="after")
    def _mixture_given(self) -> MixConfig:
        if not self.enabled:
            return self
        if self.skillit is not None:
            self._skillit_usable(self.skillit)
            return self
        if self.schedule and self.weights is not None:
            raise ValueError("give either `weights` or `schedule`, not both")
        if not self.schedule and self.weights is None:
            raise ValueError("mix needs `weights` or `schedule`")
        if self.budget is None and self.fraction is None:
            raise ValueError("mix needs `budget` or `fraction`")
        if self.schedule:
            edges = [(p.start_fraction, p.end_fraction) for p in self.schedule]
            if abs(edges[0][0]) > 1e-9 or abs(edges[-1][1] - 1) > 1e-9:
                raise ValueError("schedule phases must start at 0 and end at 1")
            for (_, end), (start, _) in itertools.pairwise(edges):
                if abs(end - start) > 1e-9:
                    raise ValueError("schedule phases must be contiguous")
            if any(s >= e for s, e in edges):
                raise ValueError("each phase needs start_fraction < end_fraction")
            names = [p.name for p in self.schedule]
            if len(set(names)) != len(names):
                raise ValueError("phase names must be unique")
        fields = self.fields
        for spec in self._specs():
            if spec.product is not None and sorted(spec.product) != sorted(fields):
                raise ValueError(f"`product` factors {sorted(spec.product)} must be the domain fields {fields}")
        return self

    def _skillit_usable(self, skillit: SkillitConfig) -> None:
        """What a run with ``mix.skillit`` needs, checked before any data moves; messages name the key."""
        if skillit.mode == "step":
            raise ValueError(
                "skillit.mode: `step` runs between training rounds (`winnow mix skillit-step`), not inside a run; "
                "use mode `plan`, or disable the mix stage"
            )
        given = [name for name in ("weights", "schedule") if getattr(self, name)]
        if given:
            raise ValueError(f"skillit (plan) writes the schedule itself: remove {' and '.join(given)}")
        named_by_file = skillit.graph_runs is not None or (skillit.graph and not skillit.graph.endswith(".npy"))
        if skillit.skills is None and not named_by_file:
            raise ValueError(
                "skillit.skills: list the skills (values of domain_field) in graph row order; only a CSV or JSON "
                "`graph`, or `graph_runs`, names them"
            )
        per_round = skillit.tokens_per_round
        if per_round is not None and self.budget is not None and self.budget != per_round * skillit.rounds:
            raise ValueError(
                f"skillit.tokens_per_round × rounds ({per_round} × {skillit.rounds}) differs from "
                f"budget ({self.budget}); give one of them"
            )

    @property
    def fields(self) -> list[str]:
        return [f.strip() for f in self.domain_field.split(",") if f.strip()]

    def _specs(self) -> list[MixtureSpec]:
        return [p.weights for p in self.schedule] if self.schedule else [self.weights] if self.weights else []
