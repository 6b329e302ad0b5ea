import gzip
import json
import random
import unicodedata
from pathlib import Path

from winnow.core.text import collapse_blanks, dedup_key_text
from winnow.stages.normalize.normalizer import TextNormalizer

EVERY_BLANK = [chr(c) for c in range(0x110000) if chr(c).isspace()]


def _reference_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def test_collapse_blanks_is_split_and_join_for_every_blank_and_mixture():
    assert len(EVERY_BLANK) > 20 and all(not b.isprintable() for b in EVERY_BLANK if b != " ")
    for blank in EVERY_BLANK:
        text = f"{blank}a{blank}{blank}b {blank}\n{blank}c{blank}"
        assert collapse_blanks(text) == " ".join(text.split()), repr(blank)
    rng = random.Random(3)
    pieces = ["a", "word", "é", " ", "  ", "   ", "\n", "\n\n", "\t", "\xa0", "\u3000", "\x1c", "\x85", "\u200b"]
    pieces.append("\x00")
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 14)))
        assert collapse_blanks(text) == " ".join(text.split()), repr(text)


def test_dedup_key_equals_nfkc_casefold_split_join_on_raw_and_normalised_real_text():
    path = Path(__file__).resolve().parents[1] / "data" / "text" / "english.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle][:600]
    texts += ["Stra\u00dfe  \uff21\u00a0b", "\ufb01ne\u2003\u2003print", "ΣΊΣΥΦΟΣ\n\n  σίσυφος "]
    normalizer = TextNormalizer()
    for text in texts + [normalizer(text) for text in texts]:
        assert dedup_key_text(text) == _reference_key(text), repr(text[:80])
