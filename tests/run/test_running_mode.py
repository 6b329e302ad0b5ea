"""``runner.direct_running_mode: auto``: one in-memory process unless heavy stages meet enough input."""

from __future__ import annotations

from pathlib import Path

import pytest

from winnow.config import parse_config
from winnow.run import execute
from winnow.run.execute import local_running_mode, pipeline_options
from winnow.run.registry import STAGES


def config(tmp_path: Path, size: int, **runner: object):
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "in" / "docs.jsonl"
    path.write_bytes(b" " * size)
    return parse_config({"inputs": [{"paths": [str(path)]}], "runner": runner}, origin="<test>")


def chosen(options) -> tuple[str, int]:
    values = options.get_all_options()
    return values["direct_running_mode"], values["direct_num_workers"]


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute.os, "cpu_count", lambda: 2)


def test_light_stages_run_in_one_process_whatever_the_size(tmp_path: Path) -> None:
    big = config(tmp_path, 3_000_000, auto_in_memory_mb=1)
    light = [STAGES["normalize"], STAGES["dedup"]]
    assert local_running_mode(big, light) == "in_memory"
    assert chosen(pipeline_options(big, [], light)) == ("in_memory", 1)


def test_heavy_stages_get_worker_processes_above_the_threshold(tmp_path: Path) -> None:
    heavy = [STAGES["normalize"], STAGES["score"]]
    small = config(tmp_path / "a", 500_000, auto_in_memory_mb=1)
    big = config(tmp_path / "b", 1_500_000, auto_in_memory_mb=1)
    assert chosen(pipeline_options(small, [], heavy)) == ("in_memory", 1)
    assert chosen(pipeline_options(big, [], heavy)) == ("multi_processing", 2)
    assert {name for name, spec in STAGES.items() if spec.heavy} >= {"filter", "score", "tag"}


def test_one_core_always_runs_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute.os, "cpu_count", lambda: 1)
    assert local_running_mode(config(tmp_path, 2_000_000, auto_in_memory_mb=1), [STAGES["score"]]) == "in_memory"


def test_an_explicit_mode_wins_over_auto(tmp_path: Path) -> None:
    heavy = [STAGES["score"]]
    small = config(tmp_path / "a", 100, auto_in_memory_mb=1)
    assert chosen(pipeline_options(small, ["--direct_running_mode=multi_processing"], heavy)) == ("multi_processing", 2)
    spaced = pipeline_options(small, ["--direct_running_mode", "multi_processing"], heavy)
    assert chosen(spaced)[0] == "multi_processing"
    fixed = config(tmp_path / "b", 100, direct_running_mode="multi_processing", direct_num_workers=3)
    assert chosen(pipeline_options(fixed, [], heavy)) == ("multi_processing", 3)
    # CLI arguments come last: a worker count given there is Beam's, whatever auto chose.
    assert chosen(pipeline_options(small, ["--direct_num_workers=4"], heavy)) == ("in_memory", 4)


def test_without_a_stage_list_the_enabled_stages_decide(tmp_path: Path) -> None:
    heavy_off = {name: {"enabled": False} for name, spec in STAGES.items() if spec.heavy}
    data = {"inputs": [{"paths": [str(tmp_path / "docs.jsonl")]}], "runner": {"auto_in_memory_mb": 1}}
    (tmp_path / "docs.jsonl").write_bytes(b" " * 2_000_000)
    assert chosen(pipeline_options(parse_config(data, origin="<test>"))) == ("multi_processing", 2)
    light = parse_config({**data, **heavy_off}, origin="<test>")
    assert chosen(pipeline_options(light)) == ("in_memory", 1)
