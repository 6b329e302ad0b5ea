"""``winnow qurating train``: a local QuRater from pairwise judgments or pointwise labels (docs/qurating.md#training).

Mounted into the main CLI as ``app.add_typer(qurating_app, name="qurating")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from winnow.core.tokenizer import load_tokenizer
from winnow.stages.score.qurating import (
    CRITERIA,
    derived_pair_groups,
    excerpt_records,
    iter_jsonl,
    make_featurizer,
    read_judgments,
    train_qurater,
)

qurating_app = typer.Typer(
    no_args_is_help=True, help="QuRating: train a Bradley–Terry QuRater head (local mode) on frozen features."
)
console = Console(stderr=True, soft_wrap=True)


@qurating_app.callback()
def _group() -> None:
    """QuRating (docs/qurating.md): pairwise judgments → Bradley–Terry rater with 4 criteria."""


def report_markdown(report: dict[str, Any], model: Path) -> str:
    """The training report as a short markdown page (the diagnostics the reference trainer prints)."""
    lines = [
        f"# QuRater training report: `{model.name}`",
        "",
        f"- mode: **{report['mode']}**"
        + (" (pairs derived from pointwise labels, not LLM judgments)" if report["mode"] == "derived-pairs" else ""),
        f"- features: `{json.dumps(report['featurizer'], sort_keys=True)}`",
        f"- confidence threshold {report['confidence_threshold']}, label temperature {report['label_temperature']}, "
        f"seed {report['seed']}, L2 {report['l2']}",
        f"- groups: {report['filter']['groups_in']} in training split, {report['train_groups']} kept after the "
        f"filter; {report['validation_groups']} held out; {report['train_pairs']} ordered training pairs",
        f"- BT loss: train {report['train_loss']:.4f}, validation {report.get('validation_loss') or float('nan'):.4f}",
        "",
        "| criterion | accuracy (all) | pairs | accuracy (conf ≥ 50%) | pairs | accuracy (conf ≥ 80%) | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for criterion, buckets in (report.get("validation") or {}).items():
        cells = []
        for key in ("overall", "confidence_ge_50", "confidence_ge_80"):
            accuracy = buckets[key]["accuracy"]
            cells += ["–" if accuracy is None else f"{accuracy:.3f}", str(buckets[key]["pairs"])]
        lines.append(f"| {criterion} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@qurating_app.command()
def train(
    judgments: Annotated[
        Path | None,
        typer.Argument(
            help="JSONL(.gz) of judgment groups: `texts` + `<criterion>_average` k×k matrices.", exists=True
        ),
    ] = None,
    pointwise: Annotated[
        Path | None,
        typer.Option(
            help="Instead of judgments: JSONL(.gz) rows with `id`, `text`, `labels: {criterion: 1|0}` "
            "(derived-pairs bootstrap).",
            exists=True,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Head file to write (.npz).")] = Path("qurater.npz"),
    confidence_threshold: Annotated[
        float, typer.Option(help="Keep a label when |2y − 1| ≥ this (0.5: y ≤ 0.25 or y ≥ 0.75).")
    ] = 0.5,
    label_temperature: Annotated[float, typer.Option(help="y ← σ(logit(y)/T); 1 is off.")] = 1.0,
    encoder: Annotated[
        str, typer.Option(help="Frozen features: hashed (word n-grams), hashed-tokens, static or minilm.")
    ] = "hashed",
    validation: Annotated[float, typer.Option(help="Share of groups held out for validation.")] = 0.1,
    l2: Annotated[float, typer.Option(help="L2 penalty on the head weights.")] = 1e-4,
    max_pairs: Annotated[int, typer.Option(help="Derived pairs per criterion, at most.")] = 4000,
    seed: Annotated[int, typer.Option(help="Seed of the split, excerpts and pairing.")] = 0,
) -> None:
    """Train a local QuRater head and write it with a JSON and a markdown training report."""
    if (judgments is None) == (pointwise is None):
        raise typer.BadParameter("give a judgments file or --pointwise FILE (exactly one)")
    if pointwise is not None:
        records = excerpt_records(iter_jsonl(pointwise), load_tokenizer(), seed)
        groups = derived_pair_groups(records, CRITERIA, seed, max_pairs)
        mode = "derived-pairs"
    else:
        groups = read_judgments(judgments)  # type: ignore[arg-type]
        mode = "judgments"
    console.print(f"{len(groups)} judgment groups ({mode})")
    head, report = train_qurater(
        groups,
        make_featurizer(encoder),
        threshold=confidence_threshold,
        temperature=label_temperature,
        validation=validation,
        seed=seed,
        l2=l2,
        mode=mode,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    head.save(output)
    stem = output.with_suffix("")
    Path(f"{stem}.report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    Path(f"{stem}.report.md").write_text(report_markdown(report, output))
    overall = (report.get("validation") or {}).get("all", {}).get("overall", {}).get("accuracy")
    console.print(f"wrote {output} and {stem}.report.{{json,md}}; validation pairwise accuracy {overall}")
