"""Copyright Traps: generate trap sequences, plan and inject copies, and write the ledger (Beam-free).

The method (docs/copyright-traps.md): plant unique synthetic sequences in documents, many times
over, and later test whether a model finds them unusually likely compared with never-planted
controls drawn the same way. The pieces, in run order:

1. ``generate_traps``: sample sequences from BOS with a local causal LM over a temperature sweep
   and accept them as the reference does: integer perplexity in range, an equal quota per integer
   value, token-set Jaccard ≤ 0.2 to every accepted trap, ids that survive decode → encode. Or
   ``read_trap_file`` for user traps.
2. ``assign_roles``: half of every (length, perplexity bucket) stratum becomes never-injected
   controls, chosen by hash.
3. ``TrapDocuments`` (a mergeable accumulator: the eligible documents with the smallest
   ``H64(doc_id, "trap-doc", seed)``) and ``plan_injection``: one member trap per document and one
   document per trap, repetition counts cycled so each count gets the same number of traps. The
   plan is small (one entry per trap) and goes to workers as a side input.
4. ``inject(doc_id, text, plan)``: a pure per-document call; copies go at hash-chosen sentence
   starts (or word starts), each followed by a space, so a copy is never glued to the next word.
5. ``ledger_table``: one row per trap with its role, the document and the character offsets of
   every copy in the final text; removing those spans restores the original text byte for byte.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import cycle
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.core.causal_lm import LogitsModel
from winnow.core.hashing import h64
from winnow.stages.inject.config import InjectConfig, TrapSourceConfig

Role = Literal["member", "control"]
Verdict = Literal["accepted", "special", "blank", "retokenize", "out_of_range", "bucket_full", "duplicate"]
INJECTED_COLUMN = "injected_traps"
INJECTED_TYPE = pa.list_(
    pa.struct([("trap_id", pa.string()), ("char_offsets", pa.list_(pa.int64())), ("span_chars", pa.int32())])
)


# --- traps and their generation ---------------------------------------------------------------


@dataclass(frozen=True)
class Trap:
    trap_id: str
    text: str
    token_ids: tuple[int, ...]
    seq_len: int
    ppl: float | None
    ppl_bucket: int | None
    temperature: float | None
    generator: str
    tokenizer: str


def trap_id_of(text: str) -> str:
    """A trap's id: a hash of its text, so the same trap has the same id in every run."""
    return f"trap-{h64(text, 'trap-id', 0):016x}"


