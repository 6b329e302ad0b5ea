"""Config section of the `extract` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.core.config import Section


class ExtractConfig(Section):
    """HTML to main text, for records that carry HTML (WARC responses, `html` fields)."""

    enabled: bool = Field(True, description="Run this stage (records without HTML pass through unchanged).")
    backend: Literal["fast", "trafilatura", "resiliparse"] = Field(
        "fast",
        description="Extractor. `fast`: resiliparse's DOM and main-content extraction after a boilerplate "
        "pruning pass (trafilatura-like precision at resiliparse-like speed, see bench/extraction_quality.py); "
        "`trafilatura`: trafilatura.extract; `resiliparse`: extract_plain_text(main_content=True).",
    )
    max_html_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Pages larger than this (bytes of HTML) are removed with reason `extract:too_large` "
        "instead of parsed; Common Crawl itself truncates records at 1 MiB.",
    )
    min_text_chars: int = Field(
        1, ge=0, description="Extracted text shorter than this (after stripping) is removed as `extract:empty`."
    )
    include_comments: bool = Field(
        False, description="Keep user comment sections (forum replies, blog comments) in the extracted text."
    )
    include_tables: bool = Field(True, description="Keep the text of HTML tables.")
    default_encoding: str = Field(
        "utf-8",
        description="Encoding assumed for byte payloads when neither the HTTP header, a <meta> tag nor "
        "resiliparse's detector decides one.",
    )
    fast_container: bool = Field(
        True,
        description="For backend `fast`: extract from the page's article container when it marks one "
        "(itemprop=articleBody, entry-content, <article>...), narrowed to its densest inner element, plus the "
        "lead paragraphs just before it (docs/extraction.md). Off: the smallest element holding most of the "
        "paragraph text.",
    )
    trafilatura_fast: bool = Field(
        False, description="For backend `trafilatura`: skip its fallback extractors (faster, lower recall)."
    )
