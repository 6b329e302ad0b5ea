"""Stage ``extract``: HTML records to main text (core in ``winnow.scorers.extraction``).

Records without an ``html`` field pass through untouched, so one pipeline can mix WARC
responses and plain-text corpora. A page that yields no text is removed with a reason
(``extract:too_large``, ``extract:not_html``, ``extract:empty``); a page the extractor
crashes on is a dead letter, never a failed job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from winnow.schemas.clean import ExtractConfig
from winnow.scorers.extraction import HtmlExtractor
from winnow.transforms.base import Document, counter, outcome_pardo, rejected, removed, split_outcomes

STAGE = "extract"
REASONS = ("too_large", "not_html", "empty")


def _metadata(doc: Document) -> dict[str, Any]:
    meta = doc.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {"metadata": meta}
    return dict(meta) if isinstance(meta, dict) else {}


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            return None if value is None else str(value)
    return None


class ExtractDoFn(beam.DoFn):
    def __init__(self, config: ExtractConfig):
        self.config = config
        self._counters = {reason: counter(f"{STAGE}:{reason}") for reason in REASONS}
        self._extracted = counter(f"{STAGE}:extracted")

    def setup(self) -> None:
        self.extractor = HtmlExtractor.from_config(self.config)

    def process(self, doc: Document) -> Iterator[Any]:
        if "html" not in doc:
            yield doc
            return
        payload = doc["html"]
        rest = {k: v for k, v in doc.items() if k not in ("html", "warc_headers")}
        try:
            meta = _metadata(doc)
            headers = doc.get("warc_headers")
            # WARC records carry the HTTP Content-Type (the WARC one is "application/http").
            content_type = meta.get("content_type") or _header(headers, "Content-Type")
            if content_type and content_type.lower().startswith("application/http"):
                content_type = None
            warc_date = meta.get("warc_date") or _header(headers, "WARC-Date")
            result = self.extractor(payload if payload is not None else "", content_type)
        except Exception as error:  # one bad page must never kill the job
            yield rejected({**rest, "text": payload or ""}, STAGE, error)
            return
        meta["content_type"] = content_type
        meta["warc_date"] = warc_date
        if result.encoding:
            meta["charset"] = result.encoding
        if result.reason is not None:
            self._counters[result.reason].inc()
            yield removed({**rest, "text": "", "metadata": meta}, f"{STAGE}:{result.reason}")
            return
        self._extracted.inc()
        yield {**rest, "text": result.text, "metadata": meta}


class Extract(beam.PTransform):
    """HTML → main text; returns ``{"kept", "removed", "rejected"}``."""

    def __init__(self, config: ExtractConfig):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        return split_outcomes(docs | outcome_pardo("Extract", ExtractDoFn(self.config)))
