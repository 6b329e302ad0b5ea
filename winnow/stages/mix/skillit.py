"""Skill-it! online data mixing, Beam-free (docs/skill-it.md).

Skills are the values of the mix stage's domain field. A skills graph ``A`` (rows: training
skills, columns: evaluation skills) says how much training on one skill helps another. Each round
``t`` the mixture over training skills is

    p_t ∝ prior ⊙ exp(η_t · A · L̄_t),

with ``L̄_t`` the sum (or, with ``targets``, the mean) of the evaluation losses over the last
``window`` checkpoints measured before the round, and round 0 using the prior itself as its
"losses" (ones by default), as the reference trainer does. A data pipeline has no model, so:

* ``mode: plan`` recomputes all rounds from the loss table of a proxy that ran Skill-it and emits
  them as T equal phases of ``mix.schedule`` (``plan_phases``);
* ``mode: step`` puts the pipeline in the trainer's loop: the trainer posts the losses it measured
  during round t − 1 and gets p_t and the shards to read in round t (``skillit_step_files``).

All arithmetic that reaches an output is per value in Python floats (``math.fsum``, ``math.exp``),
so a mixture never depends on BLAS or SIMD code paths.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from winnow.core.hashing import h64
from winnow.stages.mix.mixing import read_runs
from winnow.stages.mix.skillit_config import SkillitConfig

Checkpoint = Mapping[str, float]  # evaluation skill → loss at one checkpoint


# ---------------------------------------------------------------------------------------------
# The skills graph
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkillGraph:
    """``matrix[i, j]``: how much training on ``train[i]`` helps evaluation skill ``eval[j]``."""

    train: tuple[str, ...]
    eval: tuple[str, ...]
    matrix: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.shape != (len(self.train), len(self.eval)):
            raise ValueError(f"graph is {self.matrix.shape}, names give {(len(self.train), len(self.eval))}")
        if not np.all(np.isfinite(self.matrix)) or np.any(self.matrix < 0):
            raise ValueError("graph entries must be finite and non-negative")

    @classmethod
    def identity(cls, skills: Sequence[str]) -> SkillGraph:
        return cls(tuple(skills), tuple(skills), np.eye(len(skills)))

    def prepared(self, offdiag_binary_weight: float, targets: Sequence[str] | None = None) -> SkillGraph:
        """The graph the update uses: off-diagonal entries (by index, as the reference) equal to 1 become
        ``offdiag_binary_weight``; with ``targets`` only those evaluation columns remain."""
        matrix = self.matrix.astype(np.float64).copy()
        off = ~np.eye(*matrix.shape, dtype=bool)
        matrix[off & (matrix == 1.0)] = offdiag_binary_weight
        if targets is None:
            return SkillGraph(self.train, self.eval, matrix)
        missing = [t for t in targets if t not in self.eval]
        if missing:
            raise ValueError(f"targets {missing} are not evaluation skills of the graph")
        columns = [self.eval.index(t) for t in targets]
        return SkillGraph(self.train, tuple(targets), matrix[:, columns])

    def density(self, threshold: float = 0.0) -> float:
        """Share of edges between different skills with weight above ``threshold``."""
        values = [float(self.matrix[i, j]) for i, a in enumerate(self.train) for j, b in enumerate(self.eval) if a != b]
        return sum(v > threshold for v in values) / len(values) if values else 0.0

    def lone_skills(self) -> list[int]:
        """Skills with a unit self-edge and no other edge in or out (the reference's lone nodes)."""
        if self.train != self.eval:
            raise ValueError("lone skills need a square graph over the same skills")
        m = self.matrix
        return [
            i
            for i in range(len(self.train))
            if m[i, i] == 1 and math.fsum(m[i, :].tolist()) == 1 and math.fsum(m[:, i].tolist()) == 1
        ]

    def to_json(self) -> dict[str, Any]:
        return {"train": list(self.train), "eval": list(self.eval), "matrix": self.matrix.tolist()}


def load_graph(path: str | Path, skills: Sequence[str] | None = None) -> SkillGraph:
    """A user's graph: ``.npy`` (square; names from ``skills``), CSV (header = column names after a first
    cell, then one row per training skill led by its name) or JSON ``{train, eval, matrix}``."""
    path = Path(path)
    if path.suffix == ".npy":
        matrix = np.load(path, allow_pickle=False).astype(np.float64)
        if skills is None or matrix.shape != (len(skills), len(skills)):
            raise ValueError(
                f"{path}: a .npy graph must be square and needs `skills` naming its {matrix.shape[0]} rows"
            )
        return SkillGraph(tuple(skills), tuple(skills), matrix)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        train = data.get("train") or data["skills"]
        return SkillGraph(tuple(train), tuple(data.get("eval") or train), np.array(data["matrix"], dtype=np.float64))
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.reader(handle) if r]
    header, body = rows[0], rows[1:]
    return SkillGraph(tuple(r[0] for r in body), tuple(header[1:]), np.array([[float(v) for v in r[1:]] for r in body]))


