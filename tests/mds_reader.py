"""MDS output read back with MosaicML Streaming's own readers, in streaming's own venv.

The venv comes from ``scripts/streaming_venv.py`` (built once per machine; CI builds it before the
suite, a test that finds it missing builds it here). ``read_with_streaming`` runs one subprocess:
for each folder, ``LocalDataset`` reads every sample and ``StreamingDataset(validate_hash="sha256")``
streams the ids in order; each write job copies a folder through streaming's ``MDSWriter``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "streaming_venv.py"


def _venv_module() -> Any:
    spec = importlib.util.spec_from_file_location("streaming_venv", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


streaming_venv = _venv_module()

READER = r"""
import json, sys
from streaming import LocalDataset, MDSWriter, StreamingDataset

request = json.load(open(sys.argv[1]))
out = {"read": {}, "streamed": {}}
for folder in request["read"]:
    local = LocalDataset(folder)
    out["read"][folder] = [
        {"id": s["id"], "tokens": s["tokens"].tolist(), "dtype": s["tokens"].dtype.name}
        for s in (local[i] for i in range(len(local)))
    ]
    streamed = StreamingDataset(local=folder, shuffle=False, batch_size=1, validate_hash="sha256")
    out["streamed"][folder] = [s["id"] for s in streamed]
for job in request.get("write", []):
    source = LocalDataset(job["from"])
    with MDSWriter(columns={"id": "str", "tokens": "ndarray:" + job["dtype"]}, out=job["to"], hashes=["sha256"],
                   size_limit=job["size_limit"]) as writer:
        for i in range(len(source)):
            writer.write(source[i])
json.dump(out, open(sys.argv[2], "w"))
"""


def read_with_streaming(request: dict[str, Any], work: Path) -> dict[str, Any]:
    """``{"read": [folders], "write": [jobs]}`` → ``{"read": {folder: samples}, "streamed": {folder: ids}}``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "request.json").write_text(json.dumps(request))
    script = work / "read_with_streaming.py"
    script.write_text(streaming_venv.TORCHVISION_STUB + READER)
    answer = work / "answer.json"
    python = streaming_venv.streaming_python()
    subprocess.run(
        [str(python), "-W", "ignore", str(script), str(work / "request.json"), str(answer)], check=True, cwd=work
    )
    return json.loads(answer.read_text())
