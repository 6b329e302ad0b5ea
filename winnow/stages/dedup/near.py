"""Stage ``dedup`` (near duplicates): MinHash LSH, verification, components, keeper, index.

The layout follows docs/dedup.md#in-winnow; what is ours is that everything between the signatures and
the final per-document join moves as numpy batches keyed by a shard number. A Beam element
costs about 10 µs on the local runner, so 14 band records per document would cost more than
the signatures themselves; with batches a step costs a few elements per shard instead.

1. ``Sign``: batches of documents → shingle hashes → signatures → 14 band keys per document.
   Outputs band entries, signatures and keeper keys, each batched by shard, and every
   document keyed by id for the final join. Documents without a shingle skip the rest.
   With exact dedup in the same pass (``exact``; the stage's default), Sign sends compact exact
   records (text hash, rank, identity digest, signature, keeper key) by hash shard instead, and
   ``ExactShard`` emits a ``dedup:exact`` decision per copy and the keepers' LSH records: only
   exact keepers enter LSH, and Route removes the copies in the same join.
2. ``Buckets``: band entries grouped by shard; equal (band, hash) runs are buckets. Every
   member gets an edge to the bucket's smallest node: O(n), never all pairs. A bucket above
   ``max_bucket_size`` is cut into sub-buckets of that size whose minima link to the
   bucket's minimum, so no node receives more than that many edges.
3. ``Verify`` (default on): two joins bring both endpoints' signatures together; an edge
   stays if the estimated Jaccard reaches the threshold. Edges to the index are not
   verified (the index stores bands, not signatures).
4. ``HashedComponents``: ``max_rounds`` rounds of local contraction (``components.py``);
   label = the component's smallest node. Unconverged nodes: ``dedup:components_unconverged``.
5. ``Keeper``: per component, the smallest (rank, priority, xxh64(id), id) is kept; rank 0
   are index entries (already kept in an earlier run), so a match to the index always loses.
   A component above ``max_cluster_size`` is reported (manifest ``dedup`` section).
6. ``Route``: documents joined with their decision by id: kept (with ``cluster_id`` = own id
   and ``cluster_size`` for clusters; ``None`` and 1 for singletons) or, without text
   verification, removed with ``duplicate_of`` = the keeper's id.
7. ``VerifyAgainstKeeper`` (``verify_text``, default on): components are transitive, so a
   chain A~B~C can put C with A although they share little (marin#6854: whole sources wiped).
   A member is therefore removed only when the exact similarity of its shingle set with the
   keeper's reaches ``text_threshold``. The keeper's set (sorted distinct shingle hashes) is
   sent once to each member: ``(keeper, set)`` and ``(keeper, member)`` grouped by keeper, then
   ``(member, set)`` joined with the member's document by id. A member that fails stays, as a
   singleton (``dedup:minhash_unverified``). A removed document carries ``similarity`` (the
   measured value) and ``duplicate_of``; ``cluster_size`` counts the component's candidates.
   Members whose keeper is an index entry are removed on band evidence (no text to compare).

Memory: besides Beam's own grouping, a step holds one shard's share: about 14·N / shards band
entries (17 bytes each), N / shards signatures (8·num_perm bytes) or E / shards edges. Raise
``shards`` with the corpus. A hot bucket costs its members' entries, never pairs. Text
verification moves each cluster member's document once more and a copy of its keeper's shingle
set (8 bytes per distinct shingle) to it: memory per element is two documents' shingles, and
the shuffle grows with the number of candidates, not with the corpus.

Nodes are xxh64 of document ids (a collision merges two ids, about N²/2^65 for N ids).
Ids must be unique within a run. Metrics (namespace ``winnow``): ``dedup:minhash`` (removed),
``dedup:minhash_no_shingles``, ``dedup:minhash_hot_buckets``, ``dedup:minhash_candidates``,
``dedup:minhash_verified``, ``dedup:minhash_index_matches``, ``dedup:minhash_clusters``,
``dedup:components_unconverged``, ``dedup:minhash_text_verified`` (removals that passed the text
check), ``dedup:minhash_unverified`` (members kept), ``dedup:minhash_oversized_clusters``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystems import FileSystems

from winnow.beam.components import HashedComponents, split_by_shard
from winnow.beam.contract import KEPT, REJECTED, REMOVED, Document, counter, rejected, removed
from winnow.stages.dedup.config import ExactDedupConfig, MinHashConfig
from winnow.stages.dedup.exact import compact_rank, exact_keepers, identity_digest, text_hash
from winnow.stages.dedup.minhash import MinHasher, ShingleHasher, band_hashes, set_similarity, shingle_set

STAGE = "dedup"
REASON = "dedup:minhash"
_BANDS_FIELD = "_minhash_bands"
_DOCS, _BAND_TAG, _SIG_TAG, _MEMBER_TAG, _INDEX_TAG = "docs", "bands", "sigs", "members", "index"
_FANOUT, _KEEPER_SET, _PENDING, _OUTCOME, _OVERSIZED = "fanout", "keeper_set", "pending", "outcome", "oversized"
SECTION = "dedup"
OVERSIZED_LISTED = 100  # largest oversized clusters named in the manifest
_INDEX_META = "_meta.json"
# The final join is a plain GroupByKey over (id, (tag, value)) rather than CoGroupByKey: it saves
# three per-document Beam steps (tag, tag, merge), which is a tenth of the stage's CPU.
_DOC, _DECISION, _EXACT = 0, 1, 2
_EXACT_TAG = "exact"
_SET, _MEMBER, _KEEPER = 0, 1, 2

# Keeper keys: (rank, priority, xxh64(id), id); rank 0 = index entry, 1 = document of this run.
KeeperKey = tuple[int, float, int, str]


def node_of(doc_id: str) -> int:
    return xxhash.xxh64_intdigest(doc_id.encode("utf-8", "surrogatepass"))


def keeper_key(doc: Document, keep: str) -> KeeperKey:
    """Smaller is kept. ``lowest_id`` compares ids as strings; the others by priority first."""
    doc_id = doc["id"]
    if keep == "lowest_id":
        return (1, 0.0, 0, doc_id)
    if keep == "longest":
        priority = -float(len(doc["text"]))
    else:
        value = doc.get(keep.split(":", 1)[1])
        try:
            priority = -float(value)
        except (TypeError, ValueError):
            priority = math.inf
        if math.isnan(priority):
            priority = math.inf
    return (1, priority, node_of(doc_id), doc_id)


def _by_shard(keys: np.ndarray, shards: int, *columns: Any) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """Split parallel columns (numpy arrays or lists) into one tuple of columns per shard."""
    if len(keys) == 0:
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
    for part in np.split(order, cuts):
        shard = int(keys[part[0]])
        yield shard, tuple(c[part] if isinstance(c, np.ndarray) else [c[i] for i in part.tolist()] for c in columns)


def _band_shards(hashes: np.ndarray, band_index: np.ndarray, shards: int) -> np.ndarray:
    return ((hashes + band_index.astype(np.uint64)) % np.uint64(shards)).astype(np.int64)


def _node_shards(nodes: np.ndarray, shards: int) -> np.ndarray:
    return (nodes % np.uint64(shards)).astype(np.int64)


def _concat(parts: Iterable[tuple[Any, ...]], width: int) -> list[Any]:
    """Concatenate batches column-wise (numpy columns with numpy, lists with lists)."""
    parts = list(parts)
    columns: list[Any] = []
    for i in range(width):
        items = [p[i] for p in parts]
        if items and isinstance(items[0], np.ndarray):
            columns.append(np.concatenate(items))
        else:
            columns.append([x for item in items for x in item])
    return columns


def _lsh_records(
    config: MinHashConfig, nodes: np.ndarray, signatures: np.ndarray, keys: np.ndarray, member_keys: list[KeeperKey]
) -> Iterator[Any]:
    """Band entries, signatures (when verifying) and keeper keys of signed documents, batched by shard."""
    shards, bands = config.shards, keys.shape[1]
    band_index = np.tile(np.arange(bands, dtype=np.uint8), len(nodes))
    flat = keys.ravel()
    entry_nodes = np.repeat(nodes, bands)
    from_index = np.zeros(len(flat), dtype=bool)
    for shard, cols in _by_shard(
        _band_shards(flat, band_index, shards), shards, flat, band_index, entry_nodes, from_index
    ):
        yield beam.pvalue.TaggedOutput(_BAND_TAG, (shard, cols))
    node_shards = _node_shards(nodes, shards)
    if config.verify:
        for shard, cols in _by_shard(node_shards, shards, nodes, signatures):
            yield beam.pvalue.TaggedOutput(_SIG_TAG, (shard, cols))
    for shard, cols in _by_shard(node_shards, shards, nodes, member_keys):
        yield beam.pvalue.TaggedOutput(_MEMBER_TAG, (shard, cols))


class Sign(beam.DoFn):
    """A batch of documents → signatures, band entries and keeper keys, batched by shard.

    With ``exact`` (exact dedup in the same pass), every document is keyed for the final join and
    its compact exact record (text hash, rank, digest, signature, keeper key) goes to ``ExactShard``
    batched by hash shard instead: only exact keepers enter LSH, as when exact dedup ran first.
    """

    def __init__(self, config: MinHashConfig, write_index: bool, exact: ExactDedupConfig | None = None) -> None:
        self.config = config
        self.write_index = write_index
        self.exact = exact
        self.bands, self.rows = config.banding()

    def setup(self) -> None:
        c = self.config
        self.hasher = ShingleHasher(c.ngram, c.shingle, c.hash)
        self.minhasher = MinHasher(c.num_perm, c.seed, c.scheme)
        self.no_shingles = counter("dedup:minhash_no_shingles")

    def process(self, batch: list[Document]) -> Iterator[Any]:
        c = self.config
        docs: list[Document] = []
        for doc in batch:
            if not (isinstance(doc.get("text"), str) and isinstance(doc.get("id"), str)):
                yield rejected(doc, STAGE, "minhash: id and text must be strings")
                continue
            if self.exact is not None:
                try:
                    doc = {**doc, "text_hash": text_hash(doc["text"], self.exact.key)}
                except Exception as error:  # a document must never kill the job
                    yield rejected(doc, STAGE, error)
                    continue
            docs.append(doc)
        if not docs:
            return
        values, counts = self.hasher.hash_batch([doc["text"] for doc in docs])
        signed = counts > 0
        if c.min_words and c.shingle == "word":
            signed &= counts + (c.ngram - 1) >= c.min_words
        if self.exact is None:  # with exact dedup, ExactShard counts the unsigned keepers
            self.no_shingles.inc(int(np.count_nonzero(~signed)))
        if not signed.all():
            values = values[np.repeat(signed, counts)]
        signatures = self.minhasher.signatures_flat(values, counts[signed])
        if self.exact is not None:  # band keys come from ExactShard, for exact keepers only
            keys = band_hashes(signatures, self.bands, self.rows) if self.write_index else None
            yield from self._exact_records(docs, signed, signatures, keys)
            return
        keys = band_hashes(signatures, self.bands, self.rows)
        for doc in (d for d, s in zip(docs, signed.tolist(), strict=True) if not s):
            yield {**doc, "cluster_id": None, "cluster_size": 1}
        if not signed.any():
            return
        docs = [d for d, s in zip(docs, signed.tolist(), strict=True) if s]
        for doc, row in zip(docs, keys, strict=True):
            if self.write_index:
                doc = {**doc, _BANDS_FIELD: row.tobytes()}
            yield beam.pvalue.TaggedOutput(_DOCS, (doc["id"], (_DOC, doc)))
        nodes = np.fromiter((node_of(d["id"]) for d in docs), dtype=np.uint64, count=len(docs))
        yield from _lsh_records(c, nodes, signatures, keys, [keeper_key(d, c.keep) for d in docs])

    def _exact_records(
        self, docs: list[Document], signed: np.ndarray, signatures: np.ndarray, keys: np.ndarray | None
    ) -> Iterator[Any]:
        assert self.exact is not None
        c, keep = self.config, self.exact.keep
        rows = np.cumsum(signed) - 1  # a signed document's row in signatures / keys
        hashes, ranks, ids, digests, member_keys = [], [], [], [], []
        for doc, is_signed, row in zip(docs, signed.tolist(), rows.tolist(), strict=True):
            rank, digest = compact_rank(doc, keep)
            if keys is not None and is_signed:  # the index needs a kept document's band keys
                doc = {**doc, _BANDS_FIELD: keys[row].tobytes()}
            yield beam.pvalue.TaggedOutput(_DOCS, (doc["id"], (_DOC, doc)))
            hashes.append(doc["text_hash"])
            ranks.append(rank)
            ids.append(doc["id"])
            digests.append(digest)
            member_keys.append(keeper_key(doc, c.keep) if is_signed else None)
        full = np.zeros((len(docs), signatures.shape[1]), dtype=np.uint64)
        full[signed] = signatures
        shard_of = np.fromiter((int(h[:15], 16) for h in hashes), dtype=np.int64, count=len(hashes)) % c.shards
        for shard, cols in _by_shard(shard_of, c.shards, hashes, ranks, ids, digests, signed, full, member_keys):
            yield beam.pvalue.TaggedOutput(_EXACT_TAG, (shard, cols))


class ExactShard(beam.DoFn):
    """One hash shard of compact exact records → a ``dedup:exact`` decision for every copy that is
    not its hash's keeper, and the keepers' LSH records (as ``Sign`` emits without exact dedup)."""

    def __init__(self, config: MinHashConfig) -> None:
        self.config = config
        self.bands, self.rows = config.banding()

    def setup(self) -> None:
        self.no_shingles = counter("dedup:minhash_no_shingles")

    def process(self, element: tuple[int, Iterable[tuple[Any, ...]]]) -> Iterator[Any]:
        hashes, ranks, ids, digests, signed, signatures, member_keys = _concat(element[1], 7)
        keeper_of = exact_keepers(hashes, ranks)
        lsh: list[int] = []
        for i, keeper in enumerate(keeper_of):
            if keeper != i:  # counted as dedup:exact by Route, where it is removed
                yield ids[i], (_EXACT, (digests[i], ids[keeper]))
            elif signed[i]:
                lsh.append(i)
            else:
                self.no_shingles.inc()
        if not lsh:
            return
        chosen = np.asarray(lsh, dtype=np.int64)
        nodes = np.fromiter((node_of(ids[i]) for i in lsh), dtype=np.uint64, count=len(lsh))
        kept_signatures = signatures[chosen]
        keys = band_hashes(kept_signatures, self.bands, self.rows)
        yield from _lsh_records(self.config, nodes, kept_signatures, keys, [member_keys[i] for i in lsh])


class Buckets(beam.DoFn):
    """One shard of band entries → candidate edges (anchor, member), star-shaped per bucket."""

    def __init__(self, config: MinHashConfig) -> None:
        self.config = config

    def setup(self) -> None:
        self.hot = counter("dedup:minhash_hot_buckets")
        self.index_matches = counter("dedup:minhash_index_matches")

    def process(self, element: tuple[int, Iterable[tuple[Any, ...]]]) -> Iterator[Any]:
        hashes, band_index, nodes, from_index = _concat(element[1], 4)
        if len(hashes) < 2:
            return
        # Index entries first within a bucket, so a bucket that has one is anchored on it.
        order = np.lexsort((nodes, ~from_index, hashes, band_index))
        hashes, band_index, nodes, from_index = hashes[order], band_index[order], nodes[order], from_index[order]
        new_run = np.concatenate(([True], (hashes[1:] != hashes[:-1]) | (band_index[1:] != band_index[:-1])))
        run_id = np.cumsum(new_run) - 1
        run_start = np.flatnonzero(new_run)
        run_size = np.diff(np.append(run_start, len(hashes)))
        multi = run_size[run_id] > 1
        if not multi.any():
            return
        limit = self.config.max_bucket_size
        hot = int(np.count_nonzero(run_size > limit))
        if hot:
            self.hot.inc(hot)
        index = np.arange(len(hashes))
        start = run_start[run_id]
        position = index - start
        # A member links to its sub-bucket's first node, a sub-bucket's first node to the bucket's.
        anchor = np.where(position % limit == 0, start, start + (position // limit) * limit)
        member = multi & (anchor != index)
        src, dst = nodes[anchor[member]], nodes[member]
        src_index, dst_index = from_index[anchor[member]], from_index[member]
        useful = ~dst_index & (src != dst)  # index–index edges add nothing to this run
        src, dst, src_index = src[useful], dst[useful], src_index[useful]
        if src_index.any():
            self.index_matches.inc(int(np.count_nonzero(src_index)))
            yield beam.pvalue.TaggedOutput("trusted", (0, (src[src_index], dst[src_index])))
        src, dst = src[~src_index], dst[~src_index]
        if len(src):
            yield from _by_shard(_node_shards(src, self.config.shards), self.config.shards, src, dst)


class AttachAnchorSignature(beam.DoFn):
    """Join 1 (keyed by the anchor's shard): unique edges + the anchor's signature."""

    def __init__(self, shards: int) -> None:
        self.shards = shards

    def setup(self) -> None:
        self.candidates = counter("dedup:minhash_candidates")

    def process(self, element: tuple[int, dict[str, list[Any]]]) -> Iterator[Any]:
        grouped = element[1]
        if not grouped["edges"]:
            return
        src, dst = _concat(grouped["edges"], 2)
        pairs = np.unique(np.stack([src, dst], axis=1), axis=0)
        self.candidates.inc(len(pairs))
        nodes, sigs = _sorted_signatures(grouped["sigs"])
        rows = np.searchsorted(nodes, pairs[:, 0])
        found = (rows < len(nodes)) & (nodes[np.minimum(rows, len(nodes) - 1)] == pairs[:, 0])
        pairs, rows = pairs[found], rows[found]
        yield from _by_shard(_node_shards(pairs[:, 1], self.shards), self.shards, pairs[:, 0], pairs[:, 1], sigs[rows])


class VerifyEdges(beam.DoFn):
    """Join 2 (keyed by the member's shard): keep edges whose signatures agree enough."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        # Compare counts, not fractions, so a pair exactly at the threshold is not lost to rounding.
        self.min_equal = math.ceil(threshold * num_perm - 1e-9)

    def setup(self) -> None:
        self.verified = counter("dedup:minhash_verified")

    def process(self, element: tuple[int, dict[str, list[Any]]]) -> Iterator[Any]:
        grouped = element[1]
        if not grouped["half"]:
            return
        src, dst, src_sigs = _concat(grouped["half"], 3)
        nodes, sigs = _sorted_signatures(grouped["sigs"])
        rows = np.searchsorted(nodes, dst)
        found = (rows < len(nodes)) & (nodes[np.minimum(rows, len(nodes) - 1)] == dst)
        equal = np.count_nonzero(src_sigs[found] == sigs[rows[found]], axis=1)
        keep = equal >= self.min_equal
        self.verified.inc(int(np.count_nonzero(keep)))
        if keep.any():
            yield element[0], (src[found][keep], dst[found][keep])


def _sorted_signatures(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.empty(0, dtype=np.uint64), np.empty((0, 1), dtype=np.uint64)
    nodes, sigs = _concat(parts, 2)
    order = np.argsort(nodes, kind="stable")
    return nodes[order], sigs[order]


class LabelMembers(beam.DoFn):
    """Join labels with keeper keys by node shard → (label shard, (labels, keys)) batches."""

    def __init__(self, shards: int) -> None:
        self.shards = shards

    def process(self, element: tuple[int, dict[str, list[Any]]]) -> Iterator[Any]:
        grouped = element[1]
        if not grouped["labels"]:
            return
        nodes, labels = _concat(grouped["labels"], 2)
        label_of = dict(zip(nodes.tolist(), labels.tolist(), strict=True))
        out_labels: list[int] = []
        out_keys: list[KeeperKey] = []
        for part_nodes, part_keys in grouped["members"]:
            for node, key in zip(part_nodes.tolist(), part_keys, strict=True):
                label = label_of.get(node)
                if label is not None:
                    out_labels.append(label)
                    out_keys.append(key)
        if out_labels:
            labels_arr = np.asarray(out_labels, dtype=np.uint64)
            yield from _by_shard(_node_shards(labels_arr, self.shards), self.shards, labels_arr, out_keys)


class ChooseKeepers(beam.DoFn):
    """One label shard → (doc id, (_DECISION, (keeper id, cluster size, verify))) per document of this run.

    ``verify``: the member must pass the text check against the keeper (``verify_text`` and a keeper
    of this run). With text verification on, each member is also announced to its keeper (``_FANOUT``).
    """

    def __init__(self, verify_text: bool = False, max_cluster_size: int | None = None) -> None:
        self.verify_text = verify_text
        self.max_cluster_size = max_cluster_size

    def setup(self) -> None:
        self.clusters = counter("dedup:minhash_clusters")
        self.oversized = counter("dedup:minhash_oversized_clusters")

    def process(self, element: tuple[int, Iterable[tuple[Any, ...]]]) -> Iterator[Any]:
        labels, keys = _concat(element[1], 2)
        components: dict[int, list[KeeperKey]] = {}
        for label, key in zip(labels.tolist(), keys, strict=True):
            components.setdefault(label, []).append(key)
        for members in components.values():
            # An id both in the index and in this run carries two keys; the smaller one wins.
            keeper = min(members)[3]
            size = len({key[3] for key in members})
            if size < 2:
                continue
            self.clusters.inc()
            yield beam.pvalue.TaggedOutput(_OUTCOME, "clusters")
            run_ids = sorted({key[3] for key in members if key[0] == 1})
            if self.max_cluster_size is not None and size > self.max_cluster_size:
                self.oversized.inc()
                yield beam.pvalue.TaggedOutput(_OUTCOME, "oversized_clusters")
                yield beam.pvalue.TaggedOutput(_OVERSIZED, (size, keeper))
                if not self.verify_text:  # never collapsed blindly: every member stays
                    yield beam.pvalue.TaggedOutput(_OUTCOME, "oversized_kept_whole")
                    continue
            verify = self.verify_text and keeper in run_ids
            for doc_id in run_ids:
                yield doc_id, (_DECISION, (keeper, size, verify))
                if verify and doc_id != keeper:
                    yield beam.pvalue.TaggedOutput(_FANOUT, (keeper, (_MEMBER, doc_id)))


def _without_bands(doc: Document) -> tuple[Document, bytes | None]:
    """The document without the band keys ``Sign`` attached for the index, and those keys (or None)."""
    bands = doc.get(_BANDS_FIELD)
    if bands is None:
        return doc, None
    return {k: v for k, v in doc.items() if k != _BANDS_FIELD}, bands


class Route(beam.DoFn):
    """Per document: kept with its cluster fields, removed as a duplicate of its keeper, or (text
    verification) held for the check against its keeper, whose shingle set it then sends out."""

    def __init__(self, config: MinHashConfig | None = None) -> None:
        self.config = config or MinHashConfig()

    def setup(self) -> None:
        c = self.config
        self.duplicates = counter(REASON)
        self.exact_duplicates = counter("dedup:exact")
        self.hasher = ShingleHasher(c.ngram, c.shingle, c.hash)

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]]) -> Iterator[Any]:
        doc_id, tagged = element
        decision = None
        exact: list[tuple[bytes, str]] = []  # (identity digest, keeper id) of exact copies to remove
        for tag, value in tagged:
            if tag == _DECISION:
                decision = value
            elif tag == _EXACT:
                exact.append(value)
        for tag, doc in tagged:
            if tag != _DOC:
                continue
            if exact:
                digest = identity_digest(doc)
                match = next((entry for entry in exact if entry[0] == digest), None)
                if match is not None:
                    exact.remove(match)
                    self.exact_duplicates.inc()
                    yield removed(_without_bands(doc)[0], "dedup:exact", duplicate_of=match[1])
                    continue
            if decision is not None and decision[0] != doc_id and decision[2]:
                yield beam.pvalue.TaggedOutput(_PENDING, (doc_id, (_DOC, (doc, decision[1]))))
                continue
            doc, bands = _without_bands(doc)
            if decision is None or decision[0] == doc_id:
                cluster_id, size = (None, 1) if decision is None else (doc_id, decision[1])
                if bands is not None:
                    yield beam.pvalue.TaggedOutput(_INDEX_TAG, (doc_id, bands))
                if decision is not None and decision[2]:
                    keeper_set = shingle_set(self.hasher, doc["text"])
                    yield beam.pvalue.TaggedOutput(_KEEPER_SET, (doc_id, (_SET, keeper_set)))
                yield {**doc, "cluster_id": cluster_id, "cluster_size": size}
            else:
                self.duplicates.inc()
                yield beam.pvalue.TaggedOutput(_OUTCOME, "removed_without_text_check")
                out = removed(doc, REASON, duplicate_of=decision[0])
                out.value["cluster_id"] = decision[0]
                out.value["cluster_size"] = decision[1]
                yield out


