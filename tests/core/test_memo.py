from __future__ import annotations

from winnow.core.memo import memoised_values


def test_values_come_from_the_function_once_per_item_and_the_memo_stays_bounded() -> None:
    calls: list[str] = []

    def length(word: str) -> int:
        calls.append(word)
        return len(word)

    memo: dict[str, int] = {}
    assert memoised_values(["a", "bb", "a", "ccc", "bb"], memo, length, limit=100) == [1, 2, 1, 3, 2]
    assert calls == ["a", "bb", "ccc"]  # each distinct item computed once, repeats read the memo
    assert memoised_values(["bb", "a"], memo, length, limit=100) == [2, 1]
    assert calls == ["a", "bb", "ccc"]  # all hits: nothing computed again
    # A call that would pass the limit starts the memo over, and still returns every value.
    assert memoised_values(["dddd", "eeeee", "a"], memo, length, limit=4) == [4, 5, 1]
    assert set(memo) == {"dddd", "eeeee"} and calls[-2:] == ["dddd", "eeeee"]
