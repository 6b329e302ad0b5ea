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


def _control_class() -> re.Pattern[str]:
    """Cc (controls) and Cf (format chars such as zero-width spaces, BOM) except \\n and \\t.

    Keeps ZWJ/ZWNJ (U+200C, U+200D), which are meaningful in Indic and Persian scripts.
    Written as ranges: a class of 200+ single characters is ~20x slower in ``re``.
    """
    points = [
        c for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cc", "Cf") and chr(c) not in "\n\t\u200c\u200d"
    ]
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    body = "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)
    return re.compile(f"[{body}]+")


_CONTROL = _control_class()


def strip_control(text: str) -> str:
    """Remove control/format characters (keeps newline and tab)."""
    return _CONTROL.sub("", text)


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
        return self._lines(text)

    def _lines(self, text: str) -> str:
        """One pass over lines: collapse spaces inside each line, cap runs of blank lines."""
        out: list[str] = []
        blanks = 0
        for line in text.split("\n"):
            # isprintable() is a C-speed scan that is False for every control/format char
            # (and tabs, NBSP): the slow regex only runs on the few lines that need it.
            printable = line.isprintable()
            if self.strip_control and not printable:
                line = _CONTROL.sub("", line)
            if self.collapse_spaces and (not printable or "  " in line or line[:1] == " " or line[-1:] == " "):
                # str.split() splits on every Unicode space (NBSP, ideographic space, …).
                line = " ".join(line.split())
            if not line.strip():
                blanks += 1
                continue
            if out and blanks:
                out.extend([""] * min(blanks, self.max_blank_lines))
            blanks = 0
            out.append(line)
        return "\n".join(out).strip()
