"""``select.rule: ingenious`` in Beam: embeddings → partitions → one GroupByKey per partition → decisions joined back.

The method is in docs/ingenious.md and its per-partition core in ``winnow.stages.select.ingenious``;
this module moves the data, and no step holds more than one partition's vectors:

1. **Embed.** Each candidate becomes an item ``(doc_id, tokens, vector)``: the vector from the
   configured embedder (loaded once per worker) or from the user's ``embedding`` column, the tokens
   from ``tokens_field`` or the run tokenizer. A document that cannot be embedded gets a *reject*
   decision instead. Items carry no text.
2. **Dimension.** The most common vector length (a per-length count, ties to the longer) is the
   pool's; items of another length are rejected (a user column may mix models).
3. **Partition.** ``random``: ``H64(doc_id, "ingenious-part", seed) mod P``. ``kmeans``: spherical
   k-means cells on the integer grid (``winnow.core.cells``, the cells of the ``order`` stage)
   trained on the ``sample_size`` items with the smallest ``H64(doc_id)``, about P of them; each
   item goes to its nearest cell.
4. **Rank and draw.** ``GroupByKey`` on the partition; one DoFn per partition runs
   ``select_partition`` (dense kernel, greedy ranking, Taylor softmax, every round's draw). Pool
   totals (documents, tokens) come in as a side input. Its output is a decision per document.
5. **Join.** ``CoGroupByKey`` of the documents with their decisions, by id: a document drawn in
   rounds r₁ < r₂ < … comes out once per round, with ``phase = round-<r>`` (the shard set
   ``data/phase=round-<r>/``, as ``mix.schedule`` phases) and ``epoch`` 0, 1, … in round order, so
   the first draw counts as the kept document and later ones as repeats. A document no round drew
   (including each partition's unranked element) is removed as ``select:ingenious``.

``summary`` holds the ``ingenious`` manifest section: one record per partition (size, tokens,
budget, evaluations, and per round the selected count, tokens and facility-location value next to
the mean and spread of 10 random subsets of the same size) and one overview record (strategy,
partition count, size histogram, per-round totals and the pool-wide FL ratio against random).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, counter, field_value, rejected, removed, side_copy
from winnow.core.cells import assign_cells, train_cells
from winnow.core.config import TokenizerConfig
from winnow.core.embedders import sentence_encoder
from winnow.core.hashing import h64
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.select.ingenious import IngeniousRow, partition_of, select_partition
from winnow.stages.select.ingenious_config import IngeniousConfig

STAGE = "select"
REASON = "select:ingenious"
SECTION = "ingenious"
SUMMARY = "summary"
ITEMS = "items"
DECISIONS = "decisions"
SAMPLE_PURPOSE = "ingenious-sample"
RANDOM_TRIALS = 10  # random subsets per round size in the manifest's representativeness figures

COLUMNS = (
    pa.field("ing_partition", pa.int32()),
    pa.field("ing_rank", pa.int32()),  # null for the partition's unranked element
    pa.field("ing_gain", pa.float32()),
    pa.field("ing_prob", pa.float32()),
    pa.field("ing_rounds", pa.list_(pa.int16())),  # the rounds that drew the document
    pa.field("phase", pa.string()),  # round-<r>: the round this row belongs to
)

Item = tuple[str, int, np.ndarray]  # (doc_id, tokens, vector)


def phase_name(round_index: int, rounds: int) -> str:
    """``round-<r>``, zero-padded to the widest round number so names sort in round order."""
    width = max(2, len(str(rounds - 1)))
    return f"round-{round_index:0{width}d}"


def column_vector(doc: Document, column: str) -> np.ndarray:
    """The user's vector from ``column`` (top level or in ``metadata``), as finite float32."""
    value = field_value(doc, column)
    if value is None:
        raise ValueError(f"missing embedding column {column!r}")
    if isinstance(value, str | bytes | dict):
        raise ValueError(f"embedding column {column!r} is not a list of numbers")
    vector = np.asarray(value, dtype=np.float32)
    if vector.ndim != 1 or len(vector) == 0:
        raise ValueError(f"embedding column {column!r} has shape {vector.shape}, not a non-empty vector")
    if not np.isfinite(vector).all():
        raise ValueError(f"embedding column {column!r} holds NaN or infinity")
    return vector


