"""Run a config end to end: options, graph, execution, then finalise outputs and manifest.

Outputs are written under ``<output>/_staging/`` and moved into place only after the
pipeline succeeded and the accounting invariant held; ``report.html`` and
``DATASET_CARD.md`` come next and ``manifest.json`` is written last, so its presence marks
a complete output.

Resume: before the pipeline starts, ``_staging/_run.json`` records what the run is (config
hash, stages, input files and sizes). The pipeline writes ``_staging/_summary.json`` only
after every shard is written, so a rerun that finds both, matching, and every listed shard
with its recorded SHA-256 (in staging or already moved) skips the pipeline and only
finalises. Anything less is redone from the start; a half-written file is never reused.
The same split lets a job be submitted by one process (a Dataflow Flex Template) and
finalised by another (``finalize_only``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import winnow
from winnow.beam.construction import memoised_construction
from winnow.beam.contract import METRICS_NAMESPACE, StageSpec
from winnow.beam.read import expand_inputs
from winnow.beam.write import atomic_write_bytes
from winnow.config import WinnowConfig
from winnow.core.schemas import SCHEMA_VERSION
from winnow.core.tokenizer import load_tokenizer
from winnow.report.card import dataset_card
from winnow.report.html import render_report
from winnow.run.graph import SUMMARY_FILE, build_pipeline, data_schema
from winnow.run.registry import STAGES, select_stages

STAGING = "_staging"
OUTPUT_KINDS = ("data", "removed", "rejected")
TOKENS = "tokens"
MANIFEST = "manifest.json"
REPORT = "report.html"
CARD = "DATASET_CARD.md"
RUN_FILE = "_run.json"
TIMINGS_FILE = "_timings.json"
_EXECUTION_MSECS = "metric:ptransform_execution_time:total_msecs:v1"
LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
_VERSIONED_PACKAGES = ["apache-beam", "pyarrow", "numpy", "pydantic", "xxhash", "zstandard", "fastwarc"]


class AccountingError(RuntimeError):
    """``input == kept + filtered + duplicate + rejected`` did not hold: some record was lost."""


class NothingStagedError(RuntimeError):
    """``finalize_only`` found no complete staged pipeline output to finalise."""


@dataclass
class RunResult:
    manifest: dict[str, Any]
    output_dir: str
    metrics: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    resumed: bool = False  # the pipeline had finished before a crash; only the finalisation ran
    submitted_only: bool = False  # job built (dry run) or submitted and not waited for; nothing finalised
    job: Any = None


def pipeline_options(
    config: WinnowConfig, extra_args: list[str] | None = None, stages: list[StageSpec] | None = None
) -> PipelineOptions:
    """Beam options from the config's runner section; CLI arguments come last and win.

    ``stages`` (the run's) resolve ``direct_running_mode: auto`` (``local_running_mode``); without
    them, the config's enabled stages do.
    """
    runner = config.runner
    args = [f"--runner={runner.runner}"]
    extra = list(extra_args or [])
    named_runner = _named_option(extra, "runner")
    if (named_runner or runner.runner) in LOCAL_RUNNERS:
        mode = _named_option(extra, "direct_running_mode") or runner.direct_running_mode
        if mode == "auto":
            mode = local_running_mode(config, select_stages(config, None) if stages is None else stages)
        workers = runner.direct_num_workers or (1 if mode == "in_memory" else os.cpu_count() or 1)
        args += [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    return PipelineOptions(args + list(runner.options) + extra)


def _named_option(extra: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` among CLI arguments (the last one wins)."""
    value = None
    for i, arg in enumerate(extra):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(extra):
            value = extra[i + 1]
    return value


def local_running_mode(config: WinnowConfig, stages: list[StageSpec]) -> str:
    """``auto``'s choice: one in-memory process, unless a heavy stage runs on more input than
    ``auto_in_memory_mb`` on a machine with several cores; then a worker process per core.

    One process has no worker start-up (imports, model loads), no transfers between processes and
    no per-worker copies of buffered data; worker processes win once per-document model and rule
    work dominates (README, "What every run pays once").
    """
    if (os.cpu_count() or 1) < 2 or not any(spec.heavy for spec in stages):
        return "in_memory"
    try:
        size = sum(max(f["size"], 0) for f in input_files(config))
    except Exception:  # unlisted inputs fail the run later with their own message; keep the old default
        return "multi_processing"
    return "multi_processing" if size > config.runner.auto_in_memory_mb * 1e6 else "in_memory"


def _local_runner(options: PipelineOptions) -> dict[str, Any]:
    """How a local run ran (the mode ``auto`` chose, or the one given), for the manifest and the CLI."""
    values = options.get_all_options()
    return {"mode": values.get("direct_running_mode"), "workers": values.get("direct_num_workers")}


def is_local(options: PipelineOptions) -> bool:
    return options.get_all_options().get("runner") in LOCAL_RUNNERS | {None}


def input_files(config: WinnowConfig) -> list[dict[str, Any]]:
    """Every input file once, in reading order: path, ``source`` as the reader names it, size, input index."""
    sizes: dict[str, int] = {}
    for spec in config.inputs:
        for pattern in spec.paths:
            for meta in FileSystems.match([pattern])[0].metadata_list:
                sizes[meta.path] = meta.size_in_bytes
    files: dict[str, dict[str, Any]] = {}
    for task in expand_inputs(config.inputs):  # raises InputError for a missing path before anything changes
        if task.path not in files:
            files[task.path] = {
                "path": task.path,
                "source": task.source,
                "size": sizes.get(task.path, -1),
                "input_index": task.input_index,
            }
    return list(files.values())


def run_identity(config: WinnowConfig, stage_names: list[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a staged pipeline output was made from; a resume needs an exact match."""
    return {
        "config_hash": config.content_hash(),
        "stages": stage_names,
        "inputs": [[f["path"], f["size"]] for f in input_files(config)],
        "extra": extra or {},
    }


def run_pipeline(
    config: WinnowConfig,
    stages: list[str] | None = None,
    extra_args: list[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
    *,
    stage_specs: list[StageSpec] | None = None,
    identity_extra: dict[str, Any] | None = None,
    resume: bool = True,
    submit_only: bool = False,
    finalize_only: bool = False,
    card_extra: dict[str, Any] | None = None,
) -> RunResult:
    """Run ``config`` (optionally only ``stages``) and return the finalised manifest.

    ``stage_specs`` replaces the registry's stages (refresh wraps dedup with its cross-version
    join); ``identity_extra`` adds to what a resume must match. ``submit_only`` builds and
    submits the job without waiting or finalising; ``finalize_only`` finalises a staged run
    and never starts a pipeline.
    """
    selected = stage_specs if stage_specs is not None else select_stages(config, stages)
    stage_names = [s.name for s in selected]
    options = pipeline_options(config, extra_args, selected)
    output_dir = config.output.dir.rstrip("/")
    staging = FileSystems.join(output_dir, STAGING)
    if is_dry_run(options):  # build and translate the job only: touch no output (it may be unreachable)
        with memoised_construction():
            pipeline = beam.Pipeline(options=options)
            build_pipeline(pipeline, config, selected, staging, None)
            result = pipeline.run()
        return RunResult({}, output_dir, submitted_only=True, job=getattr(result, "job", None))
    identity = run_identity(config, stage_names, identity_extra)
    resumable = (resume or finalize_only) and staged_run_complete(output_dir, identity)
    if finalize_only and not resumable:
        raise NothingStagedError(
            f"nothing to finalise in {staging}: no complete pipeline output for this config and these inputs "
            "(the job failed, is still running, or was started with other inputs)"
        )
    metrics: dict[str, int] = {}
    if resumable:
        timings = read_json(FileSystems.join(staging, TIMINGS_FILE)) or {}
    else:
        remove_tree(staging)  # leftovers of a crashed run are never reused as complete output
        FileSystems.mkdirs(staging) if not FileSystems.exists(staging) else None
        atomic_write_bytes(FileSystems.join(staging, RUN_FILE), _json_bytes(identity))
        progress_dir = None
        if is_local(options) and on_progress is not None:
            progress_dir = tempfile.mkdtemp(prefix="winnow-progress-")
            on_progress(progress_dir)
        try:
            with memoised_construction():  # the local runners build their bundle processors in run and wait
                pipeline = beam.Pipeline(options=options)
                build_pipeline(pipeline, config, selected, staging, progress_dir)
                result = pipeline.run()
                if submit_only and not is_local(options):
                    return RunResult({}, output_dir, submitted_only=True, job=getattr(result, "job", None))
                result.wait_until_finish()
            metrics = _counters(result)
            timings = stage_timings(result, stage_names)
        finally:
            if progress_dir:
                shutil.rmtree(progress_dir, ignore_errors=True)
        atomic_write_bytes(FileSystems.join(staging, TIMINGS_FILE), _json_bytes(timings))
        if submit_only:
            return RunResult({}, output_dir, metrics=metrics, timings=timings, submitted_only=True)
    manifest = finalize(config, stage_names, options, output_dir, timings=timings, card_extra=card_extra)
    return RunResult(manifest=manifest, output_dir=output_dir, metrics=metrics, timings=timings, resumed=resumable)


def is_dry_run(options: PipelineOptions) -> bool:
    return bool(options.get_all_options().get("dry_run"))


def staged_run_complete(output_dir: str, identity: dict[str, Any]) -> bool:
    """Whether ``<output>/_staging`` holds a finished pipeline output of exactly this run."""
    staging = FileSystems.join(output_dir, STAGING)
    recorded = read_json(FileSystems.join(staging, RUN_FILE))
    summary = read_json(FileSystems.join(staging, SUMMARY_FILE))
    if recorded is None or summary is None or recorded != json.loads(_json_bytes(identity)):
        return False
    for entry in summary.get("files", []):
        candidates = (FileSystems.join(staging, entry["file"]), FileSystems.join(output_dir, entry["file"]))
        if not any(file_sha256(path) == entry["sha256"] for path in candidates):
            return False
    return True


def file_sha256(path: str) -> str | None:
    """SHA-256 of a file on any Beam filesystem, or None when it does not exist."""
    if not FileSystems.exists(path):
        return None
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: str) -> Any:
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return json.loads(handle.read().decode())
    except (OSError, ValueError):
        return None


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def stage_timings(result: Any, stage_names: list[str]) -> dict[str, float]:
    """Seconds of processing per step (read, each stage, write, accounting) where the runner reports them.

    FnApiRunner reports execution time per transform; transforms are grouped by the top-level
    label build_pipeline gives them. Runners without these metrics give an empty dict.
    """
    try:
        counters = result.monitoring_metrics().query()["counters"]
    except Exception:
        return {}
    seconds: dict[str, float] = {}
    for item in counters:
        step = item.key.step
        if item.key.metric.name != _EXECUTION_MSECS or not step:
            continue
        top = step.split("/", 1)[0]
        if top in ("Read", "ProgressRead"):
            label = "read"
        elif top in stage_names or top.removeprefix("Progress_") in stage_names:
            label = top.removeprefix("Progress_")
        elif top.startswith("Write") or top == "RequireText":
            label = "write"
        else:
            label = "accounting"
        value = item.committed if item.committed is not None else item.attempted
        seconds[label] = seconds.get(label, 0.0) + float(value or 0) / 1000.0
    return {key: round(value, 3) for key, value in sorted(seconds.items())}


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except Exception:  # some runners do not report metrics
        return {}
    totals: dict[str, int] = {}
    for item in query["counters"]:
        value = item.committed if item.committed is not None else item.attempted
        totals[item.key.metric.name] = totals.get(item.key.metric.name, 0) + int(value or 0)
    return dict(sorted(totals.items()))


def counts_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``counts``: totals plus per-reason breakdowns, all integers."""
    filtered: dict[str, int] = {}
    duplicate: dict[str, int] = {}
    for item in summary["removed"]:
        target = duplicate if item["kind"] == "duplicate" else filtered
        target[item["reason"]] = target.get(item["reason"], 0) + item["count"]
    rejected = {item["stage"]: item["count"] for item in summary["rejected"]}
    return {
        "input": summary["input"],
        "kept": summary["kept"],
        "repeats": summary.get("repeats", 0),
        "filtered": sum(filtered.values()),
        "duplicate": sum(duplicate.values()),
        "rejected": sum(rejected.values()),
        "filtered_by_reason": dict(sorted(filtered.items())),
        "duplicate_by_reason": dict(sorted(duplicate.items())),
        "rejected_by_stage": dict(sorted(rejected.items())),
    }


def check_invariant(counts: dict[str, Any]) -> None:
    accounted = counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    if counts["input"] != accounted:
        raise AccountingError(
            f"accounting invariant broken: input={counts['input']} but kept+filtered+duplicate+rejected="
            f"{counts['kept']}+{counts['filtered']}+{counts['duplicate']}+{counts['rejected']}={accounted}"
        )


def package_versions() -> dict[str, str]:
    versions = {"winnow": winnow.__version__}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def finalize(
    config: WinnowConfig,
    stage_names: list[str],
    options: PipelineOptions,
    output_dir: str,
    timings: dict[str, float] | None = None,
    card_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the invariant, move staged outputs into place, write report and card, the manifest last.

    Idempotent: a finalisation killed halfway (some shards moved, some still staged) is
    completed by running it again.
    """
    staging = FileSystems.join(output_dir, STAGING)
    with FileSystems.open(FileSystems.join(staging, SUMMARY_FILE)) as handle:
        summary = json.loads(handle.read().decode())
    counts = counts_from_summary(summary)
    check_invariant(counts)  # before anything replaces a previous good output

    manifest_path = FileSystems.join(output_dir, MANIFEST)
    if FileSystems.exists(manifest_path):
        FileSystems.delete([manifest_path])  # from here on the old output is no longer complete
    files = summary["files"]
    sections = dict(summary.get("sections", {}))
    kinds = list(OUTPUT_KINDS) + sorted({entry["kind"] for entry in files} - set(OUTPUT_KINDS))
    wanted = {entry["file"] for entry in files}
    for kind in (k for k in kinds if k != TOKENS):
        for stale in _list_files(FileSystems.join(output_dir, kind)):
            if _relative(stale, kind) not in wanted:
                FileSystems.delete([stale])
    for relative in _list_tree(output_dir, TOKENS):  # token files nest deeper; swept even when none are wanted
        if relative not in wanted:
            FileSystems.delete([FileSystems.join(output_dir, relative)])
    for entry in files:
        source = FileSystems.join(staging, entry["file"])
        target = FileSystems.join(output_dir, entry["file"])
        if not FileSystems.exists(source):
            if FileSystems.exists(target):
                continue  # moved by a finalisation that was interrupted
            raise RuntimeError(f"staged file {source} is missing: rerun without --finalize-only")
        parent = target.rsplit("/", 1)[0]
        if not FileSystems.exists(parent):
            FileSystems.mkdirs(parent)
        if FileSystems.exists(target):
            FileSystems.delete([target])
        FileSystems.rename([source], [target])

    resolved = config.model_dump(mode="json")
    report = config.output.report
    manifest = {
        "winnow_version": winnow.__version__,
        "schema_version": SCHEMA_VERSION,
        "config": resolved,
        "config_hash": config.content_hash(),
        "packages": package_versions(),
        "runner": options.get_all_options().get("runner"),
        **({"local_runner": _local_runner(options)} if is_local(options) else {}),
        "stages": stage_names,
        "columns": data_schema(config, [STAGES[name] for name in stage_names]).names,
        "ordered": "order" in stage_names and config.order.method != "none",
        "tokenizer": _tokenizer_description(config, stage_names),
        "shards": {kind: [f for f in files if f["kind"] == kind] for kind in kinds},
        "counts": counts,
        "selection": sections.pop("selection", []),
        **({"tokens": sections.pop(TOKENS)[0]} if TOKENS in sections else {}),
        **sections,
        "invariant": "input == kept + filtered + duplicate + rejected",
        "report": {"html": REPORT, "card": CARD} if report.enabled else None,
    }
    for kind in kinds:
        for entry in manifest["shards"][kind]:
            entry.pop("kind", None)
    if report.enabled:
        html = render_report(output_dir, manifest, report, timings or {})
        atomic_write_bytes(FileSystems.join(output_dir, REPORT), html.encode())
        card = dataset_card(manifest, config, card_extra)
        atomic_write_bytes(FileSystems.join(output_dir, CARD), card.encode())
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    remove_tree(staging)
    return manifest


def _list_files(directory: str) -> list[str]:
    """Files under ``directory``, one partition level deep (``data/phase=x/part-…``)."""
    if not FileSystems.exists(directory):
        return []
    found = []
    for pattern in ("*.parquet", "*/*.parquet"):
        try:
            found += [m.path for m in FileSystems.match([FileSystems.join(directory, pattern)])[0].metadata_list]
        except Exception:  # an empty directory on some filesystems
            continue
    return sorted(set(found))


def _list_tree(output_dir: str, kind: str) -> list[str]:
    """Every file under ``<output_dir>/<kind>`` at any depth, as ``kind/…`` relative paths."""
    directory = FileSystems.join(output_dir, kind)
    if not FileSystems.exists(directory):
        return []
    try:
        found = [m.path for m in FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list]
    except Exception:  # an empty directory on some filesystems
        return []
    prefix = directory.rstrip("/") + "/"
    return sorted(f"{kind}/{path[len(prefix) :]}" for path in found if path.startswith(prefix))


def _relative(path: str, kind: str) -> str:
    """``kind/[partition/]file`` of an output file path."""
    parts = path.replace("\\", "/").split("/")
    depth = 3 if len(parts) >= 3 and parts[-3] == kind else 2
    return "/".join(parts[-depth:])


def _tokenizer_description(config: WinnowConfig, stage_names: list[str]) -> dict[str, str] | None:
    """Name and hash of the tokenizer behind ``n_tokens`` and token budgets, when a stage used it."""
    if not {"score", "tag", "mix", "order", "select", "review", "inject"} & set(stage_names):  # select/review: counts
        return None

    return load_tokenizer(config.tokenizer.path, config.tokenizer.eos_token).describe()


def remove_tree(path: str) -> None:
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    if FileSystems.exists(path):
        FileSystems.delete([path])
