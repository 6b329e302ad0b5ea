from pathlib import Path

import pytest

from winnow.config import ConfigError, WinnowConfig, default_config_path, load_config, parse_config


def test_unknown_key_names_its_yaml_path():
    with pytest.raises(ConfigError) as error:
        parse_config({"inputs": [{"paths": ["x.jsonl"], "feilds": {}}]})
    assert "inputs[0].feilds: unknown key" in str(error.value)


def test_nested_unknown_key_and_wrong_type_are_both_reported():
    with pytest.raises(ConfigError) as error:
        parse_config({"dedup": {"exact": {"keep": "random"}}, "output": {"shards": {"target_rows": "many"}}})
    message = str(error.value)
    assert "dedup.exact.keep" in message
    assert "output.shards.target_rows" in message


def test_yaml_file_errors_name_the_file_and_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("normalize:\n  enabled: true\n  unicode: NFC\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value) and "normalize.unicode: unknown key" in str(error.value)


def test_top_level_must_be_a_mapping(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_relative_input_paths_resolve_against_the_config_file(tmp_path: Path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "run.yaml"
    path.write_text("inputs:\n  - paths: ['../data/*.jsonl', '/abs/x.jsonl', 'gs://bucket/y.jsonl']\n")
    config = load_config(path)
    assert config.inputs[0].paths == [str(tmp_path / "data" / "*.jsonl"), "/abs/x.jsonl", "gs://bucket/y.jsonl"]


def test_default_config_is_valid_and_points_at_the_bundled_sample():
    config = load_config(default_config_path())
    assert config.inputs, "default config must have inputs"
    for spec in config.inputs:
        for path in spec.paths:
            assert Path(path).exists(), path


def test_content_hash_ignores_runner_but_not_stage_settings():
    base = WinnowConfig()
    other_runner = WinnowConfig(runner={"direct_num_workers": 7})
    other_stage = WinnowConfig(normalize={"unicode_form": "NFKC"})
    assert base.content_hash() == other_runner.content_hash()
    assert base.content_hash() != other_stage.content_hash()
