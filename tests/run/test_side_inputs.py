"""No PCollection is both a side input and a main input, in whole pipelines built from several
configs (the rule in ``winnow.beam.cuts``).

Beam 2.77's FnApiRunner takes the first stage holding a transform that outputs a side-input
PCollection as its producer, and a stage reading that PCollection as its main input holds a
``Read`` that outputs it too. When that reader sorts first (set order: it varies between runs),
the side input is committed empty. It made ``select`` keep a whole tied region about one run in
five; this checks the graph instead of hoping a run hits the bad order.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from winnow.beam.cuts import BudgetCuts
from winnow.config import default_config_path, parse_config
from winnow.run.graph import build_pipeline
from winnow.run.refresh import refresh_stages
from winnow.run.registry import select_stages

DEFAULT = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
TRAPS = Path(__file__).resolve().parents[1] / "data" / "traps" / "word_traps.jsonl"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # Sample-with-DataMan and QuRating selection: where, hierarchical balance, gumbel, upsampling;
    # ordering with DD packing (which a mix schedule excludes).
    "select_upsample_dd": {
        "select": {
            "enabled": True,
            "rule": "gumbel_top_k",
            "columns": ["educational_value_average"],
            "weight": "tokens",
            "fraction": 0.2,
            "balance_by": ["source", "application_domain"],
            "where": [{"field": "overall_score", "op": ">=", "value": 4}],
            "upsample": True,
        },
        "mix": {"enabled": False},
        "order": {"enabled": True, "method": "icp", "embedder": "model2vec"},
        "pack": {"mode": "dd"},
    },
    # INGENIOUS on k-means cells, and a review sheet with a source cap (pints-expository's pieces).
    "ingenious_review": {
        "select": {"enabled": True, "rule": "ingenious", "ingenious": {"partitions": {"strategy": "kmeans"}}},
        "mix": {"enabled": False},
        "review": {"decisions": str(Path(__file__).resolve().parents[1] / "data" / "pints" / "review_decisions.csv")},
        "filter": {"by_source": {"default": {"c4": {"enabled": False}}, "web.jsonl.gz": {}}},
    },
    # SALT and Copyright Traps: causal_lm statistics, the band cut, traps planted after mix with the
    # ledger written from the final outputs, and soft labels on the token output's contexts.
    "salt_traps": {
        "score": {"scorers": [{"name": "slm_stats", "backend": "causal_lm", "max_tokens": 256}]},
        "select": {"enabled": True, "rule": "band"},
        "inject": {
            "enabled": True,
            "doc_min_tokens": 1000,
            "n_reps": [1, 10],
            "traps": {"source": "file", "file": str(TRAPS)},
        },
        "output": {"soft_labels": {"enabled": True, "phases": ["final"]}},
    },
    "mix_quality_sort": {
        "select": {"enabled": True, "rule": "uniform", "weight": "tokens", "fraction": 0.5},
        "mix": {"quality": {"column": "preselect_score", "rule": "gumbel_top_k"}},
        "order": {"enabled": True, "method": "sort", "order_by": "preselect_score"},
        "pack": {"mode": "none"},
    },
}


def side_and_main(proto: beam_runner_api_pb2.Pipeline) -> dict[str, tuple[list[str], list[str]]]:
    """PCollections read both as a side input and as a main input: (side readers, main readers)."""
    side: dict[str, list[str]] = {}
    main: dict[str, list[str]] = {}
    for transform in proto.components.transforms.values():
        if transform.subtransforms:
            continue
        tags: set[str] = set()
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            tags = set(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).side_inputs)
        for tag, pcoll in transform.inputs.items():
            (side if tag in tags else main).setdefault(pcoll, []).append(transform.unique_name)
    return {pcoll: (side[pcoll], main[pcoll]) for pcoll in side if pcoll in main}


def built(overrides: dict[str, Any], tmp_path: Path, refresh: bool = False) -> beam_runner_api_pb2.Pipeline:
    data = copy.deepcopy(DEFAULT)
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    config = parse_config(data, origin="test", base_dir=default_config_path().parent)
    stages = select_stages(config)
    if refresh:  # a scheduled re-run: dedup against the accepted hashes of version 1
        accepted = [str(tmp_path / "state" / "hashes" / "v0001" / "part-00000-of-00001.parquet")]
        stages = refresh_stages(config, None, accepted, 2, str(tmp_path / "state" / "_staging" / "v0002"))
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    build_pipeline(pipeline, config, stages, str(tmp_path / "staging"))
    return pipeline.to_runner_api()


@pytest.mark.parametrize("refresh", [False, True], ids=["run", "refresh"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_pcollection_is_both_side_and_main_input(variant: str, refresh: bool, tmp_path: Path):
    proto = built(VARIANTS[variant], tmp_path, refresh)
    labels = {t.unique_name for t in proto.components.transforms.values()}
    assert any("/Cut/Narrow1" in label for label in labels)  # the budget cut is in the graph
    assert side_and_main(proto) == {}


def test_the_check_sees_the_pattern_that_broke():
    """A state read as the next step's main input and as a side input of the histogram pass."""
    pipeline = beam.Pipeline()
    states = pipeline | "States" >> beam.Create([("g", 1)])
    elements = pipeline | "Elements" >> beam.Create([("g", 2)])
    hist = elements | "Hist" >> beam.Map(lambda e, s: e, beam.pvalue.AsDict(states))
    _ = states | "Next" >> beam.Map(lambda s, h: s, beam.pvalue.AsDict(hist))
    found = side_and_main(pipeline.to_runner_api())
    assert [(sorted(s), sorted(m)) for s, m in found.values()] == [(["Hist"], ["Next"])]
    # BudgetCuts alone, as select and mix use it, is clean.
    clean = beam.Pipeline()
    keyed = clean | "Keyed" >> beam.Create([("g", (5, 1, 10)), ("g", (5, 2, 10))])
    starts = clean | "Starts" >> beam.Create([("g", None)])
    _ = (keyed, starts) | BudgetCuts("test")
    assert side_and_main(clean.to_runner_api()) == {}
