"""``pack.mode: utk`` on the local runner (docs/untie-the-knots.md): the Beam wiring equals the core packer
bundle by bundle, whatever the rank blocks or the input order; ``overflow: defer`` trains every token once;
the manifest section counts what the rows hold; special tokens inside text are rejected, never lost."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from conftest import DATA, collect, local_pipeline

from winnow.config import ConfigError, parse_config
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.stage import CONTEXTS, SUMMARY, Pack, utk_bundle
from winnow.stages.pack.utk import SpecialTokens, apply_plan, pack_bundle

TOKENIZER = TokenizerConfig()
L = 255


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(TOKENIZER.path, TOKENIZER.eos_token)


@pytest.fixture(scope="module")
def phased_docs() -> list[dict[str, Any]]:
    """90 short real documents and 4 long ones (joined texts) in two phases, ranked phase-major in a
    hashed order, as the order stage writes them after a mix schedule."""
    with gzip.open(DATA / "text" / "english.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(162), handle, strict=False)]
    docs = [{"id": r["id"], "text": r["text"], "url": None, "source": r["source"], "metadata": {}} for r in rows[:90]]
    for i in range(4):
        text = "\n\n".join(r["text"] for r in rows[90 + 18 * i : 108 + 18 * i])
        docs.append({"id": f"long-{i}", "text": text, "url": None, "source": "joined", "metadata": {}})
    docs = [{**d, "phase": "base" if h64(d["id"], "test_phase", 0) % 3 else "final"} for d in docs]
    docs.sort(key=lambda d: (d["phase"], h64(d["id"], "test_rank", 0)))
    return [{**doc, "order_rank": rank} for rank, doc in enumerate(docs)]


def run_pack(docs: list[dict[str, Any]], config: PackConfig, seed: int = 0) -> dict[str, list]:
    transform = Pack(config, TOKENIZER, seed=seed)
    pipeline = local_pipeline()
    out = pipeline | beam.Create(docs, reshuffle=False) | transform
    tag = uuid.uuid4().hex
    sinks = {name: collect(pcoll, f"utk_{name}_{tag}") for name, pcoll in out.items()}
    pipeline.run().wait_until_finish()
    assert set(out) == {"kept", "removed", "rejected", SUMMARY, CONTEXTS} and set(transform.tables) == {CONTEXTS}
    return {name: list(rows) for name, rows in sinks.items()}


def utk_config(**utk: Any) -> PackConfig:
    return PackConfig(mode="utk", context_tokens=L, rank_block=7, utk=utk)


def by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["context_id"])


def core_rows(
    docs: list[dict], config: PackConfig, tokenizer: Any, seed: int, bundle_of: Any
) -> tuple[list[dict], dict[str, Any]]:
    """What the Beam stage must write: the core's streaming packer run on each bundle on its own."""
    special = SpecialTokens.from_tokenizer(config.utk, tokenizer)
    bundles: dict[tuple, list] = {}
    for doc in docs:
        bundles.setdefault(bundle_of(doc), []).append((doc["order_rank"], doc["id"], doc))
    rows, totals = [], {}
    for key, members in bundles.items():
        ids = tokenizer.encode([doc["text"] for _, _, doc in members])
        contexts, bundle_totals = pack_bundle(
            [(rank, doc_id, i) for (rank, doc_id, _), i in zip(members, ids, strict=True)],
            config.utk,
            special,
            tokenizer.encode,
            seed,
            context_tokens=config.context_tokens,
            bundle=utk_bundle(*key),
        )
        rows += [{**c.row(config.utk.emit, seed), "phase": key[0] or None} for c in contexts]
        totals[key[0]] = bundle_totals if key[0] not in totals else totals[key[0]].merge(bundle_totals)
    return by_id(rows), totals


