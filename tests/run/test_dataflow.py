"""Dataflow readiness, offline: the job translates, DoFns pickle, paths exist on workers, the package builds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import apache_beam as beam
import pytest
from conftest import DATA, make_config
from typer.testing import CliRunner

from winnow.cli.main import app
from winnow.run.dataflow import (
    WorkerPathError,
    build_job,
    check_worker_paths,
    pickled_dofns,
    resolve_worker_path,
    worker_path_problems,
)
from winnow.run.execute import pipeline_options
from winnow.run.graph import build_pipeline
from winnow.run.refresh import refresh_stages

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "gs://winnow-test-bucket"
# Valid-looking Dataflow options; --dry_run builds and translates the whole job without a network.
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=winnow-test-project",
    "--region=europe-west4",
    f"--temp_location={BUCKET}/tmp",
    f"--staging_location={BUCKET}/staging",
    "--job_name=winnow-offline-test",
    "--sdk_container_image=europe-west4-docker.pkg.dev/winnow-test-project/winnow/winnow:0.1.0",
    "--no_auth",
    "--dry_run=True",
]


def dataflow_config(tmp_path: Path):
    return make_config([str(DATA / "readers" / "sample.jsonl")], f"{BUCKET}/out")


def test_the_job_builds_and_translates_for_dataflow_with_its_options(tmp_path: Path):
    pipeline, options = build_job(dataflow_config(tmp_path), DATAFLOW)
    assert options.get_all_options()["runner"] == "DataflowRunner"
    assert "direct_num_workers" not in " ".join(options.get_all_options(drop_default=True))
    result = pipeline.run()  # DataflowRunner: overrides, runner API proto, job description; not submitted
    proto = result.job.proto_pipeline
    labels = {t.unique_name for t in proto.components.transforms.values()}
    for label in ("Read", "normalize", "dedup", "WriteData", "WriteRemoved", "WriteRejected", "WriteSummary"):
        assert label in labels
    images = {env.payload for env in proto.components.environments.values()}
    assert any(b"winnow/winnow:0.1.0" in payload for payload in images)
    assert result.job.proto.name == "winnow-offline-test"
    # The portable proto (what Flink/Spark job servers receive) round-trips too.
    rebuilt = beam.Pipeline.from_runner_api(proto, beam.runners.DataflowRunner(), options)
    assert rebuilt.to_runner_api().components.transforms


def test_every_dofn_of_a_refresh_graph_pickles_small(tmp_path: Path):
    """Refresh adds the cross-version join and the accepted-hash writer: all must travel to workers."""
    config = dataflow_config(tmp_path)
    accepted = [f"{BUCKET}/state/hashes/v0001/part-00000-of-00001.parquet"]
    stages = refresh_stages(config, None, accepted, 2, f"{BUCKET}/state/_staging/v0002")
    pipeline = beam.Pipeline(options=pipeline_options(config, DATAFLOW))
    build_pipeline(pipeline, config, stages, f"{BUCKET}/out/v0002/_staging")
    sizes = pickled_dofns(pipeline)
    assert any("DropAccepted" in label for label in sizes) and any("AcceptedRows" in label for label in sizes)
    assert any(label.startswith("Read/") for label in sizes)
    heavy = {label: size for label, size in sizes.items() if size > 200_000}
    assert heavy == {}, f"DoFns that capture large state: {heavy}"
    result = pipeline.run()
    assert len(result.job.proto_pipeline.components.transforms) > 100


def test_dataflow_refuses_paths_that_only_this_machine_has(tmp_path: Path):
    local = make_config([str(DATA / "readers" / "sample.jsonl")], tmp_path / "out")
    options = pipeline_options(local, DATAFLOW)
    with pytest.raises(WorkerPathError) as error:
        check_worker_paths(local, options, state_dir=str(tmp_path / "state"))
    message = str(error.value)
    assert "inputs[0].paths" in message and "output.dir" in message and "--state" in message
    remote = make_config([f"{BUCKET}/crawl/*.jsonl.gz"], f"{BUCKET}/out")
    check_worker_paths(remote, pipeline_options(remote, DATAFLOW), state_dir=f"{BUCKET}/state")
    check_worker_paths(local, pipeline_options(local, []))  # local runners share this disk


def test_only_switched_on_stages_have_their_paths_checked():
    """inject is off by default, so its default trap model is not a problem; switched on with a local
    folder it is, and the packaged small LM never is."""
    remote = make_config([f"{BUCKET}/crawl/*.jsonl.gz"], f"{BUCKET}/out")
    assert worker_path_problems(remote) == []
    for enabled, model, flagged in (
        (True, "/home/me/llama", True),
        (False, "/home/me/llama", False),
        (True, "winnow:smollm2-135m", False),
    ):
        inject = {"enabled": enabled, "traps": {"source": "generate", "model": model}}
        config = make_config([f"{BUCKET}/crawl/*.jsonl.gz"], f"{BUCKET}/out", inject=inject)
        assert worker_path_problems(config) == (["inject.traps.model: /home/me/llama"] if flagged else [])


def test_models_resolve_from_package_data_or_a_remote_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    packaged = Path(resolve_worker_path("package:data/default.yaml"))
    assert packaged.is_file() and packaged.parent.parent.name == "winnow"
    assert Path(resolve_worker_path("data/default.yaml")) == packaged
    with pytest.raises(FileNotFoundError):
        resolve_worker_path("package:data/models/no-such-model.bin")
    # A gs:// model is copied once per worker into a local cache (FileSystems stands in for GCS here).
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 1000)
    opened = []

    def fake_open(path: str, **_: object):
        opened.append(path)
        return open(model, "rb")

    monkeypatch.setattr("winnow.run.dataflow.FileSystems.open", fake_open)
    first = resolve_worker_path(f"{BUCKET}/models/model.bin", cache_dir=str(tmp_path / "cache"))
    second = resolve_worker_path(f"{BUCKET}/models/model.bin", cache_dir=str(tmp_path / "cache"))
    assert first == second and Path(first).read_bytes() == model.read_bytes() and len(opened) == 1


def test_cli_and_flex_template_entry_build_the_dataflow_job(tmp_path: Path):
    sample = str(DATA / "readers" / "sample.jsonl")
    result = CliRunner().invoke(app, ["run", "-q", "-i", sample, "-o", str(tmp_path / "out"), *DATAFLOW])
    assert result.exit_code == 0, result.output
    assert "dry run: the job was built and translated" in result.output
    assert "warning (dry run)" in result.output and "output.dir" in result.output  # local paths flagged
    assert not (tmp_path / "out" / "manifest.json").exists()
    # The Flex Template launcher's entry point: same job, submit-only.
    entry = [sys.executable, "-m", "winnow.cli.flex_template", "--command=run", f"--input={sample}"]
    done = subprocess.run(
        [*entry, f"--output={BUCKET}/o", *DATAFLOW],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: the job was built and translated" in done.stdout


def test_flex_template_files_match_the_entry_point():
    metadata = json.loads((ROOT / "deploy" / "flex-template" / "metadata.json").read_text())
    names = {p["name"] for p in metadata["parameters"]}
    assert names == {"command", "config", "state", "input", "output"}
    dockerfile = (ROOT / "deploy" / "flex-template" / "Dockerfile").read_text()
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/winnow/winnow/cli/flex_template.py" in dockerfile
    assert "apache/beam_python3.11_sdk:2.77.0" in dockerfile  # the pinned Beam, as workers need
    compile((ROOT / "deploy" / "airflow" / "winnow_weekly_refresh.py").read_text(), "dag.py", "exec")


def test_package_builds_as_wheel_and_sdist_with_its_data(tmp_path: Path):
    """What a worker installs (--extra_package / the image's pip install): code, configs, models, sample."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "winnow", source / "winnow", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = "from setuptools import build_meta as b; b.build_wheel('dist'); b.build_sdist('dist')"
    done = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next((source / "dist").glob("winnow-*.whl"))
    assert next((source / "dist").glob("winnow-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(p.relative_to(source)) for p in (source / "winnow").rglob("*") if p.is_file() and p.suffix != ".pyc"
    }
    assert expected <= names, sorted(expected - names)[:10]
    for required in ("winnow/run/refresh.py", "winnow/run/dataflow.py", "winnow/data/default.yaml"):
        assert required in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "winnow = winnow.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
