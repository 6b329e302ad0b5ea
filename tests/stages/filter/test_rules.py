"""Each heuristic rule on a real snippet where it must fire and on a clean real page where it must not."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from winnow.stages.filter import rules as h
from winnow.stages.filter.config import FilterConfig

DATA = Path(__file__).resolve().parents[2] / "data" / "filters" / "snippets.jsonl"
SNIPPETS = {row["id"]: row for row in map(json.loads, DATA.read_text(encoding="utf-8").splitlines())}
BY_RULE = {rule: row["text"] for row in SNIPPETS.values() for rule in row["fires"]}
CLEAN = BY_RULE["clean"]


def _c4(text: str) -> h.LineFilterResult:
    return h.c4_filter_lines(text, terminal_punctuation=True)


def _rep(**only: object) -> Callable[[h.DocStats], h.Drop | None]:
    off: dict[str, object] = dict(
        dup_line_frac=None,
        dup_para_frac=None,
        dup_line_char_frac=None,
        dup_para_char_frac=None,
        top_ngrams=(),
        dup_ngrams=(),
    )
    off.update(only)
    return lambda s: h.gopher_repetition(s, **off)  # type: ignore[arg-type]


def _fw(rule: str) -> Callable[[h.DocStats], h.Drop | None]:
    off = dict(line_punct_thr=None, short_line_thr=None, char_dup_ratio=None, list_ratio=None)
    on = {
        "fineweb_line_punct_ratio": {"line_punct_thr": 0.12},
        "fineweb_short_line_ratio": {"short_line_thr": 0.67},
        "fineweb_char_dup_ratio": {"char_dup_ratio": 0.01},
        "fineweb_list_ratio": {"list_ratio": 0.3},
    }[rule]
    return lambda s: h.fineweb_quality(s, **{**off, **on})  # type: ignore[arg-type]


# rule -> does it fire on this text?
CHECKS: dict[str, Callable[[str], bool]] = {
    "c4_javascript": lambda t: _c4(t).removed_by.get("javascript", 0) > 0,
    "c4_policy": lambda t: _c4(t).removed_by.get("policy", 0) > 0,
    "c4_lorem_ipsum": lambda t: (_c4(t).drop or h.Drop("")).rule == "c4_lorem_ipsum",
    "c4_curly_bracket": lambda t: (_c4(t).drop or h.Drop("")).rule == "c4_curly_bracket",
    "c4_min_sentences": lambda t: (_c4(t).drop or h.Drop("")).rule == "c4_min_sentences",
    "gopher_word_count": lambda t: h.gopher_word_count(h.DocStats(t)) is not None,
    "gopher_mean_word_length": lambda t: h.gopher_mean_word_length(h.DocStats(t)) is not None,
    "gopher_symbol_word_ratio": lambda t: h.gopher_symbol_word_ratio(h.DocStats(t)) is not None,
    "gopher_bullet_lines": lambda t: h.gopher_bullet_lines(h.DocStats(t)) is not None,
    "gopher_ellipsis_lines": lambda t: h.gopher_ellipsis_lines(h.DocStats(t)) is not None,
    "gopher_alpha_words": lambda t: h.gopher_alpha_words(h.DocStats(t)) is not None,
    "gopher_stop_words": lambda t: h.gopher_stop_words(h.DocStats(t)) is not None,
    "gopher_dup_para_frac": lambda t: _rep(dup_para_frac=0.3)(h.DocStats(t)) is not None,
    "gopher_dup_para_char_frac": lambda t: _rep(dup_para_char_frac=0.2)(h.DocStats(t)) is not None,
    "gopher_dup_line_frac": lambda t: _rep(dup_line_frac=0.3)(h.DocStats(t)) is not None,
    "gopher_top_2gram": lambda t: h.top_ngram_char_fraction(h.DocStats(t), 2) > 0.2,
    "gopher_top_3gram": lambda t: h.top_ngram_char_fraction(h.DocStats(t), 3) > 0.18,
    "gopher_top_4gram": lambda t: h.top_ngram_char_fraction(h.DocStats(t), 4) > 0.16,
    "gopher_dup_5gram": lambda t: h.duplicated_ngram_char_fraction(h.DocStats(t), 5) > 0.15,
    "gopher_dup_7gram": lambda t: h.duplicated_ngram_char_fraction(h.DocStats(t), 7) > 0.13,
    "gopher_dup_8gram": lambda t: h.duplicated_ngram_char_fraction(h.DocStats(t), 8) > 0.12,
    "gopher_dup_9gram": lambda t: h.duplicated_ngram_char_fraction(h.DocStats(t), 9) > 0.11,
    **{
        r: (lambda t, r=r: _fw(r)(h.DocStats(t)) is not None)
        for r in (
            "fineweb_line_punct_ratio",
            "fineweb_short_line_ratio",
            "fineweb_char_dup_ratio",
            "fineweb_list_ratio",
        )
    },
}


@pytest.mark.parametrize("rule", sorted(CHECKS))
def test_rule_fires_on_its_snippet(rule: str) -> None:
    assert CHECKS[rule](BY_RULE[rule]), f"{rule} should fire on its snippet"


@pytest.mark.parametrize("rule", sorted(CHECKS))
def test_rule_does_not_fire_on_clean_page(rule: str) -> None:
    assert not CHECKS[rule](CLEAN), f"{rule} fired on a clean news-like page"


def test_every_snippet_rule_is_checked() -> None:
    assert set(BY_RULE) - {"clean"} == set(CHECKS)


def test_clean_page_passes_the_default_chain() -> None:
    result = h.FilterChain(FilterConfig())(CLEAN)
    assert result.kept and result.reason is None
    original = {line.strip() for line in CLEAN.splitlines()}
    assert set(result.text.splitlines()) <= original


def test_chain_reports_reason_and_removed_lines() -> None:
    cfg = FilterConfig()
    cfg.c4.terminal_punctuation = True
    chain = h.FilterChain(cfg)
    dropped = chain(BY_RULE["c4_lorem_ipsum"])
    assert dropped.reason == "filter:c4_lorem_ipsum"
    kept = chain(CLEAN)
    assert kept.kept and kept.lines_removed > 0 and kept.chars_removed > 0
    assert len(kept.text) == len(CLEAN) - kept.chars_removed


def test_chain_drop_reasons_name_their_rule_group() -> None:
    chain = h.FilterChain(FilterConfig())
    for row in SNIPPETS.values():
        result = chain(row["text"])
        if result.drop is not None:
            assert result.drop.rule.split("_")[0] in {"empty", "c4", "gopher", "fineweb"}


@pytest.mark.parametrize("text", ["", "   \n\t  ", "\x00\x01\x02", "\u200b\u200b"])
def test_empty_or_control_text_is_dropped_not_crashing(text: str) -> None:
    result = h.FilterChain(FilterConfig())(text)
    assert not result.kept
    assert result.reason in {"filter:empty", "filter:c4_min_sentences"}


def test_disabled_groups_do_not_run() -> None:
    cfg = FilterConfig()
    for group in (cfg.c4, cfg.gopher_quality, cfg.gopher_repetition, cfg.fineweb):
        group.enabled = False
    result = h.FilterChain(cfg)(BY_RULE["gopher_word_count"])
    assert result.kept and result.text == BY_RULE["gopher_word_count"]


def test_badwords_list_from_file(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("javascript\n", encoding="utf-8")
    cfg = FilterConfig()
    cfg.c4.badwords_file = str(words)
    cfg.c4.javascript = False  # keep the javascript line so the page-level list sees it
    cfg.c4.min_sentences = 0
    assert h.FilterChain(cfg)(BY_RULE["c4_javascript"]).reason == "filter:c4_badwords"
    assert h.FilterChain(cfg)(CLEAN).kept


def test_c4_keeps_lines_with_terminal_punctuation_and_strips_citations() -> None:
    text = "This line has enough words.[1]\nshort one.\nno final punctuation here\nAnd this one ends well!"
    res = h.c4_filter_lines(text, terminal_punctuation=True, min_sentences=0)
    assert res.text == "This line has enough words.\nAnd this one ends well!"
    assert res.removed_by == {"too_few_words": 1, "no_terminal_punct": 1}
    assert res.lines_removed == 2


def test_split_words_follows_spacy_rules() -> None:
    assert h.split_words("I don't know, Mr. Smith's e-mail: http://x.org/a?b=1.") == [
        "I",
        "do",
        "n't",
        "know",
        ",",
        "Mr.",
        "Smith",
        "'s",
        "e",
        "-",
        "mail",
        ":",
        "http://x.org/a?b=1",
        ".",
    ]
    assert h.split_words("It's 3.5% of 1,000 U.S. cats...") == [
        "It",
        "'s",
        "3.5",
        "%",
        "of",
        "1,000",
        "U.S.",
        "cats",
        "...",
    ]
    assert h.split_words("dont cannot gonna") == ["do", "nt", "can", "not", "gon", "na"]


# Texts that reach every branch of the word splitter: the fast path's guards (special cases such
# as "dont," or "Mr.", affixes that are not one character, "C$"), scripts without case or outside
# the BMP, combining marks, punctuation runs, URLs and e-mails, blank lines, \r\n, no-break and
# zero-width spaces.
TRICKY_TEXTS = [
    "end, (see “Fortress” 'em dont, Mr. a. McD. USA. U.S., (PDF) it's ’s —word word— C$5 US$ A$.",
    "日本語の文章。 中文，测试！ 한국어? ไทย. עברית, العربية؟ हिन्दी। Ελληνικά; Русский:",
    "cafe\u0301, nai\u0308ve. e\u0301t\u00e9) \U0001d400\U0001d401. \U00020000\U00020001, 😀, ☺. ✓word",
    "!!! ?! ... word... wait…… --- a--b x—y 3-4 5+ 10km, 20°C. $5, 5$ 1,000. 3.5% (1) [2] {3}",
    "http://x.org/a?b=1. www.example.com, mail@example.org. (https://a.b/c) <a@b.co>",
    "line one.\r\nline two\r\n\r\n\n  \t\nlast\u00a0line\u00a0here,\u2009thin\u200bzero\u3000ideo.",
    "'' ’’ :) :-( <3 ¯\\(ツ)/¯ o'clock ma'am Ima gonna cannot 5pm 12a.m. e.g., i.e.) v.s.",
    "well-known firm's Tom’s so... a-b-c re-enter, co-op. x--y \U0001d400-b b-\U0001d400 www-x it's-done o-_-o",
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_split_words_fast_path_agrees_with_the_full_procedure(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = [token for chunk in text.split() for token in h._chunk_tokens(chunk, fast_paths=False)]
    for chunk in text.split():
        assert h._chunk_tokens(chunk) == h._chunk_tokens(chunk, fast_paths=False), chunk
    monkeypatch.setattr(h, "_CHUNK_CACHE", {})
    assert h.split_words(text) == expected  # cold cache
    assert h.split_words(text) == expected  # every chunk from the cache
    monkeypatch.setattr(h, "_CHUNK_CACHE_SIZE", 4)  # a cache emptied while splitting
    assert h.split_words(text + " " + text) == expected + expected


def _brute_force_ngram_fractions(words: list[str], text: str, n: int) -> tuple[float, float]:
    """The Gopher n-gram definitions written the plain way: (top n-gram fraction, duplicated fraction)."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0.0
    gram, top = Counter(grams).most_common(1)[0]
    top_frac = (sum(map(len, gram)) + n - 1) * top / len(text)
    seen: set[tuple[str, ...]] = set()
    chars, i = 0, 0
    while i < len(grams):
        if grams[i] in seen:
            chars += sum(map(len, grams[i]))
            i += n
        else:
            seen.add(grams[i])
            i += 1
    # the greedy scan only records n-grams it visits, like the rule: a skipped one is not "seen"
    return top_frac, chars / len(text)


