"""Mojibake repair with ftfy, configured to do only what the rest of ``normalize`` does not.

``normalize`` already applies NFC, turns every line-break form into ``\\n`` and removes control and
format characters (keeping ZWJ/ZWNJ), and deliberately keeps the text's own characters (no NFKC,
no case or quote changes). ftfy's defaults overlap with that and go further, so (ftfy 6.3):

Kept on — encoding damage only ftfy can undo:

* ``fix_encoding``, ``restore_byte_a0``, ``replace_lossy_sequences``, ``decode_inconsistent_utf8``:
  the mojibake repair itself (``CafÃ©`` → ``Café``, ``â€œ`` → ``“``).
* ``fix_c1_controls``: C1 controls that are really Windows-1252 bytes become their characters;
  left alone, the control-character step would delete them and lose curly quotes and dashes.
* ``fix_surrogates``: UTF-16 surrogate pairs split into two code points (a JSON artefact) become one.
* ``remove_terminal_escapes``: ANSI colour codes; the control step would remove only the ESC byte
  and leave ``[31m`` in the text, so this must run before it.

Turned off — they would fight ``normalize`` or change legitimate text:

* ``unescape_html``: extraction owns HTML; in plain text ``&amp;`` may be literal (code, docs).
* ``fix_latin_ligatures``, ``fix_character_width``: NFKC-like compatibility folding; ``normalize``
  keeps compatibility characters (full-width forms are correct in CJK text).
* ``uncurl_quotes``: curly quotes are correct text, not damage.
* ``fix_line_breaks``, ``remove_control_chars``, ``normalization``: ``normalize`` does these, with
  its own (documented) character sets; doing them twice costs time and two definitions could disagree.
* ``explain``: no explanation is needed, and building it is slower.

Order: run this before the rest of ``normalize``. Pure-ASCII text without an ESC byte cannot hold
anything these options change, so it skips ftfy (most of an English web corpus; a test checks
that ftfy leaves such text unchanged).

Speed: ftfy fixes a text line by line and spends about 12 µs of Python per line even when nothing
is wrong (5 MB/s on web text). With the options above, a line can only change when it has a C1
control, a surrogate or an ESC byte, or when ftfy's own mojibake detector (``badness.BADNESS_RE``)
matches in it. Every alternative of that regex needs a non-ASCII character and matches at most
``_BADNESS_WIDTH`` characters, so it is searched only in short windows around the non-ASCII runs
of a line (``MojibakeFixer._suspect``). Lines that pass go through ``ftfy.fix_text`` as before;
the others are left as they are, which is what ftfy would return. This is the same result, about
5× faster; ``_windows_are_exact`` checks both properties of the installed ftfy when the fixer is
built (it falls back to ftfy on every non-ASCII line otherwise) and tests compare with ftfy on
real multilingual text. A text is first checked whole (``MojibakeFixer._suspect_anywhere``), with
windows only around the characters some alternative needs (curly double quotes, bullets, Latin-1
letters, …: not the apostrophe or most non-Latin scripts), so the common clean text is not cut
into lines at all (another 1.4× on web text).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cached_property, lru_cache
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]

from winnow.stages.normalize.normalizer import class_body

Counter = Callable[[str, int], None]
# What ftfy changes besides mojibake with these options: C1 controls, surrogates, ANSI escapes.
_OTHER_DAMAGE = re.compile("[\x80-\x9f\ud800-\udfff\x1b]")
_NON_ASCII = re.compile("[^\x00-\x7f]+")
_LINE = re.compile("[^\n]*\n|[^\n]+")  # ftfy's segments: lines with their line break


@lru_cache(maxsize=1)
def _badness() -> tuple[re.Pattern[str], int] | None:
    """ftfy's mojibake detector and its longest match, when windowed search is exact for it."""
    from ftfy.badness import BADNESS_RE  # lazy: ftfy only when mojibake repair is on

    return (BADNESS_RE, _BADNESS_WIDTH) if _windows_are_exact(BADNESS_RE) else None


@lru_cache(maxsize=1)
def _whole_text_badness() -> tuple[re.Pattern[str], re.Pattern[str], int] | None:
    """``whole_text_detector`` for ftfy's detector, when its windows are exact."""
    badness = _badness()
    return None if badness is None else whole_text_detector(*badness)