def save_graph(graph: SkillGraph, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
    """Write a graph ``load_graph`` reads back: JSON ``{train, eval, matrix, …extra}`` or CSV (by suffix)."""
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["skill", *graph.eval])
            for name, row in zip(graph.train, graph.matrix.tolist(), strict=True):
                writer.writerow([name, *(repr(float(v)) for v in row)])
        return
    payload = {**graph.to_json(), **(extra or {})}
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class GraphEstimate:
    graph: SkillGraph
    rule: str
    runs: int
    groups: dict[str, int]  # training support "a+b" → runs averaged
    untested: list[tuple[str, str]] = field(default_factory=list)  # brute force: pairs without runs


def estimate_graph(
    runs_csv: str | Path,
    skills: Sequence[str],
    *,
    rule: str = "linear",
    loss_column: str = "loss_{skill}",
    min_gain: float = 0.0,
    eval_skills: Sequence[str] | None = None,
) -> GraphEstimate:
    """A from proxy runs in the RegMix runs layout: a run's training support is the set of skills with a
    positive weight column; runs with the same support (seeds) are averaged.

    linear (k + 1 runs): ``A_ij = max(0, (L_j(base) − L_j(i)) / L_j(base))`` with ``base`` the all-zero
    row (the shared starting checkpoint) and ``i`` the row trained on skill i alone; diagonal 1.
    brute_force (the README's edge test): ``A_ij = 1`` when ``(L_j({j}) − L_j({i, j})) / L_j({j}) >
    min_gain``, else 0; pairs without runs stay 0 and are listed.
    """
    eval_skills = list(eval_skills or skills)
    x, y = read_runs(runs_csv, list(skills), [loss_column.format(skill=s) for s in eval_skills])
    sums: dict[frozenset[int], np.ndarray] = {}
    counts: dict[frozenset[int], int] = {}
    for weights, losses in zip(x, y, strict=True):
        support = frozenset(int(i) for i in np.flatnonzero(weights > 0))
        sums[support] = sums.get(support, 0.0) + losses
        counts[support] = counts.get(support, 0) + 1
    mean = {s: sums[s] / counts[s] for s in sums}
    k, m = len(skills), len(eval_skills)
    matrix = np.zeros((k, m))
    untested: list[tuple[str, str]] = []

    def need(support: frozenset[int], what: str) -> np.ndarray:
        if support not in mean:
            raise ValueError(f"{runs_csv}: the {rule} rule needs a run trained on {what}")
        return mean[support]

    for j, target in enumerate(eval_skills):
        self_index = skills.index(target) if target in skills else None
        for i, source in enumerate(skills):
            if i == self_index:
                matrix[i, j] = 1.0
            elif rule == "linear":
                base = need(frozenset(), "nothing (all weights 0: the base checkpoint)")[j]
                after = need(frozenset({i}), f"{source} alone")[j]
                matrix[i, j] = max(0.0, (base - after) / base)
            elif rule == "brute_force":
                if self_index is None:
                    raise ValueError(f"brute_force needs {target!r} to be a training skill too")
                alone = need(frozenset({self_index}), f"{target} alone")[j]
                pair = mean.get(frozenset({i, self_index}))
                if pair is None:
                    untested.append((source, target))
                    continue
                matrix[i, j] = 1.0 if (alone - pair[j]) / alone > min_gain else 0.0
            else:
                raise ValueError(f"unknown graph rule {rule!r}")
    groups = {"+".join(skills[i] for i in sorted(s)) or "(base)": counts[s] for s in sorted(counts, key=sorted)}
    return GraphEstimate(SkillGraph(tuple(skills), tuple(eval_skills), matrix), rule, len(x), groups, untested)


