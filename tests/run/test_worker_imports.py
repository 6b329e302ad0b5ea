"""A Beam worker imports the module of every step it unpickles; the run's steps must not drag in the
stage registry (every stage's modules) or the run config, which cost each worker process seconds."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from winnow.cli.main import resolve_config
from winnow.run.graph import build_pipeline
from winnow.run.registry import select_stages

UNPICKLE = """
import pickle, sys
from apache_beam.internal import pickler
for payload in pickle.load(sys.stdin.buffer):
    pickler.loads(payload)
print("\\n".join(sorted(m for m in sys.modules if m.startswith("winnow"))))
"""


def _pickled_fns(pipeline: beam.Pipeline) -> list[bytes]:
    payloads = []
    for transform in pipeline.to_runner_api().components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload
        elif transform.spec.urn == common_urns.composites.COMBINE_PER_KEY.urn:
            payload = beam_runner_api_pb2.CombinePayload.FromString(transform.spec.payload).combine_fn.payload
        else:
            continue
        if payload:
            payloads.append(payload)
    return payloads


def test_dedup_run_steps_unpickle_without_registry_or_config(tmp_path: Path) -> None:
    config = resolve_config(None, None, str(tmp_path / "out"))
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    build_pipeline(pipeline, config, select_stages(config, ["dedup"]), str(tmp_path / "staging"), None)
    payloads = _pickled_fns(pipeline)
    assert len(payloads) > 20  # the stage, the writers and the summary are all there
    result = subprocess.run(
        [sys.executable, "-c", UNPICKLE], input=pickle.dumps(payloads), capture_output=True, check=True
    )
    modules = set(result.stdout.decode().split())
    assert "winnow.stages.dedup.near" in modules  # the steps did load
    unwanted = {"winnow.run.registry", "winnow.run.graph", "winnow.config", "winnow.stages.normalize.normalizer"}
    assert not modules & unwanted, sorted(modules & unwanted)
