"""The review sheet, Beam-free: a stratified sample of a finished run's documents for human reviewers.

Per source (the input ``name`` a document's ``source`` starts with, else its first path part),
the ``per_source`` documents with the smallest ``H64(id, "review", seed)``; with ``by_format`` the
source's quota is spread evenly over its ``format`` values (round robin over the formats in name
order, each in hash order), so a format holding 2% of a source still gets rows. Only first
copies are sampled (``epoch`` 0): repeats show nothing new. Memory is bounded by sources ×
formats × ``per_source`` rows, whatever the run's size.

The sheet has the columns of a decisions file (``id, source, decision, label, tokens``) plus what a
reviewer reads (``format``, ``topic``, ``url``, ``n_tokens``, ``text``); reviewers fill in
``decision`` and ``label`` and the same file becomes ``review.decisions``.
"""

from __future__ import annotations

import csv
import heapq
import html
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from winnow.core.hashing import h64
from winnow.core.sources import matching_key

SHEET_COLUMNS = ["id", "source", "decision", "label", "tokens", "format", "topic", "url", "n_tokens", "text"]
READ_COLUMNS = ["id", "source", "url", "text", "format", "topic", "n_tokens", "epoch"]
REVIEW_PURPOSE = "review"


def source_key(source: str, names: Sequence[str]) -> str:
    """The source a document is reviewed under: the input name its ``source`` starts with, else its first path part."""
    return matching_key(source, names) or source.split("/", 1)[0]


def run_rows(run_dir: str | Path, kind: str = "data") -> Iterator[dict[str, Any]]:
    """The documents of a run's ``data`` (or ``removed``) shards, phase folders included, batch by batch."""
    folder = Path(run_dir) / kind
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards under {folder}")
    dataset = ds.dataset(files, format="parquet")
    columns = [c for c in READ_COLUMNS if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=columns, batch_size=4096):
        yield from batch.to_pylist()


def review_sample(
    rows: Iterable[dict[str, Any]],
    per_source: int,
    seed: int,
    by_format: bool = True,
    names: Sequence[str] = (),
    text_chars: int = 2000,
) -> list[dict[str, Any]]:
    """The sheet's rows: per source, ``per_source`` documents in hash order (spread over formats)."""
    strata: dict[tuple[str, str], list[tuple[int, str, dict[str, Any]]]] = {}
    for row in rows:
        if (row.get("epoch") or 0) != 0:
            continue  # a repeat (mix epochs, INGENIOUS rounds) shows nothing new
        key = source_key(str(row.get("source") or ""), names)
        stratum = (key, str(row.get("format") or "") if by_format else "")
        heap = strata.setdefault(stratum, [])
        entry = (-h64(str(row["id"]), REVIEW_PURPOSE, seed), str(row["id"]), row)
        if len(heap) < per_source:
            heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
            heapq.heapreplace(heap, entry)
    sheet: list[dict[str, Any]] = []
    for source in sorted({s for s, _ in strata}):
        queues = [sorted(strata[(s, fmt)], key=lambda e: (-e[0], e[1])) for s, fmt in sorted(strata) if s == source]
        picked = 0
        while picked < per_source and any(queues):
            for queue in queues:
                if queue and picked < per_source:
                    sheet.append(_sheet_row(queue.pop(0)[2], source, text_chars))
                    picked += 1
    return sheet


def _sheet_row(row: dict[str, Any], source: str, text_chars: int) -> dict[str, Any]:
    text = str(row.get("text") or "")
    return {
        "id": row["id"],
        "source": source,
        "decision": "",
        "label": "",
        "tokens": "",
        "format": row.get("format") or "",
        "topic": row.get("topic") or "",
        "url": row.get("url") or "",
        "n_tokens": row.get("n_tokens") if row.get("n_tokens") is not None else "",
        "text": text if len(text) <= text_chars else text[:text_chars] + " […]",
    }


def write_sheet_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_sheet_html(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "winnow review sheet") -> None:
    """A read-only page of the sheet (decisions go into the CSV)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("id", "source", "format", "topic", "url", "text"))
    body = []
    for row in rows:
        cells = [html.escape(str(row[c])) for c in ("id", "source", "format", "topic", "url")]
        text = html.escape(str(row["text"])).replace("\n", "<br>")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td class=text>{text}</td></tr>")
    page = (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font:14px sans-serif}td{vertical-align:top;border-top:1px solid #ccc;padding:4px}"
        "td.text{max-width:70em;white-space:normal}</style>"
        f"<h1>{html.escape(title)}</h1><p>{len(rows)} documents. Write each verdict in the CSV sheet: "
        "<code>decision</code> keep or drop, and a <code>label</code> for drops (the removal reason becomes "
        "<code>review:&lt;label&gt;</code>).</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table>"
    )
    Path(path).write_text(page, encoding="utf-8")
