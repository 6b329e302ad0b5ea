"""Rebuild the bundled local DataMan model (``winnow/data/models/dataman/``) from derived labels.

DataMan's GPT-4 annotations are not released, so the bundled model learns from **derived labels**
built from real labels and real text in ``/work/shared/corpora`` (the model README has the table
of what each criterion learns from). Only the *fit* split of the fixed fit / choose / report split
(``winnow.core.evaluation.three_way_split``) of the WebOrganizer pages and the human-quality
documents is read for training.

The variant (head kind, and whether each criterion's head also learns from the overall labels)
is chosen on the *choose* half of ``dataman-qurating-ratings`` (135 chunks rated by DataMan-1.5B,
split by id into choose / report halves; nothing trains on them): the mean Spearman over the 14
criteria. ``bench/dataman_eval.py`` reports the shipped model on the report half.

    python scripts/train_dataman.py [--corpora /work/shared/corpora] [--out winnow/data/models/dataman]

Deterministic: the same corpora give byte-identical ``dataman-local.npz`` and ``report.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._quality_data import (  # noqa: E402
    HIGH_FORMATS,
    LOW_FORMATS,
    human_documents,
    rating_documents,
    rows,
    web_pages,
)
from winnow.core.domains import TOPIC_TO_DATAMAN as TOPIC_TO_DOMAIN  # noqa: E402
from winnow.core.evaluation import CHOOSE, FIT  # noqa: E402
from winnow.core.hashing import uniform  # noqa: E402
from winnow.stages.score.dataman import (  # noqa: E402
    CRITERIA,
    DataManLabel,
    embed_texts,
    make_encoder,
    train_local_model,
)
from winnow.stages.score.qurating import spearman  # noqa: E402

ENCODER = "static"
TOXIC_LIMIT = 150  # keep the toxic negatives from outnumbering the human-labelled documents
HIGH, LOW = 5, 2  # a format contrast says "clearly good" / "clearly poor", not "worst possible"
# Criterion → (formats clearly high on it, formats clearly low on it): ours, from each criterion's
# definition (docs/dataman.md#criteria-and-domains) and WebOrganizer's format descriptions. These are
# proxies: a format says how a page is usually written, not how this page is.
CRITERION_FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "overall_score": (HIGH_FORMATS, LOW_FORMATS),
    "accuracy": (
        ("Academic Writing", "Knowledge Article", "News Article", "Legal", "Nonfiction Writing"),
        ("Comment Section", "Spam / Ads", "User Review"),
    ),
    "coherence": (
        ("Academic Writing", "Knowledge Article", "Nonfiction Writing", "Creative Writing", "News Article"),
        ("Content Listing", "Spam / Ads", "Truncated", "Structured Data"),
    ),
    "semantic_density": (
        ("Knowledge Article", "Academic Writing", "Tutorial", "Docs."),
        ("Spam / Ads", "Content Listing", "Comment Section", "About (Org.)"),
    ),
    "knowledge_novelty": (
        ("Academic Writing", "Knowledge Article", "News Article"),
        ("Spam / Ads", "Product Page", "Content Listing", "Personal Blog"),
    ),
    "topic_focus": (
        ("Tutorial", "Knowledge Article", "Academic Writing", "Legal", "Docs."),
        ("Content Listing", "Spam / Ads", "Comment Section", "News (Org.)"),
    ),
    "creativity": (
        ("Creative Writing", "Nonfiction Writing", "Personal Blog"),
        ("Structured Data", "Legal", "Product Page", "Content Listing", "Docs."),
    ),
    "professionalism": (
        ("Academic Writing", "Legal", "Docs.", "Knowledge Article"),
        ("Comment Section", "Personal Blog", "User Review", "Spam / Ads"),
    ),
    "style_consistency": (
        ("Creative Writing", "Nonfiction Writing", "Academic Writing", "Knowledge Article"),
        ("Content Listing", "Spam / Ads", "Truncated", "Comment Section"),
    ),
    "grammatical_diversity": (
        ("Creative Writing", "Nonfiction Writing", "Academic Writing"),
        ("Structured Data", "Content Listing", "Product Page", "Spam / Ads"),
    ),
    "structural_standardization": (
        ("Docs.", "Legal", "Academic Writing", "Knowledge Article", "Tutorial", "FAQ"),
        ("Truncated", "Comment Section", "Content Listing", "Spam / Ads"),
    ),
    "originality": (
        ("Creative Writing", "Academic Writing", "Nonfiction Writing", "Knowledge Article"),
        ("Spam / Ads", "Content Listing", "Product Page", "Structured Data"),
    ),
}
# Criteria whose labels come from elsewhere than formats; they never copy the overall labels.
OWN_SOURCE = ("sensitivity", "language_consistency")
# language_consistency: this share of fit pages gets real non-English sentences (lingua test data)
# spliced in as one paragraph; the rating falls with the foreign share (5–35% of the characters).
SPLICE_SHARE = 0.3
VARIANTS = {
    "ordinal, own labels": ("ordinal", False),
    "ordinal, own + overall labels": ("ordinal", True),
    "regression, own labels": ("regression", False),
    "regression, own + overall labels": ("regression", True),
}


def splice_foreign(text: str, doc_id: str, share: float, foreign: list[str]) -> str:
    """``text`` with about ``share`` of its length in real foreign sentences, as one paragraph."""
    paragraphs = text.split("\n")
    wanted = max(1, int(len(text) * share))
    start = int(uniform(doc_id, "dataman:foreign-start", 0) * len(foreign))
    inserted, size, k = [], 0, start
    while size < wanted:
        sentence = foreign[k % len(foreign)]
        inserted.append(sentence)
        size += len(sentence)
        k += 1
    at = int(uniform(doc_id, "dataman:foreign-position", 0) * (len(paragraphs) + 1))
    return "\n".join([*paragraphs[:at], " ".join(inserted), *paragraphs[at:]])


def consistency_rating(share: float) -> int:
    return 4 if share < 0.15 else 3 if share < 0.25 else 2


def derived_labels(corpora: Path, with_overall: bool) -> list[DataManLabel]:
    """The derived training labels (fit split only), in a fixed order.

    ``with_overall``: every format-proxied criterion also learns from the overall labels of the
    documents it has no label of its own for (the human votes and the toxic threads), so its head
    sees general quality as well as its own contrast.
    """
    foreign = [r for r in rows(corpora / "lingua-language-testdata" / "sentences.jsonl.gz") if r["lang"] != "en"]
    foreign_texts = [r["text"] for r in sorted(foreign, key=lambda r: uniform(r["id"], "dataman:foreign", 0))]
    labels: list[DataManLabel] = []
    for page in web_pages(corpora):
        if page["split"] != FIT:
            continue
        text = page["view"] or page["text"]
        scores = {
            c: HIGH if page["format"] in hi else LOW
            for c, (hi, lo) in CRITERION_FORMATS.items()
            if page["format"] in hi + lo
        }
        scores["sensitivity"] = 2 if page["topic"] == "Adult" else 5
        domain = TOPIC_TO_DOMAIN.get(page["topic"], "O")
        if page["view"]:
            scores["language_consistency"] = 5
        labels.append(DataManLabel(text, scores, domain, f"wo:{page['id']}"))
        u = uniform(page["id"], "dataman:splice", 0)
        if page["view"] and u < SPLICE_SHARE:
            share = 0.05 + u  # 5–35% foreign characters
            spliced = splice_foreign(page["view"], page["id"], share, foreign_texts)
            labels.append(
                DataManLabel(
                    spliced, {"language_consistency": consistency_rating(share)}, None, f"spliced:{page['id']}"
                )
            )
    general: list[DataManLabel] = []
    for row in human_documents(corpora):
        if row["split"] != FIT:
            continue
        # Human good/bad votes; annotator agreement marks the clear cases (5 and 1), the majority-only
        # ones are less clear (4 and 2). Nothing maps to 3: the signal has no middle.
        good, agreed = row["label"] == 1, bool(row["in_agreement_subset"])
        overall = (5 if agreed else 4) if good else (1 if agreed else 2)
        general.append(DataManLabel(row["text"], {"overall_score": overall}, None, f"dclm:{row['id']}"))
    toxic = sorted(rows(corpora / "olmo-test-fixtures" / "paloma_4chan_TOXIC.jsonl.gz"), key=lambda r: str(r["id"]))
    for row in toxic[:TOXIC_LIMIT]:  # Paloma's TOXIC split: low quality and inappropriate content
        general.append(DataManLabel(row["text"], {"overall_score": 1, "sensitivity": 1}, None, f"4chan:{row['id']}"))
    if with_overall:
        for label in general:
            overall = label.scores["overall_score"]
            label.scores.update({c: overall for c in CRITERIA if c not in OWN_SOURCE and c not in label.scores})
    labels += general
    for row in rows(corpora / "lee-abc-news" / "docs.jsonl.gz"):  # edited broadcast news
        labels.append(DataManLabel(row["text"], {"sensitivity": 5}, None, f"abc:{row['id']}"))
    return [lab for lab in labels if lab.text and lab.text.strip()]


def choose_agreement(model: Any, embeddings: np.ndarray, ratings: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman per criterion between the heads' expected ratings and DataMan-1.5B's stored ratings."""
    per = {}
    for name in CRITERIA:
        value = model.head_for(name).predict_value(embeddings)
        per[name] = spearman(value, [r["dataman"][name] for r in ratings])
    return {"spearman": per, "mean": float(np.mean(list(per.values())))}


