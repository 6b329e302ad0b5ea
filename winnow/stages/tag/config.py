"""Config section of the ``tag`` stage: WebOrganizer topic × format and DataMan domain tags (docs/domains.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.core.config import Section

BUNDLED_TOPIC_TAGGER = "winnow:models/tagger/topic-tagger.zip"
BUNDLED_FORMAT_TAGGER = "winnow:models/tagger/format-tagger.zip"


class TaggerEntry(Section):
    """One taxonomy's classifier: winnow's own (local) or a user's checkpoint directory (reference)."""

    mode: Literal["local", "reference"] = Field(
        "local",
        description="local: a winnow-trained hashed n-gram tagger (`winnow tagger train`); reference: a local "
        "AutoModelForSequenceClassification directory, e.g. WebOrganizer's gte-base classifier.",
    )
    path: str = Field(
        ..., description="Model file (local) or checkpoint directory (reference); winnow: = package data."
    )
    use_url: bool = Field(
        True, description='Reference mode: feed "{url}\\n{text}" as WebOrganizer did (False for -NoURL models).'
    )
    max_length: int | None = Field(None, gt=0, description="Reference mode: token limit (default: the model's own).")
    device: str = Field("cpu", description="Reference mode: torch device.")
    trust_remote_code: bool = Field(
        False, description="Reference mode: allow the checkpoint's own model code (local directories only)."
    )
    batch_size: int = Field(256, gt=0, description="Documents per model call.")


class TagConfig(Section):
    """Domain tags on every kept document (docs/domains.md#weborganizer, docs/domains.md#dataman-domains) and
    per-domain statistics (docs/domains.md#per-domain-statistics)."""

    enabled: bool = Field(False, description="Run this stage.")
    topic: TaggerEntry | None = Field(
        default_factory=lambda: TaggerEntry(path=BUNDLED_TOPIC_TAGGER),
        description="WebOrganizer topic classifier (24 topics); null: no topic column.",
    )
    format: TaggerEntry | None = Field(
        default_factory=lambda: TaggerEntry(path=BUNDLED_FORMAT_TAGGER),
        description="WebOrganizer format classifier (24 formats); null: no format column.",
    )
    domain_from: Literal["auto", "dataman", "topic", "none"] = Field(
        "auto",
        description="Source of the DataMan domain letter: the DataMan scorer's application_domain column "
        "(dataman), the topic mapping of docs/domains.md#dataman-domains (topic), the first available of the two "
        "(auto), or no domain.",
    )
    write_probabilities: bool = Field(False, description="Also write topic_probs / format_probs (24 floats each).")
    statistics: bool = Field(True, description="Per-domain documents, characters, tokens, score distributions.")
    score_columns: list[str] | None = Field(
        None, description="Score columns summarised per domain; null: every float column present in the documents."
    )
    histogram_bins: int = Field(
        64, ge=4, le=4096, description="Bins of the per-domain score histograms (quantiles come from them)."
    )
