"""Config section of the ``tag`` stage: WebOrganizer topic × format and DataMan domain tags (METHODS §6)."""

from __future__ import annotations

from pydantic import Field

from winnow.schemas.base import Section


class TagConfig(Section):
    """Domain tags on every kept document (METHODS §6.1, §6.2)."""

    enabled: bool = Field(False, description="Run this stage.")
