"""Stage ``decontaminate``: remove (or cut) text that shares a word n-gram with an eval item.

The join is exact on 64-bit n-gram hashes (``ngrams``); no Bloom filter. Two forms, same answer
(``join.py``; a test checks it):

* side input (default while the eval side has at most ``side_input_max_ngrams`` distinct n-grams):
  the index built on the driver is a Beam side input; each batch of documents is matched locally;
* keyed: workers read the eval files again and emit ``(hash, item)``; every document emits
  ``(hash, (key, length, positions))`` once per distinct n-gram; a ``CoGroupByKey`` on the hash
  keeps keys with both sides, hits are grouped by document and joined back to it once.

Driver side, before the graph is built (``SPEC.prepare``): every eval file is read and checked
(``EvalFileError``: unreadable, malformed, or no item of ``ngram`` words, so the CLI exits 2 before
any data moves), and the index gives the per-benchmark items and n-grams of the manifest.

Outcomes: ``drop``: removed as ``decontaminate:<benchmark>`` with ``detail`` = the matched items
(benchmark, item id, shared n-grams); ``cut``: the matched spans ± ``cut_margin`` characters are
cut, the document keeps ``decontaminate_matches`` and ``decontaminate_chars_cut``, and one left
with under ``cut_min_chars`` characters is removed as above. The manifest's ``decontamination``
section has one record per benchmark (items, items skipped, n-grams, documents removed or cut,
matched item ids) and a totals record with the n-grams checked and the expected number of false
hits by hash collision (``expected_false_hits``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import xxhash
from apache_beam import pvalue

from winnow.beam.combiners import MergeFn
from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, rejected, removed
from winnow.stages.decontaminate.config import DecontaminateConfig
from winnow.stages.decontaminate.join import (
    Decision,
    DecontaminationTally,
    decide,
    document_join_records,
    eval_join_records,
    join_hits,
    top_benchmark,
)
from winnow.stages.decontaminate.ngrams import (
    EvalNgramIndex,
    ItemRef,
    item_ngram_hashes,
    load_eval_index,
    match_document,
    ngram_hashes,
    read_eval_file,
    resolve_eval_paths,
    resolve_hits,
    split_words,
)

STAGE = "decontaminate"
SECTION = "decontamination"
_TALLY = "tally"
_DOC, _HIT = 0, 1
MATCH = pa.struct([("benchmark", pa.string()), ("item_id", pa.string()), ("ngrams", pa.int32())])
CUT_COLUMNS = (
    pa.field("decontaminate_matches", pa.list_(MATCH)),
    pa.field("decontaminate_chars_cut", pa.int32()),
)


@dataclass(frozen=True)
class EvalPlan:
    """What the driver learnt from the eval files: the index (side-input form), the item catalogue,
    each file with the index of its first usable item (keyed form), and the chosen form."""

    form: str
    index: EvalNgramIndex | None
    catalogue: list[ItemRef]
    files: list[tuple[str, int]]
    lengths: list[int]  # gram lengths of the eval side (``ngram``, and shorter ones with short_item_words)
    summaries: dict[str, Any]
    distinct_ngrams: int


def plan_eval_side(config: DecontaminateConfig) -> dict[str, Any]:
    """Driver-side, before the graph: read and check every eval file, build the index, choose the form."""
    index = load_eval_index(config.eval_files, config.ngram, config.short_item_words)
    files: list[tuple[str, int]] = []
    first = 0
    for path in resolve_eval_paths(config.eval_files):
        files.append((str(path), first))
        first += sum(
            1 for item in read_eval_file(path) if item_ngram_hashes(item.text, config.ngram, config.short_item_words)[0]
        )
    form = config.join
    if form == "auto":
        form = "side_input" if index.distinct_ngrams <= config.side_input_max_ngrams else "keyed"
    plan = EvalPlan(
        form=form,
        index=index if form == "side_input" else None,
        catalogue=index.items,
        files=files,
        lengths=index.lengths,
        summaries=index.summaries,
        distinct_ngrams=index.distinct_ngrams,
    )
    return {"plan": plan}


# --- per-document decisions (both forms) ----------------------------------------------------------


def _match_records(decision: Decision) -> list[dict[str, Any]]:
    return [{"benchmark": m.benchmark, "item_id": m.item_id, "ngrams": m.ngrams} for m in decision.matches]


class _Decider:
    """Turns a ``Decision`` into the stage's output for one document and adds it to a tally."""

    def __init__(self, config: DecontaminateConfig):
        self.config = config
        self._counters: dict[str, Any] = {}

    def _count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = counter(name)
        self._counters[name].inc(n)

    def decide(self, doc: Document, matches: Sequence[Any]) -> Decision:
        c = self.config
        return decide(doc["text"], matches, c.action, c.cut_margin, c.min_ngrams)

    def emit(self, doc: Document, decision: Decision, tally: DecontaminationTally) -> Any:
        c = self.config
        cut_mode = c.action == "cut"
        if not decision.contaminated:
            return {**doc, "decontaminate_matches": [], "decontaminate_chars_cut": 0} if cut_mode else doc
        if cut_mode and decision.text is not None and len(decision.text.strip()) >= c.cut_min_chars:
            tally.add(decision)
            self._count(f"{STAGE}:cut")
            self._count(f"{STAGE}:chars_cut", decision.chars_cut)
            return {
                **doc,
                "text": decision.text,
                "decontaminate_matches": _match_records(decision),
                "decontaminate_chars_cut": decision.chars_cut,
            }
        if decision.drop_reason is None:  # cut left too little: the document goes
            decision = Decision(decision.matches, drop_reason=f"{STAGE}:{top_benchmark(decision.matches)}")
        tally.add(decision)
        self._count(decision.drop_reason)
        out = removed(doc, decision.drop_reason)
        out.value["detail"] = json.dumps({"matches": _match_records(decision)}, sort_keys=True, ensure_ascii=False)
        return out


