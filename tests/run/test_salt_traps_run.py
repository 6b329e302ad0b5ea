"""SALT and Copyright Traps from config on a slice of the bundled sample (docs/salt.md, docs/copyright-traps.md).

One run scores every document with ``backend: causal_lm`` (a tiny random Llama: the plumbing, not the
statistics, is under test), tags the difficulty band (``select.rule: band``) and plants traps read from a
file (``inject``, after ``mix``'s place); the accounting closes, the manifest carries the band's cut and the
trap plan and ledger with its hash, and the output bytes are the same run after run and with the input
reversed. A second run exports soft labels on the packed contexts of the token output. The ``winnow traps``
commands then generate traps, score the ledger's traps and run the membership test on the run's ledger.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_config, run
from tiny_llama import build_tiny_llama
from typer.testing import CliRunner

from winnow.cli.main import app
from winnow.config import ConfigError, parse_config
from winnow.core.causal_lm import CausalLM
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.inject.traps import InjectedTrap, remove_copies

SAMPLE = Path(__file__).resolve().parents[2] / "winnow" / "data" / "sample" / "web.jsonl.gz"
SLICE = 80
TRAP_WORDS = ["amber", "quartz", "lantern", "orchid", "velvet", "meadow", "cobalt", "harbor", "thistle", "ember"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The first documents of the sample, in order and reversed, under the same file name; and a trap file."""
    root = tmp_path_factory.mktemp("salt_traps_inputs")
    # split("\n"), not splitlines(): some texts hold U+2028, which splitlines() would cut at
    lines = gzip.decompress(SAMPLE.read_bytes()).decode("utf-8").rstrip("\n").split("\n")[:SLICE]
    folders = {}
    for kind, ordered in (("forward", lines), ("reversed", lines[::-1])):
        folder = root / kind
        folder.mkdir()
        (folder / "web.jsonl.gz").write_bytes(gzip.compress(("\n".join(ordered) + "\n").encode("utf-8"), mtime=0))
        folders[kind] = folder / "web.jsonl.gz"
    traps = [" ".join(TRAP_WORDS[(i * k + 1) % 10] for k in range(1, 7)) + f" sigil{i}" for i in range(12)]
    folders["traps"] = root / "traps.jsonl"
    folders["traps"].write_text("".join(json.dumps({"text": t}) + "\n" for t in traps), encoding="utf-8")
    return folders


def salt_traps_config(path: Path, out: Path, model: Path, trap_file: Path, **extra: Any) -> Any:
    return make_config(
        [str(path)],
        out,
        score={
            "enabled": True,
            "scorers": [
                {
                    "name": "slm_stats",
                    "backend": "causal_lm",
                    "path": str(model),
                    "window_tokens": 48,
                    "max_tokens": 96,
                    "batch_size": 16,
                }
            ],
        },
        select={"enabled": True, "rule": "band", "band": {"lower_quantile": 0.4, "upper_quantile": 0.9, "require": []}},
        inject={
            "enabled": True,
            "doc_min_tokens": 400,
            "n_reps": [1, 3],
            "traps": {"source": "file", "file": str(trap_file)},
        },
        **extra,
    )


