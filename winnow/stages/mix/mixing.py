"""Domain mixtures, Beam-free (docs/mixing.md#target-mixtures mixture construction, docs/mixing.md#regmix RegMix,
docs/mixing.md#phases schedule).

* Targets: a manual mixture, the independence product of per-taxonomy mixtures
  (``w(t, f) = w_t(t) · w_f(f)``, each cell capped by ``prior(t, f) / selection_fraction`` and
  renormalised, docs/mixing.md#target-mixtures), or a RegMix fit.
* Planning: a domain's demand across all phases is met by whole epochs of the domain plus a
  remainder taken in key order, never more than ``max_epochs`` copies of any document; what the
  cap leaves unmet is reported, not hidden (``DomainPlan``).
* RegMix: mixture generation (Dirichlet around the prior with RegMix's or WebOrganizer's rules),
  a gradient-boosting regressor from mixture to target loss, and the search that averages the
  best predicted of many Dirichlet draws.

Proxy-run CSV (``read_runs``): one row per proxy run, one numeric column per domain holding that
run's mixture weight (the columns named in the prior), and one or more target columns (e.g.
``pile_cc_loss``; lower is better). Other columns are ignored. ``winnow mix generate`` writes the
mixtures to train with exactly those domain columns.

Mixture file (``weights.manual_file``, ``read_mixture_file``): a paper's per-source table pasted in
as CSV/TSV (a domain column ``domain``/``source``/``key`` or else the first column, and a weight
column ``weight``/``share``/``tokens``; token counts are weights in proportion; ``#`` lines are
comments), or a JSON/YAML mapping ``{domain: weight}``.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DOMAIN_SEPARATOR = "|"
WEIGHT_QUANTUM = 2e-4  # RegMix: weights below it are zeroed, the rest rounded to its multiples


# --- targets ------------------------------------------------------------------------------


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights scaled to sum 1; negative or all-zero weights are an error (no mixture to follow)."""
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError(f"mixture weights must be finite and non-negative: {dict(weights)}")
    total = math.fsum(weights.values())
    if total <= 0:
        raise ValueError("mixture weights sum to zero")
    return {domain: w / total for domain, w in weights.items()}


MIXTURE_KEY_COLUMNS = ("domain", "source", "key")
MIXTURE_WEIGHT_COLUMNS = ("weight", "share", "tokens")


