"""Stage ``order``: a global ``order_rank`` for every kept document, then packing (docs/icp.md,
docs/qurating.md#curriculum).

* ``icp``: embed (model loaded once per worker), then order inside cells. A corpus below
  ``partition_below`` embedded docs is one cell; above, k-means centroids are trained on a
  deterministic sample (the ``sample_size`` smallest H64(doc_id), a ``Top`` combiner), every
  document is assigned a cell, and each cell (GroupByKey) gets its kNN graph, traversal and
  semantic dedup (core in ``winnow.stages.order.ordering``). Cells are concatenated in a seeded order;
  ``order_rank`` = the cell's offset (prefix sums of cell sizes, a small side input) + position.
  Documents under ``min_words`` skip embedding and form a cell ordered by seeded hash.
* ``sort`` (QuRating curriculum): approximate quantiles of the sort key cut the corpus into key
  ranges of about ``cell_size`` docs; each range is sorted on its own; ranks via prefix sums.
* ``none``: the same with a seeded hash as key (a shuffle).

Repeats (``epoch`` ≥ 1, from upsampling) are ordered after the first pass, in groups of their
own epoch, and never semantically deduplicated.

No step holds all embeddings in one process unless the corpus is below ``partition_below``.
The ``pack`` stage then turns the ranked documents into training contexts.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.transforms.stats import ApproximateQuantiles

from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, rejected, removed
from winnow.core.config import TokenizerConfig
from winnow.core.hashing import h64, uniform
from winnow.core.schemas import identity_key
from winnow.stages.order import ordering
from winnow.stages.order.config import OrderConfig

STAGE = "order"
SUMMARY = "summary"
SHORT_CELL = "short"
PLACED = "placed"  # (group, position, doc) before ranks are known
STATS = "stats"  # per-group record for offsets and the summary
NEIGHBOURS = "neighbours"  # cross-cell estimate: (query id, [(sim, tiebreak, cell)])
QUANTILES = 1001


class EmbedDoFn(beam.DoFn):
    """Batches of docs → (doc, vector); short docs go to ``short``, failures to ``rejected``."""

    def __init__(
        self,
        embedder: str,
        min_words: int,
        topic_weight: float = ordering.DEFAULT_TOPIC_WEIGHT,
        topic_tagger: str | None = None,
    ):
        self.embedder = embedder
        self.min_words = min_words
        self.topic_weight = topic_weight
        self.topic_tagger = topic_tagger or ordering.BUNDLED_TOPIC_TAGGER
        self._embedded = counter("order:embedded")
        self._short = counter("order:short_not_embedded")
        self._rejected = counter("order:embed_failed")

    def setup(self) -> None:
        self.encoder = ordering.load_embedder(
            self.embedder, topic_weight=self.topic_weight, topic_tagger=self.topic_tagger
        )

    def process(self, batch: Sequence[Document]) -> Iterator[Any]:
        todo = []
        for doc in batch:
            if ordering.word_count(doc.get("text") or "") < self.min_words:
                self._short.inc()
                yield pvalue.TaggedOutput(SHORT_CELL, doc)
            else:
                todo.append(doc)
        if not todo:
            return
        try:
            vectors = self._encode(todo)
        except Exception:  # find the document(s) at fault one at a time
            for doc in todo:
                try:
                    yield doc, self._encode([doc])[0]
                    self._embedded.inc()
                except Exception as error:
                    self._rejected.inc()
                    yield rejected(doc, STAGE, error)
            return
        self._embedded.inc(len(todo))
        for doc, vector in zip(todo, vectors, strict=True):
            yield doc, vector

    def _encode(self, docs: Sequence[Document]) -> np.ndarray:
        texts = [doc.get("text") or "" for doc in docs]
        if getattr(self.encoder, "reads_urls", False):
            vectors = self.encoder.encode(texts, [doc.get("url") for doc in docs])
        else:
            vectors = self.encoder.encode(texts)
        vectors = np.asarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise ValueError("non-finite embedding")
        return vectors


def _sampled(item: tuple[Document, np.ndarray], seed: int) -> tuple[int, str, np.ndarray]:
    return (h64(item[0]["id"], "order:sample", seed), item[0]["id"], item[1])


def plan_cells(sample: list[tuple[int, str, np.ndarray]], total: int, config: OrderConfig, seed: int) -> dict[str, Any]:
    """Driver-side plan from the sample: centroids (or one cell), cross-cell queries, random baseline."""
    sample = sorted(sample, key=lambda s: (s[0], s[1]))
    vectors = np.stack([v for _, _, v in sample]) if sample else np.zeros((0, 1), dtype=np.float32)
    # Random-order baseline: consecutive docs in H64 order are a random pairing.
    baseline = 0.0
    if len(sample) >= 2:
        pairs = np.arange(0, len(sample) - 1, 2)
        cosines = ordering.grid_cosines(ordering.GridVectors.of(vectors), pairs, pairs + 1)
        baseline = math.fsum(cosines.tolist()) / len(cosines)
    plan: dict[str, Any] = {"cells": None, "queries": [], "random_adjacent_cosine": baseline, "total": total}
    if total < config.partition_below or len(sample) < 8:
        return plan
    cells = ordering.train_cells(vectors, total, config.cell_size, seed)
    plan["cells"] = cells
    n_queries = min(config.cross_cell_queries, len(sample))
    if n_queries:
        names = ordering.assign_cells(vectors[:n_queries], cells)
        plan["queries"] = [(sample[i][1], vectors[i], names[i]) for i in range(n_queries)]
    return plan


class AssignCellDoFn(beam.DoFn):
    """Batches of (doc, vector) → (cell, (doc, vector)) from the plan's centroids."""

    def process(self, batch: Sequence[tuple[Document, np.ndarray]], plan: dict[str, Any]) -> Iterator[Any]:
        cells = plan["cells"]
        if cells is None:
            for item in batch:
                yield _with_epoch("0", item[0]), item
            return
        names = ordering.assign_cells(np.stack([v for _, v in batch]), cells)
        for name, item in zip(names, batch, strict=True):
            yield _with_epoch(name, item[0]), item


