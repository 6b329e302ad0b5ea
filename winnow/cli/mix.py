"""``winnow mix generate`` / ``regmix``: RegMix's two offline steps (docs/mixing.md#regmix); ``winnow mix
skillit-graph`` / ``skillit-step``: Skill-it!'s graph from proxy runs and its step mode (docs/skill-it.md).

1. ``generate`` draws the proxy mixtures to train from a prior (the ``mixture`` manifest
   section's ``prior`` records, or any ``[{domain, tokens}]`` JSON list) and writes them as CSV:
   ``run`` plus one weight column per domain.
2. Train one small proxy model per row (outside winnow), add the target loss column(s) to the
   CSV, then ``regmix`` fits the regressors, reports held-out Spearman and writes the mixture;
   paste it into ``mix.weights.manual`` or point ``mix.weights.regmix`` at the same files.

Skill-it: ``skillit-graph`` estimates the skills graph from a proxy-run CSV read like ``regmix``'s;
``skillit-step`` is called by the trainer between rounds with the losses it measured and answers
with the next round's mixture and units to read (state kept in a file, so a step can be re-run).

Mounted into the main CLI as ``app.add_typer(mix_app, name="mix")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from winnow.config import ConfigError, load_config
from winnow.stages.mix.mixing import MixtureGeneration, generate_mixtures, read_prior, regmix_from_files, write_mixtures
from winnow.stages.mix.skillit import estimate_graph, run_skills, save_graph, skillit_step_files

mix_app = typer.Typer(
    no_args_is_help=True, help="Domain mixtures: RegMix proxy mixtures and regression, Skill-it! graph and steps."
)
console = Console(stderr=True, soft_wrap=True)


@mix_app.callback()
def _group() -> None:
    """Domain mixtures: RegMix (generate proxy mixtures, fit on their losses) and Skill-it! (graph, step mode)."""


@mix_app.command()
def generate(
    prior: Annotated[Path, typer.Option(help="Prior JSON list [{domain, tokens, documents, weight}].")],
    output: Annotated[Path, typer.Option(help="CSV to write: run, then one weight column per domain.")],
    count: Annotated[int, typer.Option(help="Mixtures to draw (RegMix: 512).")] = 512,
    variant: Annotated[str, typer.Option(help="`regmix` or `weborganizer` generation rules.")] = "regmix",
    smooth: Annotated[bool, typer.Option(help="RegMix: draw around q^0.5 (for a very skewed prior).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 42,
) -> None:
    """Draw the proxy mixtures to train (Dirichlet around the prior, epoch cap, 2e-4 quantum)."""
    if variant == "regmix":
        rules = MixtureGeneration.regmix(smooth=smooth, count=count)
    elif variant == "weborganizer":
        rules = MixtureGeneration.weborganizer(count=count)
    else:
        raise typer.BadParameter("variant must be `regmix` or `weborganizer`")
    domains, mixtures = generate_mixtures(read_prior(prior), rules, seed=seed)
    write_mixtures(output, domains, mixtures)
    console.print(f"wrote {len(mixtures)} mixtures over {len(domains)} domains to {output}")


@mix_app.command()
def regmix(
    runs: Annotated[Path, typer.Option(help="Proxy-run CSV: one weight column per domain and the target column(s).")],
    prior: Annotated[Path, typer.Option(help="The prior the mixtures were drawn around.")],
    target: Annotated[list[str], typer.Option(help="Loss column(s), lower is better; repeat for several.")],
    output: Annotated[Path | None, typer.Option(help="Write the fit (mixture, Spearman) as JSON here.")] = None,
    samples: Annotated[int, typer.Option(help="Dirichlet draws scored in the search.")] = 100_000,
    top: Annotated[int, typer.Option(help="Best-predicted draws averaged.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the split, regressor and search.")] = 42,
) -> None:
    """Fit RegMix (gradient boosting per target) and print the mixture that minimises predicted loss."""
    fit = regmix_from_files(runs, prior, target, samples=samples, top=top, seed=seed)
    for name, rho in fit.heldout_spearman.items():
        console.print(f"held-out Spearman ({name}): {rho:.3f}")
    text = json.dumps(fit.to_json(), indent=2, sort_keys=True)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {output}")
    typer.echo(json.dumps(fit.mixture, indent=2, sort_keys=True))


@mix_app.command("skillit-graph")
def skillit_graph(
    runs: Annotated[
        Path,
        typer.Option(
            help="Proxy-run CSV in the `regmix --runs` layout: one weight column per skill (the run's training "
            "mixture) and one loss column per evaluation skill."
        ),
    ],
    output: Annotated[Path, typer.Option(help="Graph to write: .json ({train, eval, matrix}) or .csv.")],
    skill: Annotated[
        list[str] | None,
        typer.Option(help="Training skill, in row order (repeat); default: every weight column with a loss column."),
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="Evaluation skill (repeat); default: the training skills.")
    ] = None,
    rule: Annotated[str, typer.Option(help="`linear` (k + 1 runs) or `brute_force` (the pair test).")] = "linear",
    min_gain: Annotated[float, typer.Option(help="brute_force: relative loss gain an edge must exceed.")] = 0.0,
    loss_column: Annotated[str, typer.Option(help="Loss column of an evaluation skill.")] = "loss_{skill}",
    threshold: Annotated[float, typer.Option(help="Edge weight the printed density counts as an edge.")] = 0.01,
) -> None:
    """Estimate a Skill-it! skills graph from proxy runs (docs/skill-it.md); `mix.skillit.graph` reads it."""
    if rule not in ("linear", "brute_force"):
        raise typer.BadParameter("rule must be `linear` or `brute_force`")
    try:
        skills = list(skill) if skill else run_skills(runs, loss_column)
        estimate = estimate_graph(
            runs, skills, rule=rule, loss_column=loss_column, min_gain=min_gain, eval_skills=list(target or []) or None
        )
    except (OSError, ValueError, KeyError) as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    graph = estimate.graph
    save_graph(
        graph,
        output,
        {"rule": rule, "runs": estimate.runs, "groups": estimate.groups, "untested": estimate.untested},
    )
    console.print(f"{estimate.runs} runs in {len(estimate.groups)} training supports; rule {rule}")
    console.print(f"density (edges above {threshold}): {graph.density(threshold):.1%} of cross-skill pairs")
    if estimate.untested:
        console.print(f"{len(estimate.untested)} pair(s) without runs left at 0: {estimate.untested[:10]}")
    console.print(f"wrote {output}")


@mix_app.command("skillit-step")
def skillit_step(
    config_file: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Run config whose `mix.skillit` (mode step) is used; its `seed` seeds the draws."
        ),
    ],
    round_index: Annotated[int, typer.Option("--round", help="The round to draw (0 … rounds − 1).")],
    catalogue: Annotated[
        Path, typer.Option(help="Units to draw from: CSV or JSON lines with unit, skill, tokens (e.g. one per shard).")
    ],
    state: Annotated[Path, typer.Option(help="State file holding the losses posted so far (created at round 0).")],
    output: Annotated[Path, typer.Option(help="JSON to write: the round's weights, η, losses used and shard list.")],
    losses: Annotated[
        Path | None,
        typer.Option(
            help='Checkpoints measured during round t − 1: {skill: loss}, a list of them, or {"checkpoints": [...]}.'
        ),
    ] = None,
) -> None:
    """Skill-it! step mode: post the last round's losses, get the next round's mixture and shard list."""
    try:
        config = load_config(config_file)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    skillit = config.mix.skillit
    if skillit is None or skillit.mode != "step":
        found = "is not set" if skillit is None else f"has mode `{skillit.mode}`"
        console.print(f"[bold red]error:[/] {config_file}: mix.skillit {found}; skillit-step needs mode `step`")
        raise typer.Exit(2)
    try:
        result = skillit_step_files(
            skillit,
            round_index=round_index,
            catalogue=catalogue,
            state=state,
            output=output,
            losses=losses,
            seed=config.seed,
        )
    except (OSError, ValueError, KeyError) as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    unmet = {s: v for s, v in result["unmet_tokens"].items() if v}
    console.print(
        f"round {round_index}: {len(result['shards'])} units, {sum(result['realised_tokens'].values()):,} tokens"
        + (f"; unmet (epoch cap): {unmet}" if unmet else "")
        + f"; wrote {output}"
    )
    typer.echo(json.dumps(result["weights"], indent=2, sort_keys=True))
