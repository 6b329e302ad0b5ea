"""The normalize stage with mojibake repair on the local runner: broken text fixed first, real text untouched."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import ftfy.bad_codecs  # noqa: F401  registers sloppy-windows-1252, used to make mojibake
from conftest import run_stage

from winnow.stages.normalize.config import NormalizeConfig
from winnow.stages.normalize.normalizer import TextNormalizer
from winnow.stages.normalize.stage import Normalize

DATA = Path(__file__).resolve().parents[2] / "data" / "mojibake"


def udhr(count: int) -> list[dict[str, Any]]:
    """UDHR excerpts in many languages (tests/data/mojibake): real non-ASCII text."""
    with gzip.open(DATA / "udhr_excerpts.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle, strict=False)]


def doc(doc_id: str, text: str) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "url": None, "source": "test", "metadata": None}


def broken(text: str) -> str:
    """UTF-8 bytes read as Windows-1252: the commonest mojibake on the web."""
    return text.encode("utf-8").decode("sloppy-windows-1252")


def test_stage_repairs_mojibake_before_normalising(tmp_path: Path) -> None:
    rows = [r for r in udhr(40) if not r["text"].isascii()][:20]
    docs = [doc(r["id"], r["text"]) for r in rows] + [doc(r["id"] + "-broken", broken(r["text"])) for r in rows]
    docs.append(doc("quotes", "He said \x93hello\x94 \x96 then left."))  # C1 bytes that are cp1252 punctuation
    out = run_stage(Normalize(NormalizeConfig()), docs, tmp_path)
    kept = {d["id"]: d["text"] for d in out["kept"]}
    normalise = TextNormalizer()
    for row in rows:
        assert kept[row["id"]] == normalise(row["text"])  # real text is left as it was
        assert kept[row["id"] + "-broken"] == kept[row["id"]]  # the broken copy comes back to it
    assert kept["quotes"] == "He said “hello” – then left."
    assert out["counters"]["normalize:mojibake_fixed"] == len(rows) + 1

    off = run_stage(Normalize(NormalizeConfig(fix_mojibake=False)), docs, tmp_path)
    kept_off = {d["id"]: d["text"] for d in off["kept"]}
    assert all(kept_off[r["id"] + "-broken"] != kept[r["id"]] for r in rows)
    assert kept_off["quotes"] == "He said hello then left."  # the control step deletes the C1 bytes
    assert "normalize:mojibake_fixed" not in off["counters"]