def graph_for(config: SkillitConfig, skills: Sequence[str]) -> SkillGraph:
    """The configured graph (file, estimate, or identity) over ``skills``."""
    if config.graph is not None:
        graph = load_graph(config.graph, config.skills or skills)
    elif config.graph_runs is not None:
        graph = estimate_graph(
            config.graph_runs,
            list(config.skills or skills),
            rule=config.graph_rule,
            loss_column=config.loss_column,
            min_gain=config.min_gain,
        ).graph
    else:
        graph = SkillGraph.identity(config.skills or skills)
    return graph


# ---------------------------------------------------------------------------------------------
# The multiplicative-weights update
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundMixture:
    """Round t's mixture, the η it used and the (window-aggregated, maybe normalised) losses it saw."""

    round: int
    weights: dict[str, float]
    eta: float
    window_losses: dict[str, float] | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dot(row: Sequence[float], vector: Sequence[float]) -> float:
    return math.fsum(a * b for a, b in zip(row, vector, strict=True))


def _multiplicative(
    prior: Sequence[float], rows: Sequence[Sequence[float]], losses: Sequence[float], eta: float
) -> list[float]:
    """``prior ⊙ exp(η · rows · losses)`` normalised; the largest exponent is subtracted first (same
    mixture, no overflow at large η)."""
    if not rows:
        return []
    logits = [eta * _dot(row, losses) for row in rows]
    top = max(logits)
    weights = [p * math.exp(z - top) for p, z in zip(prior, logits, strict=True)]
    total = math.fsum(weights)
    if not total > 0:
        raise ValueError("the mixture has no mass: is the prior all zero?")
    return [w / total for w in weights]


def _halved(matrix: np.ndarray, train: Sequence[str], eval_: Sequence[str], times: int) -> list[list[float]]:
    """dynamic_lambda: every positive edge between different skills halved ``times`` times."""
    factor = 0.5**times
    return [
        [v * factor if v > 0 and train[i] != eval_[j] else v for j, v in enumerate(row)]
        for i, row in enumerate(matrix.tolist())
    ]


def skillit_mixtures(
    graph: SkillGraph,
    checkpoints: Sequence[Sequence[Checkpoint]],
    config: SkillitConfig,
    rounds: int | None = None,
) -> list[RoundMixture]:
    """p_0 … p_{T−1} from the raw graph and the checkpoints measured during each round.

    ``checkpoints[r]`` lists round r's checkpoints in order (each: evaluation skill → loss); round t
    sees those of rounds < t, so ``rounds − 1`` rounds of checkpoints are needed. Follows
    ``mw_trainer.py``: window over checkpoints (optionally led by a pseudo-checkpoint of ones ×
    mean first losses), η schedule and normalisation against a baseline checkpoint, edges halved
    once per finished round, lone skills pinned at 1/k.
    """
    rounds = config.rounds if rounds is None else rounds
    prepared = graph.prepared(config.offdiag_binary_weight, config.targets)
    train, eval_ = prepared.train, prepared.eval
    k, m = len(train), len(eval_)
    if len(checkpoints) < rounds - 1:
        raise ValueError(f"{rounds} rounds need the checkpoints of {rounds - 1} rounds, got {len(checkpoints)}")
    prior = [float(config.prior[s]) for s in train] if config.prior else [1.0] * k
    square = train == eval_ and config.targets is None
    loss_init = list(prior) if square else [1.0] * m
    averaged = config.targets is not None
    lone = graph.prepared(config.offdiag_binary_weight).lone_skills() if config.ignore_lone_nodes else []
    connected = [i for i in range(k) if i not in lone]
    mass = 1.0 - len(lone) / k
    running_prior = [prior[i] for i in connected]

    def vector(checkpoint: Checkpoint) -> list[float]:
        missing = [s for s in eval_ if s not in checkpoint]
        if missing:
            raise ValueError(f"a checkpoint lacks losses for {missing}")
        return [float(checkpoint[s]) for s in eval_]

    flat = [[vector(c) for c in round_checkpoints] for round_checkpoints in checkpoints]
    out: list[RoundMixture] = []
    for t in range(rounds):
        seen = [c for r in flat[:t] for c in r]
        window_losses: list[float] | None = None
        eta_t = config.eta
        if t == 0:
            if config.init:
                p = _normalised([float(config.init.get(s, 0.0)) for s in train])
            elif lone:
                sub = [[prepared.matrix[i, j] for j in connected] for i in connected]
                part = _multiplicative(running_prior, sub, [loss_init[i] for i in connected], config.eta)
                p = _with_lone(part, connected, lone, k, mass)
            else:
                p = _multiplicative(prior, prepared.matrix.tolist(), loss_init, config.eta)
        else:
            if not seen:
                raise ValueError(f"round {t}: no checkpoint measured before it")
            history = ([[math.fsum(seen[0]) / m] * m] if config.initialize_loss else []) + seen
            window = history[max(0, len(history) - config.window) :]
            aggregate = [math.fsum(column) for column in zip(*window, strict=True)] if window else [0.0] * m
            if averaged and window:
                aggregate = [a / len(window) for a in aggregate]
            baseline = seen[1] if config.loss_baseline == "reference" and len(seen) >= 2 else seen[0]
            used = connected if lone else list(range(m))
            if config.eta_schedule:
                eta_t = config.eta / (math.fsum(history[-1]) / math.fsum(baseline[j] for j in used))
            if config.normalize_loss:
                aggregate = [a / b for a, b in zip(aggregate, baseline, strict=True)]
            rows = _halved(prepared.matrix, train, eval_, t - 1) if config.dynamic_lambda else prepared.matrix.tolist()
            if lone:
                sub = [[rows[i][j] for j in connected] for i in connected]
                part = _multiplicative(running_prior, sub, [aggregate[j] for j in connected], eta_t)
                p = _with_lone(part, connected, lone, k, mass)
            else:
                p = _multiplicative(prior, rows, aggregate, eta_t)
            window_losses = dict(zip(eval_, aggregate, strict=True))
        if lone and config.lone_prior == "reference":
            running_prior = [p[i] for i in connected]
        out.append(RoundMixture(t, dict(zip(train, p, strict=True)), eta_t, window_losses))
    return out