def main(
    corpora: Annotated[Path, typer.Option(help="The shared corpora folder.")] = Path("/work/shared/corpora"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = ROOT / "winnow/data/models/dataman",
    seed: Annotated[int, typer.Option(help="Held-out split seed of the derived-label diagnostics.")] = 0,
) -> None:
    encoder = make_encoder(ENCODER)
    ratings = [r for r in rating_documents(corpora) if r["split"] == CHOOSE]
    rating_embeddings = embed_texts(encoder, [r["text"] for r in ratings])
    cache: dict[str, np.ndarray] = {}
    candidates: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    label_counts: dict[str, int] = {}
    for name, (kind, with_overall) in VARIANTS.items():
        labels = derived_labels(corpora, with_overall)
        missing = [lab for lab in labels if lab.id not in cache]
        if missing:  # the texts are the same in every variant: embed each once
            for lab, row in zip(missing, embed_texts(encoder, [lab.text for lab in missing]), strict=True):
                cache[lab.id] = row
        embeddings = np.stack([cache[lab.id] for lab in labels])
        model, report = train_local_model(labels, embeddings, encoder=ENCODER, kind=kind, seed=seed)
        candidates[name] = {
            "kind": kind,
            "with_overall": with_overall,
            "derived_heldout": report,
            **choose_agreement(model, rating_embeddings, ratings),
        }
        models[name] = model
        label_counts[name] = len(labels)
        typer.echo(f"{name}: mean choose Spearman {candidates[name]['mean']:.3f}")
    best = max(candidates, key=lambda n: candidates[n]["mean"])
    model = models[best]
    model.meta["labels"] = "derived-labels"
    model.meta["variant"] = best
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "dataman-local.npz")
    report = {
        "labels": "derived-labels",
        "chosen": best,
        "split": "choose half of dataman-qurating-ratings",
        "n_labels": label_counts[best],
        "candidates": candidates,
        "criterion_formats": {c: {"high": list(h), "low": list(lo)} for c, (h, lo) in CRITERION_FORMATS.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    typer.echo(f"chosen: {best}; own signal: {candidates[best]['derived_heldout']['own_signal']}")


if __name__ == "__main__":
    typer.run(main)