def fan_out_keeper_sets(element: tuple[str, Iterable[tuple[int, Any]]]) -> Iterator[tuple[str, tuple[int, Any]]]:
    """(keeper, [set, members…]) → (member, (_KEEPER, (keeper, set))) for each member."""
    keeper, tagged = element
    keeper_set = next((value for tag, value in tagged if tag == _SET), None)
    # Without the keeper's text its members get nothing and are kept: never removed without evidence.
    if keeper_set is not None:
        for tag, value in tagged:
            if tag == _MEMBER:
                yield value, (_KEEPER, (keeper, keeper_set))


class VerifyAgainstKeeper(beam.DoFn):
    """A held member with its keeper's shingle set: removed if similar enough, else kept alone."""

    def __init__(self, config: MinHashConfig) -> None:
        self.config = config
        self.threshold = config.effective_text_threshold()
        self.measure = config.text_similarity

    def setup(self) -> None:
        c = self.config
        self.hasher = ShingleHasher(c.ngram, c.shingle, c.hash)
        self.duplicates = counter(REASON)
        self.verified = counter("dedup:minhash_text_verified")
        self.unverified = counter("dedup:minhash_unverified")

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]]) -> Iterator[Any]:
        doc_id, tagged = element
        keeper = next((value for tag, value in tagged if tag == _KEEPER), None)
        for tag, value in tagged:
            if tag != _DOC:
                continue
            doc, size = value
            doc, bands = _without_bands(doc)
            similarity = None
            passed = False
            if keeper is not None:
                shared, denominator = set_similarity(shingle_set(self.hasher, doc["text"]), keeper[1], self.measure)
                similarity = shared / denominator if denominator else 0.0
                # Integers: a pair exactly at the threshold is not lost to float rounding.
                passed = denominator > 0 and shared >= math.ceil(self.threshold * denominator - 1e-9)
            if passed:
                self.duplicates.inc()
                self.verified.inc()
                yield beam.pvalue.TaggedOutput(_OUTCOME, "removed_text_verified")
                out = removed(doc, REASON, duplicate_of=keeper[0])
                out.value["cluster_id"] = keeper[0]
                out.value["cluster_size"] = size
                out.value["similarity"] = similarity
                out.value["detail"] = json.dumps({"measure": self.measure, "threshold": self.threshold})
                yield out
                continue
            self.unverified.inc()
            yield beam.pvalue.TaggedOutput(_OUTCOME, "kept_below_text_threshold")
            if bands is not None:
                yield beam.pvalue.TaggedOutput(_INDEX_TAG, (doc_id, bands))
            yield {**doc, "cluster_id": None, "cluster_size": 1}