def _normalised(values: Sequence[float]) -> list[float]:
    total = math.fsum(values)
    if not total > 0:
        raise ValueError("mixture weights sum to zero")
    return [v / total for v in values]


def _with_lone(
    part: Sequence[float], connected: Sequence[int], lone: Sequence[int], k: int, mass: float
) -> list[float]:
    p = [0.0] * k
    for i, w in zip(connected, part, strict=True):
        p[i] = w * mass
    for i in lone:
        p[i] = 1.0 / k
    return p


# ---------------------------------------------------------------------------------------------
# Plan mode: a proxy's schedule as mix.schedule phases
# ---------------------------------------------------------------------------------------------


def read_loss_table(
    path: str | Path, eval_skills: Sequence[str], loss_column: str = "loss_{skill}"
) -> list[list[dict[str, float]]]:
    """Checkpoints per round from a CSV with ``round``, optional ``step`` (order within the round; file
    order otherwise) and one loss column per evaluation skill."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return []
    columns = {s: loss_column.format(skill=s) for s in eval_skills}
    missing = [c for c in ["round", *columns.values()] if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    keyed = sorted(enumerate(rows), key=lambda item: (int(item[1]["round"]), float(item[1].get("step") or 0), item[0]))
    rounds = max(int(r["round"]) for r in rows) + 1
    table: list[list[dict[str, float]]] = [[] for _ in range(rounds)]
    for _, row in keyed:
        table[int(row["round"])].append({s: float(row[c]) for s, c in columns.items()})
    return table


def plan_phases(mixtures: Sequence[RoundMixture], prefix: str = "skillit") -> list[dict[str, Any]]:
    """T equal phases in the ``mix.schedule`` layout: phase t covers [t/T, (t+1)/T) with p_t as its manual mixture.

    Names carry the round zero-padded (``skillit-07`` when T > 10): winnow orders phases by name."""
    total = len(mixtures)
    width = len(str(max(total - 1, 0)))
    return [
        {
            "name": f"{prefix}-{m.round:0{width}d}",
            "start_fraction": m.round / total,
            "end_fraction": (m.round + 1) / total,
            "weights": {"manual": dict(m.weights)},
        }
        for m in mixtures
    ]


def run_skills(path: str | Path, loss_column: str = "loss_{skill}") -> list[str]:
    """The skills of a proxy-run CSV: the weight columns that have a loss column (``loss_column``) too."""
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    columns = set(header)
    skills = [c for c in header if loss_column.format(skill=c) in columns and loss_column.format(skill=c) != c]
    if not skills:
        raise ValueError(f"{path}: no column has a matching {loss_column!r} column; name the skills explicitly")
    return skills


def plan_skills(config: SkillitConfig) -> list[str]:
    """The training skills of a plan before any data is read: ``skills``, else the names a CSV or JSON
    ``graph`` carries, else the weight columns of ``graph_runs``."""
    if config.skills is not None:
        return list(config.skills)
    if config.graph is not None and not str(config.graph).endswith(".npy"):
        return list(load_graph(config.graph).train)
    if config.graph_runs is not None:
        return run_skills(config.graph_runs, config.loss_column)
    raise ValueError("mix.skillit.skills: needed with a .npy graph or no graph (nothing else names the skills)")


def skillit_plan(config: SkillitConfig, skills: Sequence[str]) -> dict[str, Any]:
    """``mode: plan`` end to end: the graph, the proxy's loss table, every round's mixture, the phases."""
    graph = graph_for(config, skills)
    if config.skills is not None and set(config.skills) != set(graph.train):
        raise ValueError(f"mix.skillit.skills {list(config.skills)} differ from the graph's skills {list(graph.train)}")
    eval_skills = list(config.targets or graph.eval)
    checkpoints = read_loss_table(config.losses, eval_skills, config.loss_column) if config.losses else []
    mixtures = skillit_mixtures(graph, checkpoints, config)
    return {
        "schedule": plan_phases(mixtures, config.phase_prefix),
        "rounds": [m.as_dict() for m in mixtures],
        "graph": graph.to_json(),
    }


# ---------------------------------------------------------------------------------------------
# Step mode: the round's shards
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A drawable piece of one skill's pool (a shard, or a document), with its token count."""

    unit: str
    skill: str
    tokens: int


