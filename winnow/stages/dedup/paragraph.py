"""Cross-document paragraph deduplication (C4/Dolma style): a repeated paragraph keeps one copy.

The unit is the line. C4's published code (tfds ``c4_utils.remove_duplicate_text``) and Dolma's
paragraph dedup (BFF ``paragraphs``) both split on ``\\n`` and treat each line as a paragraph; C4's
paper describes three-sentence spans, but its code, and datatrove's ``SentenceDedup`` aside, the
line is what pipelines run. Extracted web text puts every block (nav item, cookie notice, footer,
article paragraph) on its own line, so the line is also where boilerplate repeats. A blank-line
block would glue boilerplate to content and miss most repeats.

Key: the line with surrounding whitespace stripped and inner whitespace runs collapsed to one space,
hashed with xxh3-64 (case and punctuation are kept: the pipeline's normalize stage has already made
encoding-level noise uniform). Lines shorter than ``min_chars`` after that are never keyed or removed:
short lines ("Home", "Share", "Read more") repeat across unrelated pages and carry little text.

Keeper (as C4, which keeps the occurrence of the smallest URL): among the documents that hold a
paragraph, the one with the smallest order key (the document id by default) keeps every copy it has;
every other document loses its copies. The choice depends on the set of documents only, never on
the order they arrive in. Repeats inside one document are left alone (the Gopher repetition
filter judges those).

Rebuild: a removed line takes its newline and the blank lines that follow it, so no gap of blank
lines is left; the document keeps its original trailing newline. A document that loses more than
``max_removed_share`` of its characters (``[ours]``, configurable) is removed as ``dedup:paragraph``,
naming the document that keeps most of its removed text.

Beam shape (the stage wires it): ``paragraph_records`` per document → GroupByKey on the hash →
``duplicates_for_key`` → group by document id → ``apply_paragraph_dedup`` on the document.
``dedup_paragraphs`` runs the same steps in memory for tests and benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import xxhash


@dataclass(frozen=True)
class Line:
    index: int  # position among all lines of the document (blank lines included)
    start: int  # character span, including the line's trailing newline
    end: int
    text: str


def split_lines(text: str) -> list[Line]:
    lines: list[Line] = []
    position = 0
    for index, line in enumerate(text.split("\n")):
        end = min(position + len(line) + 1, len(text))
        lines.append(Line(index, position, end, line))
        position += len(line) + 1
    return lines


def paragraph_key(line: str, min_chars: int) -> int | None:
    """64-bit hash of the whitespace-normalised line; ``None`` for lines too short to deduplicate."""
    normalised = " ".join(line.split())
    if not normalised or len(normalised) < min_chars:
        return None
    return xxhash.xxh3_64_intdigest(normalised.encode("utf-8", "surrogatepass"))


def paragraph_records(
    doc_id: str, text: str, min_chars: int, order_key: str | None = None
) -> Iterator[tuple[int, tuple[str, str, int]]]:
    """(paragraph hash, (order key, doc id, line index)) for every keyed line: the GroupByKey input."""
    order = doc_id if order_key is None else order_key
    for line in split_lines(text):
        key = paragraph_key(line.text, min_chars)
        if key is not None:
            yield key, (order, doc_id, line.index)


def duplicates_for_key(occurrences: Iterable[tuple[str, str, int]]) -> Iterator[tuple[str, tuple[int, str]]]:
    """For one paragraph hash: (doc id, (line index, keeper doc id)) for every copy to remove.

    A re-iterable input (a list, Beam's grouped values) is read twice and never copied, so a line
    repeated on millions of pages costs no memory here; a one-shot iterator is copied first.
    """
    if iter(occurrences) is occurrences:
        occurrences = list(occurrences)
    keeper_order, keeper_doc = min((order, doc_id) for order, doc_id, _ in occurrences)
    for order, doc_id, index in occurrences:
        if (order, doc_id) != (keeper_order, keeper_doc):
            yield doc_id, (index, keeper_doc)


@dataclass(frozen=True)
class ParagraphDedupResult:
    text: str
    removed_lines: int
    removed_chars: int
    removed_share: float  # removed characters / original characters
    drop: bool  # removed more than the allowed share: the document goes as `dedup:paragraph`
    duplicate_of: str | None  # the keeper holding most of the removed text
    spans: tuple[tuple[int, int], ...]  # removed lines in the original text (without the blank lines they took)


def remove_lines(text: str, indexes: Iterable[int]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The text without those lines (each taking the blank lines after it); also their spans."""
    drop = set(indexes)
    if not drop:
        return text, ()
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    swallowing = False
    for line in split_lines(text):
        if line.index in drop:
            spans.append((line.start, line.end))
            swallowing = True
            continue
        if swallowing and not line.text.strip():
            continue
        swallowing = False
        pieces.append(text[line.start : line.end])
    rebuilt = "".join(pieces)
    trailing = len(text) - len(text.rstrip("\n"))
    rebuilt = rebuilt.rstrip("\n")
    if rebuilt:
        rebuilt += "\n" * min(trailing, 1)
    return rebuilt, tuple(spans)


def apply_paragraph_dedup(
    text: str, duplicates: Iterable[tuple[int, str]], max_removed_share: float
) -> ParagraphDedupResult:
    """Rebuild one document from its (line index, keeper doc id) duplicates and apply the share rule."""
    duplicates = list(duplicates)
    if not duplicates:
        return ParagraphDedupResult(text, 0, 0, 0.0, False, None, ())
    lines = split_lines(text)
    removed_by: Counter[str] = Counter()
    for index, keeper in duplicates:
        removed_by[keeper] += lines[index].end - lines[index].start
    rebuilt, spans = remove_lines(text, (index for index, _ in duplicates))
    removed = len(text) - len(rebuilt)
    share = removed / len(text) if text else 0.0
    duplicate_of = min(removed_by, key=lambda doc: (-removed_by[doc], doc))
    return ParagraphDedupResult(rebuilt, len(spans), removed, share, share > max_removed_share, duplicate_of, spans)


def dedup_paragraphs(
    docs: Sequence[tuple[str, str]],
    min_chars: int = 50,
    max_removed_share: float = 0.5,
    order_keys: Sequence[str] | None = None,
) -> dict[str, ParagraphDedupResult]:
    """In-memory run of the Beam composition over (doc id, text) pairs (tests and benchmarks only)."""
    groups: dict[int, list[tuple[str, str, int]]] = {}
    for position, (doc_id, text) in enumerate(docs):
        order = None if order_keys is None else order_keys[position]
        for key, occurrence in paragraph_records(doc_id, text, min_chars, order):
            groups.setdefault(key, []).append(occurrence)
    per_doc: dict[str, list[tuple[int, str]]] = {}
    for occurrences in groups.values():
        for doc_id, duplicate in duplicates_for_key(occurrences):
            per_doc.setdefault(doc_id, []).append(duplicate)
    return {doc_id: apply_paragraph_dedup(text, per_doc.get(doc_id, ()), max_removed_share) for doc_id, text in docs}
