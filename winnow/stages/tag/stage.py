"""Stage ``tag``: WebOrganizer topic and format, DataMan domain, per-domain statistics (docs/domains.md).

Taggers (core in ``winnow.core.taggers``, shared with the ``order`` stage) load once per worker
in ``setup`` and see documents in fixed-size batches. Every kept document gets ``topic``/``topic_id``/``topic_score``,
``format``/``format_id``/``format_score`` (argmax of the probabilities, in the taxonomy's id
order) and ``domain``, the DataMan letter A–O: the DataMan scorer's ``application_domain`` when
``score`` ran it, else the docs/domains.md#dataman-domains topic mapping. Which one was used is counted in the summary
(``domain_source``) because the mapping is ours, not a model's prediction. A batch a tagger fails
on is retried document by document; a document that still fails is rejected, never lost.

Besides the three stage outputs, ``summary`` holds the docs/domains.md#per-domain-statistics statistics (section
``domains``):
per taxonomy (topic, format, topic×format, domain) and value, documents, characters, tokens and,
per float score column, count/mean/std/quantiles from a fixed-bin histogram (bin ranges come
from a first global min/max pass), plus WebOrganizer's prior list and the corpus totals. Every
part is a Beam combiner, so no worker holds more than one accumulator per domain value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from winnow.beam.combiners import MinMaxFn
from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, StageSpec, counter, rejected
from winnow.core.config import TokenizerConfig
from winnow.core.domains import TAXONOMIES, dataman_domain_of_topic, dataman_letter
from winnow.core.taggers import load_tagger, tag_probabilities, tags_from_probabilities
from winnow.core.tokenizer import load_tokenizer, token_counts
from winnow.stages.tag.config import TagConfig, TaggerEntry
from winnow.stages.tag.statistics import DomainStats, prior

STAGE = "tag"
SUMMARY = "summary"
SECTION = "domains"
MEASURE = "measure"
TOTAL = "total"
# Float columns that are not scores worth a per-domain distribution.
NOT_SCORES = frozenset({"select_key", "topic_score", "format_score"})


def _float32(value: float) -> float:
    return float(np.float32(value))


def score_values(doc: Document, columns: Sequence[str] | None) -> dict[str, float]:
    """The document's finite float score columns (``columns``, or every float field when None)."""
    names = columns if columns is not None else [k for k, v in doc.items() if type(v) is float and k not in NOT_SCORES]
    out = {}
    for name in names:
        value = doc.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


