"""Stage ``mix``: sample the pool to a target domain mixture, per training phase (docs/mixing.md#target-mixtures,
docs/mixing.md#regmix, docs/mixing.md#phases).

The math (targets, epoch planning, RegMix) is in ``winnow.stages.mix.mixing``; this module moves the
data. Steps, each a combiner or a keyed transform (no step holds a domain in one place):

1. Every document gets its domain (``domain_field``: one tag, or ``topic|format`` cells) and token
   count; per-domain token and document totals are a ``CombinePerKey``.
2. A plan is made from those totals on one worker (a few numbers per domain): per phase the budget
   ``B · (end − start)`` and target mixture; per domain ``round(B_p · w_d)`` tokens per phase, and
   how the summed demand is met: whole epochs of the domain, then a remainder in key order, at
   most ``max_epochs`` copies per document, the rest reported as unmet.
3. Key order inside a domain: a quality key (``top_k`` on the score, or z over the whole pool,
   ``z/τ + Gumbel``) or a seeded hash permutation; each domain cell seeds its draws with
   ``seed + H64(domain) mod 2^24`` (docs/mixing.md#target-mixtures). The remainder is the
   docs/budgets.md#the-budget-cut budget cut, found with the
   same ``BudgetCuts`` transform as ``select`` (``winnow.beam.cuts``).
4. Copies (``epoch`` 0, 1, …) are split between phases by a second cut per domain: copies are
   ranked by a per-copy hash and phase ``p`` takes the copies between the cumulative demands of
   the phases before it and its own (scaled to the tokens delivered, so the cut's overshoot or
   the cap's shortfall is shared in proportion; boundaries land on the nearest document edge).
   Every phase gets its tokens to within one document per domain, and no document exceeds
   ``max_epochs`` copies across phases.

Documents with no copy go to ``removed`` as ``mix:not_selected``. ``summary`` holds the
``mixture`` manifest section: the prior ``{domain, tokens, documents, weight}``, and per phase and
domain the pool, target weight, planned, realised and unmet tokens and epochs used.

Two mixtures are computed on the driver before the graph is built, in the stage's ``prepare``
step (``prepare_mix``): RegMix targets are fitted from proxy runs, and a Skill-it! plan
(``mix.skillit``, ``mode: plan``; docs/skill-it.md) turns a skills graph and a proxy's losses into
``T`` equal phases that replace ``schedule``; its rounds (p_t, η_t, the losses used) and graph go
to the ``mixture`` section as ``skillit`` records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from winnow.beam.combiners import MeanStdFn
from winnow.beam.contract import (
    KEPT,
    REJECTED,
    REMOVED,
    Document,
    StageSpec,
    counter,
    field_value,
    rejected,
    removed,
    side_copy,
)
from winnow.beam.cuts import BudgetCuts
from winnow.core.budget import CutPoint, Narrowing, order_bits, selection_key
from winnow.core.config import TokenizerConfig, local_config_file
from winnow.core.hashing import h64, uniform
from winnow.core.tokenizer import load_tokenizer
from winnow.stages.mix.config import MixConfig, MixtureSpec, RegMixTarget
from winnow.stages.mix.mixing import (
    DOMAIN_SEPARATOR,
    DomainPlan,
    RegMixFit,
    independence_product,
    marginal,
    normalise,
    parse_mixture_table,
    phase_boundaries,
    plan_domain,
    prior_records,
    regmix_from_files,
)
from winnow.stages.mix.skillit import SkillGraph, plan_skills, skillit_plan

STAGE = "mix"
SUMMARY = "summary"
SECTION = "mixture"
NOT_SELECTED = "mix:not_selected"
UNTAGGED = "(untagged)"
VALID = "valid"


class MixError(ValueError):
    """A document the stage cannot place (bad token count, missing quality score)."""


# --- per-document values --------------------------------------------------------------------


def doc_domain(doc: Document, fields: list[str]) -> str:
    """The domain cell: the tag values of ``fields`` joined by ``|`` (``(untagged)`` when missing)."""
    values = []
    for name in fields:
        value = field_value(doc, name)
        values.append(UNTAGGED if value is None or value == "" else str(value))
    return DOMAIN_SEPARATOR.join(values)


def doc_tokens(doc: Document, field_name: str) -> int:
    value = doc.get(field_name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise MixError(f"field {field_name!r} is not a token count: {value!r}")
    return int(value)


def doc_metric(doc: Document, config: MixConfig) -> float:
    assert config.quality is not None
    value = doc.get(config.quality.column)
    if value is None:
        raise MixError(f"missing score column {config.quality.column!r}")
    metric = float(value)
    if not math.isfinite(metric):
        raise MixError(f"non-finite score {metric}")
    return metric


def cell_seed(domain: str, seed: int) -> int:
    """Each domain cell's own seed, ``seed + H64(domain) mod 2^24`` (WebOrganizer, docs/mixing.md#target-mixtures)."""
    return seed + h64(domain, "mix:cell", 0) % (1 << 24)


