"""``winnow dataman train``: DataMan's local mode (docs/dataman.md#the-model-and-its-contract) from a labels file.

Mounted into the main CLI as ``app.add_typer(dataman_app, name="dataman")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from winnow.stages.score.dataman import (
    HEAD_KINDS,
    DataManParseError,
    embed_texts,
    make_encoder,
    read_labels,
    train_local_model,
)

dataman_app = typer.Typer(
    no_args_is_help=True, help="DataMan: train the local 14-criteria + domain rater from DataMan-format labels."
)
console = Console(stderr=True, soft_wrap=True)


@dataman_app.callback()
def _group() -> None:
    """DataMan (docs/dataman.md): 14 quality ratings and 15 application domains per document."""


@dataman_app.command()
def train(
    labels: Annotated[
        Path,
        typer.Argument(
            help="JSONL(.gz): `text` + the 14 ratings (top level or under `dataman`) + `application_domain` "
            "letter, or `text` + `reply` in the 15-line DataMan output format. Missing criteria are allowed.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Model file to write (.npz).")] = Path("dataman-local.npz"),
    encoder: Annotated[
        str, typer.Option(help="Frozen embedding: static (fast), minilm, or a local sentence-transformers dir.")
    ] = "static",
    kind: Annotated[
        str, typer.Option(help="Rating heads: ordinal (5 classes) or regression (rounded by the 2.4 rule).")
    ] = "ordinal",
    holdout: Annotated[float, typer.Option(help="Held-out share for the report (by hash of id and text).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    c: Annotated[float, typer.Option(help="Inverse regularisation strength of the heads.")] = 1.0,
    report: Annotated[Path | None, typer.Option(help="Training report (JSON); default <out>.report.json.")] = None,
) -> None:
    """Train the local DataMan model; the report gives held-out exact agreement and MAE per criterion and
    the domain accuracy, each next to a majority-class baseline."""

    if kind not in HEAD_KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(HEAD_KINDS)}")
    try:
        rows = read_labels(labels)
    except DataManParseError as error:
        console.print(f"[red]bad labels file:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"{len(rows)} labelled documents; embedding with {encoder}")
    embeddings = embed_texts(make_encoder(encoder), [row.text for row in rows])
    try:
        model, summary = train_local_model(
            rows, embeddings, encoder=encoder, kind=kind, c=c, holdout=holdout, seed=seed
        )
    except ValueError as error:
        console.print(f"[red]cannot train:[/red] {error}")
        raise typer.Exit(2) from error
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    report_path = report or out.with_suffix(".report.json")
    report_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    for name, entry in summary["criteria"].items():
        held = entry.get("heldout")
        if held:
            console.print(
                f"{name:28s} exact {held['exact']:.3f} (majority {held['majority_exact']:.3f})  MAE {held['mae']:.3f}"
            )
    if summary["fallback_to_overall"]:
        console.print(f"no own labels, reuse overall_score: {', '.join(summary['fallback_to_overall'])}")
    if summary.get("domain", {}).get("heldout"):
        held = summary["domain"]["heldout"]
        console.print(f"domain accuracy {held['accuracy']:.3f} (majority {held['majority_accuracy']:.3f})")
    console.print(f"wrote {out} and {report_path}")
