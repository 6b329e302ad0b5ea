"""Token parts written by Beam (blocks, prefix sums, one worker per part) against the single-process
writer, and the checks that stop a broken packed stream from being written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from conftest import collect

from winnow.beam.tokens import (
    WriteTokenParts,
    block_starts,
    dataset_ref,
    document_item,
    finalize_parts,
    sequence_record,
)
from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import FORMATS, Span, document_sequence, encode_texts, write_dataset
from winnow.core.tokens import finalize as core_finalize
from winnow.core.tokens.index import DatasetKey
from winnow.stages.pack.tokens import _AssembleContext, _one_tail

DATA = Path(__file__).resolve().parents[1] / "data"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def record_of(sequence):
    return sequence_record(sequence.id, sequence.tokens, sequence.spans, sequence.order_rank, "")


def finalize_options(target_root: str, tokenizer, target: int) -> dict:
    return {
        "target_root": target_root,
        "tokenizer": tokenizer.describe(),
        "dtype": "uint16",
        "append_eos": True,
        "target_bytes": target,
    }


def test_block_starts_are_prefix_sums_per_dataset_in_block_order():
    a, b = dataset_ref("documents", "x"), dataset_ref("contexts")
    totals = [((a, 2), (5, 50)), ((b, 0), (1, 8)), ((a, 0), (3, 30)), ((a, 1), (0, 0)), ((b, 7), (2, 16))]
    assert block_starts(totals) == {
        (a, 0): (0, 0),
        (a, 1): (3, 30),
        (a, 2): (3, 30),
        (b, 0): (0, 0),
        (b, 7): (1, 8),
    }


@pytest.mark.parametrize("block_size", [1, 4, 1000])
def test_beam_parts_are_the_single_process_writers_bytes(tmp_path, block_size):
    """Shuffled input, blocks of any size: the same files, byte for byte, as ``write_dataset``."""
    docs = [json.loads(line) for line in (DATA / "readers" / "sample.jsonl").open()]
    tokenizer = load_tokenizer()
    streams = encode_texts(tokenizer, [d["text"] for d in docs], append_eos=True, dtype=np.uint16)
    sequences = [
        document_sequence(d["id"], s, order_rank=i, url=d.get("url"), source="c4")
        for i, (d, s) in enumerate(zip(docs, streams, strict=True))
    ]
    target = 3000
    serial = write_dataset(
        tmp_path / "serial", DatasetKey("documents"), sequences, formats=FORMATS, dtype=np.uint16, target_bytes=target
    )
    expected_section = core_finalize(
        tmp_path / "serial", serial, tokenizer=tokenizer.describe(), dtype=np.uint16, append_eos=True,
        target_bytes=target,
    )  # fmt: skip

    items = [(dataset_ref("documents"), s.order_rank // block_size, s.order_rank, record_of(s)) for s in sequences]
    random.Random(7).shuffle(items)
    target_root = str(tmp_path / "beam")
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    pipeline = beam.Pipeline(options=options)
    finalized = (
        pipeline
        | beam.Create(items, reshuffle=False)
        | WriteTokenParts(target_root, FORMATS, np.dtype(np.uint16), target)
        | beam.Map(lambda result: ("part", result))
        | beam.combiners.ToList()
        | beam.FlatMap(finalize_parts, **finalize_options(target_root, tokenizer, target))
    )
    got = collect(finalized, f"tokens-{block_size}")
    pipeline.run().wait_until_finish()
    written = {path: data for path, data in tree(tmp_path / "beam").items() if not path.startswith("_work")}
    assert written == tree(tmp_path / "serial")
    (section,) = [value for kind, value in got if kind == "section"]
    assert {k: v for k, v in section.items() if k not in ("section", "root")} == expected_section
    files = {value["file"]: value["sha256"] for kind, value in got if kind == "file"}
    assert len(files) == len(written) and all(f.startswith("tokens/") for f in files)


def test_document_items_follow_the_data_shard_plan():
    record = {
        "id": "d1", "epoch": 2, "phase": "late", "source": "s", "url": None, "order_rank": 17, "n_tokens": 2,
        "text_hash": 5, "tokens": np.array([4, 5, 0], np.uint16).tobytes(),
    }  # fmt: skip
    plan = {"phase=late": (4, 10, 20)}  # 4 shards over ranks 10..29: rank 17 is in shard 1
    options = {"partition_field": "phase", "ordered": True, "append_eos": False, "dtype": np.dtype(np.uint16)}
    (item,) = document_item(record, plan, **options)
    dataset, block, key, (sequence_id, raw, spans, rank, phase) = item
    assert dataset == ("documents", "late", -1) and block == 1 and key[0] == 17
    assert sequence_id == "d1#epoch=2" and rank == 17 and phase == "late"
    assert np.frombuffer(raw, np.uint16).tolist() == [4, 5]  # no EOS
    assert spans == (("d1", 0, 2, None, "s"),)
    empty = {**record, "tokens": np.array([0], np.uint16).tobytes()}  # an empty text: only its EOS
    assert list(document_item(empty, plan, **options)) == []


def test_a_hole_in_the_packed_stream_is_an_error_not_a_short_context():
    assemble = _AssembleContext(context_tokens=4, shuffled=False, seed=0, dtype=np.uint16)
    piece = np.array([1, 2], np.uint16).tobytes()
    span = ("d", 0, 2, None, None)
    whole = list(assemble.process((3, [(14, "", piece, span, 0), (12, "", piece, span, 0)])))
    assert len(whole) == 1 and whole[0][0] == ("contexts", "", -1)
    with pytest.raises(ValueError, match="missing"):
        list(assemble.process((3, [(12, "", piece, span, 0), (15, "", piece, span, 0)])))
    (tail,) = list(assemble.process((5, [(20, "", piece, span, 0)])))  # a short last context: a note
    note = tail.value[1]
    assert note[0] == "dropped_tail_context" and note[2]["tokens"] == 2
    assert list(_one_tail(("contexts", [tail.value]))) == [tail.value]
    with pytest.raises(ValueError, match="only the last"):
        list(_one_tail(("contexts", [tail.value, tail.value])))


def test_spans_travel_with_their_sequence():
    record = sequence_record("s", np.arange(3, dtype=np.uint16), [Span("a", 0, 1, "u", "src"), Span("b", 5, 7)], 9, "p")
    assert record[2] == (("a", 0, 1, "u", "src"), ("b", 5, 7, None, None))