def ppl_bucket_of(ppl: float, ppl_range: tuple[int, int], n_buckets: int) -> int | None:
    """The bucket of ``int(ppl)`` (equal-width buckets over the integer range), None outside it.

    With the reference's range [1, 100] and 10 buckets this is its ``low // 10``: 1–10 → 0, …, 91–100 → 9.
    """
    low, high = ppl_range
    value = int(ppl) if math.isfinite(ppl) else high + 1
    if not low <= value <= high:
        return None
    return (value - low) // ((high - low + 1) // n_buckets)


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """Jaccard similarity of two token-id sets."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


class TrapAcceptor:
    """The reference's acceptance rules for one trap length, in its order: perplexity in range, the
    integer value's quota not yet full, token-set Jaccard ≤ ``jaccard_max`` to every accepted trap.

    Overlap is counted through an inverted index (token id → accepted traps), so a candidate costs
    the traps it shares tokens with, not all accepted traps.
    """

    def __init__(self, n_traps: int, ppl_range: tuple[int, int] = (1, 100), jaccard_max: float = 0.2):
        low, high = ppl_range
        values = high - low + 1
        if n_traps % values:
            raise ValueError(f"{n_traps} traps cannot be split equally over {values} integer perplexities")
        self.ppl_range = ppl_range
        self.quota = n_traps // values
        self.jaccard_max = jaccard_max
        self.accepted: list[tuple[tuple[int, ...], float]] = []
        self.per_value: Counter[int] = Counter()
        self._sets: list[frozenset[int]] = []
        self._index: dict[int, list[int]] = {}

    @property
    def full(self) -> bool:
        low, high = self.ppl_range
        return all(self.per_value[v] >= self.quota for v in range(low, high + 1))

    def open_values(self) -> list[int]:
        low, high = self.ppl_range
        return [v for v in range(low, high + 1) if self.per_value[v] < self.quota]

    def is_duplicate(self, token_ids: Sequence[int]) -> bool:
        candidate = frozenset(token_ids)
        shared: Counter[int] = Counter()
        for token in candidate:
            for trap in self._index.get(token, ()):
                shared[trap] += 1
        for trap, inter in shared.items():
            if inter / (len(candidate) + len(self._sets[trap]) - inter) > self.jaccard_max:
                return True
        return False

    def offer(self, token_ids: Sequence[int], ppl: float) -> Verdict:
        low, high = self.ppl_range
        value = int(ppl) if math.isfinite(ppl) else high + 1
        if not low <= value <= high:
            return "out_of_range"
        if self.per_value[value] >= self.quota:
            return "bucket_full"
        if self.is_duplicate(token_ids):
            return "duplicate"
        number = len(self._sets)
        self._sets.append(frozenset(token_ids))
        for token in self._sets[-1]:
            self._index.setdefault(token, []).append(number)
        self.accepted.append((tuple(token_ids), float(ppl)))
        self.per_value[value] += 1
        return "accepted"


def candidate_text(model: LogitsModel, token_ids: Sequence[int], retokenize: bool) -> tuple[str | None, Verdict]:
    """The text a sampled candidate would be planted as (verbatim), or None with the reason it is unusable.

    Special tokens never belong in a trap, nor does a text of only whitespace; with ``retokenize``,
    decode → encode must give the same ids back. Outer whitespace is kept, as in the reference:
    rejecting it removed 45% of SmolLM2's candidates, most of them at the high temperatures that
    reach high perplexity.
    """
    if any(t in model.special_ids for t in token_ids):
        return None, "special"
    text = model.decode(token_ids)
    if not text.strip():
        return None, "blank"
    if retokenize and model.encode([text])[0] != list(token_ids):
        return None, "retokenize"
    return text, "accepted"


@dataclass
class GenerationReport:
    """What one length's generation did: accepted traps and why the other candidates were dropped."""

    seq_len: int
    traps: list[Trap]
    candidates: int = 0
    tokens_sampled: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    per_bucket: Counter[int] = field(default_factory=Counter)  # accepted traps per bucket
    offered: Counter[str] = field(default_factory=Counter)  # usable candidates per bucket, "below", "above"
    open_values: list[int] = field(default_factory=list)

    @property
    def filled(self) -> bool:
        return not self.open_values


def generate_traps(
    model: LogitsModel,
    seq_len: int,
    config: TrapSourceConfig,
    seed: int,
    *,
    n_traps: int | None = None,
    progress: Callable[[GenerationReport], None] | None = None,
) -> GenerationReport:
    """Sample, measure and accept traps of ``seq_len`` tokens until every quota is full.

    Each step samples ``batch_size`` sequences at every temperature of the sweep, as the reference
    does. The sampling seed is ``seed · seq_len`` (the reference's RNG seed). A candidate's
    perplexity is ``exp(mean NLL)`` of its tokens under the untempered model, read from the
    sampling pass itself (the reference scores it in a second pass: the same value up to float
    rounding). Stops early after
    ``config.max_candidates`` candidates; the report then lists the integer perplexities left open.
    """
    n_traps = n_traps or config.per_seq_len
    acceptor = TrapAcceptor(n_traps, config.ppl_range, config.jaccard_max)
    sweep = config.long_temperatures if seq_len >= config.long_from else config.temperatures
    report = GenerationReport(seq_len, [])
    temperatures: dict[tuple[int, ...], float] = {}
    step = 0
    budget = config.max_candidates
    while not acceptor.full and (budget is None or report.candidates < budget):
        for temperature in sweep.values():
            if acceptor.full or (budget is not None and report.candidates >= budget):
                break
            key = f"trap/{step}/{temperature}"
            sampled = model.generate(config.batch_size, seq_len, temperature, seed * seq_len, key)
            report.candidates += len(sampled)
            report.tokens_sampled += len(sampled) * seq_len
            for sample in sampled:
                _, verdict = candidate_text(model, sample.token_ids, config.retokenize)
                if verdict == "accepted":
                    report.offered[_offered_key(sample.ppl, config)] += 1
                    verdict = acceptor.offer(sample.token_ids, sample.ppl)
                    if verdict == "accepted":
                        temperatures[tuple(sample.token_ids)] = temperature
                report.verdicts[verdict] += 1
        step += 1
        if progress is not None:
            report.open_values = acceptor.open_values()
            progress(report)
    tokenizer = model.tokenizer_fingerprint
    for ids, ppl in acceptor.accepted:
        text = model.decode(ids)
        bucket = ppl_bucket_of(ppl, config.ppl_range, config.ppl_buckets)
        report.traps.append(
            Trap(trap_id_of(text), text, ids, seq_len, ppl, bucket, temperatures[ids], model.describe(), tokenizer)
        )
        report.per_bucket[bucket if bucket is not None else -1] += 1
    report.open_values = acceptor.open_values()
    return report


