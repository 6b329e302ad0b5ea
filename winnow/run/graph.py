"""Build the Beam graph of a run from its config.

read → each selected stage (in pipeline order) → write kept / removed / rejected, plus a
small summary (input count, per-reason counts, shard stats) that the driver turns into
the manifest and checks against the accounting invariant after the pipeline finishes.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import KEPT, REJECTED, REMOVED, StageSpec, ToDocuments
from winnow.beam.read import ReadInputs
from winnow.beam.write import (
    WriteShards,
    document_sort_key,
    ordered_sort_key,
    rejected_sort_key,
    removed_sort_key,
)
from winnow.config import WinnowConfig
from winnow.core.batches import document_count
from winnow.core.schemas import document_schema, rejected_schema, removed_schema
from winnow.run.progress import ProgressTap
from winnow.run.registry import build_stage
from winnow.run.steps import RequireText, kept_kinds, removal_key, write_summary
from winnow.run.tokens import WriteTokens

SUMMARY_FILE = "_summary.json"


def data_schema(config: WinnowConfig, stages: list[StageSpec]) -> pa.Schema:
    """Schema of the kept shards: every stage's fixed columns in pipeline order, then the config-dependent ones."""
    fixed = [column for spec in stages for column in spec.columns]
    configured = [column for spec in stages for column in spec.config_columns(getattr(config, spec.name))]
    return document_schema(fixed + configured)


