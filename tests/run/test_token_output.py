"""``output.tokens`` in whole runs, read back with each consumer's own reader.

The default sample run (mix phases with repeats, ICP order, 8,192-token contexts) writes all three
formats; Megatron-Core's ``IndexedDataset``/``GPTDataset``, MosaicML Streaming's ``LocalDataset``/
``StreamingDataset`` (in their own venv, ``tests/mds_reader.py``) and pyarrow read them back, and
every sequence decodes to the text it came from. Smaller runs cover Dataset Decomposition buckets,
an unordered run with a user's ``tokenizer.json`` beyond uint16, byte determinism over worker
counts, and a run killed while writing token parts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import DATA, make_config, run
from mds_reader import read_with_streaming
from megatron.core.datasets.indexed_dataset import IndexedDataset

from winnow.config import default_config_path, parse_config
from winnow.core.tokenizer import load_tokenizer
from winnow.core.tokens import id_bound, megatron_prefixes
from winnow.core.tokens.index import read_index

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "winnow" / "data" / "models" / "tokenizer" / "winnow-bpe-32k.json"
FORMATS = ["megatron", "mds", "parquet"]
pytestmark = pytest.mark.slow


# --- helpers -------------------------------------------------------------------------------------


def megatron_sequences(tokens_root: Path, section: dict[str, Any], dataset: str) -> list[np.ndarray]:
    """Every sequence of a Megatron dataset, parts in order, through Megatron-Core's IndexedDataset."""
    out = []
    for prefix in megatron_prefixes(section, dataset):
        indexed = IndexedDataset(str(tokens_root / prefix))
        out += [np.array(indexed[i]) for i in range(len(indexed))]  # copies: the files get unmapped
        assert list(indexed.document_indices) == list(range(len(indexed) + 1))
    return out


def data_rows(out: Path, phase: str | None = None) -> list[dict[str, Any]]:
    """Kept rows as ``data/`` holds them: shards in name order, rows in order."""
    folder = out / "data" / f"phase={phase}" if phase else out / "data"
    return [row for path in sorted(folder.glob("part-*.parquet")) for row in pq.read_table(path).to_pylist()]


def sequence_id(row: dict[str, Any]) -> str:
    return row["id"] if not row.get("epoch") else f"{row['id']}#epoch={row['epoch']}"


def index_rows(tokens_root: Path, file_prefix: str) -> list[dict[str, Any]]:
    return [r for r in read_index(tokens_root).to_pylist() if r["file"].startswith(file_prefix + "/")]


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def small_input(tmp: Path, n: int = 300) -> Path:
    """The first ``n`` documents of tests/data/text/english.jsonl.gz (real news, books and web text)."""
    with gzip.open(DATA / "text" / "english.jsonl.gz", "rt", encoding="utf-8") as handle:
        lines = [line for _, line in zip(range(n), handle, strict=False)]
    path = tmp / f"english-{n}.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


class MinimalTokenizer:
    """The attributes Megatron's GPTDataset reads from a tokenizer."""

    def __init__(self, tokenizer: Any):
        self.eod = tokenizer.eos_id
        self.pad = 1
        self.vocab_size = id_bound(tokenizer)
        self.unique_identifiers = {"class": "winnow-test"}


def gpt_dataset(prefixes: list[str], sequence_length: int, tokenizer: Any, cache: Path, samples: int):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=sequence_length,
        blend=(prefixes, None),  # `--data-path p0 p1 …`: every part once, blended by size
        split="1,0,0",
        path_to_cache=str(cache),
        tokenizer=MinimalTokenizer(tokenizer),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        add_extra_token_to_sequence=False,  # a context is exactly one sample
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, None, None], lambda: True, config).build()
    return train


# --- the default sample run, all three formats -----------------------------------------------------


