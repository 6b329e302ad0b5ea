"""``winnow mix generate`` / ``winnow mix regmix``: RegMix's two offline steps (docs/mixing.md#regmix).

1. ``generate`` draws the proxy mixtures to train from a prior (the ``mixture`` manifest
   section's ``prior`` records, or any ``[{domain, tokens}]`` JSON list) and writes them as CSV:
   ``run`` plus one weight column per domain.
2. Train one small proxy model per row (outside winnow), add the target loss column(s) to the
   CSV, then ``regmix`` fits the regressors, reports held-out Spearman and writes the mixture;
   paste it into ``mix.weights.manual`` or point ``mix.weights.regmix`` at the same files.

Mounted into the main CLI as ``app.add_typer(mix_app, name="mix")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from winnow.stages.mix.mixing import MixtureGeneration, generate_mixtures, read_prior, regmix_from_files, write_mixtures

mix_app = typer.Typer(no_args_is_help=True, help="Domain mixtures: RegMix proxy mixtures and regression.")
console = Console(stderr=True, soft_wrap=True)


@mix_app.callback()
def _group() -> None:
    """Domain mixtures (docs/mixing.md#regmix): generate proxy mixtures, fit RegMix on their losses."""


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