def _offered_key(ppl: float, config: TrapSourceConfig) -> str:
    bucket = ppl_bucket_of(ppl, config.ppl_range, config.ppl_buckets)
    if bucket is not None:
        return str(bucket)
    return "below" if math.isfinite(ppl) and int(ppl) < config.ppl_range[0] else "above"


TRAP_FILE_SCHEMA = pa.schema(
    [
        ("trap_id", pa.string()),
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int32())),
        ("seq_len", pa.int32()),
        ("ppl", pa.float64()),
        ("ppl_bucket", pa.int32()),
        ("temperature", pa.float64()),
        ("generator", pa.string()),
        ("tokenizer", pa.string()),
    ]
)


def trap_file_table(traps: Sequence[Trap]) -> pa.Table:
    """Traps as a file ``read_trap_file`` takes back unchanged (``winnow traps generate``)."""
    rows = [
        {
            "trap_id": t.trap_id,
            "text": t.text,
            "token_ids": list(t.token_ids),
            "seq_len": t.seq_len,
            "ppl": t.ppl,
            "ppl_bucket": t.ppl_bucket,
            "temperature": t.temperature,
            "generator": t.generator,
            "tokenizer": t.tokenizer,
        }
        for t in traps
    ]
    return pa.Table.from_pylist(rows, schema=TRAP_FILE_SCHEMA)


