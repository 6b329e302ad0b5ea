"""Human review (1.5-Pints fidelity test 3): the exported sheet, and reviewers' decisions applied as filters.

A decisions sheet removes exactly the listed documents with reason ``review:<label>``; a source cap
keeps the source's tokens within one document of the cap; the sheet ``winnow review export`` writes
is stratified by source and format, the same for the same run and seed, and becomes a decisions file
once filled in.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATA, run_stage
from typer.testing import CliRunner

from winnow.cli.main import app
from winnow.config import ConfigError, load_config, parse_config
from winnow.stages.review.config import ReviewConfig
from winnow.stages.review.decisions import parse_decisions
from winnow.stages.review.export import review_sample, run_rows
from winnow.stages.review.stage import Review

PAGES = DATA / "ordering" / "weborganizer_small.jsonl"
SOURCES = ("web", "books", "papers")


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    rows = [json.loads(line) for line in PAGES.read_text(encoding="utf-8").splitlines() if line]
    return [
        {
            "id": r["id"],
            "text": r["text"],
            "url": r["url"],
            "source": f"{SOURCES[i % 3]}/part-{i % 2}.jsonl.gz",
            "metadata": None,
            "n_tokens": len(r["text"].split()),
            "topic": r["topic"],
            "format": ["Tutorial", "News Article", "Personal Blog", "Product Page"][i % 4],
        }
        for i, r in enumerate(rows)
    ]


def sheet(tmp_path: Path, text: str) -> str:
    path = tmp_path / "decisions.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_document_and_source_decisions_remove_exactly_what_they_list(docs, tmp_path):
    web = [d for d in docs if d["source"].startswith("web/")]
    books = [d for d in docs if d["source"].startswith("books/")]
    dropped = [web[0]["id"], web[5]["id"], books[2]["id"]]
    kept_by_reviewer = books[0]["id"]
    path = sheet(
        tmp_path,
        "id,source,decision,label,tokens,text\n"
        f"{dropped[0]},web,drop,boilerplate,,some text\n"
        f"{dropped[1]},web,drop,off-topic,,\n"
        f'{dropped[2]},,drop,boilerplate,,"with, a comma"\n'
        f"{web[1]['id']},web,,,,not reviewed yet\n"
        f"{kept_by_reviewer},,keep,,,\n"
        ",books,drop_source,poor-ocr,,\n",
    )
    out = run_stage(Review(ReviewConfig(decisions=path)), docs, tmp_path)
    removed = {d["id"]: d["reason"] for d in out["removed"]}
    expected = {dropped[0]: "review:boilerplate", dropped[1]: "review:off-topic"}
    expected |= {d["id"]: "review:poor-ocr" for d in books if d["id"] != kept_by_reviewer}
    expected[dropped[2]] = "review:boilerplate"  # its own decision wins over its source's
    assert removed == expected
    assert kept_by_reviewer in {d["id"] for d in out["kept"]}
    assert len(out["kept"]) + len(out["removed"]) == len(docs) and not out["rejected"]
    assert out["counters"]["review:boilerplate"] == 2 and out["counters"]["review:poor-ocr"] == len(books) - 2


def test_a_source_cap_holds_within_one_document(docs, tmp_path):
    papers = [d for d in docs if d["source"].startswith("papers/")]
    pool = sum(d["n_tokens"] for d in papers)
    cap = pool // 3
    path = sheet(tmp_path, f"source,decision,label,tokens\npapers,cap_tokens,too-many-papers,{cap}\n")
    out = run_stage(Review(ReviewConfig(decisions=path), seed=5), docs, tmp_path)
    kept = [d for d in out["kept"] if d["source"].startswith("papers/")]
    kept_tokens = sum(d["n_tokens"] for d in kept)
    assert cap <= kept_tokens < cap + max(d["n_tokens"] for d in kept)  # the crossing document is the last in
    assert {d["reason"] for d in out["removed"]} == {"review:too-many-papers"}
    assert len(kept) + len(out["removed"]) == len(papers)
    assert len(out["kept"]) == len(docs) - len(out["removed"])  # other sources untouched
    other_seed = run_stage(Review(ReviewConfig(decisions=path), seed=6), docs, tmp_path)
    assert {d["id"] for d in other_seed["removed"]} != {d["id"] for d in out["removed"]}  # the order is seeded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,decision,label\nx,delete,spam\n", "row 2: decision: Input should be"),
        ("id,decision,label\nx,drop,\n", "row 2: row: Value error, `drop` needs a label"),
        ("id,decision,label\nx,drop,has space\n", "row 2: label: String should match"),
        ("source,decision,label\nweb,cap_tokens,cap\n", "`cap_tokens` needs `tokens`"),
        ("id,source,decision,label\nx,web,drop_source,a\n", "a row with an id takes a document decision"),
        ("source,decision,label\n,drop_source,a\n", "needs an id (document decision) or a source"),
        ("id,decision,label\nx,drop,a\nx,keep,\n", "row 3: id 'x' has two different decisions"),
        ("id,label\nx,a\n", "needs a `decision` column"),
    ],
)
def test_bad_sheets_name_the_row_and_column(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_decisions(text, "d.csv")


def test_the_sheet_is_checked_when_the_config_loads(tmp_path):
    (tmp_path / "d.csv").write_text("id,decision,label\nx,drop,\n", encoding="utf-8")
    (tmp_path / "run.yaml").write_text("review: {decisions: d.csv}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "run.yaml")
    assert "review.decisions" in str(error.value) and "row 2" in str(error.value)
    (tmp_path / "d.csv").write_text("id,decision,label\nx,drop,spam\n", encoding="utf-8")
    config = load_config(tmp_path / "run.yaml")
    assert config.review.enabled and config.review.decisions == str(tmp_path / "d.csv")
    assert not parse_config({}).review.enabled  # no sheet, no stage
    with pytest.raises(ConfigError, match="decisions file not found"):
        parse_config({"review": {"decisions": "/nonexistent/d.csv"}})


# --- the sheet ---------------------------------------------------------------------------------------


def fake_run(tmp_path: Path, docs: list[dict]) -> Path:
    """A run folder with data shards in two phase folders, first copies and repeats."""
    run_dir = tmp_path / "run"
    columns = ["id", "text", "url", "source", "format", "topic", "n_tokens", "epoch"]
    for phase, rows in (("a", docs[:200]), ("b", docs[200:] + [dict(d, epoch=1) for d in docs[:50]])):
        folder = run_dir / "data" / f"phase={phase}"
        folder.mkdir(parents=True)
        table = pa.Table.from_pylist([{c: d.get(c, 0 if c == "epoch" else None) for c in columns} for d in rows])
        pq.write_table(table, folder / "part-00000.parquet")
    manifest = {"config": {"inputs": [{"name": s, "paths": [f"{s}/*"]} for s in SOURCES], "review": {}}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


def test_the_sample_is_stratified_deterministic_and_first_copies_only(docs, tmp_path):
    run_dir = fake_run(tmp_path, docs)
    rows = list(run_rows(run_dir))
    assert len(rows) == 350
    sample = review_sample(rows, per_source=12, seed=7, by_format=True, names=SOURCES)
    assert Counter(r["source"] for r in sample) == dict.fromkeys(SOURCES, 12)
    for source in SOURCES:
        formats = Counter(r["format"] for r in sample if r["source"] == source)
        assert max(formats.values()) - min(formats.values()) <= 1 and len(formats) >= 2  # spread over formats
    assert len({r["id"] for r in sample}) == 36
    assert review_sample(list(reversed(rows)), 12, 7, True, SOURCES) == sample  # input order does not matter
    assert review_sample(rows, 12, 8, True, SOURCES) != sample
    unstratified = review_sample(rows, 12, 7, False, SOURCES)
    assert {r["id"] for r in unstratified} != {r["id"] for r in sample}


def test_export_command_writes_a_sheet_that_becomes_decisions(docs, tmp_path):
    run_dir = fake_run(tmp_path, docs)
    output, page = tmp_path / "sheet.csv", tmp_path / "sheet.html"
    result = CliRunner().invoke(
        app, ["review", "export", str(run_dir), "-o", str(output), "--html", str(page), "--per-source", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "15 documents" in result.output and page.read_text(encoding="utf-8").count("<tr>") == 16
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,source,decision,label,tokens,format,topic,url,n_tokens,text"
    filled = output.read_text(encoding="utf-8").replace(",,,,", ",drop,reviewed-bad,,", 1)  # one verdict
    decisions = parse_decisions(filled, "sheet.csv")
    assert len(decisions.documents) == 1 and next(iter(decisions.documents.values())) == ("drop", "reviewed-bad")
    missing = CliRunner().invoke(app, ["review", "export", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
