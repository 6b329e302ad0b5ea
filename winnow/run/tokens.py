"""The token output of a run (``output.tokens``, docs/token-output.md), wired after every stage.

* ``documents``: every kept row (repeats included) as one sequence, ids + EOS, in the order of the
  ``data/`` shards (``order_rank`` when the run is ordered, else the shards' hash order), per phase;
* ``contexts``: with ``pack.mode: concat``, each packed context as one sequence of exactly
  ``pack.context_tokens`` tokens, in training order (``position``);
* ``dd``: with ``pack.mode: dd``, one dataset per bucket from the ``dd`` table.

Each row is encoded once (``TokenizeDocuments``); contexts are cut from that encoding. Files are
staged under ``_staging/tokens/`` and listed in the summary like every shard, so ``finalize``
moves them, the manifest lists them with their SHA-256 and a resumed run checks them.

With ``output.soft_labels`` the small LM's top-k next-token distribution of every position of the
exported contexts (those of ``soft_labels.phases``) is written beside them as the Parquet table
``soft_labels/``, one row per position, keyed by the contexts' sequence ids (``context-<n>``) so a
trainer joins them to the token files (docs/salt.md#soft-labels).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from winnow.beam.contract import counter
from winnow.beam.tokens import (
    DocumentItems,
    TokenizeDocuments,
    WriteTokenParts,
    finalize_parts,
)
from winnow.beam.write import WriteShards, partition_dir, shard_plan
from winnow.config import WinnowConfig
from winnow.core.causal_lm import load_configured_lm
from winnow.core.models import resolve_model_path
from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import id_bound, resolve_dtype
from winnow.stages.pack.tokens import ContextSequences, dd_item
from winnow.stages.score.soft_labels import (
    SoftLabelConfig,
    check_tokenizer,
    soft_label_schema,
    soft_label_table,
    tokenizer_vocab,
)

TOKENIZE_BATCH = 256
EMPTY_NOTE = "empty_documents_skipped"
SOFT_LABELS = "soft_labels"


class SoftLabelsDoFn(beam.DoFn):
    """A context item → one row per predicted position: the small LM's top-k ids and log-probs.

    The LM loads once per worker; before its first context the worker checks that the LM and the
    run tokenizer give every token the same id (``TokenizerMismatch`` otherwise), so no label that
    points at the wrong token is ever written.
    """

    def __init__(self, config: SoftLabelConfig, tokenizer_path: str, dtype: str):
        self.config = config
        self.tokenizer_path = tokenizer_path
        self.dtype = np.dtype(dtype)
        self._contexts = counter("soft_labels:contexts")
        self._positions = counter("soft_labels:positions")

    def setup(self) -> None:
        self.model = load_configured_lm(self.config)
        check_tokenizer(self.model, tokenizer_vocab(resolve_model_path(self.tokenizer_path)))
        self.described = self.model.describe()

    def process(self, item: Any) -> Iterator[Any]:
        sequence_id, raw, _, _, phase = item[3]
        ids = np.frombuffer(raw, dtype=self.dtype).tolist()
        table = soft_label_table(self.model, [(sequence_id, ids)], self.config.topk, dtype=self.config.dtype)
        self._contexts.inc()
        self._positions.inc(table.num_rows)
        yield beam.pvalue.TaggedOutput(self.COUNTS, (self.described, table.num_rows))
        for row in table.to_pylist():
            yield {**row, "phase": phase}

    COUNTS = "counts"


def soft_label_rows_schema(config: SoftLabelConfig) -> pa.Schema:
    """The ``soft_labels`` table: ``soft_label_schema`` plus the context's ``phase``."""
    return soft_label_schema(config.dtype).append(pa.field("phase", pa.string()))


def soft_labels_section(counts: list[tuple[str, int]], config: SoftLabelConfig) -> tuple[str, dict[str, Any]]:
    """The ``soft_labels`` manifest section: the LM, k, dtype, phases, contexts and positions exported."""
    return (
        "section",
        {
            "section": SOFT_LABELS,
            "models": sorted({model for model, _ in counts}),
            "path": config.path,
            "topk": config.topk,
            "dtype": config.dtype,
            "phases": list(config.phases),
            "contexts": len(counts),
            "positions": sum(n for _, n in counts),
            "table": SOFT_LABELS,
        },
    )


