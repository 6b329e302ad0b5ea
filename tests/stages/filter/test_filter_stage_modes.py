"""The filter stage's URL blocklist rule and annotate mode: every rule's decision as a column, nothing dropped."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import run_stage

from winnow.config import ConfigError, parse_config
from winnow.stages.filter.blocklist import BlocklistError
from winnow.stages.filter.config import FilterConfig
from winnow.stages.filter.rules import FilterChain
from winnow.stages.filter.stage import SPEC

DATA = Path(__file__).resolve().parents[2] / "data"
DOMAINS = DATA / "blocklist" / "adult" / "domains"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The public suffix list must come from tldextract's bundled snapshot, never from the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def snippets() -> list[dict[str, Any]]:
    """One real text per heuristic rule (tests/data/filters), with the rules expected to fire."""
    return [json.loads(line) for line in (DATA / "filters" / "snippets.jsonl").read_text(encoding="utf-8").splitlines()]


def web_paragraphs(count: int) -> list[dict[str, Any]]:
    with gzip.open(DATA / "text" / "english.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle, strict=False)]


def doc(doc_id: str, text: str | None, url: str | None = None) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "url": url, "source": "test", "metadata": None}


URLS = {
    "blocked-host": "https://www.example-adult.com/gallery?page=2",
    "blocked-subtree": "http://a.shop.example.org/x",
    "parent-not-listed": "http://example.org/",
    "country-suffix": "https://news.bbc.co.uk/story",
    "clean": "https://en.wikipedia.org/wiki/Tea",
}


def blocklist_config(**settings: Any) -> FilterConfig:
    return FilterConfig(url_blocklist={"files": [str(DOMAINS)], "match": "domain"}, **settings)


def test_annotate_flags_every_rule_on_the_text_it_judges() -> None:
    """Each snippet's rule fires on its raw text; with C4's line edits off, annotate mode flags it,
    whichever rule fires first (the snippets hit several)."""
    config = FilterConfig(mode="annotate")
    config.c4.enabled = False
    chain = FilterChain(config)
    for row in snippets():
        expected = {rule for rule in row["fires"] if not rule.startswith("c4_") and rule != "clean"}
        assert expected <= set(chain(row["text"]).flags), row["id"]


def test_annotate_agrees_with_drop_mode() -> None:
    drop_chain = FilterChain(blocklist_config())
    annotate_chain = FilterChain(blocklist_config(mode="annotate"))
    clean_text = snippets()[0]["text"]
    cases = [(r["id"], r["text"], None, set()) for r in snippets() + web_paragraphs(300)]
    cases += [(name, clean_text, url, set()) for name, url in URLS.items()]
    cases += [("blocked-and-short", "Too short.", URLS["blocked-host"], {"url_blocklist_adult", "gopher_word_count"})]
    several = 0
    for doc_id, text, url, expected in cases:
        dropped, annotated = drop_chain(text, url), annotate_chain(text, url)
        assert annotated.drop is None, doc_id
        assert expected <= set(annotated.flags), (doc_id, annotated.flags)
        if dropped.kept:  # no flag: the text drop mode keeps
            assert annotated.flags == () and annotated.text == dropped.text, doc_id
        else:  # the first flag is drop mode's reason
            assert annotated.flags[0] == dropped.drop.rule, (doc_id, annotated.flags)
        several += len(annotated.flags) > 1
    assert several >= 20  # rules after the first one were evaluated


def test_blocklist_rule_drops_by_registered_domain_and_counts(tmp_path: Path) -> None:
    text = snippets()[0]["text"]  # passes every text rule
    docs = [doc(name, text, url) for name, url in URLS.items()] + [doc("no-url", text)]
    out = run_stage(SPEC.build(blocklist_config()), docs, tmp_path)
    removed = {d["id"]: d["reason"] for d in out["removed"]}
    assert removed == {"blocked-host": "filter:url_blocklist_adult", "blocked-subtree": "filter:url_blocklist_adult"}
    assert {d["id"] for d in out["kept"]} == {"parent-not-listed", "country-suffix", "clean", "no-url"}
    assert out["counters"]["filter:url_blocklist_adult"] == 2
    assert "summary" not in out  # drop mode writes no flag section


def test_annotate_stage_keeps_everything_and_reports_flags(tmp_path: Path) -> None:
    rows = snippets()
    docs = [doc(r["id"], r["text"]) for r in rows] + [doc("blocked", rows[0]["text"], URLS["blocked-host"])]
    docs.append(doc("none-text", None))
    config = blocklist_config(mode="annotate")
    out = run_stage(SPEC.build(config), docs, tmp_path)
    assert out["removed"] == [] and [r["doc_id"] for r in out["rejected"]] == ["none-text"]
    flags = {d["id"]: d["filter_flags"] for d in out["kept"]}
    assert len(flags) == len(docs) - 1
    assert flags["weborganizer-2894"] == [] and flags["blocked"] == ["url_blocklist_adult"]
    (summary,) = out["summary"]
    assert summary["section"] == "filter" and summary["documents"] == len(flags)
    assert summary["flagged"] == sum(1 for f in flags.values() if f) >= 20
    for rule, count in summary["by_rule"].items():
        assert count == sum(rule in f for f in flags.values()) == out["counters"][f"filter:flagged:{rule}"]
    assert [f.name for f in SPEC.config_columns(config)] == ["filter_flags"]
    assert SPEC.config_columns(FilterConfig()) == ()


def test_bad_blocklist_files_fail_before_the_graph(tmp_path: Path) -> None:
    with pytest.raises(BlocklistError, match="cannot be read"):
        SPEC.build(FilterConfig(url_blocklist={"files": [str(tmp_path / "missing")]}))
    empty = tmp_path / "domains"
    empty.write_text("# nothing\n\n")
    with pytest.raises(BlocklistError, match="holds no entry"):
        SPEC.build(FilterConfig(url_blocklist={"files": [str(DOMAINS), str(empty)]}))
    for section, key in (
        ({"url_blocklist": {"files": []}}, r"filter\.url_blocklist\.files"),
        ({"url_blocklist": {"files": ["x"], "match": "host"}}, r"filter\.url_blocklist\.match"),
        ({"mode": "flag"}, r"filter\.mode"),
    ):
        with pytest.raises(ConfigError, match=key):
            parse_config({"filter": section})
