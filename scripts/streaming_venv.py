"""The virtualenv that holds MosaicML Streaming, for reading winnow's MDS output with streaming's own code.

``mosaicml-streaming`` 0.13.0 needs numpy < 2.2, xxhash < 4 and transformers < 5, which clash with
winnow's pins, so it cannot be installed next to winnow: the MDS tests and ``bench/token_output.py``
run its readers in this venv through a subprocess. It is built once per machine (a few minutes,
lock-protected) under ``~/.cache/winnow/venvs`` (``WINNOW_PEER_VENVS`` moves it); CI builds it
before the test suite (``.ci/run``), and a test that finds it missing builds it itself.

Standard library only, so it runs before winnow's own venv exists:

    python3.11 scripts/streaming_venv.py      # builds it if needed, prints its python
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import venv
from pathlib import Path

NAME = "streaming-0.13.0"
# torch 2.13.0 is the CPU wheel winnow uses; torchvision/transformers/numpy: the newest streaming accepts.
STREAMING_REQUIREMENTS = [
    "mosaicml-streaming==0.13.0",
    "numpy==2.1.3",
    "torch==2.13.0",
    "torchvision==0.28.0",
    "transformers==4.57.6",
]

# Put first in a script run by the venv's python. torchvision's PyPI wheel is a CUDA build that
# cannot load next to the CPU torch; streaming imports it only for its image datasets.
TORCHVISION_STUB = r"""
import importlib.machinery as _machinery, sys as _sys, types as _types
_tv = _types.ModuleType("torchvision")
_tv.__spec__ = _machinery.ModuleSpec("torchvision", None)
_tv.__version__ = "0.28.0"
_datasets = _types.ModuleType("torchvision.datasets")
_datasets.VisionDataset = _datasets.CIFAR10 = object
_transforms = _types.ModuleType("torchvision.transforms")
_functional = _types.ModuleType("torchvision.transforms.functional")
_functional.to_tensor = lambda x: x
_tv.datasets, _tv.transforms, _transforms.functional = _datasets, _transforms, _functional
_sys.modules.update({"torchvision": _tv, "torchvision.datasets": _datasets, "torchvision.transforms": _transforms,
                     "torchvision.transforms.functional": _functional})
"""


def venvs_dir() -> Path:
    return Path(os.environ.get("WINNOW_PEER_VENVS", Path.home() / ".cache" / "winnow" / "venvs"))


def streaming_python() -> Path:
    """The streaming venv's python, built first if it is missing or was built from other pins."""
    base = venvs_dir()
    root = base / NAME
    python = root / "bin" / "python"
    marker = root / ".installed"
    wanted = "\n".join(STREAMING_REQUIREMENTS)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists() or marker.read_text() != wanted:
            print(f"building {root} with {STREAMING_REQUIREMENTS} (once)", file=sys.stderr)
            venv.EnvBuilder(with_pip=True, clear=True).create(root)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *STREAMING_REQUIREMENTS], check=True)
            marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(streaming_python())
