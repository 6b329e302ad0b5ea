"""Text keys shared by several stages."""

from __future__ import annotations

import unicodedata


def dedup_key_text(text: str) -> str:
    """Matching form for exact dedup: NFKC, casefolded, all whitespace runs as one space."""
    # NFKC is the identity on ASCII, where casefold equals lower
    folded = text.lower() if text.isascii() else unicodedata.normalize("NFKC", text).casefold()
    return collapse_blanks(folded)


def collapse_blanks(text: str) -> str:
    """``" ".join(text.split())``, without a list of every word when the only blanks are spaces and
    newlines (as in normalised text): a few str.replace passes, several times faster on web pages.

    Every blank but " " is unprintable (a control, or a separator of category Z other than the
    space), so a text that is printable once its newlines are spaces has no other blank."""
    if not printable_but_newlines(text):
        return " ".join(text.split())
    return squeeze_spaces(text.replace("\n", " ")).strip(" ")


def printable_but_newlines(text: str) -> bool:
    """Whether every character is printable or a newline: then the only blanks are spaces and
    newlines, and no control or format character is present (one C-level scan)."""
    return text.replace("\n", " ").isprintable()


def squeeze_spaces(text: str) -> str:
    """Every run of spaces as one space, by ``str.replace`` passes (memchr speed; each pass halves
    every run) where a regex would match at every run."""
    while "  " in text:
        text = text.replace("  ", " ")
    return text