def token_count(doc: Document, field: str) -> int | None:
    """The document's token count from ``field``; None when absent (then the run tokenizer counts)."""
    value = doc.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise ValueError(f"field {field!r} is not a token count: {value!r}")
    return int(value)


def _reject(doc_id: str, message: str) -> tuple[str, tuple[str, str]]:
    return doc_id, ("reject", message)


class EmbedDoFn(beam.DoFn):
    """Batches of documents → items ``(doc_id, tokens, vector)``, or a reject decision per document."""

    def __init__(self, config: IngeniousConfig, tokens_field: str, tokenizer: TokenizerConfig):
        self.config = config
        self.tokens_field = tokens_field
        self.tokenizer_config = tokenizer
        self._tokenizer: Any = None
        self._encoder: Any = None
        self._embedded = counter("select:ingenious_embedded")
        self._failed = counter("select:ingenious_embed_failed")

    def setup(self) -> None:
        if self.config.embedding.source == "model":
            self._encoder = sentence_encoder(self.config.embedding.model)

    def _tokens(self, doc: Document) -> int:
        tokens = token_count(doc, self.tokens_field)
        if tokens is not None:
            return tokens
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)
        return int(self._tokenizer.count([doc.get("text") or ""])[0])

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self._encoder.encode(texts), dtype=np.float32)
        if vectors.shape[0] != len(texts) or not np.isfinite(vectors).all():
            raise ValueError("the embedder returned a bad or non-finite batch")
        return vectors

    def process(self, batch: Sequence[Document]) -> Iterator[Any]:
        ready: list[tuple[str, int, Document]] = []
        for doc in batch:
            doc_id = str(doc["id"])
            try:
                tokens = self._tokens(doc)
                if self.config.embedding.source == "column":
                    vector = column_vector(doc, self.config.embedding.column)
                    self._embedded.inc()
                    yield doc_id, tokens, vector
                    continue
            except (TypeError, ValueError) as error:
                self._failed.inc()
                yield pvalue.TaggedOutput(DECISIONS, _reject(doc_id, str(error)))
                continue
            ready.append((doc_id, tokens, doc))
        if not ready:
            return
        try:
            vectors = self._encode([doc.get("text") or "" for _, _, doc in ready])
        except Exception:  # find the document(s) at fault one at a time
            for doc_id, tokens, doc in ready:
                try:
                    yield doc_id, tokens, self._encode([doc.get("text") or ""])[0]
                    self._embedded.inc()
                except Exception as error:  # a document must never kill the job
                    self._failed.inc()
                    yield pvalue.TaggedOutput(DECISIONS, _reject(doc_id, f"{type(error).__name__}: {error}"))
            return
        self._embedded.inc(len(ready))
        for (doc_id, tokens, _), vector in zip(ready, vectors, strict=True):
            yield doc_id, tokens, vector


def pool_dimension(counts: list[tuple[int, int]]) -> int:
    """The most common vector length; ties go to the longer one (0 for an empty pool)."""
    return max(counts, key=lambda item: (item[1], item[0]))[0] if counts else 0


class CheckDimensionDoFn(beam.DoFn):
    def process(self, item: Item, dimension: int) -> Iterator[Any]:
        if len(item[2]) == dimension:
            yield item
        else:
            counter("select:ingenious_bad_dimension").inc()
            message = f"embedding has {len(item[2])} dimensions, the pool's vectors have {dimension}"
            yield pvalue.TaggedOutput(DECISIONS, _reject(item[0], message))


def _pool_totals(items: Iterable[tuple[int, int]]) -> tuple[int, int]:
    docs = tokens = 0
    for d, t in items:
        docs += d
        tokens += t
    return docs, tokens


