"""Text normalisation applied to every document before filtering and dedup.

Kept deliberately conservative: the text that reaches training keeps its case, punctuation
and paragraph structure; only encoding-level noise (Unicode form, control characters,
stray whitespace) is removed. Aggressive normalisation for matching lives in the dedup keys.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_NEWLINES = re.compile(r"\r\n|\r|\u2028|\u2029|\x85|\x0b|\x0c")
# Cc (controls) and Cf (format chars such as zero-width spaces, BOM) except \n and \t. Cf
# keeps ZWJ/ZWNJ (U+200C, U+200D) which are meaningful in Indic and Persian scripts.
_CONTROL = re.compile(
    "["
    + "".join(
        re.escape(chr(c))
        for c in range(0x110000)
        if unicodedata.category(chr(c)) in ("Cc", "Cf") and chr(c) not in "\n\t\u200c\u200d"
    )
    + "]"
)
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_TRAILING = re.compile(r"[ \t]+\n")
_LEADING_SPACE_LINES = re.compile(r"\n[ \t]+")


@dataclass(frozen=True)
class TextNormalizer:
    """Normalises one text; configured once from ``NormalizeConfig``."""

    unicode_form: str = "NFC"
    strip_control: bool = True
    collapse_spaces: bool = True
    max_blank_lines: int = 1
    normalize_newlines: bool = True

    def __call__(self, text: str) -> str:
        if self.normalize_newlines:
            text = _NEWLINES.sub("\n", text)
        if self.unicode_form != "none":
            text = unicodedata.normalize(self.unicode_form, text)
        if self.strip_control:
            text = _CONTROL.sub("", text)
        if self.collapse_spaces:
            text = _SPACES.sub(" ", text)
            text = _TRAILING.sub("\n", text)
            text = _LEADING_SPACE_LINES.sub("\n", text)
        if self.max_blank_lines >= 0:
            limit = "\n" * (self.max_blank_lines + 1)
            text = re.sub(rf"\n{{{self.max_blank_lines + 2},}}", limit, text)
        return text.strip()


_DEDUP_SPACES = re.compile(r"\s+")


def dedup_key_text(text: str) -> str:
    """Matching form for exact dedup: NFKC, casefolded, all whitespace runs as one space."""
    return _DEDUP_SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
