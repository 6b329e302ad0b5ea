"""Exact dedup folded into MinHash's signing pass (the default when both are on) gives exactly the
decisions of exact dedup followed by MinHash, without grouping documents by hash."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from conftest import run_stage

from winnow.beam.contract import KEPT, REJECTED, REMOVED
from winnow.stages.dedup.config import DedupConfig
from winnow.stages.dedup.exact import compact_rank, exact_keepers, identity_digest, keeper_rank
from winnow.stages.dedup.near import MinHashDedup
from winnow.stages.dedup.stage import Dedup, ExactDedup

DATA = Path(__file__).resolve().parents[2] / "data"
FAST = {"shards": 4, "max_rounds": 6}


class ExactThenMinHash(beam.PTransform):
    """The sequential reference: ExactDedup's kept documents into MinHashDedup."""

    def __init__(self, config: DedupConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        exact = docs | "Exact" >> ExactDedup(self.config.exact)
        near = exact[KEPT] | "MinHash" >> MinHashDedup(self.config.minhash)
        return {
            KEPT: near[KEPT],
            REMOVED: (exact[REMOVED], near[REMOVED]) | "Removed" >> beam.Flatten(),
            REJECTED: (exact[REJECTED], near[REJECTED]) | "Rejected" >> beam.Flatten(),
        }


def doc(doc_id: str, text: Any, **extra: Any) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "url": None, "source": "test", "metadata": None, **extra}