@pytest.fixture(scope="module")
def default_run(default_sample_run, tmp_path_factory) -> dict[str, Any]:
    """The default run (which writes every token format) of conftest, read back."""
    assert default_sample_run.returncode == 0, default_sample_run.stderr[-3000:]
    tmp = tmp_path_factory.mktemp("default-tokens")
    out = default_sample_run.out
    config = parse_config(
        yaml.safe_load(default_config_path().read_text(encoding="utf-8")),
        origin="test",
        base_dir=default_config_path().parent,
    )
    assert config.output.tokens.formats == FORMATS
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    section = manifest["tokens"]
    folders = {
        f"{kind}/phase={phase}": out / "tokens" / "mds" / kind / f"phase={phase}"
        for kind in ("documents", "contexts")
        for phase in ("base", "final")
    }
    got = read_with_streaming({"read": [str(f) for f in folders.values()]}, tmp / "streaming")
    return {
        "tmp": tmp,
        "out": out,
        "manifest": manifest,
        "section": section,
        "config": config,
        "tokenizer": load_tokenizer(config.tokenizer.path, config.tokenizer.eos_token),
        "mds": {name: got["read"][str(folder)] for name, folder in folders.items()},
        "mds_streamed": {name: got["streamed"][str(folder)] for name, folder in folders.items()},
    }


def test_default_run_writes_every_format_per_phase_and_lists_every_file(default_run):
    out, manifest, section = default_run["out"], default_run["manifest"], default_run["section"]
    expected = {
        f"{fmt}/{kind}/phase={p}" for fmt in FORMATS for kind in ("documents", "contexts") for p in ("base", "final")
    }
    assert set(section["datasets"]) == expected
    assert section["dtype"] == "uint16" and section["root"] == "tokens"
    assert section["tokenizer"] == manifest["tokenizer"]
    # Every file under tokens/ is in the manifest with its real hash, and nothing else is there.
    on_disk = {f"tokens/{path}": hashlib.sha256(data).hexdigest() for path, data in tree(out / "tokens").items()}
    assert on_disk == {entry["file"]: entry["sha256"] for entry in manifest["shards"]["tokens"]}
    assert any(path.endswith("/index.json") for path in on_disk)
    assert not (out / "_staging").exists()
    # Phases never share a file: each dataset's files sit in its own phase folder.
    for name, entry in section["datasets"].items():
        assert all(f["path"].startswith(name + "/") for f in entry["files"])


def test_documents_follow_the_data_order_and_decode_to_their_text(default_run):
    out, section, tokenizer = default_run["out"], default_run["section"], default_run["tokenizer"]
    counts = default_run["manifest"]["counts"]
    total_rows = 0
    for phase in ("base", "final"):
        rows = data_rows(out, phase)
        sequences = megatron_sequences(out / "tokens", section, f"documents/phase={phase}")
        assert len(sequences) == len(rows) > 0
        for row, tokens in zip(rows, sequences, strict=True):
            assert tokens.dtype == np.uint16 and int(tokens[-1]) == tokenizer.eos_id
            assert tokenizer.decode(tokens[:-1].tolist()) == row["text"]
            assert tokens.shape[0] == row["n_tokens"] + 1
        ranks = [row["order_rank"] for row in rows]
        assert ranks == sorted(ranks)  # ICP order
        index = index_rows(out / "tokens", f"documents/phase={phase}")
        assert [r["sequence_id"] for r in index] == [sequence_id(row) for row in rows]
        assert [r["order_rank"] for r in index] == ranks
        # Token counts: the manifest's n_tokens plus one EOS per row, in every format.
        n_tokens = sum(row["n_tokens"] for row in rows) + len(rows)
        assert sum(t.shape[0] for t in sequences) == n_tokens
        for fmt in FORMATS:
            entry = section["datasets"][f"{fmt}/documents/phase={phase}"]
            assert entry["tokens"] == n_tokens and entry["sequences"] == len(rows)
        total_rows += len(rows)
    assert total_rows == counts["kept"] + counts["repeats"] and counts["repeats"] > 0  # repeats included


def test_streaming_and_parquet_hold_the_same_sequences(default_run):
    out, section = default_run["out"], default_run["section"]
    for name, samples in default_run["mds"].items():
        megatron = megatron_sequences(out / "tokens", section, name)
        assert [s["tokens"] for s in samples] == [t.tolist() for t in megatron]
        assert {s["dtype"] for s in samples} == {"uint16"}
        assert default_run["mds_streamed"][name] == [s["id"] for s in samples]  # StreamingDataset, sha256 checked
        table = pq.read_table(out / "tokens" / "parquet" / name)
        assert table.column("id").to_pylist() == [s["id"] for s in samples]
        assert table.column("tokens").to_pylist() == [s["tokens"] for s in samples]