# --- k-means partitions ---------------------------------------------------------------------


def _sample_key(item: Item, seed: int) -> tuple[int, str, np.ndarray]:
    return h64(item[0], SAMPLE_PURPOSE, seed), item[0], item[2]


def plan_kmeans(sample: list[tuple[int, str, np.ndarray]], totals: tuple[int, int], config: IngeniousConfig) -> Any:
    """Cells trained on the sample for about ``partitions.count`` partitions of the pool (None: one cell)."""
    total = totals[0]
    ordered = sorted(sample, key=lambda s: (s[0], s[1]))
    if config.partitions.count <= 1 or len(ordered) < 8:
        return None
    vectors = np.stack([vector for _, _, vector in ordered])
    cell_size = max(1, math.ceil(total / config.partitions.count))
    return train_cells(vectors, total, cell_size, config.rounds.seed)


def cell_index(cells: Any) -> dict[str, int]:
    """Partition number of each cell name, in the cells' own order."""
    return {name: i for i, name in enumerate(cells.names())} if cells is not None else {"0": 0}


class AssignCellDoFn(beam.DoFn):
    """Batches of items → (partition number, item) by nearest cell."""

    def process(self, batch: Sequence[Item], cells: Any) -> Iterator[Any]:
        index = cell_index(cells)
        if cells is None:
            for item in batch:
                yield 0, item
            return
        names = assign_cells(np.stack([item[2] for item in batch]), cells)
        for name, item in zip(names, batch, strict=True):
            yield index[name], item


# --- one partition --------------------------------------------------------------------------------


class PartitionDoFn(beam.DoFn):
    """One partition's items → a decision per document (``("row", …)`` or ``("reject", message)``) and
    the core's per-(sub-)partition summaries."""

    def __init__(self, config: IngeniousConfig, token_budget: float | None):
        self.config = config
        self.token_budget = token_budget
        self._partitions = counter("select:ingenious_partitions")

    def process(self, element: tuple[int, Iterable[Item]], totals: tuple[int, int], count: int) -> Iterator[Any]:
        partition, members = element
        items = list(members)
        seen = Counter(item[0] for item in items)
        for doc_id in sorted(doc_id for doc_id, n in seen.items() if n > 1):
            counter("select:ingenious_duplicate_id").inc(seen[doc_id])
            yield _reject(doc_id, "duplicate document id: INGENIOUS needs one vector per id")
        unique = [item for item in items if seen[item[0]] == 1]
        tokens = {item[0]: item[1] for item in unique}
        try:
            out = select_partition(
                partition,
                unique,
                self.config,
                total_docs=totals[0],
                total_tokens=totals[1],
                token_budget=self.token_budget,
                partition_count=count,
                random_trials=RANDOM_TRIALS,
            )
        except Exception as error:  # a partition's failure rejects its documents, never the job
            message = f"partition {partition}: {type(error).__name__}: {error}"
            for doc_id in sorted(tokens):
                yield _reject(doc_id, message)
            return
        self._partitions.inc(len(out.summaries))
        for row in out.rows:
            yield row.doc_id, ("row", (row, tokens[row.doc_id]))
        for summary in out.summaries:
            yield pvalue.TaggedOutput(SUMMARY, summary)


# --- the join -------------------------------------------------------------------------------------