def rank_key(doc: Document, domain: str, config: MixConfig, stats: tuple[float, float] | None, seed: int) -> float:
    """Higher first: the quality key, or a seeded uniform (a hash permutation of the domain)."""
    quality, doc_id, own_seed = config.quality, str(doc["id"]), cell_seed(domain, seed)
    if quality is None:
        return uniform(doc_id, "mix:order", own_seed)
    metric = doc_metric(doc, config)
    if quality.rule == "top_k":
        return metric
    assert stats is not None
    mean, std = stats
    return selection_key(
        metric, doc_id, mean=mean, std=std, temperature=quality.temperature, seed=own_seed, purpose="mix:gumbel"
    )


def tiebreak(doc_id: str, seed: int) -> int:
    return h64(doc_id, "mix:tiebreak", seed)


def copy_id(doc_id: str, epoch: int) -> str:
    return f"{doc_id}\x1e{epoch}"


# --- the plan -----------------------------------------------------------------------------


@dataclass
class MixPlan:
    """Everything the per-document steps need, built once from the per-domain totals."""

    phases: list[str | None]
    budgets: list[float]
    weights: list[dict[str, float]]
    pool_tokens: dict[str, int]
    pool_documents: dict[str, int]
    demands: dict[str, list[float]] = field(default_factory=dict)
    domains: dict[str, DomainPlan] = field(default_factory=dict)

    def copies(self, domain: str, in_remainder: bool) -> int:
        plan = self.domains.get(domain)
        if plan is None:
            return 0
        return plan.full_epochs + (1 if in_remainder and plan.remainder_budget > 0 else 0)


def resolve_mixture(
    spec: MixtureSpec,
    fields: list[str],
    pool_tokens: Mapping[str, int],
    phase_budget: float,
    fitted: Mapping[str, RegMixFit],
    files: Mapping[str, dict[str, float]] | None = None,
) -> dict[str, float]:
    """A phase's target mixture over domain cells, given the pool (for the product's cell caps);
    ``files`` holds the mixture files' weights, read on the driver (``manual_file_weights``)."""
    if spec.manual is not None:
        return normalise(spec.manual)
    if spec.manual_file is not None:
        if files is None or spec.manual_file not in files:
            raise ValueError(f"mixture file {spec.manual_file} was not read before the plan")
        return normalise(files[spec.manual_file])
    if spec.scale is not None:
        return normalise({d: tokens * spec.scale.get(d, 1.0) for d, tokens in pool_tokens.items()})
    if spec.regmix is not None:
        return dict(fitted[_regmix_key(spec.regmix)].mixture)
    assert spec.product is not None
    factors = [
        resolve_mixture(spec.product[name], [name], marginal(pool_tokens, i), phase_budget, fitted, files)
        for i, name in enumerate(fields)
    ]
    pool_total = sum(pool_tokens.values())
    # Past 1 (a budget above the pool) the cap would sum below 1; capping at the prior then allows
    # every cell the same number of epochs.
    fraction = spec.selection_fraction or (min(phase_budget / pool_total, 1.0) if pool_total else None)
    return independence_product(factors, dict(pool_tokens) if pool_total else None, fraction)


