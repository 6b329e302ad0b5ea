"""The ``winnow`` command line: run, refresh, config show/validate/reference, and model/mixture tools
(preselect, qurating, dataman, tagger train; mix generate/regmix; order calibrate; traps generate/losses/test)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from winnow.beam.read import InputError
from winnow.cli.dataman import dataman_app
from winnow.cli.mix import mix_app
from winnow.cli.order import order_app
from winnow.cli.preselect import preselect_app
from winnow.cli.qurating import qurating_app
from winnow.cli.reference import config_reference_markdown
from winnow.cli.review import review_app
from winnow.cli.tagger import tagger_app
from winnow.cli.traps import traps_app
from winnow.config import (
    ConfigError,
    WinnowConfig,
    config_to_yaml,
    default_config_path,
    list_presets,
    load_config,
    preset_path,
)
from winnow.core.config import InputSpec
from winnow.run.dataflow import WorkerPathError, check_worker_paths, load_remote_config
from winnow.run.execute import AccountingError, NothingStagedError, is_dry_run, pipeline_options, run_pipeline
from winnow.run.progress import read_progress
from winnow.run.refresh import refresh as refresh_corpus
from winnow.run.registry import PIPELINE_ORDER
from winnow.run.state import StateError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Pretraining-data curation on Apache Beam.")
config_app = typer.Typer(no_args_is_help=True, help="Show, validate and document configs.")
app.add_typer(config_app, name="config")
app.add_typer(preselect_app, name="preselect")
app.add_typer(qurating_app, name="qurating")
app.add_typer(dataman_app, name="dataman")
app.add_typer(tagger_app, name="tagger")
app.add_typer(mix_app, name="mix")
app.add_typer(order_app, name="order")
app.add_typer(review_app, name="review")
app.add_typer(traps_app, name="traps")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def resolve_config(config_file: Path | str | None, inputs: list[str] | None, output: str | None) -> WinnowConfig:
    """The config a run uses: the file (local or gs://…; else the bundled default), then CLI overrides."""
    if config_file is not None and "://" in str(config_file):
        config = load_remote_config(str(config_file))
    else:
        config = load_config(config_file or default_config_path())
    if inputs:
        config.inputs = [InputSpec(paths=[str(Path(p)) if "://" not in p else p for p in inputs])]
    if output:
        config.output.dir = output
    return config


ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="YAML config, local or gs://…, or a preset name (`winnow presets`; default: the sample)."
    ),
]
InputOption = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="Input path or glob (repeatable); replaces the config's inputs."),
]
OutputOption = Annotated[str | None, typer.Option("--output", "-o", help="Output directory.")]
StagesOption = Annotated[
    str | None, typer.Option("--stages", help="Comma-separated stages to run, e.g. normalize,dedup.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
SubmitOnlyOption = Annotated[
    bool,
    typer.Option(
        "--submit-only",
        help="Submit the job and return without waiting or finalising (Flex Templates); finish later "
        "with --finalize-only.",
    ),
]
FinalizeOnlyOption = Annotated[
    bool,
    typer.Option(
        "--finalize-only",
        help="Finalise a submitted job's staged output (check accounting, move shards, write report and "
        "manifest); never starts a pipeline.",
    ),
]


def _launch(
    ctx: typer.Context,
    config_file: Path | None,
    inputs: list[str] | None,
    output: str | None,
    stages: str | None,
    quiet: bool,
    state: str | None,
    start: Any,
) -> Any:
    """What `run` and `refresh` share: resolve the config, check it, run with progress, map errors
    to exit codes (2: bad config/input/state, 3: accounting broken)."""

    try:
        config = resolve_config(config_file, inputs, output)
        only = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
        beam_args = list(ctx.args)
        _preflight(config, beam_args, state_dir=state)
        return _run_with_progress(config, only, beam_args, quiet, start)
    except (ConfigError, InputError, ValueError, StateError, NothingStagedError) as error:
        _fail(str(error))
    except AccountingError as error:
        _fail(str(error), code=3)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    config_file: ConfigOption = None,
    inputs: InputOption = None,
    output: OutputOption = None,
    stages: StagesOption = None,
    quiet: QuietOption = False,
    submit_only: SubmitOnlyOption = False,
    finalize_only: FinalizeOnlyOption = False,
) -> None:
    """Run the pipeline. Unknown options (``--runner DataflowRunner --project …``) go to Beam."""

    def start(cfg: WinnowConfig, only: list[str] | None, args: list[str], on_progress: Any) -> Any:
        return run_pipeline(
            cfg, only, args, on_progress=on_progress, submit_only=submit_only, finalize_only=finalize_only
        )

    result = _launch(ctx, config_file, inputs, output, stages, quiet, None, start)
    if result.submitted_only:
        _print_submitted(result, "winnow run --finalize-only")
        return
    if result.resumed:
        out.print("resumed: the pipeline had finished before an interruption; only finalised its output")
    _print_summary(result.manifest, result.output_dir)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def refresh(
    ctx: typer.Context,
    state: Annotated[str, typer.Option("--state", "-s", help="State directory (local or gs://…).")],
    config_file: ConfigOption = None,
    inputs: InputOption = None,
    output: OutputOption = None,
    stages: StagesOption = None,
    quiet: QuietOption = False,
    submit_only: SubmitOnlyOption = False,
    finalize_only: FinalizeOnlyOption = False,
) -> None:
    """Process only inputs not seen before into the next output version, dedup against all accepted text."""

    def start(cfg: WinnowConfig, only: list[str] | None, args: list[str], on_progress: Any) -> Any:
        return refresh_corpus(
            cfg, state, only, args, on_progress=on_progress, submit_only=submit_only, finalize_only=finalize_only
        )

    result = _launch(ctx, config_file, inputs, output, stages, quiet, state, start)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.version is None:
        versions = len(result.corpus.get("versions", []))
        out.print(
            f"nothing to do: all {result.processed_inputs} input file(s) were processed already "
            f"({versions} version(s) in {result.output_dir}); corpus and state unchanged"
        )
        return
    if result.submitted_only:
        _print_submitted(result.run, f"winnow refresh --state {state} --finalize-only")
        return
    if result.run is not None and result.run.resumed:
        out.print("resumed: the version's pipeline had finished before an interruption; only finalised it")
    version_dir = f"{result.output_dir}/v{result.version:04d}"
    out.print(f"version {result.version}: {len(result.new_inputs)} new input file(s)")
    _print_summary(result.run.manifest, version_dir)
    _print_versions(result.corpus)


def _preflight(config: WinnowConfig, beam_args: list[str], state_dir: str | None) -> None:
    """On a remote runner, every path a worker opens must exist on the worker: fail before submitting."""

    options = pipeline_options(config, beam_args)
    try:
        check_worker_paths(config, options, state_dir)
    except WorkerPathError as error:
        if not is_dry_run(options):
            raise ValueError(str(error)) from None
        console.print(f"[yellow]warning (dry run):[/] {error}", highlight=False)


def _print_submitted(result: Any, finish_command: str) -> None:
    if result.job is not None and getattr(result.job, "proto_pipeline", None) is not None:
        transforms = len(result.job.proto_pipeline.components.transforms)
        out.print(f"dry run: the job was built and translated ({transforms} transforms) but not submitted")
        return
    out.print(
        f"submitted; staged output is in {result.output_dir}/_staging. When the job has finished: {finish_command}"
    )


def _print_versions(corpus: dict[str, Any]) -> None:
    table = Table(title="corpus versions")
    for column in ("version", "input files", "input", "kept", "filtered", "duplicate", "rejected"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for v in corpus["versions"]:
        c = v["counts"]
        table.add_row(
            v["dir"],
            str(v["inputs"]),
            *(f"{c[k]:,}" for k in ("input", "kept", "filtered", "duplicate", "rejected")),
        )
    t = corpus["totals"]
    table.add_row(
        "total", "", *(f"{t[k]:,}" for k in ("input", "kept", "filtered", "duplicate", "rejected")), style="bold"
    )
    out.print(table)


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
    if counts.get("repeats"):
        table.add_row("", "+ repeated rows (epoch ≥ 1, not inputs)", f"{counts['repeats']:,}")
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
    tables = [kind for kind in shards if kind not in ("data", "removed", "rejected")]
    extra = "".join(f", {kind} table in {output_dir}/{kind}" for kind in tables)
    out.print(
        f"{len(shards['data'])} data shard(s) in {output_dir}/data"
        f"{' (ordered)' if manifest.get('ordered') else ''}, removed documents in {output_dir}/removed, "
        f"{counts['rejected']:,} rejected record(s) in {output_dir}/rejected{extra}; "
        f"manifest: {output_dir}/manifest.json"
    )
    out.print("accounting: input == kept + filtered + duplicate + rejected [green]✓[/]")
    local = manifest.get("local_runner")
    if local:
        in_memory = local["mode"] == "in_memory"
        how = "one in-memory process" if in_memory else f"{local['workers']} workers, {local['mode']}"
        out.print(f"local runner: {how} (runner.direct_running_mode, default auto)", highlight=False)


@app.command()
def presets() -> None:
    """List the bundled presets; run one with `winnow run --config <name>`."""
    for name, description in list_presets().items():
        out.print(f"[bold]{name}[/]  {description}  ({preset_path(name)})", highlight=False)


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

    typer.echo(config_reference_markdown())


def main() -> None:
    # Beam's local job service relays every worker's start-up warnings; they are noise to a
    # user. WINNOW_BEAM_LOG=INFO (or WARNING) brings them back.
    logging.getLogger("apache_beam").setLevel(os.environ.get("WINNOW_BEAM_LOG", "ERROR"))
    app()


if __name__ == "__main__":
    main()
