"""``winnow order calibrate``: choose θ_sem for an embedder on local documents (docs/icp.md#semantic-dedup).

Mounted into the main CLI as ``app.add_typer(order_app, name="order")``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from winnow.cli.preselect import read_documents
from winnow.stages.order import ordering

order_app = typer.Typer(no_args_is_help=True, help="In-Context Pretraining ordering tools.")
console = Console(stderr=True, soft_wrap=True)


@order_app.callback()
def _group() -> None:
    """In-Context Pretraining (docs/icp.md): semantic-dedup threshold calibration."""


@order_app.command()
def calibrate(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL files (plain, .gz, .zst) with id and text.")],
    embedder: Annotated[
        str, typer.Option(help="static+topic (the order stage's default), static, minilm, or a contriever-style dir.")
    ] = "static+topic",
    pairs: Annotated[
        Path | None, typer.Option(help="JSONL of known near-duplicate pairs (id_a, id_b) to measure recall.")
    ] = None,
    max_random_rate: Annotated[
        float, typer.Option(help="Random-pair rule (docs/icp.md#semantic-dedup): share of random pairs allowed ≥ θ.")
    ] = 0.01,
    max_docs: Annotated[int, typer.Option(help="Embed at most this many docs (first by id).")] = 20_000,
) -> None:
    """Print θ by the random-pair rule (lowest θ that ≤ max_random_rate of random pairs reach) and, for a
    range of θ, how many documents semantic dedup would remove and the recall of known pairs.
    The rule ignores that kNN neighbours are far closer than random pairs; read the removed share."""

    docs = sorted(read_documents(inputs))[:max_docs]
    ids = [doc_id for doc_id, _ in docs]
    encoder = ordering.load_embedder(embedder)  # static+topic reads no URL here (the inputs have none)
    texts = [text for _, text in docs]
    vectors = np.concatenate([encoder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    known = []
    if pairs is not None:
        for line in pairs.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                known.append((str(row["id_a"]), str(row["id_b"])))
    rule = ordering.calibrate_threshold(
        ordering.random_pair_cosines(ordering.unit_rows(vectors)), max_false_rate=max_random_rate
    )
    thresholds = sorted({round(rule, 4), 0.9, 0.95, 0.97, 0.975, 0.98, 0.99})
    sweep = ordering.dedup_sweep(vectors, ids, thresholds, known)
    print(
        json.dumps(
            {
                "docs": len(ids),
                "embedder": embedder,
                "theta_rule": round(rule, 4),
                "sweep": [asdict(point) for point in sweep],
            },
            indent=1,
        )
    )