def output_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def rows_of(root: Path, kind: str) -> list[dict]:
    return [row for f in sorted((root / kind).rglob("*.parquet")) for row in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def salt_run(inputs, tiny_llama, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("salt_traps_runs")
    results = {}
    for name, kind in (("first", "forward"), ("again", "forward"), ("reversed", "reversed")):
        config = salt_traps_config(inputs[kind], root / name, tiny_llama, inputs["traps"])
        results[name] = run(config)
    return {"root": root, **results}


def test_causal_lm_scoring_band_and_traps_run_from_config_with_closed_accounting(salt_run):
    manifest, out = salt_run["first"].manifest, salt_run["root"] / "first"
    counts = manifest["counts"]
    assert counts["input"] == SLICE
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    assert counts["filtered"] == 0  # the band tags: nothing is removed by select or inject
    assert manifest["stages"][-2:] == ["select", "inject"]
    docs = rows_of(out, "data")
    assert len(docs) == counts["kept"]

    # causal_lm: every document scored, types as declared, the model named with its tokenizer.
    for doc in docs:
        assert np.isfinite(doc["slm_mean_nll"]) and 0 <= doc["slm_topk_hit"] <= 1
        assert 0 < doc["slm_tokens"] <= 96 and doc["slm_model"].startswith("tiny_llama")
    assert pq.read_schema(next((out / "data").glob("*.parquet"))).field("slm_tokens").type == "int32"

    # band: every document labelled, the selected ones are the band (require is empty).
    (band,) = manifest["selection"]
    assert band["rule"] == "band" and band["column"] == "slm_median_nll"
    labels = {label: sum(1 for d in docs if d["band"] == label) for label in ("below", "band", "above")}
    assert {k: v for k, v in labels.items() if v} == band["documents"]
    assert all(d["salt_selected"] == (d["band"] == "band") for d in docs)
    # Tokens as select counted them: inject runs later and recounts the documents it plants in.
    selected_tokens = {d["id"]: d["n_tokens"] for d in docs}
    for doc in docs:
        if doc["injected_traps"]:
            placed = [
                InjectedTrap(t["trap_id"], tuple(t["char_offsets"]), t["span_chars"]) for t in doc["injected_traps"]
            ]
            selected_tokens[doc["id"]] = int(load_tokenizer().count([remove_copies(doc["text"], placed)])[0])
    tokens_in_band = sum(selected_tokens[d["id"]] for d in docs if d["band"] == "band")
    assert tokens_in_band == band["band_weight"] == band["selected_weight"]
    assert abs(tokens_in_band - 0.5 * band["pool_weight"]) <= max(selected_tokens.values())
    below = [d["slm_median_nll"] for d in docs if d["band"] == "below"]
    inside = [d["slm_median_nll"] for d in docs if d["band"] == "band"]
    assert max(below) <= min(inside) == band["low_value"]

    # inject: the plan, the planted documents and the ledger agree, and the ledger's hash is listed.
    plan, ledger_record = sorted(manifest["traps"], key=lambda r: r["kind"] != "plan")
    assert plan["source"] == "file" and plan["traps"] == 12
    planted = [d for d in docs if d["injected_traps"]]
    assert len(planted) == plan["members"] == ledger_record["members_survived"] > 0
    (entry,) = manifest["shards"]["traps"]
    ledger_path = out / "traps" / "ledger.parquet"
    assert entry["file"] == "traps/ledger.parquet"
    assert entry["sha256"] == hashlib.sha256(ledger_path.read_bytes()).hexdigest() == ledger_record["ledger_sha256"]
    ledger = {row["trap_id"]: row for row in pq.read_table(ledger_path).to_pylist()}
    for doc in planted:
        (placed,) = doc["injected_traps"]
        row = ledger[placed["trap_id"]]
        assert row["doc_id"] == doc["id"] and row["char_offsets"] == placed["char_offsets"]
        for offset in placed["char_offsets"]:
            assert doc["text"][offset : offset + len(row["text"]) + 1] == row["text"] + " "
    assert sum(row["role"] == "control" for row in ledger.values()) == plan["controls"]


def test_the_run_gives_the_same_bytes_twice_and_with_reversed_input(salt_run):
    first = output_bytes(salt_run["root"] / "first")
    assert {"data", "traps"} <= {key.split("/", 1)[0] for key in first}
    assert output_bytes(salt_run["root"] / "again") == first
    assert output_bytes(salt_run["root"] / "reversed") == first


def test_soft_labels_are_exported_for_the_packed_contexts_of_the_token_output(inputs, tiny_llama, tmp_path):
    config = make_config(
        [str(inputs["forward"])],
        tmp_path / "soft",
        output={
            "tokens": {"formats": ["parquet"]},
            "soft_labels": {"enabled": True, "path": str(tiny_llama), "topk": 4, "phases": []},
        },
        order={"enabled": True, "method": "none"},
        pack={"mode": "concat", "context_tokens": 96},
    )
    manifest = run(config).manifest
    (section,) = manifest["soft_labels"]
    assert section["topk"] == 4 and section["models"][0].startswith("tiny_llama")
    rows = rows_of(tmp_path / "soft", "soft_labels")
    assert len(rows) == section["positions"] == section["contexts"] * 96
    contexts = {}
    for row in rows:
        contexts.setdefault(row["context_id"], []).append(row["position"])
        assert len(set(row["topk_ids"])) == 4 and np.all(np.diff(row["topk_logprobs"]) <= 0)
    assert all(sorted(positions) == list(range(96)) for positions in contexts.values())
    # Soft labels join the token output's contexts by id; position i is the LM's distribution for token i.
    contexts_dir = tmp_path / "soft" / "tokens" / "parquet"
    token_rows = [r for f in sorted(contexts_dir.rglob("contexts*/*.parquet")) for r in pq.read_table(f).to_pylist()]
    tokens_of = {r["id"]: r["tokens"] for r in token_rows}
    assert set(contexts) == set(tokens_of)
    first = min(contexts)
    labelled = sorted((r for r in rows if r["context_id"] == first), key=lambda r: r["position"])
    direct = CausalLM(str(tiny_llama)).top_k([tokens_of[first]], 4)[0]
    assert [r["topk_ids"] for r in labelled] == direct.ids.tolist()

    with pytest.raises(ConfigError, match="soft_labels"):
        parse_config({"output": {"soft_labels": {"enabled": True}}})


def test_traps_commands_generate_score_and_test_membership(salt_run, tiny_llama, tmp_path):
    runner = CliRunner()
    ledger = salt_run["root"] / "first" / "traps" / "ledger.parquet"
    rows = pq.read_table(ledger).to_pylist()
    # A trained model that memorised the members: lower loss on members, the reference sees no difference.
    target = [{"trap_id": r["trap_id"], "n_tokens": 8, "mean_nll": 2.0 if r["role"] == "member" else 4.0} for r in rows]
    reference = [{"trap_id": r["trap_id"], "n_tokens": 8, "mean_nll": 4.0} for r in rows]
    for name, table in (("target", target), ("reference", reference)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table), encoding="utf-8")
    result = runner.invoke(
        app,
        ["traps", "test", "--ledger", str(ledger), "--losses", str(tmp_path / "target.jsonl"), "--reference",
         str(tmp_path / "reference.jsonl"), "--resamples", "50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()[1:]]
    assert {line[0] for line in lines} == {"loss", "ratio"}
    cells = {(int(line[1]), int(line[2])) for line in lines}
    assert cells == {(row["seq_len"], row["n_rep"]) for row in rows}  # one line per length and repetitions
    scored = [line for line in lines if int(line[4]) > 0]  # cells with both members and controls
    assert scored and all(float(line[5]) == 1.0 for line in scored)  # members always below controls: AUC 1

    losses = tmp_path / "losses.parquet"
    result = runner.invoke(
        app, ["traps", "losses", "--ledger", str(ledger), "--model", str(tiny_llama), "-o", str(losses)]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(losses).to_pylist()
    assert [r["trap_id"] for r in table] == [r["trap_id"] for r in rows]
    assert all(r["n_tokens"] == len(r["token_logprobs"]) > 0 for r in table)

    settings = {"inject": {"traps": {"model": str(tiny_llama), "seq_lens": [6], "ppl_range": [1, 100000],
                                     "per_seq_len": 100000, "batch_size": 8, "max_candidates": 16}}}  # fmt: skip
    (tmp_path / "gen.yaml").write_text(json.dumps(settings), encoding="utf-8")
    generated = tmp_path / "generated.parquet"
    result = runner.invoke(app, ["traps", "generate", "-c", str(tmp_path / "gen.yaml"), "-o", str(generated)])
    assert result.exit_code == 0, result.output
    traps = pq.read_table(generated).to_pylist()
    assert 0 < len(traps) <= 16 and all(t["seq_len"] == 6 == len(t["token_ids"]) for t in traps)
    assert all(t["generator"].startswith("tiny_llama") for t in traps)
    again = tmp_path / "again.parquet"
    assert runner.invoke(app, ["traps", "generate", "-c", str(tmp_path / "gen.yaml"), "-o", str(again)]).exit_code == 0
    assert pq.read_table(again).equals(pq.read_table(generated))  # seeded: the same traps again