def read_trap_file(
    path: str | Path, encode: Callable[[Sequence[str]], list[list[int]]], config: TrapSourceConfig, tokenizer: str
) -> list[Trap]:
    """Traps from Parquet or JSONL.

    A file written by ``winnow traps generate`` (rows with ``token_ids`` and ``tokenizer``) is taken
    as written, text verbatim, so a run reading it plants exactly the traps a generating run would.
    Other rows are user traps: ``text`` (outer whitespace stripped) and an optional ``ppl``, their
    lengths under ``encode`` (the run tokenizer, named by ``tokenizer``). Two rows with the same
    text are an error: a trap's id is a hash of its text.
    """
    location = Path(path)
    if location.suffix == ".parquet":
        rows = pq.read_table(location).to_pylist()
    else:
        with open(location, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    generated = [row.get("token_ids") is not None and row.get("tokenizer") for row in rows]
    texts = [str(row["text"]) if kept else str(row["text"]).strip() for row, kept in zip(rows, generated, strict=True)]
    plain = [t for t, kept in zip(texts, generated, strict=True) if not kept]
    encoded = iter(encode(plain) if plain else [])
    traps = []
    for row, text, kept in zip(rows, texts, generated, strict=True):
        ppl = row.get("ppl")
        ppl = float(ppl) if ppl is not None else None
        bucket = ppl_bucket_of(ppl, config.ppl_range, config.ppl_buckets) if ppl is not None else None
        if kept:
            ids = tuple(int(i) for i in row["token_ids"])
            trap = Trap(
                trap_id_of(text),
                text,
                ids,
                int(row.get("seq_len") or len(ids)),
                ppl,
                bucket,
                row.get("temperature"),
                str(row.get("generator") or f"file:{location.name}"),
                str(row["tokenizer"]),
            )
        else:
            ids = tuple(next(encoded))
            trap = Trap(trap_id_of(text), text, ids, len(ids), ppl, bucket, None, f"file:{location.name}", tokenizer)
        traps.append(trap)
    repeated = [t for t, n in Counter(t.trap_id for t in traps).items() if n > 1]
    if repeated:
        raise ValueError(f"{location}: {len(repeated)} trap text(s) occur more than once (trap ids are text hashes)")
    if any(not t.text.strip() for t in traps):
        raise ValueError(f"{location}: a trap has no text")
    return traps


def assign_roles(traps: Sequence[Trap], control_share: float, seed: int) -> dict[str, Role]:
    """``member`` or ``control`` for every trap: in each (length, bucket) stratum the traps are ordered
    by ``H64(trap_id, "trap-role", seed)`` and the first ⌊n · share⌋ become controls."""
    strata: dict[tuple[int, int], list[Trap]] = {}
    for trap in traps:
        strata.setdefault((trap.seq_len, _bucket_key(trap)), []).append(trap)
    roles: dict[str, Role] = {}
    for members in strata.values():
        ordered = sorted(members, key=lambda t: (h64(t.trap_id, "trap-role", seed), t.trap_id))
        n_controls = math.floor(len(ordered) * control_share)
        for i, trap in enumerate(ordered):
            roles[trap.trap_id] = "control" if i < n_controls else "member"
    return roles


def _bucket_key(trap: Trap) -> int:
    return trap.ppl_bucket if trap.ppl_bucket is not None else -1


# --- which documents get which traps -------------------------------------------------------------


def trap_doc_key(doc_id: str, seed: int) -> int:
    return h64(doc_id, "trap-doc", seed)


class TrapDocuments:
    """The ``n`` eligible documents with the smallest trap-doc hash: a mergeable, bounded accumulator.

    Any split of the corpus into parts, accumulated separately and merged, gives the same result,
    so a Beam combiner finds the documents without any worker seeing the whole corpus.
    """

    def __init__(self, n: int, seed: int, doc_min_tokens: int):
        self.n, self.seed, self.doc_min_tokens = n, seed, doc_min_tokens
        self._heap: list[tuple[int, str]] = []  # (−key, −doc_id order) max-heap of the n smallest
        self.eligible = 0

    def add(self, doc_id: str, n_tokens: int) -> TrapDocuments:
        if n_tokens <= self.doc_min_tokens:
            return self
        self.eligible += 1
        self._push(trap_doc_key(doc_id, self.seed), doc_id)
        return self

    def _push(self, key: int, doc_id: str) -> None:
        item = (-key, _Reversed(doc_id))
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)  # type: ignore[arg-type]
        elif self.n and item > self._heap[0]:  # type: ignore[operator]
            heapq.heapreplace(self._heap, item)  # type: ignore[arg-type]

    def merge(self, other: TrapDocuments) -> TrapDocuments:
        for neg_key, doc in other._heap:  # type: ignore[misc]
            self._push(-neg_key, doc.value)
        self.eligible += other.eligible
        return self

    def result(self) -> list[str]:
        """The chosen documents in ascending (hash, doc_id) order: the order traps are dealt in."""
        return [doc.value for _, doc in sorted(self._heap, key=lambda item: (-item[0], item[1].value))]  # type: ignore[union-attr]


@dataclass(frozen=True, order=False)
class _Reversed:
    """A doc id that sorts in reverse, so the max-heap evicts the larger id among equal hashes."""

    value: str

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __gt__(self, other: _Reversed) -> bool:
        return self.value < other.value


@dataclass(frozen=True)
class PlannedTrap:
    trap: Trap
    role: Role
    n_rep: int  # members: copies planted; controls: the repetition cell they are matched to
    doc_id: str | None  # None for controls


@dataclass(frozen=True)
class InjectionPlan:
    """Every trap's role, repetition count and document: computed once, shipped as a side input."""

    entries: tuple[PlannedTrap, ...]
    seed: int
    placement: Literal["sentence", "word"]
    join: Literal["spaced", "reference"]

    @cached_property
    def by_doc(self) -> dict[str, PlannedTrap]:
        return {e.doc_id: e for e in self.entries if e.doc_id is not None}

    @property
    def members(self) -> list[PlannedTrap]:
        return [e for e in self.entries if e.role == "member"]