def test_truncate_writes_what_the_core_packer_writes_phase_by_phase(phased_docs, tokenizer) -> None:
    config = utk_config(probability=0.8)
    out = run_pack(phased_docs, config, seed=3)
    assert out["rejected"] == [] and out["removed"] == []
    expected, totals = core_rows(phased_docs, config, tokenizer, 3, lambda d: (d["phase"],))
    assert by_id(out[CONTEXTS]) == expected
    assert {c["context_id"].split("/")[0] for c in expected} == {"phase=base", "phase=final"}
    last = {phase: max(c["context_index"] for c in expected if c["phase"] == phase) for phase in ("base", "final")}
    assert all(len(c["tokens"]) == L + 1 for c in expected if c["context_index"] != last[c["phase"]])

    kept = {d["id"]: d for d in out["kept"]}
    assert sorted(kept) == sorted(d["id"] for d in phased_docs)
    assert all(kept[d["id"]]["n_tokens"] == len(tokenizer.encode([d["text"]])[0]) for d in phased_docs)

    summary = {r["phase"]: r for r in out[SUMMARY]}
    assert sorted(summary) == ["base", "final"]
    for phase, record in summary.items():
        mine = [c for c in expected if c["phase"] == phase]
        assert record["contexts"] == len(mine) == totals[phase].contexts
        assert record["documents"] == sum(d["phase"] == phase for d in phased_docs)
        assert record["contexts_with_utk"] == sum(c["utk_applied"] for c in mine) > 0
        assert record["augmented_share"] == record["contexts_with_utk"] / record["contexts"]
        assert record["knot_tokens"] == sum(c["knot_tokens"] for c in mine) > 0
        assert record["backtrace_tokens"] == sum(c["backtrace_tokens"] for c in mine) > 0
        assert record["truncated_tokens"] == sum(c["truncated_tokens"] for c in mine) > 0
        assert record["deferred_tokens"] == 0 and record["accounting"]["closes"]
        assert record["bundles"] == "phase" and record["special_tokens"]["<D>"] >= 32000


def test_truncate_does_not_depend_on_rank_blocks_or_input_order(phased_docs) -> None:
    first = run_pack(phased_docs, utk_config(), seed=5)
    config = PackConfig(mode="utk", context_tokens=L, rank_block=4096, utk={})
    second = run_pack(list(reversed(phased_docs)), config, seed=5)
    assert by_id(first[CONTEXTS]) == by_id(second[CONTEXTS])
    assert sorted(first[SUMMARY], key=lambda r: r["phase"]) == [
        {**r, "rank_block": None} for r in sorted(second[SUMMARY], key=lambda r: r["phase"])
    ]
    other_seed = run_pack(phased_docs, utk_config(), seed=6)
    assert by_id(first[CONTEXTS]) != by_id(other_seed[CONTEXTS])


def stream_counts(docs: list[dict], tokenizer: Any) -> tuple[dict[str, np.ndarray], Counter]:
    streams = {d["id"]: np.array([*tokenizer.encode([d["text"]])[0], tokenizer.eos_id]) for d in docs}
    return streams, Counter((doc_id, i) for doc_id, s in streams.items() for i in range(len(s)))


