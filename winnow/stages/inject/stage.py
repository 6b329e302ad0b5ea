"""Stage ``inject``: Copyright Traps planted in kept documents, and the trap ledger (docs/copyright-traps.md).

Where the work happens:

1. **Traps, on the driver** (``prepare_traps``, the spec's ``prepare`` step, before the graph is
   built): sampled with the local causal LM (``traps.source: generate``) or read from a file, then
   split into members and controls by hash. Only the traps travel to workers, in the transform's
   arguments (one entry per trap, never documents).
2. **Documents, by a bounded combiner**: every first copy (``epoch`` 0 or none) offers
   ``(doc_id, tokens)``; ``TrapDocuments`` keeps the ``members`` eligible documents with the
   smallest ``H64(doc_id, "trap-doc", seed)``, so no worker holds the corpus.
3. **The plan, once**: one Map deals the member traps to those documents (``plan_injection``);
   the plan (one entry per trap) reaches every document as a side input.
4. **Injection, per document**: ``inject(doc_id, text, plan)`` is pure, so every ``mix`` copy of a
   document gets the same traps. A planted document keeps its id, gets its new text, an
   ``injected_traps`` column (trap id, offsets of every copy, characters per copy) and its
   ``tokens_field`` recounted with the run tokenizer; every other document gets ``injected_traps``
   null. Nothing is removed: injected documents are kept documents.
5. **The ledger, from the run's final outputs** (``finish``, run by the graph after every stage):
   which member traps are in a written document (with offsets and the number of rows carrying
   them), which were removed later and by which rule, and the matched controls. It is written to
   ``inject.ledger`` (default ``traps/ledger.parquet``) by one worker (it has one row per trap) and
   listed in the manifest with its SHA-256, beside the ``traps`` section with the counts.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, empty, rejected, side_copy
from winnow.beam.write import atomic_write_bytes
from winnow.core.causal_lm import load_causal_lm
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer, token_counts
from winnow.stages.inject.config import InjectConfig, TrapSourceConfig
from winnow.stages.inject.traps import (
    INJECTED_COLUMN,
    INJECTED_TYPE,
    InjectedTrap,
    InjectionPlan,
    Role,
    Trap,
    TrapDocuments,
    assign_roles,
    generate_traps,
    inject,
    ledger_table,
    plan_injection,
    read_trap_file,
)

STAGE = "inject"
SECTION = "traps"
SUMMARY = "summary"


# --- 1. traps, on the driver ---------------------------------------------------------------------


def load_traps(config: TrapSourceConfig, tokenizer: TokenizerConfig) -> tuple[list[Trap], dict[str, Any]]:
    """The traps of a run and a description of where they came from (for the manifest)."""
    if config.source == "file":
        run_tokenizer = load_tokenizer(tokenizer.path, tokenizer.eos_token)
        described = run_tokenizer.describe()
        label = f"{described['name']}@{described['sha256_16']}"
        traps = read_trap_file(str(config.file), run_tokenizer.encode, config, label)
        return traps, {"source": "file", "file": config.file, "traps": len(traps)}
    model = load_causal_lm(config.model, gguf_file=config.gguf_file, device=config.device, threads=config.threads)
    traps, lengths = [], []
    for seq_len in config.seq_lens:
        report = generate_traps(model, seq_len, config, config.seed)
        traps += report.traps
        lengths.append(
            {
                "seq_len": seq_len,
                "accepted": len(report.traps),
                "candidates": report.candidates,
                "tokens_sampled": report.tokens_sampled,
                "open_values": len(report.open_values),
                "rejected": dict(sorted((k, v) for k, v in report.verdicts.items() if k != "accepted")),
            }
        )
    return traps, {"source": "generate", "model": model.describe(), "mode": model.mode, "lengths": lengths}


def balanced_roles(traps: list[Trap], config: InjectConfig) -> tuple[dict[str, Role], int]:
    """Roles by hash (``assign_roles``); members beyond a multiple of ``len(n_reps)`` become controls.

    A partial generation (``max_candidates``) or a user file rarely gives a member count that the
    repetition counts divide; the surplus members (the last in trap-order hash) are never planted,
    which is what a control is. Returns the roles and how many members were turned into controls.
    """
    roles = assign_roles(traps, config.traps.control_share, config.seed)
    members = sorted(
        (t for t in traps if roles[t.trap_id] == "member"),
        key=lambda t: (t.seq_len, h64(t.trap_id, "trap-order", config.seed), t.trap_id),
    )
    surplus = len(members) % len(config.n_reps)
    for trap in members[len(members) - surplus :]:
        roles[trap.trap_id] = "control"
    return roles, surplus


def prepare_traps(config: InjectConfig, tokenizer: TokenizerConfig) -> dict[str, Any]:
    """The stage's driver-side step (``StageSpec.prepare``): traps and roles as transform arguments."""
    traps, source = load_traps(config.traps, tokenizer)
    if not traps:
        raise ValueError("inject: no trap was generated or read; nothing to plant")
    roles, surplus = balanced_roles(traps, config)
    return {"traps": traps, "roles": roles, "source": {**source, "members_made_controls": surplus}}


