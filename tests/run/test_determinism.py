"""Same input, config and seed → the same output bytes, whatever the input order, the batch sizes,
the number of workers, or the CPU features numpy may use (docs/determinism.md).

Every stage that writes a float or a rank runs here on real pages: langid scores, filter counts,
MinHash clusters, the three default scorers, topic/format probabilities, selection keys, the mix's
phases and repeats, ICP ranks (with k-means cells) and packed contexts. A variant that changes one
thing must reproduce every Parquet file byte for byte; a failure names the column that moved.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import DATA, make_config
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

from winnow.beam.contract import PerDocumentStage
from winnow.run.execute import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
# Data, removed, rejected, contexts and the token files (Megatron, MDS, Parquet) are compared.
OUTPUT_SUFFIXES = {".parquet", ".bin", ".idx", ".mds"}


def _corpus() -> list[dict[str, Any]]:
    """300 web pages (with URLs), 75 documents with planted near-duplicates, 10 raw HTML pages."""
    rows = [json.loads(line) for line in (DATA / "ordering" / "weborganizer_small.jsonl").read_text().splitlines()]
    with gzip.open(DATA / "dedup" / "pairs_docs.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows += [{"id": r["id"], "text": r["text"]} for r in map(json.loads, handle)]
    with gzip.open(DATA / "html" / "pages.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows += [{"id": r["id"], "url": r.get("url"), "html": r["html"]} for r in map(json.loads, handle)]
    return rows


def _write(rows: list[dict[str, Any]], folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "docs.jsonl"  # the same relative name in every variant: `source` must not differ
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _sections(batch: int) -> dict[str, Any]:
    scorers = [
        {"name": "preselect", "backend": "fasttext", "path": "winnow:models/preselect/preselect.ftz",
         "columns": ["preselect_score"], "batch_size": batch},
        {"name": "qurating", "backend": "qurating", "path": "winnow:models/qurating/qurater-hashed.npz",
         "batch_size": batch},
        {"name": "dataman", "backend": "dataman", "path": "winnow:models/dataman/dataman-local.npz",
         "batch_size": batch},
    ]  # fmt: skip
    tagger = {"mode": "local", "batch_size": batch}
    return {
        "extract": {"enabled": True},
        "langid": {"enabled": True, "batch_size": batch},
        "filter": {"enabled": True},
        "dedup": {"minhash": {"enabled": True}},
        "score": {"enabled": True, "scorers": scorers},
        "tag": {"enabled": True, "topic": {**tagger, "path": "winnow:models/tagger/topic-tagger.zip"},
                "format": {**tagger, "path": "winnow:models/tagger/format-tagger.zip"}},
        "select": {"enabled": True, "rule": "gumbel_top_k", "columns": ["educational_value_average"],
                   "temperature": 2.0, "weight": "tokens", "fraction": 0.7},
        "mix": {"enabled": True, "domain_field": "topic", "fraction": 1.0, "max_epochs": 2,
                "schedule": [
                    {"name": "base", "start_fraction": 0.0, "end_fraction": 0.8, "weights": {"scale": {"Adult": 0.0}}},
                    {"name": "final", "start_fraction": 0.8, "end_fraction": 1.0,
                     "weights": {"scale": {"Science & Tech.": 3.0, "Health": 2.0}}},
                ]},
        "order": {"enabled": True, "method": "icp", "embedder": "static", "embed_batch_size": batch,
                  "partition_below": 40, "cell_size": 48, "sample_size": 100, "store_embeddings": True},
        "pack": {"mode": "concat", "context_tokens": 1024},
    }  # fmt: skip


def _run(tmp: Path, name: str, rows: list[dict[str, Any]], batch: int, runner: dict[str, Any]) -> Path:
    source = _write(rows, tmp / name / "in")
    out = tmp / name / "out"
    # The reader's Arrow batches hold `batch` documents too (winnow.core.batches).
    config = make_config([{"paths": [str(source)], "batch_rows": batch}], out, runner=runner, **_sections(batch))
    result = run_pipeline(config)
    assert result.manifest["counts"]["kept"] > 50
    return out


def _files(out: Path) -> dict[str, bytes]:
    files = (p for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in OUTPUT_SUFFIXES)
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def _explain(a: Path, b: Path, name: str) -> str:
    """Which columns of one Parquet file differ, for a readable failure."""
    if not name.endswith(".parquet"):
        return f"{name}: bytes differ"
    left, right = pq.read_table(a / name), pq.read_table(b / name)
    if left.num_rows != right.num_rows:
        return f"{name}: {left.num_rows} rows vs {right.num_rows}"
    moved = [c for c in left.column_names if left.column(c).to_pylist() != right.column(c).to_pylist()]
    return f"{name}: columns {moved} differ"


def assert_same_bytes(a: Path, b: Path) -> None:
    first, second = _files(a), _files(b)
    assert sorted(first) == sorted(second)
    different = [_explain(a, b, name) for name in first if first[name] != second[name]]
    assert not different, different


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("determinism")
    rows = _corpus()
    out = _run(tmp, "reference", rows, 64, {"direct_num_workers": 1, "direct_running_mode": "in_memory"})
    names = {p.parent.name for p in out.rglob("*.parquet")}
    assert {"phase=base", "phase=final", "contexts", "removed"} <= names | {
        p.parent.parent.name for p in out.rglob("*")
    }
    return out, rows


@pytest.mark.slow
def test_reversed_input_and_batches_of_one_give_the_same_bytes(reference, tmp_path, monkeypatch) -> None:
    out, rows = reference
    # The per-document stages (extract, normalize, langid's caller, filter) batch through one transform too.
    monkeypatch.setattr(PerDocumentStage.__init__, "__defaults__", (1, ()))
    again = _run(
        tmp_path, "reversed", list(reversed(rows)), 1, {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
    )
    assert_same_bytes(out, again)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_bytes(reference, tmp_path) -> None:
    out, rows = reference
    again = _run(tmp_path, "workers", rows, 64, {"direct_num_workers": 2, "direct_running_mode": "multi_processing"})
    assert_same_bytes(out, again)


def _numpy_features() -> str:
    """numpy's CPU-dispatched SIMD targets found on this machine (to switch them all off in a child)."""
    return " ".join(sorted(f for f in __cpu_dispatch__ if __cpu_features__.get(f)))


@pytest.mark.slow
def test_default_run_on_the_bundled_sample_twice_in_fresh_processes(default_sample_run, tmp_path) -> None:
    """The README's main job, twice: once as a user runs it (the default running mode, which is one
    in-memory process for the sample; the shared run of conftest), once in fresh processes with every
    SIMD path numpy could dispatch to switched off and two worker processes. Every output file must
    match: the floats cannot depend on the process, the worker count or the CPU's vectors."""
    assert default_sample_run.returncode == 0, default_sample_run.stderr[-3000:]
    second = tmp_path / "second"
    second.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    features = _numpy_features()
    other = {**env, "PYTHONHASHSEED": "2", "NPY_DISABLE_CPU_FEATURES": features}
    scalar = subprocess.run(
        [
            sys.executable,
            "-m",
            "winnow.cli.main",
            "run",
            "-q",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ],
        cwd=second,
        env=other,
        capture_output=True,
        text=True,
    )
    assert scalar.returncode == 0, scalar.stderr[-3000:]
    assert_same_bytes(default_sample_run.out, second / "winnow-out")
    shutil.rmtree(second)
