"""``Pack`` on the local runner (METHODS §4.6, §4.9 #5, §5.5): contexts rebuild the ranked token
stream exactly, DD pieces are single-document slices with dense shuffled shards, accounting
closes, results do not depend on batching or input order."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from conftest import DATA, collect, local_pipeline, run_stage

from winnow.beam.write import to_row
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.stage import CONTEXTS, DD, SUMMARY, Pack

TOKENIZER = TokenizerConfig()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(TOKENIZER.path, TOKENIZER.eos_token)


@pytest.fixture(scope="module")
def ranked_docs() -> list[dict[str, Any]]:
    """90 short documents and 6 long ones (joined texts), ranked in a hashed order."""
    with gzip.open(DATA / "text" / "english.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(200), handle, strict=False)]
    docs = [{"id": r["id"], "text": r["text"], "url": None, "source": r["source"], "metadata": {}} for r in rows[:90]]
    for i in range(6):
        text = "\n\n".join(r["text"] for r in rows[90 + 18 * i : 108 + 18 * i])
        docs.append({"id": f"long-{i}", "text": text, "url": None, "source": "joined", "metadata": {}})
    order = sorted(docs, key=lambda d: h64(d["id"], "test_rank", 0))
    return [{**doc, "order_rank": rank} for rank, doc in enumerate(order)]


def run_pack(docs: list[dict[str, Any]], config: PackConfig, seed: int = 0) -> dict[str, list]:
    transform = Pack(config, TOKENIZER, seed=seed)
    pipeline = local_pipeline()
    out = pipeline | beam.Create(docs, reshuffle=False) | transform
    tag = uuid.uuid4().hex
    sinks = {name: collect(pcoll, f"{name}_{tag}") for name, pcoll in out.items()}
    pipeline.run().wait_until_finish()
    assert set(out) == {"kept", "removed", "rejected", SUMMARY, *transform.tables}
    return {name: list(rows) for name, rows in sinks.items()}


def stream_of(docs: list[dict[str, Any]], tokenizer: Any) -> dict[str, list[int]]:
    """Each document's tokens + EOS, the unit packing works on."""
    return {d["id"]: [*tokenizer.encode([d["text"]])[0], tokenizer.eos_id] for d in docs}


