"""The pii stage on the local runner: redacted text, `pii_redactions`, counters, manifest records, config."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_stage

from winnow.config import ConfigError, parse_config
from winnow.stages.pii.config import PiiConfig
from winnow.stages.pii.stage import SPEC, Pii

DATA = Path(__file__).resolve().parents[2] / "data" / "pii"


def labelled(count: int) -> list[dict[str, Any]]:
    """Real pages with hand-labelled or planted PII (tests/data/pii)."""
    with gzip.open(DATA / "labelled.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return records[:count] + records[-count:]  # natural pages first, planted last


def as_doc(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "text": record["text"], "url": None, "source": "test", "metadata": None}


def test_stage_redacts_writes_offsets_and_counts_per_kind(tmp_path: Path) -> None:
    records = labelled(20)
    docs = [as_doc(r) for r in records]
    out = run_stage(Pii(PiiConfig()), docs, tmp_path)
    assert out["removed"] == [] and out["rejected"] == [] and len(out["kept"]) == len(docs)
    kept = {d["id"]: d for d in out["kept"]}
    totals: dict[str, int] = {}
    for record in records:
        doc = kept[record["id"]]
        for redaction in doc["pii_redactions"]:
            placeholder = "<" + redaction["kind"].upper() + ">"
            assert doc["text"][redaction["start"] : redaction["end"]] == placeholder
            totals[redaction["kind"]] = totals.get(redaction["kind"], 0) + 1
        # every planted value with a checksum or a fixed shape (valid by construction) is gone from
        # the text; planted phones include regions the default US/GB matchers do not cover
        for gold in record["gold"]:
            if gold["origin"] == "planted" and gold["kind"] != "phone":
                assert record["text"][gold["start"] : gold["end"]] not in doc["text"]
    assert sum(totals.values()) >= 20
    summary = {r["kind"]: r for r in out["summary"]}
    assert set(summary) == {"email", "ip", "phone", "credit_card", "iban"}
    for kind, record in summary.items():
        assert record["section"] == "pii" and record["redactions"] == totals.get(kind, 0)
        assert out["counters"].get(f"pii:{kind}", 0) == totals.get(kind, 0)
    redacted_docs = sum(1 for d in out["kept"] if d["pii_redactions"])
    assert out["counters"]["pii:documents_redacted"] == redacted_docs
    assert max(r["documents"] for r in summary.values()) <= redacted_docs


def test_kinds_and_replacement_are_the_users(tmp_path: Path) -> None:
    text = "Write to jane.doe@example.com or call +44 20 7946 0958 from 8.8.8.8 today."
    docs = [{"id": "a", "text": text, "url": None, "source": "t", "metadata": None}]
    out = run_stage(Pii(PiiConfig(kinds=["email"], replacement="[{kind} removed]")), docs, tmp_path)
    (doc,) = out["kept"]
    assert doc["text"] == "Write to [email removed] or call +44 20 7946 0958 from 8.8.8.8 today."
    assert [r["kind"] for r in doc["pii_redactions"]] == ["email"]
    assert [r["kind"] for r in out["summary"]] == ["email"]
    assert SPEC.columns[0].name == "pii_redactions"


def test_bad_settings_name_their_key() -> None:
    for section, key in (
        ({"replacement": "<{TYPE}>"}, "pii.replacement"),
        ({"kinds": ["email", "passport"]}, "pii.kinds"),
        ({"phone_regions": ["uk"]}, "pii.phone_regions"),
        ({"redact": True}, "pii.redact"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config({"pii": section})