def test_contexts_rebuild_the_packed_stream_token_for_token(default_run):
    out, section, manifest = default_run["out"], default_run["section"], default_run["manifest"]
    length = default_run["config"].pack.context_tokens
    packing = {record["phase"]: record for record in manifest["packing"]}
    positions = {row["context_id"]: row["position"] for row in data_rows_of(out / "contexts")}
    for phase in ("base", "final"):
        rows = data_rows(out, phase)  # rank order: the stream is their ids + EOS, end to end
        stream = np.concatenate(
            megatron_sequences(out / "tokens", section, f"documents/phase={phase}")
        )  # already checked to decode to the rows
        contexts = megatron_sequences(out / "tokens", section, f"contexts/phase={phase}")
        ids = [
            r["sequence_id"] for r in index_rows(out / "tokens", f"contexts/phase={phase}") if r["seq_token_start"] == 0
        ]
        context_ids = [int(i.removeprefix("context-")) for i in ids]
        assert len(context_ids) == len(contexts) and all(c.shape[0] == length for c in contexts)
        # Training order: ascending seeded position, as the contexts table says.
        assert [positions[c] for c in context_ids] == sorted(positions[c] for c in context_ids)
        by_id = dict(zip(context_ids, contexts, strict=True))
        first = min(by_id)
        assert sorted(by_id) == list(range(first, first + len(by_id)))
        rebuilt = np.concatenate([by_id[c] for c in sorted(by_id)])
        assert np.array_equal(rebuilt, stream[: rebuilt.shape[0]])
        (tail,) = section["datasets"][f"megatron/contexts/phase={phase}"]["dropped_tail_context"]
        assert tail["tokens"] == stream.shape[0] - rebuilt.shape[0] < length
        assert tail["context_id"] == first + len(by_id)
        entry = section["datasets"][f"megatron/contexts/phase={phase}"]
        assert entry["tokens"] + tail["tokens"] == packing[phase]["tokens"] == stream.shape[0]
        assert len(rows) == packing[phase]["documents"]


def data_rows_of(folder: Path) -> list[dict[str, Any]]:
    return [row for path in sorted(folder.rglob("part-*.parquet")) for row in pq.read_table(path).to_pylist()]


def test_megatron_gpt_dataset_serves_each_context_whole(default_run, tmp_path):
    out, section, tokenizer = default_run["out"], default_run["section"], default_run["tokenizer"]
    length = default_run["config"].pack.context_tokens
    dataset = "contexts/phase=base"
    prefixes = [str(out / "tokens" / p) for p in megatron_prefixes(section, dataset)]
    contexts = megatron_sequences(out / "tokens", section, dataset)
    train = gpt_dataset(prefixes, length, tokenizer, tmp_path / "cache", len(contexts))
    assert len(train) == len(contexts)
    served = sorted(train[i]["tokens"].numpy().astype(np.uint16).tobytes() for i in range(len(train)))
    assert served == sorted(c.tobytes() for c in contexts)


def test_the_index_traces_every_token_to_its_document(default_run):
    out, section, tokenizer = default_run["out"], default_run["section"], default_run["tokenizer"]
    texts = {row["id"]: row["text"] for phase in ("base", "final") for row in data_rows(out, phase)}
    streams = {doc_id: [*tokenizer.encode([text])[0], tokenizer.eos_id] for doc_id, text in texts.items()}
    files: dict[str, list[np.ndarray]] = {}
    rows = read_index(out / "tokens").to_pylist()
    assert len(rows) == section["index"]["rows"]
    for row in rows:
        if row["file"] not in files:
            files[row["file"]] = megatron_part(out / "tokens" / "megatron" / row["file"])
        piece = files[row["file"]][row["position"]][row["seq_token_start"] : row["seq_token_end"]]
        assert piece.tolist() == streams[row["doc_id"]][row["doc_token_start"] : row["doc_token_end"]]
    assert {r["phase"] for r in rows} == {"base", "final"}


