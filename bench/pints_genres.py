"""B14.1: does the pints-expository preset tell expository prose from narrative? Ground truth: Brown's genres.

Runs the preset's score, tag and select steps (QuRating local mode, the WebOrganizer format tagger,
Gumbel-top-k on ``educational_value_average`` at τ = 2 behind the format ``not_in`` list, 50% of
tokens) on the 500 Brown Corpus documents. Learned, government, hobbies, lore, religion and
belles_lettres count as expository; fiction, mystery, science_fiction, adventure, romance and humor
as narrative; news, editorial and reviews are reported apart. Brown's text is pre-tokenised (spaces
around punctuation): it is detokenised with a few rules before tagging and scoring.

Prints the ROC-AUC (expository = 1) of ``expository_score`` (the tagger's probability mass on the
expository formats: docs/pints.md) and of ``educational_value_average``, next to two floors measured
in the same run (document length in tokens; a hash draw), and the kept share per genre at the 50%
budget against the 50% a uniform draw keeps. Nothing is trained or tuned on Brown: all 500 documents
are a report set.

Run: ``PYTHONPATH=. python bench/pints_genres.py``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from winnow.config import load_config
from winnow.core.domains import TAXONOMIES
from winnow.core.hashing import uniform
from winnow.stages.score.preselect import roc_auc
from winnow.stages.score.stage import Score
from winnow.stages.select.stage import Select
from winnow.stages.tag.stage import Tag

BROWN = Path("/work/shared/corpora/nltk-corpora/brown.jsonl.gz")
EXPOSITORY_GENRES = ("learned", "government", "hobbies", "lore", "religion", "belles_lettres")
NARRATIVE_GENRES = ("fiction", "mystery", "science_fiction", "adventure", "romance", "humor")
OTHER_GENRES = ("news", "editorial", "reviews")
# The formats docs/pints.md calls expository (names as in the tagger's taxonomy).
EXPOSITORY_FORMATS = ("Academic Writing", "Knowledge Article", "Tutorial", "Nonfiction Writing", "Docs.", "FAQ", "Q&A")


def detokenise(text: str) -> str:
    """Undo Brown's tokenisation: no space before closing punctuation or after opening, quotes paired."""
    lines = []
    for line in text.split("\n"):
        line = re.sub(r" ([,.;:?!%)\]}])", r"\1", line)
        line = re.sub(r"([(\[{$]) ", r"\1", line)
        line = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", line)
        line = line.replace("`` ", '"').replace(" ''", '"')
        parts, opened = line.split(' " '), False
        out = parts[0]
        for part in parts[1:]:  # a free-standing quote opens, then closes, then opens…
            out += (' "' if not opened else '" ') + part
            opened = not opened
        lines.append(out)
    return "\n".join(lines)


def expository_score(probabilities: list[float]) -> float:
    names = TAXONOMIES["format"]
    return sum(p for name, p in zip(names, probabilities, strict=True) if name in EXPOSITORY_FORMATS)


class PresetSteps(beam.PTransform):
    """The preset's score → tag → select, with the format probabilities written."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def expand(self, docs):
        config = self.config
        tag = config.tag.model_copy(update={"write_probabilities": True})
        select = config.select.model_copy(update={"balance_by": None})  # one source here
        scored = docs | "Score" >> Score(config.score, tokenizer=config.tokenizer)
        tagged = scored["kept"] | "Tag" >> Tag(tag, config.tokenizer)
        return tagged["kept"] | "Select" >> Select(select, seed=config.seed)


def run(docs: list[dict], folder: Path) -> dict[str, list[dict]]:
    config = load_config("pints-expository")
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    out = pipeline | beam.Create(docs, reshuffle=False) | PresetSteps(config)
    for name in ("kept", "removed", "rejected"):
        _ = (
            out[name]
            | f"{name}/json" >> beam.Map(lambda d: json.dumps(d, default=repr))
            | f"{name}/write" >> beam.io.WriteToText(str(folder / name))
        )
    pipeline.run().wait_until_finish()
    return {
        name: [json.loads(line) for path in folder.glob(f"{name}*") for line in path.read_text().splitlines()]
        for name in ("kept", "removed", "rejected")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=BROWN)
    args = parser.parse_args()
    with gzip.open(args.corpus, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    genre = {r["id"]: r["genre"] for r in rows}
    docs = [
        {"id": r["id"], "text": detokenise(r["text"]), "url": None, "source": "brown/brown.jsonl.gz", "metadata": None}
        for r in rows
    ]
    print(f"Brown: {len(docs)} documents, {len(set(genre.values()))} genres; detokenised, e.g.:")
    print("   ", docs[0]["text"][:160].replace("\n", " "))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = run(docs, Path(tmp))
    seconds = time.perf_counter() - start
    pool = out["kept"] + out["removed"]
    print(
        f"score + tag + select: {seconds:.1f} s; kept {len(out['kept'])}, removed {len(out['removed'])}, "
        f"rejected {len(out['rejected'])}"
    )

    labelled = [d for d in pool if genre[d["id"]] in EXPOSITORY_GENRES + NARRATIVE_GENRES]
    labels = [1 if genre[d["id"]] in EXPOSITORY_GENRES else 0 for d in labelled]
    scores = {
        "expository_score (format probabilities)": [expository_score(d["format_probs"]) for d in labelled],
        "educational_value_average (QuRating local)": [d["educational_value_average"] for d in labelled],
        "floor: length in tokens": [d["n_tokens"] for d in labelled],
        "floor: hash draw": [uniform(d["id"], "bench", 0) for d in labelled],
    }
    print(f"\nB14.1 ROC-AUC, expository (n = {sum(labels)}) vs narrative (n = {len(labels) - sum(labels)})")
    print("| score | ROC-AUC |")
    print("|---|---:|")
    for name, values in scores.items():
        print(f"| {name} | {roc_auc(labels, values):.3f} |")

    kept_ids = {d["id"] for d in out["kept"]}
    by_genre: dict[str, list[dict]] = defaultdict(list)
    for d in pool:
        by_genre[genre[d["id"]]].append(d)
    total_tokens = sum(d["n_tokens"] for d in pool)
    kept_tokens = sum(d["n_tokens"] for d in out["kept"])
    print(
        f"\nKept share per genre at the preset's budget (fraction 0.5 of tokens after the format filter; "
        f"kept {kept_tokens / total_tokens:.3f} of all tokens; a uniform draw keeps the same share in every genre)"
    )
    print("| group | genre | docs | kept docs | kept token share | removed by format (`select:where`) |")
    print("|---|---|---:|---:|---:|---:|")
    where = {d["id"] for d in out["removed"] if d["reason"] == "select:where"}
    for group, genres in (("expository", EXPOSITORY_GENRES), ("narrative", NARRATIVE_GENRES), ("other", OTHER_GENRES)):
        for g in genres:
            members = by_genre[g]
            kept = [d for d in members if d["id"] in kept_ids]
            share = sum(d["n_tokens"] for d in kept) / max(1, sum(d["n_tokens"] for d in members))
            dropped = sum(d["id"] in where for d in members)
            print(f"| {group} | {g} | {len(members)} | {len(kept)} | {share:.3f} | {dropped} |")
    for group, genres in (("expository", EXPOSITORY_GENRES), ("narrative", NARRATIVE_GENRES)):
        members = [d for g in genres for d in by_genre[g]]
        kept = sum(d["n_tokens"] for d in members if d["id"] in kept_ids)
        print(f"{group}: kept token share {kept / sum(d['n_tokens'] for d in members):.3f}")


if __name__ == "__main__":
    main()
