"""`winnow run` refuses unusable eval sets and blocklists before any data moves (exit 2, clear message)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from winnow.cli.main import app

runner = CliRunner()


def config_file(tmp_path: Path, **sections: object) -> Path:
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "text": "Some text to run through the pipeline."}) + "\n")
    data = {
        "inputs": [{"paths": ["in.jsonl"]}],
        "output": {"dir": str(tmp_path / "out")},
        "runner": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
        **sections,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["run", "-c", str(path), "--stages", "normalize,filter,decontaminate", "-q"])
    return result.exit_code, " ".join(result.output.split())


def test_eval_file_without_a_usable_item_stops_the_run(tmp_path: Path) -> None:
    evals = tmp_path / "tiny.jsonl"
    evals.write_text(json.dumps({"text": "What is two plus two?"}) + "\n")
    code, output = run(config_file(tmp_path, decontaminate={"eval_files": [str(evals)]}))
    assert code == 2
    assert f"eval file {evals}: no usable item: 1 item(s), none has 13 or more words" in output
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_eval_glob_matching_nothing_and_malformed_eval_file_stop_the_run(tmp_path: Path) -> None:
    code, output = run(config_file(tmp_path, decontaminate={"eval_files": [str(tmp_path / "evals" / "*.jsonl")]}))
    assert code == 2 and "matches no file" in output
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json at all\n")
    code, output = run(config_file(tmp_path, decontaminate={"eval_files": [str(broken)]}))
    assert code == 2 and f"eval file {broken}: line 1 is not JSON" in output


def test_missing_or_empty_blocklist_stops_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "ut1" / "adult" / "domains"
    code, output = run(config_file(tmp_path, filter={"url_blocklist": {"files": [str(missing)]}}))
    assert code == 2 and f"blocklist {missing}: cannot be read" in output
    empty = tmp_path / "empty-list"
    empty.write_text("# comments only\n")
    code, output = run(config_file(tmp_path, filter={"url_blocklist": {"files": [str(empty)]}}))
    assert code == 2 and "holds no entry" in output
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_keys_of_the_new_sections_are_named(tmp_path: Path) -> None:
    for section, key in (
        ({"pii": {"replacement": "<{TYPE}>"}}, "pii.replacement"),
        ({"decontaminate": {"ngrams": 13}}, "decontaminate.ngrams: unknown key"),
        ({"filter": {"url_blocklist": {"files": ["x"], "match": "tld"}}}, "filter.url_blocklist.match"),
        ({"dedup": {"paragraph": {"min_chars": 0}}}, "dedup.paragraph.min_chars"),
        ({"dedup": {"minhash": {"text_similarity": "cosine"}}}, "dedup.minhash.text_similarity"),
    ):
        path = config_file(tmp_path, **section)
        result = runner.invoke(app, ["config", "validate", str(path)])
        assert result.exit_code == 2 and key in result.output, (key, result.output)
