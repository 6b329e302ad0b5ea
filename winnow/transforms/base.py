"""The contract every winnow stage follows, and the small DoFn helpers that keep it.

A document in flight is a plain ``dict`` (see ``winnow.schemas.records``). A stage is a
``beam.PTransform`` whose ``expand`` takes a PCollection of documents and returns a
``dict`` with three PCollections:

* ``kept``: documents that go on to the next stage,
* ``removed``: documents dropped on purpose, each with ``reason`` (``"stage:rule"``) and
  ``duplicate_of`` (the kept id for duplicates, else ``None``),
* ``rejected``: inputs the stage could not process, as dead-letter records
  (``winnow.schemas.records.rejected_record``).

Keeping the three outcomes explicit is what lets the run check
``input == kept + filtered + duplicate + rejected`` at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue

from winnow.schemas.records import rejected_record

KEPT = "kept"
REMOVED = "removed"
REJECTED = "rejected"
METRICS_NAMESPACE = "winnow"

Document = dict[str, Any]


def counter(name: str) -> beam.metrics.metricbase.Counter:
    """A Beam Metrics counter in winnow's namespace (e.g. ``filter:gopher_word_count``)."""
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


def side_copy(pcoll: beam.PCollection, label: str) -> beam.PCollection:
    """A copy of ``pcoll`` to read only as a side input, where ``pcoll`` is also a main input: Beam
    2.77's FnApiRunner can commit such a side input empty (see winnow.transforms.cuts)."""
    return pcoll | label >> beam.Map(lambda item: item)


def removed(doc: Document, reason: str, duplicate_of: str | None = None) -> pvalue.TaggedOutput:
    """Tag ``doc`` as removed with its reason; the caller yields the result."""
    out = dict(doc)
    out["reason"] = reason
    out["duplicate_of"] = duplicate_of
    return pvalue.TaggedOutput(REMOVED, out)


def rejected(doc: Document, stage: str, error: BaseException | str) -> pvalue.TaggedOutput:
    """Tag a document a stage failed on as a dead-letter record; never kills the job."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    raw = doc.get("text") or ""
    return pvalue.TaggedOutput(
        REJECTED,
        rejected_record(
            source=str(doc.get("source") or ""),
            offset=None,
            raw=raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw),
            error=f"{stage}: {message}",
            stage=stage,
            doc_id=doc.get("id"),
        ),
    )


def split_outcomes(tagged: pvalue.DoOutputsTuple) -> dict[str, beam.PCollection]:
    """Turn ``ParDo(...).with_outputs(REMOVED, REJECTED, main=KEPT)`` into a stage result."""
    return {KEPT: tagged[KEPT], REMOVED: tagged[REMOVED], REJECTED: tagged[REJECTED]}


def outcome_pardo(label_or_dofn: Any, dofn: beam.DoFn | None = None) -> beam.PTransform:
    """``ParDo`` with the three stage outputs declared."""
    if dofn is None:
        return beam.ParDo(label_or_dofn).with_outputs(REMOVED, REJECTED, main=KEPT)
    return label_or_dofn >> beam.ParDo(dofn).with_outputs(REMOVED, REJECTED, main=KEPT)


def empty(pipeline: beam.Pipeline, label: str) -> beam.PCollection:
    """An empty PCollection, for stages that never remove or reject."""
    return pipeline | label >> beam.Create([])


def merge(pipeline: beam.Pipeline, parts: list[beam.PCollection], label: str) -> beam.PCollection:
    """Flatten ``parts`` (an empty PCollection when there are none)."""
    if not parts:
        return pipeline | f"No{label}" >> beam.Create([])
    if len(parts) == 1:
        return parts[0]
    return parts | f"Merge{label}" >> beam.Flatten()


def chain(docs: beam.PCollection, steps: list[tuple[str, beam.PTransform]]) -> dict[str, beam.PCollection]:
    """Run stage-contract transforms one after another as one stage: kept flows on,
    removed and rejected from every step are merged."""
    removed_parts, rejected_parts = [], []
    for label, transform in steps:
        out = docs | label >> transform
        docs = out[KEPT]
        removed_parts.append(out[REMOVED])
        rejected_parts.append(out[REJECTED])
    pipeline = docs.pipeline
    return {
        KEPT: docs,
        REMOVED: merge(pipeline, removed_parts, "Removed"),
        REJECTED: merge(pipeline, rejected_parts, "Rejected"),
    }


def iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Fixed-size batches from an iterable (the last one may be short)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def field_value(doc: Document, field: str) -> Any:
    """A column's value: top level, else in ``metadata`` (a dict or its JSON); None when absent.

    Grouping and filtering options (``balance_by``, ``where``, ``domain_field``) name fields that
    may come from a stage or from the input's metadata."""
    if doc.get(field) is not None:
        return doc[field]
    metadata = doc.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    return metadata.get(field) if isinstance(metadata, dict) else None
