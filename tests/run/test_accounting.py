import pytest

from winnow.run.execute import AccountingError, check_invariant, counts_from_summary


def summary(input_count: int) -> dict:
    return {
        "input": input_count,
        "kept": 5,
        "removed": [
            {"kind": "filtered", "reason": "normalize:empty", "count": 2},
            {"kind": "duplicate", "reason": "dedup:exact", "count": 3},
            {"kind": "filtered", "reason": "filter:gopher_word_count", "count": 1},
        ],
        "rejected": [{"stage": "read", "count": 4}],
        "files": [],
    }


def test_counts_split_removals_into_filtered_and_duplicate():
    counts = counts_from_summary(summary(15))
    assert counts["filtered"] == 3 and counts["duplicate"] == 3 and counts["rejected"] == 4
    assert counts["filtered_by_reason"] == {"filter:gopher_word_count": 1, "normalize:empty": 2}
    assert counts["duplicate_by_reason"] == {"dedup:exact": 3}
    check_invariant(counts)


@pytest.mark.parametrize("input_count", [14, 16])
def test_a_lost_or_invented_record_fails_loudly(input_count: int):
    with pytest.raises(AccountingError, match="invariant broken"):
        check_invariant(counts_from_summary(summary(input_count)))