def _regmix_key(target: RegMixTarget) -> str:
    return target.model_dump_json()


def _regmix_targets(spec: MixtureSpec) -> Iterator[RegMixTarget]:
    if spec.regmix is not None:
        yield spec.regmix
    for factor in (spec.product or {}).values():
        yield from _regmix_targets(factor)


def build_plan(
    totals: list[tuple[str, tuple[int, int]]],
    config: MixConfig,
    fitted: Mapping[str, RegMixFit],
    files: Mapping[str, dict[str, float]] | None = None,
) -> MixPlan:
    pool_tokens = {domain: tokens for domain, (tokens, _) in totals}
    pool_documents = {domain: docs for domain, (_, docs) in totals}
    total = sum(pool_tokens.values())
    budget = float(config.budget) if config.budget is not None else float(config.fraction or 0.0) * total
    if config.schedule:
        phases: list[tuple[str | None, float, float, MixtureSpec]] = [
            (p.name, p.start_fraction, p.end_fraction, p.weights) for p in config.schedule
        ]
    else:
        assert config.weights is not None
        phases = [(None, 0.0, 1.0, config.weights)]
    budgets = [budget * (end - start) for _, start, end, _ in phases]
    weights = [
        resolve_mixture(spec, config.fields, pool_tokens, phase_budget, fitted, files)
        for (_, _, _, spec), phase_budget in zip(phases, budgets, strict=True)
    ]
    plan = MixPlan([p[0] for p in phases], budgets, weights, pool_tokens, pool_documents)
    domains = sorted(set(pool_tokens).union(*weights))
    for domain in domains:
        demands = [float(round(b * w.get(domain, 0.0))) for b, w in zip(budgets, weights, strict=True)]
        domain_plan = plan_domain(pool_tokens.get(domain, 0), math.fsum(demands), config.max_epochs)
        plan.demands[domain] = demands
        plan.domains[domain] = domain_plan
    return plan


# --- the budget cut over (group, key) pairs ------------------------------------------------------


# --- DoFns --------------------------------------------------------------------------------------


class PrepareDoFn(beam.DoFn):
    """Token counts where missing (the run tokenizer), and dead letters for documents that cannot be placed."""

    def __init__(self, config: MixConfig, tokenizer: TokenizerConfig | None):
        self.config = config
        self.tokenizer_config = tokenizer
        self._tokenizer: Any = None

    def _count(self, text: str) -> int:
        if self._tokenizer is None:
            if self.tokenizer_config is None:
                raise MixError(f"no {self.config.tokens_field!r} and no tokenizer to count it")

            self._tokenizer = load_tokenizer(self.tokenizer_config.path, self.tokenizer_config.eos_token)
        return int(self._tokenizer.count([text])[0])

    def process(self, doc: Document) -> Iterator[Any]:
        try:
            if doc.get(self.config.tokens_field) is None:
                doc = {**doc, self.config.tokens_field: self._count(doc.get("text") or "")}
            doc_tokens(doc, self.config.tokens_field)
            if self.config.quality is not None:
                doc_metric(doc, self.config)
        except (MixError, TypeError, ValueError) as error:
            counter("mix:rejected").inc()
            yield rejected(doc, STAGE, error)
            return
        yield doc