class EmitDoFn(beam.DoFn):
    """A document and its decision → one row per round that drew it, removed, or rejected."""

    def __init__(self, config: IngeniousConfig, tokens_field: str):
        self.config = config
        self.tokens_field = tokens_field
        self._kept = counter("select:kept")
        self._removed = counter("select:removed")
        self._repeats = counter("select:repeats")

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
        _, joined = element
        docs, decisions = list(joined["doc"]), list(joined["decision"])
        if not docs:
            return
        problem = None
        if len(docs) > 1:
            problem = "duplicate document id: INGENIOUS needs one vector per id"
        elif any(kind == "reject" for kind, _ in decisions):
            problem = next(str(value) for kind, value in decisions if kind == "reject")
        elif len(decisions) != 1:
            problem = f"{len(decisions)} INGENIOUS decisions for one document"
        if problem is not None:
            for doc in docs:
                yield rejected(doc, STAGE, problem)
            return
        (doc,) = docs
        row, tokens = decisions[0][1]
        yield from self._rows(doc, row, tokens)

    def _rows(self, doc: Document, row: IngeniousRow, tokens: int) -> Iterator[Any]:
        if not row.rounds:
            self._removed.inc()
            yield removed(doc, REASON)
            return
        columns = {
            "ing_partition": row.partition,
            "ing_rank": row.rank,
            "ing_gain": row.gain,
            "ing_prob": row.prob,
            "ing_rounds": list(row.rounds),
        }
        if doc.get(self.tokens_field) is None:
            columns[self.tokens_field] = tokens
        self._kept.inc()
        self._repeats.inc(len(row.rounds) - 1)
        for epoch, round_index in enumerate(row.rounds):
            yield {**doc, **columns, "phase": phase_name(round_index, self.config.rounds.count), "epoch": epoch}


# --- the manifest section -------------------------------------------------------------------------


def partition_record(summary: dict[str, Any]) -> dict[str, Any]:
    return {"section": SECTION, "kind": "partition", **summary}


def size_histogram(sizes: Sequence[int]) -> list[dict[str, int]]:
    """Partitions per power-of-two size range [2^b, 2^(b+1) − 1] (sizes 0 and 1 in their own bins)."""
    bins: Counter[tuple[int, int]] = Counter()
    for size in sizes:
        low = 0 if size == 0 else 1 << (size.bit_length() - 1)
        bins[(low, max(low, 2 * low - 1))] += 1
    return [{"min": low, "max": high, "partitions": n} for (low, high), n in sorted(bins.items())]


def overview_record(summaries: list[dict[str, Any]], config: IngeniousConfig) -> dict[str, Any]:
    """Pool-wide figures: partitions, their sizes, and per round the selected documents and tokens and
    the summed FL value against the summed mean of random subsets (exact sums: order-free)."""
    summaries = sorted(summaries, key=lambda s: s["partition"])
    rounds = []
    for r in range(config.rounds.count):
        stats = [s["rounds"][r] for s in summaries if len(s["rounds"]) > r]
        fl = math.fsum(stat["fl"] for stat in stats)
        random_fl = math.fsum(stat["fl_random_mean"] for stat in stats)
        rounds.append(
            {
                "round": r,
                "phase": phase_name(r, config.rounds.count),
                "selected": sum(stat["selected"] for stat in stats),
                "tokens": sum(stat["tokens"] for stat in stats),
                "fl": fl,
                "fl_random_mean": random_fl,
                "fl_ratio": fl / random_fl if random_fl > 0 else None,
            }
        )
    sizes = [s["size"] for s in summaries]
    return {
        "section": SECTION,
        "kind": "overview",
        "strategy": config.partitions.strategy,
        "optimizer": "reference (stochastic)" if config.optimizer == "stochastic" else "lazy greedy (exact)",
        "embedding": (
            config.embedding.model if config.embedding.source == "model" else f"column {config.embedding.column}"
        ),
        "weight": config.weight,
        "fraction": config.fraction,
        "temperature": config.temperature,
        "partitions": len(summaries),
        "documents": sum(sizes),
        "tokens": sum(s["tokens"] for s in summaries),
        "largest_partition": max(sizes, default=0),
        "largest_kernel_bytes": max(sizes, default=0) ** 2 * 4,
        "size_histogram": size_histogram(sizes),
        "random_trials": RANDOM_TRIALS,
        "rounds": rounds,
    }


