"""`winnow refresh`: weekly batches into numbered versions, deduped against everything accepted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import make_config, run
from corpora import WEEKS, config_for, land
from typer.testing import CliRunner

from winnow.cli.main import app
from winnow.run.refresh import refresh
from winnow.run.state import STATE_FILE, StateError


def kept_rows(out: Path) -> list[dict]:
    return [row for path in sorted(out.glob("v*/data/*.parquet")) for row in pq.read_table(path).to_pylist()]


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def removed_rows(out: Path) -> list[dict]:
    return [row for path in sorted(out.glob("v*/removed/*.parquet")) for row in pq.read_table(path).to_pylist()]


def snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path): (path.read_bytes(), path.stat().st_mtime_ns)
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def test_three_weekly_refreshes_equal_one_full_run_and_a_rerun_does_nothing(tmp_path: Path):
    landing, out, state = tmp_path / "landing", tmp_path / "corpus", tmp_path / "state"
    versions = []
    for week in ("w1", "w2"):
        land(landing, week)
        versions.append(refresh(config_for(landing, out), str(state)))
    assert [r.version for r in versions] == [1, 2]
    assert [fp.source for fp in versions[1].new_inputs] == ["crawl/w2/batch.jsonl"]

    before = snapshot(out, state)
    again = refresh(config_for(landing, out), str(state))
    assert again.version is None and again.processed_inputs == 2
    assert snapshot(out, state) == before  # not a byte nor a timestamp changed

    land(landing, "w3")
    third = refresh(config_for(landing, out), str(state))
    assert third.version == 3
    corpus = json.loads((out / "manifest.json").read_text())
    assert [v["dir"] for v in corpus["versions"]] == ["v0001", "v0002", "v0003"]
    for version in corpus["versions"]:
        counts = version["counts"]
        assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
        assert (out / version["dir"] / "report.html").exists() and (out / version["dir"] / "DATASET_CARD.md").exists()

    full = run(config_for(landing, tmp_path / "full")).manifest
    assert corpus["totals"] == full["counts"]  # every count, by reason and stage too
    refreshed, whole = (
        kept_rows(out),
        [
            row
            for path in sorted((tmp_path / "full" / "data").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()
        ],
    )
    assert sorted(r["text_hash"] for r in refreshed) == sorted(r["text_hash"] for r in whole)
    # Same documents, except the documented keep policy: week 3's lower id does not displace week 2's copy.
    assert {r["id"] for r in refreshed} ^ {r["id"] for r in whole} == {"d10", "a-early"}
    assert {r["text"] for r in refreshed} == {r["text"] for r in whole}
    assert {r["id"] for r in refreshed if r["id"].startswith("w-")} == {
        r["id"] for r in whole if r["id"].startswith("w-")
    }

    across = {r["id"]: r["duplicate_of"] for r in removed_rows(out) if r["id"] in ("d02-again", "a-early")}
    assert across == {"d02-again": "d02", "a-early": "d10"}
    week1 = {r["id"] for p in (out / "v0001" / "data").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
    assert "d02" in week1 and "d00" in week1 and "d00-copy" not in week1


def test_truncated_state_is_a_clear_error_that_changes_nothing_and_prev_state_recovers(tmp_path: Path):
    landing, out, state = tmp_path / "landing", tmp_path / "corpus", tmp_path / "state"
    for week in ("w1", "w2"):
        land(landing, week)
        refresh(config_for(landing, out), str(state))
    version2 = {p.relative_to(out): p.read_bytes() for p in (out / "v0002").rglob("*") if p.is_file()}
    state_file = state / STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])
    before = snapshot(out, state)

    with pytest.raises(StateError, match=r"corrupt or truncated.*Nothing was changed"):
        refresh(config_for(landing, out), str(state))
    result = CliRunner().invoke(
        app, ["refresh", "-q", "--state", str(state), "-o", str(out), "-i", str(landing / "*" / "*.jsonl")]
    )
    assert result.exit_code == 2 and "corrupt or truncated" in result.output and "state.json.prev" in result.output
    assert snapshot(out, state) == before  # no output, hash or index file touched

    # Recovery as the message says: the previous state redoes version 2, to the same bytes.
    shutil.copy(state / "state.json.prev", state_file)
    redone = refresh(make_config([{"paths": [str(landing / "*" / "*.jsonl")], "name": "crawl"}], out), str(state))
    assert redone.version == 2
    assert {
        p.relative_to(out): p.read_bytes()
        for p in (out / "v0002").rglob("*")
        if p.is_file() and p.name != "report.html"
    } == {k: v for k, v in version2.items() if k.name != "report.html"}


def test_refresh_refuses_a_plain_run_output_and_a_tampered_version(tmp_path: Path):
    landing, out, state = tmp_path / "landing", tmp_path / "corpus", tmp_path / "state"
    land(landing, "w1")
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"counts": {}}))
    with pytest.raises(StateError, match="output of a `winnow run`"):
        refresh(config_for(landing, out), str(state))
    (out / "manifest.json").unlink()
    refresh(config_for(landing, out), str(state))
    (out / "v0001" / "manifest.json").write_text("{}")
    with pytest.raises(StateError, match="v0001 is missing or was changed"):
        refresh(config_for(landing, out), str(state))


def test_refresh_needs_exact_dedup(tmp_path: Path):
    land(tmp_path / "landing", "w1")
    config = make_config([str(tmp_path / "landing" / "*" / "*.jsonl")], tmp_path / "out", dedup={"enabled": False})
    with pytest.raises(ValueError, match=r"dedup\.exact"):
        refresh(config, str(tmp_path / "state"))


def test_a_redo_removes_only_the_minhash_index_files_an_uncommitted_version_appended(tmp_path: Path):
    from winnow.run.refresh import _discard_uncommitted
    from winnow.run.state import RefreshState, VersionRecord

    index = tmp_path / "state" / "minhash"
    committed = ["_index.json", "band=0/part-aaa.parquet", "band=1/part-bbb.parquet"]
    for name in [*committed, "band=0/part-stray.parquet", "band=3/part-stray.parquet"]:
        (index / name).parent.mkdir(parents=True, exist_ok=True)
        (index / name).write_bytes(b"x")
    record = VersionRecord(1, "v0001", [], {}, "", "", index_files=committed)
    (tmp_path / "corpus" / "v0002" / "data").mkdir(parents=True)
    _discard_uncommitted(
        RefreshState(str(tmp_path / "corpus"), [record]), str(tmp_path / "corpus"), str(tmp_path / "state"), str(index)
    )
    assert sorted(str(p.relative_to(index)) for p in index.rglob("*") if p.is_file()) == committed
    assert not (tmp_path / "corpus" / "v0002").exists()


def test_submit_only_then_finalize_only_commits_the_version_like_one_refresh(tmp_path: Path):
    """The Flex Template flow, on the local runner: the launcher submits, a later process finalises."""
    from winnow.run.execute import NothingStagedError

    landing, out, state = tmp_path / "landing", tmp_path / "corpus", tmp_path / "state"
    land(landing, "w1")
    submitted = refresh(config_for(landing, out), str(state), submit_only=True)
    assert submitted.version == 1 and submitted.submitted_only
    assert not (state / STATE_FILE).exists() and not (out / "manifest.json").exists()
    assert (out / "v0001" / "_staging" / "_summary.json").exists()

    land(landing, "w2")  # lands while the job runs: finalising still commits exactly what was submitted
    done = refresh(config_for(landing, out), str(state), finalize_only=True)
    assert done.version == 1 and done.run.resumed
    assert [fp.source for fp in done.new_inputs] == ["crawl/w1/batch.jsonl"]
    manifest = json.loads((out / "v0001" / "manifest.json").read_text())
    assert manifest["counts"]["input"] == len(WEEKS["w1"]) and manifest["counts"]["duplicate"] == 2
    with pytest.raises(NothingStagedError):
        refresh(config_for(landing, out), str(state), finalize_only=True)


def test_refresh_whose_last_stage_writes_a_table(tmp_path: Path):
    """The default config ends with the pack stage, which writes ``contexts/``: the refresh wrapper
    that records accepted hashes must pass the stage's tables on (it used to drop their specs)."""
    landing, out, state = tmp_path / "landing", tmp_path / "corpus", tmp_path / "state"
    order = {"enabled": True, "method": "none"}
    pack = {"mode": "concat", "context_tokens": 256}
    for week in ("w1", "w2"):
        land(landing, week)
        inputs = [{"paths": [str(landing / "*" / "*.jsonl")], "name": "crawl"}]
        config = make_config(inputs, out, order=order, pack=pack)
        assert refresh(config, str(state)).version == int(week[1])
    for version in ("v0001", "v0002"):
        contexts = [r for p in (out / version / "contexts").rglob("*.parquet") for r in rows(p)]
        kept = [r for p in (out / version / "data").rglob("*.parquet") for r in rows(p)]
        assert contexts and kept and {row["id"] for row in kept} <= {i for c in contexts for i in c["doc_ids"]}
    across = {r["id"]: r["duplicate_of"] for r in removed_rows(out) if r["id"] == "d02-again"}
    assert across == {"d02-again": "d02"}  # week 2 was still deduped against week 1's recorded hashes
