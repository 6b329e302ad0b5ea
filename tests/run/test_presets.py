"""Bundled presets (1.5-Pints fidelity tests 1 and 5): `pints-expository` validates, names only stages
that exist, runs end to end on the bundled sample with the accounting identity, and shifts the
output towards expository formats.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import DATA, run_stage
from typer.testing import CliRunner

from winnow.cli.main import app
from winnow.config import ConfigError, WinnowConfig, list_presets, load_config, parse_config, preset_path
from winnow.run.execute import MANIFEST, run_pipeline
from winnow.run.registry import STAGES, select_stages
from winnow.stages.score.stage import Score
from winnow.stages.select.stage import Select
from winnow.stages.tag.stage import Tag

SAMPLE = Path(__file__).resolve().parents[2] / "winnow" / "data" / "sample"
PRESET = "pints-expository"
EXCLUDED = {"Creative Writing", "Personal Blog", "Comment Section", "Spam / Ads", "Content Listing"}
EXCLUDED |= {"Product Page", "Truncated"}
# The formats docs/pints.md calls expository (names as in the tagger's taxonomy.json).
EXPOSITORY = {"Academic Writing", "Knowledge Article", "Tutorial", "Nonfiction Writing", "Docs.", "FAQ", "Q&A"}


def test_the_preset_is_listed_validates_and_names_only_existing_stages():
    assert PRESET in list_presets() and "1.5-Pints" in list_presets()[PRESET]
    path = preset_path(PRESET)
    assert path is not None and path.parent.name == "presets"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(raw) <= set(WinnowConfig.model_fields)  # every section it sets is a config section
    config = load_config(PRESET)
    enabled = [spec.name for spec in select_stages(config)]
    assert set(enabled) <= set(STAGES)
    for stage in ("langid", "filter", "dedup", "score", "tag", "select", "mix", "pack"):
        assert stage in enabled
    assert config.inputs[0].paths[0] == str(Path.cwd() / "arxiv" / "*.parquet")  # relative to the working dir
    assert config.mix.weights.manual_file == "winnow:presets/pints-mixture.csv"
    assert preset_path("no-such-preset") is None and preset_path("default.yaml") is None


def test_the_cli_lists_validates_and_refuses_unknown_presets():
    runner = CliRunner()
    listed = runner.invoke(app, ["presets"])
    assert listed.exit_code == 0 and PRESET in listed.output
    assert runner.invoke(app, ["config", "validate", PRESET]).exit_code == 0
    shown = runner.invoke(app, ["config", "show", PRESET])
    assert shown.exit_code == 0 and "manual_file: winnow:presets/pints-mixture.csv" in shown.output
    unknown = runner.invoke(app, ["run", "--config", "pints-expositry", "-q"])
    assert unknown.exit_code == 2 and PRESET in unknown.output  # the error lists the presets
    with pytest.raises(ConfigError, match=r"bundled presets: .*pints-expository"):
        load_config("pints-expositry")


def _sample_sources(folder: Path) -> list[dict]:
    """The bundled sample as named inputs: web pages, news and papers by their corpus, plus the HTML pages."""
    with gzip.open(SAMPLE / "web.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    corpus = {"web": "weborganizer-dclm", "news": "lee-abc-news", "papers": "data-juicer-demos"}
    inputs = []
    for name, source in corpus.items():
        chosen = [r for r in rows if (r.get("metadata") or {}).get("source_corpus") == source][:250]
        (folder / name).mkdir()
        with gzip.open(folder / name / "part-0.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in chosen)
        inputs.append({"name": name, "paths": [str(folder / name / "*.jsonl.gz")]})
    inputs.append({"name": "pages", "paths": [str(SAMPLE / "pages.jsonl.gz")]})
    return inputs


def test_a_dry_run_on_the_sample_completes_and_keeps_the_accounting(tmp_path):
    data = load_config(PRESET).model_dump(mode="json")
    data["inputs"] = _sample_sources(tmp_path)
    (tmp_path / "mixture.csv").write_text("source,weight\nweb,2\nnews,1\npapers,1\npages,1\n", encoding="utf-8")
    data["mix"]["weights"] = {"manual_file": str(tmp_path / "mixture.csv")}
    data["mix"]["budget"] = 60_000
    data["output"] = {"dir": str(tmp_path / "out"), "shards": {"target_bytes": 1_000_000}}
    data["runner"] = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
    result = run_pipeline(parse_config(data, origin="<pints test>"), None)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text(encoding="utf-8"))
    counts = manifest["counts"]
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    assert counts["kept"] > 0 and manifest == result.manifest
    reasons = counts["filtered_by_reason"]
    assert reasons.get("select:where", 0) > 0 and reasons.get("select:gumbel_top_k", 0) > 0
    # C4 and FineWeb rules run for the `web` input only: every such removal is a web page.
    removed = [json.loads(line) for line in _rows(tmp_path / "out" / "removed")]
    line_rules = [r for r in removed if r["reason"].startswith(("filter:c4_", "filter:fineweb_"))]
    assert line_rules and all(r["source"].startswith("web/") for r in line_rules)
    kept = _rows(tmp_path / "out" / "data")
    formats = Counter(json.loads(row)["format"] for row in kept)
    assert not set(formats) & EXCLUDED
    mixture = [r for r in manifest["mixture"] if r.get("kind") == "domain"]
    assert {r["domain"] for r in mixture} >= {"web", "news", "papers", "pages"}


def _rows(folder: Path) -> list[str]:
    return [json.dumps(r) for f in sorted(folder.rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_the_preset_shifts_output_towards_expository_formats(tmp_path):
    with gzip.open(DATA / "tagging" / "heldout.jsonl.gz", "rt", encoding="utf-8") as handle:
        pages = [json.loads(line) for line in handle]
    docs = [
        {"id": p["id"], "text": p["text"], "url": None, "source": "web/held.jsonl", "metadata": None} for p in pages
    ]
    config = load_config(PRESET)
    select = config.select.model_copy(update={"balance_by": None})

    class Chain(beam.PTransform):
        def expand(self, pcoll):
            scored = pcoll | "Score" >> Score(config.score, tokenizer=config.tokenizer)
            tagged = scored["kept"] | "Tag" >> Tag(config.tag, config.tokenizer)
            selected = tagged["kept"] | "Select" >> Select(select, seed=0)
            return {"kept": selected["kept"], "removed": selected["removed"], "rejected": selected["rejected"]}

    out = run_stage(Chain(), docs, tmp_path)
    pool = out["kept"] + out["removed"]  # select's input: both carry the tags
    assert len(pool) == len(docs) and not out["rejected"]
    share_in = sum(d["format"] in EXPOSITORY for d in pool) / len(pool)
    share_out = sum(d["format"] in EXPOSITORY for d in out["kept"]) / len(out["kept"])
    assert share_out > share_in
    assert not {d["format"] for d in out["kept"]} & EXCLUDED
    assert {d["format"] for d in pool} & EXCLUDED  # the input did hold excluded formats