class RankDoFn(beam.DoFn):
    """``(domain, (key bits, tiebreak, tokens))`` for the remainder cut of domains that need one."""

    def __init__(self, config: MixConfig, seed: int):
        self.config = config
        self.seed = seed

    def process(self, doc: Document, plan: MixPlan, stats: tuple[float, float] | None = None) -> Iterator[Any]:
        domain = doc_domain(doc, self.config.fields)
        if plan.domains[domain].remainder_budget <= 0:
            return
        key = rank_key(doc, domain, self.config, stats, self.seed)
        yield domain, (order_bits(key), tiebreak(str(doc["id"]), self.seed), doc_tokens(doc, self.config.tokens_field))


class CopiesDoFn(beam.DoFn):
    """Each document as its copies (``epoch`` 0, 1, …), or removed when the mixture takes none of it."""

    def __init__(self, config: MixConfig, seed: int):
        self.config = config
        self.seed = seed
        self._not_selected = counter(NOT_SELECTED)
        self._repeats = counter("mix:repeats")
        self._selected = counter("mix:selected")

    def process(
        self, doc: Document, plan: MixPlan, cuts: dict[str, CutPoint], stats: tuple[float, float] | None = None
    ) -> Iterator[Any]:
        domain = doc_domain(doc, self.config.fields)
        cut = cuts.get(domain)
        in_remainder = False
        if cut is not None:
            key = rank_key(doc, domain, self.config, stats, self.seed)
            in_remainder = cut.keeps(order_bits(key), tiebreak(str(doc["id"]), self.seed))
        copies = plan.copies(domain, in_remainder)
        if copies == 0:
            self._not_selected.inc()
            yield removed(doc, NOT_SELECTED)
            return
        self._selected.inc()
        self._repeats.inc(copies - 1)
        for epoch in range(copies):
            yield {**doc, "epoch": epoch}


def _phase_elements(doc: Document, plan: MixPlan, config: MixConfig, seed: int) -> Iterator[Any]:
    domain = doc_domain(doc, config.fields)
    element = _phase_element(doc, domain, seed, config)
    for j in range(len(plan.phases) - 1):
        yield (domain, j), element


def _phase_element(doc: Document, domain: str, seed: int, config: MixConfig) -> tuple[int, int, int]:
    key = uniform(copy_id(str(doc["id"]), doc["epoch"]), "mix:phase", cell_seed(domain, seed))
    copy = copy_id(str(doc["id"]), doc["epoch"])
    return order_bits(key), tiebreak(copy, seed), doc_tokens(doc, config.tokens_field)


def _phase_states(delivered: tuple[str, int], plan: MixPlan) -> Iterator[tuple[tuple[str, int], Narrowing]]:
    domain, tokens = delivered
    for j, bound in enumerate(phase_boundaries(plan.demands[domain], tokens)):
        yield (domain, j), Narrowing.start(float(tokens), bound)


def assign_phase(
    doc: Document, plan: MixPlan, config: MixConfig, seed: int, cuts: dict[tuple[str, int], CutPoint] | None = None
) -> Document:
    """The first phase whose cumulative cut keeps the copy (cuts are nested), else the last phase."""
    index = len(plan.phases) - 1
    if cuts is not None:
        domain = doc_domain(doc, config.fields)
        key_bits, tie, _ = _phase_element(doc, domain, seed, config)
        for j in range(len(plan.phases) - 1):
            if cuts[(domain, j)].keeps(key_bits, tie):
                index = j
                break
    return {**doc, "phase": plan.phases[index]}


# --- summary --------------------------------------------------------------------------------------