@pytest.mark.parametrize("python_max", [0, 64, 10**9])  # repeated n-grams grouped by numpy, either, Python
@pytest.mark.parametrize("seed", range(6))
def test_ngram_rules_match_the_plain_definitions(seed: int, python_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h, "_PYTHON_GROUPING_MAX", python_max)
    rng = random.Random(seed)
    vocab = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "slept"][: 3 + seed]
    words = [rng.choice(vocab) for _ in range(40 + 30 * seed)]
    text = " ".join(words)
    s = h.DocStats(text)
    assert s.words == words
    expected = {n: _brute_force_ngram_fractions(words, text, n) for n in range(2, 11)}
    for n in (2, 3, 4, 5, 6, 7, 8, 9, 10):  # the top groups of smaller sizes seed the repeated scan
        assert h.top_ngram_char_fraction(s, n) == expected[n][0], n
        assert h.duplicated_ngram_char_fraction(s, n) == expected[n][1], n
    alone = h.DocStats(text)  # the duplicated rules alone, largest first: each scan starts from all positions
    for n in (10, 7, 5, 6):
        assert h.duplicated_ngram_char_fraction(alone, n) == expected[n][1], n


def test_suffix_match_equals_the_full_search() -> None:
    # The suffix regex is tried only on a chunk's last _SUFFIX_SPAN characters (but for runs of dots):
    # a longer unit or currency in the lists would make it miss a suffix the full search finds.
    chunks = [c for text in TRICKY_TEXTS for c in text.split()]
    chunks += [f"5{unit}" for unit in h._UNITS] + ["5US$", "x...", "x....", "AB.", "ab.", "20°C.", "Tom’s", "3+"]
    for chunk in chunks:
        for start in range(len(chunk)):
            tail = chunk[start:]
            expected = h._SUFFIX.search(tail)
            found = h._suffix_match(tail)
            assert (found and found.span()) == (expected and expected.span()), tail


