"""Mojibake repair (winnow.stages.normalize.mojibake): fixes encoding damage, leaves real text alone."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import ftfy
import ftfy.bad_codecs  # registers the sloppy-windows-1252 codec used to make mojibake
import pytest

from winnow.stages.normalize.mojibake import MojibakeFixer, fix_mojibake

DATA = Path(__file__).resolve().parents[2] / "data" / "mojibake"


@pytest.fixture(scope="module")
def udhr() -> list[dict]:
    with gzip.open(DATA / "udhr_excerpts.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("CafÃ©", "Café"),
        ("â€œquotedâ€\x9d", "“quoted”"),
        ("Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "привет"),
        ("seÃ±or \x93hi\x94", "señor “hi”"),  # C1 controls that are really Windows-1252 quotes
        ("\x1b[31mred\x1b[0m text", "red text"),  # ANSI escapes go whole, not leaving "[31m"
        ("\ud83d\ude00 smile", "😀 smile"),  # a surrogate pair split into two code points
    ],
)
def test_repairs_encoding_damage(broken, fixed):
    assert fix_mojibake(broken) == fixed


@pytest.mark.parametrize(
    "text",
    [
        "Ｆｕｌｌｗｉｄｔｈ ＣＪＫ　テキスト",  # full-width forms are correct in CJK text
        "ﬁne ligature",  # NFKC-like folding is not this step's job
        "“curly” ‘quotes’ stay",
        "AT&amp;T in plain text is literal",
        "NFD e\u0301 is left to the normalize stage",
        "tab\tand\r\nline breaks are left to the normalize stage",
    ],
)
def test_leaves_what_normalize_owns_or_what_is_correct(text):
    assert fix_mojibake(text) == text


def test_clean_multilingual_text_is_unchanged(udhr):
    fixer = MojibakeFixer()
    assert [row["lang_code"] for row in udhr if fixer(row["text"]) != row["text"]] == []


def test_undoes_mojibake_made_from_real_multilingual_text(udhr):
    """UTF-8 read as Windows-1252 or Latin-1, the classic web-crawl damage, in ~50 languages."""
    fixer = MojibakeFixer()
    restored = total = 0
    for row in udhr:
        if row["text"].isascii():
            continue
        for codec in ("sloppy-windows-1252", "latin-1"):
            total += 1
            restored += fixer(row["text"].encode("utf-8").decode(codec)) == row["text"]
    assert total > 100 and restored / total >= 0.95


def test_ascii_fast_path_matches_ftfy(udhr):
    """Skipping ftfy for ASCII text without ESC is safe: with these options ftfy never changes such text."""
    fixer = MojibakeFixer()
    ascii_texts = [row["text"] for row in udhr if row["text"].isascii()]
    ascii_texts += ["AT&amp;T", 'It\'s a "test" -- ok?', "fi fl ff", "x = a[1] << 2; // C++"]
    assert len(ascii_texts) > 5
    for text in ascii_texts:
        assert ftfy.fix_text(text, fixer._config) == text == fixer(text)


def test_counts_documents_it_changed():
    counts: Counter[str] = Counter()
    fixer = MojibakeFixer()
    fixer("CafÃ©", count=lambda name, n: counts.update({name: n}))
    fixer("Café", count=lambda name, n: counts.update({name: n}))
    assert counts == {"normalize:mojibake_fixed": 1}


def _web_texts() -> list[str]:
    path = Path(__file__).resolve().parents[2] / "data" / "text" / "english.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def test_windowed_detector_gives_ftfys_result_on_real_and_damaged_text(udhr):
    """The fast path (ftfy only on lines its detector could flag) equals ftfy.fix_text on the whole text."""
    fixer = MojibakeFixer()
    texts = [row["text"] for row in udhr] + _web_texts()
    damaged = [t.encode("utf-8").decode(codec) for t in texts[:60] for codec in ("sloppy-windows-1252", "latin-1")]
    # Damage confined to one line of an otherwise clean text, and a line that starts with "Ã ".
    mixed = [f"{t}\n{d}\nclean “quoted” line\n" for t, d in zip(texts[:40], damaged[::3], strict=False)]
    mixed += ["first line\nÃ  second line starts with mojibake\n", "x\n\x93quoted\x94\n\ud83d\ude00\n"]
    samples = texts + damaged + mixed
    assert sum(not t.isascii() for t in samples) > 200
    changed = 0
    for text in samples:
        expected = ftfy.fix_text(text, fixer._config)
        assert fixer(text) == expected
        changed += expected != text
    assert changed > 100  # the damaged texts really went through ftfy


def test_windows_are_exact_only_for_patterns_with_a_short_non_ascii_anchor():
    import re

    from ftfy.badness import BADNESS_RE

    from winnow.stages.normalize.mojibake import _windows_are_exact

    assert _windows_are_exact(BADNESS_RE)
    assert not _windows_are_exact(re.compile("é|[a-z]x"))  # a branch that matches pure ASCII
    assert not _windows_are_exact(re.compile("é[a-z]{20}|ü"))  # longer than the window


def test_whole_text_precheck_flags_a_text_whenever_one_of_its_lines_is_suspect():
    """``_suspect_anywhere`` (one pass over the text, windows around the detector's needed characters)
    is False only when no line is suspect: seeded texts of the needed characters among ASCII, with
    matches at window edges, line starts and line ends."""
    import random

    from winnow.stages.normalize.mojibake import _LINE, _whole_text_badness

    _, needed, _ = _whole_text_badness()
    needed_chars = [chr(c) for c in range(0x80, 0x10000) if needed.fullmatch(chr(c))]
    assert "“" in needed_chars and "’" not in needed_chars  # the apostrophe starts no window
    rng = random.Random(11)
    pieces = ["a", "b", "A", " ", "  ", ".", ",", "?", "\n", "’", "é", "ï", "字", "—", "™", "°"]
    flagged = suspect = 0
    for _ in range(30_000):
        chars = [rng.choice(needed_chars if rng.random() < 0.25 else pieces) for _ in range(rng.randrange(1, 16))]
        text = "".join(chars)
        any_line = any(MojibakeFixer._suspect(line) for line in _LINE.findall(text))
        anywhere = MojibakeFixer._suspect_anywhere(text)
        assert anywhere or not any_line, repr(text)
        suspect += any_line
        flagged += anywhere
    assert suspect > 1_000 and flagged < 2 * suspect  # real matches were made, and the check is tight


def test_whole_text_windows_reach_a_full_width_match_on_either_side():
    """A detector whose matches run ``width`` characters from their needed character: the window
    must reach exactly that far, before and after, and ``^`` must keep meaning a line start."""
    import re

    from winnow.stages.normalize.mojibake import whole_text_detector

    pattern = re.compile("é[a-z]{6}|[a-z]{6}ü|^ï[a-z]")  # 7 long, the needed character at either end
    detector = whole_text_detector(pattern, 7)
    assert detector is not None and detector[2] == 7

    def anywhere(text: str) -> bool:
        return MojibakeFixer._suspect_anywhere(text, detector)

    assert anywhere("12 éabcdef 34") and anywhere("12 abcdefü 34") and anywhere("a\nïb")
    assert not anywhere("12 éabcde 34") and not anywhere("12 abcdeü 34") and not anywhere("aïb")
    assert whole_text_detector(re.compile("é$|ü"), 2) is None  # an anchor a multi-line search would change