class OutcomeTally(beam.CombineFn):
    """Counts of the cluster outcomes, as one manifest record."""

    def __init__(self, config: MinHashConfig) -> None:
        self.config = config

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], outcome: str) -> dict[str, int]:
        acc[outcome] = acc.get(outcome, 0) + 1
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, int]]) -> dict[str, int]:
        merged: dict[str, int] = {}
        for acc in accs:
            for key, value in acc.items():
                merged[key] = merged.get(key, 0) + value
        return merged

    def extract_output(self, acc: dict[str, int]) -> dict[str, Any]:
        c = self.config
        keys = (
            "clusters",
            "removed_text_verified",
            "kept_below_text_threshold",
            "removed_without_text_check",
            "oversized_clusters",
            "oversized_kept_whole",
        )
        return {
            "section": SECTION,
            "kind": "minhash",
            "verify_text": c.verify_text,
            "text_similarity": c.text_similarity,
            "text_threshold": c.effective_text_threshold(),
            "max_cluster_size": c.max_cluster_size,
            **{key: acc.get(key, 0) for key in keys},
        }


def _oversized_records(largest: list[tuple[int, str]]) -> Iterator[dict[str, Any]]:
    for size, keeper in sorted(largest, key=lambda item: (-item[0], item[1])):
        yield {"section": SECTION, "kind": "oversized_cluster", "keeper": keeper, "size": size}


