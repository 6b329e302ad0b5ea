"""Cross-document paragraph (line) dedup: Dolma's fixture, keeper choice, rebuild and the share rule."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from winnow.stages.dedup.paragraph import (
    apply_paragraph_dedup,
    dedup_paragraphs,
    duplicates_for_key,
    paragraph_key,
    paragraph_records,
    remove_lines,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "paragraph_dedup"


def read_jsonl(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_matches_dolma_expected_paragraph_spans():
    """Dolma's BFF paragraph dedup on its own fixture: the same duplicate spans, document by document.

    Dolma keeps the first document in file order, so the order key here is the file position, and
    it keys every line (no minimum length). Dolma's last span runs one past the end of the text
    (it counts a newline the text does not have); spans here stop at the end.
    """
    docs = read_jsonl("dedup_input_documents.jsonl.gz")
    expected = {
        row["id"]: row["attributes"]["bff_duplicate_paragraph_spans"]
        for row in read_jsonl("expected_dedupe-paragraphs.jsonl.gz")
    }
    results = dedup_paragraphs(
        [(doc["id"], doc["text"]) for doc in docs], min_chars=1, order_keys=[f"{i:06d}" for i in range(len(docs))]
    )
    total = 0
    for doc in docs:
        spans = [(start, min(end, len(doc["text"]))) for start, end, _ in expected[doc["id"]]]
        assert list(results[doc["id"]].spans) == spans, doc["id"]
        total += len(spans)
    assert total == 43


def test_keeper_is_the_smallest_order_key_whatever_the_input_order():
    shared = "This paragraph is long enough to be deduplicated across documents, surely."
    docs = [
        ("doc-b", f"Intro of b\n{shared}\nOutro of b"),
        ("doc-a", f"{shared}\nOnly in a, and also long enough to be keyed by the stage."),
        ("doc-c", f"Header c\n\n{shared}\n\nFooter c"),
    ]
    for seed in range(3):
        shuffled = docs[:]
        random.Random(seed).shuffle(shuffled)
        results = dedup_paragraphs(shuffled, min_chars=20, max_removed_share=0.9)
        assert results["doc-a"].text == docs[1][1] and results["doc-a"].removed_lines == 0
        assert results["doc-b"].text == "Intro of b\nOutro of b"
        assert results["doc-c"].text == "Header c\n\nFooter c"
        assert results["doc-b"].duplicate_of == results["doc-c"].duplicate_of == "doc-a"


def test_repeats_inside_the_keeper_are_kept():
    line = "A line that repeats within one document and in another one as well."
    results = dedup_paragraphs([("a", f"{line}\nmiddle\n{line}"), ("b", f"{line}\nrest of b")], min_chars=10)
    assert results["a"].removed_lines == 0
    assert results["b"].text == "rest of b"


def test_short_lines_and_whitespace_variants():
    assert paragraph_key("Share this", 50) is None
    assert paragraph_key("   ", 0) is None
    long = "Subscribe to our newsletter for the latest updates and offers"
    assert paragraph_key(long, 50) == paragraph_key(f"  {long.replace(' ', '   ')} \t", 50)
    assert paragraph_key(long, 50) != paragraph_key(long.lower(), 50)  # case is kept


def test_rebuild_takes_the_blank_lines_after_a_removed_line():
    text = "A\n\nB\n\nC\n"
    assert remove_lines(text, [2]) == ("A\n\nC\n", ((3, 5),))
    assert remove_lines(text, [4]) == ("A\n\nB\n", ((6, 8),))
    assert remove_lines(text, [0]) == ("B\n\nC\n", ((0, 2),))
    assert remove_lines("A\nB", [0, 1]) == ("", ((0, 2), (2, 3)))


def test_share_rule_removes_documents_that_lose_too_much():
    boiler = "Cookie notice: we use cookies to improve your experience on this website."
    keeper = ("a", f"{boiler}\nThe keeper's own article text, with nothing else repeated anywhere.")
    mostly_boiler = ("b", f"{boiler}\nShort b.")
    mostly_text = ("c", f"{boiler}\n" + "Document c has a long article of its own that nobody else repeats. " * 3)
    results = dedup_paragraphs([keeper, mostly_boiler, mostly_text], min_chars=50, max_removed_share=0.5)
    assert results["b"].drop and results["b"].removed_share > 0.5 and results["b"].duplicate_of == "a"
    assert not results["c"].drop and 0 < results["c"].removed_share < 0.5
    assert not results["a"].drop and results["a"].removed_chars == 0


def test_beam_shaped_pieces_compose_like_the_in_memory_run():
    docs = [
        (f"d{i}", f"shared boilerplate line number one, long enough to key\nunique text of document {i} " * 2)
        for i in range(4)
    ]
    groups: dict[int, list] = {}
    for doc_id, text in docs:
        for key, occurrence in paragraph_records(doc_id, text, 20):
            groups.setdefault(key, []).append(occurrence)
    per_doc: dict[str, list] = {}
    for occurrences in groups.values():
        for doc_id, duplicate in duplicates_for_key(occurrences):
            per_doc.setdefault(doc_id, []).append(duplicate)
    composed = {doc_id: apply_paragraph_dedup(text, per_doc.get(doc_id, []), 0.5) for doc_id, text in docs}
    assert composed == dedup_paragraphs(docs, min_chars=20)
    assert composed["d0"].removed_lines == 0 and composed["d3"].removed_lines == 1
