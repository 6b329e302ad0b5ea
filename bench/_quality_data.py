"""Shared data of the quality benches: the fixed fit / choose / report split and the pipeline view.

Every quality figure in the model READMEs comes from the ``report`` split of
``winnow.core.evaluation.three_way_split`` (by URL for web pages, by id elsewhere), which no
training script reads. The *pipeline view* of a page is what the score stage sees in a default
run (``--stages normalize,langid,filter,dedup,score``): NFC and whitespace normalisation, English
at lid.176 ≥ 0.65, then the C4 line filter and the Gopher / FineWeb rules; pages a stage removes
are not scored. It is cached under ``bench/.cache/``.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
CORPORA = Path(os.environ.get("WINNOW_CORPORA", "/work/shared/corpora"))
HIGH_FORMATS = ("Tutorial", "Knowledge Article", "Academic Writing")
LOW_FORMATS = ("Spam / Ads", "Content Listing", "Truncated")


def rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def pipeline_view(texts: list[str]) -> list[str | None]:
    """Each text as the default run's score stage sees it, or None where a stage removes it."""
    from winnow.stages.filter.config import FilterConfig
    from winnow.stages.filter.rules import FilterChain
    from winnow.stages.langid.config import LangIdConfig
    from winnow.stages.langid.identify import FastTextLangId
    from winnow.stages.normalize.config import NormalizeConfig
    from winnow.stages.normalize.normalizer import TextNormalizer

    cfg = NormalizeConfig()
    normalise = TextNormalizer(cfg.unicode_form, cfg.strip_control, cfg.collapse_spaces, cfg.max_blank_lines)
    lang_cfg = LangIdConfig()
    langid = FastTextLangId(max_chars=lang_cfg.max_chars)
    chain = FilterChain(FilterConfig())
    normalised = [normalise(t) for t in texts]
    out: list[str | None] = []
    for text, (lang, score) in zip(normalised, langid.predict(normalised), strict=True):
        if score < lang_cfg.keep.get(lang, lang_cfg.keep.get("*", 2.0)):
            out.append(None)
            continue
        result = chain(text)
        out.append(result.text if result.kept else None)
    return out


def web_pages(corpora: Path = CORPORA) -> list[dict[str, Any]]:
    """WebOrganizer-DCLM pages with ``split`` and ``view`` (pipeline-view text or None), cached."""
    from winnow.core.evaluation import three_way_split

    cache = CACHE / "web_pipeline_view.jsonl.gz"
    source = corpora / "weborganizer-dclm" / "docs.jsonl.gz"
    pages = rows(source)
    if cache.exists():
        views = rows(cache)
    else:
        texts = pipeline_view([p["text"] for p in pages])
        views = [{"id": p["id"], "view": v} for p, v in zip(pages, texts, strict=True)]
        CACHE.mkdir(parents=True, exist_ok=True)
        with gzip.open(cache, "wt", encoding="utf-8") as handle:
            for row in views:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    by_id = {v["id"]: v["view"] for v in views}
    for page, split in zip(pages, three_way_split([p["url"] for p in pages]), strict=True):
        page["split"] = split
        page["view"] = by_id.get(page["id"])
    return pages


def human_documents(corpora: Path = CORPORA) -> list[dict[str, Any]]:
    """The 499 dclm-human-quality documents (``label`` 1 good / 0 bad) with their ``split`` (by id)."""
    from winnow.core.evaluation import three_way_split

    docs = rows(corpora / "dclm-human-quality" / "quality_labels.jsonl.gz")
    for doc, split in zip(docs, three_way_split([d["id"] for d in docs]), strict=True):
        doc["split"] = split
    return docs


# The 135 DataMan/QuRater-rated chunks: nothing trains on them, so the split has no fit share;
# one half may be used to choose, the other is the report half.
RATING_SHARES = (0.0, 0.5, 0.5)


def rating_documents(corpora: Path = CORPORA) -> list[dict[str, Any]]:
    """dataman-qurating-ratings (stored QuRater-1.3B and DataMan-1.5B ratings) with ``split`` (by id)."""
    from winnow.core.evaluation import three_way_split

    docs = rows(corpora / "dataman-qurating-ratings" / "ratings.jsonl.gz")
    for doc, split in zip(docs, three_way_split([d["id"] for d in docs], shares=RATING_SHARES), strict=True):
        doc["split"] = split
    return docs


# --- what every quality bench measures the same way -------------------------------------------

