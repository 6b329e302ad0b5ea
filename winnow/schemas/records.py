"""Arrow schemas of the records winnow reads, passes between stages and writes.

In flight a document is a plain ``dict``; at the edges (Parquet shards, ``removed/``,
``rejected/``) it is an Arrow row of the schemas below. Base columns are always present;
each stage declares the columns it adds in ``STAGE_COLUMNS`` so that the writer knows the
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

# Columns each stage adds to kept documents. A stage registers its columns here (one place);
# the writer includes the columns of every stage that ran, null where a stage did not set one.
STAGE_COLUMNS: dict[str, list[pa.Field]] = {
    "extract": [],
    "normalize": [],
    "langid": [
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
    ],
    "filter": [
        pa.field("filter_lines_removed", pa.int32()),
        pa.field("filter_chars_removed", pa.int32()),
    ],
    "dedup": [
        pa.field("text_hash", pa.string()),
        # MinHash clusters: the kept document's own id when it has near-duplicates, else null.
        pa.field("cluster_id", pa.string()),
        pa.field("cluster_size", pa.int64()),
    ],
    "score": [
        pa.field("n_tokens", pa.int64()),
        pa.field("preselect_score", pa.float32()),
    ],
    # WebOrganizer topic/format (argmax name, id in the §6.1 order, its probability) and the
    # DataMan domain letter A–O (§6.2); *_probs only with tag.write_probabilities (else null).
    "tag": [
        pa.field("topic", pa.string()),
        pa.field("topic_id", pa.int32()),
        pa.field("topic_score", pa.float32()),
        pa.field("format", pa.string()),
        pa.field("format_id", pa.int32()),
        pa.field("format_score", pa.float32()),
        pa.field("domain", pa.string()),
        pa.field("topic_probs", pa.list_(pa.float32())),
        pa.field("format_probs", pa.list_(pa.float32())),
    ],
    "select": [
        pa.field("select_key", pa.float64()),
        # ``upsample: true``: 0 for a selected document, 1, 2, … for its repeats (METHODS §2.6).
        pa.field("epoch", pa.int32()),
    ],
    # Rows with epoch ≥ 1 are repeats of a kept document (mixing caps them); phase names the
    # shard set of a training-schedule phase (METHODS §6.4).
    "mix": [
        pa.field("epoch", pa.int32()),
        pa.field("phase", pa.string()),
    ],
    "order": [
        pa.field("order_rank", pa.int64()),
        # ICP cell the document was ordered in (k-means cell, "short" for docs under min_words).
        pa.field("order_cell", pa.string()),
        # Only with order.store_embeddings: the vector the kNN graph was built from.
        pa.field("embedding", pa.list_(pa.float32())),
        # Packing (winnow.transforms.pack): concat sets the context of the document's first
        # token and its offset in the whole packed stream; dd sets the piece/discard counts.
        pa.field("context_id", pa.int64()),
        pa.field("token_offset", pa.int64()),
        pa.field("dd_pieces", pa.int32()),
        pa.field("dd_discarded_tokens", pa.int32()),
    ],
}

REMOVED_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("duplicate_of", pa.string()),
    pa.field("url", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
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


def document_schema(stages: list[str], extra: list[pa.Field] | None = None) -> pa.Schema:
    """Schema of kept documents after running ``stages`` (in pipeline order).

    ``extra`` holds columns known only from the config (e.g. each configured scorer's).
    """
    fields = list(BASE_FIELDS)
    seen = {f.name for f in fields}
    for stage in stages:
        for field in STAGE_COLUMNS.get(stage, []):
            if field.name not in seen:
                fields.append(field)
                seen.add(field.name)
    for field in extra or []:
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


def metadata_json(metadata: Any) -> str | None:
    """Canonical JSON for the metadata column (sorted keys, so output bytes are stable)."""
    if metadata is None:
        return None
    if isinstance(metadata, str):
        return metadata
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str)
