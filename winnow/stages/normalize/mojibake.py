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
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

Counter = Callable[[str, int], None]


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

        fixed = ftfy.fix_text(text, self._config)
        if count is not None and fixed != text:
            count("normalize:mojibake_fixed", 1)
        return fixed


def fix_mojibake(text: str) -> str:
    """One-off convenience; a stage should hold one ``MojibakeFixer``."""
    return _DEFAULT(text)


_DEFAULT = MojibakeFixer()