# --- 2.–4. documents, plan, injection --------------------------------------------------------------


class _Candidates(beam.DoFn):
    """``(doc_id, tokens)`` of every first copy of a document with text, a batch at a time (the
    documents without ``tokens_field`` are counted in one tokenizer call)."""

    def __init__(self, config: InjectConfig, tokenizer: TokenizerConfig):
        self.config = config
        self.tokenizer_config = tokenizer

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)

    def process(self, batch: list[Document]) -> Iterator[tuple[str, int]]:
        firsts = [doc for doc in batch if (doc.get("epoch") or 0) == 0 and doc.get("text")]
        counts = token_counts(firsts, self.tokenizer, self.config.tokens_field)
        for doc, tokens in zip(firsts, counts, strict=True):
            yield str(doc["id"]), int(tokens)


class TrapDocumentsFn(beam.CombineFn):
    """``TrapDocuments`` as a Beam combiner: (chosen doc ids in dealing order, eligible count)."""

    def __init__(self, n: int, seed: int, doc_min_tokens: int):
        self.n, self.seed, self.doc_min_tokens = n, seed, doc_min_tokens

    def create_accumulator(self) -> TrapDocuments:
        return TrapDocuments(self.n, self.seed, self.doc_min_tokens)

    def add_input(self, acc: TrapDocuments, item: tuple[str, int]) -> TrapDocuments:
        return acc.add(*item)

    def merge_accumulators(self, accs: Iterable[TrapDocuments]) -> TrapDocuments:
        accs = iter(accs)
        merged = next(accs, None) or self.create_accumulator()
        for acc in accs:
            merged.merge(acc)
        return merged

    def extract_output(self, acc: TrapDocuments) -> tuple[list[str], int]:
        return acc.result(), acc.eligible


def _plan(chosen: tuple[list[str], int], traps: list[Trap], roles: dict[str, Role], config: InjectConfig) -> Any:
    documents, _ = chosen
    return plan_injection(traps, roles, documents, config)


class _InjectDoFn(beam.DoFn):
    def __init__(self, config: InjectConfig, tokenizer: TokenizerConfig):
        self.config = config
        self.tokenizer_config = tokenizer
        self._documents = counter("inject:documents")
        self._copies = counter("inject:copies")

    def setup(self) -> None:
        self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)

    def process(self, doc: Document, plan: InjectionPlan) -> Iterator[Any]:
        text = doc.get("text")
        if not text:  # an unextracted page or an empty text: nothing to plant in
            yield {**doc, INJECTED_COLUMN: None}
            return
        try:
            new_text, planted = inject(str(doc["id"]), text, plan)
            if not planted:
                yield {**doc, INJECTED_COLUMN: None}
                return
            tokens = int(self.tokenizer.count([new_text])[0])
        except Exception as error:  # a document must never kill the job
            yield rejected(doc, STAGE, error)
            return
        self._documents.inc()
        self._copies.inc(sum(len(p.char_offsets) for p in planted))
        yield {
            **doc,
            "text": new_text,
            INJECTED_COLUMN: [p.as_row() for p in planted],
            self.config.tokens_field: tokens,
        }


def plan_records(plan: InjectionPlan, chosen: tuple[list[str], int], source: dict[str, Any]) -> dict[str, Any]:
    """The ``traps`` manifest record of the plan: where the traps came from and how they were dealt."""
    cells: dict[str, dict[str, int]] = {}
    for entry in plan.entries:
        cell = cells.setdefault(f"{entry.trap.seq_len}x{entry.n_rep}", {"members": 0, "controls": 0})
        cell["members" if entry.role == "member" else "controls"] += 1
    members = plan.members
    return {
        "section": SECTION,
        "kind": "plan",
        **source,
        "traps": len(plan.entries),
        "members": len(members),
        "controls": len(plan.entries) - len(members),
        "eligible_documents": chosen[1],
        "copies_planned": sum(e.n_rep for e in members),
        "cells": dict(sorted(cells.items())),
        "placement": plan.placement,
        "join": plan.join,
        "seed": plan.seed,
    }


class Inject(beam.PTransform):
    """Stage ``inject`` (see the module docstring). ``traps``, ``roles`` and ``source`` come from
    ``prepare_traps``; ``finish`` writes the ledger from the run's final outputs."""

    def __init__(
        self,
        config: InjectConfig,
        tokenizer: TokenizerConfig | None = None,
        *,
        traps: list[Trap],
        roles: dict[str, Role],
        source: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else TokenizerConfig()
        self.traps = list(traps)
        self.roles = dict(roles)
        self.source = dict(source or {})
        self.plan: beam.PCollection | None = None

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        config = self.config
        members = sum(1 for role in self.roles.values() if role == "member")
        chosen = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=256)
            | "Candidates" >> beam.ParDo(_Candidates(config, self.tokenizer))
            | "TrapDocuments" >> beam.CombineGlobally(TrapDocumentsFn(members, config.seed, config.doc_min_tokens))
        )
        self.plan = chosen | "Plan" >> beam.Map(_plan, self.traps, self.roles, config)
        plan_side = pvalue.AsSingleton(side_copy(self.plan, "PlanInject"))
        out = docs | "Inject" >> beam.ParDo(_InjectDoFn(config, self.tokenizer), plan_side).with_outputs(
            REJECTED, main=KEPT
        )
        summary = side_copy(self.plan, "PlanRecord") | "PlanSummary" >> beam.Map(
            plan_records, pvalue.AsSingleton(side_copy(chosen, "ChosenSide")), self.source
        )
        return {KEPT: out[KEPT], REMOVED: empty(docs.pipeline, "NoRemoved"), REJECTED: out[REJECTED], SUMMARY: summary}

    def finish(self, staging_dir: str) -> beam.PTransform:
        """The ledger and its manifest record, from ``{"kept": final kept rows, "removed": all removed}``."""
        if self.plan is None:
            raise RuntimeError("inject: finish() before the stage was expanded")
        return WriteLedger(self.plan, self.config, staging_dir)


