from __future__ import annotations

from winnow.core.memo import memoised_batch_values
from winnow.core.tokenizer import load_tokenizer

TEXTS = [
    "",
    "Hello world, it's 2024 and we'll see:   spaces\n\n\nnew lines\t\ttabs  \n end   ",
    "Ça coûte 12,50 € — «très» cher! Straße ΑΒΓ αβγ Привет мир 東京都 한국어 العربية हिन्दी",
    "emoji 👍🏽 and ZWJ 👨‍👩‍👧 mixed with ١٢٣ digits ⅣⅫ and ½ fractions, U+00A0:\u00a0here\u2003there",
    "a<|endoftext|>b <|pad|> c",  # added tokens are matched before the pre-tokenizer
    "I'M 'tis don't you've they'd 's 'S  '  x",
    "\u0301combining first, e\u0301 after, \U000e0061 tag char, \u200b zero width, \x00 nul \x1c sep",
]


def test_pieces_give_the_ids_tokenizers_gives_the_whole_text() -> None:
    tokenizer = load_tokenizer()
    assert tokenizer._pieces is not None  # the bundled BPE takes the memoised piece path
    expected = [e.ids for e in tokenizer._tokenizer.encode_batch(TEXTS, add_special_tokens=False)]
    assert tokenizer.encode(TEXTS) == expected
    assert tokenizer.encode(TEXTS[::-1]) == expected[::-1]  # again, read from the memo, in another batch


def test_a_character_the_engines_class_differently_sends_its_text_to_tokenizers() -> None:
    tokenizer = load_tokenizer()
    pieces = tokenizer._pieces
    assert pieces is not None
    text = "x\u2028y"  # a line separator: whitespace to both engines
    assert pieces._plain(text)
    pieces._agree.discard("\u2028")
    pieces._differ.add("\u2028")  # as if the regex module's tables disagreed with tokenizers'
    try:
        assert not pieces._plain(text) and not pieces._plain("x<|pad|>")
        assert tokenizer.encode([text]) == [tokenizer._tokenizer.encode(text, add_special_tokens=False).ids]
    finally:
        pieces._differ.discard("\u2028")


def test_batched_memo_computes_each_missing_item_once_in_one_call_and_stays_bounded() -> None:
    calls: list[list[str]] = []

    def lengths(words: list[str]) -> list[int]:
        calls.append(words)
        return [len(w) for w in words]

    memo: dict[str, int] = {}
    assert memoised_batch_values(["a", "bb", "a", "ccc"], memo, lengths, limit=10) == [1, 2, 1, 3]
    assert calls == [["a", "bb", "ccc"]]
    assert memoised_batch_values(["ccc", "a"], memo, lengths, limit=10) == [3, 1] and len(calls) == 1
    assert memoised_batch_values(["dddd", "a", "eeeee"], memo, lengths, limit=4) == [4, 1, 5]
    assert calls[-1] == ["dddd", "eeeee"] and set(memo) == {"dddd", "eeeee"}
