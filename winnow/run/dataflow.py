"""Running winnow off this machine: Dataflow (and Flink/Spark through Beam's portable runners).

What this module gives:

* ``check_worker_paths``: before submitting to Dataflow, every path a worker opens (inputs,
  output, refresh state, models, indexes) must be a ``gs://``-style path or package data that
  the worker's install of winnow carries. A laptop path would only fail on the workers, later.
* ``resolve_worker_path``: what a ``DoFn.setup`` calls to turn a model path from the config into
  a local file on the worker: package data (``package:data/models/lid.176.ftz`` or a path
  relative to the installed ``winnow`` package), a local path, or a remote file copied once per
  worker into a local cache.
* ``build_job``: the whole graph with any runner's options, without running it (tests use it
  with ``DataflowRunner --dry_run`` to translate the job offline).
* ``pickled_dofns``: every DoFn of a graph through Beam's pickler, to catch captured state that a
  worker could not unpickle (locks, open files, loaded models) before a job is submitted.
* ``main``: the entry point of the Flex Template launcher image (``deploy/flex-template``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from winnow.beam.construction import memoised_construction
from winnow.config import WinnowConfig, load_config
from winnow.core.causal_lm import SMOLLM2
from winnow.core.models import package_file, resolve_model_path
from winnow.run.execute import STAGING, pipeline_options
from winnow.run.graph import build_pipeline
from winnow.run.registry import select_stages

# Config keys whose string values are files or folders a worker opens.
_PATH_KEYS = ("path", "model", "model_path", "model_dir", "index_dir", "tokenizer", "vocab")
# Values of those keys that name a model winnow builds in or finds in an installed package (embedders,
# featurizers, the optional small causal LM of the `lm` extra), not a file.
_BUILT_IN_MODELS = frozenset({"static", "model2vec", "minilm", "hashed", SMOLLM2})
# Runners whose workers never see the submitting machine's disk.
_ISOLATED_WORKERS = {"DataflowRunner"}


class WorkerPathError(ValueError):
    """A path in the config would not exist on a remote worker."""


def _is_local(path: str) -> bool:
    return "://" not in path


def resolve_worker_path(path: str, cache_dir: str | None = None) -> str:
    """A local file for ``path`` on the machine running this code (see ``resolve_model_path``)."""
    return str(resolve_model_path(path, cache_dir))


def _config_paths(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(yaml path, value) of every string setting that names a file or folder a worker opens."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(item, str) and (key in _PATH_KEYS or key.endswith(("_path", "_dir", "_model"))):
                found.append((path, item))
            else:
                found += _config_paths(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _config_paths(item, f"{prefix}[{index}]")
    return found


def _switched_off(section: Any) -> bool:
    return isinstance(section, dict) and section.get("enabled") is False


def worker_path_problems(config: WinnowConfig, state_dir: str | None = None) -> list[str]:
    """Settings that name a path only this machine has."""
    problems = [
        f"inputs[{i}].paths: {path}" for i, spec in enumerate(config.inputs) for path in spec.paths if _is_local(path)
    ]
    if _is_local(config.output.dir):
        problems.append(f"output.dir: {config.output.dir}")
    if state_dir is not None and _is_local(state_dir):
        problems.append(f"--state: {state_dir}")
    settings = config.model_dump(mode="json", exclude={"inputs", "output", "runner"})
    # A section that is off opens nothing, whatever its (default) paths say.
    settings = {name: section for name, section in settings.items() if not _switched_off(section)}
    for key, value in _config_paths(settings):
        if _is_local(value) and value not in _BUILT_IN_MODELS and package_file(value) is None:
            problems.append(f"{key}: {value}")
    return problems


def check_worker_paths(config: WinnowConfig, options: PipelineOptions, state_dir: str | None = None) -> None:
    """Raise ``WorkerPathError`` when a Dataflow job would name paths its workers cannot open."""
    runner = options.get_all_options().get("runner")
    if runner not in _ISOLATED_WORKERS:
        return  # local runners share this disk; Flink/Spark clusters may mount a shared filesystem
    problems = worker_path_problems(config, state_dir)
    if problems:
        raise WorkerPathError(
            f"{runner} workers cannot open local paths; use gs:// paths (models: gs:// or package data "
            f"such as package:data/models/lid.176.ftz): {'; '.join(problems)}"
        )


def build_job(
    config: WinnowConfig, extra_args: list[str] | None = None, stages: list[str] | None = None
) -> tuple[beam.Pipeline, PipelineOptions]:
    """The run's graph with these runner options, built and not run."""

    options = pipeline_options(config, extra_args)
    staging = FileSystems.join(config.output.dir.rstrip("/"), STAGING)
    with memoised_construction():
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, config, select_stages(config, stages), staging, None)
    return pipeline, options


def pickled_dofns(pipeline: beam.Pipeline) -> dict[str, int]:
    """Every ParDo's DoFn (with its arguments) through Beam's pickler and back: label → pickled bytes.

    Raises whatever the pickler raises for a DoFn holding state a worker could not receive.
    """

    sizes: dict[str, int] = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node: Any) -> None:
            transform = node.transform
            if isinstance(transform, beam.ParDo):
                payload = pickler.dumps(transform.fn)
                pickler.loads(payload)
                sizes[node.full_label] = len(payload)

        def enter_composite_transform(self, node: Any) -> None:
            self.visit_transform(node)

    pipeline.visit(Visitor())
    return sizes


def load_remote_config(path: str) -> WinnowConfig:
    """A config file on any Beam filesystem (a Flex Template gets ``gs://…/config.yaml``).

    Its relative input paths would resolve against a temp dir: a remote config names gs:// inputs.
    """

    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / path.rstrip("/").rsplit("/", 1)[-1]
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            local.write_bytes(handle.read())
        return load_config(local)