# --- incremental index ---------------------------------------------------------------------


def index_meta(config: MinHashConfig) -> dict[str, Any]:
    """Settings that must match for band keys of two runs to be comparable."""
    bands, rows = config.banding()
    return {
        "format": 1,
        "ngram": config.ngram,
        "shingle": config.shingle,
        "hash": config.hash,
        "scheme": config.scheme,
        "num_perm": config.num_perm,
        "seed": config.seed,
        "bands": bands,
        "rows": rows,
    }


def _join(*parts: str) -> str:
    return FileSystems.join(*parts) if "://" in parts[0] else "/".join(p.rstrip("/") for p in parts)


def prepare_index(config: MinHashConfig) -> list[str]:
    """Check (or write) the index settings and list its part files; runs when the graph is built."""
    assert config.index_dir is not None
    meta_path = _join(config.index_dir, _INDEX_META)
    expected = index_meta(config)
    if FileSystems.exists(meta_path):
        with FileSystems.open(meta_path) as handle:
            found = json.loads(handle.read().decode("utf-8"))
        if found != expected:
            raise ValueError(f"dedup index {config.index_dir} was built with {found}, this run uses {expected}")
    else:
        _atomic_write(meta_path, json.dumps(expected, sort_keys=True).encode("utf-8"))
    pattern = _join(config.index_dir, "band=*", "part-*.parquet")
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matches)


