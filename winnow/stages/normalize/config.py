"""Config section of the `normalize` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.core.config import Section


class NormalizeConfig(Section):
    """Text normalisation: Unicode form, whitespace and control characters."""

    enabled: bool = Field(True, description="Run this stage.")
    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalisation form.")
    strip_control: bool = Field(True, description="Remove control and format characters (keeps newline and tab).")
    collapse_spaces: bool = Field(True, description="Collapse runs of spaces/tabs inside a line and strip line ends.")
    max_blank_lines: int = Field(1, ge=0, description="Keep at most this many consecutive blank lines.")
    normalize_newlines: bool = Field(True, description="Turn \\r\\n, \\r and Unicode line separators into \\n.")
    fix_mojibake: bool = Field(
        True,
        description="Repair mojibake (UTF-8 read as Windows-1252 and similar: `CafÃ©` → `Café`) with ftfy, "
        "before the other steps; only ftfy's encoding repairs run (docs/release-safety.md). Counted in "
        "`normalize:mojibake_fixed`.",
    )
