"""Documents as Arrow record batches: the form documents travel in between per-document stages.

A Beam element costs about 10 µs on the local runner and a pickled dict costs its keys again per
document, so the reader emits ``pa.RecordBatch`` elements of many documents and the stages that
understand them (``StageSpec.batches``) work on whole columns; a stage that does not gets the
documents as dicts (``documents``) and its output is batched again where that pays. Single dicts may
travel beside batches (WARC records, documents a stage changed one by one): every consumer accepts
both (``as_documents``, ``document_count``).

In a batch ``metadata`` is its canonical JSON string (``winnow.core.schemas.metadata_json``), as in
the written shards. ``html`` is a column only while some document of the batch still carries raw
HTML; a null there means the key is absent from that document, because stages test ``"html" in
doc``. Values are what the dict would hold: nothing here depends on how documents were batched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from winnow.core.schemas import BASE_FIELDS, metadata_json

Document = dict[str, Any]
DocumentBatch = pa.RecordBatch
# Keys whose absence means something (a document without ``html`` was extracted or never was HTML):
# a null there is dropped when a batch becomes dicts.
PRESENCE_KEYS = ("html",)
_BASE_TYPES = {field.name: field.type for field in BASE_FIELDS}


def is_batch(element: Any) -> bool:
    return isinstance(element, pa.RecordBatch)


def document_count(element: Any) -> int:
    """Documents an element holds: a batch's rows, or 1 for a dict."""
    return element.num_rows if isinstance(element, pa.RecordBatch) else 1


def column_values(element: Any, name: str) -> list[Any]:
    """One key's value per document of an element (a batch's column, None where absent)."""
    if isinstance(element, pa.RecordBatch):
        if name not in element.schema.names:
            return [None] * element.num_rows
        return element.column(name).to_pylist()
    return [element.get(name)]


def documents(batch: pa.RecordBatch) -> list[Document]:
    """The batch's documents as dicts (metadata stays its JSON string)."""
    rows = batch.to_pylist()
    present = [key for key in PRESENCE_KEYS if key in batch.schema.names]
    for key in present:
        for row in rows:
            if row[key] is None:
                del row[key]
    return rows


def as_documents(element: Any) -> list[Document]:
    """A batch's documents, or ``[element]`` for a single document."""
    return documents(element) if isinstance(element, pa.RecordBatch) else [element]


def batch_of(
    docs: Sequence[Document], schema: pa.Schema | None = None, fields: Iterable[pa.Field] = ()
) -> pa.RecordBatch:
    """Documents → one batch. Columns keep the order of ``schema`` (an input batch's), then new keys in
    order of first appearance; types come from ``schema``, then ``fields`` (what a stage declares),
    then the base columns, else Arrow infers them. A key a document lacks is null there;
    ``metadata`` dicts become their canonical JSON."""
    known: dict[str, pa.DataType] = {f.name: f.type for f in fields}
    names: dict[str, None] = {}
    if schema is not None:
        known.update({f.name: f.type for f in schema})
        names.update(dict.fromkeys(schema.names))
    for doc in docs:
        for key in doc:
            if key not in names:
                names[key] = None
    arrays, out_fields = [], []
    for name in names:
        values = [doc.get(name) for doc in docs]
        if name == "metadata":
            values = [metadata_json(v) for v in values]
        if name in PRESENCE_KEYS and all(v is None for v in values):
            continue
        kind = known.get(name, _BASE_TYPES.get(name))
        array = pa.array(values, type=kind) if kind is not None else pa.array(values)
        if pa.types.is_null(array.type):  # a column no document has a value in: keep it typed as text
            array = array.cast(pa.string())
        arrays.append(array)
        out_fields.append(pa.field(name, array.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(out_fields))


def elements_of(
    docs: Sequence[Document], schema: pa.Schema | None = None, fields: Iterable[pa.Field] = ()
) -> list[pa.RecordBatch | Document]:
    """``[batch_of(docs)]``, or the documents themselves when Arrow cannot hold them: a lone surrogate
    (JSON allows the escape; the normalize stage repairs it) or values of mixed types in one key.
    Such documents travel as dicts, as they always could."""
    if not docs:
        return []
    try:
        return [batch_of(docs, schema, fields)]
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return list(docs)


def with_columns(batch: pa.RecordBatch, columns: dict[str, pa.Array]) -> pa.RecordBatch:
    """``batch`` with ``columns`` replaced or appended (same length)."""
    arrays = list(batch.columns)
    fields = list(batch.schema)
    for name, array in columns.items():
        field = pa.field(name, array.type)
        index = batch.schema.get_field_index(name)
        if index >= 0:
            arrays[index], fields[index] = array, field
        else:
            arrays.append(array)
            fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def take(batch: pa.RecordBatch, rows: Sequence[int] | pa.Array) -> pa.RecordBatch:
    """The given rows, copied (a slice would carry, and pickle, the whole batch's buffers)."""
    return batch.take(pa.array(rows, type=pa.int64()))


def select(batch: pa.RecordBatch, mask: Sequence[bool]) -> pa.RecordBatch:
    """Rows where ``mask`` is true, copied."""
    return batch.filter(pa.array(mask, type=pa.bool_()))


def texts(batch: pa.RecordBatch, column: str = "text") -> list[str]:
    """A string column as Python strings, nulls as ''."""
    return [t if t is not None else "" for t in batch.column(column).to_pylist()]


def text_bytes(batch: pa.RecordBatch, column: str = "text") -> int:
    """UTF-8 bytes of a string column (nulls count 0)."""
    if column not in batch.schema.names:
        return 0
    lengths = pc.binary_length(batch.column(column))
    total = pc.sum(lengths).as_py()
    return int(total or 0)


def rebatch(elements: Iterable[Any], rows: int) -> Iterator[pa.RecordBatch | Document]:
    """Concatenate consecutive batches of one schema up to about ``rows`` rows (dicts pass through)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for element in elements:
        if not isinstance(element, pa.RecordBatch):
            yield element
            continue
        if pending and element.schema != pending[0].schema:
            yield _concat(pending)
            pending, count = [], 0
        pending.append(element)
        count += element.num_rows
        if count >= rows:
            yield _concat(pending)
            pending, count = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
