"""Issue 17's stages in real runs: the bundled sample under the new defaults (accounting, manifest
sections, evidence in removed/), and the same bytes for reversed input with every new step on."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from conftest import make_config, run

from winnow.config import default_config_path, load_config
from winnow.run.execute import run_pipeline

SAMPLE = default_config_path().parent / "sample"


def rows(folder: Path) -> list[dict[str, Any]]:
    return [row for path in sorted(folder.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def sample_docs(count: int) -> list[dict[str, Any]]:
    with gzip.open(SAMPLE / "web.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle, strict=False)]


def eval_file_from(docs: list[dict[str, Any]], path: Path) -> Path:
    """An eval set whose items are 60-word stretches of sample documents (planted leaks), id = the document's."""
    with path.open("w", encoding="utf-8") as handle:
        for doc in docs:
            words = doc["text"].split()
            handle.write(json.dumps({"benchmark": "leak", "id": doc["id"], "text": " ".join(words[20:80])}) + "\n")
    return path


def test_bundled_sample_runs_with_the_new_defaults(tmp_path: Path) -> None:
    config = load_config(default_config_path())
    assert config.pii.enabled and config.normalize.fix_mojibake and config.dedup.minhash.verify_text
    assert not config.decontaminate.enabled and not config.dedup.paragraph.enabled
    leaked = [d for d in sample_docs(400)[300:] if len(d["text"].split()) > 400][:20]
    config.decontaminate.eval_files = [str(eval_file_from(leaked, tmp_path / "leak.jsonl"))]
    config.decontaminate.enabled = True
    config.output.dir = str(tmp_path / "out")
    config.runner.direct_num_workers = 1
    config.runner.direct_running_mode = "in_memory"
    stages = ["extract", "normalize", "langid", "filter", "pii", "dedup", "decontaminate"]
    manifest = run_pipeline(config, stages).manifest

    counts = manifest["counts"]
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"] > 3000
    assert manifest["stages"] == stages
    assert "pii_redactions" in manifest["columns"]
    pii = {r["kind"]: r for r in manifest["pii"]}
    assert set(pii) == {"email", "ip", "phone", "credit_card", "iban"} and sum(r["redactions"] for r in pii.values())
    minhash = next(r for r in manifest["dedup"] if r["kind"] == "minhash")
    assert minhash["verify_text"] and minhash["clusters"] > 0
    assert minhash["removed_text_verified"] == counts["duplicate_by_reason"].get("dedup:minhash", 0)
    leak = next(r for r in manifest["decontamination"] if r.get("benchmark") == "leak")
    assert leak["items"] == len(leaked) and leak["items_matched"] == len(leak["matched_item_ids"]) >= 1
    assert counts["filtered_by_reason"]["decontaminate:leak"] == leak["docs_removed"] >= 1

    out = tmp_path / "out"
    kept = rows(out / "data")
    assert len(kept) == counts["kept"] and all(isinstance(r["pii_redactions"], list) for r in kept)
    removed = {r["id"]: r for r in rows(out / "removed")}
    decontaminated = [r for r in removed.values() if r["reason"] == "decontaminate:leak"]
    assert len(decontaminated) == leak["docs_removed"]
    named = [[m["item_id"] for m in json.loads(r["detail"])["matches"]] for r in decontaminated]
    assert all(set(ids) <= set(leak["matched_item_ids"]) for ids in named)
    assert any(r["id"] in ids for r, ids in zip(decontaminated, named, strict=True))  # a leak found in its source
    near = [r for r in removed.values() if r["reason"] == "dedup:minhash"]
    assert all(r["similarity"] >= minhash["text_threshold"] and r["duplicate_of"] for r in near)


def test_reversed_input_gives_the_same_bytes_with_every_new_step_on(tmp_path: Path) -> None:
    docs = sample_docs(700)
    evals = eval_file_from([d for d in docs if len(d["text"].split()) > 400][:10], tmp_path / "leak.jsonl")
    folder = tmp_path / "in"
    folder.mkdir()
    blocklist = tmp_path / "adult" / "domains"
    blocklist.parent.mkdir()
    blocklist.write_text("studymode.com\ngov.uk\n")
    outputs = []
    for name, ordered in (("forward", docs), ("reversed", list(reversed(docs)))):
        with gzip.open(folder / "web.jsonl.gz", "wt", encoding="utf-8") as handle:  # same path: same `source`
            handle.writelines(json.dumps(d) + "\n" for d in ordered)
        config = make_config(
            [str(folder / "web.jsonl.gz")],
            tmp_path / name,
            filter={"enabled": True, "url_blocklist": {"files": [str(blocklist)]}},
            dedup={"minhash": {"enabled": True, "shards": 4}, "paragraph": {"enabled": True}},
            decontaminate={"eval_files": [str(evals)], "action": "cut", "cut_margin": 50},
        )
        outputs.append(run(config).manifest)
    forward, backward = outputs
    assert forward["counts"] == backward["counts"]
    reasons = forward["counts"]["filtered_by_reason"] | forward["counts"]["duplicate_by_reason"]
    assert reasons.get("filter:url_blocklist_adult") and reasons.get("dedup:minhash")
    assert next(r for r in forward["dedup"] if r["kind"] == "paragraph")["lines_removed"] > 0
    assert next(r for r in forward["decontamination"] if r["kind"] == "totals")["docs_cut"] >= 1
    files = sorted(p.relative_to(tmp_path / "forward") for p in (tmp_path / "forward").rglob("*.parquet"))
    assert files and files == sorted(
        p.relative_to(tmp_path / "reversed") for p in (tmp_path / "reversed").rglob("*.parquet")
    )
    for name in files:
        assert (tmp_path / "forward" / name).read_bytes() == (tmp_path / "reversed" / name).read_bytes(), name
