"""Arrow schemas of the records winnow reads, passes between stages and writes.

In flight a document is a plain ``dict``; at the edges (Parquet shards, ``removed/``,
``rejected/``) it is an Arrow row of the schemas below. Base columns are always present;
each stage declares the columns it adds in its ``StageSpec`` so that the writer knows the
final schema before any data moves and every shard of a run has the same schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1.0"

BASE_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    # Free-form metadata carried from the input, as a JSON object string: Parquet needs one
    # type per column and user metadata differs between corpora.
    pa.field("metadata", pa.string()),
]

REMOVED_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("duplicate_of", pa.string()),
    pa.field("url", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    # Evidence a stage measured for its decision: the text-level similarity of a near-duplicate to
    # the document it duplicates, and stage-specific detail as a JSON object string (e.g. the eval
    # items a decontaminated document matched). Null when the stage records none.
    pa.field("similarity", pa.float64()),
    pa.field("detail", pa.string()),
]

REJECTED_FIELDS: list[pa.Field] = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("offset", pa.int64()),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error", pa.string(), nullable=False),
    pa.field("doc_id", pa.string()),
    pa.field("raw", pa.binary(), nullable=False),
]

# Raw bytes kept in a dead-letter record are capped so one giant bad record cannot blow up
# the rejected/ files; the error message says the length of the original.
MAX_REJECTED_RAW_BYTES = 64 * 1024


def _with_version(fields: list[pa.Field], kind: str) -> pa.Schema:
    return pa.schema(
        fields, metadata={b"winnow.schema": kind.encode(), b"winnow.schema_version": SCHEMA_VERSION.encode()}
    )


def document_schema(columns: list[pa.Field]) -> pa.Schema:
    """Schema of kept documents: the base columns, then the stages' ``columns`` in order.

    A column two stages declare (``epoch``: select's repeats and mix's) appears once, first wins.
    """
    fields = list(BASE_FIELDS)
    seen = {f.name for f in fields}
    for field in columns:
        if field.name not in seen:
            fields.append(field)
            seen.add(field.name)
    return _with_version(fields, "document")


def removed_schema() -> pa.Schema:
    return _with_version(REMOVED_FIELDS, "removed")


def rejected_schema() -> pa.Schema:
    return _with_version(REJECTED_FIELDS, "rejected")


def derive_id(source: str, offset: int | str) -> str:
    """Stable id for a record without one: a hash of where it came from.

    The source path is used as given (not resolved) so the same relative layout gives the
    same ids on any machine.
    """
    digest = hashlib.blake2b(f"{source}\x00{offset}".encode(), digest_size=12).hexdigest()
    return f"w-{digest}"


def rejected_record(
    *,
    source: str,
    offset: int | None,
    raw: bytes,
    error: str,
    stage: str,
    doc_id: str | None = None,
) -> dict[str, Any]:
    """A dead-letter record: where the bad input came from, its bytes and a one-line reason."""
    error_line = " ".join(str(error).split())
    if len(raw) > MAX_REJECTED_RAW_BYTES:
        error_line += f" [raw truncated from {len(raw)} bytes]"
        raw = raw[:MAX_REJECTED_RAW_BYTES]
    return {
        "source": source,
        "offset": offset,
        "stage": stage,
        "error": error_line,
        "doc_id": doc_id,
        "raw": raw,
    }


def identity_key(doc: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """A total order on documents for the last word in every tie: the id, then what tells two
    documents apart when an input reuses an id (source, URL, metadata, text). Sorting by the id
    alone would leave same-id documents in arrival order, which Beam does not fix."""
    text = doc.get("text")
    return (
        str(doc.get("id")),
        str(doc.get("source") or ""),
        str(doc.get("url") or ""),
        metadata_json(doc.get("metadata")) or "",
        text if isinstance(text, str) else "",
    )


def metadata_json(metadata: Any) -> str | None:
    """Canonical JSON for the metadata column (sorted keys, so output bytes are stable)."""
    if metadata is None:
        return None
    if isinstance(metadata, str):
        return metadata
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str)
