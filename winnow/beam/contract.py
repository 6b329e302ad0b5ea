"""The contract every winnow stage follows, the spec a stage declares, and the DoFn helpers that keep it.

A document in flight is a plain ``dict`` (see ``winnow.core.schemas``) or a row of an Arrow
record batch (``winnow.core.batches``): the reader emits batches, and a stage whose spec says
``batches=True`` takes elements of either kind and keeps batches batched; the run turns batches
into dicts before any other stage. A stage is a ``beam.PTransform`` whose ``expand`` takes a
PCollection of documents and returns a ``dict`` with three PCollections:

* ``kept``: documents that go on to the next stage,
* ``removed``: documents dropped on purpose, each with ``reason`` (``"stage:rule"``) and
  ``duplicate_of`` (the kept id for duplicates, else ``None``),
* ``rejected``: inputs the stage could not process, as dead-letter records
  (``winnow.core.schemas.rejected_record``).

Keeping the three outcomes explicit is what lets the run check
``input == kept + filtered + duplicate + rejected`` at the end. A stage may return more
PCollections: ``summary`` (records for the manifest) and tables it declares in ``.tables``.

Each stage package declares itself once in a ``StageSpec`` (name = config section, config
class, transform, the columns it writes, what it needs from the run); the run's registry lists
the specs. Stages whose work is one document at a time implement a ``DocumentStep`` and run in
the generic ``PerDocumentStage``, which batches, loads models once per worker, counts every
drop reason and turns a failure into a dead-letter record. A step may also implement
``columns(batch)`` (a ``BatchStep``): it then sees whole Arrow batches and answers with columns;
a batch it fails on goes through ``__call__`` one document at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from winnow.core.batches import as_documents, document_count, documents, elements_of, is_batch, select, with_columns
from winnow.core.schemas import rejected_record

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
    2.77's FnApiRunner can commit such a side input empty (see winnow.beam.cuts)."""
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
    raw = doc.get("text") or doc.get("html") or ""  # an unextracted page: its HTML is the raw input
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


INPUT_NAME = "input_name"


def input_name(doc: Document) -> str | None:
    """The input a document was read from: its ``name`` (the first part of ``source``; for an unnamed
    input, the first part of the file's path)."""
    return str(doc.get("source") or "").split("/", 1)[0] or None


def field_value(doc: Document, field: str) -> Any:
    """A column's value: top level, else in ``metadata`` (a dict or its JSON); None when absent.

    Grouping and filtering options (``balance_by``, ``where``, ``domain_field``) name fields that
    may come from a stage or from the input's metadata. ``input_name`` is derived when no column
    of that name exists: the input's ``name``, so mixtures and budgets can be per source."""
    if doc.get(field) is not None:
        return doc[field]
    metadata = doc.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = None
    value = metadata.get(field) if isinstance(metadata, dict) else None
    if value is None and field == INPUT_NAME:
        return input_name(doc)
    return value


# --- the stage spec -----------------------------------------------------------------------------


def _no_columns(section: Any) -> Sequence[pa.Field]:
    return ()