def _atomic_write(path: str, payload: bytes) -> None:
    temp = f"{path}.tmp-{xxhash.xxh64_hexdigest(payload)}"
    directory = path.rsplit("/", 1)[0]
    if "://" not in path and not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    with FileSystems.create(temp) as handle:
        handle.write(payload)
    FileSystems.rename([temp], [path])


class ReadIndexPart(beam.DoFn):
    """One index part file → band entries (batched by band shard) and, from band 0 (which has
    every indexed document once), the index documents' keeper keys."""

    def __init__(self, shards: int) -> None:
        self.shards = shards

    def process(self, path: str) -> Iterator[Any]:

        band = int(path.rsplit("band=", 1)[1].split("/", 1)[0])
        with FileSystems.open(path) as handle:
            table = pq.read_table(pa.BufferReader(handle.read()))
        hashes = table.column("band_hash").to_numpy().astype(np.uint64)
        ids = table.column("doc_id").to_pylist()
        nodes = np.fromiter((node_of(i) for i in ids), dtype=np.uint64, count=len(ids))
        band_index = np.full(len(ids), band, dtype=np.uint8)
        from_index = np.ones(len(ids), dtype=bool)
        for shard, cols in _by_shard(
            _band_shards(hashes, band_index, self.shards), self.shards, hashes, band_index, nodes, from_index
        ):
            yield beam.pvalue.TaggedOutput(_BAND_TAG, (shard, cols))
        if band != 0:
            return
        keys = [(0, 0.0, int(n), i) for n, i in zip(nodes.tolist(), ids, strict=True)]
        for shard, cols in _by_shard(_node_shards(nodes, self.shards), self.shards, nodes, keys):
            yield beam.pvalue.TaggedOutput(_MEMBER_TAG, (shard, cols))


