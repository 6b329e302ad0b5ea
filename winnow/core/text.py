"""Text keys shared by several stages."""

from __future__ import annotations

import unicodedata


def dedup_key_text(text: str) -> str:
    """Matching form for exact dedup: NFKC, casefolded, all whitespace runs as one space."""
    if text.isascii():  # NFKC is the identity on ASCII and casefold equals lower
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())
