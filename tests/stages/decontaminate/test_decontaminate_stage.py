"""The decontaminate stage on the local runner: both join forms, drop and cut, evidence, manifest, errors."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from conftest import run_stage

from winnow.config import ConfigError, parse_config
from winnow.stages.decontaminate.config import DecontaminateConfig
from winnow.stages.decontaminate.ngrams import EvalFileError, read_eval_file
from winnow.stages.decontaminate.stage import SPEC

DATA = Path(__file__).resolve().parents[2] / "data" / "decontaminate"


def plagiarism() -> list[dict[str, Any]]:
    with gzip.open(DATA / "plagiarism_ab.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def doc(doc_id: str, text: str) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "url": None, "source": "test", "metadata": None}


@pytest.fixture
def evals(tmp_path: Path) -> Path:
    """Two eval sets: the Wikipedia source passages of the plagiarism corpus, three HumanEval prompts."""
    folder = tmp_path / "evals"
    folder.mkdir()
    with (folder / "wiki.jsonl").open("w", encoding="utf-8") as handle:
        for record in plagiarism():
            if record["category"] == "orig":
                handle.write(json.dumps({"id": f"task-{record['task']}", "text": record["text"]}) + "\n")
    shutil.copy(DATA / "humaneval_sample.jsonl", folder / "humaneval.jsonl")
    return folder


def corpus() -> list[dict[str, Any]]:
    """The students' answers (real human edits of the passages, and independent answers) and real
    news pages, one with a HumanEval prompt pasted in."""
    docs = [doc(r["file"], r["text"]) for r in plagiarism() if r["category"] != "orig"]
    hosts = [json.loads(line)["text"] for line in (DATA / "c4_hosts.jsonl").read_text().splitlines() if line]
    prompt = read_eval_file(DATA / "humaneval_sample.jsonl")[0].text
    docs.append(doc("host-0", hosts[0] + "\n\n" + prompt + "\n\n" + hosts[1]))
    docs.append(doc("host-2", hosts[2]))
    return docs


def run(evals: Path, tmp_path: Path, docs: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    config = DecontaminateConfig(eval_files=[str(evals / "*.jsonl")], **settings)
    return run_stage(SPEC.build(config), docs, tmp_path)


def grams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    """Word 13-grams as the docs define them, by brute force: letters and digits, accents dropped, case-folded."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    words = [w.casefold() for w in re.findall(r"[^\W_]+", plain)]
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def category(doc_id: str) -> str:
    return {r["file"]: r["category"] for r in plagiarism()}.get(doc_id, "host")


def test_drop_names_benchmark_and_items_and_both_join_forms_agree(evals: Path, tmp_path: Path) -> None:
    docs = corpus()
    side = run(evals, tmp_path, docs, join="side_input")
    keyed = run(evals, tmp_path, list(reversed(docs)), join="keyed")
    for out in (side, keyed):
        assert len(out["kept"]) + len(out["removed"]) == len(docs) and out["rejected"] == []
    assert sorted(d["id"] for d in side["kept"]) == sorted(d["id"] for d in keyed["kept"])
    assert sorted(json.dumps(d, sort_keys=True) for d in side["removed"]) == sorted(
        json.dumps(d, sort_keys=True) for d in keyed["removed"]
    )
    strip = [{k: v for k, v in r.items() if k != "join"} for r in side["summary"]]
    assert sorted(map(json.dumps, strip)) == sorted(
        json.dumps({k: v for k, v in r.items() if k != "join"}) for r in keyed["summary"]
    )

    removed = {d["id"]: d for d in side["removed"]}
    eval_grams = set().union(*(grams(item.text) for path in sorted(evals.iterdir()) for item in read_eval_file(path)))
    assert set(removed) == {d["id"] for d in docs if grams(d["text"]) & eval_grams}  # brute-force oracle
    assert not [i for i in removed if category(i) == "non"]  # independent answers share no 13-gram
    assert sum(category(i) == "cut" for i in removed) >= 5
    host = removed["host-0"]
    assert host["reason"] == "decontaminate:humaneval" and host["duplicate_of"] is None
    assert json.loads(host["detail"])["matches"][0]["item_id"] == "HumanEval/0"
    for doc_id, record in removed.items():
        if doc_id != "host-0":
            assert record["reason"] == "decontaminate:wiki"
            assert json.loads(record["detail"])["matches"][0]["item_id"] == f"task-{doc_id.split('task')[-1][0]}"
    assert side["counters"]["decontaminate:wiki"] == len(removed) - 1

    by_kind = {(r["kind"], r.get("benchmark")): r for r in side["summary"]}
    wiki, humaneval = by_kind[("benchmark", "wiki")], by_kind[("benchmark", "humaneval")]
    expected_wiki = (2, len(removed) - 1, ["task-a", "task-b"])
    assert (wiki["items"], wiki["docs_removed"], wiki["matched_item_ids"]) == expected_wiki
    assert (humaneval["items"], humaneval["docs_removed"], humaneval["matched_item_ids"]) == (3, 1, ["HumanEval/0"])
    totals = by_kind[("totals", None)]
    assert totals["join"] == "side_input"
    assert totals["document_ngrams_checked"] == side["counters"]["decontaminate:ngrams_checked"] > 0
    assert 0 < totals["expected_false_hits"] < 1e-9