class WriteIndexPart(beam.DoFn):
    """One (band, shard) group of kept documents' band keys → ``band=<i>/part-<digest>.parquet``.

    The name is a hash of the rows, so a re-run writes the same file instead of a second copy,
    and the file appears under its final name only once complete (temp + rename).
    """

    def __init__(self, index_dir: str) -> None:
        self.index_dir = index_dir

    def process(self, element: tuple[tuple[int, int], Iterable[tuple[np.ndarray, list[str]]]]) -> Iterator[str]:

        (band, _), parts = element
        hashes, ids = _concat(parts, 2)
        order = np.lexsort((np.asarray(ids, dtype=object).astype(str), hashes))
        hashes = hashes[order]
        ids = [ids[i] for i in order.tolist()]
        table = pa.table({"band_hash": pa.array(hashes, type=pa.uint64()), "doc_id": pa.array(ids, type=pa.string())})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        payload = sink.getvalue().to_pybytes()
        path = _join(self.index_dir, f"band={band}", f"part-{xxhash.xxh64_hexdigest(payload)}.parquet")
        if not FileSystems.exists(path):
            _atomic_write(path, payload)
        yield path


def _index_rows(batch: list[tuple[str, bytes]], bands: int, shards: int) -> Iterator[Any]:
    ids = [doc_id for doc_id, _ in batch]
    keys = np.frombuffer(b"".join(raw for _, raw in batch), dtype=np.uint64).reshape(len(batch), bands)
    id_shard = np.fromiter((node_of(i) % shards for i in ids), dtype=np.int64, count=len(ids))
    for band in range(bands):
        for shard, (hashes, part_ids) in _by_shard(id_shard, shards, keys[:, band].copy(), ids):
            yield (band, shard), (hashes, part_ids)


