"""Config section of the ``mix`` stage: per-domain target mixtures, RegMix, repetition caps, phases (METHODS §6)."""

from __future__ import annotations

from pydantic import Field

from winnow.schemas.base import Section


class MixConfig(Section):
    """Sample the corpus to a target domain mixture (METHODS §6.1 mixtures, §6.3 RegMix, §6.4 schedule)."""

    enabled: bool = Field(False, description="Run this stage.")