@dataclass(frozen=True)
class StageSpec:
    """One stage, declared by its package: the run's registry reads nothing else about it.

    ``transform(section, **needs)`` builds the stage's PTransform; ``needs`` names what it takes
    from the run besides its own section (``seed``, ``tokenizer``). ``batches``: the transform takes
    Arrow batches of documents beside single dicts (``winnow.core.batches``); the run gives other
    stages dicts only. ``columns`` are the columns the
    stage always adds to kept documents and ``config_columns(section)`` those that depend on its
    config (e.g. each configured scorer's); the writer knows the final schema before any data
    moves: the fixed columns of every stage in pipeline order, then the config-dependent ones, so
    runs with different scorers share a stable schema prefix. ``prepare(section)``, when given,
    is an explicit driver-side step run before the graph is built (e.g. fitting a RegMix
    mixture from proxy runs); it returns keyword arguments for the transform, and takes the run
    settings named in ``prepare_needs`` (a subset of ``needs``). ``follows(section)``, when given,
    names the stage this one runs right after, by config (``inject.after``); without it a stage
    keeps its place in the registry. ``heavy``: its per-document work costs about a millisecond or
    more (models, extraction, many rules), so on a local run with enough input, worker processes
    on every core pay back their start-up and transfer costs (``runner.direct_running_mode: auto``).
    """

    name: str
    config: type
    transform: Callable[..., beam.PTransform]
    columns: Sequence[pa.Field] = ()
    config_columns: Callable[[Any], Sequence[pa.Field]] = _no_columns
    needs: tuple[str, ...] = ()
    prepare: Callable[..., dict[str, Any]] | None = None
    prepare_needs: tuple[str, ...] = ()
    follows: Callable[[Any], str] | None = None
    batches: bool = False
    heavy: bool = False

    def build(self, section: Any, **context: Any) -> beam.PTransform:
        """The stage's transform: the driver-side ``prepare`` step (if any), then the constructor."""
        unknown = set(self.needs) - set(context)
        if unknown:
            raise ValueError(f"stage {self.name} needs {sorted(unknown)} from the run")
        prepared = {}
        if self.prepare is not None:
            prepared = self.prepare(section, **{need: context[need] for need in self.prepare_needs})
        return self.transform(section, **{need: context[need] for need in self.needs}, **prepared)


