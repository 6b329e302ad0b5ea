"""Crash-safe resume: kill -9 a run inside a stage or between finalisation steps, run it again,
and the shards, manifests (and refresh state) are byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_config
from corpora import config_for, land, run_corpus

from winnow.run.execute import MANIFEST

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# Runs one `run_pipeline` or `refresh` in a fresh interpreter; `kill` names where it SIGKILLs
# itself (no cleanup, no finally blocks), by patching the code at that point in this process.
# The in-memory runner executes DoFns in this process, so a kill inside a stage is real.
CHILD = r"""
import json, os, signal, sys
spec = json.loads(sys.argv[1])
kill = spec.get("kill")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kill == "inside-dedup":
    from winnow.stages.dedup import stage as dedup
    original = dedup.KeepOnePerHash.process
    seen = []
    def process(self, element):
        seen.append(1)
        if len(seen) == 3:
            die()
        yield from original(self, element)
    dedup.KeepOnePerHash.process = process
elif kill == "mid-finalize":
    from apache_beam.io.filesystems import FileSystems
    from winnow.run import execute as run
    original_finalize, original_rename = run.finalize, FileSystems.rename
    moves = []
    def finalize(*args, **kwargs):
        moves.append("started")
        return original_finalize(*args, **kwargs)
    def rename(sources, targets):
        if moves:
            moves.append(sources)
            if len(moves) == 3:
                die()  # two shards moved into place, the rest still staged, no manifest
        return original_rename(sources, targets)
    run.finalize = finalize
    FileSystems.rename = rename
elif kill == "after-manifest":
    from winnow.run import execute as run
    original = run.remove_tree
    def remove_tree(path):
        if path.endswith("_staging") and os.path.exists(os.path.join(path.rsplit("/", 1)[0], "manifest.json")):
            die()
        return original(path)
    run.remove_tree = remove_tree
elif kill == "before-commit":
    from winnow.run import refresh as module
    module.save_state = lambda *a, **k: die()
elif kill == "after-commit":
    from winnow.run import refresh as module
    module._write_corpus_files = lambda *a, **k: die()

from winnow.config import parse_config
config = parse_config(spec["config"])
if spec["mode"] == "run":
    from winnow.run.execute import run_pipeline
    result = run_pipeline(config)
    print(json.dumps({"resumed": result.resumed}))
else:
    from winnow.run.refresh import refresh
    result = refresh(config, spec["state"])
    print(json.dumps({"version": result.version, "resumed": bool(result.run and result.run.resumed)}))
"""


def child(mode: str, config, kill: str | None = None, state: Path | None = None) -> subprocess.CompletedProcess:
    spec = {"mode": mode, "config": config.model_dump(mode="json"), "kill": kill, "state": str(state)}
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def files(*folders: Path) -> dict[str, bytes]:
    """Every output byte that must survive a crash unchanged: all but the report (it holds timings)."""
    return {
        str(path.relative_to(folder.parent)): path.read_bytes()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in ("report.html", ".lock")
    }


@pytest.fixture(scope="module")
def run_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, dict[str, bytes]]:
    base = tmp_path_factory.mktemp("resume-run")
    config = make_config([str(run_corpus(base / "in"))], base / "out", output={"shards": {"target_rows": 5}})
    done = child("run", config)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = files(base / "out")
    assert sum(name.startswith("out/data/") for name in reference) >= 4
    shutil.rmtree(base / "out")
    return base, config, reference


@pytest.mark.parametrize(
    ("kill", "resumed"), [("inside-dedup", False), ("mid-finalize", True), ("after-manifest", True)]
)
def test_killed_run_reruns_to_identical_bytes(run_reference, kill: str, resumed: bool):
    base, config, reference = run_reference
    out = base / "out"
    shutil.rmtree(out, ignore_errors=True)
    crashed = child("run", config, kill)
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    if kill != "after-manifest":
        assert not (out / MANIFEST).exists()  # an interrupted output is never marked complete
    again = child("run", config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["resumed"] is resumed
    assert files(out) == reference
    assert not (out / "_staging").exists()


@pytest.fixture(scope="module")
def refresh_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    base = tmp_path_factory.mktemp("resume-refresh")
    landing, out, state = base / "landing", base / "corpus", base / "state"
    land(landing, "w1")
    assert child("refresh", config_for(landing, out), state=state).returncode == 0
    after_v1 = files(out, state)
    land(landing, "w2")
    done = child("refresh", config_for(landing, out), state=state)
    assert done.returncode == 0, done.stderr[-3000:]
    return base, after_v1, files(out, state)


def restore(base: Path, snapshot: dict[str, bytes]) -> None:
    for name in ("corpus", "state"):
        shutil.rmtree(base / name, ignore_errors=True)
    for name, payload in snapshot.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(payload)


@pytest.mark.parametrize("kill", ["inside-dedup", "before-commit", "after-commit"])
def test_killed_refresh_reruns_to_identical_corpus_and_state(refresh_reference, kill: str):
    base, after_v1, reference = refresh_reference
    restore(base, after_v1)
    landing, out, state = base / "landing", base / "corpus", base / "state"
    crashed = child("refresh", config_for(landing, out), kill, state)
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    corpus = json.loads((out / MANIFEST).read_text())
    if kill != "after-commit":
        assert [v["dir"] for v in corpus["versions"]] == ["v0001"]  # version 2 is not published
    again = child("refresh", config_for(landing, out), state=state)
    assert again.returncode == 0, again.stderr[-3000:]
    expected_version = None if kill == "after-commit" else 2  # committed already: only the corpus files are repaired
    assert json.loads(again.stdout.strip().splitlines()[-1])["version"] == expected_version
    assert files(out, state) == reference
    assert not (state / "_staging").exists()
