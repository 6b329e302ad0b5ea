"""The one place where stages register: name, pipeline position, config section, transform.

Stage names are short nouns shared by config sections and ``--stages``. A stage that is
not implemented yet is simply not listed here, and its config section does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam

from winnow.schemas.config import WinnowConfig

# Pipeline order of every stage name winnow knows, implemented or planned.
PIPELINE_ORDER = ["extract", "normalize", "langid", "filter", "dedup", "score", "tag", "select", "order"]


@dataclass(frozen=True)
class StageSpec:
    """A stage: its name (= config section), and how to build its transform from the config."""

    name: str
    build: Callable[[WinnowConfig], beam.PTransform]

    def enabled(self, config: WinnowConfig) -> bool:
        section = getattr(config, self.name)
        return bool(getattr(section, "enabled", True))


def _extract(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.extract import Extract

    return Extract(config.extract)


def _langid(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.langid import LangId

    return LangId(config.langid)


def _filter(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.filter import Filter

    return Filter(config.filter)


def _normalize(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.normalize import Normalize

    return Normalize(config.normalize)


def _dedup(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.dedup import Dedup

    return Dedup(config.dedup)


def _score(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.score import Score

    return Score(config.score)


def _select(config: WinnowConfig) -> beam.PTransform:
    from winnow.transforms.select import Select

    return Select(config.select, seed=config.seed)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec("extract", _extract),
        StageSpec("normalize", _normalize),
        StageSpec("langid", _langid),
        StageSpec("filter", _filter),
        StageSpec("dedup", _dedup),
        StageSpec("score", _score),
        StageSpec("select", _select),
    ]
}


def available_stages() -> list[str]:
    return [name for name in PIPELINE_ORDER if name in STAGES]


def select_stages(config: WinnowConfig, only: list[str] | None = None) -> list[StageSpec]:
    """Stages to run, in pipeline order: the enabled ones, or exactly ``only`` when given."""
    if only:
        unknown = [name for name in only if name not in PIPELINE_ORDER]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(PIPELINE_ORDER)}")
        missing = [name for name in only if name not in STAGES]
        if missing:
            raise ValueError(
                f"stage(s) {', '.join(missing)} not implemented yet; available: {', '.join(available_stages())}"
            )
        return [STAGES[name] for name in PIPELINE_ORDER if name in only]
    return [STAGES[name] for name in PIPELINE_ORDER if name in STAGES and STAGES[name].enabled(config)]