def _epoch(doc: Document) -> int:
    return int(doc.get("epoch") or 0)


def _with_epoch(cell: str, doc: Document) -> str:
    """Repeats (epoch ≥ 1, from select/mix upsampling) are ordered in groups of their own epoch,
    so a document never meets its own copy in a kNN list or a context; documents of different
    training phases (``phase``, from a mix schedule) are ordered apart, phase by phase."""
    epoch = _epoch(doc)
    name = cell if epoch == 0 else f"{cell}@e{epoch}"
    phase = doc.get("phase")
    return name if phase is None else f"{name}{_PHASE_MARK}{phase}"


_PHASE_MARK = "@p:"


def _cell_epoch(cell: str) -> int:
    match = re.search(r"@e(\d+)", cell.split(_PHASE_MARK, 1)[0])
    return int(match.group(1)) if match else 0


def _cell_phase(cell: str) -> str:
    return cell.split(_PHASE_MARK, 1)[1] if _PHASE_MARK in cell else ""


def _cell_order_key(cell: str, seed: int) -> tuple[str, int, int, str]:
    """Phases (by name), then epochs in sequence; cells of one epoch in a seeded order."""
    return (_cell_phase(cell), _cell_epoch(cell), h64(cell, "cell_order", seed), cell)


def _cap_cell(keyed: tuple[str, Any], sizes: dict[str, int], cap: int, seed: int) -> tuple[str, Any]:
    cell, item = keyed
    size = sizes.get(cell, 0)
    if size <= cap:
        return keyed
    parts = math.ceil(size / cap)
    return f"{cell}#{h64(item[0]['id'], 'order:cap', seed) % parts}", item


