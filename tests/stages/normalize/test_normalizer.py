import unicodedata

from winnow.core.text import dedup_key_text
from winnow.stages.normalize.normalizer import _CONTROL_RANGES, TextNormalizer, _control_points, control_points


def test_nfc_control_and_whitespace():
    decomposed = unicodedata.normalize("NFD", "café")
    text = f"  {decomposed}\u200b  au   lait\x00\r\n\r\n\r\n\r\n\tSecond line  \x07"
    assert TextNormalizer()(text) == "café au lait\n\nSecond line"


def test_keeps_zero_width_joiners_and_tabs_can_be_kept():
    assert "\u200d" in TextNormalizer()("क्\u200dष")
    assert TextNormalizer(collapse_spaces=False)("a\tb") == "a\tb"


def test_blank_line_limit_is_configurable():
    assert TextNormalizer(max_blank_lines=0)("a\n\n\nb") == "a\nb"
    assert TextNormalizer(max_blank_lines=2)("a\n\n\n\n\nb") == "a\n\n\nb"


def test_only_whitespace_and_controls_normalise_to_empty():
    assert TextNormalizer()(" \t\x00\x01\u200b\n\n ") == ""


def test_dedup_key_ignores_case_width_and_whitespace():
    assert dedup_key_text("Hello   World\n") == dedup_key_text("hello world") == dedup_key_text("ＨＥＬＬＯ world")
    assert dedup_key_text("hello world") != dedup_key_text("hello, world")


def test_line_fast_path_matches_the_plain_regex():
    from winnow.stages.normalize.normalizer import _CONTROL, strip_control

    text = "tab\there\x00 nul \x1b[31mansi\x7f del\nline"
    assert strip_control(text) == _CONTROL.sub("", text) == "tab\there nul [31mansi del\nline"
    assert TextNormalizer(collapse_spaces=False)(text) == strip_control(text)
    assert dedup_key_text("ABC  def") == " ".join(unicodedata.normalize("NFKC", "ABC  def").casefold().split())


def test_normalisation_is_idempotent_on_real_text():
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data" / "text" / "english.jsonl.gz"
    normalizer = TextNormalizer()
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle][:1500]
    texts += ["  a\u00a0\u00a0b \t\n\n\n\u3000c\u200b ", "x\x00y\r\n\r\nz"]
    for text in texts:
        once = normalizer(text)
        assert normalizer(once) == once


def test_whole_text_passes_equal_the_line_by_line_reference():
    """The default options run as whole-text regexes; they must give what ``_lines`` gives, on real
    text and on seeded mixtures of every kind of blank, control and line break."""
    import gzip
    import json
    import random
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data" / "text" / "english.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle][:800]
    rng = random.Random(7)
    pieces = ["a", "word", "é", "字", " ", "  ", "\t", "\n", "\n\n", "\n\n\n\n", "\u00a0", "\u3000", "\u200b",
              "\u200d", "\x00", "\x1c", "\x85", "\x0b", "\r\n", "\r", "\u2028", " \n ", "\ufeff", "\x7f",
              "\U000e0001", "😀", "\u2009\u200a"]  # fmt: skip
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40))) for _ in range(3000)]
    for blank_lines in (0, 1, 2):
        normalizer = TextNormalizer(max_blank_lines=blank_lines)
        for text in texts:
            assert normalizer._whole(text) == normalizer._lines(text), repr(text)
        lines_only = TextNormalizer(max_blank_lines=blank_lines, strip_control=False)
        assert lines_only("a \x00 b") == "a \x00 b"  # other options keep the line-by-line path


def test_control_point_table_is_the_scan_of_this_unicode_version() -> None:
    assert unicodedata.unidata_version in _CONTROL_RANGES  # else every process pays the scan again
    assert control_points() == _control_points()
