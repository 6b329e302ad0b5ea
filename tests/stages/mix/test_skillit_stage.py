"""``mix.skillit`` wired into the mix stage and the CLI (docs/skill-it.md): a plan becomes the schedule in the
stage's driver-side ``prepare`` step and is realised round by round; config errors name the bad key;
``winnow mix skillit-graph`` and ``winnow mix skillit-step`` do what the core functions do."""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import yaml
from conftest import DATA, collect, local_pipeline
from typer.testing import CliRunner

from winnow.beam.contract import KEPT, REMOVED
from winnow.cli.mix import mix_app
from winnow.config import ConfigError, parse_config
from winnow.stages.mix.config import MixConfig
from winnow.stages.mix.skillit import (
    SkillGraph,
    Unit,
    estimate_graph,
    load_graph,
    read_loss_table,
    skillit_mixtures,
    skillit_step_files,
)
from winnow.stages.mix.skillit_config import SkillitConfig
from winnow.stages.mix.stage import NOT_SELECTED, SPEC, SUMMARY, Mix

ROUNDS = 4


@pytest.fixture(scope="module")
def pool() -> list[dict[str, Any]]:
    with gzip.open(DATA / "mix" / "weborganizer_pool.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [
        {"id": r["id"], "text": "", "url": None, "source": "weborganizer-dclm", "metadata": {}, "topic": r["topic"]}
        | {"n_tokens": r["n_tokens"]}
        for r in rows
    ]


