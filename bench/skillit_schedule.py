"""Skill-it! with an n-gram proxy in the loop, on the 15 genres of the Brown corpus.

Skills are the Brown genres (``nltk-corpora/brown`` in ../shared/corpora). Paragraphs are split by
hash into a training pool (70%), a *choose* split (15%: the losses Skill-it and the graph see) and
a *report* split (15%: the final figures, never used to choose anything); each genre's choose and
report texts are capped at 20,000 characters. The model is winnow's character Kneser–Ney 5-gram;
"training" is re-counting all text seen so far; the loss is bits per character (BPC).

1. Graph: a base model on 2,000 characters per genre; then base + 20,000 characters of one genre
   alone, for each genre; the runs go through a proxy-run CSV in the ``winnow mix regmix`` layout and
   the linear rule (``estimate_graph``). Density = share of edges with a gain above 1%.
2. T = 6 rounds of 50,000 characters each, drawn from the pool with the step-mode draw
   (``draw_rounds``) for every strategy: Skill-it (η = 0.5 and 0.2, window 3, one checkpoint per
   round), uniform over the pool (∝ each genre's characters) and stratified (equal per genre).

Prints final mean BPC on the report split (genres weighted equally), per-genre BPC and the graph.

3. Plan mode through the wired ``mix`` stage: the η = 0.5 run's graph (JSON) and its choose-split losses
   (the loss table a proxy leaves) become ``mix.skillit: {mode: plan}``; the stage's ``prepare`` step turns
   them into the schedule and the stage (Beam, in-memory runner, one worker) samples the same pool, with
   characters as the token field. Prints whether the planned mixtures equal the online ones and, per
   round, the largest gap between realised and planned shares.

    python bench/skillit_schedule.py [--rounds 6] [--chars-per-round 50000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from winnow.core.hashing import h64, uniform
from winnow.stages.mix.config import MixConfig
from winnow.stages.mix.skillit import (
    RoundMixture,
    SkillGraph,
    Unit,
    draw_rounds,
    estimate_graph,
    skillit_mixtures,
)
from winnow.stages.mix.skillit_config import SkillitConfig
from winnow.stages.mix.stage import Mix, prepare_mix
from winnow.stages.score.ngram_lm import KneserNeyLM, heldout_bpc


def corpora_folder() -> Path:
    """``$WINNOW_CORPORA``, else the nearest ``shared/corpora`` above this file (a checkout or a worktree)."""
    if os.environ.get("WINNOW_CORPORA"):
        return Path(os.environ["WINNOW_CORPORA"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "corpora").is_dir():
            return parent / "shared" / "corpora"
    raise SystemExit("set WINNOW_CORPORA to the shared corpora folder")


def load_splits(cap: int) -> tuple[dict[str, str], list[Unit], dict[str, list[str]], dict[str, list[str]]]:
    """Paragraph texts by unit id, the pool's units, and the capped choose and report texts per genre."""
    texts: dict[str, str] = {}
    pool: list[Unit] = []
    held: dict[str, dict[str, list[tuple[int, str]]]] = {"choose": {}, "report": {}}
    with gzip.open(corpora_folder() / "nltk-corpora" / "brown.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            for i, paragraph in enumerate(p.strip() for p in doc["text"].split("\n\n")):
                if len(paragraph) < 40:
                    continue
                key = f"{doc['id']}:{i}"
                u = uniform(key, "skillit_bench_split", 0)
                if u < 0.7:
                    texts[key] = paragraph
                    pool.append(Unit(key, doc["genre"], len(paragraph)))
                else:
                    split = "choose" if u < 0.85 else "report"
                    held[split].setdefault(doc["genre"], []).append((h64(key, "cap", 0), paragraph))
    capped = {}
    for split, by_genre in held.items():
        capped[split] = {}
        for genre, items in by_genre.items():
            kept, size = [], 0
            for _, paragraph in sorted(items):
                if size >= cap:
                    break
                kept.append(paragraph)
                size += len(paragraph)
            capped[split][genre] = kept
    return texts, pool, capped["choose"], capped["report"]


def take(units: list[Unit], chars: int, purpose: str) -> list[Unit]:
    """The first units of a seeded order reaching ``chars`` characters."""
    out, size = [], 0
    for unit in sorted(units, key=lambda u: h64(u.unit, purpose, 0)):
        if size >= chars:
            break
        out.append(unit)
        size += unit.tokens
    return out


def losses(model: KneserNeyLM, held: dict[str, list[str]], skills: list[str]) -> dict[str, float]:
    return {s: heldout_bpc(model, held[s]) for s in skills}


def build_graph(texts, pool, choose, skills, base_units, per_skill: int) -> tuple[SkillGraph, float]:
    start = time.perf_counter()
    base_texts = [texts[u.unit] for u in base_units]
    rows = [({}, losses(KneserNeyLM.train(base_texts, 5), choose, skills))]
    used = {u.unit for u in base_units}
    for skill in skills:
        extra = take([u for u in pool if u.skill == skill and u.unit not in used], per_skill, "graph")
        model = KneserNeyLM.train(base_texts + [texts[u.unit] for u in extra], 5)
        rows.append(({skill: 1.0}, losses(model, choose, skills)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runs.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["run", *skills, *(f"loss_{s}" for s in skills)])
            for i, (trained, measured) in enumerate(rows):
                writer.writerow([f"r{i}", *(trained.get(s, 0.0) for s in skills), *(measured[s] for s in skills)])
        graph = estimate_graph(path, skills, rule="linear").graph
    return graph, time.perf_counter() - start


def run_strategy(name, texts, pool, choose, report, skills, base_units, graph, args, eta=0.5):
    used = {u.unit for u in base_units}
    catalogue = [u for u in pool if u.unit not in used]
    seen = [texts[u.unit] for u in base_units]
    pool_chars = {s: sum(u.tokens for u in catalogue if u.skill == s) for s in skills}
    cfg = SkillitConfig(mode="step", eta=eta, window=3, rounds=args.rounds, tokens_per_round=args.chars_per_round)
    checkpoints: list[list[dict[str, float]]] = []
    mixtures = []
    for t in range(args.rounds):
        if name == "skillit":
            mixtures = skillit_mixtures(graph, checkpoints, cfg, rounds=t + 1)
        else:
            fixed = pool_chars if name == "uniform" else dict.fromkeys(skills, 1.0)
            total = sum(fixed.values())
            mixtures.append(RoundMixture(t, {s: fixed[s] / total for s in skills}, 0.0, None))
        drawn = draw_rounds(catalogue, mixtures, args.chars_per_round, max_epochs=4, seed=0)[-1]
        seen.extend(texts[d.unit] for d in drawn.draws)
        model = KneserNeyLM.train(seen, 5)
        checkpoints.append([losses(model, choose, skills)])
    final = losses(model, report, skills)
    return final, [m.weights for m in mixtures], sum(len(t) for t in seen), checkpoints


def plan_through_the_stage(pool, skills, graph, checkpoints, args, folder: Path) -> tuple[MixConfig, dict, float]:
    """The online run's graph and losses as a plan for the ``mix`` stage; realised characters per (phase, genre)."""
    (folder / "graph.json").write_text(json.dumps(graph.to_json()))
    with open(folder / "losses.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "step", *(f"loss_{s}" for s in skills)])
        for t, round_checkpoints in enumerate(checkpoints[: args.rounds - 1]):
            for step, checkpoint in enumerate(round_checkpoints):
                writer.writerow([t, step, *(repr(checkpoint[s]) for s in skills)])
    config = MixConfig(
        enabled=True,
        domain_field="source",
        tokens_field="n_chars",
        max_epochs=4,
        skillit={
            "mode": "plan",
            "graph": str(folder / "graph.json"),
            "losses": str(folder / "losses.csv"),
            "rounds": args.rounds,
            "eta": 0.5,
            "window": 3,
            "tokens_per_round": args.chars_per_round,
        },
    )
    docs = [
        {"id": u.unit, "text": "", "url": None, "source": u.skill, "metadata": {}, "n_chars": u.tokens} for u in pool
    ]
    stage = Mix(config, **prepare_mix(config))
    pipeline = beam.Pipeline(
        options=PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    )
    _ = (
        (pipeline | beam.Create(docs, reshuffle=False) | stage)["kept"]
        | beam.Map(lambda d: ((d["phase"], d["source"]), d["n_chars"]))
        | beam.CombinePerKey(sum)
        | beam.Map(json.dumps)
        | beam.io.WriteToText(str(folder / "realised"), shard_name_template="")
    )
    start = time.perf_counter()
    pipeline.run().wait_until_finish()
    seconds = time.perf_counter() - start
    realised = {tuple(k): v for k, v in map(json.loads, (folder / "realised").read_text().splitlines())}
    return stage.config, realised, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chars-per-round", type=int, default=50_000)
    parser.add_argument("--graph-chars", type=int, default=20_000)
    parser.add_argument("--heldout-cap", type=int, default=20_000)
    args = parser.parse_args()

    texts, pool, choose, report = load_splits(args.heldout_cap)
    skills = sorted({u.skill for u in pool})
    base_units = [u for s in skills for u in take([x for x in pool if x.skill == s], 2_000, "base")]
    print(
        f"Brown: {len(skills)} genres, pool {len(pool):,} paragraphs ({sum(u.tokens for u in pool):,} chars); "
        f"choose/report ≤ {args.heldout_cap:,} chars per genre; base {sum(u.tokens for u in base_units):,} chars"
    )
    graph, graph_s = build_graph(texts, pool, choose, skills, base_units, args.graph_chars)
    off = graph.matrix[~np.eye(len(skills), dtype=bool)]
    print(
        f"\ngraph (linear rule, {args.graph_chars:,} chars per genre, {graph_s:.1f} s): density (gain > 1%) "
        f"{graph.density(0.01):.1%}, off-diagonal gain median {np.median(off):.3f}, max {off.max():.3f}"
    )
    strongest = sorted(
        ((graph.matrix[i, j], a, b) for i, a in enumerate(skills) for j, b in enumerate(skills) if i != j), reverse=True
    )[:5]
    print("strongest edges: " + ", ".join(f"{a}→{b} {v:.3f}" for v, a, b in strongest))

    results = {}
    for name, eta in (("stratified", 0.5), ("uniform", 0.5), ("skillit", 0.5), ("skillit", 0.2)):
        start = time.perf_counter()
        final, mixtures, chars, checkpoints = run_strategy(
            name, texts, pool, choose, report, skills, base_units, graph, args, eta
        )
        label = f"{name} η={eta}" if name == "skillit" else name
        results[label] = (final, mixtures, chars, time.perf_counter() - start, checkpoints)
    reference = results["stratified"][0]
    print(f"\n{'strategy':<16}{'mean BPC (report)':>18}{'vs stratified':>15}{'chars seen':>12}{'seconds':>9}")
    for label, (final, _, chars, seconds, _) in results.items():
        mean = float(np.mean(list(final.values())))
        base_mean = float(np.mean(list(reference.values())))
        print(f"{label:<16}{mean:>18.4f}{mean - base_mean:>+15.4f}{chars:>12,}{seconds:>9.1f}")
    print(f"\nper-genre report BPC ({' / '.join(results)}):")
    for s in skills:
        print(f"  {s:<16}" + "".join(f"{results[label][0][s]:>8.3f}" for label in results))
    weights = results["skillit η=0.5"][1]
    print("\nSkill-it η=0.5 mixtures (largest three genres per round):")
    for t, w in enumerate(weights):
        top = sorted(w.items(), key=lambda kv: -kv[1])[:3]
        print(f"  round {t}: " + ", ".join(f"{s} {p:.3f}" for s, p in top) + f"; min {min(w.values()):.3f}")

    with tempfile.TemporaryDirectory() as folder:
        planned, realised, seconds = plan_through_the_stage(
            pool, skills, graph, results["skillit η=0.5"][4], args, Path(folder)
        )
    same = [p.weights.manual for p in planned.schedule] == weights
    print(
        f"\nplan mode through the mix stage ({len(pool):,} paragraphs, {seconds:.1f} s): phases "
        f"{[p.name for p in planned.schedule]}; planned mixtures equal the online run's: {same}"
    )
    largest, median = max(u.tokens for u in pool), float(np.median([u.tokens for u in pool]))
    for phase in planned.schedule:
        got = {s: realised.get((phase.name, s), 0) for s in skills}
        total = sum(got.values())
        gap = max(abs(got[s] / total - phase.weights.manual[s]) for s in skills)
        print(
            f"  {phase.name}: {total:,} chars (planned {args.chars_per_round:,}); largest share gap {gap:.4f} "
            f"(one paragraph: median {median / total:.4f}, largest {largest / total:.4f})"
        )


if __name__ == "__main__":
    main()
