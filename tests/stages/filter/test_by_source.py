"""Per-source filter profiles (``filter.by_source``) and the licence gate (``filter.license_allow``).

1.5-Pints fidelity test 2: a formula-heavy arXiv-style page survives the `default` profile (Gopher only)
and is removed under the `web` profile by C4's rules, with the rule in the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_stage

from winnow.beam.contract import Drop, field_value
from winnow.config import ConfigError, parse_config
from winnow.core.sources import matching_key, source_matches
from winnow.stages.filter.config import FilterConfig
from winnow.stages.filter.stage import Filter, FilterStep

DATA = Path(__file__).resolve().parents[2] / "data" / "pints" / "arxiv_excerpt.jsonl"
PAPER = json.loads(DATA.read_text(encoding="utf-8").splitlines()[0])
PINTS = {"default": {"c4": {"enabled": False}, "fineweb": {"enabled": False}}, "web": {}}


def step(**config) -> FilterStep:
    filter_step = FilterStep(FilterConfig(**config))
    filter_step.setup(lambda name, n=1: None)
    return filter_step


def doc(source: str, text: str = PAPER["text"], **extra) -> dict:
    return {"id": f"{source}:{len(text)}", "text": text, "url": None, "source": source, "metadata": None, **extra}


def test_a_paper_survives_the_default_profile_and_c4_removes_it_for_web(tmp_path):
    assert "$" in PAPER["text"] and "{" in PAPER["text"]  # inline maths and LaTeX commands
    docs = [doc("arxiv/part-0.jsonl.gz"), doc("web/crawl-0.jsonl.gz")]
    out = run_stage(Filter(FilterConfig(by_source=PINTS)), docs, tmp_path)
    assert [d["source"] for d in out["kept"]] == ["arxiv/part-0.jsonl.gz"]
    assert [(d["source"], d["reason"]) for d in out["removed"]] == [("web/crawl-0.jsonl.gz", "filter:c4_curly_bracket")]
    # Without profiles the paper meets the same fate everywhere: the profile is what saves it.
    everywhere = run_stage(Filter(FilterConfig()), docs, tmp_path)
    assert not everywhere["kept"] and {d["reason"] for d in everywhere["removed"]} == {"filter:c4_curly_bracket"}


def test_profile_choice_first_match_default_and_global_rules():
    profiles = {"web": {"c4": {"min_sentences": 99}}, "*.warc.gz": {}, "default": {"c4": {"enabled": False}}}
    filter_step = step(by_source=profiles)
    web, warc, other = (filter_step.chain_for(s) for s in ("web/a.jsonl", "crawl.warc.gz", "books/b.jsonl"))
    assert web is filter_step.profiles["web"] and warc is filter_step.profiles["*.warc.gz"]
    assert other is filter_step.profiles["default"]
    assert step(by_source={"web": {}}).chain_for("books/b.jsonl") is not None
    no_default = step(by_source={"web": {}})
    assert no_default.chain_for("books/b.jsonl") is no_default.chain  # unmatched, no default: the global rules
    # A profile changes only what it names; nested sections merge, tables are replaced whole.
    config = FilterConfig(
        c4={"min_words_per_line": 5},
        by_source={"p": {"c4": {"min_sentences": 2}, "gopher_repetition": {"top_ngrams": {2: 0.5}}}},
    )
    profile = config.profile("p")
    assert profile.c4.min_sentences == 2 and profile.c4.min_words_per_line == 5 and profile.c4.enabled
    assert profile.gopher_repetition.top_ngrams == {2: 0.5}


def test_source_keys():
    assert source_matches("arxiv/2024/part.parquet", "arxiv") and source_matches("arxiv", "arxiv")
    assert not source_matches("arxiv-old/part.parquet", "arxiv")
    assert source_matches("crawl/a.warc.gz", "*.warc.gz")
    assert matching_key("web/x", ["books", "web", "*"]) == "web"


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ({"web": {"c4": {"bogus": 1}}}, "by_source.web.c4.bogus: unknown key"),
        ({"web": {"c4": {"min_sentences": "many"}}}, "by_source.web.c4.min_sentences"),
        ({"web": {"nothing": {}}}, "by_source.web.nothing: unknown key"),
        ({"web": {"license_allow": ["x"]}}, "by_source.web: license_allow cannot differ"),
    ],
)
def test_bad_profiles_name_the_key(profiles, message):
    with pytest.raises(ConfigError) as error:
        parse_config({"filter": {"by_source": profiles}})
    assert "filter" in str(error.value) and message in str(error.value)


def test_licence_gate():
    gate = step(license_allow=["CC-BY-4.0", " public domain "])
    text = "A plain paragraph of prose that would pass every rule in the chain."
    assert gate.license_drop(doc("a", text, license="cc-by-4.0")) is None
    assert gate.license_drop(doc("a", text, metadata=json.dumps({"license": "Public Domain"}))) is None
    assert gate.license_drop(doc("a", text, license="CC-BY-NC-4.0")) == Drop("license_not_allowed")
    assert gate.license_drop(doc("a", text)) == Drop("license_missing")
    assert gate.license_drop(doc("a", text, license="  ")) == Drop("license_missing")
    assert step().license_drop(doc("a", text)) is None  # no gate configured
    named = step(license_allow=["MIT"], license_field="rights")
    assert named.license_drop(doc("a", text, rights="MIT")) is None and field_value(
        doc("a", text, rights="MIT"), "rights"
    )


def test_licence_gate_in_the_stage(tmp_path):
    docs = [doc("a", PAPER["text"], license="CC-BY-4.0"), doc("b", PAPER["text"], license="proprietary"), doc("c")]
    out = run_stage(Filter(FilterConfig(license_allow=["cc-by-4.0"], by_source=PINTS)), docs, tmp_path)
    assert [d["source"] for d in out["kept"]] == ["a"]
    assert sorted((d["source"], d["reason"]) for d in out["removed"]) == [
        ("b", "filter:license_not_allowed"),
        ("c", "filter:license_missing"),
    ]
    assert out["counters"]["filter:license_not_allowed"] == 1