def member_count(traps: Sequence[Trap], roles: Mapping[str, Role]) -> int:
    return sum(roles[t.trap_id] == "member" for t in traps)


def plan_injection(
    traps: Sequence[Trap], roles: Mapping[str, Role], documents: Sequence[str], config: InjectConfig
) -> InjectionPlan:
    """Deal member traps to ``documents`` (from ``TrapDocuments.result``) as the reference does.

    Members are walked by length, then perplexity bucket (then trap hash); each takes the next
    document and the next value of ``cycle(n_reps)``. Controls are walked the same way with their
    own cycle, which matches each control to a repetition cell without planting it. Fails up front
    when the corpus has too few eligible documents or the members cannot be split equally.
    """

    def walk(role: Role) -> list[Trap]:
        chosen = [t for t in traps if roles[t.trap_id] == role]
        return sorted(chosen, key=lambda t: (t.seq_len, _bucket_key(t), h64(t.trap_id, "trap-order", config.seed)))

    members, controls = walk("member"), walk("control")
    if len(members) % len(config.n_reps):
        raise ValueError(f"{len(members)} member traps cannot be split equally over n_reps {config.n_reps}")
    if len(documents) < len(members):
        raise ValueError(
            f"{len(members)} member traps need as many documents over {config.doc_min_tokens} tokens; "
            f"the corpus has {len(documents)}"
        )
    entries = [
        PlannedTrap(trap, "member", n_rep, doc)
        for trap, n_rep, doc in zip(members, cycle(config.n_reps), documents, strict=False)
    ]
    entries += [PlannedTrap(trap, "control", n_rep, None) for trap, n_rep in zip(controls, cycle(config.n_reps))]
    return InjectionPlan(tuple(entries), config.seed, config.placement, config.join)


# --- injection ------------------------------------------------------------------------------------

# A sentence starts after . ! ? (and any closing quotes or brackets) plus spaces, or after a line break.
_SENTENCE_START = re.compile(r"(?:[.!?][\"'”’)\]]*[ \t]+|\n[ \t\r\n]*)(?=\S)")


def sentence_starts(text: str) -> list[int]:
    """Character positions where a sentence starts (position 0 included for non-empty text)."""
    starts = [0] if text and not text[0].isspace() else []
    starts += [m.end() for m in _SENTENCE_START.finditer(text) if m.end() > 0]
    return sorted(set(starts))


def word_starts(text: str) -> list[int]:
    """The reference's insertion points: position 0 and the position after every single space."""
    return [0] + [i + 1 for i, char in enumerate(text) if char == " "]


def insertion_points(doc_id: str, text: str, n_rep: int, placement: str, seed: int) -> list[int]:
    """``n_rep`` positions (ascending, repeating only when the text has too few boundaries).

    Each boundary's draw is ``H64(doc_id @ position, "trap-place", seed)``; the smallest draws win.
    With ``sentence`` placement, word starts are used only once every sentence start is taken.
    """

    def by_draw(points: Iterable[int]) -> list[int]:
        return sorted(points, key=lambda p: h64(f"{doc_id}@{p}", "trap-place", seed))

    sentences = sentence_starts(text) if placement == "sentence" else []
    taken = set(sentences)
    ranked = by_draw(sentences) + by_draw(p for p in word_starts(text) if p not in taken)
    chosen = [ranked[i % len(ranked)] for i in range(n_rep)] if ranked else [0] * n_rep
    return sorted(chosen)


@dataclass(frozen=True)
class InjectedTrap:
    trap_id: str
    char_offsets: tuple[int, ...]  # where each copy starts in the final text
    span_chars: int  # characters each copy added (trap text plus its separator)

    def as_row(self) -> dict[str, Any]:
        return {"trap_id": self.trap_id, "char_offsets": list(self.char_offsets), "span_chars": self.span_chars}


