"""Config section of the ``score`` stage: the model scorers, each writing its columns on every document.

Each entry is one backend's options (``winnow.stages.score.registry``), selected by its ``backend``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from winnow.core.config import Section
from winnow.stages.score.registry import ScorerEntry

BUNDLED_PRESELECT = "winnow:models/preselect/preselect.ftz"
PRESELECT_COLUMN = "preselect_score"


class ScoreConfig(Section):
    """Model scores written on every document (docs/preselect.md PreSelect and the other scorers)."""

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
