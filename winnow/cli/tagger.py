"""``winnow tagger train``: a local-mode WebOrganizer topic or format tagger from labelled JSONL
(docs/domains.md#weborganizer).

Mounted into the main CLI as ``app.add_typer(tagger_app, name="tagger")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from winnow.cli.preselect import _lines
from winnow.core.domains import TAXONOMIES
from winnow.core.evaluation import macro_f1, url_split
from winnow.core.taggers import FeatureSpec, LinearTagger, labelled_examples

tagger_app = typer.Typer(no_args_is_help=True, help="Domain taggers: train a WebOrganizer topic/format tagger.")
console = Console(stderr=True, soft_wrap=True)


@tagger_app.callback()
def _group() -> None:
    """WebOrganizer topic × format taggers (docs/domains.md#weborganizer), trained locally from labelled JSONL."""


@tagger_app.command()
def train(
    labels: Annotated[
        list[Path], typer.Option("--labels", "-l", help="Labelled JSONL file(s) (plain, .gz, .zst).", exists=True)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (e.g. topic-tagger.zip).")],
    label_field: Annotated[str, typer.Option(help="Field with the label: an id (0–23) or a taxonomy name.")] = "topic",
    taxonomy: Annotated[str | None, typer.Option(help="topic or format (default: guessed from --label-field).")] = None,
    text_field: Annotated[str, typer.Option(help="Field with the text.")] = "text",
    url_field: Annotated[str, typer.Option(help="Field with the URL ('' to ignore URLs).")] = "url",
    weight_field: Annotated[
        str | None, typer.Option(help="Field with a per-example weight, e.g. topic_confidence.")
    ] = None,
    use_url: Annotated[
        bool, typer.Option(help="Use URL tokens as features (WebOrganizer's input has the URL).")
    ] = True,
    layout: Annotated[
        bool, typer.Option(help="Add page-shape features (lines, line starts, ending, marks); +1 macro-F1 on formats.")
    ] = True,
    profile: Annotated[
        float,
        typer.Option(
            help="Weight of the page-profile block (17 bucketed page ratios; 0: off; the bundled format tagger: 0.2)."
        ),
    ] = 0.0,
    classifier: Annotated[str, typer.Option(help="svm (chosen by bench/tagging_eval.py) or logreg.")] = "svm",
    regularisation: Annotated[float, typer.Option(help="Inverse regularisation strength C.")] = 4.0,
    buckets_log2: Annotated[int, typer.Option(help="log2 of the hashed feature count.")] = 18,
    heldout: Annotated[float, typer.Option(help="Share held out by URL hash to report macro-F1 (0: none).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
) -> None:
    """Train on hashed word 1–2-gram TF-IDF (+ URL tokens) with a linear head; prints held-out accuracy/macro-F1.

    With --heldout > 0 the model is fitted on the rest only, so the printed figures are its own.
    """

    name = taxonomy or ("format" if "format" in label_field else "topic")
    try:
        if name not in TAXONOMIES:
            raise ValueError(f"taxonomy must be topic or format, not {name!r}")
        rows = [json.loads(line) for path in labels for line in _lines(path) if line.strip()]
        data = labelled_examples(rows, TAXONOMIES[name], text_field, label_field, weight_field, url_field or None)
        if len(data.texts) < 2:
            raise ValueError("fewer than two labelled examples with text")
        held = (
            url_split([u or i for u, i in zip(data.urls, data.ids, strict=True)], heldout, seed)
            if heldout > 0
            else None
        )
        train_set = data if held is None else data.subset(~held)
        if profile < 0:
            raise ValueError(f"--profile must be ≥ 0, not {profile}")
        spec = FeatureSpec(
            buckets_log2=buckets_log2, use_url=use_url and bool(url_field), layout=layout, profile_scale=profile
        )
        tagger = LinearTagger.fit(
            name,
            TAXONOMIES[name],
            train_set.texts,
            train_set.urls,
            train_set.targets,
            train_set.weights,
            spec,
            classifier=classifier,
            regularisation=regularisation,
            meta={"labels": [p.name for p in labels], "label_field": label_field, "weight": weight_field},
        )
        digest = tagger.save(out)
    except (ValueError, json.JSONDecodeError, OSError) as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(f"trained {name} tagger on {len(train_set.texts)} examples → {out} (sha256 {digest})")
    if held is not None and held.any():
        test = data.subset(held)
        predicted = tagger.probabilities(test.texts, test.urls).argmax(axis=1)
        f1, _ = macro_f1(test.targets, predicted, len(TAXONOMIES[name]))
        accuracy = float((predicted == test.targets).mean())
        typer.echo(f"held out {len(test.texts)}: accuracy {accuracy:.3f}, macro-F1 {f1:.3f}")