def test_c4_phrase_rules_see_what_each_line_holds() -> None:
    # The phrases are first looked for in the whole text; a citation removed inside a phrase still
    # completes it, and a phrase split across two lines is in no line.
    lines = ["This line has enough words.", "Another line with words here.", "A third one for the count."]
    page = "\n".join([*lines, "And lorem[1] ipsum dolor sit amet.", *lines])
    assert h.c4_filter_lines(page, min_sentences=0).drop == h.Drop("c4_lorem_ipsum")
    split = "\n".join([*lines, "This ends with lorem", "ipsum starts this line.", *lines])
    assert h.c4_filter_lines(split, min_sentences=0).drop is None
    js = h.c4_filter_lines("\n".join([*lines, "Please enable JavaScript to view it.", *lines]), min_sentences=0)
    assert js.removed_by == {"javascript": 1} and "JavaScript" not in js.text


def test_count_sentences_like_the_sentencizer() -> None:
    assert h.count_sentences(h.split_words('One. Two! Three? "Four." Five')) == 5
    assert h.count_sentences(h.split_words("Mr. Smith went to Washington.")) == 1
    assert h.count_sentences([]) == 0


def test_duplicated_ngrams_match_the_greedy_definition() -> None:
    text = "a b c d e a b c d e a b c d e"
    s = h.DocStats(text)
    # positions 5 and 10 repeat "a b c d e": 2 x 5 chars (words concatenated) over 29 chars.
    assert h.duplicated_ngram_char_fraction(s, 5) == pytest.approx(10 / len(text))
    # top 2-gram "a b" x3 = 3 chars x 3 over 29.
    assert h.top_ngram_char_fraction(s, 2) == pytest.approx(9 / len(text))