def test_defer_packs_each_rank_block_and_trains_every_token_once(phased_docs, tokenizer) -> None:
    config = PackConfig(
        mode="utk",
        context_tokens=L,
        rank_block=20,
        utk={"probability": 1.0, "overflow": "defer", "chunks": {2: 1, 3: 1}},
    )
    out = run_pack(phased_docs, config, seed=2)
    expected, _ = core_rows(phased_docs, config, tokenizer, 2, lambda d: (d["phase"], d["order_rank"] // 20))
    assert by_id(out[CONTEXTS]) == expected
    again = run_pack(list(reversed(phased_docs)), config, seed=2)
    assert by_id(again[CONTEXTS]) == expected

    streams, expected_tokens = stream_counts(phased_docs, tokenizer)
    seen: Counter = Counter()
    for row in out[CONTEXTS]:
        tokens = np.array(row["tokens"])
        for chunk in row["chunk_table"]:
            kept = tokens[chunk["dst_start"] : chunk["dst_start"] + chunk["kept_tokens"]]
            start = chunk["doc_start"]
            assert np.array_equal(kept, streams[chunk["doc_id"]][start : start + chunk["kept_tokens"]])
            seen.update((chunk["doc_id"], start + i) for i in range(chunk["kept_tokens"]))
    assert seen == expected_tokens  # exactly once, across contexts and blocks
    for record in out[SUMMARY]:
        assert record["truncated_tokens"] == 0 and record["deferred_tokens"] > 0
        assert record["accounting"]["closes"] and record["bundles"] == "rank_block" and record["rank_block"] == 20
    assert sum(r["accounting"]["stream_tokens"] for r in out[SUMMARY]) == sum(expected_tokens.values())


def test_unshuffled_contexts_are_numbered_in_stream_order(phased_docs) -> None:
    config = PackConfig(mode="utk", context_tokens=L, rank_block=9, shuffle_contexts=False, utk={})
    rows = run_pack(phased_docs, config, seed=1)[CONTEXTS]
    ordered = sorted(rows, key=lambda r: r["position"])
    assert [r["position"] for r in ordered] == list(range(len(rows)))
    assert [(r["phase"], r["context_index"]) for r in ordered] == sorted((r["phase"], r["context_index"]) for r in rows)
    shuffled = run_pack(phased_docs, utk_config(), seed=1)[CONTEXTS]
    assert sorted(range(len(shuffled)), key=lambda i: by_id(shuffled)[i]["position"]) != list(range(len(shuffled)))


def test_plan_rows_hold_the_plain_tokens_and_rebuild_the_materialised_ones(phased_docs) -> None:
    done = by_id(run_pack(phased_docs, utk_config(), seed=4)[CONTEXTS])
    plan = by_id(run_pack(phased_docs, utk_config(emit="plan"), seed=4)[CONTEXTS])
    assert [r["context_id"] for r in plan] == [r["context_id"] for r in done]
    for planned, materialised in zip(plan, done, strict=True):
        assert planned["loss_mask"] is None and planned["chunk_table"] == materialised["chunk_table"]
        assert apply_plan(np.array(planned["tokens"]), planned["chunk_table"]).tolist() == materialised["tokens"]
    assert any(p["tokens"] != d["tokens"] for p, d in zip(plan, done, strict=True))


def test_a_document_whose_text_encodes_a_special_id_is_rejected_not_lost(phased_docs, tokenizer) -> None:
    docs = phased_docs[:30]
    pinned = tokenizer.encode([docs[0]["text"]])[0][0]  # an ordinary id, pinned as <D>
    config = PackConfig(mode="utk", context_tokens=L, utk={"special_ids": {"<D>": pinned}})
    out = run_pack(docs, config)
    rejected = {r["doc_id"] for r in out["rejected"]}
    expected = {d["id"] for d in docs if pinned in tokenizer.encode([d["text"]])[0]}
    assert docs[0]["id"] in rejected and rejected == expected
    assert all("SpecialTokenInText" in r["error"] for r in out["rejected"])
    assert sorted([d["id"] for d in out["kept"]] + list(rejected)) == sorted(d["id"] for d in docs)
    assert not {doc_id for row in out[CONTEXTS] for doc_id in row["doc_ids"]} & rejected


def test_empty_input_gives_one_zero_record() -> None:
    out = run_pack([], utk_config())
    assert out["kept"] == [] and out[CONTEXTS] == []
    (record,) = out[SUMMARY]
    assert (record["contexts"], record["documents"], record["phase"]) == (0, 0, None)
    assert record["accounting"]["closes"]


def test_the_context_length_is_the_pack_stages_own() -> None:
    with pytest.raises(ConfigError, match=r"pack\.utk\.context_tokens: unknown key"):
        parse_config({"pack": {"mode": "utk", "utk": {"context_tokens": 4096}}})
    with pytest.raises(ConfigError, match=r"pack\.utk\.overflow"):
        parse_config({"pack": {"mode": "utk", "utk": {"overflow": "spill"}}})
    config = parse_config({"order": {"enabled": True}, "pack": {"mode": "utk", "context_tokens": 4096}})
    assert config.pack.enabled and config.pack.utk.probability == 0.8
