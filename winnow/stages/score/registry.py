"""The scorer backends, in one explicit list: a config entry's ``backend`` selects one of them.

Adding a backend is one module (its scorer class and its ``ScorerOptions`` subclass), one line in
``BACKENDS`` and a test; the config union, the column schema and the factory follow from here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from winnow.stages.score.causal_lm import CausalLMOptions
from winnow.stages.score.dataman import DataManOptions
from winnow.stages.score.embedding_head import EmbeddingHeadOptions
from winnow.stages.score.fasttext import FastTextOptions
from winnow.stages.score.hf_checkpoint import HFCheckpointOptions
from winnow.stages.score.qurating import QuRatingOptions
from winnow.stages.score.scorer import Scorer, ScorerFactory, ScorerOptions

BACKENDS = (
    FastTextOptions,
    EmbeddingHeadOptions,
    HFCheckpointOptions,
    QuRatingOptions,
    DataManOptions,
    CausalLMOptions,
)

ScorerEntry = Annotated[
    FastTextOptions | EmbeddingHeadOptions | HFCheckpointOptions | QuRatingOptions | DataManOptions | CausalLMOptions,
    Field(discriminator="backend"),
]


def backend_names() -> list[str]:
    """The ``backend`` values a config may name."""
    return sorted(options.model_fields["backend"].annotation.__args__[0] for options in BACKENDS)


_ENTRY = TypeAdapter(ScorerEntry)


def scorer_entry(options: dict[str, Any]) -> ScorerOptions:
    """A ``score.scorers`` entry from a mapping, validated as the config validates it."""
    return _ENTRY.validate_python(options)


def build_scorer(entry: ScorerOptions | dict[str, Any]) -> Scorer:
    """The scorer a config entry (or its mapping) describes, built now (tests, benches, training tools)."""
    return ScorerFactory(entry if isinstance(entry, ScorerOptions) else scorer_entry(entry))()