def megatron_part(prefix: Path) -> list[np.ndarray]:
    indexed = IndexedDataset(str(prefix))
    return [np.array(indexed[i]) for i in range(len(indexed))]


# --- smaller runs ----------------------------------------------------------------------------------


def test_dd_buckets_hold_exactly_two_to_the_i_tokens(tmp_path):
    config = make_config(
        [str(small_input(tmp_path))],
        tmp_path / "out",
        order={"enabled": True, "method": "none"},
        pack={"mode": "dd", "i_min": 4, "i_max": 8, "target_token": False, "shard_tokens_log2": 12},
        output={"tokens": {"formats": ["megatron", "mds"], "target_bytes": 4096}},
    )
    result = run(config)
    out, section = tmp_path / "out", result.manifest["tokens"]
    (packing,) = result.manifest["packing"]
    pieces = data_rows_of(out / "dd")
    buckets = [int(b) for b, info in packing["buckets"].items() if info["sequences"]]
    assert len(buckets) == 5
    got = read_with_streaming(
        {"read": [str(out / "tokens" / "mds" / "dd" / f"bucket={b}") for b in buckets]}, tmp_path / "streaming"
    )
    for bucket in buckets:
        rows = sorted((p for p in pieces if p["bucket"] == bucket), key=lambda p: (p["shard"], p["shard_position"]))
        sequences = megatron_sequences(out / "tokens", section, f"dd/bucket={bucket}")
        assert len(sequences) == len(rows) == packing["buckets"][str(bucket)]["sequences"] > 0
        assert {s.shape[0] for s in sequences} == {2**bucket}
        assert [s.tolist() for s in sequences] == [r["tokens"] for r in rows]
        mds = got["read"][str(out / "tokens" / "mds" / "dd" / f"bucket={bucket}")]
        assert [s["tokens"] for s in mds] == [r["tokens"] for r in rows]
        entry = section["datasets"][f"megatron/dd/bucket={bucket}"]
        assert entry["tokens"] == packing["buckets"][str(bucket)]["tokens"]
        assert len([f for f in entry["files"] if f["path"].endswith(".bin")]) > 1  # several parts
    tokenizer = load_tokenizer()
    texts = {row["id"]: row["text"] for row in data_rows(out)}
    parts: dict[str, list[np.ndarray]] = {}
    for row in index_rows(out / "tokens", "dd"):  # provenance: each piece is a slice of its document
        stream = [*tokenizer.encode([texts[row["doc_id"]]])[0], tokenizer.eos_id]
        if row["file"] not in parts:
            parts[row["file"]] = megatron_part(out / "tokens" / "megatron" / row["file"])
        piece = parts[row["file"]][row["position"]]
        assert piece.tolist() == stream[row["doc_token_start"] : row["doc_token_end"]]


def big_vocab_tokenizer(tmp: Path) -> Path:
    """A user's tokenizer.json with ids past 65,535 (the bundled BPE, every id moved up by 100,000)."""
    spec = json.loads(BUNDLED.read_text())
    spec["model"]["vocab"] = {token: i + 100_000 for token, i in spec["model"]["vocab"].items()}
    for token in spec["added_tokens"]:
        token["id"] += 100_000
    path = tmp / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return path