# --- the stage ------------------------------------------------------------------------------


class MinHashDedup(beam.PTransform):
    """MinHash near-duplicate removal as one stage: {"kept", "removed", "rejected"}."""

    def __init__(self, config: MinHashConfig | None = None, exact: ExactDedupConfig | None = None) -> None:
        super().__init__()
        self.config = config or MinHashConfig()
        self.exact = exact if exact is not None and exact.enabled else None

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        c = self.config
        pipeline = docs.pipeline
        if not c.enabled:
            return {
                KEPT: docs,
                REMOVED: pipeline | "NoRemoved" >> beam.Create([]),
                REJECTED: pipeline | "NoRejected" >> beam.Create([]),
            }
        bands, _ = c.banding()
        index_parts = prepare_index(c) if c.index_dir else []
        signed = (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=c.batch_size, max_batch_size=c.batch_size)
            | "Sign"
            >> beam.ParDo(Sign(c, write_index=c.index_dir is not None, exact=self.exact)).with_outputs(
                _DOCS, _BAND_TAG, _SIG_TAG, _MEMBER_TAG, _EXACT_TAG, REJECTED, main=KEPT
            )
        )
        band_entries, members, signatures = [signed[_BAND_TAG]], [signed[_MEMBER_TAG]], signed[_SIG_TAG]
        exact_decisions = []
        if self.exact is not None:
            exact = (
                signed[_EXACT_TAG]
                | "GroupExact" >> beam.GroupByKey()
                | "ExactShard"
                >> beam.ParDo(ExactShard(c)).with_outputs(_BAND_TAG, _SIG_TAG, _MEMBER_TAG, main="decisions")
            )
            band_entries.append(exact[_BAND_TAG])
            members.append(exact[_MEMBER_TAG])
            signatures = (signatures, exact[_SIG_TAG]) | "AllSignatures" >> beam.Flatten()
            exact_decisions.append(exact["decisions"])
        if index_parts:
            index = (
                pipeline
                | "IndexParts" >> beam.Create(index_parts)
                | "ReadIndex" >> beam.ParDo(ReadIndexPart(c.shards)).with_outputs(_BAND_TAG, _MEMBER_TAG)
            )
            band_entries.append(index[_BAND_TAG])
            members.append(index[_MEMBER_TAG])
        buckets = (
            band_entries
            | "AllBands" >> beam.Flatten()
            | "GroupBands" >> beam.GroupByKey()
            | "Buckets" >> beam.ParDo(Buckets(c)).with_outputs("trusted", main="edges")
        )
        if c.verify:
            half = (
                {"edges": buckets["edges"], "sigs": signatures}
                | "JoinAnchorSig" >> beam.CoGroupByKey()
                | "AttachAnchorSig" >> beam.ParDo(AttachAnchorSignature(c.shards))
            )
            edges = (
                {"half": half, "sigs": signatures}
                | "JoinMemberSig" >> beam.CoGroupByKey()
                | "Verify" >> beam.ParDo(VerifyEdges(c.effective_verify_threshold(), c.num_perm))
            )
        else:
            edges = buckets["edges"] | "CountCandidates" >> beam.Map(_count_candidates)
        labels = (
            (edges, buckets["trusted"])
            | "AllEdges" >> beam.Flatten()
            | "Components" >> HashedComponents(c.max_rounds, c.shards, metric="dedup:components_unconverged")
            | "KeyLabels" >> beam.FlatMap(lambda b, s=c.shards: _by_shard(_node_shards(b[0], s), s, b[0], b[1]))
        )
        decisions = (
            {"labels": labels, "members": members | "AllMembers" >> beam.Flatten()}
            | "JoinMembers" >> beam.CoGroupByKey()
            | "LabelMembers" >> beam.ParDo(LabelMembers(c.shards))
            | "GroupComponents" >> beam.GroupByKey()
            | "ChooseKeepers"
            >> beam.ParDo(ChooseKeepers(c.verify_text, c.max_cluster_size)).with_outputs(
                _FANOUT, _OUTCOME, _OVERSIZED, main="decisions"
            )
        )
        routed = (
            (signed[_DOCS], decisions["decisions"], *exact_decisions)
            | "DocsAndDecisions" >> beam.Flatten()
            | "JoinDecisions" >> beam.GroupByKey()
            | "Route"
            >> beam.ParDo(Route(c)).with_outputs(REMOVED, _INDEX_TAG, _KEEPER_SET, _PENDING, _OUTCOME, main=KEPT)
        )
        kept_parts, removed_parts = [signed[KEPT], routed[KEPT]], [routed[REMOVED]]
        index_rows, outcomes = [routed[_INDEX_TAG]], [decisions[_OUTCOME], routed[_OUTCOME]]
        if c.verify_text:
            keeper_sets = (
                (routed[_KEEPER_SET], decisions[_FANOUT])
                | "SetsAndMembers" >> beam.Flatten()
                | "GroupByKeeper" >> beam.GroupByKey()
                | "FanOutSets" >> beam.FlatMap(fan_out_keeper_sets)
            )
            verified = (
                (routed[_PENDING], keeper_sets)
                | "MembersAndSets" >> beam.Flatten()
                | "GroupByMember" >> beam.GroupByKey()
                | "VerifyText"
                >> beam.ParDo(VerifyAgainstKeeper(c)).with_outputs(REMOVED, _INDEX_TAG, _OUTCOME, main=KEPT)
            )
            kept_parts.append(verified[KEPT])
            removed_parts.append(verified[REMOVED])
            index_rows.append(verified[_INDEX_TAG])
            outcomes.append(verified[_OUTCOME])
        summary = [
            outcomes | "AllOutcomes" >> beam.Flatten() | "TallyOutcomes" >> beam.CombineGlobally(OutcomeTally(c)),
            decisions[_OVERSIZED]
            | "LargestClusters" >> beam.combiners.Top.Largest(OVERSIZED_LISTED)
            | "OversizedRecords" >> beam.FlatMap(_oversized_records),
        ]
        if c.index_dir:
            _ = (
                (index_rows | "AllIndexRows" >> beam.Flatten() if len(index_rows) > 1 else index_rows[0])
                | "BatchIndexRows" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
                | "IndexRows" >> beam.FlatMap(_index_rows, bands, c.shards)
                | "GroupIndexRows" >> beam.GroupByKey()
                | "WriteIndex" >> beam.ParDo(WriteIndexPart(c.index_dir))
            )
        kept = kept_parts | "AllKept" >> beam.Flatten()
        removed_all = removed_parts[0] if len(removed_parts) == 1 else removed_parts | "AllRemoved" >> beam.Flatten()
        return {
            KEPT: kept,
            REMOVED: removed_all,
            REJECTED: signed[REJECTED],
            "summary": summary | "Summary" >> beam.Flatten(),
        }


def _count_candidates(element: tuple[int, tuple[np.ndarray, np.ndarray]]) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
    counter("dedup:minhash_candidates").inc(len(element[1][0]))
    return element


__all__ = ["MinHashDedup", "keeper_key", "node_of", "split_by_shard"]