class WriteTokens(beam.PTransform):
    """``{"kept": final kept rows, "dd": the dd table (when packed so)}`` → summary items:
    ``("file", entry)`` per token file and one ``("section", tokens section)``; with
    ``output.soft_labels`` also the ``soft_labels`` table's files, under ``soft_labels_root``."""

    def __init__(
        self, config: WinnowConfig, stage_names: list[str], target_root: str, soft_labels_root: str | None = None
    ):
        super().__init__()
        self.config = config
        self.stage_names = stage_names
        self.target_root = target_root
        self.soft_labels_root = soft_labels_root

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        config, tokens = self.config, self.config.output.tokens
        tokenizer = load_tokenizer(config.tokenizer.path, config.tokenizer.eos_token)
        dtype = resolve_dtype(tokens.dtype, id_bound(tokenizer))
        kept = inputs["kept"]
        # The data writer's partitions and plan, so documents follow the data shards' order.
        field = "phase" if "mix" in self.stage_names else None
        ordered = "order" in self.stage_names
        keyed = kept | "Partition" >> beam.Map(lambda r: (partition_dir(field, r.get(field) if field else None), r))
        plan = shard_plan(keyed, config.output.shards, "order_rank" if ordered else None)
        tokenized = (
            kept
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=TOKENIZE_BATCH)
            | "Tokenize" >> beam.ParDo(TokenizeDocuments(config.tokenizer.path, config.tokenizer.eos_token, dtype.name))
        )
        documents = tokenized | "Documents" >> beam.ParDo(
            DocumentItems(partition_field=field, ordered=ordered, append_eos=tokens.append_eos, dtype=dtype), plan
        ).with_outputs(DocumentItems.EMPTY, main="items")
        items = [documents["items"]]
        notes = [
            documents[DocumentItems.EMPTY]
            | "CountEmpty" >> beam.CombinePerKey(sum)
            | "EmptyNote" >> beam.Map(lambda kv: ("note", (EMPTY_NOTE, kv[0], {"count": kv[1]})))
        ]
        soft_files = []
        if "pack" in self.stage_names and config.pack.mode == "concat":
            contexts = tokenized | "Contexts" >> ContextSequences(config.pack, config.seed, dtype)
            items.append(contexts["items"])
            notes.append(contexts["tails"])
            soft = config.output.soft_labels
            if soft.enabled and self.soft_labels_root is not None:
                phases = set(soft.phases)
                labelled = (
                    contexts["items"]
                    | "SoftLabelContexts" >> beam.Filter(lambda item: not phases or item[3][4] in phases)
                    | "SoftLabels"
                    >> beam.ParDo(SoftLabelsDoFn(soft, config.tokenizer.path, dtype.name)).with_outputs(
                        SoftLabelsDoFn.COUNTS, main="rows"
                    )
                )
                soft_files.append(
                    labelled[SoftLabelsDoFn.COUNTS]
                    | "AllSoftLabelCounts" >> beam.combiners.ToList()
                    | "SoftLabelSection" >> beam.Map(soft_labels_section, soft)
                )
                soft_files.append(
                    labelled["rows"]
                    | "WriteSoftLabels"
                    >> WriteShards(
                        SOFT_LABELS,
                        self.soft_labels_root,
                        soft_label_rows_schema(soft),
                        config.output.shards,
                        lambda row: (row["context_id"], row["position"]),
                        shard_key=lambda row: row["context_id"].encode(),
                    )
                    | "TagSoftLabelFiles" >> beam.Map(lambda entry: ("file", entry))
                )
        if "dd" in inputs:
            items.append(inputs["dd"] | "DDPieces" >> beam.Map(dd_item, config.pack, dtype))
        parts = (
            items
            | "AllItems" >> beam.Flatten()
            | "WriteParts" >> WriteTokenParts(self.target_root, tokens.formats, dtype, tokens.target_bytes)
        )
        results = (
            [parts | "TagParts" >> beam.Map(lambda result: ("part", result)), *notes]
            | "AllResults" >> beam.Flatten()
            | "CollectResults" >> beam.combiners.ToList()
            | "Finalize"
            >> beam.FlatMap(
                finalize_parts,
                target_root=self.target_root,
                tokenizer=tokenizer.describe(),
                dtype=dtype.name,
                append_eos=tokens.append_eos,
                target_bytes=tokens.target_bytes,
            )
        )
        if not soft_files:
            return results
        return (results, *soft_files) | "WithSoftLabels" >> beam.Flatten()