def insert_copies(text: str, trap_text: str, points: Sequence[int], separator: str) -> tuple[str, tuple[int, ...]]:
    """``text`` with ``trap_text + separator`` inserted before each point, and each copy's final offset."""
    piece = trap_text + separator
    parts, offsets, last = [], [], 0
    for copies, point in enumerate(points):
        parts.append(text[last:point])
        offsets.append(point + copies * len(piece))
        parts.append(piece)
        last = point
    parts.append(text[last:])
    return "".join(parts), tuple(offsets)


def inject(doc_id: str, text: str, plan: InjectionPlan) -> tuple[str, list[InjectedTrap]]:
    """The document's text with its planned trap copies, and what was planted (empty if none).

    A pure function of (doc_id, text, plan): copies of a document made by ``mix`` get identical traps.
    """
    entry = plan.by_doc.get(doc_id)
    if entry is None:
        return text, []
    separator = " " if plan.join == "spaced" else ""
    points = insertion_points(doc_id, text, entry.n_rep, plan.placement, plan.seed)
    new_text, offsets = insert_copies(text, entry.trap.text, points, separator)
    return new_text, [InjectedTrap(entry.trap.trap_id, offsets, len(entry.trap.text) + len(separator))]


def remove_copies(text: str, injected: Sequence[InjectedTrap]) -> str:
    """Undo ``inject`` from the recorded offsets (the ledger's reversibility check)."""
    spans = sorted((o, o + t.span_chars) for t in injected for o in t.char_offsets)
    parts, last = [], 0
    for start, end in spans:
        parts.append(text[last:start])
        last = end
    parts.append(text[last:])
    return "".join(parts)


# --- the ledger -----------------------------------------------------------------------------------

LEDGER_SCHEMA = pa.schema(
    [
        ("trap_id", pa.string()),
        ("role", pa.string()),
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int32())),
        ("tokenizer", pa.string()),
        ("seq_len", pa.int32()),
        ("ppl", pa.float64()),
        ("ppl_bucket", pa.int32()),
        ("generator", pa.string()),
        ("temperature", pa.float64()),
        ("n_rep", pa.int32()),
        ("doc_id", pa.string()),
        ("char_offsets", pa.list_(pa.int64())),
        ("span_chars", pa.int32()),
        ("doc_epochs", pa.int32()),
        ("exposures", pa.int64()),
        ("survived", pa.bool_()),
        ("removed_by", pa.string()),
        ("seed", pa.int64()),
    ]
)


def ledger_table(
    plan: InjectionPlan,
    placements: Mapping[str, InjectedTrap] | None = None,
    doc_epochs: Mapping[str, int] | None = None,
    removed_by: Mapping[str, str] | None = None,
) -> pa.Table:
    """One row per trap. ``placements`` (trap id → what the surviving document recorded) and
    ``doc_epochs`` (doc id → copies made by ``mix``) come from the written documents; without them
    survival, offsets and exposures stay null. ``removed_by`` (trap id → removal reason) names the
    stage that removed a member's document after injection. Controls never have a document."""
    rows = []
    for entry in plan.entries:
        trap, placed = entry.trap, (placements or {}).get(entry.trap.trap_id)
        member = entry.role == "member"
        epochs = (doc_epochs or {}).get(entry.doc_id or "", 1 if placed is not None else 0)
        rows.append(
            {
                "trap_id": trap.trap_id,
                "role": entry.role,
                "text": trap.text,
                "token_ids": list(trap.token_ids),
                "tokenizer": trap.tokenizer,
                "seq_len": trap.seq_len,
                "ppl": trap.ppl,
                "ppl_bucket": trap.ppl_bucket,
                "generator": trap.generator,
                "temperature": trap.temperature,
                "n_rep": entry.n_rep,
                "doc_id": entry.doc_id,
                "char_offsets": list(placed.char_offsets) if placed is not None else None,
                "span_chars": placed.span_chars if placed is not None else None,
                "doc_epochs": epochs if member and placements is not None else None,
                "exposures": entry.n_rep * epochs if member and placements is not None else None,
                "survived": (placed is not None) if member and placements is not None else None,
                "removed_by": (removed_by or {}).get(trap.trap_id) if member and placed is None else None,
                "seed": plan.seed,
            }
        )
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def write_ledger(table: pa.Table, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), compression="zstd")
