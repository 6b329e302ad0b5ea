"""Mixture math without Beam (METHODS §6.1, §6.3, §6.5 #3–#4): epoch planning under the cap, the
independence product and its caps, RegMix mixture generation rules, and RegMix on a synthetic
convex-quadratic oracle with a known optimum."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from winnow.core.budget import exact_cut, nearest_cut
from winnow.stages.mix.mixing import (
    WEIGHT_QUANTUM,
    MixtureGeneration,
    cap_and_renormalise,
    generate_mixtures,
    independence_product,
    marginal,
    phase_boundaries,
    plan_domain,
    read_runs,
    regmix,
    regmix_from_files,
    total_variation,
    write_mixtures,
)

PRIOR = {f"d{i}": tokens for i, tokens in enumerate([400, 250, 120, 80, 60, 40, 30, 20])}


def test_plan_meets_demand_from_whole_epochs_then_a_remainder() -> None:
    plan = plan_domain(pool_tokens=1000, demand=2500, max_epochs=4)
    assert (plan.full_epochs, plan.remainder_budget, plan.unmet_tokens, plan.epochs_used) == (2, 500, 0, 3)
    inside = plan_domain(pool_tokens=1000, demand=300, max_epochs=4)
    assert (inside.full_epochs, inside.remainder_budget, inside.epochs_used) == (0, 300, 1)


def test_plan_never_exceeds_the_cap_and_reports_the_rest() -> None:
    plan = plan_domain(pool_tokens=1000, demand=10_500, max_epochs=4)
    assert (plan.full_epochs, plan.remainder_budget, plan.unmet_tokens) == (4, 0, 6500)
    exact = plan_domain(pool_tokens=1000, demand=4000, max_epochs=4)
    assert (exact.full_epochs, exact.remainder_budget, exact.unmet_tokens) == (4, 0, 0)
    empty = plan_domain(pool_tokens=0, demand=70, max_epochs=4)
    assert empty.unmet_tokens == 70 and empty.epochs_used == 0


def test_phase_boundaries_share_overshoot_and_shortfall_in_proportion() -> None:
    assert phase_boundaries([850, 150], 1000) == [850]
    assert phase_boundaries([850, 150], 500) == [425]  # the cap binds: both phases lose the same share
    assert phase_boundaries([850, 100, 50], 1010) == pytest.approx([858.5, 959.5])


def test_nearest_cut_puts_the_boundary_on_the_closest_document_edge() -> None:
    elements = [(900, 0, 100.0), (800, 0, 100.0), (700, 0, 100.0)]  # (key bits, tiebreak, tokens)
    assert nearest_cut(elements, 140).keeps(900, 0) and not nearest_cut(elements, 140).keeps(800, 0)
    assert nearest_cut(elements, 160).keeps(800, 0) and not nearest_cut(elements, 160).keeps(700, 0)
    assert exact_cut([900, 800, 700], [0, 0, 0], [100, 100, 100], 140).keeps(800, 0)  # §0 includes the crossing one
    below = nearest_cut(elements, 40)  # nearer to keeping none of them
    assert not below.keeps(900, 0) and below.keeps(901, 0)


def test_caps_are_met_by_water_filling() -> None:
    weights = {"a": 0.7, "b": 0.2, "c": 0.1}
    capped = cap_and_renormalise(weights, {"a": 0.4, "b": 0.25, "c": 1.0})
    assert capped["a"] == pytest.approx(0.4)
    assert capped["b"] == pytest.approx(0.25)  # one renormalisation would push b over its cap
    assert sum(capped.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cap_and_renormalise(weights, {"a": 0.1, "b": 0.1, "c": 0.1})


def test_independence_product_reproduces_both_marginals() -> None:
    topic = {"Health": 0.5, "Sports": 0.3, "Travel": 0.2}
    form = {"Blog": 0.6, "News": 0.4}
    cells = independence_product([topic, form])
    assert cells["Health|Blog"] == pytest.approx(0.3)
    assert total_variation(marginal(cells, 0), topic) < 1e-12
    assert total_variation(marginal(cells, 1), form) < 1e-12
    # with a pool prior and a 50% selection, cells the pool cannot supply are capped
    prior = {cell: 1.0 for cell in cells} | {"Health|Blog": 0.2}
    capped = independence_product([topic, form], prior, selection_fraction=0.5)
    share = 0.2 / sum(prior.values())
    assert capped["Health|Blog"] == pytest.approx(share / 0.5)
    assert sum(capped.values()) == pytest.approx(1.0)


def test_regmix_generation_obeys_the_epoch_cap_and_the_quantum() -> None:
    domains, mixtures = generate_mixtures(PRIOR, MixtureGeneration.regmix(), seed=3)
    q = np.array([PRIOR[d] for d in domains], dtype=float)
    q /= q.sum()
    assert mixtures.shape == (512, len(PRIOR))
    assert np.all(mixtures <= 15 * q + 1e-12)
    assert np.all((mixtures == 0) | (mixtures >= WEIGHT_QUANTUM - 1e-12))
    units = mixtures / WEIGHT_QUANTUM
    assert np.allclose(units, np.round(units), atol=1e-6)
    assert np.allclose(mixtures.sum(axis=1), 1.0)
    assert len(np.unique(np.round(units).astype(int), axis=0)) == 512
    assert np.any(mixtures == 0)  # small α draws do zero out domains
    again = generate_mixtures(PRIOR, MixtureGeneration.regmix(), seed=3)[1]
    assert np.array_equal(mixtures, again)


def test_weborganizer_generation_keeps_mixtures_apart() -> None:
    domains, mixtures = generate_mixtures(PRIOR, MixtureGeneration.weborganizer(count=64), seed=0)
    q = np.array([PRIOR[d] for d in domains], dtype=float)
    q /= q.sum()
    assert np.all(mixtures <= 20 * q + 1e-12)
    gaps = np.abs(mixtures[:, None, :] - mixtures[None, :, :]).max(axis=2)
    np.fill_diagonal(gaps, 1.0)
    assert gaps.min() >= 0.05


def test_regmix_finds_the_optimum_of_a_quadratic_oracle(tmp_path) -> None:
    """METHODS §6.5 #4: held-out Spearman ≥ 0.9 and TV(found, w*) < 0.15, through the CSV files."""
    domains, mixtures = generate_mixtures(PRIOR, MixtureGeneration.regmix(), seed=0)
    w_star = np.array([0.6, 0.3, 0.1, 0, 0, 0, 0, 0])
    curvature = np.linspace(1.0, 2.0, len(domains))
    losses = (((mixtures - w_star) ** 2) * curvature).sum(axis=1)
    write_mixtures(tmp_path / "mixtures.csv", domains, mixtures)
    with (
        open(tmp_path / "mixtures.csv", encoding="utf-8") as source,
        open(tmp_path / "runs.csv", "w", newline="", encoding="utf-8") as target,
    ):
        rows = list(csv.reader(source))
        writer = csv.writer(target)
        writer.writerow([*rows[0], "pile_cc_loss"])
        for row, loss in zip(rows[1:], losses, strict=True):
            writer.writerow([*row, f"{loss:.6f}"])
    (tmp_path / "prior.json").write_text(
        json.dumps([{"domain": d, "tokens": t, "documents": 1, "weight": 0.0} for d, t in PRIOR.items()])
    )
    fit = regmix_from_files(tmp_path / "runs.csv", tmp_path / "prior.json", ["pile_cc_loss"])
    found = fit.mixture
    target = dict(zip(domains, w_star, strict=True))
    prior_share = {d: t / sum(PRIOR.values()) for d, t in PRIOR.items()}
    assert fit.heldout_spearman["pile_cc_loss"] >= 0.9
    assert total_variation(found, target) < 0.15
    assert total_variation(found, target) < total_variation(prior_share, target)
    assert sum(found.values()) == pytest.approx(1.0)