def corpus() -> list[dict[str, Any]]:
    """Real pages with exact copies (same bytes, other case and spacing), light edits (near copies),
    exact copies of a light edit, short pages without a shingle that are copies, inputs that reuse an
    id (same text, other URL; and byte-identical records), and a longer copy for ``keep: longest``."""
    with gzip.open(DATA / "dedup" / "pairs_docs.jsonl.gz", "rt") as handle:
        docs = [doc(d["id"], d["text"], url=d["url"]) for d in map(json.loads, handle)]
    rng = random.Random(5)
    extra: list[dict[str, Any]] = []
    for n, original in enumerate(docs[:30]):
        text = original["text"]
        extra.append(doc(f"{original['id']}-copy", text))
        if n % 3 == 0:
            extra.append(doc(f"0-{original['id']}-upper", text.upper()))  # a lower id than its original
        if n % 4 == 0:
            extra.append(doc(f"{original['id']}-spaced", "  " + text.replace(" ", "   ") + "\n"))
        if n % 2 == 0:
            tokens = text.split()
            for _ in range(max(1, len(tokens) // 150)):
                tokens[rng.randrange(len(tokens))] = "edited"
            light = " ".join(tokens)
            extra.append(doc(f"{original['id']}-light", light))
            extra.append(doc(f"{original['id']}-light-copy", light))
        if n % 5 == 0:
            extra.append(doc(original["id"], text, url="https://example.org/other"))  # the id reused
            extra.append(dict(original))  # the same record twice
    short = ["too short", "Too  short", "tiny", "tiny"]
    extra += [doc(f"short-{i}", text) for i, text in enumerate(short)]
    extra += [doc("bad-text", None), doc("bad-number", 12)]
    return docs + extra


def outcome(out: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    kept = sorted(json.dumps(d, sort_keys=True) for d in out["kept"])
    removed = sorted(json.dumps({k: v for k, v in d.items() if k != "detail"}, sort_keys=True) for d in out["removed"])
    rejected = sorted(d["doc_id"] for d in out["rejected"])
    return kept, removed, rejected


@pytest.mark.parametrize("keep", ["lowest_id", "longest"])
def test_same_decisions_as_exact_then_minhash(tmp_path: Path, keep: str) -> None:
    docs = corpus()
    config = DedupConfig(exact={"keep": keep}, minhash=FAST)
    combined = run_stage(Dedup(config), docs, tmp_path)
    sequential = run_stage(ExactThenMinHash(config), docs, tmp_path)
    assert outcome(combined) == outcome(sequential)
    reasons = [d["reason"] for d in combined["removed"]]
    assert reasons.count("dedup:exact") >= 40 and reasons.count("dedup:minhash") >= 10
    for name in ("dedup:exact", "dedup:minhash", "dedup:minhash_no_shingles", "dedup:minhash_clusters"):
        assert combined["counters"].get(name) == sequential["counters"].get(name), name
    # Nothing is lost on the combined path: every input comes out once.
    assert len(combined["kept"]) + len(combined["removed"]) + len(combined["rejected"]) == len(docs)


def test_same_decisions_whatever_the_order_and_sharding(tmp_path: Path) -> None:
    docs = corpus()
    first = run_stage(Dedup(DedupConfig(minhash=FAST)), docs, tmp_path)
    shuffled = list(docs)
    random.Random(3).shuffle(shuffled)
    again = run_stage(Dedup(DedupConfig(minhash={**FAST, "shards": 7, "batch_size": 13})), shuffled, tmp_path)
    assert outcome(first) == outcome(again)


def test_compact_rank_orders_like_the_full_rank() -> None:
    """The compact rank picks the keeper the whole-document rank picks, reused ids included, unless
    two documents differ in raw text alone."""
    rng = random.Random(0)
    docs = [
        doc(f"id-{rng.randrange(40):02d}", "x" * rng.randrange(1, 50), url=str(rng.randrange(3)), source=str(i % 2))
        for i in range(300)
    ]
    for keep in ("lowest_id", "longest"):
        by_full = sorted(docs, key=lambda d: keeper_rank(d, keep)[:-1])
        by_compact = sorted(docs, key=lambda d: compact_rank(d, keep)[0])
        assert [keeper_rank(d, keep)[:-1] for d in by_full] == [keeper_rank(d, keep)[:-1] for d in by_compact]
    assert compact_rank(docs[0], "lowest_id")[0] != compact_rank({**docs[0], "text": "y"}, "lowest_id")[0]


def test_exact_keepers_and_identity_digest() -> None:
    hashes = ["b", "a", "b", "a", "c"]
    ranks = [("2",), ("9",), ("1",), ("3",), ("5",)]
    assert exact_keepers(hashes, ranks) == [2, 3, 2, 3, 4]
    base = doc("x", "text", url="u")
    assert identity_digest(base) == identity_digest(dict(base))
    # Length-prefixed fields: moving a character from one field to the next changes the digest.
    assert identity_digest(doc("x", "text", url="ab", source="c")) != identity_digest(
        doc("x", "text", url="a", source="bc")
    )
    assert identity_digest(base) != identity_digest({**base, "metadata": {"k": 1}})


def test_index_written_and_matched_as_exact_then_minhash(tmp_path: Path) -> None:
    """With a band index: the same index rows (exact copies never enter it) and, on a second run
    against it, the same decisions."""
    import pyarrow.parquet as pq

    docs = corpus()
    first, later = docs[:60], docs[60:]

    def rows(index: Path) -> list[tuple[str, int, str]]:
        return sorted(
            (path.parent.name, row["band_hash"], row["doc_id"])
            for path in index.glob("band=*/*.parquet")
            for row in pq.read_table(path).to_pylist()
        )

    outcomes, indexes = [], []
    for name, transform in (("combined", Dedup), ("sequential", ExactThenMinHash)):
        index = tmp_path / f"index-{name}"
        config = DedupConfig(minhash={**FAST, "index_dir": str(index)})
        run_stage(transform(config), first, tmp_path)
        indexes.append(rows(index))
        outcomes.append(outcome(run_stage(transform(config), later, tmp_path)))
    assert indexes[0] == indexes[1] and len(indexes[0]) > 14 * 20
    assert outcomes[0] == outcomes[1]
    assert any('"dedup:minhash"' in r for r in outcomes[0][1])
