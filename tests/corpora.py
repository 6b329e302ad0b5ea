"""Real-text corpora shared by the refresh, resume and report tests: weekly landings and a small run."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DATA, make_config

SOURCE = [json.loads(line) for line in (DATA / "readers" / "sample.jsonl").read_text().splitlines() if line]


def docs(indices: range) -> list[dict]:
    return [{"id": f"d{i:02d}", "text": SOURCE[i]["text"]} for i in indices]


# Three weekly batches of real text. Week 1 has a within-batch copy and a case variant; week 2
# repeats a week-1 text under a higher id; week 3 repeats a week-2 text under a *lower* id (the
# documented difference from a full run), has a record without an id and two malformed lines.
WEEKS = {
    "w1": [
        *docs(range(0, 8)),
        {"id": "d00-copy", "text": SOURCE[0]["text"]},
        {"id": "d01-upper", "text": SOURCE[1]["text"].upper()},
    ],
    "w2": [
        *docs(range(8, 14)),
        {"id": "d02-again", "text": SOURCE[2]["text"]},
        {"id": "d09-copy", "text": SOURCE[9]["text"]},
    ],
    "w3": [*docs(range(14, 19)), {"id": "a-early", "text": SOURCE[10]["text"]}, {"text": SOURCE[19]["text"]}],
}


def land(folder: Path, week: str) -> None:
    target = folder / week
    target.mkdir(parents=True)
    lines = [json.dumps(record) for record in WEEKS[week]]
    if week == "w3":
        lines += ["{not json", json.dumps({"id": "empty", "text": "  "})]
    (target / "batch.jsonl").write_text("\n".join(lines) + "\n")


def config_for(landing: Path, out: Path):
    return make_config([{"paths": [str(landing / "*" / "*.jsonl")], "name": "crawl"}], out)


def run_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    records = [{"id": f"d{i:02d}", "text": r["text"]} for i, r in enumerate(SOURCE)]
    records += [{"id": f"d{i:02d}-copy", "text": SOURCE[i]["text"]} for i in range(6)]
    (folder / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{broken\n")
    return folder / "docs.jsonl"
