"""Run a config end to end: options, graph, execution, then finalise outputs and manifest.

Outputs are written under ``<output>/_staging/`` and moved into place only after the
pipeline succeeded and the accounting invariant held; ``manifest.json`` is written last,
so its presence marks a complete output.
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
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import winnow
from winnow.pipeline.build import SUMMARY_FILE, build_pipeline
from winnow.pipeline.stages import select_stages
from winnow.schemas.config import WinnowConfig
from winnow.schemas.records import SCHEMA_VERSION, document_schema
from winnow.transforms.base import METRICS_NAMESPACE
from winnow.transforms.write import atomic_write_bytes

STAGING = "_staging"
OUTPUT_KINDS = ("data", "removed", "rejected")
MANIFEST = "manifest.json"
LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
_VERSIONED_PACKAGES = ["apache-beam", "pyarrow", "numpy", "pydantic", "xxhash", "zstandard", "fastwarc"]


class AccountingError(RuntimeError):
    """``input == kept + filtered + duplicate + rejected`` did not hold: some record was lost."""


@dataclass
class RunResult:
    manifest: dict[str, Any]
    output_dir: str
    metrics: dict[str, int] = field(default_factory=dict)


def pipeline_options(config: WinnowConfig, extra_args: list[str] | None = None) -> PipelineOptions:
    """Beam options from the config's runner section; CLI arguments come last and win."""
    runner = config.runner
    args = [f"--runner={runner.runner}"]
    extra = list(extra_args or [])
    named_runner = next((a.split("=", 1)[1] for a in extra if a.startswith("--runner=")), None)
    if named_runner is None and "--runner" in extra:
        named_runner = extra[extra.index("--runner") + 1]
    if (named_runner or runner.runner) in LOCAL_RUNNERS:
        workers = runner.direct_num_workers or os.cpu_count() or 1
        args += [f"--direct_num_workers={workers}", f"--direct_running_mode={runner.direct_running_mode}"]
    return PipelineOptions(args + list(runner.options) + extra)


def is_local(options: PipelineOptions) -> bool:
    return options.get_all_options().get("runner") in LOCAL_RUNNERS | {None}


def run_pipeline(
    config: WinnowConfig,
    stages: list[str] | None = None,
    extra_args: list[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``config`` (optionally only ``stages``) and return the finalised manifest."""
    selected = select_stages(config, stages)
    options = pipeline_options(config, extra_args)
    output_dir = config.output.dir.rstrip("/")
    staging = FileSystems.join(output_dir, STAGING)
    _remove_tree(staging)  # leftovers of a crashed run are never reused as complete output
    FileSystems.mkdirs(staging) if not FileSystems.exists(staging) else None
    progress_dir = None
    if is_local(options) and on_progress is not None:
        progress_dir = tempfile.mkdtemp(prefix="winnow-progress-")
        on_progress(progress_dir)
    try:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, config, selected, staging, progress_dir)
        result = pipeline.run()
        result.wait_until_finish()
        metrics = _counters(result)
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
    manifest = finalize(config, [s.name for s in selected], options, output_dir)
    return RunResult(manifest=manifest, output_dir=output_dir, metrics=metrics)


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


def finalize(config: WinnowConfig, stage_names: list[str], options: PipelineOptions, output_dir: str) -> dict[str, Any]:
    """Check the invariant, move staged outputs into place, write the manifest last."""
    staging = FileSystems.join(output_dir, STAGING)
    with FileSystems.open(FileSystems.join(staging, SUMMARY_FILE)) as handle:
        summary = json.loads(handle.read().decode())
    counts = counts_from_summary(summary)
    check_invariant(counts)  # before anything replaces a previous good output

    manifest_path = FileSystems.join(output_dir, MANIFEST)
    if FileSystems.exists(manifest_path):
        FileSystems.delete([manifest_path])  # from here on the old output is no longer complete
    for kind in OUTPUT_KINDS:
        _remove_tree(FileSystems.join(output_dir, kind))
    files = summary["files"]
    for entry in files:
        source = FileSystems.join(staging, entry["file"])
        target = FileSystems.join(output_dir, entry["file"])
        parent = target.rsplit("/", 1)[0]
        if not FileSystems.exists(parent):
            FileSystems.mkdirs(parent)
        FileSystems.rename([source], [target])

    resolved = config.model_dump(mode="json")
    manifest = {
        "winnow_version": winnow.__version__,
        "schema_version": SCHEMA_VERSION,
        "config": resolved,
        "config_hash": config.content_hash(),
        "packages": package_versions(),
        "runner": options.get_all_options().get("runner"),
        "stages": stage_names,
        "columns": document_schema(stage_names).names,
        "ordered": False,
        "shards": {kind: [f for f in files if f["kind"] == kind] for kind in OUTPUT_KINDS},
        "counts": counts,
        "invariant": "input == kept + filtered + duplicate + rejected",
    }
    for kind in OUTPUT_KINDS:
        for entry in manifest["shards"][kind]:
            entry.pop("kind", None)
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    _remove_tree(staging)
    return manifest


def _remove_tree(path: str) -> None:
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    if FileSystems.exists(path):
        FileSystems.delete([path])


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def local_path(path: str) -> Path | None:
    return None if "://" in path else Path(path)