def summary_records(
    realised: list[tuple[tuple[str | None, str], tuple[int, int]]], plan: MixPlan, fits: dict[str, dict]
) -> Iterator[dict[str, Any]]:
    """The ``mixture`` manifest records; ``realised`` is ((phase, domain), (tokens, epochs)) per pair."""
    tokens_of = {key: tokens for key, (tokens, _) in realised}
    epochs: dict[str, int] = {}
    for (_, domain), (_, used) in realised:
        epochs[domain] = max(epochs.get(domain, 0), used)
    yield {"section": SECTION, "kind": "prior", "prior": prior_records(plan.pool_tokens, plan.pool_documents)}
    for fit in fits.values():
        yield {"section": SECTION, "kind": "regmix", **fit}
    for p, phase in enumerate(plan.phases):
        phase_total = sum(tokens_of.get((phase, d), 0) for d in plan.domains)
        yield {
            "section": SECTION,
            "kind": "phase",
            "phase": phase,
            "budget_tokens": plan.budgets[p],
            "realised_tokens": phase_total,
        }
        for domain, domain_plan in sorted(plan.domains.items()):
            demand = plan.demands[domain][p]
            unmet_share = domain_plan.unmet_tokens / domain_plan.demand if domain_plan.demand else 0.0
            tokens = tokens_of.get((phase, domain), 0)
            yield {
                "section": SECTION,
                "kind": "domain",
                "phase": phase,
                "domain": domain,
                "pool_tokens": plan.pool_tokens.get(domain, 0),
                "pool_documents": plan.pool_documents.get(domain, 0),
                "target_weight": plan.weights[p].get(domain, 0.0),
                "planned_tokens": demand,
                "realised_tokens": tokens,
                "realised_share": tokens / phase_total if phase_total else 0.0,
                "epochs_used": epochs.get(domain, 0),
                "unmet_tokens": demand * unmet_share,
            }


def _tokens_and_epochs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    tokens = epochs = 0
    for t, e in pairs:
        tokens += t
        epochs = max(epochs, e)
    return tokens, epochs