class MatchWithSideInput(beam.DoFn):
    """Side-input form: a batch of documents against the whole eval index; one tally per batch."""

    def __init__(self, config: DecontaminateConfig):
        self.config = config

    def setup(self) -> None:
        self.decider = _Decider(self.config)
        self.checked = counter(f"{STAGE}:ngrams_checked")

    def process(self, batch: list[Document], index: EvalNgramIndex) -> Iterator[Any]:
        tally = DecontaminationTally()

        def count(_: str, n: int) -> None:
            tally.count_checked(n)
            self.checked.inc(n)

        for doc in batch:
            try:
                decision = self.decider.decide(doc, match_document(doc["text"], index, count))
            except Exception as error:  # a document must never kill the job
                yield rejected(doc, STAGE, error)
                continue
            yield self.decider.emit(doc, decision, tally)
        yield pvalue.TaggedOutput(_TALLY, tally)


# --- keyed form ---------------------------------------------------------------------------------


def join_key(doc: Document) -> str:
    """The document's key in the keyed join: its id and a hash of its text, so two inputs that share
    an id never mix their hits."""
    digest = xxhash.xxh3_64_hexdigest(doc["text"].encode("utf-8", "surrogatepass"))
    return f"{doc['id']}\x00{digest}"


class DocumentNgrams(beam.DoFn):
    """Keyed form, document side: (hash, (key, length, positions)) per distinct n-gram; the document
    itself keyed for the join back; one tally (n-grams checked) per batch."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths

    def setup(self) -> None:
        self.checked = counter(f"{STAGE}:ngrams_checked")

    def process(self, batch: list[Document]) -> Iterator[Any]:
        tally = DecontaminationTally()
        for doc in batch:
            try:
                key = join_key(doc)
                records = list(document_join_records(key, doc["text"], self.lengths))
                words = split_words(doc["text"]).hashes
            except Exception as error:
                yield rejected(doc, STAGE, error)
                continue
            checked = sum(len(ngram_hashes(words, length)) for length in self.lengths)
            tally.count_checked(checked)
            self.checked.inc(checked)
            for record in records:
                yield pvalue.TaggedOutput("ngrams", record)
            yield key, (_DOC, doc)
        yield pvalue.TaggedOutput(_TALLY, tally)


def read_eval_records(task: tuple[str, int], config: DecontaminateConfig) -> Iterator[tuple[int, int]]:
    """Keyed form, eval side: one file's (hash, catalogue index) records, numbered from the file's first item."""
    path, first = task
    for value, index in eval_join_records(read_eval_file(path), config.ngram, config.short_item_words):
        yield value, first + index


def _hits(element: tuple[int, dict[str, Iterable[Any]]]) -> Iterator[tuple[str, tuple[int, Any]]]:
    _, grouped = element
    for key, hit in join_hits(grouped["docs"], grouped["evals"]):
        yield key, (_HIT, hit)


class ResolveJoined(beam.DoFn):
    """Keyed form, join back: one document with its hits → the same decision as the side-input form."""

    def __init__(self, config: DecontaminateConfig):
        self.config = config

    def setup(self) -> None:
        self.decider = _Decider(self.config)

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]], catalogue: list[ItemRef]) -> Iterator[Any]:
        _, tagged = element
        docs, hits = [], []
        for tag, value in tagged:
            (docs if tag == _DOC else hits).append(value)
        for doc in docs:  # one, or several identical inputs (same id and text)
            tally = DecontaminationTally()
            try:
                matches = resolve_hits(split_words(doc["text"]), hits, catalogue) if hits else []
                decision = self.decider.decide(doc, matches)
            except Exception as error:
                yield rejected(doc, STAGE, error)
                continue
            yield self.decider.emit(doc, decision, tally)
            if decision.contaminated:
                yield pvalue.TaggedOutput(_TALLY, tally)


# --- the stage ----------------------------------------------------------------------------------


def manifest_records(tally: DecontaminationTally, plan: EvalPlan, config: DecontaminateConfig) -> list[dict[str, Any]]:
    """The ``decontamination`` section: one record per benchmark, then the totals."""
    records: list[dict[str, Any]] = [
        {"section": SECTION, "kind": "benchmark", "benchmark": benchmark, **figures}
        for benchmark, figures in tally.manifest(plan.summaries).items()
    ]
    records.append(
        {
            "section": SECTION,
            "kind": "totals",
            "ngram": config.ngram,
            "action": config.action,
            "join": plan.form,
            "eval_files": [path for path, _ in plan.files],
            "eval_items": len(plan.catalogue),
            "distinct_eval_ngrams": plan.distinct_ngrams,
            "document_ngrams_checked": tally.ngrams_checked,
            "expected_false_hits": tally.expected_false_hits(plan.distinct_ngrams),
            "docs_removed": sum(tally.docs_removed.values()),
            "docs_cut": sum(tally.docs_cut.values()),
            "chars_cut": tally.chars_cut,
        }
    )
    return records


class Decontaminate(beam.PTransform):
    def __init__(self, config: DecontaminateConfig, plan: EvalPlan | None = None):
        super().__init__()
        if plan is None:
            raise ValueError("the decontaminate stage is built by its StageSpec (the eval files are read first)")
        self.config = config
        self.plan = plan

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        pipeline = docs.pipeline
        batches = docs | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=256)
        if self.plan.form == "side_input":
            index = pipeline | "EvalIndex" >> beam.Create([self.plan.index])
            out = batches | "Match" >> beam.ParDo(
                MatchWithSideInput(self.config), beam.pvalue.AsSingleton(index)
            ).with_outputs(REMOVED, REJECTED, _TALLY, main=KEPT)
            kept, removed_docs, rejects, tallies = out[KEPT], out[REMOVED], [out[REJECTED]], [out[_TALLY]]
        else:
            sides = batches | "DocumentNgrams" >> beam.ParDo(DocumentNgrams(self.plan.lengths)).with_outputs(
                "ngrams", REJECTED, _TALLY, main="keyed"
            )
            evals = (
                pipeline
                | "EvalFiles" >> beam.Create(self.plan.files)
                | "EvalNgrams" >> beam.FlatMap(read_eval_records, self.config)
            )
            hits = (
                {"docs": sides["ngrams"], "evals": evals}
                | "JoinOnNgram" >> beam.CoGroupByKey()
                | "Hits" >> beam.FlatMap(_hits)
            )
            catalogue = pipeline | "Catalogue" >> beam.Create([self.plan.catalogue])
            out = (
                (sides["keyed"], hits)
                | "DocsAndHits" >> beam.Flatten()
                | "JoinBack" >> beam.GroupByKey()
                | "Resolve"
                >> beam.ParDo(ResolveJoined(self.config), beam.pvalue.AsSingleton(catalogue)).with_outputs(
                    REMOVED, REJECTED, _TALLY, main=KEPT
                )
            )
            kept, removed_docs = out[KEPT], out[REMOVED]
            rejects, tallies = [sides[REJECTED], out[REJECTED]], [sides[_TALLY], out[_TALLY]]
        summary = (
            tallies
            | "AllTallies" >> beam.Flatten()
            | "Tally" >> beam.CombineGlobally(MergeFn(DecontaminationTally))
            | "Records" >> beam.FlatMap(manifest_records, self.plan, self.config)
        )
        return {
            KEPT: kept,
            REMOVED: removed_docs,
            REJECTED: rejects[0] if len(rejects) == 1 else rejects | "AllRejected" >> beam.Flatten(),
            "summary": summary,
        }


def config_columns(config: DecontaminateConfig) -> Sequence[pa.Field]:
    return CUT_COLUMNS if config.action == "cut" else ()


SPEC = StageSpec(
    name=STAGE,
    config=DecontaminateConfig,
    transform=Decontaminate,
    config_columns=config_columns,
    prepare=plan_eval_side,
)
