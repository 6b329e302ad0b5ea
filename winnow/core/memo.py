"""A bounded per-process memo for pure functions called on many repeated items (words, chunks, terms).

Web text repeats its words, so the filter's word splitting, Gopher's token classes and the taggers'
term hashes are each computed once per distinct item and then looked up at C speed. The function
must be pure: the memo then changes the cost, never a value, whatever the process has seen before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


def memoised_values(
    items: Sequence[Key], memo: dict[Key, Value], compute: Callable[[Key], Value], limit: int
) -> list[Value]:
    """``[compute(item) for item in items]`` read from ``memo`` where it holds them (``compute`` never
    returns None); each distinct missing item is computed once (``memoised_batch_values``)."""
    return memoised_batch_values(items, memo, lambda missing: list(map(compute, missing)), limit)


def memoised_batch_values(
    items: Sequence[Key], memo: dict[Key, Value], compute_many: Callable[[list[Key]], Sequence[Value]], limit: int
) -> list[Value]:
    """``compute_many``'s value of each item, read from ``memo`` where it holds them: the distinct items the
    memo lacks go to ``compute_many`` in one call (cheaper for a batched tokenizer call), which returns their
    values in order and never None. The memo is emptied before those would grow it past ``limit`` entries; the
    values of this call are kept locally, so a clear by another thread meanwhile cannot lose one."""
    values = list(map(memo.get, items))
    if None in values:
        gaps = _positions_of_none(values)  # found at C speed: most items are hits
        missing = list(dict.fromkeys(items[position] for position in gaps))
        if len(memo) + len(missing) > limit:
            memo.clear()
        computed = dict(zip(missing, compute_many(missing), strict=True))
        memo.update(computed)
        for position in gaps:
            values[position] = computed[items[position]]
    return values  # type: ignore[return-value]


def _positions_of_none(values: list[object]) -> list[int]:
    positions = []
    position = -1
    try:
        while True:
            position = values.index(None, position + 1)
            positions.append(position)
    except ValueError:
        return positions
