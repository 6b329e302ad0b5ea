"""Run winnow's real pipeline (Beam, local runner) on a list of documents: the benches' full-pipeline figures.

The documents go to a JSONL file, a config names the stages' sections, ``run_pipeline`` runs them
as ``winnow run`` would (graph, accounting check, manifest), and the kept and removed rows come back.
One in-memory worker: every step runs in this process, so its CPU time is the run's cost even on a
machine that other jobs share (wall clock is printed too, but it moves with their load).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from winnow.config import parse_config
from winnow.run.execute import run_pipeline


@dataclass
class PipelineRun:
    manifest: dict[str, Any]
    kept: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    seconds: float  # wall clock of the whole run (graph, pipeline, finalisation)
    cpu_seconds: float  # CPU time of this process (the in-memory runner runs every step in it)

    def section(self, name: str) -> list[dict[str, Any]]:
        return self.manifest.get(name, [])


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [row for path in sorted(folder.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def run_winnow(docs: list[dict[str, Any]], stages: list[str], workers: int = 1, **sections: Any) -> PipelineRun:
    """Run ``stages`` of winnow on ``docs`` (dicts with ``id``, ``text``, optional ``url``) with ``sections``."""
    with tempfile.TemporaryDirectory(prefix="winnow-bench-") as folder:
        root = Path(folder)
        with (root / "docs.jsonl").open("w", encoding="utf-8") as handle:
            for doc in docs:
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
        config = parse_config(
            {
                "inputs": [{"paths": [str(root / "docs.jsonl")]}],
                "output": {"dir": str(root / "out"), "report": {"enabled": False}},
                "runner": {"direct_num_workers": workers, "direct_running_mode": "in_memory"},
                **sections,
            },
            origin="<bench>",
        )
        start, cpu = time.perf_counter(), time.process_time()
        result = run_pipeline(config, stages)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        kept, removed = _rows(root / "out" / "data"), _rows(root / "out" / "removed")
        return PipelineRun(result.manifest, kept, removed, seconds, cpu_seconds)
