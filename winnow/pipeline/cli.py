"""The ``winnow`` command line: run, config show/validate/reference."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from winnow.pipeline.progress import read_progress
from winnow.pipeline.stages import PIPELINE_ORDER
from winnow.schemas.config import (
    ConfigError,
    InputSpec,
    WinnowConfig,
    config_to_yaml,
    default_config_path,
    load_config,
)
from winnow.transforms.io import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Pretraining-data curation on Apache Beam.")
config_app = typer.Typer(no_args_is_help=True, help="Show, validate and document configs.")
app.add_typer(config_app, name="config")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def resolve_config(config_file: Path | None, inputs: list[str] | None, output: str | None) -> WinnowConfig:
    """The config a run uses: the file (or the bundled default), then CLI overrides."""
    config = load_config(config_file or default_config_path())
    if inputs:
        config.inputs = [InputSpec(paths=[str(Path(p)) if "://" not in p else p for p in inputs])]
    if output:
        config.output.dir = output
    return config


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default: bundled sample config).")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Input path or glob (repeatable); replaces the config's inputs."),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output directory.")] = None,
    stages: Annotated[
        str | None, typer.Option("--stages", help="Comma-separated stages to run, e.g. normalize,dedup.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run the pipeline. Unknown options (``--runner DataflowRunner --project …``) go to Beam."""
    from winnow.pipeline.run import AccountingError, run_pipeline

    try:
        config = resolve_config(config_file, inputs, output)
        only = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
        result = _run_with_progress(config, only, list(ctx.args), quiet, run_pipeline)
    except (ConfigError, InputError, ValueError) as error:
        _fail(str(error))
    except AccountingError as error:
        _fail(str(error), code=3)
    _print_summary(result.manifest, result.output_dir)


def _run_with_progress(
    config: WinnowConfig, only: list[str] | None, beam_args: list[str], quiet: bool, runner: Any
) -> Any:
    if quiet or not sys.stderr.isatty():
        return runner(config, only, beam_args, on_progress=None)
    folder: dict[str, str] = {}
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = runner(config, only, beam_args, on_progress=lambda d: folder.setdefault("dir", d))
        except BaseException as error:  # re-raised in the main thread
            outcome["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    thread.start()
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while thread.is_alive():
            counts = read_progress(folder["dir"]) if "dir" in folder else {}
            live.update(_progress_table(counts, time.monotonic() - started))
            thread.join(0.25)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _progress_table(counts: dict[str, int], elapsed: float) -> Table:
    table = Table(title=f"winnow running… {elapsed:,.0f}s", show_header=True)
    table.add_column("step")
    table.add_column("documents out", justify="right")
    order = ["read", *PIPELINE_ORDER]
    for label, count in sorted(counts.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99):
        table.add_row(label, f"{count:,}")
    return table


def _print_summary(manifest: dict[str, Any], output_dir: str) -> None:
    counts = manifest["counts"]
    table = Table(title=f"winnow run → {output_dir}")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("documents", justify="right")
    table.add_row("input", "", f"{counts['input']:,}", style="bold")
    table.add_row("kept", "", f"{counts['kept']:,}", style="green")
    for key, label in (
        ("filtered_by_reason", "filtered"),
        ("duplicate_by_reason", "duplicate"),
        ("rejected_by_stage", "rejected"),
    ):
        total = counts[label]
        table.add_row(label, "", f"{total:,}", style="bold")
        for reason, count in counts[key].items():
            table.add_row("", reason, f"{count:,}")
    out.print(table)
    shards = manifest["shards"]
    out.print(
        f"{len(shards['data'])} data shard(s) in {output_dir}/data, removed documents in {output_dir}/removed, "
        f"{counts['rejected']:,} rejected record(s) in {output_dir}/rejected; manifest: {output_dir}/manifest.json"
    )
    out.print("accounting: input == kept + filtered + duplicate + rejected [green]✓[/]")


@config_app.command("show")
def config_show(
    config_file: Annotated[Path | None, typer.Argument(help="Config to show resolved (default: bundled).")] = None,
) -> None:
    """Print the full config (every key, defaults filled in)."""
    try:
        config = load_config(config_file or default_config_path())
    except ConfigError as error:
        _fail(str(error))
    typer.echo(config_to_yaml(config), nl=False)


@config_app.command("validate")
def config_validate(config_file: Annotated[Path, typer.Argument(help="Config file to check.")]) -> None:
    """Check a config file; errors name the YAML path of the bad key."""
    try:
        load_config(config_file)
    except ConfigError as error:
        _fail(str(error))
    out.print(f"{config_file}: valid")


@config_app.command("reference")
def config_reference() -> None:
    """Print the config reference (Markdown) generated from the pydantic models."""
    from winnow.schemas.reference import config_reference_markdown

    typer.echo(config_reference_markdown())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
