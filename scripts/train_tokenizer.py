"""Train winnow's bundled byte-level BPE (``winnow/data/models/tokenizer/winnow-bpe-32k.json``).

Only permissively licensed or public-domain text from ``/work/shared/corpora`` is used (see the
tokenizer README for sources and licenses). Training is single-threaded and the input order is
fixed, so the same corpora give the same file.

    python scripts/train_tokenizer.py [--corpora PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "winnow" / "data" / "models" / "tokenizer" / "winnow-bpe-32k.json"
VOCAB_SIZE = 32_000


def _jsonl(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _wikitext_to_text(markup: str) -> str:
    markup = re.sub(r"\{\{[^{}]*\}\}", " ", markup)
    markup = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", markup)
    markup = re.sub(r"<ref[^>]*>.*?</ref>|<[^>]+>", " ", markup, flags=re.S)
    return re.sub(r"'{2,}", "", markup)


def texts(corpora: Path) -> Iterator[str]:
    """Training text, in a fixed order."""
    for doc in _jsonl(corpora / "wikipedia-dump-fragments" / "enwiki_pages.jsonl.gz"):  # CC BY-SA
        if not doc.get("redirect_to") and doc.get("wikitext"):
            yield _wikitext_to_text(doc["wikitext"])
    for name in ("inaugural.jsonl.gz", "state_union.jsonl.gz"):  # public domain
        for doc in _jsonl(corpora / "nltk-corpora" / name):
            yield doc["text"]
    for doc in _jsonl(corpora / "dclm-human-quality" / "quality_labels.jsonl.gz"):  # MIT
        yield doc["text"]
    for name in ("c4_sample.jsonl.gz", "paloma_c4_100_domains_guardian.jsonl.gz"):  # Apache-2.0 (C4: ODC-BY)
        for doc in _jsonl(corpora / "olmo-test-fixtures" / name):
            yield doc["text"]
    for name in ("ccnet_en_head.jsonl.gz", "cc_documents.jsonl.gz"):  # Apache-2.0
        for doc in _jsonl(corpora / "dolma-test-fixtures" / name):
            yield doc["text"]
    for doc in _jsonl(corpora / "data-juicer-demos" / "docs.jsonl.gz"):  # Apache-2.0
        yield doc["text"]
    with gzip.open(corpora / "sentencepiece-books" / "botchan.txt.gz", "rt", encoding="utf-8") as handle:
        yield handle.read()  # Project Gutenberg, public domain
    for doc in _jsonl(corpora / "lingua-language-testdata" / "sentences.jsonl.gz"):  # Apache-2.0 repo
        yield doc["text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", default=os.environ.get("WINNOW_CORPORA", "/work/shared/corpora"))
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"  # deterministic merges
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(texts(Path(args.corpora)))
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(tokenizer.to_str(pretty=False), encoding="utf-8")
    chars = sum(len(t) for t in corpus)
    print(f"trained on {len(corpus)} texts, {chars:,} characters; vocab {tokenizer.get_vocab_size()} → {args.out}")


if __name__ == "__main__":
    main()
