"""MinHashDedup end to end on the local runner: clusters, keeper, bad input, hot buckets, index."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from conftest import run_stage

from winnow.stages.dedup import minhash as mh
from winnow.stages.dedup.config import MinHashConfig
from winnow.stages.dedup.near import MinHashDedup

DATA = Path(__file__).resolve().parents[2] / "data"
FAST = {"shards": 4, "max_rounds": 4}  # fewer Beam stages: tests run in seconds


def run(docs: list[dict[str, Any]], tmp_path: Path, **config: Any) -> dict[str, Any]:
    """Run the stage; return its three outputs (as lists) and its counters."""
    return run_stage(MinHashDedup(MinHashConfig(**{**FAST, **config})), docs, tmp_path)


def doc(doc_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "url": None, "source": "test", "metadata": None, **extra}


def words(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(count)]


def edge(text_a: str, text_b: str) -> tuple[bool, bool]:
    """(LSH candidate with 14 × 8, verified at the default threshold) for two texts."""
    values, counts = mh.ShingleHasher().hash_batch([text_a, text_b])
    sigs = mh.MinHasher().signatures_flat(values, counts)
    keys = mh.band_hashes(sigs, 14, 8)
    return bool((keys[0] == keys[1]).any()), mh.jaccard_estimate(sigs[0], sigs[1]) >= (1 / 14) ** (1 / 8)


def check_accounting(docs: list[dict[str, Any]], out: dict[str, Any], indexed: frozenset[str] = frozenset()) -> None:
    """Fidelity test 7: every input comes out once; every duplicate points at a kept document
    (of this run, or of an earlier run through the index)."""
    kept_ids = [d["id"] for d in out["kept"]]
    removed_ids = [d["id"] for d in out["removed"]]
    rejected_ids = [d["doc_id"] for d in out["rejected"]]
    assert sorted(kept_ids + removed_ids + rejected_ids) == sorted(d["id"] for d in docs)
    assert {d["duplicate_of"] for d in out["removed"]} <= set(kept_ids) | indexed
    assert all(d["reason"] == "dedup:minhash" for d in out["removed"])


def chain_a_b_c() -> tuple[str, str, str]:
    """Three texts where A–B and B–C are verified LSH candidates and A–C is not a candidate."""
    for seed in range(50):
        base = words(random.Random(seed), 300)
        a, b, c = (" ".join(base[i : i + 250]) for i in (0, 25, 50))
        if edge(a, b) == (True, True) and edge(b, c) == (True, True) and not edge(a, c)[0]:
            return a, b, c
    pytest.fail("no seed gave the A–B–C precondition")


def test_chain_a_b_c_is_one_cluster_with_one_keeper(tmp_path: Path) -> None:
    """Fidelity test 4: A–B and B–C match, A–C does not; still one cluster of three (no text check)."""
    a, b, c = chain_a_b_c()
    docs = [doc("c", c), doc("a", a), doc("b", b), doc("z", " ".join(words(random.Random(99), 200)))]
    out = run(docs, tmp_path, verify_text=False)
    check_accounting(docs, out)
    kept = {d["id"]: d for d in out["kept"]}
    assert set(kept) == {"a", "z"}
    assert (kept["a"]["cluster_id"], kept["a"]["cluster_size"]) == ("a", 3)
    assert (kept["z"]["cluster_id"], kept["z"]["cluster_size"]) == (None, 1)
    assert sorted((d["id"], d["duplicate_of"], d["cluster_size"]) for d in out["removed"]) == [
        ("b", "a", 3),
        ("c", "a", 3),
    ]


def test_text_check_against_the_keeper_stops_transitive_removal(tmp_path: Path) -> None:
    """marin#6854: C reaches A's cluster only through B; checked against the keeper A it stays."""
    a, b, c = chain_a_b_c()
    docs = [doc("c", c), doc("a", a), doc("b", b)]
    out = run(docs, tmp_path)
    check_accounting(docs, out)
    kept = {d["id"]: d for d in out["kept"]}
    assert set(kept) == {"a", "c"}
    assert (kept["c"]["cluster_id"], kept["c"]["cluster_size"]) == (None, 1)
    (dup,) = out["removed"]
    assert (dup["id"], dup["duplicate_of"]) == ("b", "a")
    expected = mh.exact_jaccard(mh.shingles(b), mh.shingles(a))
    assert dup["similarity"] == pytest.approx(expected) and dup["similarity"] >= (1 / 14) ** (1 / 8)
    assert mh.exact_jaccard(mh.shingles(c), mh.shingles(a)) < (1 / 14) ** (1 / 8)
    assert out["counters"]["dedup:minhash_text_verified"] == 1
    assert out["counters"]["dedup:minhash_unverified"] == 1
    # Containment with a low bar takes C as well: the measure and threshold are the user's.
    loose = run(docs, tmp_path, text_similarity="containment", text_threshold=0.3)
    assert sorted(d["id"] for d in loose["removed"]) == ["b", "c"]


