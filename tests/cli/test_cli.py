"""The CLI as a user runs it: `winnow run` on the bundled sample, config commands, errors."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from winnow.cli.main import app

runner = CliRunner()


def test_winnow_run_with_no_arguments_runs_the_bundled_sample(default_sample_run):
    """The Quick start's job: bundled config, bundled sample, ./winnow-out, summary printed."""
    done = default_sample_run
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.cwd / "winnow-out"
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input"] > 1000
    assert counts["duplicate"] > 0
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    # the default run mixes into two phase shard sets, ordered (ICP) and packed into contexts
    assert manifest["ordered"] is True
    assert {p.name for p in (out / "data").iterdir()} == {"phase=base", "phase=final"}
    assert list((out / "data" / "phase=final").glob("part-*-of-*.parquet"))
    assert list((out / "contexts").glob("part-*.parquet"))
    assert list((out / "removed").glob("part-*.parquet"))
    assert {"domains", "mixture", "ordering", "packing"} <= set(manifest)
    assert "accounting: input == kept + filtered + duplicate + rejected" in done.stdout
    assert f"{counts['kept']:,}" in done.stdout
    # The sample is small: the default auto mode runs it in one process, and says so.
    assert manifest["local_runner"] == {"mode": "in_memory", "workers": 1}
    assert "local runner: one in-memory process" in done.stdout


def test_config_show_prints_a_complete_valid_config(tmp_path: Path):
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert {"inputs", "output", "runner", "normalize", "dedup"} <= set(shown)
    path = tmp_path / "shown.yaml"
    path.write_text(result.output)
    assert runner.invoke(app, ["config", "validate", str(path)]).exit_code == 0


def test_config_validate_names_the_bad_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("dedup:\n  exact:\n    enabled: maybe\n")
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert "dedup.exact.enabled" in result.output


def test_empty_glob_and_unknown_stage_fail_with_a_clear_message(tmp_path: Path):
    result = runner.invoke(app, ["run", "-i", str(tmp_path / "*.jsonl"), "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2 and "glob matched no files" in result.output
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    result = runner.invoke(app, ["run", "-i", str(tmp_path / "a.jsonl"), "--stages", "dedupe", "-q"])
    assert result.exit_code == 2 and "unknown stage(s) dedupe" in result.output


def test_config_reference_covers_every_section():
    result = runner.invoke(app, ["config", "reference"])
    assert result.exit_code == 0
    for key in (
        "`inputs[].fields.text`",
        "`output.shards.target_bytes`",
        "`dedup.exact.keep`",
        "`normalize.unicode_form`",
    ):
        assert key in result.output
