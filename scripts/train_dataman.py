"""Rebuild the bundled local DataMan model (``winnow/data/models/dataman/``) from derived labels.

DataMan's GPT-4 annotations are not released, so the bundled model learns from **derived labels**
built from real labels in ``/work/shared/corpora`` (see the model README for what each criterion
learns from). ``dataman-qurating-ratings`` is evaluation only and is never read here, nor are
WebOrganizer's format labels.

    python scripts/train_dataman.py [--corpora /work/shared/corpora] [--out winnow/data/models/dataman]

Deterministic: the same corpora give byte-identical ``dataman-local.npz`` and ``report.json``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from winnow.core.domains import TOPIC_TO_DATAMAN as TOPIC_TO_DOMAIN  # METHODS §6.2 (ours)
from winnow.stages.score.dataman import DataManLabel, embed_texts, make_encoder, train_local_model

TOXIC_LIMIT = 150  # keep the toxic negatives from outnumbering the human-labelled documents


def _rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def derived_labels(corpora: Path) -> list[DataManLabel]:
    """The derived training labels, in a fixed order."""
    labels: list[DataManLabel] = []
    for row in _rows(corpora / "weborganizer-dclm" / "docs.jsonl.gz"):  # topic labels only
        labels.append(DataManLabel(row["text"], {}, TOPIC_TO_DOMAIN.get(row["topic"], "O"), f"wo:{row['id']}"))
    for row in _rows(corpora / "dclm-human-quality" / "quality_labels.jsonl.gz"):
        # Human good/bad votes; annotator agreement marks the clear cases (5 and 1), the majority-only
        # ones are less clear (4 and 2). Nothing maps to 3: the signal has no middle.
        good, agreed = row["label"] == 1, bool(row["in_agreement_subset"])
        overall = (5 if agreed else 4) if good else (1 if agreed else 2)
        labels.append(DataManLabel(row["text"], {"overall_score": overall}, None, f"dclm:{row['id']}"))
    toxic = sorted(_rows(corpora / "olmo-test-fixtures" / "paloma_4chan_TOXIC.jsonl.gz"), key=lambda r: str(r["id"]))
    for row in toxic[:TOXIC_LIMIT]:  # Paloma's TOXIC split: low quality and inappropriate content
        labels.append(DataManLabel(row["text"], {"overall_score": 1, "sensitivity": 1}, None, f"4chan:{row['id']}"))
    for row in _rows(corpora / "lee-abc-news" / "docs.jsonl.gz"):  # edited broadcast news
        labels.append(DataManLabel(row["text"], {"sensitivity": 5}, None, f"abc:{row['id']}"))
    return [lab for lab in labels if lab.text and lab.text.strip()]


def main(
    corpora: Annotated[Path, typer.Option(help="The shared corpora folder.")] = Path("/work/shared/corpora"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("winnow/data/models/dataman"),
    encoder: Annotated[str, typer.Option(help="Frozen embedding: model2vec or minilm.")] = "model2vec",
    seed: Annotated[int, typer.Option(help="Held-out split seed.")] = 0,
) -> None:
    labels = derived_labels(corpora)
    embeddings = embed_texts(make_encoder(encoder), [lab.text for lab in labels])
    reports = {}
    models = {}
    for kind in ("ordinal", "regression"):
        models[kind], reports[kind] = train_local_model(labels, embeddings, encoder=encoder, kind=kind, seed=seed)
    # Choose the head kind by held-out overall-score MAE on the derived labels (never on the eval set).
    chosen = min(reports, key=lambda k: reports[k]["criteria"]["overall_score"]["heldout"]["mae"])
    models[chosen].meta["labels"] = "derived-labels"
    out.mkdir(parents=True, exist_ok=True)
    models[chosen].save(out / "dataman-local.npz")
    report = {"labels": "derived-labels", "chosen_kind": chosen, "n_labels": len(labels), "candidates": reports}
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    typer.echo(json.dumps({k: v["criteria"]["overall_score"]["heldout"] for k, v in reports.items()}, indent=1))
    typer.echo(f"chosen: {chosen}; domain: {reports[chosen]['domain'].get('heldout')}")


if __name__ == "__main__":
    typer.run(main)