@pytest.mark.parametrize(("keep", "keeper"), [("lowest_id", "a"), ("longest", "c"), ("score:quality", "b")])
def test_keep_policies(tmp_path: Path, keep: str, keeper: str) -> None:
    base = " ".join(words(random.Random(5), 400))
    docs = [
        doc("b", base + " tail", quality=0.9),
        doc("a", base, quality=0.2),
        doc("c", base + " a much longer tail of extra words"),  # no score: loses under score:
        doc("d", base, quality=float("nan")),
    ]
    out = run(docs, tmp_path, keep=keep)
    check_accounting(docs, out)
    assert [d["id"] for d in out["kept"]] == [keeper]
    assert {d["duplicate_of"] for d in out["removed"]} == {keeper}


def _corpus() -> list[dict[str, Any]]:
    with gzip.open(DATA / "dedup" / "pairs_docs.jsonl.gz", "rt") as handle:
        docs = [doc(d["id"], d["text"]) for d in map(json.loads, handle)]
    rng = random.Random(11)
    for original in docs[:25]:  # light edits of real documents: a few words replaced
        tokens = original["text"].split()
        for _ in range(max(1, len(tokens) // 200)):
            tokens[rng.randrange(len(tokens))] = "edited"
        docs.append(doc(original["id"] + "-v", " ".join(tokens)))
    return docs


def _outcome(out: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    kept = sorted((d["id"], d["cluster_id"], d["cluster_size"]) for d in out["kept"])
    removed = sorted((d["id"], d["duplicate_of"], d["cluster_size"]) for d in out["removed"])
    return kept, removed


def test_deterministic_under_shuffle_and_resharding(tmp_path: Path) -> None:
    docs = _corpus()
    first = run(docs, tmp_path, shards=32, max_rounds=10, batch_size=512)
    shuffled = list(docs)
    random.Random(1).shuffle(shuffled)
    second = run(shuffled, tmp_path, shards=3, batch_size=7)
    check_accounting(docs, first)
    assert _outcome(first) == _outcome(second)
    assert len(first["removed"]) >= 25
    counters = first["counters"]
    assert counters["dedup:minhash"] == len(first["removed"])
    assert counters["dedup:minhash_candidates"] >= counters["dedup:minhash_verified"] > 0
    assert counters.get("dedup:components_unconverged", 0) == 0


def test_hot_bucket_of_identical_documents(tmp_path: Path) -> None:
    text = " ".join(words(random.Random(3), 120))
    docs = [doc(f"d{i:05d}", text) for i in range(2000)]
    out = run(docs, tmp_path, max_bucket_size=100)
    check_accounting(docs, out)
    assert [(d["id"], d["cluster_size"]) for d in out["kept"]] == [("d00000", 2000)]
    assert {d["duplicate_of"] for d in out["removed"]} == {"d00000"}
    assert out["counters"]["dedup:minhash_hot_buckets"] == 14  # one bucket per band


def test_bad_and_unusual_input(tmp_path: Path) -> None:
    chinese = (
        "数据去重是大规模语言模型预训练数据处理中非常重要的一个步骤，它可以减少重复内容对模型的影响并提高训练效率。" * 3
    )
    arabic = "ومن البديهي أيضاً أن تكون هناك نسخة من هذا البرنامج مثبتة على جهازك قبل أن تبدأ العمل على المشروع الجديد"
    russian = "Дедупликация данных важна для обучения больших языковых моделей на веб текстах из интернета"
    rng = random.Random(8)
    enormous = " ".join(rng.choices(words(rng, 5000), k=250_000))  # ≈ 1.6 M characters
    docs = [
        doc("empty", ""),
        doc("blank", "   \n\t "),
        doc("short", "only four words here"),
        doc("punct", "!!! ... ??? --- ***"),
        doc("zh-1", chinese),
        doc("zh-2", chinese.replace("非常", "十分")),
        doc("ar-1", arabic),
        doc("ar-2", arabic + "."),
        doc("ru-1", russian),
        doc("ru-2", russian.upper()),
        doc("huge-1", enormous),
        doc("huge-2", enormous + " one more sentence at the very end"),
        {"id": "not-text", "text": None, "url": None, "source": "test", "metadata": None},
    ]
    out = run(docs, tmp_path)
    assert [d["doc_id"] for d in out["rejected"]] == ["not-text"]
    check_accounting(docs, out)
    removed = {d["id"]: d["duplicate_of"] for d in out["removed"]}
    assert removed == {"zh-2": "zh-1", "ar-2": "ar-1", "ru-2": "ru-1", "huge-2": "huge-1"}
    kept = {d["id"]: d for d in out["kept"]}
    for short in ("empty", "blank", "short", "punct"):
        assert (kept[short]["cluster_id"], kept[short]["cluster_size"]) == (None, 1)
    assert out["counters"]["dedup:minhash_no_shingles"] == 4


def test_verification_removes_lsh_false_positives(tmp_path: Path) -> None:
    for seed in range(200):
        base = words(random.Random(seed), 300)
        a, b = " ".join(base[:240]), " ".join(base[60:])  # Jaccard ≈ 0.58
        if edge(a, b) == (True, False):
            break
    else:
        pytest.fail("no seed gave an unverified LSH candidate")
    docs = [doc("a", a), doc("b", b)]
    assert run(docs, tmp_path, verify=False, verify_text=False)["removed"][0]["id"] == "b"
    assert run(docs, tmp_path, verify=False)["removed"] == []  # the text check alone catches it too
    verified = run(docs, tmp_path)
    assert verified["removed"] == []
    assert verified["counters"]["dedup:minhash_candidates"] == 1


def test_incremental_index(tmp_path: Path) -> None:
    index = tmp_path / "index"
    rng = random.Random(21)
    old = [doc(f"old-{i}", " ".join(words(rng, 200))) for i in range(6)]
    first = run([*old, doc("old-dup", old[0]["text"] + " extra")], tmp_path, index_dir=str(index))
    assert [d["id"] for d in first["removed"]] == ["old-dup"]
    parts_after_first = sorted(index.glob("band=*/part-*.parquet"))
    assert {p.parent.name for p in parts_after_first} == {f"band={i}" for i in range(14)}
    assert (index / "_meta.json").exists()

    fresh = " ".join(words(rng, 200))
    new = [
        doc("new-a", old[2]["text"].replace(old[2]["text"].split()[5], "changed")),  # near-dup of run 1
        doc("new-b", fresh),
        doc("new-c", fresh + " trailing words"),  # near-dup within run 2
        doc("new-d", " ".join(words(rng, 200))),
    ]
    second = run(new, tmp_path, index_dir=str(index))
    check_accounting(new, second, indexed=frozenset(d["id"] for d in old))
    assert sorted((d["id"], d["duplicate_of"]) for d in second["removed"]) == [("new-a", "old-2"), ("new-c", "new-b")]
    assert second["counters"]["dedup:minhash_index_matches"] >= 1
    parts_after_second = sorted(index.glob("band=*/part-*.parquet"))
    assert set(parts_after_first) < set(parts_after_second)  # appended, old parts untouched

    third = run([doc("new-e", new[3]["text"] + " again")], tmp_path, index_dir=str(index))
    assert [(d["id"], d["duplicate_of"]) for d in third["removed"]] == [("new-e", "new-d")]

    with pytest.raises(ValueError, match="was built with"):
        MinHashDedup(MinHashConfig(index_dir=str(index), ngram=3)).expand(beam.Pipeline() | beam.Create([]))


def test_fidelity_5_plagiarism_through_the_stage(tmp_path: Path) -> None:
    with gzip.open(DATA / "dedup" / "plagiarism_docs.jsonl.gz", "rt") as handle:
        records = [json.loads(line) for line in handle]
    docs = [doc(r["file"], r["text"]) for r in records]
    out = run(docs, tmp_path)
    check_accounting(docs, out)
    grade = {r["file"]: r["category"] for r in records}
    removed = {d["id"]: d["duplicate_of"] for d in out["removed"]}
    clustered = set(removed) | set(removed.values())
    print({g: sum(1 for f in clustered if grade[f] == g) for g in ("orig", "cut", "light", "heavy", "non")})
    assert not any(grade[f] == "non" for f in clustered)
    texts = {r["file"]: r["text"] for r in records}
    for member, keeper in removed.items():
        assert mh.exact_jaccard(mh.shingles(texts[member]), mh.shingles(texts[keeper])) >= 0.3


def test_disabled_stage_passes_everything(tmp_path: Path) -> None:
    docs = [doc("a", "same text " * 20), doc("b", "same text " * 20)]
    out = run(docs, tmp_path, enabled=False)
    assert sorted(d["id"] for d in out["kept"]) == ["a", "b"] and out["removed"] == []


def test_config_presets_and_validation() -> None:
    assert MinHashConfig().banding() == (14, 8)
    assert MinHashConfig(preset="datasketch-0.8-128").banding() == (9, 13)
    slim = MinHashConfig(preset="slimpajama")
    assert (slim.ngram, slim.banding()) == (13, (9, 13))
    assert MinHashConfig(threshold=0.8).banding() == mh.optimal_bands(0.8, 112)
    assert np.isclose(MinHashConfig().effective_verify_threshold(), (1 / 14) ** (1 / 8))
    for bad in ({"keep": "newest"}, {"bands": 20}, {"unknown": 1}, {"bands": None, "rows": 4}):
        with pytest.raises(ValueError):
            MinHashConfig(**bad)


def test_oversized_cluster_is_reported_and_never_collapsed_blindly(tmp_path: Path) -> None:
    base = words(random.Random(12), 300)
    docs = [doc(f"v{i:02d}", " ".join(base[:290] + [f"variant{i}"] * 3)) for i in range(30)]
    docs.append(doc("other", " ".join(words(random.Random(13), 200))))
    checked = run(docs, tmp_path, max_cluster_size=10)
    check_accounting(docs, checked)
    assert sorted(d["id"] for d in checked["kept"]) == ["other", "v00"]  # verified: they are near-copies
    assert all(d["similarity"] >= (1 / 14) ** (1 / 8) for d in checked["removed"])
    summary = {r["kind"]: r for r in checked["summary"]}
    assert (summary["oversized_cluster"]["keeper"], summary["oversized_cluster"]["size"]) == ("v00", 30)
    minhash = summary["minhash"]
    assert (minhash["clusters"], minhash["oversized_clusters"], minhash["removed_text_verified"]) == (1, 1, 29)
    assert checked["counters"]["dedup:minhash_oversized_clusters"] == 1

    blind = run(docs, tmp_path, max_cluster_size=10, verify_text=False)
    assert blind["removed"] == [] and len(blind["kept"]) == len(docs)  # kept whole, not collapsed
    assert {r["kind"]: r for r in blind["summary"]}["minhash"]["oversized_kept_whole"] == 1
    small = run(docs, tmp_path, verify_text=False)  # under the limit: collapsed as before
    assert len(small["removed"]) == 29 and all(d.get("similarity") is None for d in small["removed"])