@dataclass(frozen=True)
class Draw:
    unit: str
    skill: str
    epoch: int
    tokens: int


def _skill_stream(units: Sequence[Unit], skill: str, epoch: int, seed: int) -> list[Unit]:
    """Epoch ``epoch`` of a skill's pool in its own seeded order (a hash per unit, skill and epoch)."""
    return sorted(units, key=lambda u: (h64(u.unit, f"skillit:order:{skill}:{epoch}", seed), u.unit))


@dataclass
class RoundDraws:
    round: int
    draws: list[Draw]
    demand: dict[str, int]
    realised: dict[str, int]
    unmet: dict[str, int]


def draw_rounds(
    catalogue: Sequence[Unit],
    mixtures: Sequence[RoundMixture],
    tokens_per_round: int,
    *,
    max_epochs: int,
    seed: int,
) -> list[RoundDraws]:
    """Each round takes about ``round(tokens_per_round · p_t[s])`` tokens of skill s as the next run of its
    stream (epoch 0's seeded order, then epoch 1's, …, at most ``max_epochs``), stopping at the unit edge
    nearest the demand (within half a unit, so the skills' shares are not all diluted by one unit's
    overshoot each); what the epoch cap leaves is reported unmet. Rounds continue where the last one
    stopped, so no unit repeats before its skill's pool is used up."""
    by_skill: dict[str, list[Unit]] = {}
    for unit in catalogue:
        by_skill.setdefault(unit.skill, []).append(unit)
    cursor = {s: 0 for s in by_skill}
    orders: dict[tuple[str, int], list[Unit]] = {}
    out = []
    for mixture in mixtures:
        draws: list[Draw] = []
        demand = {s: round(tokens_per_round * w) for s, w in mixture.weights.items()}
        realised = {s: 0 for s in demand}
        unmet = {s: 0 for s in demand}
        for skill in sorted(demand):
            units = by_skill.get(skill, [])
            while realised[skill] < demand[skill]:
                if not units or cursor[skill] >= len(units) * max_epochs:
                    unmet[skill] = demand[skill] - realised[skill]
                    break
                epoch, at = divmod(cursor[skill], len(units))
                if (skill, epoch) not in orders:
                    orders[(skill, epoch)] = _skill_stream(units, skill, epoch, seed)
                unit = orders[(skill, epoch)][at]
                if realised[skill] + unit.tokens - demand[skill] > demand[skill] - realised[skill]:
                    break  # the nearer document edge is before this unit
                draws.append(Draw(unit.unit, skill, epoch, unit.tokens))
                realised[skill] += unit.tokens
                cursor[skill] += 1
        out.append(RoundDraws(mixture.round, draws, demand, realised, unmet))
    return out