# --- the generic per-document stage -------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    """A step's decision to remove a document, counted and recorded as ``<stage>:<rule>``.

    ``document`` is the document as removed (default: as it came in); ``duplicate_of`` names
    the kept document a duplicate repeats.
    """

    rule: str
    document: Document | None = None
    duplicate_of: str | None = None


Outcome = Document | Drop
CountFn = Callable[[str, int], None]


class DocumentStep(Protocol):
    """One stage's per-document work, Beam-free: ``setup`` loads models (once per worker) and
    receives a counter callback; ``__call__`` maps a batch of documents to one outcome each (the
    document to keep, possibly changed, or a ``Drop``). Raising fails the batch; the stage then
    retries its documents one by one and rejects only the ones that still fail."""

    def setup(self, count: CountFn) -> None: ...

    def __call__(self, docs: list[Document]) -> list[Outcome]: ...


@dataclass(frozen=True)
class BatchOutcome:
    """A ``BatchStep``'s answer for a whole batch: ``columns`` replaced or added on every row, and per
    row the rule that removes it (``None``: kept). A removed row is recorded as it came in, or with
    the new columns when ``removed_with_columns`` (langid records the language it decided on)."""

    columns: dict[str, pa.Array]
    drops: Sequence[str | None] | None = None
    removed_with_columns: bool = False


class BatchStep(DocumentStep, Protocol):
    """A ``DocumentStep`` that can also work on columns: ``columns(batch)`` must give for every row
    what ``__call__`` gives for it as a dict (tests compare the two)."""

    def columns(self, batch: pa.RecordBatch) -> BatchOutcome: ...


class _DocumentStepDoFn(beam.DoFn):
    def __init__(self, stage: str, step: DocumentStep, fields: Sequence[pa.Field] = ()):
        self.stage = stage
        self.step = step
        self.fields = tuple(fields)
        self._counters: dict[str, Any] = {}

    def _count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = counter(name if ":" in name else f"{self.stage}:{name}")
        self._counters[name].inc(n)

    def _buffer(self, name: str, n: int = 1) -> None:
        # What a step counts during an attempt is held until the attempt succeeds, so a batch
        # that fails and is retried one document at a time is not counted twice.
        self._pending[name] = self._pending.get(name, 0) + n

    def _attempt(self, docs: list[Document]) -> list[Outcome]:
        self._pending: dict[str, int] = {}
        outcomes = self.step(docs)
        if len(outcomes) != len(docs):
            raise ValueError(f"{self.stage} returned {len(outcomes)} outcomes for {len(docs)} documents")
        for name, n in self._pending.items():
            self._count(name, n)
        return outcomes

    def setup(self) -> None:
        self._pending = {}
        self.step.setup(self._buffer)

    def process(self, element: list[Any]) -> Iterator[Any]:
        """A list of elements (``BatchElements``): Arrow batches one by one, runs of dicts together."""
        run: list[Document] = []
        for item in element:
            if not is_batch(item):
                run.append(item)
                continue
            if run:
                yield from self._process_documents(run)
                run = []
            yield from self._process_batch(item)
        if run:
            yield from self._process_documents(run)

    def _process_documents(self, batch: list[Document]) -> Iterator[Any]:
        try:
            outcomes = self._attempt(batch)
        except Exception:  # find the document(s) at fault one at a time
            for doc in batch:
                try:
                    (outcome,) = self._attempt([doc])
                except Exception as error:  # a document must never kill the job
                    self._count("rejected")
                    yield rejected(doc, self.stage, error)
                    continue
                yield self._emit(doc, outcome)
            return
        for doc, outcome in zip(batch, outcomes, strict=True):
            yield self._emit(doc, outcome)

    def _emit(self, doc: Document, outcome: Outcome) -> Any:
        if isinstance(outcome, Drop):
            self._count(outcome.rule)
            return removed(outcome.document or doc, f"{self.stage}:{outcome.rule}", outcome.duplicate_of)
        return outcome

    def _process_batch(self, batch: pa.RecordBatch) -> Iterator[Any]:
        """An Arrow batch: by columns when the step can, else as dicts; kept rows leave as one batch."""
        if hasattr(self.step, "columns"):
            try:
                self._pending = {}
                result = self.step.columns(batch)
                for name, n in self._pending.items():
                    self._count(name, n)
            except Exception:  # the rare batch a column step fails on: one document at a time
                result = None
            if result is not None:
                yield from self._emit_columns(batch, result)
                return
        kept: list[Document] = []
        for item in self._process_documents(documents(batch)):
            if isinstance(item, pvalue.TaggedOutput):
                yield item
            else:
                kept.append(item)
        yield from elements_of(kept, batch.schema, self.fields)

    def _emit_columns(self, batch: pa.RecordBatch, result: BatchOutcome) -> Iterator[Any]:
        updated = with_columns(batch, result.columns)
        drops = list(result.drops) if result.drops is not None else [None] * batch.num_rows
        if len(drops) != batch.num_rows:
            raise ValueError(f"{self.stage} returned {len(drops)} decisions for {batch.num_rows} documents")
        keep = [rule is None for rule in drops]
        if all(keep):
            yield updated
            return
        if any(keep):
            yield select(updated, keep)
        gone = select(updated if result.removed_with_columns else batch, [not k for k in keep])
        rules = [rule for rule in drops if rule is not None]
        for doc, rule in zip(documents(gone), rules, strict=True):
            self._count(rule)
            yield removed(doc, f"{self.stage}:{rule}")


class PerDocumentStage(beam.PTransform):
    """A stage whose work is one document at a time: batches → ``DocumentStep`` → kept/removed/rejected.

    Arrow batches of documents go to the step as they come (``batch_size`` groups single dicts);
    ``fields`` types the columns the step adds when its kept documents become a batch again."""

    def __init__(self, stage: str, step: DocumentStep, batch_size: int = 256, fields: Sequence[pa.Field] = ()):
        super().__init__()
        self.stage = stage
        self.step = step
        self.batch_size = batch_size
        self.fields = tuple(fields)

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        # Sized by documents, so an Arrow batch goes alone and dicts gather up to batch_size. (A
        # Flatten of two routes would make the local runner materialise every document.)
        lists = docs | "Batch" >> beam.BatchElements(
            min_batch_size=1, max_batch_size=self.batch_size, element_size_fn=document_count
        )
        return split_outcomes(lists | outcome_pardo("Step", _DocumentStepDoFn(self.stage, self.step, self.fields)))


class ToDocuments(beam.DoFn):
    """Batches of documents → single documents, for a stage that takes dicts; dicts pass through."""

    def process(self, element: Any) -> Iterator[Document]:
        yield from as_documents(element)
