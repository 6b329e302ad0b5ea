"""``winnow traps generate | losses | test``: Copyright Traps outside a run (docs/copyright-traps.md).

* ``generate`` samples traps with the config's ``inject.traps`` settings and writes them to a file
  that a run reads with ``inject.traps: {source: file, file: …}`` (the same traps, verbatim);
* ``losses`` scores the ledger's traps with a local causal LM into a loss file;
* ``test`` is the membership test: the ledger plus loss files a user computed with the trained
  model (and optionally a reference model), printed as ROC-AUC per length and repetition count.

Mounted into the main CLI as ``app.add_typer(traps_app, name="traps")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
import typer
from rich.console import Console

from winnow.config import ConfigError, load_config
from winnow.core.causal_lm import load_causal_lm
from winnow.stages.inject.config import TrapSourceConfig
from winnow.stages.inject.membership import format_membership, lm_trap_losses, read_table, traps_membership_report
from winnow.stages.inject.traps import generate_traps, trap_file_table

traps_app = typer.Typer(no_args_is_help=True, help="Copyright Traps: generate traps, score them, test membership.")
console = Console(stderr=True, soft_wrap=True)


@traps_app.callback()
def _group() -> None:
    """Copyright Traps (docs/copyright-traps.md): trap files, loss files and the membership test."""


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


@traps_app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Trap file to write (.parquet).")],
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config whose `inject.traps` settings are used.")
    ] = None,
    seq_len: Annotated[list[int] | None, typer.Option(help="Trap lengths in tokens (repeatable).")] = None,
    per_seq_len: Annotated[int | None, typer.Option(help="Traps per length.")] = None,
    max_candidates: Annotated[int | None, typer.Option(help="Stop a length after this many candidates.")] = None,
    model: Annotated[str | None, typer.Option(help="Local causal LM (directory or .gguf).")] = None,
) -> None:
    """Sample traps with a local causal LM, by the reference's acceptance rules, into a file."""
    try:
        settings = load_config(config_file).inject.traps if config_file is not None else TrapSourceConfig()
        overrides = {"source": "generate", "file": None}
        if seq_len:
            overrides["seq_lens"] = list(seq_len)
        for key, value in (("per_seq_len", per_seq_len), ("max_candidates", max_candidates), ("model", model)):
            if value is not None:
                overrides[key] = value
        settings = TrapSourceConfig.model_validate({**settings.model_dump(), **overrides})
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    if out.suffix != ".parquet":
        _fail("--out must be a .parquet file")
    lm = load_causal_lm(settings.model, gguf_file=settings.gguf_file, device=settings.device, threads=settings.threads)
    traps = []
    for length in settings.seq_lens:
        report = generate_traps(lm, length, settings, settings.seed)
        traps += report.traps
        open_note = f", {len(report.open_values)} perplexity values left open" if report.open_values else ""
        console.print(
            f"{length} tokens: {len(report.traps)} traps from {report.candidates} candidates{open_note}",
            highlight=False,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(trap_file_table(traps), out, compression="zstd")
    typer.echo(f"{len(traps)} traps ({lm.describe()}) → {out}")


@traps_app.command()
def losses(
    ledger: Annotated[Path, typer.Option(help="The run's traps/ledger.parquet.")],
    model: Annotated[str, typer.Option(help="Local causal LM (directory or .gguf) to score the traps with.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Loss file to write (.parquet).")],
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside --model when it holds several.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """Per-trap losses (``trap_id, n_tokens, mean_nll, token_logprobs``) of every ledger trap under a local
    causal LM, each text re-tokenised and scored without BOS (the reference's rule)."""
    rows = read_table(ledger).select(["trap_id", "text"]).to_pylist()
    lm = load_causal_lm(model, gguf_file=gguf_file, device=device)
    table = lm_trap_losses(lm, [(row["trap_id"], row["text"]) for row in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    typer.echo(f"{table.num_rows} trap losses ({lm.describe()}) → {out}")


@traps_app.command()
def test(
    ledger: Annotated[Path, typer.Option(help="The run's traps/ledger.parquet.")],
    losses_file: Annotated[
        Path, typer.Option("--losses", help="Losses under the trained (target) model: Parquet or JSONL.")
    ],
    reference: Annotated[
        Path | None, typer.Option(help="Losses under a reference model that never saw the traps (ratio score).")
    ] = None,
    buckets: Annotated[bool, typer.Option(help="Also print each perplexity bucket.")] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% interval.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the table as Parquet.")] = None,
) -> None:
    """ROC-AUC of members against their matched controls per (length, repetitions) cell, for every score
    the inputs allow (ratio, loss, min_k), with a bootstrap interval and the TPR at 1% FPR."""
    for path in (ledger, losses_file, reference):
        if path is not None and not path.is_file():
            _fail(f"file not found: {path}")
    table = traps_membership_report(ledger, losses_file, reference, resamples=resamples, seed=seed)
    typer.echo(format_membership(table, buckets=buckets))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