def test_regmix_averages_the_mixtures_of_several_targets() -> None:
    domains, mixtures = generate_mixtures(PRIOR, MixtureGeneration.regmix(count=128), seed=1)
    first = ((mixtures - np.eye(len(domains))[0]) ** 2).sum(axis=1)
    second = ((mixtures - np.eye(len(domains))[1]) ** 2).sum(axis=1)
    both = regmix(mixtures, np.stack([first, second], axis=1), domains, ["a", "b"], PRIOR, samples=5000)
    for d in domains:
        assert both.mixture[d] == pytest.approx((both.per_target["a"][d] + both.per_target["b"][d]) / 2)
    assert both.per_target["a"]["d0"] > both.per_target["b"]["d0"]
    assert both.per_target["b"]["d1"] > both.per_target["a"]["d1"]


def test_runs_csv_needs_every_domain_and_target(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("run,d0,d1,loss\nr0,0.5,0.5,3.2\nr1,1.0,0.0,3.4\n")
    x, y = read_runs(path, ["d0", "d1"], ["loss"])
    assert x.tolist() == [[0.5, 0.5], [1.0, 0.0]] and y.ravel().tolist() == [3.2, 3.4]
    with pytest.raises(ValueError, match="missing columns"):
        read_runs(path, ["d0", "d2"], ["loss"])


def test_generate_command_writes_the_mixtures_to_train(tmp_path) -> None:
    from typer.testing import CliRunner

    from winnow.cli.mix import mix_app

    (tmp_path / "prior.json").write_text(json.dumps([{"domain": d, "tokens": t} for d, t in PRIOR.items()]))
    result = CliRunner().invoke(
        mix_app,
        ["generate", "--prior", str(tmp_path / "prior.json"), "--output", str(tmp_path / "m.csv"), "--count", "32"],
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "m.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32 and list(rows[0]) == ["run", *sorted(PRIOR)]
    assert all(abs(sum(float(r[d]) for d in PRIOR) - 1) < 1e-9 for r in rows)
