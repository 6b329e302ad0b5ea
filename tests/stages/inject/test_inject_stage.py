"""Stage ``inject`` on the local runner (docs/copyright-traps.md): traps prepared on the driver, documents
chosen by the bounded combiner, the plan dealt once and shipped as a side input; planted texts equal the
core's, ``mix`` copies get identical traps, nothing is removed, and the ledger written from the run's
final outputs records survival, the removing rule and exposures. Same ledger bytes for reversed input."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from pydantic import ValidationError

from winnow.config import parse_config
from winnow.core.config import TokenizerConfig
from winnow.core.tokenizer import load_tokenizer
from winnow.run.registry import run_order
from winnow.stages.inject.config import InjectConfig
from winnow.stages.inject.stage import Inject, balanced_roles, prepare_traps
from winnow.stages.inject.traps import (
    InjectedTrap,
    TrapDocuments,
    inject,
    plan_injection,
    read_trap_file,
    remove_copies,
    trap_file_table,
)

DATA = Path(__file__).resolve().parents[2] / "data"
REMOVED_LATER = "filter:test_rule"


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    with gzip.open(DATA / "traps" / "weborganizer_long.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle][:120]
    counts = load_tokenizer().count([d["text"] for d in docs])
    return [
        {"id": d["id"], "text": d["text"], "url": d["url"], "source": "web", "n_tokens": int(n), "epoch": 0}
        for d, n in zip(docs, counts, strict=True)
    ]


def write_traps(path: Path, n: int) -> Path:
    words = ["amber", "quartz", "lantern", "orchid", "velvet", "meadow", "cobalt", "harbor", "thistle", "ember"]
    lines = []
    for i in range(n):
        text = " ".join(words[(i * k + 3) % len(words)] for k in range(1, 6 + i % 3)) + f" marker{i}"
        lines.append(json.dumps({"text": f"  {text} ", **({"ppl": 10.0 + 9 * i} if i % 2 else {})}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def inject_config(trap_file: Path, **options: Any) -> InjectConfig:
    settings = {"enabled": True, "doc_min_tokens": 700, "n_reps": [1, 5], **options}
    return InjectConfig(traps={"source": "file", "file": str(trap_file)}, **settings)


def split_removed(doc: dict, victim: str) -> Any:
    """A later stage that removes one planted document (by id), as a filter would."""
    if doc["id"] == victim:
        return beam.pvalue.TaggedOutput("removed", {**doc, "reason": REMOVED_LATER, "duplicate_of": None})
    return doc


def run_inject(docs: list[dict], config: InjectConfig, tmp_path: Path, victim: str = "") -> dict[str, Any]:
    """Inject, then a stage that removes ``victim``, then the ledger from the final kept and removed rows."""
    prepared = prepare_traps(config, TokenizerConfig())
    transform = Inject(config, TokenizerConfig(), **prepared)
    out_dir = tmp_path / f"out-{uuid.uuid4().hex}"
    staging = out_dir / "staging"
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    outputs = pipeline | beam.Create(docs, reshuffle=False) | "inject" >> transform
    later = outputs["kept"] | "Later" >> beam.Map(split_removed, victim).with_outputs("removed", main="kept")
    items = {"kept": later["kept"], "removed": later["removed"]} | "Finish" >> transform.finish(str(staging))
    named = {
        "kept": later["kept"],
        "removed": later["removed"],
        "rejected": outputs["rejected"],
        "summary": outputs["summary"],
        "items": items,
    }
    for name, pcoll in named.items():
        _ = (
            pcoll
            | f"{name}/json" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
            | f"{name}/write" >> beam.io.WriteToText(str(out_dir / name))
        )
    pipeline.run().wait_until_finish()
    result = {
        name: [json.loads(line) for path in out_dir.glob(f"{name}*") for line in path.read_text().splitlines()]
        for name in named
    }
    result["ledger_bytes"] = (staging / config.ledger).read_bytes()
    result["ledger"] = pq.read_table(staging / config.ledger).to_pylist()
    result["prepared"] = prepared
    return result


def core_plan(docs: list[dict], config: InjectConfig, prepared: dict) -> Any:
    """The plan the core computes on one process from the same traps and documents."""
    members = sum(role == "member" for role in prepared["roles"].values())
    chosen = TrapDocuments(members, config.seed, config.doc_min_tokens)
    for doc in docs:
        if doc.get("epoch", 0) == 0:
            chosen.add(doc["id"], doc["n_tokens"])
    return plan_injection(prepared["traps"], prepared["roles"], chosen.result(), config)


def test_prepare_reads_file_traps_under_the_run_tokenizer_and_balances_roles(tmp_path):
    config = inject_config(write_traps(tmp_path / "traps.jsonl", 23))
    prepared = prepare_traps(config, TokenizerConfig())
    traps, roles = prepared["traps"], prepared["roles"]
    tokenizer = load_tokenizer()
    assert len(traps) == 23
    for trap in traps:
        assert trap.text == trap.text.strip()  # user traps: outer whitespace stripped
        assert list(trap.token_ids) == tokenizer.encode([trap.text])[0] and trap.seq_len == len(trap.token_ids)
        assert trap.tokenizer.startswith("winnow-bpe-32k@")
    members = [t for t in traps if roles[t.trap_id] == "member"]
    assert len(members) % len(config.n_reps) == 0
    plain, surplus = balanced_roles(traps, config.model_copy(update={"n_reps": [1]}))
    assert (
        surplus == 0
        and sum(r == "member" for r in plain.values()) == len(members) + prepared["source"]["members_made_controls"]
    )
    assert prepared["source"]["source"] == "file"


def test_a_generated_trap_file_is_read_back_verbatim(tmp_path):
    config = inject_config(write_traps(tmp_path / "traps.jsonl", 6))
    traps = prepare_traps(config, TokenizerConfig())["traps"]
    generated = [t.__class__(t.trap_id, f" {t.text}", t.token_ids, 7, 42.5, 4, 1.5, "gen@x", "tok-x") for t in traps]
    path = tmp_path / "generated.parquet"
    pq.write_table(trap_file_table(generated), path)
    again = read_trap_file(path, lambda texts: pytest.fail("a generated file is never re-encoded"), config.traps, "x")
    assert [(t.text, t.token_ids, t.seq_len, t.temperature, t.generator, t.tokenizer) for t in again] == [
        (t.text, t.token_ids, t.seq_len, t.temperature, t.generator, t.tokenizer) for t in generated
    ]
    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_text('{"text": "same words"}\n{"text": " same words "}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="more than once"):
        read_trap_file(duplicate, load_tokenizer().encode, config.traps, "x")


def test_stage_plants_what_the_core_plans_keeps_everything_and_writes_the_ledger(documents, tmp_path):
    config = inject_config(write_traps(tmp_path / "traps.jsonl", 16))
    docs = [dict(d) for d in documents]
    eligible = [d for d in docs if d["n_tokens"] > config.doc_min_tokens]
    assert len(eligible) > 16
    prepared = prepare_traps(config, TokenizerConfig())
    plan = core_plan(docs, config, prepared)
    copied = next(e.doc_id for e in plan.members if e.n_rep == 5)  # mix made a second copy of this one
    docs.append({**next(d for d in docs if d["id"] == copied), "epoch": 1})
    victim = next(e.doc_id for e in plan.members if e.doc_id != copied)
    out = run_inject(docs, config, tmp_path, victim=victim)

    assert out["rejected"] == []
    assert len(out["kept"]) + len(out["removed"]) == len(docs)  # injection removes nothing
    originals = {(d["id"], d["epoch"]): d for d in docs}
    planted_docs = {e.doc_id: e for e in plan.members}
    tokenizer = load_tokenizer()
    for doc in out["kept"] + out["removed"]:
        original = originals[(doc["id"], doc["epoch"])]
        expected_text, expected = inject(doc["id"], original["text"], plan)
        assert doc["text"] == expected_text
        if doc["id"] not in planted_docs:
            assert doc["injected_traps"] is None and doc["n_tokens"] == original["n_tokens"]
            continue
        assert doc["injected_traps"] == [t.as_row() for t in expected]
        placed = [InjectedTrap(r["trap_id"], tuple(r["char_offsets"]), r["span_chars"]) for r in doc["injected_traps"]]
        assert remove_copies(doc["text"], placed) == original["text"]
        assert doc["n_tokens"] == int(tokenizer.count([doc["text"]])[0])
    copies = [d for d in out["kept"] if d["id"] == copied]
    assert len(copies) == 2 and copies[0]["text"] == copies[1]["text"]  # identical traps in every copy

    (record,) = out["summary"]
    assert record["section"] == "traps" and record["kind"] == "plan"
    assert record["members"] == len(plan.members) and record["traps"] == 16
    assert record["eligible_documents"] == len(eligible)
    ledger = {row["trap_id"]: row for row in out["ledger"]}
    assert len(ledger) == 16
    for entry in plan.entries:
        row = ledger[entry.trap.trap_id]
        assert (row["role"], row["n_rep"], row["doc_id"]) == (entry.role, entry.n_rep, entry.doc_id)
        if entry.role == "control":
            assert row["survived"] is None and row["char_offsets"] is None
        elif entry.doc_id == victim:
            assert row["survived"] is False and row["removed_by"] == REMOVED_LATER
        else:
            epochs = 2 if entry.doc_id == copied else 1
            assert row["survived"] and row["doc_epochs"] == epochs and row["exposures"] == entry.n_rep * epochs
            assert len(row["char_offsets"]) == entry.n_rep
    files = [value for kind, value in map(tuple, out["items"]) if kind == "file"]
    sections = [value for kind, value in map(tuple, out["items"]) if kind == "section"]
    assert files == [
        {
            "kind": "traps",
            "file": "traps/ledger.parquet",
            "rows": 16,
            "bytes": len(out["ledger_bytes"]),
            "sha256": hashlib.sha256(out["ledger_bytes"]).hexdigest(),
        }
    ]
    (ledger_record,) = sections
    assert ledger_record["members_survived"] == len(plan.members) - 1
    assert ledger_record["members_lost"] == {REMOVED_LATER: 1}
    assert ledger_record["ledger_sha256"] == files[0]["sha256"]
    assert ledger_record["injected_rows"] == len(plan.members) + 1 - 1  # a copy more, the victim less

    backward = run_inject(docs[::-1], config, tmp_path, victim=victim)
    assert backward["ledger_bytes"] == out["ledger_bytes"]
    key = lambda d: (d["id"], d["epoch"])  # noqa: E731
    assert sorted(backward["kept"], key=key) == sorted(out["kept"], key=key)


def test_too_few_eligible_documents_fail_the_run(documents, tmp_path):
    config = inject_config(write_traps(tmp_path / "traps.jsonl", 16), doc_min_tokens=100_000)
    with pytest.raises(Exception, match="documents over 100000 tokens"):
        run_inject(documents[:10], config, tmp_path)


def test_inject_runs_after_mix_or_after_dedup_and_the_ledger_path_is_checked(tmp_path):
    trap_file = write_traps(tmp_path / "traps.jsonl", 4)
    base = {"inject": {"enabled": True, "traps": {"source": "file", "file": str(trap_file)}}}
    order = run_order(parse_config(base))
    assert order.index("inject") == order.index("mix") + 1
    after_dedup = run_order(parse_config({"inject": {**base["inject"], "after": "dedup"}}))
    assert after_dedup.index("inject") == after_dedup.index("dedup") + 1
    for bad in ("ledger.parquet", "data/ledger.parquet", "traps/ledger.csv", "../x/ledger.parquet"):
        with pytest.raises(ValidationError):
            InjectConfig(ledger=bad)
    with pytest.raises(ValidationError, match="trap file not found"):
        InjectConfig(traps={"source": "file", "file": str(tmp_path / "missing.jsonl")})
    assert Counter(order)["inject"] == 1