def read_catalogue(path: str | Path) -> list[Unit]:
    """Units from CSV or JSON lines with ``unit``, ``skill`` and ``tokens``."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    return [Unit(str(r["unit"]), str(r["skill"]), int(r["tokens"])) for r in rows]


def parse_posted_losses(payload: Any) -> list[dict[str, float]]:
    """The trainer's post: ``{skill: loss}`` (one checkpoint), a list of them in order, or
    ``{"checkpoints": [...]}``."""
    if isinstance(payload, Mapping) and "checkpoints" in payload:
        payload = payload["checkpoints"]
    if isinstance(payload, Mapping):
        payload = [payload]
    checkpoints = [{str(s): float(v) for s, v in c.items()} for c in payload]
    for c in checkpoints:
        if not all(math.isfinite(v) for v in c.values()):
            raise ValueError("posted losses must be finite")
    return checkpoints


def skillit_step(
    config: SkillitConfig,
    graph: SkillGraph,
    checkpoints: Sequence[Sequence[Checkpoint]],
    round_index: int,
    catalogue: Sequence[Unit],
    seed: int,
) -> dict[str, Any]:
    """p_t for ``round_index`` from the checkpoints of the rounds before it, and round t's shards (the
    rounds before are replayed to know where each skill's stream stands)."""
    if not 0 <= round_index < config.rounds:
        raise ValueError(f"round {round_index} is outside 0..{config.rounds - 1}")
    if config.tokens_per_round is None:
        raise ValueError("mix.skillit.tokens_per_round: step mode needs the tokens drawn per round")
    mixtures = skillit_mixtures(graph, checkpoints[:round_index], config, rounds=round_index + 1)
    rounds = draw_rounds(catalogue, mixtures, config.tokens_per_round, max_epochs=config.max_epochs, seed=seed)
    mixture, drawn = mixtures[-1], rounds[-1]
    total = sum(drawn.realised.values())
    return {
        "round": round_index,
        "weights": mixture.weights,
        "eta": mixture.eta,
        "window_losses": mixture.window_losses,
        "tokens_per_round": config.tokens_per_round,
        "demand_tokens": drawn.demand,
        "realised_tokens": drawn.realised,
        "realised_shares": {s: (v / total if total else 0.0) for s, v in drawn.realised.items()},
        "unmet_tokens": drawn.unmet,
        "shards": [asdict(d) for d in drawn.draws],
    }


def skillit_step_files(
    config: SkillitConfig,
    *,
    round_index: int,
    catalogue: str | Path,
    state: str | Path,
    output: str | Path,
    losses: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``winnow mix skillit-step``: record the losses posted for round ``round_index − 1`` in the state
    file, compute round ``round_index``'s mixture and shard list, write it to ``output``.

    The state file holds every round's posted checkpoints; posting a round again replaces it and
    forgets the rounds after it, so re-running a step gives the same answer.
    """
    units = read_catalogue(catalogue)
    skills = list(config.skills or sorted({u.skill for u in units}))
    graph = graph_for(config, skills)
    state_path = Path(state)
    saved = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    posted: dict[str, list[dict[str, float]]] = dict(saved.get("checkpoints", {}))
    if losses is not None:
        if round_index == 0:
            raise ValueError("round 0 uses no losses; post the losses of round t − 1 when asking for round t")
        posted[str(round_index - 1)] = parse_posted_losses(json.loads(Path(losses).read_text(encoding="utf-8")))
    posted = {r: c for r, c in posted.items() if int(r) < round_index}
    missing = [r for r in range(round_index) if str(r) not in posted]
    if missing:
        raise ValueError(f"no losses posted for round(s) {missing}")
    checkpoints = [posted[str(r)] for r in range(round_index)]
    result = skillit_step(config, graph, checkpoints, round_index, units, seed)
    state_path.write_text(json.dumps({"skills": skills, "checkpoints": posted}, indent=1, sort_keys=True) + "\n")
    Path(output).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return result
