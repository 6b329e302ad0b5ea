"""Config section of the ``order`` stage: in-context ordering, packing and Dataset Decomposition (METHODS §4, §5)."""

from __future__ import annotations

from pydantic import Field

from winnow.schemas.base import Section


class OrderConfig(Section):
    """Order kept documents so related ones share a training context (METHODS §4), then pack them (§4.6, §5)."""

    enabled: bool = Field(False, description="Run this stage.")
