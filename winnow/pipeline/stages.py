"""The one place where stages register: name, pipeline position, config section, transform.

Stage names are short nouns shared by config sections and ``--stages``. A stage that is
not implemented yet is simply not listed here, and its config section does not exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam

from winnow.schemas.config import WinnowConfig

# Pipeline order of every stage name winnow knows, implemented or planned.
PIPELINE_ORDER = ["extract", "normalize", "langid", "filter", "dedup", "score", "tag", "select", "mix", "order"]


@dataclass(frozen=True)
class StageSpec:
    """A stage: its name (= config section), and how to build its transform from the config."""

    name: str
    build: Callable[[WinnowConfig], beam.PTransform]

    def enabled(self, config: WinnowConfig) -> bool:
        section = getattr(config, self.name)
        return bool(getattr(section, "enabled", True))


def _stage(name: str, transform: str, seeded: bool = False, tokenized: bool = False) -> StageSpec:
    """Stage ``name`` built as ``transform(config.<name>)`` (``"module:Class"``), imported when the
    graph is built so a run loads only the stages (and model libraries) it uses. ``seeded`` stages
    also get ``seed=config.seed``; ``tokenized`` ones ``tokenizer=config.tokenizer``."""
    module, class_name = transform.split(":")

    def build(config: WinnowConfig) -> beam.PTransform:
        factory = getattr(importlib.import_module(module), class_name)
        section = getattr(config, name)
        kwargs: dict = {}
        if seeded:
            kwargs["seed"] = config.seed
        if tokenized:
            kwargs["tokenizer"] = config.tokenizer
        return factory(section, **kwargs)

    return StageSpec(name, build)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        _stage("extract", "winnow.transforms.extract:Extract"),
        _stage("normalize", "winnow.transforms.normalize:Normalize"),
        _stage("langid", "winnow.transforms.langid:LangId"),
        _stage("filter", "winnow.transforms.filter:Filter"),
        _stage("dedup", "winnow.transforms.dedup:Dedup"),
        _stage("score", "winnow.transforms.score:Score", tokenized=True),
        _stage("tag", "winnow.transforms.tag:Tag", tokenized=True),
        _stage("select", "winnow.transforms.select:Select", seeded=True),
        _stage("mix", "winnow.transforms.mix:Mix", seeded=True, tokenized=True),
        _stage("order", "winnow.transforms.order:Order", seeded=True, tokenized=True),
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
