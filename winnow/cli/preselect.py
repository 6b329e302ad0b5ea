"""``winnow preselect train``: PreSelect's local recipe (docs/preselect.md) from JSONL files.

Mounted into the main CLI as ``app.add_typer(preselect_app, name="preselect")``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from winnow.stages.score.preselect import DEFAULT_LADDER, QUANTIZE_CUTOFF, QUANTIZE_DSUB, parse_ladder, train_local

preselect_app = typer.Typer(
    no_args_is_help=True, help="PreSelect: train a predictive-strength fastText classifier (local mode)."
)
console = Console(stderr=True, soft_wrap=True)


@preselect_app.callback()
def _group() -> None:
    """PreSelect (docs/preselect.md): predictive-strength labels from an LM ladder, distilled into fastText."""


def read_documents(paths: list[Path], text_field: str = "text", id_field: str = "id") -> list[tuple[str, str]]:
    """(id, text) pairs from JSONL files (plain, .gz or .zst); rows without text are skipped.

    A row without an id gets ``<file name>:<line number>``.
    """
    docs: list[tuple[str, str]] = []
    for path in paths:
        for number, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            text = row.get(text_field)
            if not isinstance(text, str) or not text.strip():
                continue
            doc_id = row.get(id_field)
            docs.append((str(doc_id) if doc_id is not None else f"{path.name}:{number}", text))
    return docs


def _lines(path: Path) -> Iterator[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            yield from handle
    elif path.suffix == ".zst":
        import zstandard  # lazy: zstandard only for .zst inputs

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield from io.TextIOWrapper(reader, encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            yield from handle


@preselect_app.command()
def train(
    reference: Annotated[
        list[Path],
        typer.Option("--reference", "-r", help="JSONL file(s) of reference-domain text (repeatable).", exists=True),
    ],
    pool: Annotated[
        list[Path], typer.Option("--pool", "-p", help="JSONL file(s) of the pool to label (repeatable).", exists=True)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the classifier and report.")],
    ladder: Annotated[
        str,
        typer.Option(
            help="One LM per entry (≥ 4): a nested share of the reference text, optionally @order "
            "(e.g. 1.0@3,1.0@4,0.25,0.5,1.0), listed from the weakest expected model to the strongest."
        ),
    ] = ",".join(str(f) for f in DEFAULT_LADDER),
    order: Annotated[int, typer.Option(help="Character n-gram order of the LMs.")] = 5,
    max_chars: Annotated[int, typer.Option(help="BPC on the first N characters of a document (0: all).")] = 8000,
    max_per_class: Annotated[int, typer.Option(help="Cap on positives (and negatives); 0: no cap.")] = 0,
    heldout: Annotated[float, typer.Option(help="Share of the labelled examples held out for the AUC.")] = 0.1,
    quantize: Annotated[
        bool, typer.Option(help="Write a quantized .ftz (small) besides or instead of the .bin.")
    ] = True,
    cutoff: Annotated[int, typer.Option(help="Words + n-grams kept when quantizing.")] = QUANTIZE_CUTOFF,
    dsub: Annotated[int, typer.Option(help="Dimensions per product-quantized sub-vector.")] = QUANTIZE_DSUB,
    keep_bin: Annotated[bool, typer.Option(help="Also keep the unquantized .bin (~800 MB: 2M hash buckets).")] = False,
    text_field: Annotated[str, typer.Option(help="JSONL field with the text.")] = "text",
    id_field: Annotated[str, typer.Option(help="JSONL field with the document id.")] = "id",
    seed: Annotated[int, typer.Option(help="Seed of every hash-based choice.")] = 0,
) -> None:
    """Train the classifier: LM ladder → S(d) → positives/negatives → fastText (epoch 3, lr 0.1, wordNgrams 2).

    Writes preselect.ftz (and/or preselect.bin), report.json and report.md (S histogram, held-out
    ROC-AUC, top and bottom contribution words) into --out.
    """

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rungs = parse_ladder(ladder, order)
        reference_docs = read_documents(reference, text_field, id_field)
        pool_docs = read_documents(pool, text_field, id_field)
        if not reference_docs or not pool_docs:
            raise ValueError("no documents with text in the reference or the pool files")
        report = train_local(
            reference_docs,
            pool_docs,
            out,
            order=order,
            rungs=rungs,
            heldout_fraction=heldout,
            max_per_class=max_per_class or None,
            max_chars=max_chars or None,
            quantize=quantize,
            quantize_cutoff=cutoff,
            quantize_dsub=dsub,
            keep_bin=keep_bin,
            seed=seed,
        )
    except (ValueError, json.JSONDecodeError, OSError) as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(report.to_markdown())
    typer.echo(f"wrote {', '.join(sorted(report.model_files))}, report.json, report.md to {out}")
