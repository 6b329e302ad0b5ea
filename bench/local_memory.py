"""Peak memory of a local run as the corpus grows (the README's "Memory on one machine").

Runs `winnow run --stages normalize,dedup` (the default local running mode, `auto`, which runs
these light stages in one in-memory process; `--mode=multi_processing` for one worker process per
core) on the real-text corpora `io_throughput.py` builds, at each size given, and samples the
summed RSS of the run's whole process tree every 0.5 s. The sum counts a page shared by several
processes in each of them, so it is an upper bound.

    python bench/local_memory.py 100 200 400 [--mode=multi_processing]     # uncompressed MB
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from io_throughput import build_corpus

WINNOW = Path(sys.executable).with_name("winnow")


def tree_rss(root: psutil.Process) -> int:
    """Summed RSS of ``root`` and every process below it (processes that end meanwhile count 0)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def measure(megabytes: int, workdir: Path, mode: str | None = None) -> dict[str, float | str]:
    corpus = build_corpus(megabytes)
    out = workdir / f"out-{megabytes}"
    command = [str(WINNOW), "run", "-q", "--stages", "normalize,dedup", "--input", str(corpus), "--output", str(out)]
    if mode is not None:
        command.append(f"--direct_running_mode={mode}")
    started = time.monotonic()
    run = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL)
    root, peak = psutil.Process(run.pid), 0
    while run.poll() is None:
        peak = max(peak, tree_rss(root))
        time.sleep(0.5)
    if run.returncode != 0:
        raise SystemExit(f"winnow run failed at {megabytes} MB (exit {run.returncode})")
    return {
        "mode": mode or "auto",
        "uncompressed_mb": megabytes,
        "gz_mb": round(corpus.stat().st_size / 2**20, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "peak_tree_rss_mb": round(peak / 2**20),
        "rss_per_input_byte": round(peak / (megabytes * 2**20), 1),
    }


def main() -> None:
    args = sys.argv[1:]
    mode = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--mode=")), None)
    sizes = [int(arg) for arg in args if not arg.startswith("--")] or [100, 200, 400]
    with tempfile.TemporaryDirectory(prefix="winnow-memory-") as tmp:
        for size in sizes:
            print(json.dumps(measure(size, Path(tmp), mode)), flush=True)


if __name__ == "__main__":
    main()
