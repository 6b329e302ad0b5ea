"""The bundled sample through a run configured for both long-context methods: ``mix.skillit`` (mode plan)
turns a skills graph and a proxy's losses into the phases of the schedule, and ``pack: {mode: utk}`` packs
each phase into Untie-the-Knots contexts. Accounting closes, and the bytes are the same run after run and
with the input in reverse order.

Skills are the sample's source corpora. The reader files a JSONL record's own ``metadata`` object one level
down (``metadata.metadata.source_corpus``), out of reach of ``domain_field``; so the sample is written as
one file per source corpus and the skill is the ``source`` column (the file name), as with one input per
source in a RedPajama-style mix. Tagging by topic would do too, but costs ~100 s per run here.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from conftest import make_config, run

SAMPLE = Path(__file__).resolve().parents[2] / "winnow" / "data" / "sample" / "web.jsonl.gz"
SKILLS = [
    f"{name}.jsonl.gz"
    for name in (
        "weborganizer-dclm",
        "dclm-human-quality",
        "lee-abc-news",
        "data-juicer-demos",
        "plagiarism-short-answers",
        "nltk-corpora_webtext",
    )
]
ROUNDS = 3


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """The sample split into one file per source corpus, in its own order and reversed, under the same
    file names (a file's name is its documents' ``source``); returns the two folders."""
    # split("\n"), not splitlines(): some texts hold U+2028, which splitlines() would cut at
    lines = gzip.decompress(SAMPLE.read_bytes()).decode("utf-8").rstrip("\n").split("\n")
    by_source: dict[str, list[str]] = {}
    for line in lines:
        name = json.loads(line)["metadata"]["source_corpus"].replace("/", "_")
        by_source.setdefault(f"{name}.jsonl.gz", []).append(line)
    folders = []
    for kind in ("forward", "reversed"):
        folder = tmp_path / kind
        folder.mkdir()
        for name, members in by_source.items():
            ordered = members if kind == "forward" else members[::-1]
            (folder / name).write_bytes(gzip.compress(("\n".join(ordered) + "\n").encode("utf-8"), mtime=0))
        folders.append(folder)
    return folders[0], folders[1]


def write_plan_files(tmp_path: Path) -> dict[str, str]:
    """A chain graph over the skills and the loss table of a proxy that ran Skill-it for two rounds."""
    matrix = [[1.0 if i == j else 0.5 if j == i + 1 else 0.0 for j in range(len(SKILLS))] for i in range(len(SKILLS))]
    (tmp_path / "graph.json").write_text(json.dumps({"train": SKILLS, "eval": SKILLS, "matrix": matrix}))
    header = ["round", "step", *(f"loss_{s}" for s in SKILLS)]
    rows = [
        [0, 0, 3.2, 3.4, 3.0, 3.6, 3.1, 3.9],
        [0, 100, 3.0, 3.3, 2.9, 3.5, 3.0, 3.8],
        [1, 200, 2.7, 3.2, 2.8, 3.3, 2.9, 3.7],
        [1, 300, 2.5, 3.1, 2.8, 3.2, 2.9, 3.7],
    ]
    (tmp_path / "losses.csv").write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return {"graph": str(tmp_path / "graph.json"), "losses": str(tmp_path / "losses.csv")}


def configured_run(path: Path, out: Path, plan: dict[str, str]) -> Any:
    config = make_config(
        [str(path / "*.jsonl.gz")],
        out,
        mix={
            "enabled": True,
            "domain_field": "source",
            "skillit": {"mode": "plan", "rounds": ROUNDS, "eta": 0.5, "tokens_per_round": 60_000, **plan},
        },
        order={"enabled": True, "method": "none"},
        pack={"mode": "utk", "context_tokens": 512, "utk": {"probability": 0.8}},
    )
    return run(config)


def parquet_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def rows_of(root: Path, kind: str) -> list[dict]:
    return [row for f in sorted((root / kind).rglob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_skillit_plan_and_utk_packing_run_from_config_on_the_bundled_sample(tmp_path: Path) -> None:
    forward, backward = write_inputs(tmp_path)
    plan = write_plan_files(tmp_path)
    first = configured_run(forward, tmp_path / "a", plan)
    manifest = first.manifest
    counts = manifest["counts"]
    assert counts["input"] == 2967
    assert counts["input"] == counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    assert counts["filtered_by_reason"]["mix:not_selected"] > 0  # sources that are not skills
    assert counts["rejected"] == 0

    phases = [f"skillit-{t}" for t in range(ROUNDS)]
    rounds = sorted((r for r in manifest["mixture"] if r.get("kind") == "skillit_round"), key=lambda r: r["round"])
    assert [r["phase"] for r in rounds] == phases and all(set(r["weights"]) == set(SKILLS) for r in rounds)
    assert rounds[1]["weights"] != rounds[2]["weights"]

    out = tmp_path / "a"
    docs = rows_of(out, "data")
    assert {d["phase"] for d in docs} == set(phases)
    assert {d["source"] for d in docs} == set(SKILLS)
    phase_of = {(d["id"], d["epoch"]): d["phase"] for d in docs}
    ids_by_phase = {p: {doc_id for (doc_id, _), q in phase_of.items() if q == p} for p in phases}

    contexts = rows_of(out, "contexts")
    assert {(out / "contexts" / f"phase={p}").is_dir() for p in phases} == {True}
    for context in contexts:
        assert set(context["doc_ids"]) <= ids_by_phase[context["phase"]]  # a context never mixes phases
        assert context["context_id"].startswith(f"phase={context['phase']}/")
        assert len(context["tokens"]) <= 513 and len(context["loss_mask"]) == len(context["tokens"]) - 1
    packing = {r["phase"]: r for r in manifest["packing"]}
    assert sorted(packing) == phases
    for phase, record in packing.items():
        mine = [c for c in contexts if c["phase"] == phase]
        assert record["mode"] == "utk" and record["contexts"] == len(mine)
        assert record["contexts_with_utk"] == sum(c["utk_applied"] for c in mine) > 0
        assert record["truncated_tokens"] == sum(c["truncated_tokens"] for c in mine) > 0
        assert record["accounting"]["closes"]
        assert record["documents"] == sum(1 for q in phase_of.values() if q == phase)
    for part in (out / "contexts").rglob("*.parquet"):
        metadata = pq.ParquetFile(part).metadata
        assert all(metadata.row_group(i).num_rows <= 64 for i in range(metadata.num_row_groups))
    assert max(r["contexts"] for r in packing.values()) > 64  # so the row-group cap is exercised

    # One rerun on the reversed input: equal bytes there also cover a plain rerun (kept to one for CI time).
    reversed_input = configured_run(backward, tmp_path / "c", plan)
    written = parquet_files(out)
    assert written and parquet_files(tmp_path / "c") == written
    other = reversed_input.manifest
    assert other["counts"] == counts
    assert other["packing"] == manifest["packing"] and other["mixture"] == manifest["mixture"]
