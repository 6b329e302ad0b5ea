"""Live progress for local runs: DoFns tally counts into small files the CLI polls.

Beam metrics are only readable after a local run ends, so taps write their running
totals (per process, atomically replaced at most once a second) into a progress folder.
On a remote runner the folder is not set and the taps are pure pass-throughs; the
runner's own UI shows the Beam counters there.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam

from winnow.core.batches import document_count

_FLUSH_SECONDS = 1.0


class ProgressTap(beam.DoFn):
    """Pass-through that counts documents (a batch's rows) under ``label`` for the local progress display."""

    def __init__(self, label: str, folder: str | None):
        self.label = label
        self.folder = folder

    def setup(self) -> None:
        self._count = 0
        self._last = 0.0
        self._file = None
        if self.folder:
            self._file = Path(self.folder) / f"{self.label}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"

    def process(self, element: Any):
        self._count += document_count(element)
        if self._file is not None and time.monotonic() - self._last > _FLUSH_SECONDS:
            self._flush()
        yield element

    def finish_bundle(self) -> None:
        if self._file is not None:
            self._flush()

    def _flush(self) -> None:
        self._last = time.monotonic()
        temp = self._file.with_suffix(".tmp")
        temp.write_text(json.dumps({"label": self.label, "count": self._count}))
        os.replace(temp, self._file)


def read_progress(folder: str | Path) -> dict[str, int]:
    """Sum of every tap's latest count, by label."""
    totals: dict[str, int] = {}
    for path in Path(folder).glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now
        totals[data["label"]] = totals.get(data["label"], 0) + int(data["count"])
    return totals
