"""``winnow review export``: the sheet human reviewers fill in (docs/pints.md, human review).

Samples a finished run's kept documents per source (and per format), writes them as CSV (the
columns of a decisions file plus what a reviewer reads) and optionally as an HTML page. The
filled-in CSV is then ``review.decisions`` of the next run. Settings default to the run's own
``review.export`` section (from its manifest), then to the options given here.

Mounted into the main CLI as ``app.add_typer(review_app, name="review")``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from winnow.stages.review.config import ReviewExportConfig
from winnow.stages.review.export import review_sample, run_rows, write_sheet_csv, write_sheet_html

review_app = typer.Typer(no_args_is_help=True, help="Human review: export a sheet; decisions go in `review.decisions`.")
console = Console(stderr=True, soft_wrap=True)


@review_app.callback()
def _group() -> None:
    """Human review of a run's output (1.5-Pints): export a stratified sheet, apply decisions in the next run."""


def _run_settings(run_dir: Path) -> tuple[ReviewExportConfig, list[str]]:
    """The run's ``review.export`` settings and input names, from its manifest (defaults without one)."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return ReviewExportConfig(), []
    config: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8")).get("config") or {}
    export = ((config.get("review") or {}).get("export")) or {}
    names = [spec["name"] for spec in config.get("inputs") or [] if spec.get("name")]
    return ReviewExportConfig.model_validate(export), names


@review_app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's output directory (with data/ shards).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV sheet to write.")] = Path("review-sheet.csv"),
    html: Annotated[Path | None, typer.Option(help="Also write the sheet as an HTML page here.")] = None,
    per_source: Annotated[int | None, typer.Option(help="Documents per source (default: the run's setting).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sample (default: the run's setting).")] = None,
    by_format: Annotated[
        bool | None, typer.Option("--by-format/--no-by-format", help="Spread each source over its formats.")
    ] = None,
    removed: Annotated[bool, typer.Option(help="Sample the removed documents instead of the kept ones.")] = False,
) -> None:
    """Write a stratified sample of a run's documents for human review."""
    settings, names = _run_settings(run_dir)
    overrides = {"per_source": per_source, "seed": seed, "by_format": by_format}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        rows = run_rows(run_dir, "removed" if removed else "data")
        sheet = review_sample(rows, settings.per_source, settings.seed, settings.by_format, names, settings.text_chars)
    except FileNotFoundError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    write_sheet_csv(sheet, output)
    if html is not None:
        write_sheet_html(sheet, html, f"winnow review sheet: {run_dir}")
    per = Counter(row["source"] for row in sheet)
    summary = ", ".join(f"{source} {n}" for source, n in sorted(per.items()))
    typer.echo(f"{len(sheet)} documents ({summary}) → {output}" + (f" and {html}" if html else ""))