@pytest.fixture(scope="module")
def plan_files(pool, tmp_path_factory) -> dict[str, Any]:
    """A graph over 23 of the pool's 24 topics (JSON, so it names them) and a proxy's loss table."""
    folder = tmp_path_factory.mktemp("skillit")
    topics = sorted({d["topic"] for d in pool})
    skills, left_out = topics[:-1], topics[-1]
    rng = np.random.default_rng(4)
    matrix = np.eye(len(skills)) + 0.5 * (rng.random((len(skills), len(skills))) < 0.15)
    graph = SkillGraph(tuple(skills), tuple(skills), np.minimum(matrix, 1.0))
    (folder / "graph.json").write_text(json.dumps(graph.to_json()))
    with open(folder / "losses.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "step", *(f"loss_{s}" for s in skills)])
        for round_index in range(ROUNDS - 1):
            for step in (0, 50):
                writer.writerow([round_index, step, *rng.uniform(2.5, 3.5, len(skills)).round(4).tolist()])
    return {"graph": graph, "skills": skills, "left_out": left_out, "folder": folder}


def skillit_section(plan_files: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    folder = plan_files["folder"]
    return {
        "mode": "plan",
        "graph": str(folder / "graph.json"),
        "losses": str(folder / "losses.csv"),
        "rounds": ROUNDS,
        "eta": 0.2,
        "window": 3,
        **overrides,
    }


def run_mix(transform: Mix, docs: list[dict[str, Any]]) -> dict[str, list]:
    pipeline = local_pipeline()
    result = pipeline | beam.Create(docs, reshuffle=False) | transform
    sinks = {name: collect(result[name], f"skillit_{name}") for name in (KEPT, REMOVED, SUMMARY)}
    pipeline.run().wait_until_finish()
    return {name: list(rows) for name, rows in sinks.items()}


def test_plan_becomes_the_schedule_in_prepare_and_each_round_is_realised(pool, plan_files) -> None:
    per_round = 120_000
    config = MixConfig(
        enabled=True, domain_field="topic", skillit=skillit_section(plan_files, tokens_per_round=per_round)
    )
    prepared = SPEC.prepare(config)  # the explicit driver-side step, before any graph is built
    stage = SPEC.transform(config, seed=0, tokenizer=None, **prepared)
    cfg = SkillitConfig(**skillit_section(plan_files))
    checkpoints = read_loss_table(plan_files["folder"] / "losses.csv", plan_files["skills"])
    direct = skillit_mixtures(plan_files["graph"], checkpoints, cfg)
    schedule = stage.config.schedule
    assert [p.name for p in schedule] == [f"skillit-{t}" for t in range(ROUNDS)]
    assert [(p.start_fraction, p.end_fraction) for p in schedule] == [(t / 4, (t + 1) / 4) for t in range(4)]
    assert [p.weights.manual for p in schedule] == [m.weights for m in direct]
    assert stage.config.budget == per_round * ROUNDS and stage.config.skillit is None

    out = run_mix(stage, pool)
    tokens: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for doc in out[KEPT]:
        tokens[doc["phase"]][doc["topic"]] += doc["n_tokens"]
    largest = max(d["n_tokens"] for d in pool)
    for phase, mixture in zip(schedule, direct, strict=True):
        realised = tokens[phase.name]
        total = sum(realised.values())
        assert abs(total - per_round) <= len(plan_files["skills"]) * largest  # one document per domain at most
        assert plan_files["left_out"] not in realised  # not a skill: weight 0
        for skill, p in mixture.weights.items():
            assert abs(realised.get(skill, 0) / total - p) <= max(0.005, largest / total), (phase.name, skill)
    domains = [r for r in out[SUMMARY] if r["kind"] == "domain"]
    assert not any(r["unmet_tokens"] for r in domains)  # the pool covers every round: shares are exact
    assert max(max(m.weights.values()) for m in direct) > 2 * min(min(m.weights.values()) for m in direct)
    removed = {d["topic"] for d in out[REMOVED]}
    assert plan_files["left_out"] in removed and all(d["reason"] == NOT_SELECTED for d in out[REMOVED])

    rounds = sorted((r for r in out[SUMMARY] if r["kind"] == "skillit_round"), key=lambda r: r["round"])
    assert [r["phase"] for r in rounds] == [p.name for p in schedule]
    assert [r["weights"] for r in rounds] == [m.weights for m in direct]
    assert [r["eta"] for r in rounds] == [m.eta for m in direct] and rounds[0]["window_losses"] is None
    assert rounds[1]["window_losses"] == direct[1].window_losses
    (settings,) = [r for r in out[SUMMARY] if r["kind"] == "skillit"]
    assert settings["graph"] == plan_files["graph"].to_json() and 0 < settings["graph_density"] < 1


def test_the_stage_refuses_a_plan_it_was_not_given(plan_files) -> None:
    config = MixConfig(enabled=True, domain_field="topic", skillit=skillit_section(plan_files))
    with pytest.raises(ValueError, match="prepare_mix"):
        Mix(config)


def parse_mix(section: dict[str, Any]) -> Any:
    return parse_config({"mix": {"enabled": True, "domain_field": "topic", **section}})


def test_config_errors_name_the_bad_key(plan_files) -> None:
    skillit = skillit_section(plan_files)
    cases = [
        ({"skillit": {**skillit, "etaa": 1}}, r"mix\.skillit\.etaa: unknown key"),
        ({"skillit": {**skillit, "mode": "step"}}, r"mix: .*skillit\.mode: `step` runs between training rounds"),
        ({"skillit": skillit, "weights": {"manual": {"a": 1}}}, r"mix: .*remove weights"),
        ({"skillit": {**skillit, "graph": "g.npy"}}, r"mix: .*skillit\.skills"),
        ({"skillit": {**skillit, "tokens_per_round": 10}, "budget": 50}, r"skillit\.tokens_per_round"),
        ({"skillit": {**skillit, "losses": None}}, r"mix\.skillit: .*losses"),
    ]
    for section, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_mix(section)
    # What only the files can tell is checked in the prepare step, still naming the key.
    wrong = parse_mix({"skillit": {**skillit, "skills": ["a", "b"]}})
    with pytest.raises(ValueError, match=r"mix\.skillit\.skills"):
        SPEC.prepare(wrong.mix)
    short = parse_mix({"skillit": {**skillit, "rounds": ROUNDS + 2}})
    with pytest.raises(ValueError, match=r"mix\.skillit: .*rounds need the checkpoints"):
        SPEC.prepare(short.mix)
    # Step mode is allowed in a config whose mix stage does not run: `winnow mix skillit-step` reads it.
    assert parse_config({"mix": {"skillit": {**skillit, "mode": "step"}}}).mix.skillit.mode == "step"


def write_runs(path: Path, skills: list[str], rows: list[tuple[dict[str, float], dict[str, float]]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", *skills, *(f"loss_{s}" for s in skills)])
        for i, (weights, losses) in enumerate(rows):
            writer.writerow([f"r{i}", *(weights.get(s, 0.0) for s in skills), *(losses[s] for s in skills)])


def test_skillit_graph_command_estimates_and_writes_a_loadable_graph(tmp_path) -> None:
    skills = ["a", "b", "c"]
    base = {"a": 4.0, "b": 4.0, "c": 4.0}
    rows = [
        ({}, base),
        ({"a": 1.0}, {"a": 2.0, "b": 3.0, "c": 4.0}),  # a helps b
        ({"b": 1.0}, {"a": 4.0, "b": 2.0, "c": 3.6}),  # b helps c a little
        ({"c": 1.0}, {"a": 4.2, "b": 4.0, "c": 2.0}),
    ]
    write_runs(tmp_path / "runs.csv", skills, rows)
    expected = estimate_graph(tmp_path / "runs.csv", skills).graph
    assert expected.matrix[0, 1] == 0.25 and expected.matrix[2, 0] == 0.0
    for suffix in ("json", "csv"):
        result = CliRunner().invoke(
            mix_app, ["skillit-graph", "--runs", str(tmp_path / "runs.csv"), "--output", str(tmp_path / f"g.{suffix}")]
        )
        assert result.exit_code == 0, result.output
        loaded = load_graph(tmp_path / f"g.{suffix}")
        assert loaded.train == ("a", "b", "c") and loaded.matrix.tolist() == expected.matrix.tolist()
    assert "density" in result.output
    saved = json.loads((tmp_path / "g.json").read_text())
    assert saved["rule"] == "linear" and saved["runs"] == 4
    brute_args = ["--rule", "brute_force", "--skill", "a", "--skill", "b"]
    brute = CliRunner().invoke(
        mix_app,
        ["skillit-graph", "--runs", str(tmp_path / "runs.csv"), "--output", str(tmp_path / "b.json"), *brute_args],
    )
    assert brute.exit_code == 0, brute.output
    assert "2 pair(s) without runs" in brute.output  # {a, b} was never trained: left at 0, and said so
    assert json.loads((tmp_path / "b.json").read_text())["untested"] == [["b", "a"], ["a", "b"]]
    bad = CliRunner().invoke(mix_app, ["skillit-graph", "--runs", str(tmp_path / "no.csv"), "--output", "x.json"])
    assert bad.exit_code == 2


def test_skillit_step_command_answers_each_round_from_the_posted_losses(tmp_path) -> None:
    skills = ("a", "b", "c")
    graph = SkillGraph(skills, skills, np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    (tmp_path / "graph.json").write_text(json.dumps(graph.to_json()))
    units = [Unit(f"{s}-{i:03d}", s, 40 + 13 * i % 50) for s in skills for i in range(50)]
    with open(tmp_path / "units.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["unit", "skill", "tokens"])
        writer.writerows([u.unit, u.skill, u.tokens] for u in units)
    skillit = {"mode": "step", "rounds": 3, "tokens_per_round": 1200, "graph": str(tmp_path / "graph.json")}
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump({"seed": 7, "mix": {"skillit": skillit}}))
    args = ["skillit-step", "--config", str(config_path), "--catalogue", str(tmp_path / "units.csv")]
    args += ["--state", str(tmp_path / "state.json"), "--output", str(tmp_path / "round.json")]
    first = CliRunner().invoke(mix_app, [*args, "--round", "0"])
    assert first.exit_code == 0, first.output
    round0 = json.loads((tmp_path / "round.json").read_text())
    (tmp_path / "losses.json").write_text(json.dumps([{"a": 2.0, "b": 3.0, "c": 3.9}, {"a": 1.5, "b": 2.9, "c": 3.9}]))
    second = CliRunner().invoke(mix_app, [*args, "--round", "1", "--losses", str(tmp_path / "losses.json")])
    assert second.exit_code == 0, second.output
    round1 = json.loads((tmp_path / "round.json").read_text())
    assert json.loads(second.stdout) == round1["weights"]

    cfg = SkillitConfig(**skillit)
    direct_state = tmp_path / "direct.json"
    common = {"catalogue": tmp_path / "units.csv", "state": direct_state, "output": tmp_path / "d.json", "seed": 7}
    assert skillit_step_files(cfg, round_index=0, **common) == round0
    assert skillit_step_files(cfg, round_index=1, losses=tmp_path / "losses.json", **common) == round1
    assert round1["weights"] != round0["weights"] and round1["window_losses"]["a"] == 3.5
    assert not {u["unit"] for u in round0["shards"]} & {u["unit"] for u in round1["shards"]}
    assert math.isclose(sum(round1["weights"].values()), 1.0)

    plan_config = tmp_path / "plan.yaml"
    plan_config.write_text(yaml.safe_dump({"mix": {"skillit": {**skillit, "mode": "plan", "rounds": 1}}}))
    refused = CliRunner().invoke(mix_app, ["skillit-step", "--config", str(plan_config), *args[3:], "--round", "0"])
    assert refused.exit_code == 2 and "mode `plan`" in refused.output
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"mix": {"skillit": {**skillit, "round": 3}}}))
    result = CliRunner().invoke(mix_app, ["skillit-step", "--config", str(typo), *args[3:], "--round", "0"])
    assert result.exit_code == 2 and "mix.skillit.round: unknown key" in result.output
