"""The construction memo answers Beam's repeated look-ups without changing what Beam builds."""

from __future__ import annotations

import contextlib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TypeOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import core, ptransform, util
from apache_beam.typehints import decorators

from tests.conftest import make_config
from winnow.beam.construction import memoised_construction
from winnow.run.execute import pipeline_options, select_stages
from winnow.run.graph import build_pipeline

PICKLED = "beam:transform:pickled_python:v1"


class _Step(beam.DoFn):
    def process(self, element: int, offset: int = 1):
        yield element + offset


def _graph(tmp_path: Path, memo: bool) -> beam_runner_api_pb2.Pipeline:
    """The runner-API form of a multi-stage run's graph, built with or without the memo."""
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "one document"}\n')
    config = make_config(
        [str(tmp_path / "in.jsonl")],
        tmp_path / "out",
        filter={"enabled": True},
        dedup={"minhash": {"enabled": True}},
        score={"enabled": True},
    )
    with memoised_construction() if memo else contextlib.nullcontext():
        pipeline = beam.Pipeline(options=pipeline_options(config))
        build_pipeline(pipeline, config, select_stages(config, None), str(tmp_path / "staging"), None)
        proto = pipeline.to_runner_api()
    for transform in proto.components.transforms.values():
        if transform.spec.urn == PICKLED:  # pickles of Beam's own closures differ from build to build
            transform.spec.payload = b""
    return proto


def test_memoised_graph_is_the_graph_beam_builds(tmp_path: Path) -> None:
    plain, memoised = _graph(tmp_path, memo=False), _graph(tmp_path, memo=True)
    assert len(plain.components.transforms) > 100
    assert memoised.SerializeToString(deterministic=True) == plain.SerializeToString(deterministic=True)


def test_signatures_are_memoised_inside_and_beam_restored_after() -> None:
    originals = {module: module.get_signature for module in (decorators, core, ptransform, util)}
    original_view_as = PipelineOptions.view_as
    first, second = _Step(), _Step()
    with memoised_construction():
        assert core.get_signature is decorators.get_signature is not originals[core]
        # Bound methods of two instances share their function's signature, minus self.
        signature = core.get_signature(first.process)
        assert core.get_signature(second.process) is signature
        assert list(signature.parameters) == ["element", "offset"]
        assert signature.parameters["offset"].default == 1
        assert core.get_signature(_Step.process) is not signature  # the function keeps its self
        assert list(core.get_signature(_Step.process).parameters) == ["self", "element", "offset"]
        with memoised_construction():  # nested: the outer memo stays in place
            assert core.get_signature(first.process) is signature
        assert core.get_signature(first.process) is signature
    for module, function in originals.items():
        assert module.get_signature is function
    assert PipelineOptions.view_as is original_view_as
    assert core.get_signature(first.process) is not core.get_signature(second.process)


def test_restored_after_an_error() -> None:
    original = core.get_signature
    with pytest.raises(RuntimeError), memoised_construction():
        raise RuntimeError("build failed")
    assert core.get_signature is original
    assert PipelineOptions.view_as.__qualname__ == "PipelineOptions.view_as"


def test_options_views_are_shared_and_write_through() -> None:
    options = PipelineOptions(["--runner=FnApiRunner", "--type_check_strictness=ALL_REQUIRED"])
    with memoised_construction():
        view = options.view_as(TypeOptions)
        assert options.view_as(TypeOptions) is view
        assert options.view_as(StandardOptions) is not view
        assert view.type_check_strictness == "ALL_REQUIRED"
        view.pipeline_type_check = False  # a view writes through to the options' shared values
        assert options.get_all_options()["pipeline_type_check"] is False
    assert options.view_as(TypeOptions) is not options.view_as(TypeOptions)