class TagDoFn(beam.DoFn):
    """Tags batches of documents; also emits one small ``measure`` record per document for the statistics."""

    def __init__(self, config: TagConfig, tokenizer: TokenizerConfig):
        self.config = config
        self.tokenizer_config = tokenizer
        self._tagged = counter("tag:tagged")
        self._rejected = counter("tag:rejected")
        self._retried = counter("tag:batches_retried")
        self._from_dataman = counter("tag:domain_from_dataman")
        self._from_topic = counter("tag:domain_from_topic")

    def setup(self) -> None:

        self.taggers = {}
        for taxonomy in TAXONOMIES:
            entry: TaggerEntry | None = getattr(self.config, taxonomy)
            if entry is not None:
                self.taggers[taxonomy] = load_tagger(
                    taxonomy,
                    entry.mode,
                    entry.path,
                    use_url=entry.use_url,
                    max_length=entry.max_length,
                    batch_size=entry.batch_size,
                    device=entry.device,
                    trust_remote_code=entry.trust_remote_code,
                )
        self.tokenizer = None
        if self.config.statistics:
            self.tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)

    def process(self, batch: Sequence[Document]) -> Iterator[Any]:
        try:
            columns = self._tag(batch)
        except Exception:  # retry alone to find the document(s) at fault
            self._retried.inc()
            for doc in batch:
                try:
                    columns = self._tag([doc])
                except Exception as error:
                    self._rejected.inc()
                    yield rejected(doc, STAGE, error)
                    continue
                yield from self._emit([doc], columns)
            return
        yield from self._emit(batch, columns)

    def _tag(self, batch: Sequence[Document]) -> list[dict[str, Any]]:
        texts = [doc.get("text") or "" for doc in batch]
        urls = [doc.get("url") for doc in batch]
        columns: list[dict[str, Any]] = [{} for _ in batch]
        # Both taggers read one set of feature pieces (counts, embedding sums), computed once per batch.
        for taxonomy, probabilities in tag_probabilities(self.taggers, texts, urls).items():
            if probabilities.shape != (len(batch), len(TAXONOMIES[taxonomy])):
                raise ValueError(f"{taxonomy} tagger returned shape {probabilities.shape}")
            if not np.all(np.isfinite(probabilities)):
                raise ValueError(f"{taxonomy} tagger returned non-finite probabilities")
            tags = tags_from_probabilities(probabilities, TAXONOMIES[taxonomy])
            for i, row in enumerate(columns):
                row[taxonomy] = tags.names[i]
                row[f"{taxonomy}_id"] = int(tags.ids[i])
                row[f"{taxonomy}_score"] = _float32(tags.scores[i])
                if self.config.write_probabilities:
                    row[f"{taxonomy}_probs"] = [_float32(p) for p in tags.probabilities[i]]
        return columns

    def _emit(self, batch: Sequence[Document], columns: list[dict[str, Any]]) -> Iterator[Any]:
        tokens = None
        if self.tokenizer is not None:
            tokens = token_counts(batch, self.tokenizer)
        for i, (doc, row) in enumerate(zip(batch, columns, strict=True)):
            domain, source = self._domain(doc, row.get("topic"))
            row["domain"] = domain
            self._tagged.inc()
            tagged = {**doc, **row}
            yield tagged
            if tokens is not None:
                yield pvalue.TaggedOutput(
                    MEASURE,
                    {
                        "topic": row.get("topic"),
                        "format": row.get("format"),
                        "domain": domain,
                        "domain_source": source,
                        "characters": len(doc.get("text") or ""),
                        "tokens": int(tokens[i]),
                        "scores": score_values(tagged, self.config.score_columns),
                    },
                )

    def _domain(self, doc: Document, topic: str | None) -> tuple[str | None, str | None]:
        mode = self.config.domain_from
        if mode in ("auto", "dataman"):
            letter = dataman_letter(doc.get("application_domain"))
            if letter is not None:
                self._from_dataman.inc()
                return letter, "dataman"
        if mode in ("auto", "topic") and topic is not None:
            self._from_topic.inc()
            return dataman_domain_of_topic(topic), "topic"
        return None, None


# --- statistics ------------------------------------------------------------------------------


class DomainStatsFn(beam.CombineFn):
    """Merges per-document measures into one ``DomainStats`` per (taxonomy, value)."""

    def __init__(self, bins: int):
        self.bins = bins

    def create_accumulator(self) -> DomainStats:
        return DomainStats()

    def add_input(self, acc: DomainStats, item: tuple[dict, dict]) -> DomainStats:
        measure, ranges = item
        return acc.add(
            measure["characters"], measure["tokens"], measure["scores"], ranges, self.bins, measure["domain_source"]
        )

    def merge_accumulators(self, accs: Iterable[DomainStats]) -> DomainStats:
        merged = DomainStats()
        for acc in accs:
            merged = merged.merge(acc)
        return merged

    def extract_output(self, acc: DomainStats) -> DomainStats:
        return acc


def _keyed(measure: dict, ranges: dict[str, tuple[float, float]]) -> Iterator[tuple[tuple[str, str], tuple]]:
    """One (taxonomy, value) key per taxonomy the document has, plus the corpus total."""
    item = (measure, dict(ranges))
    yield (TOTAL, ""), item
    for taxonomy in ("topic", "format", "domain"):
        if measure.get(taxonomy) is not None:
            yield (taxonomy, measure[taxonomy]), item
    if measure.get("topic") is not None and measure.get("format") is not None:
        yield ("topic_format", f"{measure['topic']}|{measure['format']}"), item


