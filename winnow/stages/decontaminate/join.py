"""The pieces the Beam stage needs to run the exact n-gram join in either of its two forms.

Side input (eval n-grams small enough for every worker, the usual case: all of MMLU, GSM8K,
HumanEval and friends are a few million 13-grams, ~16 bytes each in ``EvalNgramIndex``):
``match_document(text, index)`` per document, then ``decide``.

Keyed join (eval side too large to copy to every worker):

1. eval side: ``eval_join_records(items, n)`` → ``(hash, item index)``;
2. document side: ``document_join_records(doc_id, text, lengths)`` → ``(hash, (doc_id, length, positions))``,
   one record per distinct n-gram of the document;
3. ``CoGroupByKey`` on the hash; ``join_hits(doc_side, eval_side)`` turns each key that has both
   sides into ``(doc_id, (position, length, item indexes))``;
4. group the hits by ``doc_id``, join them back to the document and call
   ``resolve_hits(split_words(text), hits, items)`` then ``decide`` — the same code as the side-input form,
   so both forms give the same answer (a test checks it).

``DecontaminationTally`` is the mergeable accumulator (a ``CombineFn`` body) for the manifest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from winnow.stages.decontaminate.ngrams import (
    BenchmarkSummary,
    EvalItem,
    ItemMatch,
    cut_spans,
    expected_false_hits,
    item_ngram_hashes,
    ngram_hashes,
    split_words,
)

Action = Literal["drop", "cut"]


def eval_join_records(
    items: Iterable[EvalItem], n: int, short_item_words: int | None = None
) -> Iterator[tuple[int, int]]:
    """(n-gram hash, item index) for every distinct n-gram of every usable item.

    Item indexes count usable items in input order, as ``EvalNgramIndex.build`` does, so one
    catalogue (``EvalNgramIndex.items``) names them in both forms.
    """
    index = 0
    for item in items:
        length, hashes = item_ngram_hashes(item.text, n, short_item_words)
        if not length:
            continue
        for value in hashes.tolist():
            yield value, index
        index += 1


def document_join_records(
    doc_id: str, text: str, lengths: Sequence[int]
) -> Iterator[tuple[int, tuple[str, int, list[int]]]]:
    """(n-gram hash, (doc id, gram length, positions)) once per distinct n-gram of the document."""
    word_hashes = split_words(text).hashes
    for length in lengths:
        hashes = ngram_hashes(word_hashes, length)
        if not len(hashes):
            continue
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        boundaries = np.flatnonzero(np.diff(ordered)) + 1
        for group in np.split(order, boundaries):
            yield int(hashes[group[0]]), (doc_id, length, sorted(group.tolist()))


def join_hits(
    doc_side: Iterable[tuple[str, int, list[int]]], eval_side: Iterable[int]
) -> Iterator[tuple[str, tuple[int, int, list[int]]]]:
    """The body of the CoGroupByKey step: one hit per document position of a shared n-gram."""
    refs = sorted(set(eval_side))
    if not refs:
        return
    for doc_id, length, positions in doc_side:
        for position in positions:
            yield doc_id, (position, length, refs)


@dataclass(frozen=True)
class Decision:
    """What happens to one document: kept as is, dropped (with the reason) or cut (with new text)."""

    matches: tuple[ItemMatch, ...]
    drop_reason: str | None = None
    text: str | None = None  # the cut text; None when unchanged or dropped
    chars_cut: int = 0

    @property
    def contaminated(self) -> bool:
        return bool(self.matches)


def decide(
    text: str, matches: Sequence[ItemMatch], action: Action, cut_margin: int = 0, min_ngrams: int = 1
) -> Decision:
    """Apply the action to a document's matches.

    An item counts when it shares at least ``min_ngrams`` n-grams with the document (1, as in
    GPT-3 and datatrove; configurable). ``drop`` names the benchmark with the most matched
    n-grams (ties: the first name) in ``decontaminate:<benchmark>``; the full list stays in
    ``matches`` for the removed record. ``cut`` removes every matched span ± ``cut_margin``.
    """
    counted = tuple(match for match in matches if match.ngrams >= min_ngrams)
    if not counted:
        return Decision(matches=())
    if action == "drop":
        return Decision(matches=counted, drop_reason=f"decontaminate:{top_benchmark(counted)}")
    spans = [span for match in counted for span in match.spans]
    cut, removed = cut_spans(text, spans, cut_margin)
    return Decision(matches=counted, text=cut, chars_cut=removed)


def top_benchmark(matches: Sequence[ItemMatch]) -> str:
    """The benchmark with the most matched n-grams (ties: the first name): the one a removal names."""
    per_benchmark: Counter[str] = Counter()
    for match in matches:
        per_benchmark[match.benchmark] += match.ngrams
    return min(per_benchmark, key=lambda name: (-per_benchmark[name], name))


def removed_record_fields(decision: Decision) -> dict[str, object]:
    """What a removed document carries: every matched benchmark and item id (and n-gram count)."""
    return {
        "decontaminate_matches": [
            {"benchmark": m.benchmark, "item_id": m.item_id, "ngrams": m.ngrams} for m in decision.matches
        ]
    }


@dataclass
class DecontaminationTally:
    """Mergeable per-benchmark counts for the manifest: documents removed or cut, items matched."""

    docs_removed: Counter[str] = field(default_factory=Counter)
    docs_cut: Counter[str] = field(default_factory=Counter)
    chars_cut: int = 0
    items_matched: dict[str, set[str]] = field(default_factory=dict)
    ngrams_checked: int = 0  # document n-grams looked up, for the false-hit estimate

    def count_checked(self, ngrams: int) -> None:
        self.ngrams_checked += ngrams

    def add(self, decision: Decision) -> None:
        if not decision.contaminated:
            return
        benchmarks = sorted({m.benchmark for m in decision.matches})
        if decision.drop_reason is not None:
            self.docs_removed[decision.drop_reason.removeprefix("decontaminate:")] += 1
        else:
            for benchmark in benchmarks:
                self.docs_cut[benchmark] += 1
            self.chars_cut += decision.chars_cut
        for match in decision.matches:
            self.items_matched.setdefault(match.benchmark, set()).add(match.item_id)

    def merge(self, other: DecontaminationTally) -> DecontaminationTally:
        merged = DecontaminationTally(
            self.docs_removed + other.docs_removed,
            self.docs_cut + other.docs_cut,
            self.chars_cut + other.chars_cut,
            ngrams_checked=self.ngrams_checked + other.ngrams_checked,
        )
        for source in (self.items_matched, other.items_matched):
            for benchmark, ids in source.items():
                merged.items_matched.setdefault(benchmark, set()).update(ids)
        return merged

    def expected_false_hits(self, distinct_eval_ngrams: int) -> float:
        return expected_false_hits(self.ngrams_checked, distinct_eval_ngrams)

    def manifest(self, summaries: dict[str, BenchmarkSummary]) -> dict[str, dict[str, object]]:
        """Per benchmark: items, n-grams, documents removed or cut, items that matched (count and ids)."""
        section: dict[str, dict[str, object]] = {}
        for benchmark in sorted(summaries):
            summary = summaries[benchmark]
            section[benchmark] = {
                "items": summary.items,
                "items_skipped": summary.items_skipped,
                "ngrams": summary.ngrams,
                "docs_removed": self.docs_removed.get(benchmark, 0),
                "docs_cut": self.docs_cut.get(benchmark, 0),
                "items_matched": len(self.items_matched.get(benchmark, ())),
                "matched_item_ids": sorted(self.items_matched.get(benchmark, ())),
            }
        return section