def test_c4_keeps_paragraph_breaks_for_the_gopher_paragraph_rules() -> None:
    text = "First paragraph has enough words.\nIt goes on here.\n\nMenu\n\nSecond paragraph starts here.\n"
    joined = h.c4_filter_lines(text, min_sentences=0)
    assert joined.text == "First paragraph has enough words.\nIt goes on here.\nSecond paragraph starts here."
    kept = h.c4_filter_lines(text, min_sentences=0, keep_paragraphs=True)
    assert kept.text == "First paragraph has enough words.\nIt goes on here.\n\nSecond paragraph starts here."
    assert kept.lines_removed == 1  # "Menu"; blank lines are separators, not removed lines


def test_token_classes_match_the_plain_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Symbol-only tokens (punctuation, "$", "►", "_"), tokens with a letter (any script), and neither
    # (digits, "%2", "°"): counted per token, and the same from the memo.
    text = "Hello , world ... $ ► __ 42 ² x² 3.5 %2 ° ½ Ωmega 名前 (a) — _x_ ?! Hello ,"
    words = h.split_words(text)
    symbol = [w for w in words if all(c in h._SYMBOLS for c in w)]
    # "holds a letter" is the regex class [^\W\d_]: alphanumeric but not a decimal digit, so "²" and "½" count.
    alpha = sum(any(c.isalnum() and not c.isdecimal() for c in w) for w in words)
    monkeypatch.setattr(h, "_TOKEN_CLASS_CACHE", {})
    for _ in range(2):  # cold memo, then warm
        s = h.DocStats(text)
        assert s.symbol_token_chars == (len(symbol), sum(map(len, symbol)))
        assert s.alpha_token_count == alpha
    assert 0 < len(symbol) < len(words) and 0 < alpha < len(words)