# --- 5. the ledger ----------------------------------------------------------------------------------


def _placements(doc: Document) -> Iterator[tuple[str, tuple[str, tuple[int, ...], int]]]:
    for placed in doc.get(INJECTED_COLUMN) or ():
        yield str(doc["id"]), (placed["trap_id"], tuple(placed["char_offsets"]), int(placed["span_chars"]))


def _removals(doc: Document) -> Iterator[tuple[str, str]]:
    for placed in doc.get(INJECTED_COLUMN) or ():
        yield placed["trap_id"], str(doc.get("reason"))


def _first_reason(reasons: list[tuple[str, str]]) -> dict[str, str]:
    """One reason per trap (the smallest, when copies were removed for different reasons)."""
    out: dict[str, str] = {}
    for trap_id, reason in sorted(reasons):
        out.setdefault(trap_id, reason)
    return out


def _write_ledger(
    plan: InjectionPlan,
    rows: list[tuple[str, tuple[str, tuple[int, ...], int]]],
    removals: list[tuple[str, str]],
    config: InjectConfig,
    staging_dir: str,
) -> Iterator[tuple[str, Any]]:
    placements: dict[str, InjectedTrap] = {}
    doc_rows: dict[str, int] = {}
    for doc_id, (trap_id, offsets, span) in sorted(rows):
        placements.setdefault(trap_id, InjectedTrap(trap_id, offsets, span))  # every copy of a document is equal
        doc_rows[doc_id] = doc_rows.get(doc_id, 0) + 1
    removed_by = _first_reason(removals)
    table = ledger_table(plan, placements, doc_rows, removed_by)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    payload = buffer.getvalue()
    atomic_write_bytes(FileSystems.join(staging_dir, config.ledger), payload)
    digest = hashlib.sha256(payload).hexdigest()
    kind = config.ledger.split("/", 1)[0]
    yield "file", {"kind": kind, "file": config.ledger, "rows": table.num_rows, "bytes": len(payload), "sha256": digest}
    ledger = table.to_pylist()
    members = [r for r in ledger if r["role"] == "member"]
    survived = [r for r in members if r["survived"]]
    removed: dict[str, int] = {}
    for row in members:
        if not row["survived"]:
            reason = row["removed_by"] or "not written"
            removed[reason] = removed.get(reason, 0) + 1
    yield (
        "section",
        {
            "section": SECTION,
            "kind": "ledger",
            "ledger": config.ledger,
            "ledger_sha256": digest,
            "members": len(members),
            "members_survived": len(survived),
            "members_lost": dict(sorted(removed.items())),
            "injected_documents": len(doc_rows),
            "injected_rows": sum(doc_rows.values()),
            "copies_written": sum(r["exposures"] for r in survived),
        },
    )


class WriteLedger(beam.PTransform):
    """``{"kept", "removed"}`` of the whole run → ``("file", …)`` and ``("section", …)`` summary items."""

    def __init__(self, plan: beam.PCollection, config: InjectConfig, staging_dir: str):
        super().__init__()
        self.plan = plan
        self.config = config
        self.staging_dir = staging_dir

    def expand(self, outputs: dict[str, beam.PCollection]) -> beam.PCollection:
        rows = outputs[KEPT] | "Placements" >> beam.FlatMap(_placements) | "AllPlacements" >> beam.combiners.ToList()
        removals = outputs[REMOVED] | "Removals" >> beam.FlatMap(_removals) | "AllRemovals" >> beam.combiners.ToList()
        return side_copy(self.plan, "PlanLedger") | "WriteLedger" >> beam.FlatMap(
            _write_ledger,
            pvalue.AsSingleton(rows),
            pvalue.AsSingleton(removals),
            self.config,
            self.staging_dir,
        )


def _after(config: InjectConfig) -> str:
    return config.after


SPEC = StageSpec(
    name=STAGE,
    config=InjectConfig,
    transform=Inject,
    columns=(pa.field(INJECTED_COLUMN, INJECTED_TYPE),),
    needs=("tokenizer",),
    prepare=prepare_traps,
    prepare_needs=("tokenizer",),
    follows=_after,
)
