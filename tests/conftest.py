"""Shared fixtures: small, fast local runs of the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from winnow.config import WinnowConfig, parse_config
from winnow.run.execute import RunResult, run_pipeline

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@dataclass(frozen=True)
class SampleRun:
    """The README's main job as a user runs it: ``winnow run`` with no arguments, in a fresh process."""

    cwd: Path
    out: Path
    stdout: str
    stderr: str
    returncode: int


@pytest.fixture(scope="session")
def default_sample_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SampleRun:
    """One run of the default pipeline on the bundled sample, shared by every test that checks what it writes
    (the command's output, the token files, the same bytes in a second process): it is the suite's
    most expensive run, so it happens once, also when pytest-xdist spreads the suite over workers
    (the first worker to ask runs it under a lock in the shared temp root; the others read its result)."""
    if worker_id == "master":
        return _run_default(tmp_path_factory.mktemp("default-sample-run"))
    shared = tmp_path_factory.getbasetemp().parent
    with FileLock(str(shared / "default-sample-run.lock")):
        record = shared / "default-sample-run.json"
        if record.exists():
            fields = json.loads(record.read_text())
            return SampleRun(Path(fields["cwd"]), Path(fields["out"]), *fields["streams"], fields["returncode"])
        cwd = shared / "default-sample-run"
        cwd.mkdir()
        done = _run_default(cwd)
        fields = {"cwd": str(done.cwd), "out": str(done.out), "streams": [done.stdout, done.stderr]}
        record.write_text(json.dumps({**fields, "returncode": done.returncode}))
        return done


def _run_default(cwd: Path) -> SampleRun:
    env = {**os.environ, "COLUMNS": "200", "PYTHONHASHSEED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "winnow.cli.main", "run"], cwd=cwd, capture_output=True, text=True, env=env
    )
    return SampleRun(cwd, cwd / "winnow-out", done.stdout, done.stderr, done.returncode)


def make_config(inputs: list[dict[str, Any]] | list[str], out_dir: Path, **sections: Any) -> WinnowConfig:
    """A config for tests: in-memory runner with one worker (fast start), small shards."""
    specs = [{"paths": [str(p)]} if not isinstance(p, dict) else p for p in inputs]
    data: dict[str, Any] = {
        "inputs": specs,
        "output": {"dir": str(out_dir), "shards": {"target_bytes": 1_000_000}},
        "runner": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
        # Foundation baseline: read → extract → normalize → exact dedup → write. Tests of
        # the content stages (langid, filter, MinHash) turn them on explicitly.
        "langid": {"enabled": False},
        "filter": {"enabled": False},
        "dedup": {"minhash": {"enabled": False}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = _merge(data[key], value)
        else:
            data[key] = value
    return parse_config(data, origin="<test>")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def run(config: WinnowConfig, stages: list[str] | None = None) -> RunResult:
    return run_pipeline(config, stages)


# In-process sinks for collecting pipeline output in tests. Beam pickles DoFns, so a
# closure over a test's list would fill a copy; a module-level registry survives that
# because the in-memory runner unpickles functions from this module by reference.
SINKS: dict[str, list[Any]] = {}


def collect(pcoll: Any, name: str) -> list[Any]:
    """Collect ``pcoll`` into a list that is filled once the pipeline has run (in-memory runner)."""
    import apache_beam as beam

    sink = SINKS.setdefault(name, [])
    sink.clear()
    pcoll | f"Collect_{name}" >> beam.Map(_append, name)
    return sink


def _append(element: Any, name: str) -> None:
    SINKS[name].append(element)


def local_pipeline() -> Any:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    return beam.Pipeline(
        options=PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    )


def run_stage(transform: Any, docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Run one stage transform on ``docs`` with the local runner; its three outputs (and its
    ``summary`` when it has one), as JSON round-tripped lists through files so any runner mode
    works, and its committed counters."""
    import json
    import uuid

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out_dir = tmp_path / f"out-{uuid.uuid4().hex}"
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    result = pipeline | beam.Create(docs, reshuffle=False) | transform
    names = [name for name in ("kept", "removed", "rejected", "summary") if name in result]
    for name in names:
        _ = (
            result[name]
            | f"{name}/json" >> beam.Map(lambda d: json.dumps(d, default=repr, sort_keys=True))
            | f"{name}/write" >> beam.io.WriteToText(str(out_dir / name))
        )
    outcome = pipeline.run()
    outcome.wait_until_finish()
    outputs: dict[str, Any] = {
        name: [json.loads(line) for path in out_dir.glob(f"{name}*") for line in path.read_text().splitlines()]
        for name in names
    }
    outputs["counters"] = {c.key.metric.name: c.committed for c in outcome.metrics().query()["counters"]}
    return outputs