def test_unordered_run_with_a_users_tokenizer_json_and_no_eos(tmp_path):
    path = big_vocab_tokenizer(tmp_path)
    config = make_config(
        [str(small_input(tmp_path, 200))],
        tmp_path / "out",
        tokenizer={"path": str(path)},
        output={
            "shards": {"target_bytes": 20_000},
            "tokens": {"formats": ["megatron", "parquet"], "append_eos": False, "target_bytes": 50_000},
        },
    )
    result = run(config)
    out, section = tmp_path / "out", result.manifest["tokens"]
    assert section["dtype"] == "uint32" and section["append_eos"] is False
    assert section["datasets"]["megatron/documents"]["dtype"] == "int32"  # Megatron-Core has no uint32 code
    assert section["datasets"]["parquet/documents"]["dtype"] == "uint32"
    assert set(section["datasets"]) == {"megatron/documents", "parquet/documents"}  # no order, no pack
    tokenizer = load_tokenizer(str(path))
    rows = data_rows(out)
    assert len(list((out / "data").glob("part-*.parquet"))) > 1
    sequences = megatron_sequences(out / "tokens", section, "documents")
    assert len(sequences) == len(rows) == result.manifest["counts"]["kept"]
    for row, tokens in zip(rows, sequences, strict=True):  # the data shards' own (hash) order
        assert int(tokens.min()) >= 100_000
        assert tokenizer.decode(tokens.tolist()) == row["text"]  # no EOS
    parquet = [r for p in megatron_prefixes(section, "documents") for r in parquet_rows(out, p)]
    assert [r["id"] for r in parquet] == [row["id"] for row in rows]
    schema = pq.read_schema(out / "tokens" / "parquet" / "documents" / "part-00000.parquet")
    assert str(schema.field("tokens").type.value_type) == "uint32"

    # Rerun into the same folder with one part per dataset: the old parts are swept away.
    many = set(tree(out / "tokens"))
    config.output.tokens.target_bytes = 10**9
    rerun = run(config)
    listed = {entry["file"].removeprefix("tokens/") for entry in rerun.manifest["shards"]["tokens"]}
    assert set(tree(out / "tokens")) == listed
    assert len(listed) < len(many)


def parquet_rows(out: Path, megatron_prefix: str) -> list[dict[str, Any]]:
    path = out / "tokens" / "parquet" / (megatron_prefix.removeprefix("megatron/") + ".parquet")
    return pq.read_table(path).to_pylist()


def small_ordered_config(tmp: Path, out: Path, **runner: Any):
    return make_config(
        [str(small_input(tmp))],
        out,
        order={"enabled": True, "method": "none"},
        pack={"context_tokens": 512},
        output={"tokens": {"formats": FORMATS, "target_bytes": 30_000}},
        **({"runner": runner} if runner else {}),
    )


# A run killed (SIGKILL, no cleanup) after it has moved some token files into the staging tree.
CHILD = r"""
import json, os, signal, sys
spec = json.loads(sys.argv[1])
if spec["kill"]:
    from winnow.beam import tokens
    original, moved = tokens.publish, []
    def publish(*args, **kwargs):
        moved.append(1)
        if len(moved) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    tokens.publish = publish
from winnow.config import parse_config
from winnow.run.execute import run_pipeline
result = run_pipeline(parse_config(spec["config"]))
print(json.dumps({"resumed": result.resumed}))
"""


def run_child(config: Any, kill: bool) -> subprocess.CompletedProcess:
    spec = json.dumps({"config": config.model_dump(mode="json"), "kill": kill})
    return subprocess.run(
        [sys.executable, "-c", CHILD, spec],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_same_bytes_twice_with_two_worker_processes_and_after_a_crash(tmp_path):
    """One small ordered, packed run three ways: in this process; killed (SIGKILL) after it moved a
    few token files into staging, then run again; with two worker processes."""
    reference = run(small_ordered_config(tmp_path, tmp_path / "a"))
    crashed = small_ordered_config(tmp_path, tmp_path / "crashed")
    died = run_child(crashed, kill=True)
    assert died.returncode == -9, died.stderr[-2000:]
    assert list((tmp_path / "crashed" / "_staging" / "tokens").rglob("part-*"))  # half a run was staged
    assert not (tmp_path / "crashed" / "manifest.json").exists()
    again = run_child(crashed, kill=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"resumed": False}  # redone, not reused
    parallel = run(
        small_ordered_config(tmp_path, tmp_path / "c", direct_num_workers=2, direct_running_mode="multi_processing")
    )
    expected = tree(tmp_path / "a" / "tokens")
    assert len([p for p in expected if p.startswith("megatron/contexts/")]) > 2  # several parts
    assert tree(tmp_path / "crashed" / "tokens") == expected
    assert tree(tmp_path / "c" / "tokens") == expected
    rerun = json.loads((tmp_path / "crashed" / "manifest.json").read_text())["tokens"]
    assert reference.manifest["tokens"] == rerun == parallel.manifest["tokens"]
