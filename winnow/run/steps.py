"""The run graph's own worker-side steps (the kept-text check and the summary's counting and writing).

They live apart from ``graph.py`` because a Beam worker imports the module of every step it unpickles:
from here that is Beam, pyarrow and winnow's core, not the stage registry with every stage's modules,
which costs each worker process seconds of CPU before it processes a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from winnow.beam.contract import Document, ToDocuments, rejected
from winnow.beam.write import atomic_write_bytes
from winnow.core.batches import is_batch, select

_NO_TEXT = "HTML record has no text: enable the `extract` stage to extract it"


class RequireText(beam.DoFn):
    """Documents that still carry only HTML when the stages are done had no extract stage."""

    def process(self, doc: Document | Any) -> Iterator[Any]:
        if is_batch(doc):
            if "html" not in doc.schema.names:
                yield doc
                return
            html, text = doc.column("html").to_pylist(), doc.column("text").to_pylist()
            bad = [h is not None and not t for h, t in zip(html, text, strict=True)]
            if not any(bad):
                yield doc
                return
            if not all(bad):
                yield select(doc, [not b for b in bad])
            for row in ToDocuments().process(select(doc, bad)):
                yield rejected(row, "write", _NO_TEXT)
        elif "html" in doc and not doc.get("text"):
            yield rejected(doc, "write", _NO_TEXT)
        else:
            yield doc


def kept_kinds(element: Any) -> Iterator[tuple[str, int]]:
    """("kept", n) and ("repeats", n): rows with epoch ≥ 1 repeat a kept document."""
    if is_batch(element):
        epochs = element.column("epoch").to_pylist() if "epoch" in element.schema.names else []
        repeats = sum(1 for e in epochs if (e or 0) > 0)
        yield "kept", element.num_rows - repeats
        if repeats:
            yield "repeats", repeats
    else:
        yield ("repeats" if (element.get("epoch") or 0) > 0 else "kept"), 1


def removal_key(record: dict[str, Any]) -> tuple[str, str]:
    kind = "duplicate" if record.get("duplicate_of") is not None else "filtered"
    return (kind, record["reason"])


def write_summary(items: list[tuple[str, Any]], path: str) -> None:
    summary: dict[str, Any] = {
        "input": 0,
        "kept": 0,
        "repeats": 0,
        "removed": [],
        "rejected": [],
        "files": [],
        "sections": {},
    }
    for kind, value in items:
        if kind in ("input", "kept", "repeats"):
            summary[kind] += value
        elif kind == "removed":
            (removal_kind, reason), count = value
            summary["removed"].append({"kind": removal_kind, "reason": reason, "count": count})
        elif kind == "rejected":
            stage, count = value
            summary["rejected"].append({"stage": stage, "count": count})
        elif kind == "section":
            record = dict(value)
            summary["sections"].setdefault(record.pop("section", "selection"), []).append(record)
        else:
            summary["files"].append(value)
    summary["removed"].sort(key=lambda r: (r["kind"], r["reason"]))
    summary["rejected"].sort(key=lambda r: r["stage"])
    summary["files"].sort(key=lambda f: f["file"])
    for records in summary["sections"].values():
        records.sort(key=lambda r: json.dumps(r, sort_keys=True))
    atomic_write_bytes(path, json.dumps(summary, indent=1, sort_keys=True).encode())
