"""Text normalisation applied to every document before filtering and dedup.

Kept deliberately conservative: the text that reaches training keeps its case, punctuation
and paragraph structure; only encoding-level noise (Unicode form, control characters,
stray whitespace) is removed. Aggressive normalisation for matching lives in the dedup keys.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from winnow.core.text import printable_but_newlines, squeeze_spaces

_NEWLINES = re.compile(r"\r\n|\r|\u2028|\u2029|\x85|\x0b|\x0c")


def class_body(points: list[int]) -> str:
    """A regex character class body of ranges: ``re`` scans ranges fast and singletons slowly."""
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


def _control_points() -> list[int]:
    """Cc (controls) and Cf (format chars such as zero-width spaces, BOM) except \\n and \\t.

    Keeps ZWJ/ZWNJ (U+200C, U+200D), which are meaningful in Indic and Persian scripts.
    """
    categories = map(unicodedata.category, map(chr, range(0x110000)))  # C-level loop: ~0.2 s, not 0.5
    keep = {ord(c) for c in "\n\t\u200c\u200d"}
    return [c for c, kind in enumerate(categories) if (kind == "Cc" or kind == "Cf") and c not in keep]


# What ``_control_points`` returns, as inclusive ranges, per Unicode version of ``unicodedata``
# (Python 3.11: 14.0.0). Scanning every code point costs 0.3–0.5 s in every process that imports this
# module (each Beam worker); a test checks the table against the scan.
_CONTROL_RANGES = {
    "14.0.0": (
        (0x0000, 0x0008),
        (0x000B, 0x001F),
        (0x007F, 0x009F),
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200B),
        (0x200E, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x13438),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ),
}


def control_points() -> list[int]:
    """``_control_points`` from the table when it has this Unicode version, else by scanning."""
    ranges = _CONTROL_RANGES.get(unicodedata.unidata_version)
    if ranges is None:
        return _control_points()
    return [point for first, last in ranges for point in range(first, last + 1)]


_CONTROL_POINTS = control_points()
_CONTROL = re.compile(f"[{class_body(_CONTROL_POINTS)}]+")
# The same class cut at U+FFFF: sre tests a BMP-only class with a bitmap, but walks a range list
# (10× slower) once a class reaches past it; the wide part runs only on texts that have such characters.
_CONTROL_BMP = re.compile(f"[{class_body([c for c in _CONTROL_POINTS if c <= 0xFFFF])}]+")
_CONTROL_WIDE = re.compile(f"[{class_body([c for c in _CONTROL_POINTS if c > 0xFFFF])}]+")
# Line separators other than "\n" (a char-class search first: most texts have none to replace).
_NEWLINE_CHARS = re.compile("[\r\u2028\u2029\x85\x0b\x0c]")
# Blanks other than " " and "\n" (str.isspace, which is what str.split() and re's \s use; all in
# the BMP): each becomes a space, then runs of spaces become one, which is what split/join does.
_BLANKS = [c for c in range(0x10000) if chr(c).isspace() and c != 0x0A]
# The odd blanks that are not control characters (tab, NBSP, U+2000…, U+3000, …; "\x1c" or "\x85"
# are both and are removed as controls): replacing these before or after removing the controls gives
# the same text, as neither step makes a character of the other's set.
_NON_CONTROL_BLANKS = re.compile(f"[{class_body(sorted(set(_BLANKS) - set(_CONTROL_POINTS) - {0x20}))}]+")
# Any character beyond the BMP: only then can the (slow, range-list) wide control class match.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


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
        if self.normalize_newlines and _NEWLINE_CHARS.search(text):
            text = _NEWLINES.sub("\n", text)
        if self.unicode_form != "none":
            text = unicodedata.normalize(self.unicode_form, text)
        if self.strip_control and self.collapse_spaces:
            return self._whole(text)
        return self._lines(text)

    def _whole(self, text: str) -> str:
        """``_lines`` for the default options as a few passes over the whole text (4× faster).

        Per line, ``_lines`` removes control characters and collapses whitespace only where the line
        is not printable or has a double, leading or trailing space; on any other line both steps
        change nothing, so they can run on every line, over the whole text (neither touches a
        newline). Blank lines are then empty, so a run of them is a run of newlines."""
        if not printable_but_newlines(text):  # some control, format or odd blank character
            # Blanks first: almost every such text has only tabs or NBSPs, and then is printable after.
            if _NON_CONTROL_BLANKS.search(text):
                text = _NON_CONTROL_BLANKS.sub(" ", text)
            if not printable_but_newlines(text):
                if _CONTROL_BMP.search(text):
                    text = _CONTROL_BMP.sub("", text)
                if _ASTRAL.search(text) and _CONTROL_WIDE.search(text):
                    text = _CONTROL_WIDE.sub("", text)
        # With single spaces left, the line edges are " \n" and "\n ": str.replace passes again.
        text = squeeze_spaces(text)
        if " \n" in text:
            text = text.replace(" \n", "\n")
        if "\n " in text:
            text = text.replace("\n ", "\n")
        limit = "\n" * (self.max_blank_lines + 2)
        if limit in text:
            text = re.sub(f"{limit}+", "\n" * (self.max_blank_lines + 1), text)
        return text.strip()

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