def _record(item: tuple[tuple[str, str], DomainStats]) -> dict[str, Any]:
    (taxonomy, value), stats = item
    record: dict[str, Any] = {
        "section": SECTION,
        "kind": "totals" if taxonomy == TOTAL else "stats",
        "documents": stats.documents,
        "characters": stats.characters,
        "tokens": stats.tokens,
        "scores": {name: summary.report() for name, summary in sorted((stats.scores or {}).items())},
    }
    if taxonomy == TOTAL:
        record["domain_source"] = dict(sorted((stats.sources or {}).items()))
    else:
        record["taxonomy"] = taxonomy
        record["value"] = value
    return record


def _prior_record(item: tuple[str, Iterable[tuple[str, int, int]]]) -> dict[str, Any]:
    taxonomy, values = item
    return {"section": SECTION, "kind": "prior", "taxonomy": taxonomy, "prior": prior(sorted(values))}


class DomainStatistics(beam.PTransform):
    """docs/domains.md#per-domain-statistics: per-domain documents/characters/tokens/score summaries, the prior and the
    totals."""

    def __init__(self, bins: int, describe: dict[str, Any]):
        super().__init__()
        self.bins = bins
        self.describe = describe

    def expand(self, measures: beam.PCollection) -> beam.PCollection:
        ranges = (
            measures
            | "ScoreValues" >> beam.FlatMap(lambda m: sorted(m["scores"].items()))
            | "ScoreRange" >> beam.CombinePerKey(MinMaxFn())
        )
        stats = (
            measures
            | "Key" >> beam.FlatMap(_keyed, ranges=beam.pvalue.AsDict(ranges))
            | "Combine" >> beam.CombinePerKey(DomainStatsFn(self.bins))
        )
        records = stats | "Records" >> beam.Map(_record)
        priors = (
            stats
            | "PriorItems"
            >> beam.FlatMap(
                lambda kv: [(kv[0][0], (kv[0][1], kv[1].documents, kv[1].tokens))] if kv[0][0] != TOTAL else []
            )
            | "GroupPrior" >> beam.GroupByKey()
            | "Prior" >> beam.Map(_prior_record)
        )
        config = measures.pipeline | "Taggers" >> beam.Create(
            [{"section": SECTION, "kind": "taggers", **self.describe}]
        )
        return (records, priors, config) | "Summary" >> beam.Flatten()


class Tag(beam.PTransform):
    """Stage ``tag``: topic, format and domain columns on every document, plus the ``domains`` summary."""

    def __init__(self, config: TagConfig, tokenizer: TokenizerConfig | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else TokenizerConfig()

    def describe(self) -> dict[str, Any]:
        """What produced the tags, for the manifest (mode and path per taxonomy, domain rule)."""
        taggers = {
            taxonomy: None if entry is None else {"mode": entry.mode, "path": entry.path}
            for taxonomy in TAXONOMIES
            for entry in [getattr(self.config, taxonomy)]
        }
        return {"taggers": taggers, "domain_from": self.config.domain_from}

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        sizes = [e.batch_size for e in (self.config.topic, self.config.format) if e is not None] or [256]
        size = min(sizes)
        outputs = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | "Tag" >> beam.ParDo(TagDoFn(self.config, self.tokenizer)).with_outputs(MEASURE, REJECTED, main=KEPT)
        )
        result = {
            KEPT: outputs[KEPT],
            REMOVED: docs.pipeline | "NoRemoved" >> beam.Create([]),
            REJECTED: outputs[REJECTED],
        }
        if self.config.statistics:
            result[SUMMARY] = outputs[MEASURE] | "DomainStatistics" >> DomainStatistics(
                self.config.histogram_bins, self.describe()
            )
        return result


SPEC = StageSpec(
    name=STAGE,
    heavy=True,
    config=TagConfig,
    transform=Tag,
    # WebOrganizer topic/format (argmax name, id in the taxonomy's order, its probability) and the
    # DataMan domain letter A–O; *_probs only with tag.write_probabilities (else null).
    columns=(
        pa.field("topic", pa.string()),
        pa.field("topic_id", pa.int32()),
        pa.field("topic_score", pa.float32()),
        pa.field("format", pa.string()),
        pa.field("format_id", pa.int32()),
        pa.field("format_score", pa.float32()),
        pa.field("domain", pa.string()),
        pa.field("topic_probs", pa.list_(pa.float32())),
        pa.field("format_probs", pa.list_(pa.float32())),
    ),
    needs=("tokenizer",),
)