class OrderCellDoFn(beam.DoFn):
    """One cell: kNN graph → traversal → semantic dedup; docs with their position in the cell."""

    def __init__(self, config: OrderConfig, seed: int):
        self.config = config
        self.seed = seed
        self._duplicates = counter("order:semantic_duplicate")
        self._cells = counter("order:cells")

    def process(self, element: tuple[str, Iterable[tuple[Document, np.ndarray]]], plan: dict[str, Any]) -> Iterator:
        cell, items = element
        # GroupByKey hands members over in no fixed order: sort so the graph never depends on it.
        members = sorted(items, key=lambda item: identity_key(item[0]))
        ids = [doc["id"] for doc, _ in members]
        vectors = ordering.GridVectors.of(
            np.stack([v for _, v in members]), ordering.is_normalised(self.config.embedder)
        )
        config = self.config
        spec = ordering.IndexSpec(config.exact_below, config.pq_m, config.nprobe, seed=self.seed)
        # Repeats are not deduplicated: their epoch-0 originals were, and a removed repeat would
        # be counted as a duplicate input.
        theta = config.semantic_dedup if _cell_epoch(cell) == 0 else None
        result = ordering.order_cell(vectors, ids, config.k, config.traversal, theta, spec, self.seed)
        self._cells.inc()
        for dropped, original in sorted(result.duplicates.items()):
            self._duplicates.inc()
            yield removed(
                self._finish(cell, members[dropped]), f"{STAGE}:semantic_duplicate", duplicate_of=ids[original]
            )
        for position, node in enumerate(result.path):
            yield pvalue.TaggedOutput(PLACED, (cell, position, self._finish(cell, members[node])))
        yield pvalue.TaggedOutput(
            STATS,
            {
                "group": cell,
                "order_key": _cell_order_key(cell, self.seed),
                "size": len(result.path),
                "input": len(members),
                "duplicates": len(result.duplicates),
                "edges": result.edges,
                "adjacent_cosine_sum": result.adjacent_cosine_sum,
                "adjacent_pairs": result.adjacent_pairs,
            },
        )
        yield from self._neighbours(cell, ids, vectors, plan["queries"])

    def _finish(self, cell: str, item: tuple[Document, np.ndarray]) -> Document:
        doc, vector = item
        out = dict(doc)
        out["order_cell"] = cell
        if self.config.store_embeddings:
            out["embedding"] = [float(x) for x in vector]
        return out

    def _neighbours(self, cell: str, ids: list[str], vectors: ordering.GridVectors, queries: list) -> Iterator[Any]:
        """This cell's best candidates for every cross-cell query (merged across cells later)."""
        if not queries:
            return
        k = self.config.k
        sims = vectors.similarity(ordering.GridVectors.of(np.stack([q for _, q, _ in queries]), vectors.normalised))
        for row, (query_id, _, _) in enumerate(queries):
            scores = sims[row]
            top = np.lexsort((np.arange(len(scores)), -scores))[: k + 1]
            found = [(float(scores[j]), ids[j], cell) for j in top.tolist() if ids[j] != query_id][:k]
            yield pvalue.TaggedOutput(NEIGHBOURS, (query_id, found))


class ShortCellDoFn(beam.DoFn):
    """Docs under ``min_words``: one cell, ordered by seeded hash (no embedding to order them by)."""

    def __init__(self, seed: int):
        self.seed = seed

    def process(self, element: tuple[str, Iterable[Document]]) -> Iterator[Any]:
        cell, docs = element
        members = sorted(docs, key=lambda doc: (h64(doc["id"], "order:short", self.seed), identity_key(doc)))
        for position, doc in enumerate(members):
            yield pvalue.TaggedOutput(PLACED, (cell, position, dict(doc, order_cell=cell)))
        yield pvalue.TaggedOutput(
            STATS,
            {
                "group": cell,
                "order_key": _cell_order_key(cell, self.seed),
                "size": len(members),
                "input": len(members),
                "duplicates": 0,
                "edges": 0,
                "adjacent_cosine_sum": 0.0,
                "adjacent_pairs": 0,
            },
        )