def test_contexts_rebuild_the_ranked_stream_exactly(ranked_docs: list[dict], tokenizer: Any) -> None:
    L = 256
    out = run_pack(ranked_docs, PackConfig(context_tokens=L, rank_block=7), seed=3)
    assert out["rejected"] == [] and out["removed"] == []
    tokens = stream_of(ranked_docs, tokenizer)
    expected = [t for d in sorted(ranked_docs, key=lambda d: d["order_rank"]) for t in tokens[d["id"]]]

    contexts = sorted(out[CONTEXTS], key=lambda c: c["context_id"])
    assert [c["context_id"] for c in contexts] == list(range(len(contexts)))
    assert len(contexts) == -(-len(expected) // L) > 10
    assert all(c["n_tokens"] == L for c in contexts[:-1])
    rebuilt = []
    for context in contexts:
        piece = []
        for doc_id, start, end in zip(
            context["doc_ids"], context["doc_token_starts"], context["doc_token_ends"], strict=True
        ):
            piece.extend(tokens[doc_id][start:end])
        assert len(piece) == context["n_tokens"]
        rebuilt.extend(piece)
    assert rebuilt == expected  # token for token, EOS included

    # Kept documents: one per input, with the offset of their first token and its context.
    by_id = {d["id"]: d for d in out["kept"]}
    assert sorted(by_id) == sorted(d["id"] for d in ranked_docs)
    offset = 0
    for doc in sorted(ranked_docs, key=lambda d: d["order_rank"]):
        kept = by_id[doc["id"]]
        assert (kept["token_offset"], kept["context_id"]) == (offset, offset // L)
        assert kept["n_tokens"] == len(tokens[doc["id"]]) - 1
        offset += len(tokens[doc["id"]])

    # Seeded shuffle: positions are distinct and training order is not the stream order.
    positions = [c["position"] for c in contexts]
    assert len(set(positions)) == len(positions)
    assert sorted(range(len(contexts)), key=positions.__getitem__) != list(range(len(contexts)))

    (summary,) = out[SUMMARY]
    assert (summary["section"], summary["mode"], summary["tokens"], summary["contexts"]) == (
        "packing",
        "concat",
        len(expected),
        len(contexts),
    )
    assert summary["last_context_tokens"] == contexts[-1]["n_tokens"]

    table = pa.Table.from_pylist([to_row(c, Pack(PackConfig(), TOKENIZER).tables[CONTEXTS].schema) for c in contexts])
    assert table.num_rows == len(contexts)


def test_contexts_do_not_depend_on_blocks_input_order_or_batching(ranked_docs: list[dict]) -> None:
    first = run_pack(ranked_docs, PackConfig(context_tokens=128, rank_block=4096), seed=5)
    second = run_pack(list(reversed(ranked_docs)), PackConfig(context_tokens=128, rank_block=3), seed=5)
    key = lambda c: c["context_id"]  # noqa: E731
    assert sorted(first[CONTEXTS], key=key) == sorted(second[CONTEXTS], key=key)
    other_seed = run_pack(ranked_docs, PackConfig(context_tokens=128), seed=6)
    assert [c["position"] for c in sorted(first[CONTEXTS], key=key)] != [
        c["position"] for c in sorted(other_seed[CONTEXTS], key=key)
    ]
    unshuffled = run_pack(ranked_docs, PackConfig(context_tokens=128, shuffle_contexts=False), seed=5)
    assert all(c["position"] == c["context_id"] for c in unshuffled[CONTEXTS])


def test_documents_without_a_rank_are_rejected_not_lost(ranked_docs: list[dict], tmp_path) -> None:
    docs = [*ranked_docs[:20], {"id": "no-rank", "text": "lost?", "url": None, "source": "s", "metadata": {}}]
    out = run_stage(Pack(PackConfig(context_tokens=64), TOKENIZER), docs, tmp_path)
    assert [r["doc_id"] for r in out["rejected"]] == ["no-rank"]
    assert "order_rank" in out["rejected"][0]["error"]
    assert len(out["kept"]) == 20
    assert out["counters"]["order:pack_missing_rank"] == 1


DD_CONFIG = PackConfig(mode="dd", i_min=5, i_max=9, shard_tokens_log2=11)


def test_dd_pieces_are_single_document_slices_in_dense_shards(ranked_docs: list[dict], tokenizer: Any) -> None:
    out = run_pack(ranked_docs, DD_CONFIG, seed=1)
    assert out["rejected"] == []
    tokens = stream_of(ranked_docs, tokenizer)
    pieces = out[DD]
    kept = {d["id"]: d for d in out["kept"]}
    assert sorted(kept) == sorted(tokens)

    by_doc: dict[str, list[dict]] = {}
    for piece in pieces:
        assert 5 <= piece["bucket"] <= 9
        assert piece["seq_len"] == 2 ** piece["bucket"] + 1 == len(piece["tokens"])
        assert piece["tokens"] == tokens[piece["doc_id"]][piece["token_start"] : piece["token_end"]]
        by_doc.setdefault(piece["doc_id"], []).append(piece)
    assert any(p["bucket"] < 9 and p["token_end"] < len(tokens[p["doc_id"]]) - 600 for p in pieces)  # overflow draws
    for doc_id, stream in tokens.items():
        mine = sorted(by_doc.get(doc_id, []), key=lambda p: p["piece_index"])
        assert [p["piece_index"] for p in mine] == list(range(len(mine))) == list(range(kept[doc_id]["dd_pieces"]))
        position = 0
        for piece in mine:
            assert piece["token_start"] == position
            position = piece["token_end"]
        assert position + kept[doc_id]["dd_discarded_tokens"] == len(stream)

    (summary,) = out[SUMMARY]
    for bucket in range(5, 10):
        rows = [p for p in pieces if p["bucket"] == bucket]
        per_shard = 2 ** (11 - bucket)
        ranks = sorted(p["shard"] * per_shard + p["shard_position"] for p in rows)
        assert ranks == list(range(len(rows)))  # dense: every sequence has one slot
        full = len(rows) // per_shard * per_shard
        assert all(p["partial"] == (p["shard"] * per_shard + p["shard_position"] >= full) for p in rows)
        info = summary["buckets"][str(bucket)]
        assert info["sequences"] == len(rows)
        assert info["dropped_partial_shard_tokens"] == sum(p["seq_len"] for p in rows if p["partial"])
    # The shuffle is a hash order, not the document order.
    rows8 = sorted((p for p in pieces if p["bucket"] == 5), key=lambda p: (p["shard"], p["shard_position"]))
    assert [p["doc_id"] for p in rows8] != sorted(p["doc_id"] for p in rows8)

    accounting = summary["accounting"]
    assert accounting["input_tokens"] == sum(len(s) for s in tokens.values())
    assert accounting["bucket_tokens"] == sum(p["seq_len"] for p in pieces)
    assert accounting["discarded_remainder_tokens"] == sum(d["dd_discarded_tokens"] for d in kept.values())
    assert accounting["closes"]
    assert summary["curriculum"]["per_cycle"]["batch_size"] == {"5": 16, "6": 8, "7": 4, "8": 2, "9": 1}
    schema = Pack(DD_CONFIG, TOKENIZER).tables[DD].schema
    assert pa.Table.from_pylist([to_row(p, schema) for p in pieces], schema=schema).num_rows == len(pieces)


def test_dd_is_deterministic_across_input_order(ranked_docs: list[dict]) -> None:
    def key(p: dict) -> tuple:
        return (p["bucket"], p["shard"], p["shard_position"])

    first = sorted(run_pack(ranked_docs, DD_CONFIG, seed=1)[DD], key=key)
    again = sorted(run_pack(list(reversed(ranked_docs)), DD_CONFIG, seed=1)[DD], key=key)
    assert first == again
    other = sorted(run_pack(ranked_docs, DD_CONFIG, seed=2)[DD], key=key)
    assert [(p["doc_id"], p["piece_index"]) for p in first] != [(p["doc_id"], p["piece_index"]) for p in other]


def test_none_mode_passes_documents_through(ranked_docs: list[dict]) -> None:
    out = run_pack(ranked_docs[:10], PackConfig(mode="none"))
    assert sorted(out["kept"], key=lambda d: d["id"]) == sorted(ranked_docs[:10], key=lambda d: d["id"])
    assert out[SUMMARY] == [{"section": "packing", "mode": "none"}]


@pytest.mark.parametrize("mode", ["concat", "dd"])
def test_empty_input_gives_an_empty_summary(mode: str) -> None:
    out = run_pack([], PackConfig(mode=mode))
    assert out["kept"] == [] and out[CONTEXTS if mode == "concat" else DD] == []
    (summary,) = out[SUMMARY]
    assert summary["documents"] == 0
    if mode == "dd":
        assert summary["accounting"]["input_tokens"] == 0 and summary["accounting"]["closes"]
    else:
        assert summary["contexts"] == 0


def test_contexts_never_mix_the_phases_of_a_schedule(ranked_docs: list[dict], tokenizer: Any) -> None:
    L = 256
    phased = [{**doc, "phase": "base" if doc["order_rank"] % 3 else "final"} for doc in ranked_docs]
    # ranks are phase-major, as the order stage writes them
    phased.sort(key=lambda d: (d["phase"], d["order_rank"]))
    phased = [{**doc, "order_rank": rank} for rank, doc in enumerate(phased)]
    out = run_pack(phased, PackConfig(context_tokens=L, rank_block=5))
    phase_of = {d["id"]: d["phase"] for d in phased}
    tokens = stream_of(phased, tokenizer)
    contexts = sorted(out[CONTEXTS], key=lambda c: c["context_id"])
    phases = [{phase_of[doc_id] for doc_id in c["doc_ids"]} for c in contexts]
    assert all(len(p) == 1 for p in phases)
    boundary = next(i for i, p in enumerate(phases) if p == {"final"})
    assert all(c["n_tokens"] == L for i, c in enumerate(contexts) if i not in (boundary - 1, len(contexts) - 1))
    assert contexts[boundary - 1]["n_tokens"] < L  # the base phase's last, partial context
    summary = sorted(out[SUMMARY], key=lambda r: r["phase"])
    assert [r["phase"] for r in summary] == ["base", "final"]
    for record in summary:
        members = [d for d in phased if d["phase"] == record["phase"]]
        assert record["tokens"] == sum(len(tokens[d["id"]]) for d in members)
        assert record["contexts"] == sum(1 for p in phases if p == {record["phase"]})
