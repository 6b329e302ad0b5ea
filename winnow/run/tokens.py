"""The token output of a run (``output.tokens``, docs/token-output.md), wired after every stage.

* ``documents``: every kept row (repeats included) as one sequence, ids + EOS, in the order of the
  ``data/`` shards (``order_rank`` when the run is ordered, else the shards' hash order), per phase;
* ``contexts``: with ``pack.mode: concat``, each packed context as one sequence of exactly
  ``pack.context_tokens`` tokens, in training order (``position``);
* ``dd``: with ``pack.mode: dd``, one dataset per bucket from the ``dd`` table.

Each row is encoded once (``TokenizeDocuments``); contexts are cut from that encoding. Files are
staged under ``_staging/tokens/`` and listed in the summary like every shard, so ``finalize``
moves them, the manifest lists them with their SHA-256 and a resumed run checks them.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from winnow.beam.tokens import (
    DOCUMENTS,
    TokenizeDocuments,
    WriteTokenParts,
    dataset_key,
    dataset_ref,
    document_item,
    finalize_parts,
    phase_of,
)
from winnow.beam.write import partition_dir, shard_plan
from winnow.config import WinnowConfig
from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import id_bound, resolve_dtype
from winnow.stages.pack.tokens import ContextSequences, dd_item

TOKENIZE_BATCH = 256
EMPTY_NOTE = "empty_documents_skipped"


class _DocumentItems(beam.DoFn):
    """``document_item`` with the rows that have no token at all (an empty text without EOS) counted."""

    EMPTY = "empty"

    def __init__(self, **options: Any):
        self.options = options

    def process(self, record: dict[str, Any], plan: dict) -> Any:
        produced = False
        for item in document_item(record, plan, **self.options):
            produced = True
            yield item
        if not produced:
            field = self.options["partition_field"]
            partition = partition_dir(field, record.get(field)) if field else ""
            path = dataset_key(dataset_ref(DOCUMENTS, phase_of(partition))).path
            yield beam.pvalue.TaggedOutput(self.EMPTY, (path, 1))


class WriteTokens(beam.PTransform):
    """``{"kept": final kept rows, "dd": the dd table (when packed so)}`` → summary items:
    ``("file", entry)`` per token file and one ``("section", tokens section)``."""

    def __init__(self, config: WinnowConfig, stage_names: list[str], target_root: str):
        super().__init__()
        self.config = config
        self.stage_names = stage_names
        self.target_root = target_root

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
            _DocumentItems(partition_field=field, ordered=ordered, append_eos=tokens.append_eos, dtype=dtype), plan
        ).with_outputs(_DocumentItems.EMPTY, main="items")
        items = [documents["items"]]
        notes = [
            documents[_DocumentItems.EMPTY]
            | "CountEmpty" >> beam.CombinePerKey(sum)
            | "EmptyNote" >> beam.Map(lambda kv: ("note", (EMPTY_NOTE, kv[0], {"count": kv[1]})))
        ]
        if "pack" in self.stage_names and config.pack.mode == "concat":
            contexts = tokenized | "Contexts" >> ContextSequences(config.pack, config.seed, dtype)
            items.append(contexts["items"])
            notes.append(contexts["tails"])
        if "dd" in inputs:
            items.append(inputs["dd"] | "DDPieces" >> beam.Map(dd_item, config.pack, dtype))
        parts = (
            items
            | "AllItems" >> beam.Flatten()
            | "WriteParts" >> WriteTokenParts(self.target_root, tokens.formats, dtype, tokens.target_bytes)
        )
        return (
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