def parse_mixture_table(text: str, name: str) -> dict[str, float]:
    """``{domain: weight}`` from a mixture file's text (format by ``name``'s extension); errors name the row."""
    if name.lower().endswith((".json", ".yaml", ".yml")):
        data = yaml.safe_load(text)  # JSON is YAML
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{name}: expected a non-empty mapping {{domain: weight}}")
        rows = [(str(key), value, f"key {key!r}") for key, value in data.items()]
    else:
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise ValueError(f"{name}: no rows")
        delimiter = "\t" if "\t" in lines[0] else ","
        reader = csv.reader(lines, delimiter=delimiter)
        header = [column.strip().lower() for column in next(reader)]
        key_column = next((header.index(c) for c in MIXTURE_KEY_COLUMNS if c in header), 0)
        weight_column = next((header.index(c) for c in MIXTURE_WEIGHT_COLUMNS if c in header), None)
        if weight_column is None:
            raise ValueError(f"{name}: the header needs a weight column ({', '.join(MIXTURE_WEIGHT_COLUMNS)})")
        rows = []
        for number, row in enumerate(reader, start=2):
            if len(row) <= max(key_column, weight_column):
                raise ValueError(f"{name} row {number}: expected {len(header)} columns, got {len(row)}")
            rows.append((row[key_column].strip(), row[weight_column].strip(), f"row {number}"))
    weights: dict[str, float] = {}
    for domain, raw, where in rows:
        if not domain:
            raise ValueError(f"{name} {where}: empty domain")
        if domain in weights:
            raise ValueError(f"{name} {where}: domain {domain!r} listed twice")
        try:
            weight = float(str(raw).replace("_", ""))
        except ValueError:
            raise ValueError(f"{name} {where}: weight {raw!r} is not a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"{name} {where}: weight {raw!r} must be finite and non-negative")
        weights[domain] = weight
    if math.fsum(weights.values()) <= 0:
        raise ValueError(f"{name}: the weights sum to zero")
    return weights


def read_mixture_file(path: str | Path) -> dict[str, float]:
    """A local mixture file (see the module docstring)."""
    path = Path(path)
    return parse_mixture_table(path.read_text(encoding="utf-8"), path.name)


def cap_and_renormalise(weights: Mapping[str, float], caps: Mapping[str, float]) -> dict[str, float]:
    """Water-filling: clip each weight at its cap and hand the excess to the unclipped domains in
    proportion to their weight, until none is over (one clip-and-renormalise can push others over)."""
    result = normalise(weights)
    if math.fsum(caps.get(d, 0.0) for d in result) < 1 - 1e-12:
        raise ValueError("the caps sum below 1: the pool cannot supply any mixture at this budget")
    fixed: dict[str, float] = {}
    while True:
        free = {d: w for d, w in result.items() if d not in fixed}
        over = {d for d, w in free.items() if w > caps.get(d, 0.0) + 1e-15}
        if not over:
            return result
        for d in over:
            fixed[d] = caps.get(d, 0.0)
        left = 1.0 - math.fsum(fixed.values())
        rest = {d: w for d, w in free.items() if d not in over}
        mass = math.fsum(rest.values())
        if mass <= 0:
            # every remaining domain had weight 0: spread what is left in proportion to headroom
            rest = {d: caps.get(d, 0.0) for d in free if d not in over}
            mass = math.fsum(rest.values())
        result = {**fixed, **{d: left * w / mass for d, w in rest.items()}}


def independence_product(
    factors: Sequence[Mapping[str, float]],
    prior: Mapping[str, float] | None = None,
    selection_fraction: float | None = None,
) -> dict[str, float]:
    """``w(c) = Π_i w_i(c_i)`` over all cells (keys joined by ``|``), capped by
    ``prior(c) / selection_fraction`` and renormalised when a prior is given (docs/mixing.md#target-mixtures)."""
    marginals = [normalise(f) for f in factors]
    cells: dict[str, float] = {}
    for combo in itertools.product(*(sorted(m.items()) for m in marginals)):
        cells[DOMAIN_SEPARATOR.join(name for name, _ in combo)] = math.prod(w for _, w in combo)
    if prior is None or selection_fraction is None:
        return cells
    shares = normalise(prior)
    caps = {cell: shares.get(cell, 0.0) / selection_fraction for cell in cells}
    return cap_and_renormalise(cells, caps)


def marginal(weights: Mapping[str, float], position: int) -> dict[str, float]:
    """The marginal of one factor of a product mixture (cells are ``a|b|…``)."""
    out: dict[str, float] = {}
    for cell, w in weights.items():
        name = cell.split(DOMAIN_SEPARATOR)[position]
        out[name] = out.get(name, 0.0) + w
    return out


def total_variation(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return 0.5 * math.fsum(abs(a.get(d, 0.0) - b.get(d, 0.0)) for d in set(a) | set(b))


# --- planning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainPlan:
    """How one domain meets its demand (tokens summed over phases) from a pool of ``pool_tokens``.

    Every document is copied ``full_epochs`` times; the documents inside the remainder cut (the
    key-ordered prefix reaching ``remainder_budget``) once more. ``unmet_tokens`` is what the
    ``max_epochs`` cap (or an empty pool) leaves undelivered.
    """

    pool_tokens: int
    demand: float
    full_epochs: int
    remainder_budget: float
    unmet_tokens: float

    @property
    def epochs_used(self) -> int:
        return self.full_epochs + (1 if self.remainder_budget > 0 else 0)


def plan_domain(pool_tokens: int, demand: float, max_epochs: int) -> DomainPlan:
    if demand <= 0:
        return DomainPlan(pool_tokens, demand, 0, 0.0, 0.0)
    if pool_tokens <= 0:
        return DomainPlan(pool_tokens, demand, 0, 0.0, float(demand))
    full = min(int(demand // pool_tokens), max_epochs)
    remainder = demand - full * pool_tokens
    if full == max_epochs:
        return DomainPlan(pool_tokens, demand, full, 0.0, max(remainder, 0.0))
    return DomainPlan(pool_tokens, demand, full, float(remainder), 0.0)


def phase_boundaries(demands: Sequence[float], delivered: float) -> list[float]:
    """Cumulative token boundaries that split a domain's delivered copies between phases: the
    phases' demands scaled to what was delivered, so each phase takes its share of the cut's
    overshoot (less than one document) or of what the cap left unmet."""
    total = math.fsum(demands)
    scale = delivered / total if total > 0 else 0.0
    return list(itertools.accumulate(d * scale for d in demands))[:-1]


# --- RegMix -------------------------------------------------------------------------------


def read_prior(path: str | Path) -> dict[str, float]:
    """A prior JSON list ``[{domain, tokens, documents, weight}]`` (as the mix stage emits) as
    ``{domain: tokens}`` (``weight`` when tokens are absent)."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(rows, dict) and "prior" in rows:
        rows = rows["prior"]
    return {str(r["domain"]): float(r.get("tokens", r.get("weight", 0.0))) for r in rows}


def prior_records(tokens: Mapping[str, int], documents: Mapping[str, int]) -> list[dict[str, Any]]:
    grand = sum(tokens.values())
    return [
        {
            "domain": d,
            "tokens": int(tokens[d]),
            "documents": int(documents.get(d, 0)),
            "weight": tokens[d] / grand if grand else 0.0,
        }
        for d in sorted(tokens)
    ]


def round_to_quantum(weights: np.ndarray, quantum: float = WEIGHT_QUANTUM) -> np.ndarray:
    """Multiples of ``quantum`` summing to exactly 1 (largest remainder), zeros kept zero."""
    units = round(1 / quantum)
    scaled = weights / weights.sum() * units
    floor = np.floor(scaled)
    short = int(units - floor.sum())
    order = np.argsort(-(scaled - floor), kind="stable")
    floor[order[:short]] += 1
    return floor / units


@dataclass(frozen=True)
class MixtureGeneration:
    """The rules of proxy-mixture generation. ``regmix()``: RegMix's (docs/mixing.md#regmix step 2);
    ``weborganizer()``: WebOrganizer's variant."""

    count: int = 512
    temperature: float = 1.0  # prior smoothing q^(1/temperature); 2 gives RegMix's optional q^0.5
    alpha_low: float = 0.1
    alpha_high: float = 5.0
    alpha_grid: int | None = 15  # α from this many log-spaced values; None: log-uniform
    max_ratio: float = 15.0  # reject w_d > max_ratio · q_d (epochs of the domain)
    min_weight: float = WEIGHT_QUANTUM
    min_distance: float = 0.0  # L∞ distance from every kept mixture
    max_draws: int = 1_000_000

    @classmethod
    def regmix(cls, smooth: bool = False, count: int = 512) -> MixtureGeneration:
        return cls(count=count, temperature=2.0 if smooth else 1.0)

    @classmethod
    def weborganizer(cls, count: int = 512) -> MixtureGeneration:
        return cls(count=count, temperature=2.0, alpha_grid=None, max_ratio=20.0, min_distance=0.05)


def generate_mixtures(
    prior: Mapping[str, float], rules: MixtureGeneration, seed: int = 42
) -> tuple[list[str], np.ndarray]:
    """(domains, mixtures): ``rules.count`` distinct mixtures around the prior token distribution.

    Each draw is ``Dir(α · q̃)`` with q̃ the (smoothed) prior and α from the configured range;
    weights below ``min_weight`` are zeroed, the rest renormalised and rounded to multiples of
    2e-4; a draw is rejected when any final weight exceeds ``max_ratio · q_d`` (q unsmoothed:
    the cap is on epochs of the real pool), duplicates another, or (WebOrganizer) lies closer
    than ``min_distance`` in L∞ to one kept.
    """
    domains = sorted(prior)
    q = np.array([prior[d] for d in domains], dtype=np.float64)
    q = q / q.sum()
    smoothed = q ** (1.0 / rules.temperature)
    smoothed = smoothed / smoothed.sum()
    rng = np.random.default_rng(seed)
    grid = (
        np.logspace(math.log10(rules.alpha_low), math.log10(rules.alpha_high), rules.alpha_grid)
        if rules.alpha_grid
        else None
    )
    kept: list[np.ndarray] = []
    seen: set[bytes] = set()
    for _ in range(rules.max_draws):
        if len(kept) >= rules.count:
            break
        if grid is not None:
            alpha = float(rng.choice(grid))
        else:
            alpha = float(math.exp(rng.uniform(math.log(rules.alpha_low), math.log(rules.alpha_high))))
        draw = rng.dirichlet(np.maximum(alpha * smoothed, 1e-12))
        if not np.all(np.isfinite(draw)):
            continue
        draw = np.where(draw < rules.min_weight, 0.0, draw)
        if draw.sum() <= 0:
            continue
        mixture = round_to_quantum(draw / draw.sum())
        if np.any(mixture > rules.max_ratio * q + 1e-12):
            continue
        signature = np.rint(mixture / WEIGHT_QUANTUM).astype(np.int64).tobytes()
        if signature in seen:
            continue
        if (
            rules.min_distance > 0
            and kept
            and np.min(np.max(np.abs(np.array(kept) - mixture), axis=1)) < rules.min_distance
        ):
            continue
        seen.add(signature)
        kept.append(mixture)
    if len(kept) < rules.count:
        raise ValueError(f"only {len(kept)} of {rules.count} mixtures satisfy the rules after {rules.max_draws} draws")
    return domains, np.array(kept)


def write_mixtures(path: str | Path, domains: Sequence[str], mixtures: np.ndarray) -> None:
    """The proxy runs to train, as the runs CSV without its target columns (``run`` = row id)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", *domains])
        for i, row in enumerate(mixtures):
            writer.writerow([f"mix-{i:04d}", *(f"{w:.4f}" for w in row)])


def read_runs(path: str | Path, domains: Sequence[str], targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X: runs × domains mixture weights, Y: runs × targets) from a proxy-run CSV."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no proxy runs")
    missing = [c for c in [*domains, *targets] if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    x = np.array([[float(r[d]) for d in domains] for r in rows], dtype=np.float64)
    y = np.array([[float(r[t]) for t in targets] for r in rows], dtype=np.float64)
    return x, y


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr  # lazy: scipy only where this path runs

    return float(spearmanr(a, b).statistic)


def fit_regressor(x: np.ndarray, y: np.ndarray, seed: int = 42) -> Any:
    """RegMix's regressor with scikit-learn instead of LightGBM (not installed here): gradient
    boosting with LR 0.01, up to 1,000 trees, early stopping after 3 rounds without improvement on a
    10% validation split, 31 leaves / 20 samples per leaf (LightGBM's defaults), seed 42.

    ``GradientBoostingRegressor`` rather than the histogram variant: on a few hundred proxy runs
    it is as accurate and, without OpenMP, ~80× faster on a busy machine (1.2 s against 99 s here).
    """
    from sklearn.ensemble import GradientBoostingRegressor  # lazy: scikit-learn only when training

    model = GradientBoostingRegressor(
        learning_rate=0.01,
        n_estimators=1000,
        max_leaf_nodes=31,
        min_samples_leaf=20,
        n_iter_no_change=3,
        validation_fraction=0.1,
        random_state=seed,
    )
    return model.fit(x, y)


@dataclass(frozen=True)
class RegMixFit:
    """The fitted mixture and how well the regressors rank held-out proxy runs."""

    domains: list[str]
    mixture: dict[str, float]
    heldout_spearman: dict[str, float]
    per_target: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def regmix(
    x: np.ndarray,
    y: np.ndarray,
    domains: Sequence[str],
    targets: Sequence[str],
    prior: Mapping[str, float],
    *,
    samples: int = 100_000,
    top: int = 128,
    heldout_fraction: float = 0.1,
    seed: int = 42,
) -> RegMixFit:
    """RegMix (docs/mixing.md#regmix steps 4–5): per target, fit on a shuffled 90% and report Spearman on
    the held-out 10%, refit on all runs, predict ``samples`` draws from ``Dir(q)`` and average the
    ``top`` lowest-predicted; per-target mixtures are averaged."""
    q = np.array([prior.get(d, 0.0) for d in domains], dtype=np.float64)
    q = q / q.sum()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_heldout = max(2, round(len(x) * heldout_fraction))
    test, train = order[:n_heldout], order[n_heldout:]
    candidates = rng.dirichlet(np.maximum(q, 1e-12), samples)
    per_target: dict[str, dict[str, float]] = {}
    rho: dict[str, float] = {}
    for j, target in enumerate(targets):
        held = fit_regressor(x[train], y[train, j], seed)
        rho[target] = spearman(held.predict(x[test]), y[test, j])
        model = fit_regressor(x, y[:, j], seed)
        predicted = model.predict(candidates)
        best = np.argsort(predicted, kind="stable")[:top]
        mean = candidates[best].mean(axis=0)
        per_target[target] = {d: float(w) for d, w in zip(domains, mean, strict=True)}
    averaged = {d: float(np.mean([per_target[t][d] for t in targets])) for d in domains}
    return RegMixFit(list(domains), normalise(averaged), rho, per_target)


def regmix_from_files(
    runs_csv: str | Path,
    prior_path: str | Path,
    targets: Sequence[str],
    *,
    samples: int = 100_000,
    top: int = 128,
    seed: int = 42,
) -> RegMixFit:
    prior = read_prior(prior_path)
    domains = sorted(prior)
    x, y = read_runs(runs_csv, domains, targets)
    return regmix(x, y, domains, targets, prior, samples=samples, top=top, seed=seed)