def build_pipeline(
    pipeline: beam.Pipeline,
    config: WinnowConfig,
    stages: list[StageSpec],
    staging_dir: str,
    progress_dir: str | None = None,
) -> None:
    """Add the whole run to ``pipeline``; outputs go under ``staging_dir`` until finalised."""
    read = pipeline | "Read" >> ReadInputs(config.inputs)
    docs = read[KEPT] | "ProgressRead" >> beam.ParDo(ProgressTap("read", progress_dir))
    # Counted apart and added: a Flatten of the documents would make the local runner move them all.
    input_count = (
        [
            docs | "InputSizes" >> beam.Map(document_count) | "CountDocuments" >> beam.CombineGlobally(sum),
            read[REJECTED] | "CountReadRejects" >> beam.combiners.Count.Globally(),
        ]
        | "AllInputs" >> beam.Flatten()
        | "CountInput" >> beam.CombineGlobally(sum)
    )
    removed_parts = []
    rejected_parts = [read[REJECTED]]
    stage_reports = []  # extra per-stage summaries (selection cut, domain stats, …) for the manifest
    tables = []  # extra per-stage output tables (contexts, dd pieces, …)
    finishing = []  # stages with work over the run's final outputs (inject's trap ledger)
    batched = True  # the reader's output: Arrow batches of documents (WARC records as dicts)
    for spec in stages:
        transform = build_stage(spec, config)
        if hasattr(transform, "finish"):
            finishing.append((spec.name, transform))
        if batched and not spec.batches:
            docs = docs | f"ToDocuments_{spec.name}" >> beam.ParDo(ToDocuments())
            batched = False
        outputs = docs | spec.name >> transform
        docs = outputs[KEPT] | f"Progress_{spec.name}" >> beam.ParDo(ProgressTap(spec.name, progress_dir))
        removed_parts.append(outputs[REMOVED])
        rejected_parts.append(outputs[REJECTED])
        if "summary" in outputs:
            stage_reports.append(outputs["summary"] | f"TagReport_{spec.name}" >> beam.Map(lambda r: ("section", r)))
        specs = getattr(transform, "tables", {}) or {}
        for name, pcoll in outputs.items():
            if name not in (KEPT, REMOVED, REJECTED, "summary"):
                if name not in specs:
                    raise ValueError(f"stage {spec.name} returned table {name!r} without a TableSpec in .tables")
                tables.append((name, pcoll, specs[name]))

    final = docs | "RequireText" >> beam.ParDo(RequireText()).with_outputs(REJECTED, main=KEPT)
    kept = final[KEPT]
    rejected_parts.append(final[REJECTED])
    removed_all = (
        removed_parts | "AllRemoved" >> beam.Flatten() if removed_parts else pipeline | "NoRemoved" >> beam.Create([])
    )
    rejected_all = rejected_parts | "AllRejected" >> beam.Flatten()

    sharding = config.output.shards
    stage_names = [spec.name for spec in stages]
    ordered = "order" in stage_names
    schema = data_schema(config, stages)
    files = [
        kept
        | "WriteData"
        >> WriteShards(
            "data",
            FileSystems.join(staging_dir, "data"),
            schema,
            sharding,
            ordered_sort_key if ordered else document_sort_key,
            # Training phases (mix.schedule, INGENIOUS rounds) are shard sets: data/phase=<name>/.
            partition_field="phase" if "phase" in schema.names else None,
            ordered_by="order_rank" if ordered else None,
        ),
        rejected_all
        | "WriteRejected"
        >> WriteShards(
            "rejected",
            FileSystems.join(staging_dir, "rejected"),
            rejected_schema(),
            sharding,
            rejected_sort_key,
            shard_key=lambda r: f"{r['source']}\x00{r['offset']}\x00{r['stage']}".encode(),
        ),
    ]
    for name, pcoll, table in tables:
        table_sharding = sharding
        if table.row_group_rows is not None and table.row_group_rows < sharding.row_group_rows:
            table_sharding = sharding.model_copy(update={"row_group_rows": table.row_group_rows})
        files.append(
            pcoll
            | f"WriteTable_{name}"
            >> WriteShards(
                name,
                FileSystems.join(staging_dir, name),
                table.schema,
                table_sharding,
                table.sort_key,
                shard_key=table.shard_key,
                partition_field=table.partition_field,
            )
        )
    if config.output.write_removed:
        files.append(
            removed_all
            | "WriteRemoved"
            >> WriteShards(
                "removed", FileSystems.join(staging_dir, "removed"), removed_schema(), sharding, removed_sort_key
            )
        )

    summary_items = [
        input_count | "TagInput" >> beam.Map(lambda n: ("input", n)),
        # Rows with epoch ≥ 1 repeat a kept document (upsampling, multi-epoch mixing): counted apart.
        kept | "KeptOrRepeat" >> beam.FlatMap(kept_kinds) | "CountKept" >> beam.CombinePerKey(sum),
        removed_all
        | "RemovalKey" >> beam.Map(removal_key)
        | "CountRemoved" >> beam.combiners.Count.PerElement()
        | "TagRemoved" >> beam.Map(lambda kv: ("removed", kv)),
        rejected_all
        | "RejectStage" >> beam.Map(lambda r: r["stage"])
        | "CountRejected" >> beam.combiners.Count.PerElement()
        | "TagRejected" >> beam.Map(lambda kv: ("rejected", kv)),
        *[f | f"TagFiles{i}" >> beam.Map(lambda s: ("file", s)) for i, f in enumerate(files)],
        *stage_reports,
    ]
    # What follows takes dicts; kept is still Arrow batches when every stage declared batches.
    needs_documents = batched and (finishing or config.output.tokens.formats)
    kept_docs = kept | "KeptDocuments" >> beam.ParDo(ToDocuments()) if needs_documents else kept
    for name, transform in finishing:  # summary items ("file", "section") from the final kept and removed rows
        final_outputs = {KEPT: kept_docs, REMOVED: removed_all}
        summary_items.append(final_outputs | f"Finish_{name}" >> transform.finish(staging_dir))
    if config.output.tokens.formats:  # training-ready token files (docs/token-output.md)
        token_inputs = {"kept": kept_docs, **{name: pcoll for name, pcoll, _ in tables if name == "dd"}}
        summary_items.append(
            token_inputs
            | "WriteTokens"
            >> WriteTokens(
                config,
                stage_names,
                FileSystems.join(staging_dir, "tokens"),
                soft_labels_root=FileSystems.join(staging_dir, "soft_labels"),
            )
        )
    summary_path = FileSystems.join(staging_dir, SUMMARY_FILE)
    _ = (
        summary_items
        | "AllSummary" >> beam.Flatten()
        | "CollectSummary" >> beam.combiners.ToList()
        | "WriteSummary" >> beam.Map(write_summary, summary_path)
    )
