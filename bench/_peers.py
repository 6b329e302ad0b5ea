"""Peers that conflict with winnow's pins live in their own virtualenvs, built on first use.

datatrove 0.10.1 pins versions that clash with winnow's stack, so a bench script that
compares against it runs it in ``bench/.venvs/datatrove`` through a subprocess.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import venv
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"
DATATROVE_REQUIREMENTS = ["datatrove[processing]==0.10.1", "spacy==3.8.18", "orjson==3.13.0"]


def peer_python(name: str, requirements: list[str]) -> Path:
    """Path to the python of a peer venv, creating and installing it once (lock-protected)."""
    root = VENVS / name
    python = root / "bin" / "python"
    done = root / ".installed"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            print(f"[bench] building peer venv {root} with {requirements} (once)", file=sys.stderr)
            venv.EnvBuilder(with_pip=True, clear=True).create(root)
            env = dict(os.environ)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, env=env)
            done.write_text("\n".join(requirements))
    return python


def datatrove_python() -> Path:
    return peer_python("datatrove", DATATROVE_REQUIREMENTS)