def test_cut_removes_spans_and_keeps_the_rest(evals: Path, tmp_path: Path) -> None:
    docs = corpus()
    prompt = read_eval_file(DATA / "humaneval_sample.jsonl")[0].text
    out = run(evals, tmp_path, docs, action="cut", cut_margin=0)
    kept = {d["id"]: d for d in out["kept"]}
    host = kept["host-0"]
    assert "has_close_elements" not in host["text"] and host["decontaminate_chars_cut"] >= len(prompt.strip()) - 10
    assert host["decontaminate_matches"][0]["item_id"] == "HumanEval/0"
    original = next(d["text"] for d in docs if d["id"] == "host-0")
    assert host["text"].startswith(original[:200]) and host["text"].endswith(original[-200:])
    assert kept["host-2"]["decontaminate_matches"] == [] and kept["host-2"]["decontaminate_chars_cut"] == 0
    # copied answers are mostly the passage: too little is left, so they go as in drop mode
    removed = {d["id"]: d for d in out["removed"]}
    assert removed and all(category(i) in ("cut", "light", "heavy") for i in removed)
    assert all(r["reason"] == "decontaminate:wiki" for r in removed.values())
    totals = next(r for r in out["summary"] if r["kind"] == "totals")
    assert totals["docs_cut"] == sum(1 for d in out["kept"] if d["decontaminate_chars_cut"])
    assert totals["docs_removed"] == len(removed)


def test_unusable_eval_files_fail_before_the_run(tmp_path: Path) -> None:
    def plan(**settings: Any) -> Any:
        return SPEC.build(DecontaminateConfig(**settings))

    with pytest.raises(EvalFileError, match="matches no file"):
        plan(eval_files=[str(tmp_path / "missing" / "*.jsonl")])
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "too short to give a thirteen word n-gram"}) + "\n")
    with pytest.raises(EvalFileError, match=r"short\.jsonl: no usable item"):
        plan(eval_files=[str(short)])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(EvalFileError, match=r"broken\.jsonl: line 2 is not JSON"):
        plan(eval_files=[str(broken)])


def test_config_enabled_follows_eval_files() -> None:
    assert parse_config({}).decontaminate.enabled is False
    assert parse_config({"decontaminate": {"eval_files": ["e.jsonl"]}}).decontaminate.enabled is True
    assert parse_config({"decontaminate": {"eval_files": ["e.jsonl"], "enabled": False}}).decontaminate.enabled is False
    with pytest.raises(ConfigError, match=r"decontaminate: .*eval_files is empty"):
        parse_config({"decontaminate": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"decontaminate\.action"):
        parse_config({"decontaminate": {"eval_files": ["e.jsonl"], "action": "mask"}})