def whole_text_detector(pattern: re.Pattern[str], width: int) -> tuple[re.Pattern[str], re.Pattern[str], int] | None:
    """The detector for whole texts, the characters its matches need, and its width.

    Multi-line, so ``^`` matches at each line start as it does at the start of a line searched
    alone. Every alternative needs one character of a non-ASCII class; the union of the smallest
    such class per alternative (curly double quotes, bullets, Latin-1 letters, box drawing, … but
    not the apostrophe) is where a match can be, so only the windows around those are searched.
    None when the pattern anchors other than with ``^``; ``pattern`` must pass ``_windows_are_exact``."""
    parsed = _parser.parse(pattern.pattern, pattern.flags)
    anchors: set[object] = set()

    def walk(node: object) -> None:
        if isinstance(node, _parser.SubPattern):
            for op, value in node.data:
                if op == sre.AT:
                    anchors.add(value)
                walk(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(parsed)
    if anchors - {sre.AT_BEGINNING}:
        return None
    needed: set[int] = set()
    for branch in parsed.data[0][1][1]:
        needed |= min((c for c in map(_non_ascii_chars, branch.data) if c), key=len)
    needed_class = re.compile(f"[{class_body(sorted(needed))}]+")
    return re.compile(pattern.pattern, pattern.flags | re.MULTILINE), needed_class, width


def _non_ascii_chars(item: tuple) -> set[int] | None:
    """The code points a top-level item matches, when it is a literal or class of non-ASCII only."""
    op, value = item
    if op == sre.LITERAL:
        return {value} if value >= 0x80 else None
    if op != sre.IN:
        return None
    points: set[int] = set()
    for kind, part in value:
        if kind == sre.LITERAL:
            points.add(part)
        elif kind == sre.RANGE:
            points.update(range(part[0], part[1] + 1))
        else:
            return None
    return points if points and min(points) >= 0x80 else None


_BADNESS_WIDTH = 7  # the longest match of ftfy 6.3's BADNESS_RE, checked by _windows_are_exact


def _windows_are_exact(pattern: re.Pattern[str]) -> bool:
    """True when every match of ``pattern`` holds a non-ASCII character and is at most
    ``_BADNESS_WIDTH`` long: then searching ±width around each non-ASCII run finds every match."""
    parsed = _parser.parse(pattern.pattern, pattern.flags)
    if parsed.getwidth()[1] > _BADNESS_WIDTH or len(parsed.data) != 1 or parsed.data[0][0] != sre.BRANCH:
        return False

    # A branch's top-level items are all required; one of them must be a non-ASCII-only class.
    return all(any(_non_ascii_chars(item) for item in branch.data) for branch in parsed.data[0][1][1])


class MojibakeFixer:
    """Callable text → text; build once per worker (ftfy's config is reused)."""

    @cached_property
    def _config(self):  # ftfy is imported on first use: workers that never need it skip its load
        import ftfy  # lazy: ftfy only when mojibake repair is on

        return ftfy.TextFixerConfig(
            unescape_html=False,
            remove_terminal_escapes=True,
            fix_encoding=True,
            restore_byte_a0=True,
            replace_lossy_sequences=True,
            decode_inconsistent_utf8=True,
            fix_c1_controls=True,
            fix_latin_ligatures=False,
            fix_character_width=False,
            uncurl_quotes=False,
            fix_line_breaks=False,
            fix_surrogates=True,
            remove_control_chars=False,
            normalization=None,
            explain=False,
        )

    def __call__(self, text: str, count: Counter | None = None) -> str:
        if text.isascii() and "\x1b" not in text:
            return text
        import ftfy  # lazy: ftfy only when mojibake repair is on

        config = self._config
        if len(text) > config.max_decode_length:  # ftfy cuts such lines itself: let it do all of it
            fixed = ftfy.fix_text(text, config)
        elif not self._suspect_anywhere(text):  # most non-ASCII texts: no line is suspect
            fixed = text
        else:
            parts = []
            for line in _LINE.findall(text):
                parts.append(ftfy.fix_text(line, config) if self._suspect(line) else line)
            fixed = "".join(parts)
        if count is not None and fixed != text:
            count("normalize:mojibake_fixed", 1)
        return fixed

    @staticmethod
    def _suspect(line: str) -> bool:
        """Whether ftfy (with this config) could change ``line``; False only when it certainly would not."""
        if line.isascii():
            return "\x1b" in line
        if _OTHER_DAMAGE.search(line):
            return True
        badness = _badness()
        if badness is None:
            return True
        pattern, width = badness
        return _match_near(pattern, width, _NON_ASCII, line)

    @staticmethod
    def _suspect_anywhere(text: str, detector: tuple[re.Pattern[str], re.Pattern[str], int] | None = None) -> bool:
        """Whether ``_suspect`` could hold for some line of ``text``, in one pass over the whole text.

        A match is at most ``width`` long and holds a character of ``needed``, so the window around
        that character's run holds it; the detector is multi-line, so its ``^`` still means a line
        start: a match in a line is a match here, and False means no line is suspect."""
        if _OTHER_DAMAGE.search(text):  # ESC included
            return True
        whole_text = detector or _whole_text_badness()
        if whole_text is None:
            return True
        pattern, needed, width = whole_text
        return _match_near(pattern, width, needed, text)


def _match_near(pattern: re.Pattern[str], width: int, anchors: re.Pattern[str], text: str) -> bool:
    """Whether ``pattern`` (matches at most ``width`` long) matches within ``width`` of a run of
    ``anchors``: the whole search when every match holds an anchor character."""
    end = len(text)
    for run in anchors.finditer(text):
        if pattern.search(text, max(0, run.start() - width), min(end, run.end() + width)):
            return True
    return False


def fix_mojibake(text: str) -> str:
    """One-off convenience; a stage should hold one ``MojibakeFixer``."""
    return _DEFAULT(text)


_DEFAULT = MojibakeFixer()
