"""Decontamination core: normalisation, hashing, eval files, matching, cut, and the two join forms."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from winnow.stages.decontaminate.join import (
    DecontaminationTally,
    decide,
    document_join_records,
    eval_join_records,
    join_hits,
    removed_record_fields,
)
from winnow.stages.decontaminate.ngrams import (
    EvalFileError,
    EvalItem,
    EvalNgramIndex,
    cut_spans,
    expected_false_hits,
    load_eval_index,
    match_document,
    read_eval_file,
    resolve_hits,
    split_words,
    text_ngram_hashes,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "decontaminate"


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def humaneval() -> list[EvalItem]:
    return read_eval_file(DATA / "humaneval_sample.jsonl")


@pytest.fixture(scope="module")
def hosts() -> list[str]:
    return [row["text"] for row in read_jsonl(DATA / "c4_hosts.jsonl")]


def test_normalisation_ignores_case_punctuation_accents_and_spacing():
    a = text_ngram_hashes("Le café, RÉSUMÉ: naïve   façade -- déjà vu!", 3)
    b = text_ngram_hashes("le cafe resume\nnaive facade deja vu", 3)
    assert np.array_equal(a, b)
    # Digits are kept: a changed number is a different item.
    assert not np.array_equal(text_ngram_hashes("add 2 and 3 now", 3), text_ngram_hashes("add 2 and 4 now", 3))


def test_hashes_are_stable_values():
    """Persisted indexes and keyed joins across workers rely on these exact values never changing."""
    hashes = text_ngram_hashes("the quick brown fox jumps", 3)
    assert hashes.dtype == np.uint64 and len(hashes) == 3
    assert int(hashes[0]) == int(text_ngram_hashes("THE quick, brown", 3)[0])
    assert [int(h) for h in hashes] == [int(h) for h in text_ngram_hashes("The Quick Brown Fox Jumps.", 3)]
    # Order matters: a permutation of the same words is a different n-gram.
    assert int(text_ngram_hashes("brown quick the", 3)[0]) != int(hashes[0])


def test_word_spans_point_into_the_original_text():
    text = "  Hello,  World! Ünïcode_name 42"
    words = split_words(text)
    assert [text[s:e] for s, e in zip(words.starts, words.ends, strict=True)] == [
        "Hello",
        "World",
        "Ünïcode",
        "name",
        "42",
    ]
    assert len(words) == 5 and len(split_words("")) == 0 and len(split_words("").starts) == 0


def test_planted_item_is_found_with_its_span(humaneval, hosts):
    item = humaneval[1]
    host = hosts[0]
    cut_at = host.index(". ", len(host) // 2) + 2
    text = host[:cut_at] + item.text + "\n" + host[cut_at:]
    index = EvalNgramIndex.build(humaneval, 13)
    counted: Counter[str] = Counter()
    matches = match_document(text, index, count=lambda name, n: counted.update({name: n}))
    assert counted["decontaminate:ngrams_checked"] == len(split_words(text)) - 12
    assert [(m.benchmark, m.item_id) for m in matches] == [("humaneval", item.item_id)]
    (start, end), *rest = matches[0].spans
    assert not rest
    # The span covers the planted passage from its first word to its last word.
    assert start == cut_at + item.text.index("def")
    assert text[start:end].rstrip().endswith(item.text.rstrip().split()[-1].strip('"'))
    assert match_document(host, index) == []


def test_drop_and_cut_decisions(humaneval, hosts):
    item = humaneval[0]
    text = hosts[1] + "\n" + item.text + "\nThe end of the page."
    index = EvalNgramIndex.build(humaneval, 13)
    matches = match_document(text, index)
    dropped = decide(text, matches, "drop")
    assert dropped.drop_reason == "decontaminate:humaneval"
    assert removed_record_fields(dropped)["decontaminate_matches"][0]["item_id"] == item.item_id
    cut = decide(text, matches, "cut", cut_margin=5)
    assert cut.drop_reason is None and cut.text is not None
    assert "has_close_elements" not in cut.text
    assert cut.text.startswith(hosts[1][:-5]) and cut.chars_cut == len(text) - len(cut.text)
    assert match_document(cut.text, index) == []
    # min_ngrams: an item must share that many n-grams to count.
    assert decide(text, matches, "drop", min_ngrams=10**6).contaminated is False


def test_cut_spans_merges_and_clips():
    assert cut_spans("abcdefghij", [(2, 3), (4, 5)], 1) == ("ag" + "hij", 5)
    assert cut_spans("abcdefghij", [(0, 2)], 3) == ("fghij", 5)
    assert cut_spans("abc", [], 2) == ("abc", 0)


def _longest_common_word_run(a: str, b: str) -> int:
    """Brute-force oracle: longest run of consecutive words (lower-cased letter/digit runs) shared by a and b."""
    x, y = re.findall(r"[^\W_]+", a.lower()), re.findall(r"[^\W_]+", b.lower())
    best, previous = 0, [0] * (len(y) + 1)
    for word in x:
        current = [0] * (len(y) + 1)
        for j, other in enumerate(y, start=1):
            if word == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def test_human_edits_of_a_source_passage():
    """Real plagiarism data: an answer matches its Wikipedia source exactly when they share a 13-word run.

    Independent ("non") answers never match; most near-copies ("cut") and light revisions do.
    """
    rows = read_jsonl(DATA / "plagiarism_ab.jsonl.gz")
    sources = {row["task"]: row["text"] for row in rows if row["category"] == "orig"}
    index = EvalNgramIndex.build([EvalItem("wiki", task, text) for task, text in sources.items()], 13)
    matched = Counter()
    for row in rows:
        found = {m.item_id for m in match_document(row["text"], index)}
        expected = {task for task, text in sources.items() if _longest_common_word_run(row["text"], text) >= 13}
        assert found == expected, row["file"]
        matched[row["category"]] += bool(found)
        if row["category"] == "non":
            assert not found, row["file"]
    assert matched["cut"] >= 5 and matched["light"] >= 3


def test_side_input_and_keyed_join_agree(humaneval, hosts):
    items = [*humaneval, EvalItem("short", "s1", "return the sum of two numbers")]
    docs = {
        "a": hosts[0] + "\n" + humaneval[0].text,
        "b": hosts[1],
        "c": humaneval[2].text[:200]
        + " filler words here "
        + humaneval[0].text[-300:]
        + " and: return the SUM of two numbers!",
    }
    index = EvalNgramIndex.build(items, 13, short_item_words=5)
    side = {doc_id: match_document(text, index) for doc_id, text in docs.items()}

    # Keyed form: what Beam's CoGroupByKey would do, in memory.
    eval_side: dict[int, list[int]] = defaultdict(list)
    for key, ref in eval_join_records(items, 13, short_item_words=5):
        eval_side[key].append(ref)
    doc_side: dict[int, list[tuple[str, int, list[int]]]] = defaultdict(list)
    for doc_id, text in docs.items():
        for key, value in document_join_records(doc_id, text, index.lengths):
            doc_side[key].append(value)
    hits: dict[str, list] = defaultdict(list)
    for key in doc_side.keys() & eval_side.keys():
        for doc_id, hit in join_hits(doc_side[key], eval_side[key]):
            hits[doc_id].append(hit)
    keyed = {
        doc_id: resolve_hits(split_words(text), hits.get(doc_id, []), index.items) for doc_id, text in docs.items()
    }

    assert keyed == side
    assert {m.item_id for m in side["c"]} == {humaneval[0].item_id, humaneval[2].item_id, "s1"}
    assert side["b"] == []


def test_short_items_are_skipped_unless_asked(humaneval):
    items = [*humaneval, EvalItem("short", "s1", "too short to count")]
    plain = EvalNgramIndex.build(items, 13)
    assert plain.summaries["short"].items == 0 and plain.summaries["short"].items_skipped == 1
    assert match_document("it is too short to count, really", plain) == []
    whole = EvalNgramIndex.build(items, 13, short_item_words=4)
    assert [m.item_id for m in match_document("it is too short to count, really", whole)] == ["s1"]
    assert whole.summaries["humaneval"].items == 3 and whole.summaries["humaneval"].ngrams > 100


def test_eval_file_errors(tmp_path):
    def write(name: str, content: str) -> Path:
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        return path

    with pytest.raises(EvalFileError, match="matches no file"):
        load_eval_index([str(tmp_path / "missing-*.jsonl")], 13)
    with pytest.raises(EvalFileError, match="line 2 is not JSON"):
        read_eval_file(write("bad.jsonl", '{"text": "ok"}\n{oops\n'))
    with pytest.raises(EvalFileError, match="no string field `text`"):
        read_eval_file(write("notext.jsonl", '{"question": "q"}\n'))
    with pytest.raises(EvalFileError, match="duplicate item id"):
        read_eval_file(write("dup.jsonl", '{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n'))
    with pytest.raises(EvalFileError, match="unsupported extension"):
        read_eval_file(write("items.csv", "text\n"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(EvalFileError, match="not UTF-8"):
        read_eval_file(latin1)
    short = write("short.jsonl", '{"text": "only four words here"}\n')
    with pytest.raises(EvalFileError, match=r"short\.jsonl: no usable item: 1 item\(s\), none has 13"):
        load_eval_index([str(short)], 13)
    # Readable files: .txt (one item per line, ids from line numbers) and gzip JSONL.
    txt = write("lines.txt", "\n" + " ".join(f"w{i}" for i in range(20)) + "\n")
    assert read_eval_file(txt) == [EvalItem("lines", "lines:2", " ".join(f"w{i}" for i in range(20)))]
    with gzip.open(tmp_path / "g.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"benchmark": "mmlu", "id": "q7", "text": " ".join(f"w{i}" for i in range(20))}) + "\n")
    index = load_eval_index([str(tmp_path / "g.jsonl.gz"), str(txt)], 13)
    assert sorted(index.summaries) == ["lines", "mmlu"] and index.summaries["mmlu"].ngrams == 8


def test_tally_merges_and_reports_per_benchmark(humaneval, hosts):
    index = EvalNgramIndex.build(humaneval, 13)
    texts = [hosts[0] + "\n" + humaneval[0].text, hosts[1] + "\n" + humaneval[1].text, hosts[2]]
    left, right = DecontaminationTally(), DecontaminationTally()
    left.add(decide(texts[0], match_document(texts[0], index), "drop"))
    right.add(decide(texts[1], match_document(texts[1], index), "cut"))
    right.add(decide(texts[2], match_document(texts[2], index), "cut"))
    section = left.merge(right).manifest(index.summaries)
    assert section["humaneval"]["items"] == 3
    assert section["humaneval"]["docs_removed"] == 1 and section["humaneval"]["docs_cut"] == 1
    assert section["humaneval"]["items_matched"] == 2
    assert section["humaneval"]["ngrams"] == index.distinct_ngrams


def test_expected_false_hits_by_64_bit_collision():
    # A trillion document n-grams against ten million eval n-grams: about half a false hit in all.
    assert expected_false_hits(10**12, 10**7) == pytest.approx(0.542, rel=1e-3)
    tally = DecontaminationTally()
    tally.count_checked(10**6)
    assert tally.merge(tally).ngrams_checked == 2 * 10**6
