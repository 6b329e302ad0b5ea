"""The stages a run can use: each stage package's ``SPEC``, listed once, in pipeline order.

Stage names are short nouns shared by config sections and ``--stages``. A stage declares itself
(config class, transform, columns, needs) in its package; this list only says which exist and in
which order they run.
"""

from __future__ import annotations

from typing import Any

from winnow.beam.contract import StageSpec
from winnow.config import WinnowConfig
from winnow.stages.decontaminate.stage import SPEC as DECONTAMINATE
from winnow.stages.dedup.stage import SPEC as DEDUP
from winnow.stages.extract.stage import SPEC as EXTRACT
from winnow.stages.filter.stage import SPEC as FILTER
from winnow.stages.inject.stage import SPEC as INJECT
from winnow.stages.langid.stage import SPEC as LANGID
from winnow.stages.mix.stage import SPEC as MIX
from winnow.stages.normalize.stage import SPEC as NORMALIZE
from winnow.stages.order.stage import SPEC as ORDER
from winnow.stages.pack.stage import SPEC as PACK
from winnow.stages.pii.stage import SPEC as PII
from winnow.stages.review.stage import SPEC as REVIEW
from winnow.stages.score.stage import SPEC as SCORE
from winnow.stages.select.stage import SPEC as SELECT
from winnow.stages.tag.stage import SPEC as TAG

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        EXTRACT,
        NORMALIZE,
        LANGID,
        FILTER,
        PII,
        REVIEW,
        DEDUP,
        DECONTAMINATE,
        SCORE,
        TAG,
        SELECT,
        MIX,
        INJECT,
        ORDER,
        PACK,
    )
}
PIPELINE_ORDER: list[str] = list(STAGES)


def enabled(spec: StageSpec, config: WinnowConfig) -> bool:
    return bool(getattr(getattr(config, spec.name), "enabled", True))


def run_order(config: WinnowConfig) -> list[str]:
    """Stage names in the order this run uses: the registry's, with a stage that ``follows`` another by
    config (``inject.after: dedup``) moved right behind it."""
    rank = {name: float(i) for i, name in enumerate(PIPELINE_ORDER)}
    for spec in STAGES.values():
        if spec.follows is not None:
            rank[spec.name] = rank[spec.follows(getattr(config, spec.name))] + 0.5
    return sorted(PIPELINE_ORDER, key=lambda name: rank[name])


def select_stages(config: WinnowConfig, only: list[str] | None = None) -> list[StageSpec]:
    """Stages to run, in pipeline order: the enabled ones, or exactly ``only`` when given."""
    order = run_order(config)
    if only:
        unknown = [name for name in only if name not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(PIPELINE_ORDER)}")
        return [STAGES[name] for name in order if name in only]
    return [STAGES[name] for name in order if enabled(STAGES[name], config)]


def build_stage(spec: StageSpec, config: WinnowConfig) -> Any:
    """The stage's transform for this run: its section, plus the run-wide settings it needs."""
    return spec.build(getattr(config, spec.name), seed=config.seed, tokenizer=config.tokenizer)