# fastText's usual small-data grid for peers (wordNgrams 2, otherwise defaults, one thread, seed 0).
FASTTEXT_GRID = ({"epoch": 3, "lr": 0.1}, {"epoch": 10, "lr": 0.5}, {"epoch": 25, "lr": 0.5})
# Inverse L2 strengths tried for logistic-regression peers on embeddings.
LOGISTIC_GRID = (0.1, 1.0, 10.0)


class Targets:
    """One split's texts and 0/1 targets: the WebOrganizer format contrast and the human labels."""

    def __init__(self, corpora: Path, split: str):
        pages = [
            p
            for p in web_pages(corpora)
            if p["split"] == split and p["view"] and p["format"] in HIGH_FORMATS + LOW_FORMATS
        ]
        human = [r for r in human_documents(corpora) if r["split"] == split]
        self.split = split
        self.web_texts = [p["view"] for p in pages]
        self.web_formats = [p["format"] for p in pages]
        self.web_y = np.array([p["format"] in HIGH_FORMATS for p in pages], dtype=int)
        self.human_texts = [r["text"] for r in human]
        self.human_y = np.array([r["label"] for r in human], dtype=int)

    def aucs(self, web_scores: Any, human_scores: Any) -> tuple[float, float]:
        return roc_auc(self.web_y, web_scores), roc_auc(self.human_y, human_scores)


def roc_auc(labels: Any, scores: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels, dtype=int), np.asarray(scores, dtype=np.float64)))


def bootstrap_auc(labels: Any, scores: Any, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the ROC-AUC over documents resampled with replacement."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[pick])) == 2:
            values.append(roc_auc(labels[pick], scores[pick]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def auc_cell(labels: Any, scores: Any) -> str:
    low, high = bootstrap_auc(labels, scores)
    return f"{roc_auc(labels, scores):.3f} ({low:.3f}–{high:.3f})"


def docs_per_second(score: Any, texts: list[str], batch: int = 256, repeat: int = 2) -> float:
    """Docs/s per core of ``score(batch)``: the best of ``repeat`` CPU-time passes."""
    import time

    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for i in range(0, len(texts), batch):
            score(texts[i : i + batch])
        best = min(best, time.process_time() - start)
    return len(texts) / max(best, 1e-9)


def fasttext_peer(
    folder: Path, name: str, ids: list[str], texts: list[str], labels: list[int], choose: Targets
) -> tuple[Any, dict[str, Any], list[tuple[dict[str, Any], float, float]]]:
    """A fastText classifier per grid point, trained on fit; the one with the best mean choose AUC.

    Returns the chosen ``FastTextScorer``, its parameters, and every point's (params, format AUC,
    human AUC) on choose.
    """
    from winnow.stages.score.fasttext import FastTextScorer
    from winnow.stages.score.preselect import train_fasttext, write_label_file

    train = folder / f"{name}.txt"
    write_label_file(train, ids, texts, labels, seed=0)
    tried = []
    for params in FASTTEXT_GRID:
        path = folder / f"{name}-e{params['epoch']}-lr{params['lr']}.bin"
        train_fasttext(train, seed=0, **params).save_model(str(path))
        scorer = FastTextScorer(path, name, f"{name}_score")
        column = scorer.columns[0].name
        web, human = choose.aucs(scorer.score(choose.web_texts)[column], scorer.score(choose.human_texts)[column])
        tried.append((params, web, human, scorer))
    best = max(tried, key=lambda t: (t[1] + t[2]) / 2)
    return best[3], best[0], [(p, w, h) for p, w, h, _ in tried]


def logistic_peer(
    fit_x: np.ndarray, fit_y: list[int], choose: Targets, embed: Any
) -> tuple[Any, float, list[tuple[float, float, float]]]:
    """Logistic regression on embeddings, C chosen on choose; returns the model, C and every point."""
    from sklearn.linear_model import LogisticRegression

    web_x, human_x = embed(choose.web_texts), embed(choose.human_texts)
    tried = []
    for c in LOGISTIC_GRID:
        model = LogisticRegression(C=c, max_iter=3000).fit(fit_x, fit_y)
        web, human = choose.aucs(model.decision_function(web_x), model.decision_function(human_x))
        tried.append((c, web, human, model))
    best = max(tried, key=lambda t: (t[1] + t[2]) / 2)
    return best[3], best[0], [(c, w, h) for c, w, h, _ in tried]
