"""Stage ``extract``: HTML records to main text (core in ``extraction``).

Records without an ``html`` field pass through untouched, so one pipeline can mix WARC
responses and plain-text corpora. A page that yields no text is removed with a reason
(``extract:too_large``, ``extract:not_html``, ``extract:empty``); a page the extractor
crashes on is a dead letter, never a failed job.
"""

from __future__ import annotations

import json
from typing import Any

from winnow.beam.contract import CountFn, Document, Drop, Outcome, PerDocumentStage, StageSpec
from winnow.stages.extract.config import ExtractConfig
from winnow.stages.extract.extraction import HtmlExtractor

STAGE = "extract"


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


class ExtractStep:
    """HTML → main text with metadata (content type, WARC date, charset); plain-text records pass."""

    def __init__(self, config: ExtractConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        self.count = count
        self.extractor = HtmlExtractor.from_config(self.config)

    def __call__(self, docs: list[Document]) -> list[Outcome]:
        return [self._one(doc) for doc in docs]

    def _one(self, doc: Document) -> Outcome:
        if "html" not in doc:
            return doc
        payload = doc["html"]
        rest = {k: v for k, v in doc.items() if k not in ("html", "warc_headers")}
        meta = _metadata(doc)
        headers = doc.get("warc_headers")
        # WARC records carry the HTTP Content-Type (the WARC one is "application/http").
        content_type = meta.get("content_type") or _header(headers, "Content-Type")
        if content_type and content_type.lower().startswith("application/http"):
            content_type = None
        warc_date = meta.get("warc_date") or _header(headers, "WARC-Date")
        result = self.extractor(payload if payload is not None else "", content_type)
        meta["content_type"] = content_type
        meta["warc_date"] = warc_date
        if result.encoding:
            meta["charset"] = result.encoding
        if result.reason is not None:
            return Drop(result.reason, {**rest, "text": "", "metadata": meta})
        self.count("extracted", 1)
        return {**rest, "text": result.text, "metadata": meta}


def Extract(config: ExtractConfig) -> PerDocumentStage:
    return PerDocumentStage(STAGE, ExtractStep(config))


SPEC = StageSpec(name=STAGE, config=ExtractConfig, transform=Extract, batches=True, heavy=True)
