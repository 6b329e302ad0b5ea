"""End-to-end runs of the real pipeline on small real data."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DATA, make_config, run

from winnow.run.execute import MANIFEST

READERS = DATA / "readers"
BAD = DATA / "bad_input"


def read_dir(path: Path) -> list[dict]:
    rows: list[dict] = []
    for file in sorted(path.glob("*.parquet")):
        rows.extend(pq.read_table(file).to_pylist())
    return rows


def corpus_with_duplicates(tmp_path: Path) -> Path:
    """Real documents plus exact and whitespace/case variants of some of them."""
    source = [json.loads(line) for line in (READERS / "sample.jsonl").read_text().splitlines() if line]
    records = list(source)
    records += [{**r, "id": f"{r['id']}-copy"} for r in source[:5]]
    records += [{**r, "id": f"{r['id']}-upper", "text": "  " + r["text"].upper() + "\n\n"} for r in source[5:8]]
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "part.jsonl.gz", "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return folder


def test_run_writes_shards_removed_rejected_and_a_balanced_manifest(tmp_path: Path):
    folder = corpus_with_duplicates(tmp_path)
    (folder / "broken.jsonl").write_text('{"id": "b1", "text": "fine text here"}\n{not json\n[1]\n')
    result = run(make_config([str(folder / "*")], tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    counts = manifest["counts"]
    assert manifest == result.manifest
    assert counts["input"] == 20 + 5 + 3 + 3
    assert counts["duplicate_by_reason"] == {"dedup:exact": 8}
    assert counts["rejected_by_stage"] == {"read": 2}
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    kept = read_dir(tmp_path / "out" / "data")
    removed = read_dir(tmp_path / "out" / "removed")
    rejected = read_dir(tmp_path / "out" / "rejected")
    assert len(kept) == counts["kept"] and len(removed) == 8 and len(rejected) == 2
    kept_ids = {r["id"] for r in kept}
    assert all(r["duplicate_of"] in kept_ids and r["reason"] == "dedup:exact" for r in removed)
    assert {r["id"] for r in removed} == {r["id"] for r in removed if r["id"].endswith(("-copy", "-upper"))}
    for shard in manifest["shards"]["data"]:
        assert (tmp_path / "out" / shard["file"]).stat().st_size == shard["bytes"]
    assert not (tmp_path / "out" / "_staging").exists()


def test_two_runs_give_identical_bytes_and_counts(tmp_path: Path):
    folder = corpus_with_duplicates(tmp_path)
    first = run(make_config([str(folder / "*")], tmp_path / "a", output={"shards": {"target_rows": 7}}))
    second = run(make_config([str(folder / "*")], tmp_path / "b", output={"shards": {"target_rows": 7}}))
    assert first.manifest["counts"] == second.manifest["counts"]
    assert first.manifest["shards"] == second.manifest["shards"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert len(files) >= 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_only_selected_stages_run(tmp_path: Path):
    folder = corpus_with_duplicates(tmp_path)
    manifest = run(make_config([str(folder / "*")], tmp_path / "out"), stages=["normalize"]).manifest
    assert manifest["stages"] == ["normalize"]
    assert manifest["counts"]["duplicate"] == 0
    assert manifest["counts"]["kept"] == manifest["counts"]["input"]


def test_rerun_replaces_previous_output_and_ignores_stale_staging(tmp_path: Path):
    folder = corpus_with_duplicates(tmp_path)
    out = tmp_path / "out"
    run(make_config([str(folder / "*")], out, output={"shards": {"target_rows": 3}}))
    (out / "_staging" / "data").mkdir(parents=True)
    (out / "_staging" / "data" / "part-00099-of-00100.parquet").write_bytes(b"half a shard")
    manifest = run(make_config([str(folder / "*")], out, output={"shards": {"target_rows": 1000}})).manifest
    assert sorted(p.name for p in (out / "data").iterdir()) == ["part-00000-of-00001.parquet"]
    assert len(manifest["shards"]["data"]) == 1
    assert not (out / "_staging").exists()


def test_bad_input_corpus_finishes_with_everything_accounted(tmp_path: Path):
    """Malformed JSON, bad UTF-8, arrays, numbers, missing/wrong-typed/empty text, a 10 MB
    document, a binary file and a truncated .gz: the run finishes and loses nothing."""
    expected = json.loads((BAD / "MANIFEST.json").read_text())
    folder = tmp_path / "bad"
    shutil.copytree(BAD, folder)
    (folder / "MANIFEST.json").unlink()
    (folder / "README.md").unlink(missing_ok=True)
    paragraph = (DATA / "readers" / "sample.jsonl").read_text().splitlines()[0]
    big_text = (json.loads(paragraph)["text"] + "\n\n") * (10_000_000 // (len(paragraph) + 2) + 1)
    (folder / "huge.jsonl").write_text(json.dumps({"id": "huge-1", "text": big_text}) + "\n")
    manifest = run(make_config([str(folder / "*")], tmp_path / "out")).manifest
    counts = manifest["counts"]
    valid = sum(entry["valid"] for entry in expected["files"].values()) + 1
    bad = sum(entry["rejected"] for entry in expected["files"].values())
    assert counts["input"] == valid + bad
    assert counts["rejected"] == bad
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    rejected = read_dir(tmp_path / "out" / "rejected")
    assert len(rejected) == bad
    for row in rejected:
        assert row["error"] and "\n" not in row["error"]
        assert row["source"]
    kept_ids = {r["id"] for r in read_dir(tmp_path / "out" / "data")}
    assert "huge-1" in kept_ids


def test_missing_input_is_an_error_before_running(tmp_path: Path):
    from winnow.beam.read import InputError

    with pytest.raises(InputError):
        run(make_config([str(tmp_path / "missing" / "*.jsonl")], tmp_path / "out"))
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_worker_count_and_running_mode_do_not_change_output_bytes(tmp_path: Path):
    """Determinism must not depend on how Beam schedules work: 1 in-memory worker vs 2 processes."""
    folder = corpus_with_duplicates(tmp_path)
    one = make_config([str(folder / "*")], tmp_path / "one", output={"shards": {"target_rows": 6}})
    two = make_config(
        [str(folder / "*")],
        tmp_path / "two",
        output={"shards": {"target_rows": 6}},
        runner={"direct_num_workers": 2, "direct_running_mode": "multi_processing"},
    )
    run(one)
    run(two)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.parquet"))
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.parquet"))
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