class TopNeighboursFn(beam.CombineFn):
    """Merge per-cell candidate lists of one query into its global top ``k``."""

    def __init__(self, k: int):
        self.k = k

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, found: list) -> list:
        return self._top(acc + list(found))

    def merge_accumulators(self, accs: Iterable[list]) -> list:
        return self._top([x for acc in accs for x in acc])

    def extract_output(self, acc: list) -> list:
        return acc

    def _top(self, items: list) -> list:
        return sorted(items, key=lambda x: (-x[0], x[1]))[: self.k]


def _offsets(stats: list[dict[str, Any]]) -> dict[str, int]:
    """Prefix sums of group sizes in group order: the first rank of every group."""
    offsets, start = {}, 0
    for record in sorted(stats, key=lambda r: r["order_key"]):
        offsets[record["group"]] = start
        start += record["size"]
    return offsets


def _rank(placed: tuple[str, int, Document], offsets: dict[str, int]) -> Document:
    group, position, doc = placed
    return dict(doc, order_rank=offsets[group] + position)


def _sort_key(doc: Document, config: OrderConfig, seed: int) -> tuple[str, int, int, float, int, str]:
    """Total order for ``sort``/``none``: (phase, epoch, missing last, value, H64 tiebreak, id);
    repeats (epoch ≥ 1) follow the whole first pass, as a further epoch would."""
    phase = str(doc.get("phase") or "")
    epoch = _epoch(doc)
    tie = h64(doc["id"], "order:tiebreak", seed)
    if config.method == "none":
        return (phase, epoch, 0, uniform(f"{doc['id']}@{epoch}@{phase}", "order:shuffle", seed), tie, doc["id"])
    value = doc.get(config.order_by or "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number):
        return (phase, epoch, 1, 0.0, tie, doc["id"])
    return (phase, epoch, 0, -number if config.descending else number, tie, doc["id"])


def _boundaries(quantiles: list, total: int, cell_size: int, partition_below: int) -> list:
    if total < partition_below or not quantiles:
        return []
    ranges = max(1, math.ceil(total / cell_size))
    picks = sorted({round(i * (len(quantiles) - 1) / ranges) for i in range(1, ranges)})
    return [tuple(quantiles[p]) for p in picks]


class SortRangeDoFn(beam.DoFn):
    """One key range: sort by the total key; positions within the range."""

    def process(self, element: tuple[int, Iterable[tuple[tuple, Document]]]) -> Iterator[Any]:
        group, items = element
        members = sorted(items, key=lambda item: item[0])
        for position, (_, doc) in enumerate(members):
            yield pvalue.TaggedOutput(PLACED, (str(group), position, doc))
        yield pvalue.TaggedOutput(
            STATS, {"group": str(group), "order_key": (group, ""), "size": len(members), "input": len(members)}
        )


def _ordering_summary(
    stats: list[dict[str, Any]], plan: dict[str, Any], fraction: list[float], config: OrderConfig
) -> dict[str, Any]:
    sizes = sorted(r["size"] for r in stats if not r["group"].startswith(SHORT_CELL)) or [0]
    pairs = sum(r.get("adjacent_pairs", 0) for r in stats)
    # fsum: exact, so the figure does not depend on the order the cells' stats arrive in.
    adjacent = math.fsum(r.get("adjacent_cosine_sum", 0.0) for r in stats) / pairs if pairs else None
    random_baseline = plan.get("random_adjacent_cosine")
    return {
        "section": "ordering",
        "method": config.method,
        "ordered": config.method == "sort",
        "order_by": config.order_by,
        "descending": config.descending,
        "embedder": config.embedder if config.method == "icp" else None,
        "traversal": config.traversal if config.method == "icp" else None,
        "k": config.k,
        "partitioned": bool(plan.get("cells") is not None),
        "cells": len(sizes) if sizes != [0] else 0,
        "cell_size_min": sizes[0],
        "cell_size_median": float(statistics.median(sizes)),
        "cell_size_max": sizes[-1],
        "short_docs": sum(r["size"] for r in stats if r["group"].startswith(SHORT_CELL)),
        "edges": sum(r.get("edges", 0) for r in stats),
        "cross_cell_edge_fraction": fraction[0] if fraction else (0.0 if plan.get("cells") is None else None),
        "mean_adjacent_cosine": adjacent,
        "random_adjacent_cosine": random_baseline,
        "semantic_duplicates": sum(r.get("duplicates", 0) for r in stats),
        "semantic_dedup_threshold": config.semantic_dedup,
    }


class _MeanFn(beam.CombineFn):
    def create_accumulator(self) -> tuple[float, int]:
        return (0.0, 0)

    def add_input(self, acc: tuple[float, int], value: float) -> tuple[float, int]:
        return (acc[0] + value, acc[1] + 1)

    def merge_accumulators(self, accs: Iterable[tuple[float, int]]) -> tuple[float, int]:
        items = list(accs)
        return (math.fsum(a[0] for a in items), sum(a[1] for a in items))

    def extract_output(self, acc: tuple[float, int]) -> list[float]:
        return [acc[0] / acc[1]] if acc[1] else []


def _crossing(item: tuple[str, list], query_cells: dict[str, str]) -> float:
    query_id, found = item
    return ordering.cross_cell_fraction([query_cells[query_id]], [[cell for _, _, cell in found]])


class Order(beam.PTransform):
    """The ``order`` stage: global ``order_rank`` 0..N−1 (icp / sort / none)."""

    def __init__(self, config: OrderConfig, seed: int = 0, tokenizer: TokenizerConfig | None = None):
        super().__init__()
        self.config = config
        self.seed = seed
        self.tokenizer = tokenizer or TokenizerConfig()

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        if self.config.method == "icp":
            ranked, removed_parts, rejected_parts, summary = self._icp(docs)
        else:
            ranked, removed_parts, rejected_parts, summary = self._sorted(docs)
        return {
            KEPT: ranked,
            REMOVED: removed_parts | "MergeRemoved" >> beam.Flatten(),
            REJECTED: rejected_parts | "MergeRejected" >> beam.Flatten(),
            SUMMARY: summary,
        }

    def _icp(self, docs: beam.PCollection) -> tuple:
        config, seed = self.config, self.seed
        size = config.embed_batch_size
        embedded = (
            docs
            | "EmbedBatch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | "Embed"
            >> beam.ParDo(
                EmbedDoFn(config.embedder, config.min_words, config.topic_weight, config.topic_tagger)
            ).with_outputs(SHORT_CELL, REJECTED, main=KEPT)
        )
        vectors = embedded[KEPT]
        total = pvalue.AsSingleton(vectors | "CountEmbedded" >> beam.combiners.Count.Globally())
        sample = (
            vectors
            | "FirstPass" >> beam.Filter(lambda item: _epoch(item[0]) == 0)  # repeats are copies
            | "SampleKey" >> beam.Map(_sampled, seed)
            | "Sample" >> beam.combiners.Top.Smallest(config.sample_size, key=lambda s: (s[0], s[1]))
        )
        plan = pvalue.AsSingleton(sample | "Plan" >> beam.Map(plan_cells, total, config, seed))
        keyed = (
            vectors
            | "AssignBatch" >> beam.BatchElements(min_batch_size=1024, max_batch_size=1024)
            | "AssignCell" >> beam.ParDo(AssignCellDoFn(), plan)
        )
        sizes = pvalue.AsDict(keyed | "CellSizes" >> beam.combiners.Count.PerKey())
        capped = keyed | "CapCell" >> beam.Map(_cap_cell, sizes, config.max_cell_docs, seed)
        ordered = (
            capped
            | "GroupCell" >> beam.GroupByKey()
            | "OrderCell"
            >> beam.ParDo(OrderCellDoFn(config, seed), plan).with_outputs(
                PLACED, STATS, NEIGHBOURS, REMOVED, main="unused"
            )
        )
        short = (
            embedded[SHORT_CELL]
            | "ShortKey" >> beam.Map(lambda doc: (_with_epoch(SHORT_CELL, doc), doc))
            | "GroupShort" >> beam.GroupByKey()
            | "OrderShort" >> beam.ParDo(ShortCellDoFn(seed)).with_outputs(PLACED, STATS, main="unused")
        )
        placed = (ordered[PLACED], short[PLACED]) | "MergePlaced" >> beam.Flatten()
        stats = (ordered[STATS], short[STATS]) | "MergeStats" >> beam.Flatten()
        stats_list = stats | "StatsList" >> beam.combiners.ToList()
        offsets = pvalue.AsSingleton(stats_list | "Offsets" >> beam.Map(_offsets))
        ranked = placed | "Rank" >> beam.Map(_rank, offsets)
        query_cells = pvalue.AsSingleton(
            sample | "QueryCells" >> beam.Map(lambda s, p: {q: c for q, _, c in p["queries"]}, plan)
        )
        fraction = (
            ordered[NEIGHBOURS]
            | "MergeNeighbours" >> beam.CombinePerKey(TopNeighboursFn(config.k))
            | "Crossing" >> beam.Map(_crossing, query_cells)
            | "MeanCrossing" >> beam.CombineGlobally(_MeanFn())
        )
        summary = stats_list | "Summary" >> beam.Map(
            _ordering_summary,
            pvalue.AsSingleton(sample | "PlanForSummary" >> beam.Map(_light_plan, plan)),
            pvalue.AsSingleton(fraction),
            config,
        )
        return ranked, [ordered[REMOVED]], [embedded[REJECTED]], summary

    def _sorted(self, docs: beam.PCollection) -> tuple:
        config, seed = self.config, self.seed
        keyed = docs | "SortKey" >> beam.Map(lambda doc: (_sort_key(doc, config, seed), doc))
        total = pvalue.AsSingleton(docs | "Count" >> beam.combiners.Count.Globally())
        quantiles = keyed | "Keys" >> beam.Keys() | "Quantiles" >> ApproximateQuantiles.Globally(QUANTILES)
        bounds = pvalue.AsSingleton(
            quantiles | "Bounds" >> beam.Map(_boundaries, total, config.cell_size, config.partition_below)
        )
        ordered = (
            keyed
            | "Range" >> beam.Map(lambda item, b: (bisect.bisect_right(b, item[0]), item), bounds)
            | "GroupRange" >> beam.GroupByKey()
            | "SortRange" >> beam.ParDo(SortRangeDoFn()).with_outputs(PLACED, STATS, main="unused")
        )
        stats_list = ordered[STATS] | "StatsList" >> beam.combiners.ToList()
        offsets = pvalue.AsSingleton(stats_list | "Offsets" >> beam.Map(_offsets))
        ranked = ordered[PLACED] | "Rank" >> beam.Map(_rank, offsets)
        summary = stats_list | "Summary" >> beam.Map(
            lambda stats: _ordering_summary(stats, {}, [], config) | {"ranges": len(stats)}
        )
        pipeline = docs.pipeline
        none = pipeline | "NoRejected" >> beam.Create([])
        no_removed = pipeline | "NoRemoved" >> beam.Create([])
        return ranked, [no_removed], [none], summary


def _light_plan(_: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """The plan without vectors, for the summary."""
    return {
        "cells": True if plan["cells"] is not None else None,
        "random_adjacent_cosine": plan["random_adjacent_cosine"],
    }


SPEC = StageSpec(
    name=STAGE,
    heavy=True,
    config=OrderConfig,
    transform=Order,
    columns=(
        pa.field("order_rank", pa.int64()),
        # ICP cell the document was ordered in (k-means cell, "short" for docs under min_words).
        pa.field("order_cell", pa.string()),
        # Only with order.store_embeddings: the vector the kNN graph was built from.
        pa.field("embedding", pa.list_(pa.float32())),
    ),
    needs=("seed", "tokenizer"),
)