def _pair_sum(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    tokens = docs = 0
    for t, d in pairs:
        tokens += t
        docs += d
    return tokens, docs


def _mixture_specs(config: MixConfig) -> list[MixtureSpec]:
    return [p.weights for p in config.schedule] if config.schedule else [config.weights] if config.weights else []


def _manual_files(spec: MixtureSpec) -> Iterator[str]:
    if spec.manual_file is not None:
        yield spec.manual_file
    for factor in (spec.product or {}).values():
        yield from _manual_files(factor)


def read_config_file(path: str) -> str:
    """A config-named file's text, local, package data or on any Beam filesystem."""
    local = local_config_file(path)
    if local is not None:
        return local.read_text(encoding="utf-8")
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def manual_file_weights(config: MixConfig) -> dict[str, dict[str, float]]:
    """Every ``manual_file`` of the config, read on the driver: {path: {domain: weight}}."""
    paths = sorted({path for spec in _mixture_specs(config) for path in _manual_files(spec)})
    return {path: parse_mixture_table(read_config_file(path), path) for path in paths}


def regmix_keys(config: MixConfig) -> list[str]:
    """The distinct RegMix targets of the config (its weights or every phase's), by key."""
    specs = _mixture_specs(config)
    return sorted({_regmix_key(target) for spec in specs for target in _regmix_targets(spec)})


def fit_regmix_targets(config: MixConfig) -> dict[str, dict[str, RegMixFit]]:
    """The explicit driver-side step before the graph: fit each RegMix target from its proxy runs.

    Returns the transform's keyword arguments (``{"fitted": {key: fit}}``), as ``StageSpec.prepare``.
    """
    specs = _mixture_specs(config)
    fitted: dict[str, RegMixFit] = {}
    for spec in specs:
        for target in _regmix_targets(spec):
            key = _regmix_key(target)
            if key not in fitted:
                fitted[key] = regmix_from_files(
                    target.runs_csv,
                    target.prior,
                    target.targets,
                    samples=target.samples,
                    top=target.top,
                    seed=target.seed,
                )
    return {"fitted": fitted}


def plan_skillit(config: MixConfig) -> dict[str, Any]:
    """``mix.skillit`` with ``mode: plan``: the skills graph and the proxy's loss table → every round's
    mixture → ``T`` equal ``mix.schedule`` phases, plus the budget when ``tokens_per_round`` sets it."""
    skillit = config.skillit
    assert skillit is not None
    if skillit.mode != "plan":
        raise ValueError(
            "mix.skillit.mode: `step` runs between training rounds (`winnow mix skillit-step`), not in a run"
        )
    try:
        plan = skillit_plan(skillit, plan_skills(skillit))
    except (OSError, ValueError, KeyError) as error:
        message = str(error)
        raise ValueError(message if message.startswith("mix.skillit") else f"mix.skillit: {message}") from error
    budget = config.budget
    if budget is None and skillit.tokens_per_round is not None:
        budget = skillit.tokens_per_round * skillit.rounds
    return {**plan, "budget": budget}


def prepare_mix(config: MixConfig) -> dict[str, Any]:
    """The stage's explicit driver-side step before the graph (``StageSpec.prepare``): a Skill-it plan
    (``{"skillit_plan": …}``) or the fitted RegMix targets (``{"fitted": …}``), as transform arguments."""
    if config.skillit is not None:
        return {"skillit_plan": plan_skillit(config)}
    return {**fit_regmix_targets(config), "files": manual_file_weights(config)}


def planned_config(config: MixConfig, plan: dict[str, Any]) -> MixConfig:
    """The section the stage runs: the plan's phases as ``schedule`` (validated like a user's schedule)."""
    data = config.model_dump(exclude={"skillit", "schedule", "weights", "budget"})
    return MixConfig.model_validate({**data, "schedule": plan["schedule"], "budget": plan["budget"]})


def skillit_records(config: MixConfig, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``mixture`` section's Skill-it records: the settings and graph, then one per round."""
    skillit = config.skillit
    assert skillit is not None
    graph = plan["graph"]
    density = SkillGraph(tuple(graph["train"]), tuple(graph["eval"]), np.array(graph["matrix"])).density()
    records: list[dict[str, Any]] = [
        {
            "section": SECTION,
            "kind": "skillit",
            "mode": skillit.mode,
            "rounds": skillit.rounds,
            "eta": skillit.eta,
            "window": skillit.window,
            "graph": graph,
            "graph_density": density,
            "losses": skillit.losses,
        }
    ]
    for phase, mixture in zip(plan["schedule"], plan["rounds"], strict=True):
        records.append({"section": SECTION, "kind": "skillit_round", "phase": phase["name"], **mixture})
    return records


class Mix(beam.PTransform):
    """Stage ``mix`` (see the module docstring); RegMix targets come fitted and a Skill-it plan computed
    by ``prepare_mix``, the driver-side step the run calls before building the graph."""

    def __init__(
        self,
        config: MixConfig,
        seed: int = 0,
        tokenizer: TokenizerConfig | None = None,
        fitted: dict[str, RegMixFit] | None = None,
        skillit_plan: dict[str, Any] | None = None,
        files: dict[str, dict[str, float]] | None = None,
    ):
        super().__init__()
        self.skillit_records: list[dict[str, Any]] = []
        if config.skillit is not None:
            if skillit_plan is None:
                raise ValueError("mix.skillit plan not computed (run prepare_mix first)")
            self.skillit_records = skillit_records(config, skillit_plan)
            config = planned_config(config, skillit_plan)
        self.config = config
        self.seed = seed
        self.tokenizer = tokenizer
        self.fitted = dict(fitted or {})
        # Mixture files are read here, on the driver, once: workers get the weights, not the paths.
        self.files = dict(files) if files is not None else manual_file_weights(config)
        missing = [key for key in regmix_keys(config) if key not in self.fitted]
        if missing:
            raise ValueError(f"RegMix target(s) not fitted (run fit_regmix_targets first): {missing}")

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        config, seed, fitted = self.config, self.seed, self.fitted
        fields, tokens_field = config.fields, config.tokens_field
        prepared = docs | "Prepare" >> beam.ParDo(PrepareDoFn(config, self.tokenizer)).with_outputs(
            REJECTED, main=VALID
        )
        valid = prepared[VALID]
        totals = (
            valid
            | "DomainTokens" >> beam.Map(lambda doc: (doc_domain(doc, fields), (doc_tokens(doc, tokens_field), 1)))
            | "SumDomains" >> beam.CombinePerKey(_pair_sum)
        )
        files = self.files
        plan = totals | "AllDomains" >> beam.combiners.ToList() | "Plan" >> beam.Map(build_plan, config, fitted, files)
        plan_side = pvalue.AsSingleton(side_copy(plan, "PlanSide"))
        stats = None
        if config.quality is not None and config.quality.rule == "gumbel_top_k":
            stats = pvalue.AsSingleton(
                valid | "Metric" >> beam.Map(doc_metric, config) | "MeanStd" >> beam.CombineGlobally(MeanStdFn())
            )
        keyed = valid | "Rank" >> beam.ParDo(RankDoFn(config, seed), plan_side, stats=stats)
        remainder_states = plan | "RemainderStates" >> beam.FlatMap(
            lambda p: [
                (d, Narrowing.start(float(p.pool_tokens.get(d, 0)), dp.remainder_budget))
                for d, dp in sorted(p.domains.items())
                if dp.remainder_budget > 0
            ]
        )
        cuts = (keyed, remainder_states) | "RemainderCut" >> BudgetCuts(STAGE)
        copies = valid | "Copies" >> beam.ParDo(
            CopiesDoFn(config, seed), plan_side, pvalue.AsDict(cuts), stats=stats
        ).with_outputs(REMOVED, main=KEPT)
        if len(config.schedule) > 1:
            delivered = (
                copies[KEPT]
                | "CopyTokens" >> beam.Map(lambda doc: (doc_domain(doc, fields), doc_tokens(doc, tokens_field)))
                | "SumCopies" >> beam.CombinePerKey(sum)
            )
            phase_states = delivered | "PhaseStates" >> beam.FlatMap(_phase_states, plan_side)
            phase_keyed = copies[KEPT] | "PhaseKeys" >> beam.FlatMap(_phase_elements, plan_side, config, seed)
            phase_cuts = pvalue.AsDict((phase_keyed, phase_states) | "PhaseCut" >> BudgetCuts(STAGE, nearest=True))
            kept = copies[KEPT] | "Phase" >> beam.Map(assign_phase, plan_side, config, seed, phase_cuts)
        else:
            kept = copies[KEPT] | "Phase" >> beam.Map(assign_phase, plan_side, config, seed)
        fits = {key: fit.to_json() for key, fit in fitted.items()}
        summary = (
            kept
            | "PhaseDomain"
            >> beam.Map(
                lambda doc: ((doc["phase"], doc_domain(doc, fields)), (doc_tokens(doc, tokens_field), doc["epoch"] + 1))
            )
            | "SumPhaseDomain" >> beam.CombinePerKey(_tokens_and_epochs)
            | "AllPhaseDomains" >> beam.combiners.ToList()
            | "Summary" >> beam.FlatMap(summary_records, plan_side, fits)
        )
        if self.skillit_records:
            planned = docs.pipeline | "SkillitRecords" >> beam.Create(self.skillit_records)
            summary = (summary, planned) | "WithSkillit" >> beam.Flatten()
        return {KEPT: kept, REMOVED: copies[REMOVED], REJECTED: prepared[REJECTED], SUMMARY: summary}


SPEC = StageSpec(
    name=STAGE,
    config=MixConfig,
    transform=Mix,
    # Rows with epoch ≥ 1 repeat a kept document (capped); phase names the shard set of a
    # training-schedule phase.
    columns=(pa.field("epoch", pa.int32()), pa.field("phase", pa.string())),
    needs=("seed", "tokenizer"),
    prepare=prepare_mix,
)