class IngeniousSelect(beam.PTransform):
    """The rule's transform over candidate documents (``where`` already applied); see the module docstring."""

    def __init__(
        self,
        config: IngeniousConfig,
        tokens_field: str = "n_tokens",
        tokenizer: TokenizerConfig | None = None,
        token_budget: float | None = None,
    ):
        super().__init__()
        self.config = config
        self.tokens_field = tokens_field
        self.tokenizer = tokenizer or TokenizerConfig()  # the bundled tokenizer when the run names none
        self.token_budget = token_budget

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        config = self.config
        seed = config.rounds.seed
        size = config.embedding.batch_size
        embedded = (
            docs
            | "EmbedBatch" >> beam.BatchElements(min_batch_size=1, max_batch_size=size)
            | "Embed"
            >> beam.ParDo(EmbedDoFn(config, self.tokens_field, self.tokenizer)).with_outputs(DECISIONS, main=ITEMS)
        )
        dimension = (
            embedded[ITEMS]
            | "Length" >> beam.Map(lambda item: (len(item[2]), 1))
            | "CountLengths" >> beam.CombinePerKey(sum)
            | "AllLengths" >> beam.combiners.ToList()
            | "Dimension" >> beam.Map(pool_dimension)
        )
        checked = embedded[ITEMS] | "CheckDimension" >> beam.ParDo(
            CheckDimensionDoFn(), pvalue.AsSingleton(dimension)
        ).with_outputs(DECISIONS, main=ITEMS)
        items = checked[ITEMS]
        totals = (
            items | "ItemTotals" >> beam.Map(lambda item: (1, item[1])) | "Totals" >> beam.CombineGlobally(_pool_totals)
        )
        if config.partitions.strategy == "random":
            count = config.partitions.count
            keyed = items | "RandomPartition" >> beam.Map(lambda item: (partition_of(item[0], seed, count), item))
            partition_count = docs.pipeline | "PartitionCount" >> beam.Create([count])
        else:
            sample = (
                items
                | "SampleKey" >> beam.Map(_sample_key, seed)
                | "Sample" >> beam.combiners.Top.Smallest(config.partitions.sample_size, key=lambda s: (s[0], s[1]))
            )
            cells = sample | "TrainCells" >> beam.Map(
                plan_kmeans, pvalue.AsSingleton(side_copy(totals, "TotalsForCells")), config
            )
            keyed = (
                items
                | "AssignBatch" >> beam.BatchElements(min_batch_size=1, max_batch_size=1024)
                | "AssignCell" >> beam.ParDo(AssignCellDoFn(), pvalue.AsSingleton(side_copy(cells, "CellsSide")))
            )
            partition_count = cells | "CellCount" >> beam.Map(lambda c: len(cell_index(c)))
        ranked = (
            keyed
            | "GroupPartition" >> beam.GroupByKey()
            | "Partition"
            >> beam.ParDo(
                PartitionDoFn(config, self.token_budget),
                pvalue.AsSingleton(side_copy(totals, "TotalsSide")),
                pvalue.AsSingleton(partition_count),
            ).with_outputs(SUMMARY, main=DECISIONS)
        )
        decisions = (
            embedded[DECISIONS],
            checked[DECISIONS],
            ranked[DECISIONS],
        ) | "AllDecisions" >> beam.Flatten()
        by_id = docs | "ById" >> beam.Map(lambda doc: (str(doc["id"]), doc))
        out = (
            {"doc": by_id, "decision": decisions}
            | "Join" >> beam.CoGroupByKey()
            | "Emit" >> beam.ParDo(EmitDoFn(config, self.tokens_field)).with_outputs(REMOVED, REJECTED, main=KEPT)
        )
        summaries = ranked[SUMMARY]
        records = summaries | "PartitionRecords" >> beam.Map(partition_record)
        overview = (
            summaries | "AllPartitions" >> beam.combiners.ToList() | "Overview" >> beam.Map(overview_record, config)
        )
        summary = (records, overview) | "Summary" >> beam.Flatten()
        return {KEPT: out[KEPT], REMOVED: out[REMOVED], REJECTED: out[REJECTED], SUMMARY: summary}
